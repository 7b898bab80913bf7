//! The TCP gateway server (spec §9.1, §9.4, §9.5): the push SDK sends GATEWAY_PUSH here and
//! gets OK/ERROR with a GatewayPushResult back. No handshake, no cipher, no idle timeout.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::task::TaskTracker;

use super::context::ServerContext;
use crate::protocol::message::{ErrorCode, ErrorMessage, GatewayPush, Message, OkMessage};
use crate::protocol::{Command, Frame, Packet, PacketCodec, flags};
use crate::push::broadcast;
use crate::push::local::push_to_connection;
use crate::push::result::GatewayPushResult;
use crate::spi::PushOutcome;

/// Gauges of the TCP gateway, readable through `MPushServer`.
#[derive(Debug, Default)]
pub(crate) struct GatewayStats {
    /// Open gateway connections.
    pub connections: AtomicUsize,
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

/// Replies queued per gateway connection before the reader stops taking new requests.
const REPLY_QUEUE: usize = 4096;

/// Accepts gateway connections until shutdown.
pub(crate) async fn accept(ctx: Arc<ServerContext>, listener: TcpListener, tasks: TaskTracker) {
    let io = ctx.executor.handle(crate::spi::ExecutorRole::Io);
    super::accept_loop(&ctx, listener, "gateway server", |stream, peer| {
        tracing::debug!(%peer, "gateway client connected");
        io.spawn(tasks.track_future(serve(ctx.clone(), stream, tasks.clone())));
    })
    .await;
}

/// Serves one gateway connection: each GATEWAY_PUSH runs as its own task, replies are
/// written in completion order by a writer task.
async fn serve(ctx: Arc<ServerContext>, stream: TcpStream, tasks: TaskTracker) {
    let _open = Counted::new(&ctx.gateway_stats.connections);
    let _ = stream.set_nodelay(true);
    let (rd, wr) = stream.into_split();
    let mut reader = FramedRead::new(rd, PacketCodec::new(ctx.config.net.gateway_max_packet_size));
    let (tx, mut rx) = mpsc::channel::<Packet>(REPLY_QUEUE);
    let writer = tokio::spawn(async move {
        let mut w = FramedWrite::new(wr, PacketCodec::new(usize::MAX));
        while let Some(p) = rx.recv().await {
            if w.feed(Frame::Packet(p)).await.is_err() {
                return;
            }
            // Batch what is already queued into one flush.
            while let Ok(p) = rx.try_recv() {
                if w.feed(Frame::Packet(p)).await.is_err() {
                    return;
                }
            }
            if w.flush().await.is_err() {
                return;
            }
        }
    });
    loop {
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
        ctx.executor
            .handle(crate::spi::ExecutorRole::Push)
            .spawn(tasks.track_future(async move {
                if let Some(reply) = handle_push(&ctx2, packet.session_id, packet.flags, msg).await
                {
                    let _ = tx2.send(reply).await;
                }
            }));
    }
    drop(tx);
    let _ = writer.await;
}

/// Runs one GATEWAY_PUSH; `None` means no reply (ACK timeout, as the original).
pub(crate) async fn handle_push(
    ctx: &Arc<ServerContext>,
    session_id: i32,
    push_flags: u8,
    msg: GatewayPush,
) -> Option<Packet> {
    if msg.is_broadcast() {
        return Some(broadcast::run(ctx, session_id, msg).await);
    }
    let user_id = msg.user_id.clone().unwrap_or_default();
    let mut result = GatewayPushResult::new(&user_id, msg.client_type);
    result.point("push-center-begin");
    let start = Instant::now();
    let error = |mut result: GatewayPushResult, code: ErrorCode, point: &str| {
        result.point(point);
        let mut err = ErrorMessage::from_code(Command::GatewayPush.code(), code);
        err.data = Some(result.to_json());
        Some(Packet::with_body(Command::Error, session_id, err.encode()))
    };

    let conn = ctx.router.local.lookup(&user_id, msg.client_type);
    let conn = match conn {
        Some(c) if c.is_closed() => {
            ctx.router
                .local
                .unregister(&user_id, msg.client_type, c.seq());
            None
        }
        other => other,
    };
    let Some(conn) = conn else {
        // Not here: the cluster route tells offline from "moved".
        let route = ctx
            .router
            .remote
            .lookup(&user_id, msg.client_type)
            .await
            .ok()
            .flatten();
        let outcome = match route {
            Some(loc) if loc.is_online() && !ctx.router.is_this_server(&loc) => {
                PushOutcome::RouterChange
            }
            Some(loc) if loc.is_online() => {
                // A stale route to this server: fix it.
                let _ = ctx
                    .router
                    .remote
                    .mark_offline(&user_id, msg.client_type, loc.conn_id.as_deref(), None)
                    .await;
                PushOutcome::Offline
            }
            _ => PushOutcome::Offline,
        };
        ctx.push_listener
            .on_push(&user_id, msg.client_type, outcome);
        return if outcome == PushOutcome::RouterChange {
            error(result, ErrorCode::RouterChange, "redirect-end")
        } else {
            error(result, ErrorCode::Offline, "offline-end")
        };
    };
    if !conn.is_writable() {
        ctx.push_listener
            .on_push(&user_id, msg.client_type, PushOutcome::Failure);
        return error(result, ErrorCode::PushClientFailure, "failure-end");
    }
    ctx.push.global_flow.acquire().await;
    result.point("before-send");
    let content = Bytes::from(msg.content.unwrap_or_default());
    let ack_flags = push_flags & flags::ACK_MASK;
    if ack_flags != 0 {
        result.point("waiting-ack");
    }
    let budget = Duration::from_millis(u64::try_from(msg.timeout).unwrap_or(0));
    let remaining = budget.saturating_sub(start.elapsed());
    let outcome = push_to_connection(ctx, &conn, &content, ack_flags, remaining).await;
    ctx.push_listener
        .on_push(&user_id, msg.client_type, outcome);
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
        PushOutcome::Offline => error(result, ErrorCode::Offline, "offline-end"),
        PushOutcome::Failure | PushOutcome::RouterChange => {
            error(result, ErrorCode::PushClientFailure, "failure-end")
        }
    }
}
