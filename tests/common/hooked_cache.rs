//! A memory cache for test doubles: every call goes to a [`MemoryCache`], except the ones a
//! test wants to intercept (`get`, `hget`, `hgetall`, `hcompare_and_set`, `watch_prefix`),
//! which go through its [`Hooks`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mpush::spi::{CacheManager, CasOutcome, HashCas, KeyWatch, SpiResult, SubscriptionId};
use mpush_spi_memory::MemoryCache;

/// What a test double changes; the defaults pass the call through.
#[async_trait]
pub trait Hooks: Send + Sync + 'static {
    /// Around `GET`.
    async fn get(&self, inner: &MemoryCache, key: &str) -> SpiResult<Option<String>> {
        inner.get(key).await
    }

    /// Around `HGET`.
    async fn hget(&self, inner: &MemoryCache, key: &str, field: &str) -> SpiResult<Option<String>> {
        inner.hget(key, field).await
    }

    /// Around `HGETALL`.
    async fn hgetall(&self, inner: &MemoryCache, key: &str) -> SpiResult<HashMap<String, String>> {
        inner.hgetall(key).await
    }

    /// Around the compare-and-set of a hash field.
    async fn hcompare_and_set(
        &self,
        inner: &MemoryCache,
        cas: HashCas<'_>,
    ) -> SpiResult<CasOutcome> {
        inner.hcompare_and_set(cas).await
    }

    /// Whether `watch_prefix` is passed on; `false` answers `None`, as a cache that cannot
    /// report changes does (a Redis Cluster).
    fn watches(&self) -> bool {
        true
    }
}

/// A [`MemoryCache`] with [`Hooks`] on five calls.
pub struct HookedCache<H> {
    pub inner: MemoryCache,
    pub hooks: Arc<H>,
}

#[async_trait]
impl<H: Hooks> CacheManager for HookedCache<H> {
    async fn get(&self, k: &str) -> SpiResult<Option<String>> {
        self.hooks.get(&self.inner, k).await
    }
    async fn set(&self, k: &str, v: &str, ttl: Option<Duration>) -> SpiResult<()> {
        self.inner.set(k, v, ttl).await
    }
    async fn del(&self, k: &str) -> SpiResult<()> {
        self.inner.del(k).await
    }
    async fn hset(&self, k: &str, f: &str, v: &str) -> SpiResult<()> {
        self.inner.hset(k, f, v).await
    }
    async fn hcompare_and_set(&self, cas: HashCas<'_>) -> SpiResult<CasOutcome> {
        self.hooks.hcompare_and_set(&self.inner, cas).await
    }
    async fn hget(&self, k: &str, f: &str) -> SpiResult<Option<String>> {
        self.hooks.hget(&self.inner, k, f).await
    }
    async fn hgetall(&self, k: &str) -> SpiResult<HashMap<String, String>> {
        self.hooks.hgetall(&self.inner, k).await
    }
    async fn hdel(&self, k: &str, f: &str) -> SpiResult<()> {
        self.inner.hdel(k, f).await
    }
    async fn hincr_by(&self, k: &str, f: &str, d: i64) -> SpiResult<i64> {
        self.inner.hincr_by(k, f, d).await
    }
    async fn zadd(&self, k: &str, m: &str, s: f64) -> SpiResult<()> {
        self.inner.zadd(k, m, s).await
    }
    async fn zrem(&self, k: &str, m: &str) -> SpiResult<()> {
        self.inner.zrem(k, m).await
    }
    async fn zcard(&self, k: &str) -> SpiResult<u64> {
        self.inner.zcard(k).await
    }
    async fn zrange(&self, k: &str, a: i64, b: i64) -> SpiResult<Vec<String>> {
        self.inner.zrange(k, a, b).await
    }
    async fn lpush(&self, k: &str, v: &[String]) -> SpiResult<()> {
        self.inner.lpush(k, v).await
    }
    async fn lrange(&self, k: &str, a: i64, b: i64) -> SpiResult<Vec<String>> {
        self.inner.lrange(k, a, b).await
    }
    async fn watch_prefix(
        &self,
        prefix: &str,
        watch: Arc<dyn KeyWatch>,
    ) -> SpiResult<Option<SubscriptionId>> {
        if !self.hooks.watches() {
            return Ok(None);
        }
        self.inner.watch_prefix(prefix, watch).await
    }
    async fn unwatch(&self, id: SubscriptionId) -> SpiResult<()> {
        self.inner.unwatch(id).await
    }
}
