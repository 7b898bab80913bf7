//! [`RedisCache`]: [`CacheManager`] as a 1:1 mapping onto Redis commands.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use mpush::config::RedisConfig;
use mpush::spi::{
    CacheManager, CasOutcome, HashCas, KeyWatch, SpiError, SpiResult, SubscriptionId,
};
use redis::{Cmd, FromRedisValue, cmd};

use crate::conn::{Conn, describe};
use crate::settings::{RedisSettings, Topology};
use crate::watch::{self, Watcher};

/// The cluster-wide cache on Redis (single server or Redis Cluster).
///
/// Each method is exactly one Redis command on one key, with plain string values, so the data
/// is what Java MPush reads and writes (spec §5, §10) and every call is atomic. One
/// multiplexed connection (per cluster node) is shared by all clones of the handle's users;
/// it reconnects by itself. Every call is bounded by
/// [`RedisOptions::operation_timeout`](crate::RedisOptions::operation_timeout): a dead or
/// unreachable Redis yields [`mpush::spi::SpiError::Unavailable`], a wrong-type key
/// [`mpush::spi::SpiError::Backend`].
///
/// [`CacheManager::watch_prefix`] is supported on a single server (Redis ≥ 6): each watch is
/// a RESP3 connection of its own with `CLIENT TRACKING ON BCAST PREFIX` (see the `watch`
/// module); on a Redis Cluster, or a server that refuses tracking, it answers `None`.
#[derive(Clone)]
pub struct RedisCache {
    conn: Conn,
    limit: Duration,
    target: String,
    settings: Arc<RedisSettings>,
    watches: Arc<Watches>,
}

/// The running watches of a handle (shared by its clones).
#[derive(Default)]
struct Watches {
    next: AtomicU64,
    running: Mutex<HashMap<u64, Watcher>>,
}

impl RedisCache {
    /// Connects as configured by `mp.redis`; fails (within the operation timeout) when Redis
    /// cannot be reached.
    pub async fn connect(config: &RedisConfig) -> SpiResult<Self> {
        Self::connect_with(&RedisSettings::from_config(config)?).await
    }

    /// Connects with explicit settings.
    pub async fn connect_with(settings: &RedisSettings) -> SpiResult<Self> {
        let conn = Conn::connect(settings, None).await?;
        Ok(Self {
            conn,
            limit: settings.options.operation_timeout,
            target: describe(settings),
            settings: Arc::new(settings.clone()),
            watches: Arc::default(),
        })
    }

    async fn run<T: FromRedisValue>(&self, cmd: &Cmd, what: &str) -> SpiResult<T> {
        self.conn.query(cmd, self.limit, what).await
    }
}

impl fmt::Debug for RedisCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let watches = self
            .watches
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("RedisCache")
            .field("target", &self.target)
            .field("operation_timeout", &self.limit)
            .field("watches", &watches)
            .finish()
    }
}

/// `SET key value` with the TTL folded in: `EX` for whole seconds (what MPush's
/// `SET` + `EXPIRE key secs` leaves behind, in one atomic command), `PX` for a fractional
/// TTL. A plain `SET` drops any previous TTL, as in Redis.
fn set_command(key: &str, value: &str, ttl: Option<Duration>) -> Cmd {
    let mut c = cmd("SET");
    c.arg(key).arg(value);
    match ttl {
        None => {}
        Some(ttl) if ttl.subsec_nanos() == 0 => {
            c.arg("EX").arg(ttl.as_secs());
        }
        Some(ttl) => {
            // Round up: a value must not outlive its TTL, but PX 0 is refused by Redis.
            let millis = ttl.as_nanos().div_ceil(1_000_000).max(1);
            c.arg("PX").arg(u64::try_from(millis).unwrap_or(u64::MAX));
        }
    }
    c
}

/// Compare-and-set on one hash field, in one script on one key (so it runs on the key's
/// Redis Cluster node and is atomic there). `ARGV`: field, `1`/`0` (an expected value is
/// given / the field must be absent), expected, new value. Replies `{'1'}` when written,
/// `{'0'}` or `{'0', current}` when not.
const HCAS_SCRIPT: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local want = ARGV[2] == '1'
if (not want and cur == false) or (want and cur == ARGV[3]) then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
  return {'1'}
end
if cur == false then return {'0'} end
return {'0', cur}
";

#[async_trait]
impl CacheManager for RedisCache {
    async fn get(&self, key: &str) -> SpiResult<Option<String>> {
        self.run(cmd("GET").arg(key), "GET").await
    }

    async fn set(&self, key: &str, value: &str, ttl: Option<Duration>) -> SpiResult<()> {
        if ttl == Some(Duration::ZERO) {
            // A zero TTL has expired on arrival (Redis refuses `EX 0`): the outcome is no key.
            return self.run(cmd("DEL").arg(key), "SET (zero TTL) as DEL").await;
        }
        self.run(&set_command(key, value, ttl), "SET").await
    }

    async fn del(&self, key: &str) -> SpiResult<()> {
        self.run(cmd("DEL").arg(key), "DEL").await
    }

    async fn hset(&self, key: &str, field: &str, value: &str) -> SpiResult<()> {
        self.run(cmd("HSET").arg(key).arg(field).arg(value), "HSET")
            .await
    }

    async fn hcompare_and_set(&self, cas: HashCas<'_>) -> SpiResult<CasOutcome> {
        let mut c = cmd("EVAL");
        c.arg(HCAS_SCRIPT)
            .arg(1)
            .arg(cas.key)
            .arg(cas.field)
            .arg(if cas.expected.is_some() { "1" } else { "0" })
            .arg(cas.expected.unwrap_or(""))
            .arg(cas.value);
        let reply: Vec<String> = self.run(&c, "EVAL (hash compare-and-set)").await?;
        match reply.first().map(String::as_str) {
            Some("1") => Ok(CasOutcome::Set),
            Some("0") => Ok(CasOutcome::Mismatch(reply.into_iter().nth(1))),
            _ => Err(mpush::spi::SpiError::backend(
                "redis",
                format!("unexpected compare-and-set reply {reply:?}"),
            )),
        }
    }

    async fn hget(&self, key: &str, field: &str) -> SpiResult<Option<String>> {
        self.run(cmd("HGET").arg(key).arg(field), "HGET").await
    }

    async fn hgetall(&self, key: &str) -> SpiResult<HashMap<String, String>> {
        self.run(cmd("HGETALL").arg(key), "HGETALL").await
    }

    async fn hdel(&self, key: &str, field: &str) -> SpiResult<()> {
        self.run(cmd("HDEL").arg(key).arg(field), "HDEL").await
    }

    async fn hincr_by(&self, key: &str, field: &str, delta: i64) -> SpiResult<i64> {
        self.run(cmd("HINCRBY").arg(key).arg(field).arg(delta), "HINCRBY")
            .await
    }

    async fn zadd(&self, key: &str, member: &str, score: f64) -> SpiResult<()> {
        self.run(cmd("ZADD").arg(key).arg(score).arg(member), "ZADD")
            .await
    }

    async fn zrem(&self, key: &str, member: &str) -> SpiResult<()> {
        self.run(cmd("ZREM").arg(key).arg(member), "ZREM").await
    }

    async fn zcard(&self, key: &str) -> SpiResult<u64> {
        self.run(cmd("ZCARD").arg(key), "ZCARD").await
    }

    async fn zrange(&self, key: &str, start: i64, stop: i64) -> SpiResult<Vec<String>> {
        self.run(cmd("ZRANGE").arg(key).arg(start).arg(stop), "ZRANGE")
            .await
    }

    async fn lpush(&self, key: &str, values: &[String]) -> SpiResult<()> {
        if values.is_empty() {
            // `LPUSH key` without values is a syntax error in Redis; pushing nothing is a no-op.
            return Ok(());
        }
        self.run(cmd("LPUSH").arg(key).arg(values), "LPUSH").await
    }

    async fn lrange(&self, key: &str, start: i64, stop: i64) -> SpiResult<Vec<String>> {
        self.run(cmd("LRANGE").arg(key).arg(start).arg(stop), "LRANGE")
            .await
    }

    async fn watch_prefix(
        &self,
        prefix: &str,
        watch: Arc<dyn KeyWatch>,
    ) -> SpiResult<Option<SubscriptionId>> {
        if self.settings.topology == Topology::Cluster {
            return Ok(None);
        }
        let watcher = match watch::start(&self.settings, prefix, watch, self.target.clone()).await {
            Ok(w) => w,
            // Redis answered and refused (before 6, or a proxy without CLIENT TRACKING):
            // asking again will not help; the caller reads instead.
            Err(e @ SpiError::Backend { .. }) => {
                tracing::warn!(target = %self.target, error = %e, "redis backend: key watch refused; changes are not reported");
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let id = self.watches.next.fetch_add(1, Ordering::Relaxed);
        self.watches
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, watcher);
        Ok(Some(SubscriptionId(id)))
    }

    async fn unwatch(&self, id: SubscriptionId) -> SpiResult<()> {
        let watcher = self
            .watches
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id.0);
        drop(watcher);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Cmd) -> Vec<String> {
        c.args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<other>".to_string(),
            })
            .collect()
    }

    #[test]
    fn set_forms() {
        assert_eq!(args(&set_command("k", "v", None)), ["SET", "k", "v"]);
        assert_eq!(
            args(&set_command("k", "v", Some(Duration::from_secs(86400)))),
            ["SET", "k", "v", "EX", "86400"]
        );
        assert_eq!(
            args(&set_command("k", "v", Some(Duration::from_millis(1500)))),
            ["SET", "k", "v", "PX", "1500"]
        );
        assert_eq!(
            args(&set_command("k", "v", Some(Duration::from_nanos(1)))),
            ["SET", "k", "v", "PX", "1"]
        );
    }
}
