//! BIND and UNBIND (spec §8.2, §8.3), and route removal shared with disconnect cleanup.

use std::sync::Arc;

use super::{ServerContext, decode_or_close, open_body};
use crate::protocol::message::{BindUser, ErrorMessage};
use crate::protocol::{Command, Packet};
use crate::server::connection::{Connection, Flow, dispatch_error};
use crate::spi::{ClientType, ServerEvent};

/// Decodes a BIND/UNBIND and applies the common checks: a user id, and a handshake.
fn checked_request(
    ctx: &ServerContext,
    conn: &Connection,
    packet: &Packet,
) -> Result<(String, BindUser), Flow> {
    let plain = open_body(ctx, conn, packet).map_err(|e| dispatch_error(conn, packet, &e))?;
    let req: BindUser = decode_or_close(conn, packet, &plain)?;
    let fail = |reason: &str| {
        conn.send_error(
            packet.session_id,
            &ErrorMessage::with_reason(packet.cmd.code(), reason),
        );
        Flow::Close
    };
    let Some(user_id) = req.user_id.clone().filter(|u| !u.is_empty()) else {
        return Err(fail("invalid param"));
    };
    if !conn.lock_state().is_handshaken() {
        return Err(fail("not handshake"));
    }
    Ok((user_id, req))
}

pub(super) async fn bind(ctx: &Arc<ServerContext>, conn: &Arc<Connection>, packet: Packet) -> Flow {
    let (user_id, req) = match checked_request(ctx, conn, &packet) {
        Ok(r) => r,
        Err(flow) => return flow,
    };
    let (bound, client_type) = {
        let s = conn.lock_state();
        (s.user_id.clone(), s.client_type)
    };
    match bound {
        Some(u) if u == user_id => {
            // Re-binding the same user only updates the tags.
            conn.lock_state().tags = req.tags;
            conn.send_ok(packet.session_id, Command::Bind, "bind success");
            return Flow::Continue;
        }
        Some(old) => {
            // Quirk Q4: the original answers this implicit unbind with an extra OK/ERROR
            // tagged cmd 5 before the bind's own answer. mpush-rs sends only the bind's answer.
            drop_routes(ctx, conn, &old, client_type).await;
            let mut s = conn.lock_state();
            s.user_id = None;
            s.tags = None;
        }
        None => {}
    }
    let fail = || {
        conn.send_error(
            packet.session_id,
            &ErrorMessage::with_reason(Command::Bind.code(), "bind failed"),
        );
        Flow::Close
    };
    if !ctx
        .bind_validator
        .validate(&user_id, req.data.as_deref())
        .await
    {
        return fail();
    }

    let info = conn.info();
    let client_type = ctx.classifier.classify(info.os_name.as_deref());
    let location = ctx.router.location(
        conn.id(),
        info.device_id.clone(),
        info.os_name.clone(),
        info.client_version.clone(),
    );
    let old_local = ctx
        .router
        .local
        .register(&user_id, client_type, conn.clone());
    {
        let mut s = conn.lock_state();
        s.user_id = Some(user_id.clone());
        s.tags = req.tags;
        s.client_type = client_type;
        s.binding = true;
    }
    // The route write is the one thing a push needs, so bind OK waits for it (and only it).
    // It is a compare-and-set: of two binds racing on one (user, type), on any nodes, the
    // later sees the earlier and kicks it.
    let old_remote = match ctx
        .router
        .remote
        .register(&user_id, client_type, &location)
        .await
    {
        Ok(old) => old,
        Err(e) => {
            tracing::warn!(user = %user_id, error = %e, "cannot write remote route, bind failed");
            ctx.router
                .local
                .unregister(&user_id, client_type, conn.seq());
            if let Some(old) = old_local {
                // Put the displaced connection back: nothing changed for it.
                ctx.router.local.register(&user_id, client_type, old);
            }
            let mut s = conn.lock_state();
            s.user_id = None;
            s.tags = None;
            s.binding = false;
            return fail();
        }
    };
    conn.lock_state().binding = false;
    conn.send_ok(packet.session_id, Command::Bind, "bind success");

    // Displacement (§8.2 step 7): the old connection is told, not closed (quirk Q24), and is
    // never served again for this user.
    if let Some(old) = &old_local {
        super::displace(ctx, old, &user_id);
    }
    let remote_kick = old_remote.filter(|old| {
        old.is_online()
            && !ctx.router.names_connection(old, conn.id())
            && old_local
                .as_ref()
                .is_none_or(|l| !ctx.router.names_connection(old, l.id()))
    });
    let (ctx, conn_id) = (ctx.clone(), conn.id().to_string());
    Flow::Then(Box::pin(async move {
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
            ctx.router.publish_kick(&user_id, client_type, &old).await;
        }
    }))
}

pub(super) async fn unbind(
    ctx: &Arc<ServerContext>,
    conn: &Arc<Connection>,
    packet: Packet,
) -> Flow {
    if let Err(flow) = checked_request(ctx, conn, &packet) {
        return flow;
    }
    let (bound, client_type) = {
        let s = conn.lock_state();
        (s.user_id.clone(), s.client_type)
    };
    let Some(user_id) = bound else {
        // Quirk Q5 fixed: unbinding a never-bound connection is a no-op, not a crash.
        conn.send_ok(packet.session_id, Command::Unbind, "unbind success");
        return Flow::Continue;
    };
    if drop_routes(ctx, conn, &user_id, client_type).await {
        {
            let mut s = conn.lock_state();
            s.user_id = None;
            s.tags = None;
        }
        conn.send_ok(packet.session_id, Command::Unbind, "unbind success");
    } else {
        conn.send_error(
            packet.session_id,
            &ErrorMessage::with_reason(Command::Unbind.code(), "unbind failed"),
        );
    }
    Flow::Continue
}

/// Removes the user's routes that point at `conn`: the local route if it is still this
/// connection, the remote route if it still names this connection of this server (by
/// connId and gateway, never by device: the same device may already be bound on another
/// node, and a Java node's connIds may collide with ours). Emits UserOffline when the local
/// route went away. Returns `false` only when the cache could not be updated.
pub(super) async fn drop_routes(
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
    if !remote_ok && was_local && !conn.is_closed() {
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
