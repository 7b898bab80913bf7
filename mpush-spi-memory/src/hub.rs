//! [`MemoryHub`]: the shared state behind every in-memory backend handle.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use mpush::spi::SpiResult;
use mpush::spi::delivery::{self, Outlet};

use crate::cache::Store;
use crate::mq::PubSub;
use crate::service::Services;

/// Capacity of each subscriber's delivery queue when none is given.
///
/// Large enough to absorb bursts (a broadcast's online/offline events) while bounding the
/// memory one stuck listener can pin.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// One in-process "cluster": a cache, a pub/sub bus and a service registry.
///
/// Every backend handle ([`crate::MemoryCache`], [`crate::MemoryMQ`],
/// [`crate::MemoryServiceRegistry`]) built on the same hub sees the same data, exactly as
/// several server nodes sharing one Redis and one ZooKeeper would. Handles on different hubs
/// share nothing, which is how tests run several independent clusters in one process.
pub struct MemoryHub {
    pub(crate) store: Store,
    pub(crate) pubsub: PubSub,
    pub(crate) services: Services,
    queue_capacity: usize,
    next_id: AtomicU64,
}

impl MemoryHub {
    /// A new, empty, isolated hub whose subscribers get [`DEFAULT_QUEUE_CAPACITY`] queues.
    pub fn new() -> Arc<Self> {
        Self::with_queue_capacity(DEFAULT_QUEUE_CAPACITY)
    }

    /// A new, empty, isolated hub whose MQ and discovery subscribers each get a delivery queue
    /// of `capacity` messages (at least 1); messages beyond it are dropped and logged.
    pub fn with_queue_capacity(capacity: usize) -> Arc<Self> {
        Arc::new(Self {
            store: Store::new(),
            pubsub: PubSub::default(),
            services: Services::default(),
            queue_capacity: capacity.max(1),
            next_id: AtomicU64::new(1),
        })
    }

    /// The process-wide hub, created on first use and never dropped.
    ///
    /// The inventory factories build their handles on it, so that every server built from
    /// configuration in one process shares one cluster state.
    pub fn global() -> Arc<Self> {
        static GLOBAL: OnceLock<Arc<MemoryHub>> = OnceLock::new();
        GLOBAL.get_or_init(MemoryHub::new).clone()
    }

    /// The delivery queue capacity of each subscriber.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// A hub-unique id, for subscriptions and handles (never 0, never reused).
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// A new subscription to `name` with its own queue of [`Self::queue_capacity`] and
    /// delivery thread calling `deliver` (not yet in any table).
    pub(crate) fn open_outlet<M, F>(&self, name: &str, deliver: F) -> SpiResult<Outlet<M>>
    where
        M: Send + 'static,
        F: Fn(M) + Send + 'static,
    {
        delivery::open(
            crate::BACKEND,
            self.next_id(),
            self.queue_capacity,
            name,
            deliver,
        )
    }
}

impl fmt::Debug for MemoryHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryHub")
            .field("cache_keys", &self.store.len())
            .field("queue_capacity", &self.queue_capacity)
            .finish_non_exhaustive()
    }
}
