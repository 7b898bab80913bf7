//! The `mp.http.dns-mapping` implementation of [`DnsMappingManager`]: configured targets,
//! health-checked by a TCP connect every 20 s (spec §12 step 2).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use crate::spi::{DnsMapping, DnsMappingManager};

/// How often every target is probed (MPush's HttpProxyDnsMappingManager period).
pub(crate) const HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(20);

/// How long one probe may take before the target counts as down.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Target {
    mapping: DnsMapping,
    healthy: AtomicBool,
}

/// Domain → targets from the configuration; unhealthy targets are skipped.
#[derive(Debug, Default)]
pub(crate) struct ConfigDnsMapping {
    domains: HashMap<String, Vec<Target>>,
}

impl ConfigDnsMapping {
    /// The mappings of `mp.http.dns-mapping` (validated by the config: entries that do not
    /// parse are dropped here too). Every target starts healthy, as in MPush, until a probe
    /// says otherwise.
    pub(crate) fn new(map: &std::collections::BTreeMap<String, Vec<String>>) -> Self {
        let domains = map
            .iter()
            .map(|(domain, targets)| {
                let targets = targets
                    .iter()
                    .filter_map(|t| DnsMapping::parse(t))
                    .map(|mapping| Target {
                        mapping,
                        healthy: AtomicBool::new(true),
                    })
                    .collect();
                (domain.to_ascii_lowercase(), targets)
            })
            .collect();
        Self { domains }
    }

    /// `true` when no domain is mapped (no health check needed).
    pub(crate) fn is_empty(&self) -> bool {
        self.domains.is_empty()
    }

    /// Probes every target once, all at once (the list is the operator's, so bounded).
    pub(crate) async fn check_all(&self) {
        let probes = self.domains.values().flatten().map(|t| async move {
            let addr = (t.mapping.ip.as_str(), t.mapping.port);
            let up = matches!(
                tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(addr)).await,
                Ok(Ok(_))
            );
            if t.healthy.swap(up, Ordering::Relaxed) != up {
                tracing::info!(target = %t.mapping.authority(), up, "dns mapping health changed");
            }
        });
        futures::future::join_all(probes).await;
    }

    /// Probes now and then every [`HEALTH_CHECK_INTERVAL`] until `stop` is cancelled.
    pub(crate) async fn health_check_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(HEALTH_CHECK_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.check_all() => {}
            }
        }
    }
}

impl DnsMappingManager for ConfigDnsMapping {
    fn lookup(&self, host: &str) -> Option<DnsMapping> {
        let targets = self.domains.get(host)?;
        let healthy: Vec<&Target> = targets
            .iter()
            .filter(|t| t.healthy.load(Ordering::Relaxed))
            .collect();
        if healthy.is_empty() {
            return None;
        }
        let i = rand::rng().random_range(0..healthy.len());
        Some(healthy[i].mapping.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn unhealthy_targets_are_skipped_and_healthy_ones_picked_at_random() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_port = live.local_addr().unwrap().port();
        // A port nothing listens on: bind, note it, close.
        let dead_port = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let mut map = std::collections::BTreeMap::new();
        map.insert(
            "API.example".to_string(),
            vec![
                format!("127.0.0.1:{live_port}"),
                format!("127.0.0.1:{dead_port}"),
            ],
        );
        map.insert(
            "down.example".to_string(),
            vec![format!("127.0.0.1:{dead_port}")],
        );
        let m = ConfigDnsMapping::new(&map);
        assert!(m.lookup("down.example").is_some(), "healthy until probed");
        m.check_all().await;
        assert_eq!(m.lookup("down.example"), None);
        assert_eq!(m.lookup("nothing.example"), None);
        for _ in 0..20 {
            assert_eq!(m.lookup("api.example").unwrap().port, live_port);
        }
    }
}
