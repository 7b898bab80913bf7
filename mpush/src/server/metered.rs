//! Backend decorators the server wraps its cache and MQ in at start: every call is counted
//! (`mpush_backend_calls_total`, by SPI, operation and result) and timed
//! (`mpush_backend_call_seconds`), whatever backend is plugged in.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::metrics::{Key, Label};
use async_trait::async_trait;

use crate::metrics::{BACKEND_CALLS, BACKEND_LATENCY, Metric};
use crate::spi::{
    CacheManager, CasOutcome, HashCas, KeyWatch, MQClient, MQMessageListener, SpiResult,
    SubscriptionId,
};

/// The metrics of one backend operation, `static` (built by `op_keys!`): recording a call
/// allocates nothing, and with the server's own recorder it is an atomic update.
struct OpKeys {
    ok: Metric,
    error: Metric,
    latency: Metric,
}

/// `&'static OpKeys` for `spi`, `op` (string literals).
macro_rules! op_keys {
    ($spi:literal, $op:literal) => {{
        static OK: [Label; 3] = [
            Label::from_static_parts("spi", $spi),
            Label::from_static_parts("op", $op),
            Label::from_static_parts("result", "ok"),
        ];
        static ERROR: [Label; 3] = [
            Label::from_static_parts("spi", $spi),
            Label::from_static_parts("op", $op),
            Label::from_static_parts("result", "error"),
        ];
        static LATENCY: [Label; 2] = [
            Label::from_static_parts("spi", $spi),
            Label::from_static_parts("op", $op),
        ];
        static KEYS: OpKeys = OpKeys {
            ok: Metric::new(Key::from_static_parts(BACKEND_CALLS, &OK)),
            error: Metric::new(Key::from_static_parts(BACKEND_CALLS, &ERROR)),
            latency: Metric::new(Key::from_static_parts(BACKEND_LATENCY, &LATENCY)),
        };
        &KEYS
    }};
}

/// Runs one backend call and records it.
async fn metered<T>(
    keys: &'static OpKeys,
    call: impl Future<Output = SpiResult<T>>,
) -> SpiResult<T> {
    let start = Instant::now();
    let r = call.await;
    crate::metrics::incr(if r.is_ok() { &keys.ok } else { &keys.error });
    crate::metrics::observe(&keys.latency, start.elapsed());
    r
}

/// A [`CacheManager`] that records every call of the one it wraps.
pub(crate) struct MeteredCache(pub(crate) Arc<dyn CacheManager>);

#[async_trait]
impl CacheManager for MeteredCache {
    async fn get(&self, key: &str) -> SpiResult<Option<String>> {
        metered(op_keys!("cache", "get"), self.0.get(key)).await
    }
    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> SpiResult<()> {
        metered(op_keys!("cache", "set"), self.0.set(key, value, ttl)).await
    }
    async fn del(&self, key: &str) -> SpiResult<()> {
        metered(op_keys!("cache", "del"), self.0.del(key)).await
    }
    async fn hset(&self, key: &str, field: &str, value: &str) -> SpiResult<()> {
        metered(op_keys!("cache", "hset"), self.0.hset(key, field, value)).await
    }
    async fn hcompare_and_set(&self, cas: HashCas<'_>) -> SpiResult<CasOutcome> {
        metered(
            op_keys!("cache", "hcompare_and_set"),
            self.0.hcompare_and_set(cas),
        )
        .await
    }
    async fn hget(&self, key: &str, field: &str) -> SpiResult<Option<String>> {
        metered(op_keys!("cache", "hget"), self.0.hget(key, field)).await
    }
    async fn hgetall(&self, key: &str) -> SpiResult<HashMap<String, String>> {
        metered(op_keys!("cache", "hgetall"), self.0.hgetall(key)).await
    }
    async fn hdel(&self, key: &str, field: &str) -> SpiResult<()> {
        metered(op_keys!("cache", "hdel"), self.0.hdel(key, field)).await
    }
    async fn hincr_by(&self, key: &str, field: &str, delta: i64) -> SpiResult<i64> {
        metered(
            op_keys!("cache", "hincr_by"),
            self.0.hincr_by(key, field, delta),
        )
        .await
    }
    async fn zadd(&self, key: &str, member: &str, score: f64) -> SpiResult<()> {
        metered(op_keys!("cache", "zadd"), self.0.zadd(key, member, score)).await
    }
    async fn zrem(&self, key: &str, member: &str) -> SpiResult<()> {
        metered(op_keys!("cache", "zrem"), self.0.zrem(key, member)).await
    }
    async fn zcard(&self, key: &str) -> SpiResult<u64> {
        metered(op_keys!("cache", "zcard"), self.0.zcard(key)).await
    }
    async fn zrange(&self, key: &str, start: i64, stop: i64) -> SpiResult<Vec<String>> {
        metered(op_keys!("cache", "zrange"), self.0.zrange(key, start, stop)).await
    }
    async fn lpush(&self, key: &str, values: &[String]) -> SpiResult<()> {
        metered(op_keys!("cache", "lpush"), self.0.lpush(key, values)).await
    }
    async fn lrange(&self, key: &str, start: i64, stop: i64) -> SpiResult<Vec<String>> {
        metered(op_keys!("cache", "lrange"), self.0.lrange(key, start, stop)).await
    }
    async fn watch_prefix(
        &self,
        prefix: &str,
        watch: Arc<dyn KeyWatch>,
    ) -> SpiResult<Option<SubscriptionId>> {
        metered(
            op_keys!("cache", "watch_prefix"),
            self.0.watch_prefix(prefix, watch),
        )
        .await
    }
    async fn unwatch(&self, id: SubscriptionId) -> SpiResult<()> {
        metered(op_keys!("cache", "unwatch"), self.0.unwatch(id)).await
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
        metered(
            op_keys!("mq", "subscribe"),
            self.0.subscribe(channel, listener),
        )
        .await
    }
    async fn unsubscribe(&self, id: SubscriptionId) -> SpiResult<()> {
        metered(op_keys!("mq", "unsubscribe"), self.0.unsubscribe(id)).await
    }
    async fn publish(&self, channel: &str, message: &str) -> SpiResult<()> {
        metered(op_keys!("mq", "publish"), self.0.publish(channel, message)).await
    }
}
