//! The CacheManager conformance suite.

use std::collections::HashMap;
use std::sync::Arc;

use std::time::Duration;

use tokio::time::Instant;

use super::{DELIVERY_TIMEOUT, POLL_INTERVAL, call, call_wrong_type, strings};
use crate::spi::{CacheManager, HashCas, SpiResult};

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
    use crate::spi::CasOutcome::{Mismatch, Set};
    let cas = |f: &'static str, exp: Option<&'static str>, v: &'static str| {
        let (cache, h) = (cache.clone(), h.to_string());
        async move {
            let cas = HashCas {
                key: &h,
                field: f,
                expected: exp,
                value: v,
            };
            cache.hcompare_and_set(cas).await
        }
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
                    .hcompare_and_set(HashCas {
                        key: &h,
                        field: "race",
                        expected: None,
                        value: &format!("w{i}"),
                    })
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
                            .hcompare_and_set(HashCas {
                                key: &h,
                                field: "n",
                                expected: cur.as_deref(),
                                value: &next.to_string(),
                            })
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

/// `GET key` (labelled `what`) must return `want`, else the test fails saying `why`.
async fn expect_get(
    cache: &dyn CacheManager,
    what: &str,
    key: &str,
    want: Option<&str>,
    why: &str,
) {
    assert_eq!(call(what, cache.get(key)).await.as_deref(), want, "{why}");
}

async fn cache_strings(cache: &dyn CacheManager, k: &str) {
    assert_eq!(
        call("get missing", cache.get(k)).await,
        None,
        "get of a missing key must be None"
    );
    call("set", cache.set(k, "v1", None)).await;
    expect_get(cache, "get", k, Some("v1"), "get after set").await;
    call("set overwrite", cache.set(k, "v2", None)).await;
    expect_get(cache, "get", k, Some("v2"), "set must overwrite").await;
    // The reusable-session value of spec §5 contains commas, pipes and minus signs.
    let session = "android,8.0,2.0,dev-1,7|-14|5,1|2|3 ünïcødé";
    call("set session-like value", cache.set(k, session, None)).await;
    expect_get(cache, "get", k, Some(session), "value round trip").await;
    call("set empty value", cache.set(k, "", None)).await;
    expect_get(cache, "get", k, Some(""), "empty value is a value").await;
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
    expect_get(
        cache,
        "get before ttl",
        expiring,
        Some("short"),
        "a value must be readable before its TTL",
    )
    .await;
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
    expect_get(
        cache,
        "get after ttl",
        cleared,
        Some("long"),
        "set without ttl must clear the key's previous TTL",
    )
    .await;
    call("set after expiry", cache.set(expiring, "again", None)).await;
    expect_get(
        cache,
        "get",
        expiring,
        Some("again"),
        "an expired key must be writable again",
    )
    .await;
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

/// (start, stop, result) of ZRANGE and LRANGE over the three items [c, b, a]: inclusive,
/// negative indexes from the end, out-of-range ends clamped, an empty range empty.
const RANGES_OVER_CBA: [(i64, i64, &[&str]); 10] = [
    (0, -1, &["c", "b", "a"]),
    (0, 0, &["c"]),
    (1, 1, &["b"]),
    (-1, -1, &["a"]),
    (-2, -1, &["b", "a"]),
    (1, -1, &["b", "a"]),
    (-100, 100, &["c", "b", "a"]),
    (5, 10, &[]),
    (2, 1, &[]),
    (0, -4, &[]),
];

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
    for (start, stop, expected) in RANGES_OVER_CBA {
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
    for (start, stop, expected) in RANGES_OVER_CBA {
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
    expect_get(
        cache,
        "get",
        string_key,
        Some("x"),
        "a failed wrong-type operation must leave the value alone",
    )
    .await;
    call("hset", cache.hset(hash_key, "f", "v")).await;
    call_wrong_type("get on a hash", cache.get(hash_key)).await;
    call_wrong_type("zcard on a hash", cache.zcard(hash_key)).await;
    call("set over a hash", cache.set(hash_key, "now a string", None)).await;
    expect_get(
        cache,
        "get",
        hash_key,
        Some("now a string"),
        "set must replace a key of any type",
    )
    .await;
}

// ---------------------------------------------------------------------------------------
// MQClient
// ---------------------------------------------------------------------------------------
