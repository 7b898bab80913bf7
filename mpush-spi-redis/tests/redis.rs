//! Redis-specific behaviour: dead servers, the MPush wire format, slow listeners, factory
//! registration, and resubscription after a server restart.
//!
//! Uses `MPUSH_TEST_REDIS` / `MPUSH_TEST_REDIS_CLUSTER` (skipping with a message when unset)
//! and, for the restart test, a private `redis-server` it starts and kills itself.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mpush::MPushConfig;
use mpush::spi::{CacheManager, MQClient, SpiError};
use mpush_spi_redis::{RedisCache, RedisMQ, RedisNode, RedisOptions, RedisSettings, Topology};
use redis::AsyncCommands;

/// Longest a call against a dead Redis may take: the operation timeout plus slack.
const DEAD_BOUND: Duration = Duration::from_secs(8);

/// Awaits `fut`, failing the test if it takes longer than `limit`.
async fn within<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, fut).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {limit:?}"),
    }
}

/// Polls `check` every 20 ms until true; fails after `limit`.
async fn eventually(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(
            Instant::now() < deadline,
            "{what}: not observed within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A raw connection (not ours), to check what lands in Redis.
async fn raw(settings: &RedisSettings) -> redis::aio::MultiplexedConnection {
    let node = &settings.nodes[0];
    let client = redis::Client::open(format!("redis://{node}/")).unwrap();
    within(
        Duration::from_secs(5),
        "raw connect",
        client.get_multiplexed_async_connection(),
    )
    .await
    .unwrap()
}

/// The `MPUSH_TEST_REDIS` settings, and a [`raw`] connection to the same server.
async fn single_and_raw() -> (RedisSettings, redis::aio::MultiplexedConnection) {
    let settings = common::single();
    let raw = raw(&settings).await;
    (settings, raw)
}

#[derive(Default)]
struct Inbox(Mutex<Vec<String>>);

impl Inbox {
    fn push(&self, m: &str) {
        self.0.lock().unwrap().push(m.to_string());
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn has(&self, m: &str) -> bool {
        self.0.lock().unwrap().iter().any(|x| x == m)
    }
}

fn listener(inbox: &Arc<Inbox>) -> Arc<dyn mpush::spi::MQMessageListener> {
    let inbox = inbox.clone();
    Arc::new(move |_: &str, m: &str| inbox.push(m))
}

/// A cache connect to a server that cannot answer: it must end by itself within [`DEAD_BOUND`].
async fn connect_cache_within_bound(
    what: &str,
    settings: &RedisSettings,
) -> Result<RedisCache, SpiError> {
    within(DEAD_BOUND, what, RedisCache::connect_with(settings)).await
}

fn assert_unavailable<T: std::fmt::Debug>(what: &str, r: Result<T, SpiError>) {
    match r {
        Err(SpiError::Unavailable { .. }) => {}
        other => panic!("{what}: expected SpiError::Unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_redis_fails_fast_instead_of_hanging() {
    // A port with nothing listening: connection refused on every attempt.
    let dead = RedisNode::new("127.0.0.1", common::free_port());
    for settings in [
        RedisSettings::single(dead.clone()),
        RedisSettings::cluster(vec![dead.clone()]),
    ] {
        let started = Instant::now();
        let r = connect_cache_within_bound("cache connect", &settings).await;
        assert_unavailable("cache connect to a dead redis", r);
        let r = within(DEAD_BOUND, "mq connect", RedisMQ::connect_with(&settings)).await;
        assert_unavailable("mq connect to a dead redis", r);
        println!(
            "{:?}: both failed in {:?}",
            settings.topology,
            started.elapsed()
        );
    }

    // A listener that accepts but never answers: only the timeouts can end the wait.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let node = RedisNode::new("127.0.0.1", silent.local_addr().unwrap().port());
    let settings = RedisSettings::single(node).with_options(RedisOptions {
        operation_timeout: Duration::from_secs(1),
        ..RedisOptions::default()
    });
    let started = Instant::now();
    let r = connect_cache_within_bound("connect to a silent server", &settings).await;
    assert!(
        r.is_err(),
        "a server that never answers must fail the connect"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "bounded by operation_timeout"
    );
}

#[ignore = "needs Redis: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_have_the_exact_mpush_layout() {
    let (settings, mut raw) = single_and_raw().await;
    let cache = RedisCache::connect_with(&settings).await.unwrap();
    let p = common::prefix("layout");

    // User route: hash mp:ur:<user>, field = client type, value = ClientLocation JSON.
    let route_key = format!("{p}mp:ur:user-1");
    let location = r#"{"port":3001,"host":"10.0.0.5","deviceId":"dev-1","osName":"android","clientVersion":"2.0","connId":"a1b2c3d4"}"#;
    cache.hset(&route_key, "1", location).await.unwrap();
    let stored: Option<String> = raw.hget(&route_key, "1").await.unwrap();
    assert_eq!(stored.as_deref(), Some(location));
    let kind: String = redis::cmd("TYPE")
        .arg(&route_key)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(kind, "hash");

    // Reusable session: string mp:rs:<ticket> with the session-expired-time TTL.
    let session_key = format!("{p}mp:rs:0123456789abcdef0123456789abcdef");
    let session = "android,8.0,2.0,dev-1,7|-14|5|1|2|3|4|5|6|7|8|9|10|11|12|13,1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|16";
    cache
        .set(&session_key, session, Some(Duration::from_secs(86400)))
        .await
        .unwrap();
    let stored: Option<String> = raw.get(&session_key).await.unwrap();
    assert_eq!(stored.as_deref(), Some(session));
    let ttl: i64 = raw.ttl(&session_key).await.unwrap();
    assert!(
        (86390..=86400).contains(&ttl),
        "TTL {ttl} must be about 86400"
    );

    // Online users: sorted set mp:oul:<ip>, score 0.
    let online_key = format!("{p}mp:oul:10.0.0.5");
    cache.zadd(&online_key, "user-1", 0.0).await.unwrap();
    let score: Option<f64> = raw.zscore(&online_key, "user-1").await.unwrap();
    assert_eq!(score, Some(0.0));

    // Broadcast progress (no colon after mp:pt) and success list (<taskId>:sui, no prefix).
    let task_key = format!("{p}mp:pt42");
    assert_eq!(cache.hincr_by(&task_key, "sc", 3).await.unwrap(), 3);
    let sent: Option<String> = raw.hget(&task_key, "sc").await.unwrap();
    assert_eq!(sent.as_deref(), Some("3"));
    let list_key = format!("{p}42:sui");
    cache
        .lpush(&list_key, &["u1".to_string(), "u2".to_string()])
        .await
        .unwrap();
    let list: Vec<String> = raw.lrange(&list_key, 0, -1).await.unwrap();
    assert_eq!(list, ["u2", "u1"]);

    // The other direction: what a Java node writes, we read.
    let _: () = raw.hset(&route_key, "2", "from-java").await.unwrap();
    let _: () = raw.hset(&task_key, "q", "100").await.unwrap();
    let all = cache.hgetall(&route_key).await.unwrap();
    let expected: HashMap<String, String> = [("1", location), ("2", "from-java")]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert_eq!(all, expected);
    assert_eq!(
        cache.hget(&task_key, "q").await.unwrap().as_deref(),
        Some("100")
    );

    // A plain set clears the TTL (as Redis SET does).
    cache.set(&session_key, session, None).await.unwrap();
    let ttl: i64 = raw.ttl(&session_key).await.unwrap();
    assert_eq!(ttl, -1);

    for k in [&route_key, &session_key, &online_key, &task_key, &list_key] {
        cache.del(k).await.unwrap();
    }
}

#[ignore = "needs Redis: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_have_the_mpush_format_both_ways() {
    let (settings, mut raw) = single_and_raw().await;
    let mq = RedisMQ::connect_with(&settings).await.unwrap();
    let channel = format!("{}/mpush/online/", common::prefix("mq-format"));
    let inbox = Arc::new(Inbox::default());
    let id = mq.subscribe(&channel, listener(&inbox)).await.unwrap();

    // A Java node publishes the bare userId.
    let receivers: i64 = raw.publish(&channel, "user-7").await.unwrap();
    assert_eq!(
        receivers, 1,
        "one Redis subscription per channel and connection"
    );
    eventually(
        Duration::from_secs(5),
        "message from a raw publisher",
        || inbox.has("user-7"),
    )
    .await;

    // And a raw subscriber sees our publish unchanged.
    let client = redis::Client::open(format!("redis://{}/", settings.nodes[0])).unwrap();
    let mut sub = client.get_async_pubsub().await.unwrap();
    sub.subscribe(&channel).await.unwrap();
    mq.publish(&channel, "user-8").await.unwrap();
    let mut stream = sub.on_message();
    let msg = within(
        Duration::from_secs(5),
        "raw subscriber",
        futures_next(&mut stream),
    )
    .await;
    assert_eq!(msg.get_payload::<String>().unwrap(), "user-8");
    drop(stream);

    // The last listener leaving unsubscribes the connection on Redis.
    mq.unsubscribe(id).await.unwrap();
    let numsub: Vec<(String, i64)> = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(&channel)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(numsub[0].1, 1, "only the raw subscriber is left");
}

async fn futures_next<S: futures::Stream + Unpin>(s: &mut S) -> S::Item {
    use futures::StreamExt;
    s.next().await.unwrap()
}

#[ignore = "needs Redis: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_listener_does_not_block_the_others() {
    let settings = common::single();
    let settings = settings.with_options(RedisOptions {
        queue_capacity: 4,
        ..RedisOptions::default()
    });
    let mq = RedisMQ::connect_with(&settings).await.unwrap();
    let channel = format!("{}slow", common::prefix("mq-slow"));

    // The slow listener blocks in its first call until released.
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let slow_count = Arc::new(Mutex::new(0usize));
    let slow_seen = slow_count.clone();
    let slow = mq
        .subscribe(
            &channel,
            Arc::new(move |_: &str, _: &str| {
                *slow_seen.lock().unwrap() += 1;
                let _ = release_rx
                    .lock()
                    .unwrap()
                    .recv_timeout(Duration::from_secs(10));
            }),
        )
        .await
        .unwrap();
    let fast = Arc::new(Inbox::default());
    let fast_id = mq.subscribe(&channel, listener(&fast)).await.unwrap();

    // Paced so the fast listener's queue of 4 never fills even on a loaded machine: the
    // point is that the *blocked* listener does not hold the fast one back.
    for i in 0..50 {
        mq.publish(&channel, &format!("m{i}")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eventually(
        Duration::from_secs(5),
        "the fast listener gets all 50",
        || fast.has("m49"),
    )
    .await;
    let expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
    assert_eq!(fast.all(), expected, "in order, none dropped");

    // The slow one is stuck in call 1 with a full queue of 4: the rest was dropped.
    // The dispatcher offered every message to both queues before the fast one saw m49, so
    // nothing more is on its way to the slow one.
    release_tx.send(()).unwrap();
    drop(release_tx);
    eventually(
        Duration::from_secs(5),
        "the slow listener drains its queue",
        || *slow_count.lock().unwrap() >= 5,
    )
    .await;
    let slow_total = *slow_count.lock().unwrap();
    assert_eq!(slow_total, 5, "slow listener: 1 call + a queue of 4");

    mq.unsubscribe(slow).await.unwrap();
    mq.unsubscribe(fast_id).await.unwrap();
}

#[ignore = "needs Redis: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factories_are_registered_and_read_mp_redis() {
    let names = mpush::spi::registry::cache_manager_names();
    assert!(names.contains(&"redis"), "registered: {names:?}");
    let settings = common::single();
    let mut config = MPushConfig::default();
    config.redis.nodes = vec![settings.nodes[0].to_string()];
    // No name configured: the highest priority wins, which is redis (10) here.
    let config = Arc::new(config);
    let cache = within(
        Duration::from_secs(5),
        "factory",
        mpush::spi::registry::create_cache_manager(config.clone()),
    )
    .await
    .unwrap();
    let key = format!("{}factory", common::prefix("factory"));
    cache
        .set(&key, "v", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(cache.get(&key).await.unwrap().as_deref(), Some("v"));
    cache.del(&key).await.unwrap();
    let mq = within(
        Duration::from_secs(5),
        "factory",
        mpush::spi::registry::create_mq_client(config),
    )
    .await
    .unwrap();
    mq.publish(&key, "nobody listens").await.unwrap();

    let settings = RedisSettings::from_config(&mpush::config::RedisConfig {
        cluster_model: "cluster".into(),
        nodes: vec!["127.0.0.1:7000:pw".into()],
        password: String::new(),
    })
    .unwrap();
    assert_eq!(settings.topology, Topology::Cluster);
}

#[ignore = "needs redis-server: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_a_redis_restart() {
    // The backend's warnings (connection lost / restored) show in the output of a failure.
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("mpush_spi_redis=debug")
        .try_init();
    let mut server = common::OwnRedis::start();
    let test = async {
        let settings = server.settings();
        let mq = RedisMQ::connect_with(&settings).await.unwrap();
        let cache = RedisCache::connect_with(&settings).await.unwrap();
        let channel = "/mpush/kick/127.0.0.1:3001";
        let inbox = Arc::new(Inbox::default());
        let _id = mq.subscribe(channel, listener(&inbox)).await.unwrap();
        mq.publish(channel, "before").await.unwrap();
        eventually(Duration::from_secs(3), "message before the restart", || {
            inbox.has("before")
        })
        .await;

        server.kill();
        // While Redis is down, calls report Unavailable promptly instead of hanging.
        let started = Instant::now();
        assert_unavailable(
            "publish to a dead redis",
            within(DEAD_BOUND, "publish", mq.publish(channel, "lost")).await,
        );
        assert_unavailable(
            "get from a dead redis",
            within(DEAD_BOUND, "get", cache.get("k")).await,
        );
        println!("dead redis reported in {:?}", started.elapsed());

        // Stay down longer than one reconnect round of the library (3 quick retries), so the
        // backend's own recovery loop has to start new rounds.
        tokio::time::sleep(Duration::from_secs(3)).await;
        server.restart();
        let restarted = Instant::now();
        // Resubscription is visible on the server itself, without publishing blind.
        let mut raw = raw(&settings).await;
        let deadline = Instant::now() + Duration::from_secs(12);
        loop {
            let numsub: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(channel)
                .query_async(&mut raw)
                .await
                .unwrap();
            if numsub[0].1 == 1 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "not resubscribed within 12 s of the restart"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!("resubscribed {:?} after the restart", restarted.elapsed());
        let _: i64 = raw.publish(channel, "after").await.unwrap();
        eventually(Duration::from_secs(3), "message after the restart", || {
            inbox.has("after")
        })
        .await;
        // Our own handles work again too.
        within(
            Duration::from_secs(5),
            "publish after restart",
            mq.publish(channel, "after-own"),
        )
        .await
        .unwrap();
        eventually(
            Duration::from_secs(3),
            "own publish after the restart",
            || inbox.has("after-own"),
        )
        .await;
        assert_eq!(
            within(Duration::from_secs(5), "get", cache.get("k"))
                .await
                .unwrap(),
            None
        );
        assert!(!inbox.has("lost"));
    };
    within(Duration::from_secs(30), "restart test", test).await;
}

/// A key watch whose connection Redis drops reports `lost`, turns tracking on again by
/// itself, reports `watching`, and from then on reports changes again.
#[ignore = "needs Redis: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_watch_comes_back_after_its_connection_is_killed() {
    let (settings, mut raw) = single_and_raw().await;
    let cache = RedisCache::connect_with(&settings).await.unwrap();
    let prefix = common::prefix("watch-kill");
    let watch = Arc::new(mpush::spi::conformance::RecordingWatch::default());
    let id = cache.watch_prefix(&prefix, watch.clone()).await.unwrap();
    assert!(id.is_some(), "a single Redis must support key watches");
    let before = format!("{prefix}before");
    cache.set(&before, "1", None).await.unwrap();
    within(
        DEAD_BOUND,
        "first change",
        mpush::spi::conformance::wait_changed(&watch, &before),
    )
    .await;

    // Broadcast-tracking connections (flag B) are the key watches; this test binary has no
    // other one running.
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut raw)
        .await
        .unwrap();
    let ids: Vec<String> = list
        .lines()
        .filter(|l| {
            l.split(' ')
                .any(|f| f.starts_with("flags=") && f.contains('B'))
        })
        .filter_map(|l| {
            l.split(' ')
                .find_map(|f| f.strip_prefix("id="))
                .map(str::to_string)
        })
        .collect();
    assert!(
        !ids.is_empty(),
        "no tracking connection in CLIENT LIST:\n{list}"
    );
    for id in &ids {
        let _: i64 = redis::cmd("CLIENT")
            .arg("KILL")
            .arg("ID")
            .arg(id)
            .query_async(&mut raw)
            .await
            .unwrap();
    }

    eventually(DEAD_BOUND, "lost, then watching again", || {
        let (lost, watching) = watch.transitions();
        lost >= 1 && watching >= 2 && watch.is_watching()
    })
    .await;
    let after = format!("{prefix}after");
    cache.set(&after, "1", None).await.unwrap();
    within(
        DEAD_BOUND,
        "change after the reconnect",
        mpush::spi::conformance::wait_changed(&watch, &after),
    )
    .await;
    cache.unwatch(id.unwrap()).await.unwrap();
    for k in [before, after] {
        cache.del(&k).await.unwrap();
    }
}
