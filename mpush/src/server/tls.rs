//! The listeners' TLS (issue 11 §5): loading at start, reloading on SIGHUP or a file change,
//! the bounded accept-side handshake, and the gateway's source-network allowlist.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

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
        })
    }

    fn all(&self) -> impl Iterator<Item = (&'static str, &Arc<ReloadableTls>)> {
        [
            ("connection server", &self.connect),
            ("websocket server", &self.ws),
            ("gateway server", &self.gateway),
        ]
        .into_iter()
        .filter_map(|(what, t)| t.as_ref().map(|t| (what, t)))
    }
}

/// Reloads the listeners' certificates when their files change (checked every
/// `mp.net.tls-reload-interval`) or at once on SIGHUP, until shutdown. A failed reload keeps
/// the old certificate and is logged; it is retried on the next check.
pub(crate) async fn watch(ctx: Arc<ServerContext>, set: TlsSet) {
    if set.all().next().is_none() {
        return;
    }
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(ctx.config.net.tls_reload_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<Option<()>>();
        let force = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tick.tick() => false,
            _ = signalled => true,
        };
        for (what, tls) in set.all() {
            match tls.reload_if_changed(force) {
                Ok(true) => tracing::info!(listener = what, "TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(listener = what, error = %e, "TLS reload failed"),
            }
        }
    }
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the server side of the TLS handshake within [`HANDSHAKE_TIMEOUT`]; `None` (logged)
/// when it fails, e.g. a gateway client without an accepted certificate.
pub(crate) async fn handshake(
    ctx: &ServerContext,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
) -> Option<TlsStream<TcpStream>> {
    let done = tokio::select! {
        _ = ctx.shutdown.cancelled() => return None,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
    };
    match done {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
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
