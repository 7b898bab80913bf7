//! Conformance suites that every SPI backend runs (feature `testkit`).
//!
//! One suite per backend trait, written only against the traits, so the memory, Redis and
//! ZooKeeper backends are held to the same contract. Each suite is a public async function
//! that panics with a message naming the violated guarantee. Every backend call is bounded
//! by [`CALL_TIMEOUT`] and every awaited delivery by [`DELIVERY_TIMEOUT`], so a broken or
//! unreachable backend fails fast instead of hanging the test run.
//!
//! A backend crate runs them from its tests, for example:
//! ```text
//! #[tokio::test(flavor = "multi_thread")]
//! async fn cache_conforms() {
//!     let cache: Arc<dyn CacheManager> = Arc::new(MyCache::connect().await?);
//!     mpush::spi::conformance::cache_manager(cache, "conformance:").await;
//! }
//! ```
//! Run them on a multi-threaded runtime: backends deliver on their own tasks.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::{
    CacheManager, MQClient, MQMessageListener, ServiceDiscovery, ServiceListener, ServiceNode,
    ServiceRegistry, SpiError, SpiResult,
};

/// The longest any single backend call may take before the suite fails.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest an asynchronous delivery (message, watch event) may take.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a check waits for something that must *not* happen (a late delivery).
pub const QUIET_PERIOD: Duration = Duration::from_millis(300);
/// How often pending deliveries are polled.
const POLL_INTERVAL: Duration = Duration::from_millis(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A listener that panicked mid-push leaves a usable Vec; keep collecting.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Awaits a backend call that must succeed within [`CALL_TIMEOUT`].
async fn call<T>(what: &str, fut: impl Future<Output = SpiResult<T>>) -> T {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Err(_) => panic!("conformance: `{what}` did not complete within {CALL_TIMEOUT:?}"),
        Ok(Err(e)) => panic!("conformance: `{what}` failed: {e}"),
        Ok(Ok(v)) => v,
    }
}

/// Awaits a backend call that must fail with [`SpiError::Backend`] within [`CALL_TIMEOUT`].
async fn call_wrong_type<T: Debug>(what: &str, fut: impl Future<Output = SpiResult<T>>) {
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Err(_) => panic!("conformance: `{what}` did not complete within {CALL_TIMEOUT:?}"),
        Ok(Ok(v)) => panic!(
            "conformance: `{what}` on a key of another type must fail (WRONGTYPE), got Ok({v:?})"
        ),
        Ok(Err(SpiError::Backend { .. })) => {}
        Ok(Err(e)) => panic!(
            "conformance: `{what}` on a key of another type must fail with SpiError::Backend, got {e}"
        ),
    }
}

/// Polls `check` until it returns `Ok`, failing after [`DELIVERY_TIMEOUT`] with the last
/// state it reported.
async fn eventually(what: &str, mut check: impl FnMut() -> Result<(), String>) {
    let deadline = Instant::now() + DELIVERY_TIMEOUT;
    loop {
        let state = match check() {
            Ok(()) => return,
            Err(state) => state,
        };
        if Instant::now() >= deadline {
            panic!(
                "conformance: {what}: not observed within {DELIVERY_TIMEOUT:?}; last state: {state}"
            );
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------------------------------
// CacheManager
// ---------------------------------------------------------------------------------------

/// Checks every [`CacheManager`] method against the Redis semantics the trait promises.
///
/// Covers: string get/set/del (including empty values and MPush's `,`/`|` session values);
/// TTL expiry (a 1 s value is gone after 1.5 s) and `set` without TTL clearing a previous
/// TTL; hashes (missing key = empty map, overwrite, `hdel`, `hincr_by` returning the new
/// value, creating the key, negative deltas); sorted sets (score-then-member order,
/// re-adding does not double count and updates the score, `zrem`, `zcard`, `zrange` with
/// negative and out-of-range indexes); lists (`lpush` prepends in argument order, `lrange`
/// with negative and out-of-range indexes); and `SpiError::Backend` for an operation on a
/// key of another type. Every key starts with `prefix` (so a shared Redis is safe to use);
/// the keys are deleted before and after. Takes about 2 s (the TTL check waits in real time).
pub async fn cache_manager(cache: Arc<dyn CacheManager>, prefix: &str) {
    let key = |name: &str| format!("{prefix}{name}");
    let keys: Vec<String> = [
        "str",
        "ttl",
        "ttl-cleared",
        "hash",
        "hash-incr",
        "zset",
        "zset-zero",
        "list",
        "typed",
        "cas",
    ]
    .iter()
    .map(|n| key(n))
    .collect();
    for k in &keys {
        call("del (cleanup before)", cache.del(k)).await;
    }

    cache_strings(&*cache, &key("str")).await;
    cache_ttl(&*cache, &key("ttl"), &key("ttl-cleared")).await;
    cache_hashes(&*cache, &key("hash"), &key("hash-incr")).await;
    cache_sorted_sets(&*cache, &key("zset"), &key("zset-zero")).await;
    cache_lists(&*cache, &key("list")).await;
    cache_wrong_type(&*cache, &key("typed"), &key("hash")).await;
    cache_compare_and_set(&cache, &key("cas")).await;

    for k in &keys {
        call("del (cleanup after)", cache.del(k)).await;
    }
}

/// `hcompare_and_set`: the exact-match semantics, and atomicity under concurrency (racing
/// first writers: exactly one wins; racing read-modify-write loops: no update is lost).
async fn cache_compare_and_set(cache: &Arc<dyn CacheManager>, h: &str) {
    use super::CasOutcome::{Mismatch, Set};
    let cas = |f: &'static str, exp: Option<&'static str>, v: &'static str| {
        let (cache, h) = (cache.clone(), h.to_string());
        async move { cache.hcompare_and_set(&h, f, exp, v).await }
    };
    assert_eq!(
        call("cas on a missing key", cas("f", Some("x"), "a")).await,
        Mismatch(None),
        "an expected value on a missing key is a mismatch"
    );
    assert!(
        call("hgetall", cache.hgetall(h)).await.is_empty(),
        "a mismatch must not create the key"
    );
    assert_eq!(call("cas absent", cas("f", None, "a")).await, Set);
    assert_eq!(
        call("cas absent again", cas("f", None, "b")).await,
        Mismatch(Some("a".into())),
        "expecting absence on a present field is a mismatch that returns the value"
    );
    assert_eq!(
        call("cas stale", cas("f", Some("zz"), "b")).await,
        Mismatch(Some("a".into()))
    );
    assert_eq!(call("cas match", cas("f", Some("a"), "b")).await, Set);
    assert_eq!(
        call("hget", cache.hget(h, "f")).await.as_deref(),
        Some("b"),
        "a successful compare-and-set writes"
    );
    assert_eq!(
        call(
            "cas other field",
            cas("g", None, "{\"json\":\"value,with|chars\"}")
        )
        .await,
        Set,
        "fields are independent; values with JSON punctuation are stored as is"
    );

    // Racing first writers on one fresh field: exactly one wins.
    let racers: Vec<_> = (0..16)
        .map(|i| {
            let (cache, h) = (cache.clone(), h.to_string());
            tokio::spawn(async move {
                cache
                    .hcompare_and_set(&h, "race", None, &format!("w{i}"))
                    .await
            })
        })
        .collect();
    let mut winners = 0;
    for r in racers {
        match r.await {
            Ok(Ok(Set)) => winners += 1,
            Ok(Ok(Mismatch(Some(_)))) => {}
            other => panic!("racing compare-and-set: unexpected {other:?}"),
        }
    }
    assert_eq!(
        winners, 1,
        "exactly one of 16 racing first writers must win"
    );

    // Read-modify-write loops: 8 tasks × 10 increments of a decimal counter, no lost update.
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (cache, h) = (cache.clone(), h.to_string());
            tokio::spawn(async move {
                for _ in 0..10 {
                    let mut cur = cache.hget(&h, "n").await?;
                    loop {
                        let next = cur.as_deref().map_or(0, |v| v.parse::<u64>().unwrap_or(0)) + 1;
                        match cache
                            .hcompare_and_set(&h, "n", cur.as_deref(), &next.to_string())
                            .await?
                        {
                            Set => break,
                            Mismatch(now) => cur = now,
                        }
                    }
                }
                SpiResult::Ok(())
            })
        })
        .collect();
    for w in workers {
        match w.await {
            Ok(Ok(())) => {}
            other => panic!("compare-and-set counter: unexpected {other:?}"),
        }
    }
    assert_eq!(
        call("hget counter", cache.hget(h, "n")).await.as_deref(),
        Some("80"),
        "concurrent compare-and-set loops lost an update"
    );
}

async fn cache_strings(cache: &dyn CacheManager, k: &str) {
    assert_eq!(
        call("get missing", cache.get(k)).await,
        None,
        "get of a missing key must be None"
    );
    call("set", cache.set(k, "v1", None)).await;
    assert_eq!(
        call("get", cache.get(k)).await.as_deref(),
        Some("v1"),
        "get after set"
    );
    call("set overwrite", cache.set(k, "v2", None)).await;
    assert_eq!(
        call("get", cache.get(k)).await.as_deref(),
        Some("v2"),
        "set must overwrite"
    );
    // The reusable-session value of spec §5 contains commas, pipes and minus signs.
    let session = "android,8.0,2.0,dev-1,7|-14|5,1|2|3 ünïcødé";
    call("set session-like value", cache.set(k, session, None)).await;
    assert_eq!(
        call("get", cache.get(k)).await.as_deref(),
        Some(session),
        "value round trip"
    );
    call("set empty value", cache.set(k, "", None)).await;
    assert_eq!(
        call("get", cache.get(k)).await.as_deref(),
        Some(""),
        "empty value is a value"
    );
    call("del", cache.del(k)).await;
    assert_eq!(
        call("get after del", cache.get(k)).await,
        None,
        "del must remove the key"
    );
    call("del missing", cache.del(k)).await;
}

async fn cache_ttl(cache: &dyn CacheManager, expiring: &str, cleared: &str) {
    const TTL: Duration = Duration::from_secs(1);
    let ttl = Some(TTL);
    let expiring_set_at = Instant::now();
    call("set with ttl", cache.set(expiring, "short", ttl)).await;
    call("set with ttl", cache.set(cleared, "short", ttl)).await;
    let cleared_ttl_ends = Instant::now() + TTL;
    call("set without ttl", cache.set(cleared, "long", None)).await;
    assert_eq!(
        call("get before ttl", cache.get(expiring)).await.as_deref(),
        Some("short"),
        "a value must be readable before its TTL"
    );
    // Poll for the expiry instead of sleeping past it.
    let deadline = expiring_set_at + TTL + DELIVERY_TIMEOUT;
    while call("get until ttl", cache.get(expiring)).await.is_some() {
        assert!(
            Instant::now() < deadline,
            "a value must never be returned after its TTL ({TTL:?}); still there after {:?}",
            expiring_set_at.elapsed()
        );
        tokio::time::sleep(POLL_INTERVAL).await;
    }
    // Expiry is measured by the backend's clock from its receipt of the SET, which is after
    // `expiring_set_at`; 50 ms absorbs the backends' millisecond rounding.
    let gone_after = expiring_set_at.elapsed();
    assert!(
        gone_after + Duration::from_millis(50) >= TTL,
        "a value must be readable until its TTL ({TTL:?}); gone after {gone_after:?}"
    );
    // The old TTL of `cleared` ends at most a few ms after the one just observed: waiting it
    // out is what this check is about.
    tokio::time::sleep_until(cleared_ttl_ends + Duration::from_millis(50)).await;
    assert_eq!(
        call("get after ttl", cache.get(cleared)).await.as_deref(),
        Some("long"),
        "set without ttl must clear the key's previous TTL"
    );
    call("set after expiry", cache.set(expiring, "again", None)).await;
    assert_eq!(
        call("get", cache.get(expiring)).await.as_deref(),
        Some("again"),
        "an expired key must be writable again"
    );
}

async fn cache_hashes(cache: &dyn CacheManager, h: &str, incr: &str) {
    assert!(
        call("hgetall missing", cache.hgetall(h)).await.is_empty(),
        "hgetall of a missing key must be an empty map"
    );
    assert_eq!(
        call("hget missing key", cache.hget(h, "f1")).await,
        None,
        "hget of a missing key"
    );
    call("hset", cache.hset(h, "f1", "a")).await;
    call("hset", cache.hset(h, "f2", "b")).await;
    assert_eq!(
        call("hget", cache.hget(h, "f1")).await.as_deref(),
        Some("a"),
        "hget after hset"
    );
    assert_eq!(
        call("hget missing field", cache.hget(h, "nope")).await,
        None,
        "missing field"
    );
    let expected: HashMap<String, String> = [("f1", "a"), ("f2", "b")]
        .iter()
        .map(|(f, v)| (f.to_string(), v.to_string()))
        .collect();
    assert_eq!(
        call("hgetall", cache.hgetall(h)).await,
        expected,
        "hgetall after two hsets"
    );
    call("hset overwrite", cache.hset(h, "f1", "c")).await;
    assert_eq!(
        call("hget", cache.hget(h, "f1")).await.as_deref(),
        Some("c"),
        "hset must overwrite"
    );
    call("hdel", cache.hdel(h, "f2")).await;
    assert_eq!(
        call("hget after hdel", cache.hget(h, "f2")).await,
        None,
        "hdel must remove"
    );
    call("hdel missing field", cache.hdel(h, "f2")).await;
    call("hdel missing key", cache.hdel(incr, "f")).await;
    let only_f1: HashMap<String, String> = [("f1".to_string(), "c".to_string())].into();
    assert_eq!(
        call("hgetall", cache.hgetall(h)).await,
        only_f1,
        "hgetall after hdel"
    );

    assert_eq!(
        call("hincr_by", cache.hincr_by(h, "n", 5)).await,
        5,
        "hincr_by on a new field"
    );
    assert_eq!(
        call("hincr_by", cache.hincr_by(h, "n", -7)).await,
        -2,
        "hincr_by returns new value"
    );
    assert_eq!(
        call("hget", cache.hget(h, "n")).await.as_deref(),
        Some("-2"),
        "counter as decimal"
    );
    assert_eq!(
        call("hincr_by", cache.hincr_by(incr, "c", 1)).await,
        1,
        "hincr_by creates the key"
    );
    assert_eq!(
        call("hincr_by", cache.hincr_by(incr, "c", 0)).await,
        1,
        "hincr_by with 0"
    );

    call("del hash", cache.del(h)).await;
    assert!(
        call("hgetall after del", cache.hgetall(h)).await.is_empty(),
        "del must remove a hash"
    );
}

async fn cache_sorted_sets(cache: &dyn CacheManager, z: &str, zero: &str) {
    assert_eq!(
        call("zcard missing", cache.zcard(z)).await,
        0,
        "zcard of a missing key"
    );
    assert!(
        call("zrange missing", cache.zrange(z, 0, -1))
            .await
            .is_empty(),
        "zrange of missing key"
    );
    call("zadd", cache.zadd(z, "b", 2.0)).await;
    call("zadd", cache.zadd(z, "a", 1.0)).await;
    call("zadd", cache.zadd(z, "c", 1.0)).await;
    assert_eq!(
        call("zrange", cache.zrange(z, 0, -1)).await,
        strings(&["a", "c", "b"]),
        "zrange orders by score, then by member"
    );
    call("zadd duplicate", cache.zadd(z, "a", 1.0)).await;
    assert_eq!(
        call("zcard", cache.zcard(z)).await,
        3,
        "re-adding a member must not double count"
    );
    call("zadd new score", cache.zadd(z, "a", 3.0)).await;
    assert_eq!(
        call("zrange", cache.zrange(z, 0, -1)).await,
        strings(&["c", "b", "a"]),
        "zadd of an existing member must update its score"
    );
    assert_eq!(
        call("zcard", cache.zcard(z)).await,
        3,
        "zcard after a score update"
    );
    let ranges: [(i64, i64, &[&str]); 9] = [
        (-2, -1, &["b", "a"]),
        (0, 0, &["c"]),
        (1, 1, &["b"]),
        (-1, -1, &["a"]),
        (1, -1, &["b", "a"]),
        (-100, 100, &["c", "b", "a"]),
        (5, 10, &[]),
        (2, 1, &[]),
        (0, -4, &[]),
    ];
    for (start, stop, expected) in ranges {
        assert_eq!(
            call("zrange", cache.zrange(z, start, stop)).await,
            strings(expected),
            "zrange {start} {stop} over [c, b, a] (inclusive, negative from the end)"
        );
    }
    call("zrem", cache.zrem(z, "b")).await;
    assert_eq!(
        call("zrange", cache.zrange(z, 0, -1)).await,
        strings(&["c", "a"]),
        "zrem"
    );
    assert_eq!(call("zcard", cache.zcard(z)).await, 2, "zcard after zrem");
    call("zrem missing member", cache.zrem(z, "b")).await;
    call("zrem missing key", cache.zrem(zero, "x")).await;
    call("zrem", cache.zrem(z, "c")).await;
    call("zrem", cache.zrem(z, "a")).await;
    assert_eq!(
        call("zcard", cache.zcard(z)).await,
        0,
        "zcard after removing every member"
    );
    assert!(
        call("zrange", cache.zrange(z, 0, -1)).await.is_empty(),
        "zrange of an emptied set"
    );

    // MPush's online-user sets use score 0 for everyone: order is then by member bytes.
    for m in ["u2", "u10", "u1"] {
        call("zadd score 0", cache.zadd(zero, m, 0.0)).await;
    }
    assert_eq!(
        call("zrange", cache.zrange(zero, 0, -1)).await,
        strings(&["u1", "u10", "u2"]),
        "equal scores order by member, byte-wise"
    );
    call("del zset", cache.del(zero)).await;
    assert_eq!(
        call("zcard after del", cache.zcard(zero)).await,
        0,
        "del must remove a sorted set"
    );
}

async fn cache_lists(cache: &dyn CacheManager, l: &str) {
    assert!(
        call("lrange missing", cache.lrange(l, 0, -1))
            .await
            .is_empty(),
        "lrange of missing key"
    );
    call("lpush", cache.lpush(l, &strings(&["a", "b"]))).await;
    assert_eq!(
        call("lrange", cache.lrange(l, 0, -1)).await,
        strings(&["b", "a"]),
        "LPUSH k a b must give [b, a]"
    );
    call("lpush", cache.lpush(l, &strings(&["c"]))).await;
    let ranges: [(i64, i64, &[&str]); 8] = [
        (0, -1, &["c", "b", "a"]),
        (0, 0, &["c"]),
        (-2, -1, &["b", "a"]),
        (1, -1, &["b", "a"]),
        (-100, 100, &["c", "b", "a"]),
        (5, 10, &[]),
        (2, 1, &[]),
        (0, -4, &[]),
    ];
    for (start, stop, expected) in ranges {
        assert_eq!(
            call("lrange", cache.lrange(l, start, stop)).await,
            strings(expected),
            "lrange {start} {stop} over [c, b, a] (inclusive, negative from the end)"
        );
    }
    call("lpush duplicate", cache.lpush(l, &strings(&["a"]))).await;
    assert_eq!(
        call("lrange", cache.lrange(l, 0, -1)).await,
        strings(&["a", "c", "b", "a"]),
        "lists keep duplicates"
    );
    call("del list", cache.del(l)).await;
    assert!(
        call("lrange after del", cache.lrange(l, 0, -1))
            .await
            .is_empty(),
        "del must remove a list"
    );
}

async fn cache_wrong_type(cache: &dyn CacheManager, string_key: &str, hash_key: &str) {
    call("set", cache.set(string_key, "x", None)).await;
    call_wrong_type("hset on a string", cache.hset(string_key, "f", "v")).await;
    call_wrong_type("hgetall on a string", cache.hgetall(string_key)).await;
    call_wrong_type("hincr_by on a string", cache.hincr_by(string_key, "f", 1)).await;
    call_wrong_type("zadd on a string", cache.zadd(string_key, "m", 1.0)).await;
    call_wrong_type("zrange on a string", cache.zrange(string_key, 0, -1)).await;
    call_wrong_type(
        "lpush on a string",
        cache.lpush(string_key, &strings(&["v"])),
    )
    .await;
    call_wrong_type("lrange on a string", cache.lrange(string_key, 0, -1)).await;
    assert_eq!(
        call("get", cache.get(string_key)).await.as_deref(),
        Some("x"),
        "a failed wrong-type operation must leave the value alone"
    );
    call("hset", cache.hset(hash_key, "f", "v")).await;
    call_wrong_type("get on a hash", cache.get(hash_key)).await;
    call_wrong_type("zcard on a hash", cache.zcard(hash_key)).await;
    call("set over a hash", cache.set(hash_key, "now a string", None)).await;
    assert_eq!(
        call("get", cache.get(hash_key)).await.as_deref(),
        Some("now a string"),
        "set must replace a key of any type"
    );
}

// ---------------------------------------------------------------------------------------
// MQClient
// ---------------------------------------------------------------------------------------

/// Records what a subscription received.
#[derive(Default)]
struct Inbox {
    received: Mutex<Vec<(String, String)>>,
}

impl MQMessageListener for Inbox {
    fn on_message(&self, channel: &str, message: &str) {
        lock(&self.received).push((channel.to_string(), message.to_string()));
    }
}

impl Inbox {
    fn messages(&self) -> Vec<String> {
        lock(&self.received)
            .iter()
            .map(|(_, m)| m.clone())
            .collect()
    }

    fn channels(&self) -> Vec<String> {
        lock(&self.received)
            .iter()
            .map(|(c, _)| c.clone())
            .collect()
    }

    /// `Ok` once `message` has arrived.
    fn has(&self, message: &str) -> Result<(), String> {
        let messages = self.messages();
        if messages.iter().any(|m| m == message) {
            Ok(())
        } else {
            Err(format!("received so far: {messages:?}"))
        }
    }
}

/// Checks the [`MQClient`] guarantees between two handles on one backend ("two nodes").
///
/// `a` and `b` may be the same handle, or two connections to one backend. Covers:
/// publishing on a channel nobody subscribed to; a subscriber on `b` receiving a message
/// published on `a` (and the reverse direction) with the right channel name; publish order
/// kept for 100 messages; fan-out to every subscriber of a channel, exactly once each;
/// channel isolation; and `unsubscribe` stopping delivery at once, even for messages
/// already published. Channels are named `<prefix>mq:...`. Deliveries are polled with a
/// deadline of [`DELIVERY_TIMEOUT`].
pub async fn mq_client(a: Arc<dyn MQClient>, b: Arc<dyn MQClient>, prefix: &str) {
    let ch1 = format!("{prefix}mq:ch1");
    let ch2 = format!("{prefix}mq:ch2");
    let nobody = format!("{prefix}mq:nobody");

    call("publish without subscribers", a.publish(&nobody, "lost")).await;

    // Cross-node delivery.
    let first = Arc::new(Inbox::default());
    let first_id = call("subscribe", b.subscribe(&ch1, first.clone())).await;
    call("publish", a.publish(&ch1, "hello")).await;
    eventually(
        "a message published on `a` reaches a subscriber on `b`",
        || first.has("hello"),
    )
    .await;
    assert_eq!(
        first.channels(),
        vec![ch1.clone()],
        "the listener must get the channel name"
    );

    // Order.
    let burst: Vec<String> = (0..100).map(|i| format!("m{i}")).collect();
    for m in &burst {
        call("publish", a.publish(&ch1, m)).await;
    }
    eventually("100 published messages arrive", || first.has("m99")).await;
    let mut expected = vec!["hello".to_string()];
    expected.extend(burst.iter().cloned());
    assert_eq!(
        first.messages(),
        expected,
        "messages from one publisher must arrive in order"
    );

    // Fan-out, both directions.
    let second = Arc::new(Inbox::default());
    let third = Arc::new(Inbox::default());
    let second_id = call("subscribe", a.subscribe(&ch1, second.clone())).await;
    let third_id = call("subscribe", b.subscribe(&ch1, third.clone())).await;
    call("publish", a.publish(&ch1, "fan-out")).await;
    call("publish", b.publish(&ch1, "from-b")).await;
    for (name, inbox) in [("first", &first), ("second", &second), ("third", &third)] {
        eventually(
            &format!("subscriber {name} gets a fanned-out message"),
            || inbox.has("from-b"),
        )
        .await;
    }

    // Channel isolation.
    let other = Arc::new(Inbox::default());
    let other_id = call("subscribe", b.subscribe(&ch2, other.clone())).await;
    call("publish", a.publish(&ch2, "on-ch2")).await;
    eventually("a message on a second channel arrives", || {
        other.has("on-ch2")
    })
    .await;

    // Unsubscribe with messages possibly still queued: nothing may arrive after it returns.
    for i in 0..50 {
        call("publish", a.publish(&ch1, &format!("late{i}"))).await;
    }
    call("unsubscribe", b.unsubscribe(first_id)).await;
    let count_at_unsubscribe = first.messages().len();
    call("publish after unsubscribe", a.publish(&ch1, "after")).await;
    for (name, inbox) in [("second", &second), ("third", &third)] {
        eventually(&format!("subscriber {name} still receives"), || {
            inbox.has("after")
        })
        .await;
    }
    tokio::time::sleep(QUIET_PERIOD).await;
    let first_messages = first.messages();
    assert_eq!(
        first_messages.len(),
        count_at_unsubscribe,
        "after unsubscribe returned the listener must not be called again; it got {:?}",
        &first_messages[count_at_unsubscribe.min(first_messages.len())..]
    );

    // Exactly once on every subscriber, in order per publisher; nothing crossed channels.
    let mut from_a = strings(&["fan-out"]);
    from_a.extend((0..50).map(|i| format!("late{i}")));
    from_a.push("after".to_string());
    for (name, inbox) in [("second", &second), ("third", &third)] {
        let (from_b, got_from_a): (Vec<String>, Vec<String>) =
            inbox.messages().into_iter().partition(|m| m == "from-b");
        assert_eq!(
            got_from_a, from_a,
            "subscriber {name}: each message exactly once, in order"
        );
        assert_eq!(
            from_b.len(),
            1,
            "subscriber {name}: the message from `b` exactly once"
        );
        assert!(
            inbox.channels().iter().all(|c| *c == ch1),
            "subscriber {name} got another channel"
        );
    }
    assert_eq!(
        other.messages(),
        strings(&["on-ch2"]),
        "a subscriber gets only its channel"
    );

    call("unsubscribe", a.unsubscribe(second_id)).await;
    call("unsubscribe", b.unsubscribe(third_id)).await;
    call("unsubscribe", b.unsubscribe(other_id)).await;
    call(
        "publish with no subscribers left",
        a.publish(&ch1, "nobody"),
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// ServiceRegistry / ServiceDiscovery
// ---------------------------------------------------------------------------------------

/// Records what a watch reported.
#[derive(Default)]
struct Watch {
    /// `(added, node)` in arrival order.
    events: Mutex<Vec<(bool, ServiceNode)>>,
}

impl ServiceListener for Watch {
    fn on_added(&self, node: &ServiceNode) {
        lock(&self.events).push((true, node.clone()));
    }

    fn on_removed(&self, node: &ServiceNode) {
        lock(&self.events).push((false, node.clone()));
    }
}

impl Watch {
    fn len(&self) -> usize {
        lock(&self.events).len()
    }

    /// The nodes the events add up to, by node id. Tolerates backends that report a
    /// replacement as removed + added, or that replay existing nodes on subscribe.
    fn view(&self) -> BTreeMap<String, ServiceNode> {
        let mut view = BTreeMap::new();
        for (added, node) in lock(&self.events).iter() {
            if *added {
                view.insert(node.node_id.clone(), node.clone());
            } else {
                view.remove(&node.node_id);
            }
        }
        view
    }

    /// `Ok` once the events add up to exactly `expected`.
    fn shows(&self, expected: &[&ServiceNode]) -> Result<(), String> {
        let view = self.view();
        let want: BTreeMap<String, ServiceNode> = expected
            .iter()
            .map(|n| (n.node_id.clone(), (*n).clone()))
            .collect();
        if view == want {
            Ok(())
        } else {
            Err(format!("listener view {view:?}, expected {want:?}"))
        }
    }
}

fn by_id(mut nodes: Vec<ServiceNode>) -> Vec<ServiceNode> {
    nodes.sort_by(|x, y| x.node_id.cmp(&y.node_id));
    nodes
}

fn node(service: &str, id: &str, host: &str, port: u16) -> ServiceNode {
    ServiceNode {
        service_name: service.to_string(),
        node_id: id.to_string(),
        attrs: BTreeMap::new(),
        host: host.to_string(),
        port,
    }
}

/// Checks [`ServiceRegistry`] and [`ServiceDiscovery`] of one backend together.
///
/// Covers: lookup of an unknown service (empty); register and lookup with every field,
/// including JSON attributes (numbers, strings, arrays, nested objects), round-tripping
/// exactly; register of an existing node replacing it; deregister, also of an absent node;
/// service isolation; a listener seeing nodes added, replaced and removed; and
/// `unsubscribe` stopping notifications. Lookup order is not checked. Services are named
/// `<service_prefix>/svc` and `<service_prefix>/other`: use a fresh prefix starting with
/// `/` (a path, for ZooKeeper), e.g. `/conformance-<random>`. Every node it registers is
/// deregistered at the end.
pub async fn service_registry(
    registry: Arc<dyn ServiceRegistry>,
    discovery: Arc<dyn ServiceDiscovery>,
    service_prefix: &str,
) {
    let svc = format!("{service_prefix}/svc");
    let other_svc = format!("{service_prefix}/other");
    assert!(
        call("lookup unknown service", discovery.lookup(&svc))
            .await
            .is_empty(),
        "lookup of a service without nodes must be empty (is the prefix {service_prefix:?} fresh?)"
    );

    let watch = Arc::new(Watch::default());
    let watch_id = call("subscribe", discovery.subscribe(&svc, watch.clone())).await;
    let stays = Arc::new(Watch::default());
    let stays_id = call("subscribe", discovery.subscribe(&svc, stays.clone())).await;

    let mut a = node(&svc, "node-a", "10.0.0.1", 3000);
    a.attrs.insert("weight".into(), serde_json::json!(1));
    a.attrs
        .insert("public_ip".into(), serde_json::json!("203.0.113.7"));
    a.attrs.insert("tags".into(), serde_json::json!(["x", "y"]));
    a.attrs.insert(
        "nested".into(),
        serde_json::json!({"ratio": 0.5, "on": true}),
    );
    let b = node(&svc, "node-b", "10.0.0.2", 3001);
    call("register", registry.register(&a)).await;
    call("register", registry.register(&b)).await;
    assert_eq!(
        by_id(call("lookup", discovery.lookup(&svc)).await),
        vec![a.clone(), b.clone()],
        "lookup must return every registered node with all fields and attrs intact"
    );
    eventually("the listener sees both registrations", || {
        watch.shows(&[&a, &b])
    })
    .await;

    // Replace.
    let mut a2 = a.clone();
    a2.port = 3100;
    a2.attrs.insert("weight".into(), serde_json::json!(2));
    call("register again (replace)", registry.register(&a2)).await;
    assert_eq!(
        by_id(call("lookup", discovery.lookup(&svc)).await),
        vec![a2.clone(), b.clone()],
        "registering an existing node must replace its data"
    );
    eventually("the listener sees the replacement", || {
        watch.shows(&[&a2, &b])
    })
    .await;

    // Deregister.
    call("deregister", registry.deregister(&b)).await;
    assert_eq!(
        call("lookup", discovery.lookup(&svc)).await,
        vec![a2.clone()],
        "deregister must remove the node"
    );
    eventually("the listener sees the removal", || watch.shows(&[&a2])).await;
    {
        let events = lock(&watch.events);
        let removed = events
            .iter()
            .find(|(added, n)| !added && n.node_id == b.node_id);
        match removed {
            Some((_, n)) => assert_eq!(n.service_name, svc, "on_removed must name the service"),
            None => panic!("conformance: on_removed was not called for {b:?}; events {events:?}"),
        }
    }
    call("deregister absent node", registry.deregister(&b)).await;

    // Service isolation.
    let elsewhere = node(&other_svc, "node-z", "10.0.0.9", 3009);
    call("register in another service", registry.register(&elsewhere)).await;
    assert_eq!(
        call("lookup", discovery.lookup(&other_svc)).await,
        vec![elsewhere.clone()],
        "lookup of the other service"
    );
    assert_eq!(
        call("lookup", discovery.lookup(&svc)).await,
        vec![a2.clone()],
        "a node of another service must not show up"
    );

    // Unsubscribe.
    call("unsubscribe", discovery.unsubscribe(watch_id)).await;
    let events_at_unsubscribe = watch.len();
    let c = node(&svc, "node-c", "10.0.0.3", 3002);
    call("register after unsubscribe", registry.register(&c)).await;
    eventually("a remaining listener sees the new node", || {
        stays.shows(&[&a2, &c])
    })
    .await;
    tokio::time::sleep(QUIET_PERIOD).await;
    assert_eq!(
        watch.len(),
        events_at_unsubscribe,
        "after unsubscribe returned the listener must not be notified again"
    );
    assert!(
        stays.view().values().all(|n| n.service_name == svc),
        "a listener must only hear about its service: {:?}",
        stays.view()
    );

    // Cleanup.
    for n in [&a2, &c, &elsewhere] {
        call("deregister (cleanup)", registry.deregister(n)).await;
    }
    assert!(
        call("lookup", discovery.lookup(&svc)).await.is_empty(),
        "every node deregistered"
    );
    assert!(
        call("lookup", discovery.lookup(&other_svc))
            .await
            .is_empty(),
        "every node deregistered"
    );
    eventually("the remaining listener sees the removals", || {
        stays.shows(&[])
    })
    .await;
    call("unsubscribe", discovery.unsubscribe(stays_id)).await;
}
