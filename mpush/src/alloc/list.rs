//! The alloc service's server list: the connect servers of the registry, least loaded first.
//!
//! Spec §14: the entries come from `/cluster/cs` (host = `attrs.public_ip` if present, else the
//! node's host), sorted ascending by `ZCARD mp:oul:<host>`, rebuilt at start, on every registry
//! change and every refresh interval (5 minutes). The rendered body is kept ready, so a GET
//! costs one read lock and no backend call.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::protocol::keys::online_set_key;
use crate::spi::{CacheManager, ServiceDiscovery, ServiceListener, ServiceNode, services};

/// A backend call of one refresh gives up after this long (the previous list stays).
const BACKEND_TIMEOUT: Duration = Duration::from_secs(5);

/// The current list and what rebuilds it.
pub(crate) struct ServerList {
    cache: Arc<dyn CacheManager>,
    discovery: Arc<dyn ServiceDiscovery>,
    /// `host:port,host:port`, as served.
    body: RwLock<String>,
    /// Signalled by the registry listener; `Notify` keeps at most one pending wake-up, so a
    /// burst of changes costs one rebuild, not one each.
    changed: Notify,
}

impl ServerList {
    pub(crate) fn new(cache: Arc<dyn CacheManager>, discovery: Arc<dyn ServiceDiscovery>) -> Self {
        Self {
            cache,
            discovery,
            body: RwLock::new(String::new()),
            changed: Notify::new(),
        }
    }

    /// The body a GET serves.
    pub(crate) fn body(&self) -> String {
        self.body.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Rebuilds the list from the registry and the online sets. On a backend error the
    /// previous list is kept (a stale list beats none for clients) and the error is logged.
    pub(crate) async fn refresh(&self) {
        let nodes = match tokio::time::timeout(
            BACKEND_TIMEOUT,
            self.discovery.lookup(services::CONNECT_SERVER),
        )
        .await
        {
            Ok(Ok(nodes)) => nodes,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "alloc: cannot list the connect servers");
                return;
            }
            Err(_) => {
                tracing::warn!("alloc: no answer from the registry in {BACKEND_TIMEOUT:?}");
                return;
            }
        };
        let mut entries = Vec::with_capacity(nodes.len());
        for node in &nodes {
            let host = public_host(node);
            let key = online_set_key(&host);
            // An unreadable count sorts last: the server may be fine, but we cannot tell.
            let online = match tokio::time::timeout(BACKEND_TIMEOUT, self.cache.zcard(&key)).await {
                Ok(Ok(n)) => n,
                Ok(Err(e)) => {
                    tracing::warn!(%key, error = %e, "alloc: cannot count online users");
                    u64::MAX
                }
                Err(_) => {
                    tracing::warn!(%key, "alloc: no answer from the cache in {BACKEND_TIMEOUT:?}");
                    u64::MAX
                }
            };
            entries.push((online, format!("{host}:{}", node.port)));
        }
        // Stable for equal counts: ties keep the registry's order, as the original.
        entries.sort_by_key(|(online, _)| *online);
        let body = entries
            .into_iter()
            .map(|(_, e)| e)
            .collect::<Vec<_>>()
            .join(",");
        tracing::debug!(servers = %body, "alloc: server list refreshed");
        *self.body.write().unwrap_or_else(|e| e.into_inner()) = body;
    }

    /// Rebuilds on every registry change and every `interval` until `stop`.
    pub(crate) async fn run(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate and the list was just built by `start`.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.changed.notified() => {}
                _ = tick.tick() => {}
            }
            self.refresh().await;
        }
    }
}

/// §14: the address clients are given is `attrs.public_ip` when the node carries one.
fn public_host(node: &ServiceNode) -> String {
    match node.attrs.get("public_ip") {
        Some(serde_json::Value::String(ip)) if !ip.is_empty() => ip.clone(),
        _ => node.host.clone(),
    }
}

/// Wakes the refresh task on registry changes. Holds the list weakly: a stopped alloc
/// service must not be kept alive by a registry that outlives it.
pub(crate) struct ChangeListener(pub(crate) std::sync::Weak<ServerList>);

impl ServiceListener for ChangeListener {
    fn on_added(&self, _node: &ServiceNode) {
        if let Some(list) = self.0.upgrade() {
            list.changed.notify_one();
        }
    }

    fn on_removed(&self, _node: &ServiceNode) {
        if let Some(list) = self.0.upgrade() {
            list.changed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_ip_attr_wins_over_host() {
        let mut n = ServiceNode::new(services::CONNECT_SERVER, "10.0.0.5", 3000);
        assert_eq!(public_host(&n), "10.0.0.5");
        n.attrs
            .insert("public_ip".into(), serde_json::Value::from("203.0.113.7"));
        assert_eq!(public_host(&n), "203.0.113.7");
        n.attrs
            .insert("public_ip".into(), serde_json::Value::from(""));
        assert_eq!(public_host(&n), "10.0.0.5");
    }
}
