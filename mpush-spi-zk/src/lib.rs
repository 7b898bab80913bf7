//! ZooKeeper service registry and discovery for mpush-rs, wire-compatible with Java MPush.
//!
//! [`ZkServiceRegistry`] implements both [`ServiceRegistry`](mpush::spi::ServiceRegistry)
//! and [`ServiceDiscovery`](mpush::spi::ServiceDiscovery) on one ZooKeeper session.
//!
//! # Layout (spec §11), shared with Java MPush's Curator client
//! - Every path lives under the namespace chroot (`mp.zk.namespace`, default `/mpush`),
//!   which is created (persistent) if missing, as Curator's namespace facade does.
//! - A node is `<service>/<node id>`, e.g. `/mpush/cluster/cs/<uuid>`: EPHEMERAL, not
//!   sequential, data = the node JSON (`{"attrs":{..},"host":"..","port":3000}`, see
//!   [`ServiceNode::to_json`](mpush::spi::ServiceNode::to_json)). Parents are created
//!   persistent; an existing node at the path is replaced (delete + create, in one multi-op).
//! - Auth: `digest` with the raw bytes of `mp.zk.digest` (default `mpush`, no `user:pass`
//!   split), and every node we create gets `CREATOR_ALL` — the identity
//!   `digest:mpush:<base64(sha1("mpush"))>`, the same one Java's nodes carry, so Java and
//!   Rust servers read and delete each other's nodes. An empty digest means no auth and
//!   open ACLs.
//! - Readers list the children of a service path and parse each node's JSON, skipping
//!   (with a warning) data that does not parse; results are sorted by node id descending.
//!
//! # Why zookeeper-client (not zookeeper-async)
//! CRATES-AND-STYLE §2.2: `zookeeper-client` is maintained (releases through 2026, ZK 3.6+
//! persistent recursive watches, multi-ops, chroot), reports session state through an
//! awaitable `StateWatcher`, and treats session expiry as a terminal state that the caller
//! handles by building a new client — exactly what this crate's supervisor does.
//! `zookeeper-async` has had no release since 2024, a callback watcher API, and a report of
//! no reconnection after session timeout. Only its `tokio` feature is enabled.
//!
//! # Guarantees
//! - Registered nodes are ephemeral and owned by this handle's session. After a session
//!   expiry a supervisor builds a new session (back-off 100 ms doubling to 5 s), re-creates
//!   every node not deregistered, and the watches re-attach and re-read their services,
//!   notifying listeners of what changed meanwhile. After a mere reconnect the nodes are
//!   checked and re-created if missing (Curator re-creates them on RECONNECTED).
//! - Every ZooKeeper call is bounded by [`ZkOptions::operation_timeout`] (default: the
//!   connection timeout, 5 s); connecting is bounded by the connection timeout. A dead
//!   ZooKeeper yields [`SpiError::Unavailable`](mpush::spi::SpiError::Unavailable), never a
//!   hang.
//! - `lookup` reflects this handle's own completed registrations; other processes' changes
//!   show up when their watch event arrives (normally milliseconds).
//!
//! # Limits
//! - Discovery is eventually consistent across processes (ZooKeeper watches), as MPush's
//!   TreeCache is; during an outage `lookup` serves the last known nodes.
//! - A service cache and its watch live until the handle is closed once the service was
//!   looked up or subscribed (MPush watches a handful of services).
//! - Needs ZooKeeper ≥ 3.6 (persistent recursive watches).
//! - A `register` that times out may still have created the node on the server; it is not
//!   recorded, so it lives until the session ends (or a retry replaces it).
//!
//! # DNS mappings for the HTTP proxy
//! `mp.spi.dns-mapping-manager = zk` makes the proxy read `/dns/mapping` (spec §11): each
//! child `{"host":"<ip>","port":8080,"attrs":{"origin":"<domain>"}}` maps `origin`, watched
//! for changes ([`DiscoveryDnsMapping`] over its own [`ZkServiceRegistry`] session, built
//! from `mp.zk`). Only the configured name selects it.
//!
//! # Selecting it
//! Linking this crate registers a [`ServiceRegistryFactory`] named `"zk"` with priority 10
//! (above the in-memory backend), built from `mp.zk`. Write `use mpush_spi_zk as _;` where
//! nothing else references the crate, or the linker drops the registration.

use std::sync::Arc;

use mpush::MPushConfig;
use mpush::spi::registry::{
    BoxFuture, DnsMappingManagerFactory, ServiceBackend, ServiceRegistryFactory,
};
use mpush::spi::{DiscoveryDnsMapping, DnsMappingManager, SpiResult};

mod cache;
mod options;
mod registry;
mod zk;

pub use options::ZkOptions;
pub use registry::ZkServiceRegistry;
/// The ZooKeeper client crate this backend is built on (for [`ZkServiceRegistry::session`]).
pub use zookeeper_client;

/// The backend name, in `mp.spi.service-registry` and in [`mpush::spi::SpiError`]s.
pub const BACKEND: &str = "zk";

/// Priority of the `"zk"` factory: above the in-memory backend (0).
pub const PRIORITY: i32 = 10;

fn create_service_backend(config: Arc<MPushConfig>) -> BoxFuture<SpiResult<ServiceBackend>> {
    Box::pin(async move {
        let backend = ZkServiceRegistry::connect(ZkOptions::from_config(&config.zk)).await?;
        Ok(ServiceBackend::shared(Arc::new(backend)))
    })
}

inventory::submit! {
    ServiceRegistryFactory { name: BACKEND, priority: PRIORITY, create: create_service_backend }
}

fn create_dns_mapping(
    config: Arc<MPushConfig>,
) -> BoxFuture<SpiResult<Arc<dyn DnsMappingManager>>> {
    Box::pin(async move {
        let zk = Arc::new(ZkServiceRegistry::connect(ZkOptions::from_config(&config.zk)).await?);
        let mapping: Arc<dyn DnsMappingManager> = Arc::new(DiscoveryDnsMapping::start(zk).await?);
        Ok(mapping)
    })
}

inventory::submit! {
    DnsMappingManagerFactory { name: BACKEND, priority: PRIORITY, create: create_dns_mapping }
}
