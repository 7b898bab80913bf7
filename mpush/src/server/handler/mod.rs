//! The session driver shared by TCP and WebSocket: turns frames into session requests and
//! executes the actions of the session state machine (`protocol::session`, spec §4, §8, §9.2).
//!
//! The machine decides every reply and every effect; this module only does the I/O: it
//! writes replies in queue order, runs the effects (cache, validator, routes, push handler,
//! events) and feeds results back. Effects the reply does not need (the reusable-session
//! write, the online publish) come back as [`Flow::Then`] so the driver flushes first.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::connection::{Connection, Effects, Flow, SendError};
use super::context::ServerContext;
use crate::protocol::crypto::{Cipher, random_key};
use crate::protocol::message::{
    BindUser, FastConnectOk, FastConnectRequest, HttpRequest, Kick, Message, OkMessage,
};
use crate::protocol::session::{
    Action, BindOutcome, Cx, Decrypted, Event, Inbound, Out, Request, Session, SessionConfig,
};
use crate::protocol::{Command, Packet, ProtocolError, body, flags};
use crate::router::ClientLocation;
use crate::spi::{BindRejection, ClientType, ServerEvent, UpstreamPush};

/// How long a fast connect waits for the reusable session before answering "expired": the
/// one backend read a reply depends on, bounded well inside the Java client's 3 s step.
const FAST_CONNECT_LOOKUP_TIMEOUT: Duration = Duration::from_millis(1000);

/// Largest plain body accepted after inflating a COMPRESS-flagged packet (quirk Q28): a few
/// times the wire limit, so a legitimately compressed body fits and a zip bomb does not.
pub(crate) fn max_inflated(ctx: &ServerContext) -> usize {
    ctx.config.core.max_packet_size.saturating_mul(8)
}

fn session_config(ctx: &ServerContext) -> SessionConfig {
    SessionConfig {
        min_heartbeat: ctx.config.core.min_heartbeat,
        max_heartbeat: ctx.config.core.max_heartbeat,
        session_expired_time: ctx.config.core.session_expired_time,
    }
}

/// Runs `f` on the connection's session under its lock, with the call context.
fn with_session<T>(
    ctx: &ServerContext,
    conn: &Connection,
    f: impl FnOnce(&mut Session, &mut Cx<'_>) -> T,
) -> T {
    let cfg = session_config(ctx);
    let classify = |os: Option<&str>| ctx.hooks.classifier.classify(os);
    let mut server_key = random_key;
    let mut cx = Cx {
        cfg: &cfg,
        classify: &classify,
        server_key: &mut server_key,
    };
    let mut s = conn.lock_state();
    f(&mut s, &mut cx)
}

/// Turns a TCP packet into a session request: bodies are opened with the session cipher
/// (the handshake's RSA block is left to [`Action::Decrypt`]); what cannot be opened or
/// decoded is [`Request::Malformed`].
pub(crate) fn tcp_inbound(ctx: &ServerContext, conn: &Connection, packet: Packet) -> Inbound {
    let sid = packet.session_id;
    let req = match packet.cmd {
        Command::Heartbeat => Request::Heartbeat,
        Command::Handshake => Request::SealedHandshake {
            flags: packet.flags,
            body: packet.body,
        },
        Command::Ack => Request::Ack,
        Command::HttpProxy if ctx.http_proxy.is_none() => Request::Unsupported(Command::HttpProxy),
        cmd @ (Command::FastConnect
        | Command::Bind
        | Command::Unbind
        | Command::Push
        | Command::HttpProxy) => {
            let cipher = conn.cipher();
            let decoded = body::open(&packet, cipher.as_ref(), max_inflated(ctx)).and_then(
                |plain| match cmd {
                    Command::FastConnect => {
                        FastConnectRequest::decode(&plain).map(Request::FastConnect)
                    }
                    Command::Bind => BindUser::decode(&plain).map(Request::Bind),
                    Command::Unbind => BindUser::decode(&plain).map(Request::Unbind),
                    Command::HttpProxy => {
                        HttpRequest::decode(&plain).map(|r| Request::HttpProxy(Box::new(r)))
                    }
                    _ => Ok(Request::Push {
                        flags: packet.flags,
                        content: plain,
                    }),
                },
            );
            decoded.unwrap_or_else(|e| {
                tracing::debug!(conn = %conn.id(), ?cmd, error = %e, "handle message error");
                Request::Malformed(cmd)
            })
        }
        other => Request::Unsupported(other),
    };
    Inbound { sid, req }
}

/// Feeds one request into the connection's session and executes what it asks for.
pub(crate) async fn dispatch(
    ctx: &Arc<ServerContext>,
    conn: &Arc<Connection>,
    inbound: Inbound,
) -> Flow {
    if let Request::Malformed(cmd) | Request::Unsupported(cmd) = &inbound.req {
        tracing::debug!(conn = %conn.id(), ?cmd, "request refused");
    }
    let now = ServerContext::wall_ms();
    with_session(ctx, conn, |s, cx| s.on_packet(cx, now, inbound));
    run_actions(ctx, conn).await
}

/// What a bind's route write displaced, kept between its actions.
#[derive(Default)]
struct BindScratch<'a> {
    /// The local connection that held (user, client type) before.
    displaced: Option<Arc<Connection>>,
    /// The cluster route before the write.
    previous: Option<ClientLocation>,
    /// This node's lock of the (user, type) (`server::bind_locks`), held from the local
    /// register through the cluster write to the undo or the displacement that follows it.
    serial: Option<tokio::sync::MutexGuard<'a, ()>>,
}

/// Executes the session's actions in queue order until it has none left. Replies are written
/// at once; gating effects are awaited and their result fed back; background effects are
/// returned in [`Flow::Then`] (or detached) so the reply leaves first.
async fn run_actions(ctx: &Arc<ServerContext>, conn: &Arc<Connection>) -> Flow {
    let mut scratch = BindScratch::default();
    let mut later: Vec<Effects> = Vec::new();
    let mut closing = false;
    loop {
        let Some(action) = conn.lock_state().poll_action() else {
            break;
        };
        match action {
            Action::Send(out) => {
                record_reply(&out);
                if let Err(e) = deliver(ctx, conn, &out) {
                    tracing::debug!(conn = %conn.id(), error = %e, "reply not sent");
                    closing = true;
                }
            }
            Action::Close => closing = true,
            Action::Decrypt { flags, body } => {
                let result = decrypt(ctx, conn, flags, body).await;
                let now = ServerContext::wall_ms();
                with_session(ctx, conn, |s, cx| s.on_decrypted(cx, now, result));
            }
            Action::StoreSession { key, value, ttl } => {
                let ctx2 = ctx.clone();
                let write = async move {
                    if let Err(e) = ctx2.cache.set(&key, &value, Some(ttl)).await {
                        tracing::warn!(error = %e, "cannot store reusable session; fast reconnect will fall back");
                    }
                };
                // HandshakeOk never waits for the cache, and neither does the client's next
                // request: detached (bounded; past the bound it runs after the flush).
                match ctx.background_writes.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(async move {
                            write.await;
                            drop(permit);
                        });
                    }
                    Err(_) => later.push(Box::pin(write)),
                }
            }
            Action::LoadSession { key } => {
                let value = load_session(ctx, &key).await;
                with_session(ctx, conn, |s, cx| s.on_session_loaded(cx, value));
            }
            Action::CheckBind { user_id, data } => {
                let outcome = match ctx
                    .hooks
                    .bind_validator
                    .validate(&user_id, data.as_deref())
                    .await
                {
                    Ok(()) => BindOutcome::Allowed,
                    Err(BindRejection::Denied { reason }) => {
                        tracing::debug!(conn = %conn.id(), user = %user_id, %reason, "bind denied");
                        BindOutcome::Denied(reason)
                    }
                    Err(BindRejection::Unavailable { reason }) => {
                        tracing::warn!(conn = %conn.id(), user = %user_id, %reason, "bind validator unavailable");
                        BindOutcome::Unavailable(reason)
                    }
                };
                with_session(ctx, conn, |s, cx| s.on_bind_checked(cx, outcome));
            }
            Action::WriteRoute {
                user_id,
                client_type,
            } => {
                let result = write_route(ctx, conn, &user_id, client_type, &mut scratch).await;
                conn.lock_state().on_route_written(result);
            }
            Action::UndoRoute {
                user_id,
                client_type,
            } => {
                ctx.router
                    .local
                    .unregister(&user_id, client_type, conn.seq());
                if let Some(old) = scratch.displaced.take() {
                    // Put the displaced connection back: nothing changed for it.
                    ctx.router.local.register(&user_id, client_type, old);
                }
                scratch.serial = None;
            }
            Action::BindDone {
                user_id,
                client_type,
            } => {
                later.push(bind_done(ctx, conn, user_id, client_type, &mut scratch));
                scratch.serial = None;
            }
            Action::RemoveRoutes {
                user_id,
                client_type,
                report,
            } => {
                let ok = drop_routes(ctx, conn, &user_id, client_type).await;
                if report {
                    conn.lock_state().on_routes_removed(ok);
                }
            }
            Action::Upstream {
                sid,
                flags,
                content,
                device_id,
                user_id,
            } => {
                ctx.hooks
                    .push_handler
                    .on_push(UpstreamPush {
                        conn_id: conn.id().to_string(),
                        device_id,
                        user_id,
                        session_id: sid,
                        flags,
                        content,
                    })
                    .await;
            }
            Action::HttpProxy { sid, req } => match &ctx.http_proxy {
                Some(proxy) => proxy.spawn(
                    conn,
                    sid,
                    req,
                    ctx.config.core.compress_threshold,
                    &ctx.shutdown,
                ),
                // The transport only decodes HTTP_PROXY when the proxy exists.
                None => tracing::debug!(conn = %conn.id(), "http proxy request without a proxy"),
            },
            Action::AckArrived { push_id } => {
                if !ctx.push.acks.ack(conn.seq(), push_id) {
                    tracing::debug!(conn = %conn.id(), id = push_id, "ACK for no pending push (late or unknown)");
                }
            }
            Action::Emit(event) => ctx.emit(match event {
                Event::HandshakeDone { device_id } => ServerEvent::HandshakeDone {
                    conn_id: conn.id().to_string(),
                    device_id,
                },
                Event::ConnectionClosed => ServerEvent::ConnectionClosed {
                    conn_id: conn.id().to_string(),
                },
            }),
        }
    }
    if closing {
        // A bind's background part still runs (online set, index, UserOnline, the kick of
        // the previous route elsewhere), and before the close's cleanup, which undoes it:
        // dropped, the old device elsewhere stayed unkicked and UserOffline came without a
        // UserOnline.
        for effect in later {
            effect.await;
        }
        Flow::Close
    } else if later.is_empty() {
        Flow::Continue
    } else {
        Flow::Then(Box::pin(async move {
            for effect in later {
                effect.await;
            }
        }))
    }
}

/// Counts handshakes, fast connects, binds and unbinds by the reply the session gave.
fn record_reply(out: &Out) {
    use crate::metrics as m;
    let key = match out {
        Out::HandshakeOk { .. } => &m::HANDSHAKE_OK,
        Out::FastConnectOk { .. } => &m::FAST_CONNECT_OK,
        Out::Ok {
            cmd: Command::Bind, ..
        } => &m::BIND_OK,
        Out::Ok {
            cmd: Command::Unbind,
            ..
        } => &m::UNBIND_OK,
        Out::Error { msg, .. } => match Command::from_code(msg.cmd) {
            Command::Handshake => &m::HANDSHAKE_ERROR,
            Command::FastConnect => &m::FAST_CONNECT_ERROR,
            Command::Bind => &m::BIND_ERROR,
            Command::Unbind => &m::UNBIND_ERROR,
            _ => return,
        },
        _ => return,
    };
    m::incr(key);
}

/// Writes one reply with the connection's transport (binary frame or JSON text frame).
fn deliver(ctx: &ServerContext, conn: &Connection, out: &Out) -> Result<(), SendError> {
    if conn.is_json() {
        // Built from the reply itself; every reply may pass the high water mark.
        return conn.send_json(&crate::protocol::json::encode_out(out), true);
    }
    let packet = match out {
        Out::HandshakeOk { sid, body: None } => Packet::new(Command::Handshake, *sid),
        Out::HandshakeOk {
            sid,
            body: Some((ok, hello)),
        } => {
            let hello = Cipher::Aes(hello.clone());
            let (body, extra) = body::seal(
                ok.encode(),
                Some(&hello),
                ctx.config.core.compress_threshold,
            )
            .map_err(|_| SendError::Encode)?;
            Packet {
                flags: extra,
                body,
                ..Packet::new(Command::Handshake, *sid)
            }
        }
        Out::FastConnectOk { sid, heartbeat_ms } => Packet::with_body(
            Command::FastConnect,
            *sid,
            FastConnectOk {
                heartbeat: *heartbeat_ms,
            }
            .encode(),
        ),
        Out::Ok { sid, cmd, data } => Packet::with_body(
            Command::Ok,
            *sid,
            OkMessage {
                cmd: cmd.code(),
                code: 0,
                data: Some((*data).to_string()),
            }
            .encode(),
        ),
        Out::Error { sid, msg } => Packet::with_body(Command::Error, *sid, msg.encode()),
        Out::Ack { sid } => Packet::new(Command::Ack, *sid),
    };
    conn.send_raw(&packet)
}

/// Admission, then the RSA open on the blocking pool (≈0.7 ms of CPU per request must not
/// stall I/O workers), with at most a few decryptions at once.
async fn decrypt(
    ctx: &Arc<ServerContext>,
    conn: &Connection,
    packet_flags: u8,
    body: Bytes,
) -> Decrypted {
    // A bounded queue in front of the RSA slots: over the bound the handshake is refused at
    // once (the client retries later) instead of queueing without limit.
    let Some(queued) = ctx.admission.queue_handshake() else {
        return Decrypted::Busy;
    };
    let packet = Packet {
        flags: packet_flags,
        body,
        ..Packet::new(Command::Handshake, 0)
    };
    let opened = rsa_open(ctx, conn, &packet).await;
    drop(queued);
    match opened {
        Ok(Some(plain)) => Decrypted::Plain(plain),
        Ok(None) => Decrypted::Abandoned,
        Err(e) => {
            tracing::debug!(conn = %conn.id(), error = %e, "cannot open handshake");
            Decrypted::Failed(e.to_string())
        }
    }
}

/// `Ok(None)` when the connection closed while waiting for a slot.
async fn rsa_open(
    ctx: &Arc<ServerContext>,
    conn: &Connection,
    packet: &Packet,
) -> Result<Option<Bytes>, ProtocolError> {
    if !packet.has_flag(flags::CRYPTO) {
        return body::open(packet, None, max_inflated(ctx)).map(Some);
    }
    // Queued and running decryptions: what a connect storm piles up.
    let _queued = crate::metrics::GaugeGuard::new(&crate::metrics::RSA_QUEUE_KEY);
    let _permit = tokio::select! {
        p = ctx.rsa_permits.acquire() => p.map_err(|_| ProtocolError::Decrypt)?,
        _ = conn.closed() => return Ok(None),
    };
    if conn.is_closed() {
        return Ok(None);
    }
    let rsa = ctx.rsa.clone();
    let packet = packet.clone();
    let max = max_inflated(ctx);
    let job = ctx
        .hooks
        .executor
        .handle(crate::spi::ExecutorRole::Blocking)
        .spawn_blocking(move || body::open(&packet, Some(&Cipher::Rsa(rsa)), max));
    job.await.map_err(|_| ProtocolError::Decrypt)?.map(Some)
}

/// Reads a reusable session; a cache error or a slow cache is "none" (the client falls back
/// to a full handshake, which needs no backend).
async fn load_session(ctx: &ServerContext, key: &str) -> Option<String> {
    match tokio::time::timeout(FAST_CONNECT_LOOKUP_TIMEOUT, ctx.cache.get(key)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read reusable session");
            None
        }
        Err(_) => {
            tracing::warn!("reusable session lookup timed out; client falls back to a handshake");
            None
        }
    }
}

/// Registers the local route, then writes the cluster route (a compare-and-set: of two binds
/// racing on one (user, type), on any nodes, the later sees the earlier and kicks it).
async fn write_route<'a>(
    ctx: &'a ServerContext,
    conn: &Arc<Connection>,
    user_id: &str,
    client_type: ClientType,
    scratch: &mut BindScratch<'a>,
) -> Result<(), String> {
    let info = conn.info();
    let location =
        ctx.router
            .location(conn.id(), info.device_id, info.os_name, info.client_version);
    // The local and the cluster write of one (user, type) in the same order on this node;
    // released by the undo or the displacement that follows (or with the scratch).
    scratch.serial = None;
    scratch.serial = Some(ctx.bind_locks.lock(user_id, client_type).await);
    scratch.displaced = ctx
        .router
        .local
        .register(user_id, client_type, conn.clone());
    match ctx
        .router
        .remote
        .register(user_id, client_type, &location)
        .await
    {
        Ok(previous) => {
            scratch.previous = previous;
            Ok(())
        }
        Err(e) => {
            tracing::warn!(user = %user_id, error = %e, "cannot write remote route, bind failed");
            Err(e.to_string())
        }
    }
}

/// After a successful bind's OK: tell the displaced local connection (§8.2 step 7; told, not
/// closed, quirk Q24), then return the background part: online set, index, UserOnline, and a
/// kick for a previous route online on another server.
fn bind_done(
    ctx: &Arc<ServerContext>,
    conn: &Connection,
    user_id: String,
    client_type: ClientType,
    scratch: &mut BindScratch<'_>,
) -> Effects {
    let old_local = scratch.displaced.take();
    let old_remote = scratch.previous.take();
    if let Some(old) = &old_local {
        displace(ctx, old, &user_id);
    }
    let remote_kick = old_remote.filter(|old| {
        old.is_online()
            && !ctx.router.names_connection(old, conn.id())
            && old_local
                .as_ref()
                .is_none_or(|l| !ctx.router.names_connection(old, l.id()))
    });
    let (ctx, conn_id) = (ctx.clone(), conn.id().to_string());
    Box::pin(async move {
        ctx.router.online.user_online(&user_id).await;
        ctx.router.index_user(&user_id).await;
        ctx.emit(ServerEvent::UserOnline {
            user_id: user_id.clone(),
            client_type,
            conn_id,
        });
        if let Some(old) = remote_kick {
            if ctx.router.is_this_server(&old) {
                // A stale route to a connection of this server that is gone or was
                // displaced already: nothing to tell.
                return;
            }
            crate::metrics::incr(&crate::metrics::KICK_REMOTE);
            ctx.router.publish_kick(&user_id, client_type, &old).await;
        }
    })
}

/// Sends KICK to `conn` (the displaced device), encrypted with its session (§8.2 step 7).
pub(crate) fn send_kick(ctx: &ServerContext, conn: &Connection, user_id: &str) {
    let device_id = conn.lock_state().device_id().map(str::to_owned);
    let msg = Kick {
        device_id: device_id.clone(),
        user_id: Some(user_id.to_string()),
    };
    let sent = if conn.is_json() {
        conn.send_json(&crate::protocol::json::encode_kick(0, &msg), true)
    } else {
        conn.send_secure(
            Command::Kick,
            0,
            0,
            msg.encode(),
            ctx.config.core.compress_threshold,
        )
    };
    tracing::debug!(conn = %conn.id(), user = user_id, ok = sent.is_ok(), "kick sent");
    crate::metrics::incr(&crate::metrics::KICK_LOCAL);
    ctx.emit(ServerEvent::Kicked {
        user_id: user_id.to_string(),
        device_id: device_id.unwrap_or_default(),
        conn_id: conn.id().to_string(),
    });
}

/// Takes `user_id` away from `conn` because another connection now holds its (user, client
/// type), on this node or another: the local route goes (if it is still `conn`), the session
/// forgets the user so no unicast or broadcast reaches it again, and the device gets KICK.
/// The remote route is not touched: it names the new connection.
pub(crate) fn displace(ctx: &ServerContext, conn: &Connection, user_id: &str) {
    let client_type = {
        let mut s = conn.lock_state();
        if s.user_id.as_deref() != Some(user_id) {
            // Already displaced, unbound or rebound to another user.
            return;
        }
        s.user_id = None;
        s.tags = None;
        s.client_type
    };
    ctx.router
        .local
        .unregister(user_id, client_type, conn.seq());
    send_kick(ctx, conn, user_id);
}

/// Disconnect cleanup (§8.5): the session drops the routes that still point at this
/// connection and reports the close.
pub(crate) async fn on_close(ctx: &Arc<ServerContext>, conn: &Arc<Connection>) {
    if !conn.mark_cleaned() {
        return;
    }
    conn.lock_state().on_closed();
    if let Flow::Then(effects) = run_actions(ctx, conn).await {
        effects.await;
    }
}

/// Removes the user's routes that point at `conn`: the local route if it is still this
/// connection, the remote route if it still names this connection of this server (by
/// connId and gateway, never by device: the same device may already be bound on another
/// node, and a Java node's connIds may collide with ours). Emits UserOffline when the local
/// route went away. Returns `false` only when the cache could not be updated.
async fn drop_routes(
    ctx: &ServerContext,
    conn: &Arc<Connection>,
    user_id: &str,
    client_type: ClientType,
) -> bool {
    // The local route goes first: a push arriving in between then finds no local
    // connection and a route naming this server, which it marks offline itself; the other
    // order would let it see a live local connection with an offline route and repair it.
    let was_local = ctx
        .router
        .local
        .unregister(user_id, client_type, conn.seq());
    let remote_ok = match ctx
        .router
        .remote
        .mark_offline_if(user_id, client_type, |loc| {
            ctx.router.names_connection(loc, conn.id())
        })
        .await
    {
        Ok(_) => true,
        Err(e) => {
            tracing::warn!(user = user_id, error = %e, "cannot mark remote route offline");
            false
        }
    };
    // Only while the session still holds the user: an UNBIND that failed keeps it bound,
    // but a rebind to another user (which dropped the old one first) or a close does not,
    // and putting the old user's route back would send its pushes to the new user's device.
    let still_bound = conn.lock_state().user_id.as_deref() == Some(user_id);
    if !remote_ok && was_local && still_bound && !conn.is_closed() {
        // Nothing changed in the cluster (an unbind that failed): keep serving the user
        // here, unless another connection took the slot meanwhile.
        if ctx.router.local.lookup(user_id, client_type).is_none() {
            ctx.router
                .local
                .register(user_id, client_type, conn.clone());
        }
        return false;
    }
    if was_local {
        if ctx.router.local.lookup_all(user_id).is_empty() {
            ctx.router.online.user_offline(user_id).await;
            ctx.router.unindex_user(user_id).await;
        }
        ctx.emit(ServerEvent::UserOffline {
            user_id: user_id.to_string(),
            client_type,
            conn_id: conn.id().to_string(),
        });
    }
    remote_ok
}
