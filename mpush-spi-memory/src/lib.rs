//! In-process backends for mpush-rs: cache, MQ and service registry/discovery in memory.
//!
//! This is the embedded default: a single-process server needs no Redis and no ZooKeeper,
//! and tests start several servers on one [`MemoryHub`] to get an in-process cluster (each
//! server's handles act as one node sharing that hub's cache, bus and registry).
//!
//! # Layout
//! - [`MemoryHub`]: the shared state; [`MemoryHub::new`] for an isolated cluster,
//!   [`MemoryHub::global`] for the process-wide one used by the inventory factories.
//! - [`MemoryCache`]: [`CacheManager`] with Redis semantics (types, TTL, ranges).
//! - [`MemoryMQ`]: [`MQClient`] pub/sub with a bounded queue and task per subscriber.
//! - [`MemoryServiceRegistry`]: [`ServiceRegistry`](mpush::spi::ServiceRegistry) +
//!   [`ServiceDiscovery`](mpush::spi::ServiceDiscovery).
//!
//! # Selecting it
//! Linking this crate registers factories named `"memory"` for `mp.spi.cache-manager`,
//! `mp.spi.mq-client` and `mp.spi.service-registry`, with priority 0, the lowest: when no
//! name is configured a linked real backend (Redis, ZooKeeper) wins. They build handles on
//! [`MemoryHub::global`], so all servers built from configuration in one process share
//! state. Write `use mpush_spi_memory as _;` where nothing else references the crate, or
//! the linker drops the registration.
//!
//! # Guarantees and limits
//! - Nothing is persisted and nothing crosses the process: the data lives as long as the
//!   hub, and a Java node or another process cannot join the cluster.
//! - Every cache operation is atomic on its key; values with a TTL are never returned
//!   after it and are purged lazily (on access and by a periodic sweep).
//! - Pub/sub and discovery events are best effort, as Redis pub/sub: a subscriber whose
//!   queue ([`MemoryHub::queue_capacity`]) is full loses messages, with a `tracing` warning.
//!   Publishing never waits for listeners. Order per publisher and channel is kept.
//! - Registered nodes are ephemeral: they vanish with the handle that registered them.
//! - Subscribing needs a tokio runtime (its context is entered around each listener call, on the subscription's delivery thread).

use std::sync::Arc;

use mpush::MPushConfig;
use mpush::spi::registry::{
    BoxFuture, CacheManagerFactory, MQClientFactory, ServiceBackend, ServiceRegistryFactory,
};
use mpush::spi::{CacheManager, MQClient, SpiResult};

mod cache;
mod hub;
mod mq;
mod outlets;
mod packed;
mod service;
#[cfg(feature = "testing")]
pub mod testing;

pub use cache::MemoryCache;
pub use hub::{DEFAULT_QUEUE_CAPACITY, MemoryHub};
pub use mq::MemoryMQ;
pub use service::MemoryServiceRegistry;

/// The backend name, in `mp.spi.*` and in [`mpush::spi::SpiError`]s.
pub const BACKEND: &str = "memory";

/// Priority of the `"memory"` factories: the lowest, so real backends win by default.
pub const PRIORITY: i32 = 0;

fn create_cache_manager(_config: Arc<MPushConfig>) -> BoxFuture<SpiResult<Arc<dyn CacheManager>>> {
    Box::pin(async {
        let cache: Arc<dyn CacheManager> = Arc::new(MemoryCache::new(MemoryHub::global()));
        Ok(cache)
    })
}

fn create_mq_client(_config: Arc<MPushConfig>) -> BoxFuture<SpiResult<Arc<dyn MQClient>>> {
    Box::pin(async {
        let mq: Arc<dyn MQClient> = Arc::new(MemoryMQ::new(MemoryHub::global()));
        Ok(mq)
    })
}

fn create_service_backend(_config: Arc<MPushConfig>) -> BoxFuture<SpiResult<ServiceBackend>> {
    Box::pin(async {
        Ok(ServiceBackend::shared(Arc::new(
            MemoryServiceRegistry::new(MemoryHub::global()),
        )))
    })
}

inventory::submit! {
    CacheManagerFactory { name: BACKEND, priority: PRIORITY, create: create_cache_manager }
}

inventory::submit! {
    MQClientFactory { name: BACKEND, priority: PRIORITY, create: create_mq_client }
}

inventory::submit! {
    ServiceRegistryFactory { name: BACKEND, priority: PRIORITY, create: create_service_backend }
}
