//! The UDP gateway server (`mp.net.gateway-server-net = udp`, spec §1.8, §2, §9.7).
//!
//! In UDP mode this socket replaces the TCP gateway listener: it is bound on
//! `gateway-server-bind-ip:gateway-server-port`, and its port is what routes and service
//! discovery advertise. Every datagram carries exactly one packet:
//!
//! - GATEWAY_PUSH (16): run by the same [`handle_push`] as the TCP gateway; the OK/ERROR
//!   reply (same bytes as over TCP) is unicast to the datagram's source address.
//! - GATEWAY_KICK (14): a cross-server kick (§8.4), handled as the MQ kick listener does.
//! - anything else: logged only.
//!
//! The socket is shared by every peer, so bad input never closes it (quirk Q25 fixed): an
//! undecodable datagram is logged and, when its header is readable, answered with ERROR 100.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use super::ServerError;
use super::context::ServerContext;
use super::gateway::handle_push;
use super::handler;
use crate::config::NetConfig;
use crate::net::{join_multicast, multicast_group, multicast_interface};
use crate::protocol::message::{ErrorCode, ErrorMessage, GatewayKick, GatewayPush, Message};
use crate::protocol::packet::decode_datagram;
use crate::protocol::udp::MAX_DATAGRAM;
use crate::protocol::{Command, Packet};
use crate::router::KickRequest;
use crate::spi::ClientType;

/// GATEWAY_PUSH datagrams being handled at once. Beyond this the socket is not read, so
/// the kernel drops excess datagrams instead of the server queuing unbounded work (the TCP
/// gateway gets the same effect from its per-connection reply queue).
const MAX_IN_FLIGHT: usize = 10_000;
/// Largest IPv4 UDP payload.
const MAX_UDP_PAYLOAD: usize = 65_507;

/// Binds the UDP gateway socket and, when multicast is enabled, joins
/// `gateway-server-multicast` (spec §9.7). Joining is best effort: unicast works without it.
/// Returns the socket and its bound address (the port routes and discovery advertise).
pub(crate) async fn bind(net: &NetConfig) -> Result<(Arc<UdpSocket>, SocketAddr), ServerError> {
    let ip = if net.gateway_server_bind_ip.is_empty() {
        "0.0.0.0"
    } else {
        net.gateway_server_bind_ip.as_str()
    };
    let addr = format!("{ip}:{}", net.gateway_server_port);
    let what = "gateway server (udp)";
    let socket = UdpSocket::bind(&addr).await;
    let (socket, bound) = match socket.and_then(|s| s.local_addr().map(|a| (s, a))) {
        Ok(r) => r,
        Err(source) => return Err(ServerError::Bind { what, addr, source }),
    };
    if let Err(e) = socket.set_broadcast(true) {
        tracing::debug!(error = %e, "cannot set SO_BROADCAST on the gateway socket");
    }
    // multicast_group() is None when the group is "" or the bind IP is loopback.
    if let Some(group) = multicast_group(net) {
        let interface = multicast_interface(net, &net.gateway_server_bind_ip);
        join_multicast(&socket, group, interface, "gateway server");
    }
    Ok((Arc::new(socket), bound))
}

/// What one datagram asks for.
enum Work {
    /// A GATEWAY_PUSH to run.
    Push {
        session_id: i32,
        flags: u8,
        msg: GatewayPush,
    },
    /// An immediate reply (an ERROR).
    Reply(Packet),
    /// Nothing more to do.
    Done,
}

/// Serves the UDP gateway until shutdown. Never returns early because of input.
pub(crate) async fn serve(ctx: Arc<ServerContext>, socket: Arc<UdpSocket>, tasks: TaskTracker) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    loop {
        let received = crate::net::recv_datagram(&socket, &mut buf, &ctx.shutdown, "gateway");
        let Some((n, peer)) = received.await else {
            return;
        };
        match classify(&ctx, &buf[..n], peer) {
            Work::Done => {}
            Work::Reply(p) => send_reply(&socket, &p, peer).await,
            Work::Push {
                session_id,
                flags,
                msg,
            } => {
                let permit = tokio::select! {
                    _ = ctx.shutdown.cancelled() => return,
                    p = permits.clone().acquire_owned() => p,
                };
                let Ok(permit) = permit else { return };
                let (ctx, socket) = (ctx.clone(), socket.clone());
                ctx.hooks
                    .executor
                    .handle(crate::spi::ExecutorRole::Push)
                    .spawn(tasks.track_future(async move {
                        if let Some(reply) = handle_push(&ctx, peer, session_id, flags, msg).await {
                            send_reply(&socket, &reply, peer).await;
                        }
                        drop(permit);
                    }));
            }
        }
    }
}

/// Decodes one datagram and handles what needs no waiting (kicks, errors).
fn classify(ctx: &ServerContext, data: &[u8], peer: SocketAddr) -> Work {
    let packet = match decode_datagram(data, ctx.config.net.gateway_max_packet_size) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(%peer, len = data.len(), error = %e, "gateway udp: undecodable datagram");
            return error_for_header(data).map_or(Work::Done, Work::Reply);
        }
    };
    let dispatch_error = |cmd: Command| {
        Work::Reply(Packet::with_body(
            Command::Error,
            packet.session_id,
            ErrorMessage::from_code(cmd.code(), ErrorCode::DispatchError).encode(),
        ))
    };
    match packet.cmd {
        Command::GatewayPush => match GatewayPush::decode(&packet.body) {
            Ok(msg) => Work::Push {
                session_id: packet.session_id,
                flags: packet.flags,
                msg,
            },
            Err(e) => {
                tracing::debug!(%peer, error = %e, "gateway udp: undecodable GATEWAY_PUSH");
                dispatch_error(Command::GatewayPush)
            }
        },
        Command::GatewayKick => match GatewayKick::decode(&packet.body) {
            Ok(msg) => {
                on_gateway_kick(ctx, msg, peer);
                Work::Done
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "gateway udp: undecodable GATEWAY_KICK");
                dispatch_error(Command::GatewayKick)
            }
        },
        other => {
            // Spec §2: unknown commands on the UDP gateway are logged only.
            tracing::debug!(%peer, cmd = ?other, "gateway udp: unsupported command ignored");
            Work::Done
        }
    }
}

/// ERROR 100 for a datagram whose header is readable (enough bytes for the sessionId), so
/// the sender learns its request failed instead of timing out. OK/ERROR datagrams are never
/// answered: two peers could otherwise bounce errors at each other forever.
fn error_for_header(data: &[u8]) -> Option<Packet> {
    let session = data.get(8..12)?;
    let cmd = Command::from_code(*data.get(4)?);
    if matches!(cmd, Command::Ok | Command::Error) {
        return None;
    }
    let session_id = i32::from_be_bytes(session.try_into().ok()?);
    let err = ErrorMessage::from_code(cmd.code(), ErrorCode::DispatchError);
    Some(Packet::with_body(Command::Error, session_id, err.encode()))
}

/// A GATEWAY_KICK from another server: the same checks as the MQ kick listener.
fn on_gateway_kick(ctx: &ServerContext, msg: GatewayKick, peer: SocketAddr) {
    let Some(user_id) = msg.user_id else {
        tracing::debug!(%peer, "gateway udp: GATEWAY_KICK without userId ignored");
        return;
    };
    let req = KickRequest {
        client_type: msg.client_type,
        conn_id: msg.conn_id,
        device_id: msg.device_id,
        target_port: msg.target_port,
        target_server: msg.target_server.unwrap_or_default(),
        user_id,
    };
    apply_kick(ctx, &req);
}

/// Kicks the local connection a cluster kick request names (spec §8.4): only if the request
/// targets this server's gateway and the local route of (userId, clientType) still is the
/// connection it names. Routes are left alone (Q24).
pub(crate) fn apply_kick(ctx: &ServerContext, req: &KickRequest) {
    if req.target_server != ctx.router.gateway_host
        || req.target_port != i32::from(ctx.router.gateway_port)
    {
        return;
    }
    if let Some(conn) = ctx
        .router
        .local
        .lookup(&req.user_id, ClientType::from(req.client_type))
    {
        if req.conn_id.as_deref() == Some(conn.id()) {
            handler::displace(ctx, &conn, &req.user_id);
        }
    }
}

async fn send_reply(socket: &UdpSocket, packet: &Packet, peer: SocketAddr) {
    let bytes = packet.to_bytes();
    if bytes.len() > MAX_UDP_PAYLOAD {
        tracing::warn!(%peer, len = bytes.len(), "gateway udp: reply too large for a datagram");
        return;
    }
    if let Err(e) = socket.send_to(&bytes, peer).await {
        tracing::debug!(%peer, error = %e, "gateway udp: cannot send reply");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_only_for_readable_headers_and_never_for_replies() {
        assert!(error_for_header(b"hello").is_none());
        let mut header = vec![0u8, 0, 0, 50, 16, 0, 0, 0, 0, 0, 0, 7, 0];
        let p = error_for_header(&header);
        assert!(matches!(p, Some(ref p) if p.session_id == 7 && p.cmd == Command::Error));
        header[4] = Command::Error.code();
        assert!(error_for_header(&header).is_none());
    }
}
