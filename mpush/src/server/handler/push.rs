//! Upstream PUSH (spec §9.2) and ACK of downstream pushes.

use std::sync::Arc;

use super::{ServerContext, open_body};
use crate::protocol::{Command, Packet, flags};
use crate::server::connection::{Connection, Flow, dispatch_error};
use crate::spi::UpstreamPush;

pub(super) async fn upstream(
    ctx: &Arc<ServerContext>,
    conn: &Arc<Connection>,
    packet: Packet,
) -> Flow {
    let content = match open_body(ctx, conn, &packet) {
        Ok(c) => c,
        Err(e) => return dispatch_error(conn, &packet, &e),
    };
    let (device_id, user_id) = {
        let s = conn.lock_state();
        (s.device_id.clone(), s.user_id.clone())
    };
    ctx.push_handler
        .on_push(UpstreamPush {
            conn_id: conn.id().to_string(),
            device_id,
            user_id,
            session_id: packet.session_id,
            flags: packet.flags,
            content,
        })
        .await;
    if packet.has_flag(flags::AUTO_ACK) {
        let _ = conn.send_raw(&Packet::new(Command::Ack, packet.session_id));
    }
    Flow::Continue
}

pub(super) fn ack(ctx: &ServerContext, conn: &Connection, packet: &Packet) -> Flow {
    if !ctx.push.acks.ack(conn.seq(), packet.session_id) {
        tracing::debug!(conn = %conn.id(), id = packet.session_id, "ACK for no pending push (late or unknown)");
    }
    Flow::Continue
}
