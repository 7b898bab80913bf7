//! The TCP gateway server (spec §9.1, §9.4, §9.5): the push SDK sends GATEWAY_PUSH here and
//! gets OK/ERROR with a GatewayPushResult back. No handshake, no cipher, no idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::context::ServerContext;
use crate::protocol::message::{
    ErrorCode, ErrorMessage, GatewayPush, GatewayTraceId, Message, OkMessage,
};
use crate::protocol::{Command, Frame, Packet, PacketCodec, flags};
use crate::push::local::{push_to_connection, record_push};
use crate::push::result::GatewayPushResult;
use crate::push::{DEFAULT_ACK_TIMEOUT, broadcast};
use crate::spi::{ClientType, PushOutcome};

/// Gauges of the TCP gateway, readable through `RunningServer::gateway_load`.
#[derive(Debug, Default)]
pub(crate) struct GatewayStats {
    /// Open gateway connections.
    pub connections: AtomicUsize,
    /// GATEWAY_PUSH requests running, over all connections.
    pub in_flight: AtomicUsize,
    /// The most requests that ran at once on any one connection since the server started.
    pub peak_in_flight: AtomicUsize,
}

/// A snapshot of the TCP gateway's load ([`crate::RunningServer::gateway_load`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatewayLoad {
    /// Open gateway connections (push SDKs connected here).
    pub connections: usize,
    /// GATEWAY_PUSH requests running now, over all connections.
    pub in_flight: usize,
    /// The most requests that ran at once on one connection since the server started;
    /// never above `mp.net.gateway-max-in-flight`.
    pub peak_in_flight: usize,
    /// Pushes waiting for a client's ACK (from every source, not only the gateway).
    pub pending_acks: usize,
}

/// Counts one open gateway connection for as long as it lives.
struct Counted<'a>(&'a AtomicUsize);

impl<'a> Counted<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Replies queued per gateway connection for its writer. A request keeps its in-flight slot
/// until its reply is queued, so a slow-reading sender also stops the reader.
const REPLY_QUEUE: usize = 4096;

/// Accepts gateway connections until shutdown.
/// A peer outside `mp.net.gateway-allowed-networks` is closed at accept; with
/// `mp.net.gateway-server-tls`, the TLS handshake (and, with a client CA, the client
/// certificate check) comes before any packet is read.
pub(crate) async fn accept(at: super::Listening, listener: TcpListener) {
    let (io, ctx, tasks, tls) = (at.io(), &at.ctx, &at.tasks, &at.tls);
    let allowlist = super::tls::Allowlist::new(&ctx.config.net.gateway_allowed_networks);
    // Not the drain's stop: a draining node keeps taking pushes for its open connections.
    super::accept_loop(&ctx.shutdown, listener, "gateway server", |stream, peer| {
        if !allowlist.admit(peer) {
            return;
        }
        tracing::debug!(%peer, "gateway client connected");
        let _ = stream.set_nodelay(true);
        match tls {
            None => {
                io.spawn(tasks.track_future(serve(ctx.clone(), stream, peer, tasks.clone())));
            }
            Some(tls) => {
                let (ctx, acceptor, tasks2) = (ctx.clone(), tls.acceptor(), tasks.clone());
                io.spawn(tasks.track_future(async move {
                    if let Some(s) = super::tls::handshake(&ctx, acceptor, stream, peer).await {
                        serve(ctx, s, peer, tasks2).await;
                    }
                }));
            }
        }
    })
    .await;
}

/// Serves one gateway connection: each GATEWAY_PUSH runs as its own task, replies are
/// written in completion order by a writer task. At most `mp.net.gateway-max-in-flight`
/// requests run at once: a slot is taken *before* the next frame is read, so a full
/// connection is simply not read, and the sender feels it as TCP back-pressure.
async fn serve<S>(ctx: Arc<ServerContext>, stream: S, peer: SocketAddr, tasks: TaskTracker)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let _open = Counted::new(&ctx.gateway_stats.connections);
    let cap = ctx.config.net.gateway_max_in_flight;
    let slots = Arc::new(Semaphore::new(cap));
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = FramedRead::new(rd, PacketCodec::new(ctx.config.net.gateway_max_packet_size));
    let (tx, mut rx) = mpsc::channel::<Packet>(REPLY_QUEUE);
    let writer = tokio::spawn(async move {
        let mut w = FramedWrite::new(wr, PacketCodec::new(usize::MAX));
        while let Some(p) = rx.recv().await {
            if w.feed(Frame::Packet(p)).await.is_err() {
                return;
            }
            // Batch what is queued into one flush. The pushes of one gateway read finish
            // within one pass of the scheduler: yielding once lets them queue their replies
            // first, so a burst costs one write, not one per reply.
            for pass in 0..2 {
                while let Ok(p) = rx.try_recv() {
                    if w.feed(Frame::Packet(p)).await.is_err() {
                        return;
                    }
                }
                if pass == 0 {
                    tokio::task::yield_now().await;
                }
            }
            if w.flush().await.is_err() {
                return;
            }
        }
    });
    loop {
        let slot = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let frame = tokio::select! {
            _ = ctx.shutdown.cancelled() => break,
            f = reader.next() => f,
        };
        let packet = match frame {
            None => break,
            Some(Err(e)) => {
                tracing::debug!(error = %e, "gateway connection: bad frame, closing");
                break;
            }
            Some(Ok(Frame::Heartbeat)) => continue,
            Some(Ok(Frame::Packet(p))) => p,
        };
        let error = |cmd: Command, code| {
            let err = ErrorMessage::from_code(cmd.code(), code);
            Packet::with_body(Command::Error, packet.session_id, err.encode())
        };
        if packet.cmd != Command::GatewayPush {
            let _ = tx.send(error(packet.cmd, ErrorCode::UnsupportedCmd)).await;
            break;
        }
        let msg = match GatewayPush::decode(&packet.body) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, "gateway: undecodable GATEWAY_PUSH");
                let _ = tx
                    .send(error(Command::GatewayPush, ErrorCode::DispatchError))
                    .await;
                break;
            }
        };
        let (ctx2, tx2) = (ctx.clone(), tx.clone());
        let stats = &ctx.gateway_stats;
        let running = cap - slots.available_permits();
        stats.peak_in_flight.fetch_max(running, Ordering::Relaxed);
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = crate::metrics::GaugeGuard::new(&crate::metrics::GATEWAY_IN_FLIGHT_KEY);
        ctx.hooks
            .executor
            .handle(crate::spi::ExecutorRole::Push)
            .spawn(tasks.track_future(async move {
                if let Some(reply) =
                    handle_push(&ctx2, peer, packet.session_id, packet.flags, msg).await
                {
                    let _ = tx2.send(reply).await;
                }
                ctx2.gateway_stats.in_flight.fetch_sub(1, Ordering::Relaxed);
                drop(in_flight);
                // The slot is freed only once the reply is queued: replies count too.
                drop(slot);
            }));
    }
    drop(tx);
    let _ = writer.await;
}

/// Runs one GATEWAY_PUSH from `peer`; `None` means no reply (ACK timeout, as the original).
/// Traced as a `mpush.gateway.push` span (level DEBUG) carrying the push's `trace_id`
/// (the sender's address and the sessionId, as the SDK derives it: [`GatewayTraceId`]),
/// with `mpush.route.lookup`, `mpush.connection.write` and `mpush.push.ack` children.
pub(crate) async fn handle_push(
    ctx: &Arc<ServerContext>,
    peer: SocketAddr,
    session_id: i32,
    push_flags: u8,
    msg: GatewayPush,
) -> Option<Packet> {
    let span = tracing::debug_span!(
        "mpush.gateway.push",
        trace_id = %(GatewayTraceId { sender: peer, session_id }),
        session_id,
        user_id = msg.user_id.as_deref(),
        client_type = msg.client_type,
        ack = push_flags & flags::ACK_MASK,
        outcome = tracing::field::Empty,
    );
    let reply = run_push(ctx, session_id, push_flags, msg)
        .instrument(span.clone())
        .await;
    span.record(
        "outcome",
        match &reply {
            Some(p) if p.cmd == Command::Ok => "ok",
            Some(_) => "error",
            None => "no reply",
        },
    );
    reply
}

async fn run_push(
    ctx: &Arc<ServerContext>,
    session_id: i32,
    push_flags: u8,
    mut msg: GatewayPush,
) -> Option<Packet> {
    if msg.is_broadcast() {
        // Boxed: its state (≈ 1.1 KB) would otherwise be part of every unicast push's task,
        // copied in at spawn and out at completion.
        return Some(Box::pin(broadcast::run(ctx, session_id, msg)).await);
    }
    let user_id = msg.user_id.take().unwrap_or_default();
    let client_type = ClientType::from(msg.client_type);
    let mut result = GatewayPushResult::new(&user_id, msg.client_type);
    result.point("push-center-begin");
    let start = Instant::now();
    let error = |mut result: GatewayPushResult<'_>,
                 code: ErrorCode,
                 point: &'static str,
                 why: Option<String>| {
        result.point(point);
        let mut err = ErrorMessage::from_code(Command::GatewayPush.code(), code);
        if why.is_some() {
            err.reason = why;
        }
        err.data = Some(result.to_json());
        Some(Packet::with_body(Command::Error, session_id, err.encode()))
    };

    let lookup = tracing::debug_span!("mpush.route.lookup", found = tracing::field::Empty);
    let resolved = resolve_route(ctx, &user_id, client_type)
        .instrument(lookup.clone())
        .await;
    lookup.record(
        "found",
        match &resolved {
            Resolved::Here(_) => "here",
            Resolved::Elsewhere(..) => "elsewhere",
        },
    );
    let conn = match resolved {
        Resolved::Here(conn) => conn,
        Resolved::Elsewhere(outcome, why) => {
            record_push(outcome, push_flags);
            ctx.hooks
                .push_listener
                .on_push(&user_id, client_type, outcome);
            return match outcome {
                PushOutcome::RouterChange => {
                    error(result, ErrorCode::RouterChange, "redirect-end", None)
                }
                PushOutcome::Offline => error(result, ErrorCode::Offline, "offline-end", None),
                _ => error(result, ErrorCode::PushClientFailure, "failure-end", why),
            };
        }
    };
    if !conn.is_writable() {
        record_push(PushOutcome::Failure, push_flags);
        ctx.hooks
            .push_listener
            .on_push(&user_id, client_type, PushOutcome::Failure);
        return error(result, ErrorCode::PushClientFailure, "failure-end", None);
    }
    // A push that flow control holds past its timeout is dropped, as the original's
    // `checkTimeout` on every delayed run does: the SDK has answered TIMEOUT by then, and a
    // late delivery would reach the device twice if the business retries.
    let budget = Duration::from_millis(u64::try_from(msg.timeout).unwrap_or(0));
    let allowed = match ctx.push.global_flow.try_acquire() {
        Ok(()) => Some(true),
        Err(None) => Some(false),
        // Boxed: the wait's timer would otherwise be part of every push's task.
        Err(Some(_)) => {
            let left = (!budget.is_zero()).then(|| budget.saturating_sub(start.elapsed()));
            Box::pin(flow_wait(ctx, left)).await
        }
    };
    let Some(allowed) = allowed else {
        record_push(PushOutcome::Timeout, push_flags);
        ctx.hooks
            .push_listener
            .on_push(&user_id, client_type, PushOutcome::Timeout);
        tracing::debug!(user = %user_id, "push held by flow control past its timeout; dropped");
        return None;
    };
    if !allowed {
        // Past `max` the server refuses single-user pushes (MPush's overflow); sending
        // anyway would switch flow control off for good.
        record_push(PushOutcome::Failure, push_flags);
        ctx.hooks
            .push_listener
            .on_push(&user_id, client_type, PushOutcome::Failure);
        result.point("failure-end");
        let mut err = ErrorMessage::with_reason(
            Command::GatewayPush.code(),
            "flow control: mp.push.flow-control.global.max reached",
        );
        err.code = ErrorCode::PushClientFailure.code();
        err.data = Some(result.to_json());
        return Some(Packet::with_body(Command::Error, session_id, err.encode()));
    }
    result.point("before-send");
    let content = Bytes::from(msg.content.unwrap_or_default());
    let ack_flags = push_flags & flags::ACK_MASK;
    if ack_flags != 0 {
        result.point("waiting-ack");
    }
    let remaining = budget.saturating_sub(start.elapsed());
    // The wire allows 24.8 days; every wait holds an ACK entry and an in-flight slot.
    let wait = if remaining.is_zero() {
        DEFAULT_ACK_TIMEOUT
    } else {
        remaining
    }
    .min(ctx.config.push.max_ack_timeout);
    let outcome = push_to_connection(ctx, &conn, &content, ack_flags, wait).await;
    ctx.hooks
        .push_listener
        .on_push(&user_id, client_type, outcome);
    match outcome {
        PushOutcome::Success | PushOutcome::AckSuccess => {
            result.point("success-end");
            let ok = OkMessage {
                cmd: Command::GatewayPush.code(),
                code: 0,
                data: Some(result.to_json()),
            };
            Some(Packet::with_body(Command::Ok, session_id, ok.encode()))
        }
        PushOutcome::Timeout => {
            tracing::debug!(user = %user_id, "push ACK timeout");
            None
        }
        PushOutcome::Offline => error(result, ErrorCode::Offline, "offline-end", None),
        PushOutcome::Failure | PushOutcome::RouterChange => {
            error(result, ErrorCode::PushClientFailure, "failure-end", None)
        }
    }
}

/// Where a unicast for one (user, client type) goes.
enum Resolved {
    /// A live connection of this server that the cluster route names.
    Here(Arc<super::Connection>),
    /// Not deliverable here: the outcome to report (OFFLINE, ROUTER_CHANGE, or FAILURE with
    /// the reason when the route could not be read).
    Elsewhere(PushOutcome, Option<String>),
}

/// Decides from the local route *and* the cluster route. A local connection that the
/// cluster route no longer names was displaced by a bind elsewhere whose kick has not
/// arrived (or was lost): it is displaced now and never served again. A route to a gateway
/// that has left the registry is a dead server's: OFFLINE, and the route is marked so.
async fn resolve_route(
    ctx: &Arc<ServerContext>,
    user_id: &str,
    client_type: ClientType,
) -> Resolved {
    let local = ctx.router.local.lookup(user_id, client_type).filter(|c| {
        if c.is_closed() {
            ctx.router.local.unregister(user_id, client_type, c.seq());
        }
        !c.is_closed()
    });
    match local {
        // Read and found naming it, and no change of the route reported since.
        Some(conn) if ctx.router.checks.is_verified(&conn.route_check) => Resolved::Here(conn),
        // Boxed: the read's state (the route, the repairs) would otherwise be part of every
        // push's task, and the common push needs no read.
        local => Box::pin(read_route(ctx, user_id, client_type, local)).await,
    }
}

/// Waits for a global flow-control slot for at most `remaining` of the push's timeout
/// (`None`: the push has no timeout, and waits as long as it takes). `None` when the
/// timeout passed first; else whether the slot was granted (`false`: the total cap).
async fn flow_wait(ctx: &ServerContext, remaining: Option<Duration>) -> Option<bool> {
    match remaining {
        Some(left) => tokio::time::timeout(left, ctx.push.global_flow.acquire())
            .await
            .ok(),
        None => Some(ctx.push.global_flow.acquire().await),
    }
}

/// [`resolve_route`] past the local check: reads the cluster route and decides.
async fn read_route(
    ctx: &Arc<ServerContext>,
    user_id: &str,
    client_type: ClientType,
    local: Option<Arc<super::Connection>>,
) -> Resolved {
    let checks = &ctx.router.checks;
    let ticket = local.as_ref().and_then(|c| checks.begin(&c.route_check));
    let route = ctx.router.remote.lookup(user_id, client_type).await;
    if let Some(conn) = local {
        match &route {
            Ok(Some(loc)) if ctx.router.names_connection(loc, conn.id()) => {
                if let Some(ticket) = ticket {
                    checks.confirm(&conn.route_check, ticket);
                }
                return Resolved::Here(conn);
            }
            Ok(Some(loc))
                if ctx
                    .router
                    .names_device_offline(loc, conn.lock_state().device_id()) =>
            {
                // Marked offline while it lives (another node took this server for dead):
                // serve, and write it back.
                super::cluster::repair_route(ctx, user_id, client_type, &conn);
                return Resolved::Here(conn);
            }
            Ok(None) => {
                // The cache lost the route (flushed, failed over): serve, and write it back.
                super::cluster::repair_route(ctx, user_id, client_type, &conn);
                return Resolved::Here(conn);
            }
            Ok(Some(_)) if conn.lock_state().binding => {
                // Its bind is writing the route right now: the route read is the older one.
                return Resolved::Here(conn);
            }
            Ok(Some(_)) => {
                tracing::debug!(user = user_id, conn = %conn.id(), "route names another connection: displaced");
                super::handler::displace(ctx, &conn, user_id);
            }
            Err(e) => {
                // The live local connection is the best truth there is while the cache is out.
                tracing::debug!(user = user_id, error = %e, "route lookup failed; serving the local connection");
                return Resolved::Here(conn);
            }
        }
    }
    let loc = match route {
        Err(e) => {
            return Resolved::Elsewhere(
                PushOutcome::Failure,
                Some(format!("route lookup failed: {e}")),
            );
        }
        Ok(None) => return Resolved::Elsewhere(PushOutcome::Offline, None),
        Ok(Some(loc)) if !loc.is_online() => {
            return Resolved::Elsewhere(PushOutcome::Offline, None);
        }
        Ok(Some(loc)) => loc,
    };
    if ctx.router.is_this_server(&loc) {
        // A stale route to this server (its connection is gone): fix it.
        let conn_id = loc.conn_id.clone().unwrap_or_default();
        let _ = ctx
            .router
            .remote
            .mark_offline_if(user_id, client_type, |l| {
                ctx.router.names_connection(l, &conn_id)
            })
            .await;
        return Resolved::Elsewhere(PushOutcome::Offline, None);
    }
    if ctx.router.gateways.is_gone(&loc.host_and_port()) {
        // Its server left the registry: the user is connected nowhere.
        let _ = ctx
            .router
            .remote
            .mark_offline_if(user_id, client_type, |l| {
                l.conn_id == loc.conn_id && l.host == loc.host && l.port == loc.port
            })
            .await;
        return Resolved::Elsewhere(PushOutcome::Offline, None);
    }
    Resolved::Elsewhere(PushOutcome::RouterChange, None)
}
