//! Service-provider interfaces: the pluggable backends and hooks of the server.
//!
//! Backends (cache, MQ, service registry/discovery) are chosen at run time, so every trait
//! here is object safe (`#[async_trait]`) and held as `Arc<dyn Trait>`. Hooks with an
//! obvious default (bind validation, client classification, listeners) ship that default
//! here; backends live in their own crates (`mpush-spi-memory`, `mpush-spi-redis`,
//! `mpush-spi-zk`) and register themselves with [`inventory`] through [`registry`].

mod cache;
mod classifier;
pub mod delivery;
mod dns;
mod event;
mod executor;
mod hooks;
mod mq;
pub mod registry;
mod service;

pub use cache::{CacheManager, CasOutcome, HashCas, KeyWatch};
pub use classifier::{ClientClassifier, ClientType, DefaultClientClassifier};
pub use dns::{DiscoveryDnsMapping, DnsMapping, DnsMappingManager};
pub use event::{NoopServerEventListener, ServerEvent, ServerEventListener};
pub use executor::{ExecutorFactory, ExecutorRole, TokioExecutorFactory};
pub use hooks::{
    AllowAllBindValidator, BindRejection, BindValidator, DefaultPushHandler, NoopPushListener,
    PushHandler, PushListener, PushOutcome, UpstreamPush,
};
pub use mq::{MQClient, MQMessageListener, SubscriptionId};
pub use service::{ServiceDiscovery, ServiceListener, ServiceNode, ServiceRegistry, services};

/// The underlying error a backend keeps as the [`source`](std::error::Error::source) of an
/// [`SpiError`] (the Redis, ZooKeeper or I/O error), so callers can walk the chain instead
/// of parsing a formatted string.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Errors reported by SPI implementations (backends and hooks).
///
/// `Unavailable` and `Backend` carry what was being done in `message` and, when the backend
/// had one, the underlying error as `source` (not repeated in the message: print the chain,
/// e.g. with `anyhow`'s `{:#}` or by walking `source()`, to see both).
#[derive(Debug, thiserror::Error)]
pub enum SpiError {
    /// The backend could not be reached or failed to answer (network, server down, timeout).
    #[error("{backend} backend unavailable: {message}")]
    Unavailable {
        /// Backend name, e.g. "redis".
        backend: &'static str,
        /// What went wrong, or what was being done when `source` happened.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The backend answered, but the answer could not be used (wrong type, bad data).
    #[error("{backend} backend error: {message}")]
    Backend {
        /// Backend name, e.g. "redis".
        backend: &'static str,
        /// What went wrong, or what was being done when `source` happened.
        message: String,
        /// The underlying error, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// No implementation of an SPI is available (none linked, or the configured name is unknown).
    #[error("no {spi} implementation named {requested:?}; registered: {available:?}")]
    NotFound {
        /// The SPI, e.g. "CacheManager".
        spi: &'static str,
        /// The name asked for in config ("" = highest priority).
        requested: String,
        /// Names that are registered.
        available: Vec<&'static str>,
    },
    /// The backend's configuration is invalid.
    #[error("invalid {backend} configuration: {message}")]
    Config {
        /// Backend name.
        backend: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl SpiError {
    /// Shorthand for [`SpiError::Unavailable`] without an underlying error.
    pub fn unavailable(backend: &'static str, message: impl std::fmt::Display) -> Self {
        Self::Unavailable {
            backend,
            message: message.to_string(),
            source: None,
        }
    }

    /// [`SpiError::Unavailable`] caused by `source`; `doing` says what failed
    /// (e.g. `"HGET mp:ur:u1"`).
    pub fn unavailable_from(
        backend: &'static str,
        doing: impl std::fmt::Display,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::unavailable(backend, doing).caused_by(source)
    }

    /// Shorthand for [`SpiError::Backend`] without an underlying error.
    pub fn backend(backend: &'static str, message: impl std::fmt::Display) -> Self {
        Self::Backend {
            backend,
            message: message.to_string(),
            source: None,
        }
    }

    /// [`SpiError::Backend`] caused by `source`; `doing` says what failed.
    pub fn backend_from(
        backend: &'static str,
        doing: impl std::fmt::Display,
        source: impl Into<BoxError>,
    ) -> Self {
        Self::backend(backend, doing).caused_by(source)
    }

    /// The same error with `cause` as its source (variants without one are unchanged).
    fn caused_by(mut self, cause: impl Into<BoxError>) -> Self {
        if let Self::Unavailable { source, .. } | Self::Backend { source, .. } = &mut self {
            *source = Some(cause.into());
        }
        self
    }
}

/// Result alias for SPI calls.
pub type SpiResult<T> = Result<T, SpiError>;

#[cfg(feature = "testkit")]
pub mod conformance;
