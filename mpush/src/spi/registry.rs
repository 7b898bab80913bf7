//! Backend registration with [`inventory`]: each backend crate submits named factories.
//!
//! A backend crate does, for example:
//! ```text
//! inventory::submit! { mpush::spi::registry::CacheManagerFactory {
//!     name: "redis", priority: 10, create: create_redis_cache } }
//! ```
//! The server picks the factory named in `mp.spi.*`, else the one with the highest priority.
//!
//! Linking trap: a backend crate that nothing references is not linked, so its factories are
//! absent. Applications write `use mpush_spi_redis as _;` next to their `main`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::{
    CacheManager, DnsMappingManager, MQClient, ServiceDiscovery, ServiceRegistry, SpiError,
    SpiResult,
};
use crate::config::MPushConfig;

/// A boxed, sendable future, as returned by factories.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The constructor signature every factory has: config in, backend out (may connect).
pub type CreateFn<T> = fn(Arc<MPushConfig>) -> BoxFuture<SpiResult<T>>;

/// Creates a [`CacheManager`].
#[derive(Debug)]
pub struct CacheManagerFactory {
    /// Name used in `mp.spi.cache-manager`.
    pub name: &'static str,
    /// Higher wins when no name is configured.
    pub priority: i32,
    /// Builds the backend (may connect).
    pub create: CreateFn<Arc<dyn CacheManager>>,
}

/// Creates an [`MQClient`].
#[derive(Debug)]
pub struct MQClientFactory {
    /// Name used in `mp.spi.mq-client`.
    pub name: &'static str,
    /// Higher wins when no name is configured.
    pub priority: i32,
    /// Builds the backend (may connect).
    pub create: CreateFn<Arc<dyn MQClient>>,
}

/// A registry and its matching discovery (one backend provides both).
#[derive(Clone)]
pub struct ServiceBackend {
    /// Registers this server's nodes.
    pub registry: Arc<dyn ServiceRegistry>,
    /// Finds other servers.
    pub discovery: Arc<dyn ServiceDiscovery>,
}

impl ServiceBackend {
    /// One backend object serving as both the registry and the discovery (what every
    /// backend crate builds: its registrations are what its discovery watches).
    pub fn shared<B: ServiceRegistry + ServiceDiscovery>(backend: Arc<B>) -> Self {
        Self {
            registry: backend.clone(),
            discovery: backend,
        }
    }
}

impl std::fmt::Debug for ServiceBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ServiceBackend")
    }
}

/// Creates a [`ServiceRegistry`] + [`ServiceDiscovery`] pair.
#[derive(Debug)]
pub struct ServiceRegistryFactory {
    /// Name used in `mp.spi.service-registry`.
    pub name: &'static str,
    /// Higher wins when no name is configured.
    pub priority: i32,
    /// Builds the backend (may connect).
    pub create: CreateFn<ServiceBackend>,
}

/// Creates a [`DnsMappingManager`] for the HTTP proxy (e.g. ZooKeeper's `/dns/mapping`).
#[derive(Debug)]
pub struct DnsMappingManagerFactory {
    /// Name used in `mp.spi.dns-mapping-manager`.
    pub name: &'static str,
    /// Unused for selection (only a configured name selects one), kept for symmetry.
    pub priority: i32,
    /// Builds the backend (may connect).
    pub create: CreateFn<Arc<dyn DnsMappingManager>>,
}

inventory::collect!(CacheManagerFactory);
inventory::collect!(DnsMappingManagerFactory);
inventory::collect!(MQClientFactory);
inventory::collect!(ServiceRegistryFactory);

/// What selecting and calling a factory needs of each factory type.
trait Factory: inventory::Collect {
    /// What it builds.
    type Backend;
    /// The SPI's name in errors.
    const SPI: &'static str;
    fn name(&self) -> &'static str;
    fn priority(&self) -> i32;
    fn create_fn(&self) -> CreateFn<Self::Backend>;
}

macro_rules! factory {
    ($factory:ty, $backend:ty, $spi:literal) => {
        impl Factory for $factory {
            type Backend = $backend;
            const SPI: &'static str = $spi;
            fn name(&self) -> &'static str {
                self.name
            }
            fn priority(&self) -> i32 {
                self.priority
            }
            fn create_fn(&self) -> CreateFn<$backend> {
                self.create
            }
        }
    };
}

factory!(CacheManagerFactory, Arc<dyn CacheManager>, "CacheManager");
factory!(MQClientFactory, Arc<dyn MQClient>, "MQClient");
factory!(ServiceRegistryFactory, ServiceBackend, "ServiceRegistry");
factory!(
    DnsMappingManagerFactory,
    Arc<dyn DnsMappingManager>,
    "DnsMappingManager"
);

/// Builds the backend of the `F` factory named `requested` (empty: the highest priority).
async fn create<F: Factory + 'static>(
    requested: &str,
    config: Arc<MPushConfig>,
) -> SpiResult<F::Backend> {
    let f = pick(
        F::SPI,
        requested,
        inventory::iter::<F>(),
        F::name,
        F::priority,
    )?;
    (f.create_fn())(config).await
}

/// Picks one factory: by name when `requested` is non-empty, else the highest priority.
/// Duplicate names are an error (two crates claim the same backend).
fn pick<'a, T>(
    spi: &'static str,
    requested: &str,
    items: impl Iterator<Item = &'a T>,
    name: impl Fn(&T) -> &'static str,
    priority: impl Fn(&T) -> i32,
) -> SpiResult<&'a T>
where
    T: 'a,
{
    let items: Vec<&T> = items.collect();
    let available: Vec<&'static str> = items.iter().map(|f| name(f)).collect();
    let not_found = || SpiError::NotFound {
        spi,
        requested: requested.to_string(),
        available: available.clone(),
    };
    if requested.is_empty() {
        return items
            .into_iter()
            .max_by_key(|f| priority(f))
            .ok_or_else(not_found);
    }
    let mut matching = items.into_iter().filter(|f| name(f) == requested);
    let first = matching.next().ok_or_else(not_found)?;
    if matching.next().is_some() {
        return Err(SpiError::Config {
            backend: "registry",
            message: format!("{spi} backend {requested:?} is registered twice"),
        });
    }
    Ok(first)
}

/// Names of the registered cache backends.
pub fn cache_manager_names() -> Vec<&'static str> {
    inventory::iter::<CacheManagerFactory>()
        .map(|f| f.name)
        .collect()
}

/// Builds the cache backend selected by `config.spi.cache_manager`.
pub async fn create_cache_manager(config: Arc<MPushConfig>) -> SpiResult<Arc<dyn CacheManager>> {
    create::<CacheManagerFactory>(&config.spi.cache_manager, config.clone()).await
}

/// Builds the MQ backend selected by `config.spi.mq_client`.
pub async fn create_mq_client(config: Arc<MPushConfig>) -> SpiResult<Arc<dyn MQClient>> {
    create::<MQClientFactory>(&config.spi.mq_client, config.clone()).await
}

/// Builds the registry/discovery backend selected by `config.spi.service_registry`.
pub async fn create_service_backend(config: Arc<MPushConfig>) -> SpiResult<ServiceBackend> {
    create::<ServiceRegistryFactory>(&config.spi.service_registry, config.clone()).await
}

/// Builds the DNS mapping backend named by `config.spi.dns_mapping_manager`. Only a name
/// selects one: "" (and MPush's Java class names, which contain a `.`) mean none, so the
/// proxy uses `mp.http.dns-mapping` alone, as MPush's default manager does. Linking a
/// backend crate therefore never makes the proxy depend on it by accident.
pub async fn create_dns_mapping_manager(
    config: Arc<MPushConfig>,
) -> SpiResult<Option<Arc<dyn DnsMappingManager>>> {
    let requested = config.spi.dns_mapping_manager.trim();
    if requested.is_empty() || requested.contains('.') {
        return Ok(None);
    }
    create::<DnsMappingManagerFactory>(requested, config.clone())
        .await
        .map(Some)
}

/// `given`, else what `create` builds (a future is inert until awaited: nothing is created
/// when a backend was given).
async fn given_or<T: Clone>(
    given: &Option<T>,
    create: impl Future<Output = SpiResult<T>>,
) -> SpiResult<T> {
    match given {
        Some(v) => Ok(v.clone()),
        None => create.await,
    }
}

/// The configuration and the backends an application passes to a builder, shared by
/// `MPushServerBuilder` and `PushSenderBuilder` so both resolve them the same way: a backend
/// given here is used as is, a missing one is created from the registry by the names in
/// `mp.spi.*` when the builder starts.
#[derive(Clone, Default)]
pub struct Backends {
    config: Option<Arc<MPushConfig>>,
    cache: Option<Arc<dyn CacheManager>>,
    mq: Option<Arc<dyn MQClient>>,
    service: Option<ServiceBackend>,
    discovery: Option<Arc<dyn ServiceDiscovery>>,
}

impl std::fmt::Debug for Backends {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backends")
            .field("config", &self.config)
            .field("cache", &self.cache.is_some())
            .field("mq", &self.mq.is_some())
            .field("service", &self.service.is_some())
            .field("discovery", &self.discovery.is_some())
            .finish()
    }
}

impl Backends {
    /// Sets the configuration.
    pub fn set_config(&mut self, config: MPushConfig) {
        self.config = Some(Arc::new(config));
    }

    /// Uses this cache instead of a registered backend.
    pub fn set_cache_manager(&mut self, cache: Arc<dyn CacheManager>) {
        self.cache = Some(cache);
    }

    /// Uses this MQ client instead of a registered backend.
    pub fn set_mq_client(&mut self, mq: Arc<dyn MQClient>) {
        self.mq = Some(mq);
    }

    /// Uses this registry and discovery instead of a registered backend.
    pub fn set_service_registry(
        &mut self,
        registry: Arc<dyn ServiceRegistry>,
        discovery: Arc<dyn ServiceDiscovery>,
    ) {
        self.discovery = Some(discovery.clone());
        self.service = Some(ServiceBackend {
            registry,
            discovery,
        });
    }

    /// Uses this discovery instead of a registered backend (a sender registers nothing).
    pub fn set_discovery(&mut self, discovery: Arc<dyn ServiceDiscovery>) {
        self.discovery = Some(discovery);
    }

    /// The configuration given, else MPush's reference defaults.
    pub fn config(&self) -> Arc<MPushConfig> {
        self.config.clone().unwrap_or_default()
    }

    /// The cache given, else a new one from the registry.
    pub async fn cache_manager(
        &self,
        config: &Arc<MPushConfig>,
    ) -> SpiResult<Arc<dyn CacheManager>> {
        given_or(&self.cache, create_cache_manager(config.clone())).await
    }

    /// The MQ client given, else a new one from the registry.
    pub async fn mq_client(&self, config: &Arc<MPushConfig>) -> SpiResult<Arc<dyn MQClient>> {
        given_or(&self.mq, create_mq_client(config.clone())).await
    }

    /// The registry and discovery given, else a new pair from the registry.
    pub async fn service_backend(&self, config: &Arc<MPushConfig>) -> SpiResult<ServiceBackend> {
        given_or(&self.service, create_service_backend(config.clone())).await
    }

    /// The discovery given, else the discovery half of a new pair from the registry.
    pub async fn discovery(
        &self,
        config: &Arc<MPushConfig>,
    ) -> SpiResult<Arc<dyn ServiceDiscovery>> {
        let create = async { Ok(create_service_backend(config.clone()).await?.discovery) };
        given_or(&self.discovery, create).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct F(&'static str, i32);

    #[test]
    fn pick_by_name_priority_and_errors() {
        let items = [F("memory", 0), F("redis", 10)];
        let by_prio = pick("X", "", items.iter(), |f| f.0, |f| f.1).map(|f| f.0);
        assert_eq!(by_prio.ok(), Some("redis"));
        let by_name = pick("X", "memory", items.iter(), |f| f.0, |f| f.1).map(|f| f.0);
        assert_eq!(by_name.ok(), Some("memory"));
        let err = pick("X", "zk", items.iter(), |f| f.0, |f| f.1)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(r#"no X implementation named "zk"; registered: ["memory", "redis"]"#)
        );
        let none: [F; 0] = [];
        assert!(pick("X", "", none.iter(), |f| f.0, |f| f.1).is_err());
        let dup = [F("a", 0), F("a", 1)];
        assert!(pick("X", "a", dup.iter(), |f| f.0, |f| f.1).is_err());
    }
}
