//! FAST_CONNECT (spec §4.4): resume a session from its ticket without RSA.

use std::sync::Arc;

use super::{ServerContext, decode_or_close, open_body};
use crate::protocol::crypto::{AesCipher, Cipher};
use crate::protocol::message::{
    ErrorCode, ErrorMessage, FastConnectOk, FastConnectRequest, Message,
};
use crate::protocol::session::{ReusableSession, session_cache_key};
use crate::protocol::{Command, Packet};
use crate::server::connection::{Connection, Flow, dispatch_error};
use crate::spi::ServerEvent;

/// How long a fast connect waits for the reusable session before answering "expired".
const FAST_CONNECT_LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(1000);

pub(super) async fn handle(
    ctx: &Arc<ServerContext>,
    conn: &Arc<Connection>,
    packet: Packet,
) -> Flow {
    let plain = match open_body(ctx, conn, &packet) {
        Ok(p) => p,
        Err(e) => return dispatch_error(conn, &packet, &e),
    };
    let req: FastConnectRequest = match decode_or_close(conn, &packet, &plain) {
        Ok(r) => r,
        Err(flow) => return flow,
    };
    let reply_error = |code| {
        conn.send_error(
            packet.session_id,
            &ErrorMessage::from_code(Command::FastConnect.code(), code),
        );
        // The connection stays open: the client falls back to a full handshake on it.
        Flow::Continue
    };
    let Some(ticket) = req.session_id.filter(|t| !t.is_empty()) else {
        return reply_error(ErrorCode::SessionExpired);
    };
    // The one backend read a reply depends on, bounded well inside the Java client's 3 s
    // step: a slow or dead cache answers "session expired" and the client does a full
    // handshake, which needs no backend.
    let key = session_cache_key(&ticket);
    let lookup = ctx.cache.get(&key);
    let cached = match tokio::time::timeout(FAST_CONNECT_LOOKUP_TIMEOUT, lookup).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot read reusable session");
            None
        }
        Err(_) => {
            tracing::warn!("reusable session lookup timed out; client falls back to a handshake");
            None
        }
    };
    let Some(session) = cached.as_deref().and_then(ReusableSession::decode) else {
        return reply_error(ErrorCode::SessionExpired);
    };
    if req.device_id.as_deref() != Some(session.device_id.as_str()) {
        return reply_error(ErrorCode::InvalidDevice);
    }
    let heartbeat = ctx.negotiate_heartbeat(req.max_heartbeat);
    let ok = FastConnectOk {
        heartbeat: heartbeat.as_millis() as i32,
    };
    if conn
        .send_raw(&Packet::with_body(
            Command::FastConnect,
            packet.session_id,
            ok.encode(),
        ))
        .is_err()
    {
        return Flow::Close;
    }
    let device_id = session.device_id.clone();
    {
        // The bound user is not restored: the client binds again.
        let mut s = conn.lock_state();
        s.cipher = Some(Cipher::Aes(AesCipher::new(session.session_key, session.iv)));
        s.device_id = Some(session.device_id);
        s.os_name = session.os_name;
        s.os_version = session.os_version;
        s.client_version = session.client_version;
        s.heartbeat = Some(heartbeat);
    }
    ctx.emit(ServerEvent::HandshakeDone {
        conn_id: conn.id().to_string(),
        device_id,
    });
    Flow::Continue
}
