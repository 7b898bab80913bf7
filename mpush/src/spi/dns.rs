//! `DnsMappingManager` (spec §12 step 2, §15): where the HTTP proxy sends a request for a
//! domain instead of resolving it; and [`DiscoveryDnsMapping`], the mappings other systems
//! register under `/dns/mapping` (§11), read through any [`ServiceDiscovery`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use rand::Rng as _;
use tokio::sync::Notify;

use super::{ServiceDiscovery, ServiceListener, ServiceNode, SpiResult, SubscriptionId, services};

pub use crate::protocol::DnsMapping;

/// Maps a domain to an upstream address for the HTTP proxy. Lookups run on every proxied
/// request, so implementations answer from memory (a watched copy, a health-checked list)
/// and never block.
pub trait DnsMappingManager: Send + Sync + std::fmt::Debug {
    /// One healthy mapping for `host` (lower-case domain), chosen at random among several;
    /// `None` when the domain is not mapped (the URL is then used as is).
    fn lookup(&self, host: &str) -> Option<DnsMapping>;
}

/// The mappings registered under [`services::DNS_MAPPING`]: each node
/// `{"host":"<ip>","port":8080,"attrs":{"origin":"<domain>"}}` maps `origin` to `host:port`
/// (spec §11). A snapshot is kept in memory and re-read from the discovery (whose `lookup`
/// serves its own watched cache) whenever the service changes, so a lookup never waits.
pub struct DiscoveryDnsMapping {
    discovery: Arc<dyn ServiceDiscovery>,
    snapshot: Arc<RwLock<HashMap<String, Vec<DnsMapping>>>>,
    subscription: SubscriptionId,
    refresher: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for DiscoveryDnsMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let domains = self.snapshot.read().map_or(0, |s| s.len());
        f.debug_struct("DiscoveryDnsMapping")
            .field("domains", &domains)
            .finish_non_exhaustive()
    }
}

struct Changed(Arc<Notify>);

impl ServiceListener for Changed {
    fn on_added(&self, _: &ServiceNode) {
        self.0.notify_one();
    }
    fn on_removed(&self, _: &ServiceNode) {
        self.0.notify_one();
    }
}

fn index(nodes: &[ServiceNode]) -> HashMap<String, Vec<DnsMapping>> {
    let mut map: HashMap<String, Vec<DnsMapping>> = HashMap::new();
    for node in nodes {
        let Some(origin) = node.attrs.get("origin").and_then(|v| v.as_str()) else {
            tracing::debug!(node = %node.node_path(), "dns mapping node without attrs.origin ignored");
            continue;
        };
        map.entry(origin.trim().to_ascii_lowercase())
            .or_default()
            .push(DnsMapping {
                ip: node.host.clone(),
                port: node.port,
            });
    }
    map
}

impl DiscoveryDnsMapping {
    /// Watches [`services::DNS_MAPPING`] on `discovery` and reads it once. Needs a tokio
    /// runtime (a task re-reads the service after each change, coalesced).
    ///
    /// # Errors
    /// What the discovery reports when it cannot subscribe or read.
    pub async fn start(discovery: Arc<dyn ServiceDiscovery>) -> SpiResult<Self> {
        let changed = Arc::new(Notify::new());
        // Subscribe before the first read, so no change falls between them.
        let subscription = discovery
            .subscribe(services::DNS_MAPPING, Arc::new(Changed(changed.clone())))
            .await?;
        let first = discovery.lookup(services::DNS_MAPPING).await?;
        let snapshot = Arc::new(RwLock::new(index(&first)));
        let refresher = tokio::spawn({
            let (discovery, snapshot) = (discovery.clone(), snapshot.clone());
            async move {
                loop {
                    changed.notified().await;
                    match discovery.lookup(services::DNS_MAPPING).await {
                        Ok(nodes) => {
                            let map = index(&nodes);
                            *snapshot.write().unwrap_or_else(|e| e.into_inner()) = map;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot re-read /dns/mapping; keeping the last mappings")
                        }
                    }
                }
            }
        });
        Ok(Self {
            discovery,
            snapshot,
            subscription,
            refresher,
        })
    }

    /// Stops watching.
    pub async fn close(&self) {
        self.refresher.abort();
        if let Err(e) = self.discovery.unsubscribe(self.subscription).await {
            tracing::debug!(error = %e, "cannot unsubscribe from /dns/mapping");
        }
    }
}

impl Drop for DiscoveryDnsMapping {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

impl DnsMappingManager for DiscoveryDnsMapping {
    fn lookup(&self, host: &str) -> Option<DnsMapping> {
        let snapshot = self.snapshot.read().unwrap_or_else(|e| e.into_inner());
        let targets = snapshot.get(host).filter(|t| !t.is_empty())?;
        Some(targets[rand::rng().random_range(0..targets.len())].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_mapping_targets() {
        let m = |ip: &str, port| {
            Some(DnsMapping {
                ip: ip.into(),
                port,
            })
        };
        assert_eq!(DnsMapping::parse("127.0.0.1:8080"), m("127.0.0.1", 8080));
        assert_eq!(DnsMapping::parse("10.0.0.1"), m("10.0.0.1", 80));
        assert_eq!(DnsMapping::parse("[::1]:81"), m("::1", 81));
        assert_eq!(
            DnsMapping::parse("backend.local:90"),
            m("backend.local", 90)
        );
        assert_eq!(
            DnsMapping::parse("::1").map(|d| d.authority()),
            Some("[::1]:80".into())
        );
        for bad in ["", ":80", "h:99999", "h:x", "a b:1", "h/x:1"] {
            assert_eq!(DnsMapping::parse(bad), None, "{bad:?}");
        }
    }
}
