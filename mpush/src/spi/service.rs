//! `ServiceRegistry` / `ServiceDiscovery`: which servers exist (ZooKeeper in production).

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{SpiResult, SubscriptionId};

/// Well-known service names: the ZooKeeper paths of spec §11 (inside the namespace).
pub mod services {
    /// Connection servers (clients connect here).
    pub const CONNECT_SERVER: &str = "/cluster/cs";
    /// Gateway servers (the push SDK connects here).
    pub const GATEWAY_SERVER: &str = "/cluster/gs";
    /// WebSocket servers.
    pub const WS_SERVER: &str = "/cluster/ws";
    /// DNS mappings for the HTTP proxy (provided by other systems).
    pub const DNS_MAPPING: &str = "/dns/mapping";
}

/// One registered server instance. Serialises to the node JSON of spec §11:
/// `{"attrs":{"weight":1},"host":"10.0.0.5","port":3000}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceNode {
    /// Service path, e.g. [`services::GATEWAY_SERVER`]. Not part of the node JSON.
    #[serde(skip)]
    pub service_name: String,
    /// Unique node id within the service (a UUID per process start). Not part of the JSON.
    #[serde(skip)]
    pub node_id: String,
    /// Extra attributes (`connect-server-register-attr`, optional `public_ip`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, serde_json::Value>,
    /// Registered host or IP.
    pub host: String,
    /// Registered port.
    pub port: u16,
}

impl ServiceNode {
    /// A node with a fresh random id and no attributes.
    pub fn new(service_name: &str, host: impl Into<String>, port: u16) -> Self {
        Self {
            service_name: service_name.to_string(),
            node_id: random_node_id(),
            attrs: BTreeMap::new(),
            host: host.into(),
            port,
        }
    }

    /// `host:port`.
    pub fn host_and_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The full node path: `<service_name>/<node_id>`.
    pub fn node_path(&self) -> String {
        format!("{}/{}", self.service_name, self.node_id)
    }

    /// The node JSON of spec §11.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses node JSON; `service_name` and `node_id` come from the path.
    pub fn from_json(service_name: &str, node_id: &str, json: &str) -> Option<Self> {
        let mut node: ServiceNode = serde_json::from_str(json).ok()?;
        node.service_name = service_name.to_string();
        node.node_id = node_id.to_string();
        Some(node)
    }
}

/// A random RFC 4122 version-4 UUID in Java's `UUID.toString()` form (36 lowercase
/// characters, hyphenated), as Java servers name their nodes (spec §11).
fn random_node_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Notified when nodes of a watched service come and go.
///
/// Keeps the same contract as an [`MQMessageListener`](super::MQMessageListener): return
/// quickly and hand long work to a task.
pub trait ServiceListener: Send + Sync + 'static {
    /// A node appeared (or was re-registered).
    fn on_added(&self, node: &ServiceNode);
    /// A node disappeared (orderly deregistration, session expiry, crash).
    fn on_removed(&self, node: &ServiceNode);
}

/// Registers this server's nodes (spec §11).
///
/// What an implementation must guarantee:
/// * A registered node is **ephemeral**: it disappears when the process dies or its session
///   with the registry expires, and the implementation re-registers it by itself after
///   re-connecting, until `deregister` is called.
/// * Registering a node whose path exists replaces the old data.
#[async_trait]
pub trait ServiceRegistry: Send + Sync + 'static {
    /// Registers (or replaces) `node`.
    async fn register(&self, node: &ServiceNode) -> SpiResult<()>;
    /// Removes `node`; removing an absent node is not an error.
    async fn deregister(&self, node: &ServiceNode) -> SpiResult<()>;
}

/// Finds the nodes of a service and watches changes.
///
/// What an implementation must guarantee:
/// * `lookup` reflects every registration that completed before it was called (it may serve
///   from a local cache that is kept current by watches).
/// * Listeners get `on_added` / `on_removed` for every change after `subscribe` returned,
///   per node in the order the changes happened; after `unsubscribe` returns they get nothing.
#[async_trait]
pub trait ServiceDiscovery: Send + Sync + 'static {
    /// The current nodes of `service_name`.
    async fn lookup(&self, service_name: &str) -> SpiResult<Vec<ServiceNode>>;
    /// Watches `service_name`.
    async fn subscribe(
        &self,
        service_name: &str,
        listener: Arc<dyn ServiceListener>,
    ) -> SpiResult<SubscriptionId>;
    /// Stops a watch made by [`ServiceDiscovery::subscribe`].
    async fn unsubscribe(&self, id: SubscriptionId) -> SpiResult<()>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Node ids look like Java's `UUID.randomUUID().toString()`: 36 lowercase hex characters
    /// in 8-4-4-4-12 groups, version 4, RFC 4122 variant (`8`, `9`, `a` or `b` in group 4).
    #[test]
    fn node_ids_are_rfc4122_v4_in_java_form() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            let node = ServiceNode::new("/cluster/gs", "h", 1);
            let id = node.node_id.clone();
            let groups: Vec<&str> = id.split('-').collect();
            assert_eq!(
                groups.iter().map(|g| g.len()).collect::<Vec<_>>(),
                [8, 4, 4, 4, 12],
                "{id}"
            );
            assert!(
                id.chars()
                    .all(|c| c == '-' || c.is_ascii_digit() || ('a'..='f').contains(&c)),
                "{id}"
            );
            assert!(groups[2].starts_with('4'), "version nibble of {id}");
            assert!(
                matches!(groups[3].as_bytes()[0], b'8' | b'9' | b'a' | b'b'),
                "variant bits of {id}"
            );
            let parsed = uuid::Uuid::parse_str(&id).unwrap();
            assert_eq!(parsed.get_version_num(), 4);
            assert_eq!(parsed.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(node.node_path(), format!("/cluster/gs/{id}"));
            assert!(seen.insert(id), "repeated node id");
        }
    }
}
