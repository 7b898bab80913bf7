//! The push SDK's side of UDP gateway mode (`mp.net.gateway-server-net = udp`, spec §1.8,
//! §9.7): one UDP socket instead of a pool of TCP connections. Each GATEWAY_PUSH is one
//! datagram to the gateway's host:port; OK/ERROR replies come back as datagrams and are
//! matched to their request by sessionId, exactly as over TCP.
//!
//! Broadcasts go either to every known gateway (unicast) or, when multicast is enabled (see
//! [`multicast_group`]), as one datagram to the `gateway-server-multicast` group.
//!
//! There is no connection, so there is no "closed" answer from a gateway: a gateway that is
//! down is seen as a [`GatewayReply::Timeout`] (bounded by the request's deadline).

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::context::{PushContext, PushResult, ResultCode};
use super::gateway::GatewayReply;
use crate::config::NetConfig;
use crate::protocol::message::{ErrorMessage, GatewayPush, Message, OkMessage};
use crate::protocol::packet::decode_datagram;
use crate::protocol::{Command, Packet};
use crate::router::ClientLocation;

pub(super) use crate::net::multicast_group;
use crate::net::{MULTICAST_TTL, join_multicast, multicast_interface, recv_datagram};
use crate::protocol::udp::MAX_DATAGRAM;

/// Who waits for replies with a given sessionId.
enum Waiter {
    /// A unicast request: the first reply ends it.
    One(oneshot::Sender<GatewayReply>),
    /// A multicast broadcast: every gateway of the group answers with the same sessionId.
    Many(mpsc::UnboundedSender<(SocketAddr, GatewayReply)>),
}

/// The SDK's UDP socket with request/reply correlation.
#[derive(Debug)]
pub(super) struct UdpGatewayClient {
    socket: Arc<UdpSocket>,
    pending: Arc<DashMap<i32, Waiter>>,
    next_id: AtomicI32,
    closed: CancellationToken,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiter::One(_) => "One",
            Waiter::Many(_) => "Many",
        })
    }
}

impl UdpGatewayClient {
    /// Binds `0.0.0.0:<gateway-client-port>` (0 = any free port), joins
    /// `gateway-client-multicast` when set, and starts reading replies.
    pub(super) async fn bind(net: &NetConfig) -> std::io::Result<Self> {
        let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, net.gateway_client_port)).await?;
        if let Err(e) = socket.set_broadcast(true) {
            tracing::debug!(error = %e, "cannot set SO_BROADCAST on the push SDK socket");
        }
        if let Some(group) = net
            .gateway_client_multicast
            .parse::<Ipv4Addr>()
            .ok()
            .filter(Ipv4Addr::is_multicast)
        {
            join_multicast(&socket, group, multicast_interface(net, ""), "push sdk");
        } else if multicast_group(net).is_some() {
            // Sending to the server group still needs the TTL and loopback settings.
            let _ = socket.set_multicast_loop_v4(false);
            let _ = socket.set_multicast_ttl_v4(MULTICAST_TTL);
        }
        let socket = Arc::new(socket);
        let pending: Arc<DashMap<i32, Waiter>> = Arc::new(DashMap::new());
        let closed = CancellationToken::new();
        tokio::spawn(read_replies(
            socket.clone(),
            pending.clone(),
            closed.clone(),
        ));
        Ok(Self {
            socket,
            pending,
            next_id: AtomicI32::new(0),
            closed,
        })
    }

    /// Stops the reader; every waiting request ends as [`GatewayReply::Closed`].
    pub(super) fn close(&self) {
        self.closed.cancel();
        self.pending.clear();
    }

    fn packet(&self, flags: u8, msg: &GatewayPush) -> (i32, Vec<u8>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let p = Packet {
            flags,
            ..Packet::with_body(Command::GatewayPush, id, msg.encode())
        };
        (id, p.to_bytes().to_vec())
    }

    /// Sends `bytes` to `addr` (host:port; hostnames are resolved) before `deadline`.
    async fn send_to(&self, bytes: &[u8], addr: &str, deadline: tokio::time::Instant) -> bool {
        if self.closed.is_cancelled() {
            return false;
        }
        match tokio::time::timeout_at(deadline, self.socket.send_to(bytes, addr)).await {
            Ok(Ok(_)) => true,
            Ok(Err(e)) => {
                tracing::warn!(gateway = addr, error = %e, "cannot send GATEWAY_PUSH datagram");
                false
            }
            Err(_) => false,
        }
    }

    /// Sends a GATEWAY_PUSH datagram to `addr` and waits for its answer until `deadline`.
    pub(super) async fn request(
        &self,
        addr: &str,
        flags: u8,
        msg: &GatewayPush,
        deadline: tokio::time::Instant,
    ) -> GatewayReply {
        let (id, bytes) = self.packet(flags, msg);
        // The socket is bound to the unspecified address: no trace id the gateway could
        // derive too, only the sessionId (docs/OPERATIONS.md).
        tracing::Span::current().record("session_id", id);
        let (tx, rx) = oneshot::channel();
        // Registered before sending: a reply can never beat its waiter.
        self.pending.insert(id, Waiter::One(tx));
        // Forgets the waiter on every way out, a caller that gave up included: an ACK push
        // that times out gets no answer to remove it.
        let _forget = Forget(&self.pending, id);
        if !self.send_to(&bytes, addr, deadline).await {
            return if tokio::time::Instant::now() >= deadline {
                GatewayReply::Timeout
            } else {
                GatewayReply::Closed
            };
        }
        let reply = tokio::select! {
            r = rx => r.unwrap_or(GatewayReply::Closed),
            _ = tokio::time::sleep_until(deadline) => GatewayReply::Timeout,
            _ = self.closed.cancelled() => GatewayReply::Closed,
        };
        reply
    }

    /// Sends a GATEWAY_PUSH datagram without waiting for an answer; `false` if it could not
    /// be sent.
    pub(super) async fn send_only(&self, addr: &str, flags: u8, msg: &GatewayPush) -> bool {
        let (_, bytes) = self.packet(flags, msg);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        self.send_to(&bytes, addr, deadline).await
    }

    /// Broadcast through the multicast `group` at the gateway `port` (spec §9.5, §9.7): one
    /// datagram; every gateway of the group answers with the same sessionId. Returns one
    /// result per gateway that answered, plus TIMEOUT for each of `known` (host:port) that did
    /// not answer by the deadline. With a task id the result is SUCCESS once sent.
    pub(crate) async fn broadcast_multicast(
        &self,
        ctx: &PushContext,
        msg: &GatewayPush,
        group: SocketAddrV4,
        known: &[String],
    ) -> Vec<PushResult> {
        let group_loc = location(&group.to_string());
        let deadline = tokio::time::Instant::now() + ctx.timeout;
        let (id, bytes) = self.packet(ctx.ack_model.flags(), msg);
        let target = group.to_string();
        if ctx.task_id().is_some() {
            let code = if self.send_to(&bytes, &target, deadline).await {
                ResultCode::Success
            } else {
                ResultCode::Failure
            };
            return vec![PushResult::new(code, None, Some(group_loc))];
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        self.pending.insert(id, Waiter::Many(tx));
        let forget = Forget(&self.pending, id);
        if !self.send_to(&bytes, &target, deadline).await {
            return vec![PushResult::new(ResultCode::Failure, None, Some(group_loc))];
        }
        let mut results = Vec::new();
        let mut answered = HashSet::new();
        loop {
            let next = tokio::select! {
                r = rx.recv() => r,
                _ = tokio::time::sleep_until(deadline) => None,
                _ = self.closed.cancelled() => None,
            };
            let Some((from, reply)) = next else { break };
            // One result per gateway even if a datagram is duplicated on the way (Q6).
            if !answered.insert(from.to_string()) {
                continue;
            }
            let loc = location(&from.to_string());
            results.push(match reply {
                GatewayReply::Ok(_) => PushResult::new(ResultCode::Success, None, Some(loc)),
                GatewayReply::Error(e) => {
                    let mut r = PushResult::new(ResultCode::Failure, None, Some(loc));
                    r.error = e.reason;
                    r
                }
                GatewayReply::Closed => PushResult::new(ResultCode::Failure, None, Some(loc)),
                GatewayReply::Timeout => PushResult::new(ResultCode::Timeout, None, Some(loc)),
            });
            if !known.is_empty() && known.iter().all(|k| answered.contains(k)) {
                break;
            }
        }
        drop(forget);
        for k in known.iter().filter(|k| !answered.contains(*k)) {
            results.push(PushResult::new(
                ResultCode::Timeout,
                None,
                Some(location(k)),
            ));
        }
        if results.is_empty() {
            results.push(PushResult::new(ResultCode::Timeout, None, Some(group_loc)));
        }
        results
    }
}

impl Drop for UdpGatewayClient {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// A gateway address as the location of a broadcast result.
fn location(addr: &str) -> ClientLocation {
    let (host, port) = addr.rsplit_once(':').unwrap_or((addr, "0"));
    ClientLocation {
        host: host.to_string(),
        port: port.parse().unwrap_or(0),
        ..Default::default()
    }
}

/// Reads OK/ERROR datagrams and hands each to the request waiting for its sessionId.
/// Anything else is logged and dropped; no datagram can stop the reader.
async fn read_replies(
    socket: Arc<UdpSocket>,
    pending: Arc<DashMap<i32, Waiter>>,
    closed: CancellationToken,
) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Some((n, from)) = recv_datagram(&socket, &mut buf, &closed, "push sdk").await else {
            break;
        };
        let packet = match decode_datagram(&buf[..n], MAX_DATAGRAM) {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%from, error = %e, "push sdk udp: undecodable datagram");
                continue;
            }
        };
        let reply = match packet.cmd {
            Command::Ok => OkMessage::decode(&packet.body).map(GatewayReply::Ok),
            Command::Error => ErrorMessage::decode(&packet.body).map(GatewayReply::Error),
            other => {
                tracing::debug!(%from, cmd = ?other, "push sdk udp: unexpected command ignored");
                continue;
            }
        };
        let reply = match reply {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%from, error = %e, "push sdk udp: undecodable reply");
                continue;
            }
        };
        let id = packet.session_id;
        let many = match pending.get(&id).as_deref() {
            Some(Waiter::Many(tx)) => Some(tx.clone()),
            Some(Waiter::One(_)) => None,
            None => {
                tracing::debug!(%from, session_id = id, "late or unknown gateway reply dropped");
                continue;
            }
        };
        match many {
            Some(tx) => {
                let _ = tx.send((from, reply));
            }
            None => {
                if let Some((_, Waiter::One(tx))) = pending.remove(&id) {
                    let _ = tx.send(reply);
                }
            }
        }
    }
    // Fail everything still waiting: the socket is no longer read.
    pending.clear();
}

/// Removes a request's waiter from the pending map when its call ends or is dropped.
struct Forget<'a>(&'a DashMap<i32, Waiter>, i32);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.remove(&self.1);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A caller that gives up before its deadline (its own shorter timeout) leaves no waiter
    /// behind; an ACK push that times out gets no answer that would remove it.
    #[tokio::test]
    async fn a_request_given_up_by_its_caller_is_forgotten() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let net = NetConfig {
            gateway_client_port: 0,
            ..NetConfig::default()
        };
        let client = UdpGatewayClient::bind(&net).await.unwrap();
        let msg = GatewayPush {
            user_id: Some("u".into()),
            client_type: 1,
            timeout: 3000,
            content: Some(b"x".to_vec()),
            task_id: None,
            tags: None,
            condition: None,
        };
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        let given_up = tokio::time::timeout(
            Duration::from_millis(50),
            client.request(&addr, 0, &msg, far),
        )
        .await;
        assert!(given_up.is_err(), "the silent gateway answered");
        assert!(client.pending.is_empty(), "{:?}", client.pending);
        client.close();
    }
}
