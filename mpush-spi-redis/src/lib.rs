//! Redis backends for mpush-rs: [`CacheManager`] and [`MQClient`] on a single Redis server or
//! a Redis Cluster, sharing data and channels with Java MPush nodes.
//!
//! # Layout
//! - [`RedisCache`]: [`CacheManager`], one Redis command per call.
//! - [`RedisMQ`]: [`MQClient`] on classic pub/sub over RESP3, with automatic resubscription.
//! - [`RedisSettings`], [`RedisNode`], [`RedisOptions`], [`Topology`]: where and how to connect,
//!   read from `mp.redis` ([`RedisSettings::from_config`]) or built by hand.
//!
//! # Selecting it
//! Linking this crate registers factories named `"redis"` for `mp.spi.cache-manager` and
//! `mp.spi.mq-client` with priority [`PRIORITY`] (10), above the memory backend's 0, so a
//! linked Redis backend wins when no name is configured. They read `mp.redis`
//! (`cluster-model` = `single` | `cluster`, `nodes` = `"host:port"` or `"host:port:password"`,
//! `password`). Write `use mpush_spi_redis as _;` where nothing else references the crate,
//! or the linker drops the registration.
//!
//! # Compatibility with Java MPush
//! Keys, types and values are exactly what Java MPush uses (spec §5, §10): the server passes
//! key names (`mp:rs:<session>`, `mp:ur:<user>`, `mp:oul:<ip>`, `mp:pt<task>`, `<task>:sui`)
//! through unchanged, values are plain strings, hashes/sorted sets/lists are the same Redis
//! types, and pub/sub uses classic `PUBLISH`/`SUBSCRIBE` on the same channel names, so Java
//! and Rust nodes can share one Redis. `set` with a TTL is sent as the atomic
//! `SET key value EX secs`, which leaves the same key and TTL as MPush's `SET` + `EXPIRE`.
//!
//! # Guarantees
//! - Every cache call is one command on one key, hence atomic on its own; nothing is
//!   promised across calls (as in MPush).
//! - Expiry is Redis' own: a value with a TTL is never returned after it.
//! - Every call is bounded by [`RedisOptions::operation_timeout`] (4 s by default, including
//!   time spent waiting for a reconnect): a dead Redis is reported as
//!   [`SpiError::Unavailable`](mpush::spi::SpiError::Unavailable), never waited on. A
//!   wrong-type key is [`SpiError::Backend`](mpush::spi::SpiError::Backend), bad
//!   credentials [`SpiError::Config`](mpush::spi::SpiError::Config).
//! - Connections reconnect by themselves; the cache needs no resubscription, the MQ
//!   re-subscribes its channels after a reconnect (library replay plus its own recovery
//!   loop), logging a warning when the connection drops and when it is restored.
//! - Pub/sub is best effort, as Redis pub/sub: a message published while a node is
//!   disconnected is lost for that node; a listener whose queue is full loses messages
//!   (logged). Publishing while Redis is unreachable returns an error.
//!
//! # Cluster notes
//! Every cache operation touches a single key, so each one is a single-slot command that the
//! cluster client routes to the slot's master: no cross-slot restrictions apply. The MQ uses
//! the cluster connection too: classic pub/sub messages are broadcast to all nodes by Redis
//! Cluster, so the node the library subscribes on (the channel's slot owner) receives every
//! message, whichever node the publisher (Java or Rust) used. `SSUBSCRIBE` (sharded pub/sub)
//! is not used, because Java MPush does not use it.
//!
//! # Requirements and limits
//! - The MQ needs Redis ≥ 6 (RESP3 pushes); the cache speaks RESP2 and works with older
//!   servers too.
//! - `cluster-model = single` with several nodes uses the first node (logged); Redis
//!   Sentinel is not supported (the configuration rejects it).
//! - Both need a tokio runtime.

use std::sync::Arc;

use mpush::MPushConfig;
use mpush::spi::registry::{BoxFuture, CacheManagerFactory, MQClientFactory};
use mpush::spi::{CacheManager, MQClient, SpiResult};

mod cache;
mod conn;
mod mq;
mod settings;
mod watch;

pub use cache::RedisCache;
pub use mq::RedisMQ;
pub use settings::{RedisNode, RedisOptions, RedisSettings, Topology, parse_nodes};

/// The backend name, in `mp.spi.*` and in [`mpush::spi::SpiError`]s.
pub const BACKEND: &str = "redis";

/// Priority of the `"redis"` factories: above the memory backend's 0.
pub const PRIORITY: i32 = 10;

fn create_cache_manager(config: Arc<MPushConfig>) -> BoxFuture<SpiResult<Arc<dyn CacheManager>>> {
    Box::pin(async move {
        let cache: Arc<dyn CacheManager> = Arc::new(RedisCache::connect(&config.redis).await?);
        Ok(cache)
    })
}

fn create_mq_client(config: Arc<MPushConfig>) -> BoxFuture<SpiResult<Arc<dyn MQClient>>> {
    Box::pin(async move {
        let mq: Arc<dyn MQClient> = Arc::new(RedisMQ::connect(&config.redis).await?);
        Ok(mq)
    })
}

inventory::submit! {
    CacheManagerFactory { name: BACKEND, priority: PRIORITY, create: create_cache_manager }
}

inventory::submit! {
    MQClientFactory { name: BACKEND, priority: PRIORITY, create: create_mq_client }
}
