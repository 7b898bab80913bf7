//! Backend decorators the server wraps its cache and MQ in at start: every call is counted
//! (`mpush_backend_calls_total`, by SPI, operation and result) and timed
//! (`mpush_backend_call_seconds`), whatever backend is plugged in.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::metrics::{Key, Label};
use async_trait::async_trait;

use crate::metrics::{BACKEND_CALLS, BACKEND_LATENCY};
use crate::spi::{
    CacheManager, CasOutcome, MQClient, MQMessageListener, SpiResult, SubscriptionId,
};

/// Runs one backend call and records it. Labels are static strings; the key's label vector
/// is the one allocation, an await away from any push path.
async fn metered<T>(
    spi: &'static str,
    op: &'static str,
    call: impl Future<Output = SpiResult<T>>,
) -> SpiResult<T> {
    let start = Instant::now();
    let r = call.await;
    let result = if r.is_ok() { "ok" } else { "error" };
    let calls = Key::from_parts(
        BACKEND_CALLS,
        vec![
            Label::from_static_parts("spi", spi),
            Label::from_static_parts("op", op),
            Label::from_static_parts("result", result),
        ],
    );
    crate::metrics::incr_dynamic(&calls);
    let latency = Key::from_parts(
        BACKEND_LATENCY,
        vec![
            Label::from_static_parts("spi", spi),
            Label::from_static_parts("op", op),
        ],
    );
    crate::metrics::observe(&latency, start.elapsed());
    r
}

/// A [`CacheManager`] that records every call of the one it wraps.
pub(crate) struct MeteredCache(pub(crate) Arc<dyn CacheManager>);

#[async_trait]
impl CacheManager for MeteredCache {
    async fn get(&self, key: &str) -> SpiResult<Option<String>> {
        metered("cache", "get", self.0.get(key)).await
    }
    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> SpiResult<()> {
        metered("cache", "set", self.0.set(key, value, ttl)).await
    }
    async fn del(&self, key: &str) -> SpiResult<()> {
        metered("cache", "del", self.0.del(key)).await
    }
    async fn hset(&self, key: &str, field: &str, value: &str) -> SpiResult<()> {
        metered("cache", "hset", self.0.hset(key, field, value)).await
    }
    async fn hcompare_and_set(
        &self,
        key: &str,
        field: &str,
        expected: Option<&str>,
        value: &str,
    ) -> SpiResult<CasOutcome> {
        metered(
            "cache",
            "hcompare_and_set",
            self.0.hcompare_and_set(key, field, expected, value),
        )
        .await
    }
    async fn hget(&self, key: &str, field: &str) -> SpiResult<Option<String>> {
        metered("cache", "hget", self.0.hget(key, field)).await
    }
    async fn hgetall(&self, key: &str) -> SpiResult<HashMap<String, String>> {
        metered("cache", "hgetall", self.0.hgetall(key)).await
    }
    async fn hdel(&self, key: &str, field: &str) -> SpiResult<()> {
        metered("cache", "hdel", self.0.hdel(key, field)).await
    }
    async fn hincr_by(&self, key: &str, field: &str, delta: i64) -> SpiResult<i64> {
        metered("cache", "hincr_by", self.0.hincr_by(key, field, delta)).await
    }
    async fn zadd(&self, key: &str, member: &str, score: f64) -> SpiResult<()> {
        metered("cache", "zadd", self.0.zadd(key, member, score)).await
    }
    async fn zrem(&self, key: &str, member: &str) -> SpiResult<()> {
        metered("cache", "zrem", self.0.zrem(key, member)).await
    }
    async fn zcard(&self, key: &str) -> SpiResult<u64> {
        metered("cache", "zcard", self.0.zcard(key)).await
    }
    async fn zrange(&self, key: &str, start: i64, stop: i64) -> SpiResult<Vec<String>> {
        metered("cache", "zrange", self.0.zrange(key, start, stop)).await
    }
    async fn lpush(&self, key: &str, values: &[String]) -> SpiResult<()> {
        metered("cache", "lpush", self.0.lpush(key, values)).await
    }
    async fn lrange(&self, key: &str, start: i64, stop: i64) -> SpiResult<Vec<String>> {
        metered("cache", "lrange", self.0.lrange(key, start, stop)).await
    }
}

/// An [`MQClient`] that records every call of the one it wraps.
pub(crate) struct MeteredMq(pub(crate) Arc<dyn MQClient>);

#[async_trait]
impl MQClient for MeteredMq {
    async fn subscribe(
        &self,
        channel: &str,
        listener: Arc<dyn MQMessageListener>,
    ) -> SpiResult<SubscriptionId> {
        metered("mq", "subscribe", self.0.subscribe(channel, listener)).await
    }
    async fn unsubscribe(&self, id: SubscriptionId) -> SpiResult<()> {
        metered("mq", "unsubscribe", self.0.unsubscribe(id)).await
    }
    async fn publish(&self, channel: &str, message: &str) -> SpiResult<()> {
        metered("mq", "publish", self.0.publish(channel, message)).await
    }
}
