//! The listeners' TLS (issue 11 §5): loading at start, reloading on SIGHUP or a file change,
//! the bounded accept-side handshake, and the gateway's source-network allowlist.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::ServerError;
use super::context::ServerContext;
use crate::config::{NetConfig, TlsListenerConfig};
use crate::tls::ReloadableTls;

/// The TLS config of each listener that has one.
#[derive(Debug, Clone, Default)]
pub(crate) struct TlsSet {
    pub connect: Option<Arc<ReloadableTls>>,
    pub ws: Option<Arc<ReloadableTls>>,
    pub gateway: Option<Arc<ReloadableTls>>,
    pub admin_http: Option<Arc<ReloadableTls>>,
}

impl TlsSet {
    /// Loads every configured listener's files.
    pub(crate) fn load(net: &NetConfig) -> Result<Self, ServerError> {
        let one = |what: &'static str, files: &TlsListenerConfig| {
            files
                .enabled()
                .then(|| ReloadableTls::load(files).map(Arc::new))
                .transpose()
                .map_err(|source| ServerError::Tls { what, source })
        };
        Ok(Self {
            connect: one("connection server", &net.connect_server_tls)?,
            ws: one("websocket server", &net.ws_server_tls)?,
            gateway: one("gateway server", &net.gateway_server_tls)?,
            admin_http: one("admin HTTP API", &net.admin_http_tls)?,
        })
    }

    fn all(&self) -> impl Iterator<Item = (&'static str, &Arc<ReloadableTls>)> {
        [
            ("connection server", &self.connect),
            ("websocket server", &self.ws),
            ("gateway server", &self.gateway),
            ("admin HTTP API", &self.admin_http),
        ]
        .into_iter()
        .filter_map(|(what, t)| t.as_ref().map(|t| (what, t)))
    }
}

/// Reloads the listeners' certificates until shutdown (see [`crate::tls::watch`]).
pub(crate) async fn watch(ctx: Arc<ServerContext>, set: TlsSet) {
    let listeners = set.all().map(|(what, t)| (what, t.clone())).collect();
    crate::tls::watch(
        listeners,
        ctx.config.net.tls_reload_interval,
        ctx.shutdown.clone(),
    )
    .await;
}

/// The server side of a listener's TLS handshake, bounded and cut short by shutdown.
pub(crate) async fn handshake(
    ctx: &ServerContext,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    crate::tls::accept(acceptor, stream, peer, &ctx.shutdown).await
}

/// Addresses whose refusal was already logged, at most this many (then refusals are only
/// logged at debug level, so a scan cannot grow the set or flood the log).
const REFUSED_LOGGED: usize = 1024;

/// `mp.net.gateway-allowed-networks`: which sources may open a gateway connection.
#[derive(Debug)]
pub(crate) struct Allowlist {
    networks: Vec<ipnet::IpNet>,
    logged: std::sync::Mutex<HashSet<IpAddr>>,
}

impl Allowlist {
    pub(crate) fn new(networks: &[ipnet::IpNet]) -> Self {
        Self {
            networks: networks.to_vec(),
            logged: std::sync::Mutex::default(),
        }
    }

    /// `true` when `peer` may connect; a refusal is logged once per address.
    pub(crate) fn admit(&self, peer: SocketAddr) -> bool {
        // An IPv4 client on a dual-stack socket shows as ::ffff:a.b.c.d.
        let ip = match peer.ip() {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
            v4 => v4,
        };
        if self.networks.is_empty() || self.networks.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.len() < REFUSED_LOGGED && logged.insert(ip) {
            tracing::warn!(%ip, "gateway connection refused: source not in mp.net.gateway-allowed-networks");
        } else {
            tracing::debug!(%ip, "gateway connection refused");
        }
        false
    }

    /// Addresses refused (and logged) so far, for tests.
    #[cfg(test)]
    fn logged(&self) -> usize {
        self.logged.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_networks_and_bounds_its_log() {
        let nets = [
            "127.0.0.1/32".parse().expect("net"),
            "10.0.0.0/8".parse().expect("net"),
        ];
        let list = Allowlist::new(&nets);
        assert!(list.admit("127.0.0.1:9".parse().expect("addr")));
        assert!(list.admit("10.2.3.4:9".parse().expect("addr")));
        assert!(list.admit("[::ffff:10.0.0.1]:9".parse().expect("addr")));
        assert!(!list.admit("127.0.0.2:9".parse().expect("addr")));
        assert!(!list.admit("127.0.0.2:10".parse().expect("addr")));
        assert_eq!(list.logged(), 1, "one log entry per address");
        for i in 0..(REFUSED_LOGGED as u32 + 10) {
            let ip = std::net::Ipv4Addr::from(0xC0A8_0000 + i);
            assert!(!list.admit(SocketAddr::from((ip, 1))));
        }
        assert_eq!(list.logged(), REFUSED_LOGGED);
        assert!(Allowlist::new(&[]).admit("192.0.2.1:1".parse().expect("addr")));
    }
}
