//! `CacheManager`: the shared key-value store (Redis in production).

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;

use super::SpiResult;

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
}
