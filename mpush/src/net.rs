//! Socket helpers shared by the server and the push SDK (UDP gateway mode, spec §9.7).
//!
//! A leaf below both `server` and `sender`: it knows the `mp.net` configuration and tokio
//! sockets, nothing about connections, routes or pushes.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use crate::config::NetConfig;

/// Multicast TTL (spec §9.7: 255, as the original).
pub(crate) const MULTICAST_TTL: u32 = 255;

/// The multicast group `gateway-server-multicast` when UDP multicast is usable: the group is
/// set, is a valid IPv4 group, and `gateway-server-bind-ip` is not a loopback address (a
/// gateway bound to loopback cannot receive multicast, so it does not join, and the SDK must
/// not broadcast to a group nobody listens on). `None` means "unicast to every gateway".
pub(crate) fn multicast_group(net: &NetConfig) -> Option<Ipv4Addr> {
    let group = net
        .gateway_server_multicast
        .parse::<Ipv4Addr>()
        .ok()
        .filter(Ipv4Addr::is_multicast)?;
    let bind_loopback = net
        .gateway_server_bind_ip
        .parse::<Ipv4Addr>()
        .is_ok_and(|ip| ip.is_loopback());
    (!bind_loopback).then_some(group)
}

/// The pause after a failed datagram receive.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(10);

/// The next datagram into `buf` (its length and sender), or `None` once `stop` is cancelled.
/// A receive error is logged and the receive retried: some platforms report an ICMP "port
/// unreachable" for an earlier send here, which concerns that send only. The pause before
/// the retry keeps a persistent error from spinning.
pub(crate) async fn recv_datagram(
    socket: &UdpSocket,
    buf: &mut [u8],
    stop: &CancellationToken,
    role: &str,
) -> Option<(usize, SocketAddr)> {
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return None,
            r = socket.recv_from(buf) => r,
        };
        match received {
            Ok(r) => return Some(r),
            Err(e) => {
                tracing::debug!(role, error = %e, "udp recv failed");
                tokio::time::sleep(RECV_ERROR_PAUSE).await;
            }
        }
    }
}

/// Sets the multicast options of spec §9.7 (loopback off, TTL 255) and joins `group` on the
/// interface with address `interface` (unspecified = the kernel's choice). Failures are
/// logged, never fatal: unicast keeps working without multicast.
pub(crate) fn join_multicast(socket: &UdpSocket, group: Ipv4Addr, interface: Ipv4Addr, role: &str) {
    if let Err(e) = socket.set_multicast_loop_v4(false) {
        tracing::warn!(role, error = %e, "cannot disable multicast loopback");
    }
    if let Err(e) = socket.set_multicast_ttl_v4(MULTICAST_TTL) {
        tracing::warn!(role, error = %e, "cannot set multicast TTL");
    }
    match socket.join_multicast_v4(group, interface) {
        Ok(()) => tracing::info!(role, %group, %interface, "joined multicast group"),
        Err(e) => {
            tracing::warn!(role, %group, %interface, error = %e, "cannot join multicast group")
        }
    }
}

/// The interface to join multicast groups on: `preferred` if it is a specific IPv4 address,
/// else the resolved `local-ip` (the original uses the first site-local interface), else
/// "any" when that is loopback (no LAN interface found).
pub(crate) fn multicast_interface(net: &NetConfig, preferred: &str) -> Ipv4Addr {
    if let Ok(ip) = preferred.parse::<Ipv4Addr>() {
        if !ip.is_unspecified() {
            return ip;
        }
    }
    crate::address::local_ip(net)
        .parse::<Ipv4Addr>()
        .ok()
        .filter(|ip| !ip.is_loopback())
        .unwrap_or(Ipv4Addr::UNSPECIFIED)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn multicast_only_when_set_and_not_on_loopback() {
        let mut net = NetConfig::default();
        assert_eq!(
            multicast_group(&net),
            Some(Ipv4Addr::new(239, 239, 239, 88))
        );
        net.gateway_server_bind_ip = "127.0.0.1".into();
        assert_eq!(multicast_group(&net), None);
        net.gateway_server_bind_ip = "10.0.0.5".into();
        assert!(multicast_group(&net).is_some());
        net.gateway_server_multicast = String::new();
        assert_eq!(multicast_group(&net), None);
    }

    #[test]
    fn interface_prefers_a_specific_address() {
        let mut net = NetConfig::default();
        assert_eq!(
            multicast_interface(&net, "10.1.2.3"),
            Ipv4Addr::new(10, 1, 2, 3)
        );
        net.local_ip = "127.0.0.1".into();
        assert_eq!(multicast_interface(&net, ""), Ipv4Addr::UNSPECIFIED);
        assert_eq!(multicast_interface(&net, "0.0.0.0"), Ipv4Addr::UNSPECIFIED);
    }
}
