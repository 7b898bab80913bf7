//! The shared SPI conformance suites, run against the memory backend.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use mpush::spi::conformance;
use mpush::spi::{CacheManager, MQClient, ServiceDiscovery, ServiceRegistry};
use mpush_spi_memory::{MemoryCache, MemoryHub, MemoryMQ, MemoryServiceRegistry};

/// Two handles made by `open` on one hub: two nodes sharing the backend.
fn two_on_one_hub<T>(open: fn(Arc<MemoryHub>) -> T) -> (Arc<T>, Arc<T>) {
    let hub = MemoryHub::new();
    (Arc::new(open(hub.clone())), Arc::new(open(hub)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_manager_conforms() {
    let cache: Arc<dyn CacheManager> = Arc::new(MemoryCache::new(MemoryHub::new()));
    conformance::cache_manager(cache, "conformance:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_watch_conforms() {
    let cache: Arc<dyn CacheManager> = Arc::new(MemoryCache::new(MemoryHub::new()));
    conformance::cache_watch(cache, "conformance:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_client_conforms_across_two_nodes() {
    let (a, b) = two_on_one_hub(MemoryMQ::new);
    conformance::mq_client(a, b, "conformance:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mq_client_conforms_on_one_handle() {
    let a: Arc<dyn MQClient> = Arc::new(MemoryMQ::new(MemoryHub::new()));
    conformance::mq_client(a.clone(), a, "conformance:").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_registry_conforms() {
    let backend = Arc::new(MemoryServiceRegistry::new(MemoryHub::new()));
    let registry: Arc<dyn ServiceRegistry> = backend.clone();
    let discovery: Arc<dyn ServiceDiscovery> = backend;
    conformance::service_registry(registry, discovery, "/conformance").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_registry_conforms_across_two_sessions() {
    let (registry, discovery) = two_on_one_hub(MemoryServiceRegistry::new);
    conformance::service_registry(registry, discovery, "/conformance").await;
}
