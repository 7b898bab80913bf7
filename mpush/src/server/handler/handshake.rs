//! HANDSHAKE (spec §4.3): RSA-decrypt the request, agree on keys, issue a ticket.

use std::sync::Arc;
use std::time::Duration;

use super::{ServerContext, decode_or_close};
use crate::protocol::crypto::{AES_KEY_LEN, AesCipher, Cipher, mix_keys, random_key};
use crate::protocol::message::{ErrorCode, ErrorMessage, HandshakeOk, HandshakeRequest, Message};
use crate::protocol::session::{ReusableSession, is_wire_safe, make_ticket, session_cache_key};
use crate::protocol::{Command, Packet, ProtocolError, body, flags};
use crate::server::connection::{Connection, Flow, dispatch_error};
use crate::spi::ServerEvent;

pub(super) async fn handle(
    ctx: &Arc<ServerContext>,
    conn: &Arc<Connection>,
    packet: Packet,
) -> Flow {
    // Admission: a bounded queue in front of the RSA slots. Over the bound the handshake
    // is refused at once (the client retries later) instead of queueing without limit.
    let Some(queued) = ctx.admission.queue_handshake() else {
        conn.send_error(
            packet.session_id,
            &ErrorMessage::with_reason(Command::Handshake.code(), "Server busy"),
        );
        return Flow::Close;
    };
    let opened = rsa_open(ctx, conn, &packet).await;
    drop(queued);
    let plain = match opened {
        Ok(Some(p)) => p,
        // Closed while queued: no RSA work for a connection that is gone.
        Ok(None) => return Flow::Close,
        Err(e) => return dispatch_error(conn, &packet, &e),
    };
    let req: HandshakeRequest = match decode_or_close(conn, &packet, &plain) {
        Ok(r) => r,
        Err(flow) => return flow,
    };
    let device_id = req.device_id.clone().unwrap_or_default();
    let (Some(iv), Some(client_key)) = (as_key(&req.iv), as_key(&req.client_key)) else {
        return param_invalid(conn, &packet);
    };
    if device_id.is_empty() {
        return param_invalid(conn, &packet);
    }
    if conn.lock_state().device_id.as_deref() == Some(device_id.as_str()) {
        // A retried handshake: answer and keep the connection (the Java client ignores it).
        conn.send_error(
            packet.session_id,
            &ErrorMessage::from_code(Command::Handshake.code(), ErrorCode::RepeatHandshake),
        );
        return Flow::Continue;
    }

    let server_key = random_key();
    let session_key = mix_keys(&client_key, &server_key);
    let heartbeat = ctx.negotiate_heartbeat(req.max_heartbeat);
    let now = ServerContext::wall_ms();
    let ticket = make_ticket(&device_id, now);
    // 64-bit arithmetic (quirk Q26 fixed).
    let expire_time = now.saturating_add(ctx.config.core.session_expired_time.as_millis() as i64);
    let ok = HandshakeOk {
        server_key: Some(server_key.to_vec()),
        heartbeat: heartbeat.as_millis() as i32,
        session_id: Some(ticket.clone()),
        expire_time,
    };
    // HandshakeOk goes out under AES(clientKey, iv); everything after it under the session key.
    let hello = Cipher::Aes(AesCipher::new(client_key, iv));
    let sealed = body::seal(
        ok.encode(),
        Some(&hello),
        ctx.config.core.compress_threshold,
    );
    let (body, extra) = match sealed {
        Ok(b) => b,
        Err(e) => return dispatch_error(conn, &packet, &e),
    };
    let reply = Packet {
        flags: extra,
        body,
        ..Packet::new(Command::Handshake, packet.session_id)
    };
    {
        let mut s = conn.lock_state();
        s.cipher = Some(Cipher::Aes(AesCipher::new(session_key, iv)));
        s.device_id = Some(device_id.clone());
        s.os_name = req.os_name.clone();
        s.os_version = req.os_version.clone();
        s.client_version = req.client_version.clone();
        s.heartbeat = Some(heartbeat);
    }
    if conn.send_raw(&reply).is_err() {
        return Flow::Close;
    }
    ctx.emit(ServerEvent::HandshakeDone {
        conn_id: conn.id().to_string(),
        device_id: device_id.clone(),
    });

    let session = ReusableSession {
        os_name: req.os_name,
        os_version: req.os_version,
        client_version: req.client_version,
        device_id,
        session_key,
        iv,
    };
    // HandshakeOk never waits for the cache: a Redis stall must not fail every new client
    // (the Java client gives a handshake 3 s). A fast reconnect that races this write finds
    // no session yet and falls back to a full handshake.
    // Detached from the connection: nothing this client sends next depends on it, so a slow
    // cache must not hold up its bind (bounded; past the bound it runs on this task).
    let ctx2 = ctx.clone();
    let write = async move {
        store_session(&ctx2, &ticket, &session).await;
    };
    match ctx.background_writes.clone().try_acquire_owned() {
        Ok(permit) => {
            tokio::spawn(async move {
                write.await;
                drop(permit);
            });
            Flow::Continue
        }
        Err(_) => Flow::Then(Box::pin(write)),
    }
}

/// Writes the reusable session (§5). A session whose fields contain a comma cannot be read
/// back by any MPush server (quirk Q12): it is not stored, so a fast reconnect falls back to
/// a full handshake, as it would against the original.
async fn store_session(ctx: &ServerContext, ticket: &str, s: &ReusableSession) {
    let fields = [
        s.os_name.as_deref(),
        s.os_version.as_deref(),
        s.client_version.as_deref(),
    ];
    if !is_wire_safe(&s.device_id) || fields.into_iter().flatten().any(|f| !is_wire_safe(f)) {
        tracing::debug!(device = %s.device_id, "session has a comma in a field, not stored");
        return;
    }
    let ttl = Some(
        ctx.config
            .core
            .session_expired_time
            .max(Duration::from_secs(1)),
    );
    if let Err(e) = ctx
        .cache
        .set(&session_cache_key(ticket), &s.encode(), ttl)
        .await
    {
        tracing::warn!(error = %e, "cannot store reusable session; fast reconnect will fall back");
    }
}

/// RSA-decrypts the handshake body on the blocking pool (≈0.7 ms of CPU per request must
/// not stall I/O workers), with at most a few decryptions at once.
/// `Ok(None)` when the connection closed while waiting for a slot.
async fn rsa_open(
    ctx: &Arc<ServerContext>,
    conn: &Connection,
    packet: &Packet,
) -> Result<Option<Vec<u8>>, ProtocolError> {
    if packet.body.is_empty() {
        return Err(ProtocolError::EmptyBody);
    }
    if !packet.has_flag(flags::CRYPTO) {
        let p = body::open(packet, None, super::max_inflated(ctx))?;
        return Ok(Some(p.to_vec()));
    }
    let _permit = tokio::select! {
        p = ctx.rsa_permits.acquire() => p.map_err(|_| ProtocolError::Decrypt)?,
        _ = conn.closed() => return Ok(None),
    };
    if conn.is_closed() {
        return Ok(None);
    }
    let rsa = ctx.rsa.clone();
    let packet = packet.clone();
    let max = super::max_inflated(ctx);
    let job = ctx
        .executor
        .handle(crate::spi::ExecutorRole::Blocking)
        .spawn_blocking(move || {
            body::open(&packet, Some(&Cipher::Rsa(rsa)), max).map(|b| b.to_vec())
        });
    job.await.map_err(|_| ProtocolError::Decrypt)?.map(Some)
}

fn as_key(v: &Option<Vec<u8>>) -> Option<[u8; AES_KEY_LEN]> {
    v.as_deref().and_then(|b| b.try_into().ok())
}

fn param_invalid(conn: &Connection, packet: &Packet) -> Flow {
    conn.send_error(
        packet.session_id,
        &ErrorMessage::with_reason(Command::Handshake.code(), "Param invalid"),
    );
    Flow::Close
}
