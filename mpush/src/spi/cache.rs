//! `CacheManager`: the shared key-value store (Redis in production).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::{SpiResult, SubscriptionId};

/// Told of changes to the keys of a [`CacheManager::watch_prefix`], so that a caller may keep
/// what it read until told otherwise. Called from the backend's own task: must not block.
pub trait KeyWatch: Send + Sync + 'static {
    /// `key` was written or deleted, by any client of the cache.
    fn changed(&self, key: &str);
    /// Notices may have been missed from here on (the backend lost its watch): nothing read
    /// before is to be trusted, and nothing read from now on until the next [`Self::watching`].
    fn lost(&self);
    /// The watch is in place (again): every change from now on is reported.
    fn watching(&self);
}

/// The outcome of [`CacheManager::hcompare_and_set`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The field held the expected value and now holds the new one.
    Set,
    /// The field held something else (`None`: it was absent); nothing was written.
    Mismatch(Option<String>),
}

/// One [`CacheManager::hcompare_and_set`]: set `field` of hash `key` to `value` if it holds
/// `expected` now. Named fields, because `expected` and `value` are both strings and easy to
/// swap by position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HashCas<'a> {
    /// The hash.
    pub key: &'a str,
    /// The field of the hash.
    pub field: &'a str,
    /// The value the field must hold now (`None`: the field, or the whole key, is absent).
    pub expected: Option<&'a str>,
    /// The value to write.
    pub value: &'a str,
}

/// The cluster-wide cache: reusable sessions, user routes, online sets, broadcast progress.
///
/// The operations mirror the Redis commands the original MPush uses, so that a Redis backend
/// is a thin mapping and Java and Rust nodes can share one Redis (key layout: spec §5, §10).
///
/// What an implementation must guarantee:
/// * **Shared view**: every server instance given the same backend sees the same data; a write
///   is visible to all readers once the call returns (read-your-writes across nodes).
/// * **Expiry**: a value written with a TTL is never returned after the TTL has passed
///   (it may be purged lazily).
/// * **Atomic single operations**: each call (e.g. `hincr_by`, `zadd`) is atomic on its own;
///   nothing is promised across calls. [`CacheManager::hcompare_and_set`] is the one
///   read-modify-write primitive: routes are written only through it, so two nodes racing on
///   one (user, client type) can never both win (Redis: one Lua script on the one key, which
///   also works on Redis Cluster).
/// * **Errors, not panics**: an unreachable backend returns [`super::SpiError::Unavailable`]
///   promptly (bounded by a timeout), so the server can answer clients instead of hanging.
#[async_trait]
pub trait CacheManager: Send + Sync + 'static {
    /// `GET key`.
    async fn get(&self, key: &str) -> SpiResult<Option<String>>;
    /// `SET key value` plus `EXPIRE key ttl` when `ttl` is given.
    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> SpiResult<()>;
    /// `DEL key` (any type).
    async fn del(&self, key: &str) -> SpiResult<()>;
    /// `HSET key field value`.
    async fn hset(&self, key: &str, field: &str, value: &str) -> SpiResult<()>;
    /// Sets `cas.field` of hash `cas.key` to `cas.value` only if its current value is exactly
    /// `cas.expected` (`None`: the field, or the whole key, is absent), atomically with
    /// respect to every other call on the key from any node. On a mismatch nothing is written
    /// and the current value is returned, so a caller can retry without another round trip.
    async fn hcompare_and_set(&self, cas: HashCas<'_>) -> SpiResult<CasOutcome>;
    /// `HGET key field`.
    async fn hget(&self, key: &str, field: &str) -> SpiResult<Option<String>>;
    /// `HGETALL key`; an absent key is an empty map.
    async fn hgetall(&self, key: &str) -> SpiResult<HashMap<String, String>>;
    /// `HDEL key field`.
    async fn hdel(&self, key: &str, field: &str) -> SpiResult<()>;
    /// `HINCRBY key field delta`, returning the new value.
    async fn hincr_by(&self, key: &str, field: &str, delta: i64) -> SpiResult<i64>;
    /// `ZADD key score member`.
    async fn zadd(&self, key: &str, member: &str, score: f64) -> SpiResult<()>;
    /// `ZREM key member`.
    async fn zrem(&self, key: &str, member: &str) -> SpiResult<()>;
    /// `ZCARD key`.
    async fn zcard(&self, key: &str) -> SpiResult<u64>;
    /// `ZRANGE key start stop` (inclusive, negative indexes count from the end).
    async fn zrange(&self, key: &str, start: i64, stop: i64) -> SpiResult<Vec<String>>;
    /// `LPUSH key v1 v2 ...`.
    async fn lpush(&self, key: &str, values: &[String]) -> SpiResult<()>;
    /// `LRANGE key start stop` (inclusive, negative indexes count from the end).
    async fn lrange(&self, key: &str, start: i64, stop: i64) -> SpiResult<Vec<String>>;

    /// Reports changes of every key starting with `prefix` to `watch`; `None` when the
    /// backend cannot (the default), and the caller then reads every time.
    ///
    /// A backend that returns `Some` has called [`KeyWatch::watching`] before returning, and
    /// from then on calls [`KeyWatch::changed`] for every write or delete of such a key by
    /// any client, promptly (Redis: the invalidation's way over the network; memory: before
    /// the write returns). If it may have missed one (a lost connection) it calls
    /// [`KeyWatch::lost`] first, and [`KeyWatch::watching`] again once changes are reported
    /// again. Expiry need not be reported (the server watches only keys without a TTL).
    /// Once [`Self::unwatch`] returns no new call of `watch` starts (one in progress may end).
    async fn watch_prefix(
        &self,
        prefix: &str,
        watch: Arc<dyn KeyWatch>,
    ) -> SpiResult<Option<SubscriptionId>> {
        let _ = (prefix, watch);
        Ok(None)
    }

    /// Ends a [`Self::watch_prefix`]; unknown ids are ignored.
    async fn unwatch(&self, id: SubscriptionId) -> SpiResult<()> {
        let _ = id;
        Ok(())
    }
}
