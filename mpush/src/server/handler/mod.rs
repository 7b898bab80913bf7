//! Command handlers of the connection server, one file per command family (spec §4, §8, §9.2).

mod bind;
mod fast_connect;
mod handshake;
mod push;

use std::sync::Arc;

use super::connection::{Connection, Flow, dispatch_error};
use super::context::ServerContext;
use crate::protocol::message::{ErrorCode, ErrorMessage, Kick, Message};
use crate::protocol::{Command, Packet, ProtocolError, body};
use crate::spi::ServerEvent;

/// Largest plain body accepted after inflating a COMPRESS-flagged packet (quirk Q28): a few
/// times the wire limit, so a legitimately compressed body fits and a zip bomb does not.
pub(crate) fn max_inflated(ctx: &ServerContext) -> usize {
    ctx.config.core.max_packet_size.saturating_mul(8)
}

/// Opens a packet body with the connection's session cipher.
pub(crate) fn open_body(
    ctx: &ServerContext,
    conn: &Connection,
    packet: &Packet,
) -> Result<bytes::Bytes, ProtocolError> {
    let cipher = conn.cipher();
    body::open(packet, cipher.as_ref(), max_inflated(ctx))
}

/// Routes one inbound packet to its handler.
pub(crate) async fn dispatch(
    ctx: &Arc<ServerContext>,
    conn: &Arc<Connection>,
    packet: Packet,
) -> Flow {
    match packet.cmd {
        // A framed heartbeat is tolerated (the Java server registers a handler that only
        // logs); the read itself already counted as activity.
        Command::Heartbeat => Flow::Continue,
        Command::Handshake => handshake::handle(ctx, conn, packet).await,
        Command::FastConnect => fast_connect::handle(ctx, conn, packet).await,
        Command::Bind => bind::bind(ctx, conn, packet).await,
        Command::Unbind => bind::unbind(ctx, conn, packet).await,
        Command::Push => push::upstream(ctx, conn, packet).await,
        Command::Ack => push::ack(ctx, conn, &packet),
        other => {
            tracing::debug!(conn = %conn.id(), cmd = ?other, "unsupported command");
            conn.send_error(
                packet.session_id,
                &ErrorMessage::from_code(other.code(), ErrorCode::UnsupportedCmd),
            );
            Flow::Close
        }
    }
}

/// Decodes a message body or answers ERROR 100 and closes.
pub(crate) fn decode_or_close<M: Message>(
    conn: &Connection,
    packet: &Packet,
    plain: &[u8],
) -> Result<M, Flow> {
    M::decode(plain).map_err(|e| dispatch_error(conn, packet, &e))
}

/// Sends KICK to `conn` (the displaced device), encrypted with its session (§8.2 step 7).
pub(crate) fn send_kick(ctx: &ServerContext, conn: &Connection, user_id: &str) {
    let device_id = conn.lock_state().device_id.clone();
    let msg = Kick {
        device_id: device_id.clone(),
        user_id: Some(user_id.to_string()),
    };
    let sent = conn.send_secure(
        Command::Kick,
        0,
        0,
        msg.encode(),
        ctx.config.core.compress_threshold,
    );
    tracing::debug!(conn = %conn.id(), user = user_id, ok = sent.is_ok(), "kick sent");
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

/// Disconnect cleanup (§8.5): drop the routes that still point at this connection.
pub(crate) async fn on_close(ctx: &Arc<ServerContext>, conn: &Arc<Connection>) {
    if !conn.mark_cleaned() {
        return;
    }
    let (user, client_type) = {
        let s = conn.lock_state();
        (s.user_id.clone(), s.client_type)
    };
    if let Some(user) = user {
        bind::drop_routes(ctx, conn, &user, client_type).await;
    }
    ctx.emit(ServerEvent::ConnectionClosed {
        conn_id: conn.id().to_string(),
    });
}
