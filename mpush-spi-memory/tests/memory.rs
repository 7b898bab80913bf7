//! Memory-backend specifics: hub isolation, the global hub behind the inventory factories,
//! Redis type errors, delivery isolation and the ephemeral registry.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mpush::MPushConfig;
use mpush::spi::registry::{
    cache_manager_names, create_cache_manager, create_mq_client, create_service_backend,
};
use mpush::spi::{
    CacheManager, MQClient, MQMessageListener, ServiceDiscovery, ServiceListener, ServiceNode,
    ServiceRegistry, SpiError,
};
use mpush_spi_memory::{MemoryCache, MemoryHub, MemoryMQ, MemoryServiceRegistry};
use tokio::time::{Instant, sleep, timeout};

const DEADLINE: Duration = Duration::from_secs(5);
/// How long a test waits to show that something does *not* happen (a message that must not
/// arrive): the absence is the behaviour under test, so there is no event to poll for.
const QUIET: Duration = Duration::from_millis(200);

async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: not observed within {DEADLINE:?}"
        );
        sleep(Duration::from_millis(5)).await;
    }
}

#[derive(Default)]
struct Inbox(Mutex<Vec<String>>);

impl Inbox {
    fn messages(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl MQMessageListener for Inbox {
    fn on_message(&self, _channel: &str, message: &str) {
        self.0.lock().unwrap().push(message.to_string());
    }
}

/// Blocks its delivery thread on the first message until released, counting calls.
#[derive(Default)]
struct Stuck {
    released: AtomicBool,
    calls: AtomicUsize,
}

impl MQMessageListener for Stuck {
    fn on_message(&self, _channel: &str, _message: &str) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        while !self.released.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Releases a [`Stuck`] listener when the test ends, even by a panic: its delivery thread
/// would otherwise spin until the test process exits.
struct Release(Arc<Stuck>);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.released.store(true, Ordering::SeqCst);
    }
}

#[derive(Default)]
struct Watch(Mutex<Vec<(bool, String)>>);

impl ServiceListener for Watch {
    fn on_added(&self, node: &ServiceNode) {
        self.0.lock().unwrap().push((true, node.node_id.clone()));
    }
    fn on_removed(&self, node: &ServiceNode) {
        self.0.lock().unwrap().push((false, node.node_id.clone()));
    }
}

/// A cache on a hub of its own.
fn lone_cache() -> MemoryCache {
    MemoryCache::new(MemoryHub::new())
}

/// Two handles of one backend on one fresh hub, as two nodes of a cluster hold them.
fn two_on_one_hub<T>(new: impl Fn(Arc<MemoryHub>) -> T) -> (T, T) {
    let hub = MemoryHub::new();
    (new(hub.clone()), new(hub))
}

fn node(service: &str, id: &str) -> ServiceNode {
    let mut n = ServiceNode::new(service, "127.0.0.1", 3000);
    n.node_id = id.to_string();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubs_share_nothing() {
    let (one, two) = (MemoryHub::new(), MemoryHub::new());

    let (c1, c2) = (MemoryCache::new(one.clone()), MemoryCache::new(two.clone()));
    c1.set("k", "v", None).await.unwrap();
    c1.hset("h", "f", "v").await.unwrap();
    assert_eq!(c2.get("k").await.unwrap(), None);
    assert!(c2.hgetall("h").await.unwrap().is_empty());
    assert_eq!(c1.get("k").await.unwrap().as_deref(), Some("v"));

    let (m1, m2) = (MemoryMQ::new(one.clone()), MemoryMQ::new(two.clone()));
    let (in1, in2) = (Arc::new(Inbox::default()), Arc::new(Inbox::default()));
    m1.subscribe("ch", in1.clone()).await.unwrap();
    m2.subscribe("ch", in2.clone()).await.unwrap();
    m1.publish("ch", "only-one").await.unwrap();
    eventually("delivery on hub one", || in1.messages() == ["only-one"]).await;
    sleep(QUIET).await;
    assert!(in2.messages().is_empty(), "a message crossed hubs");

    let (r1, r2) = (
        MemoryServiceRegistry::new(one),
        MemoryServiceRegistry::new(two),
    );
    r1.register(&node("/cluster/cs", "n1")).await.unwrap();
    assert_eq!(r1.lookup("/cluster/cs").await.unwrap().len(), 1);
    assert!(r2.lookup("/cluster/cs").await.unwrap().is_empty());
}

fn memory_config() -> Arc<MPushConfig> {
    let mut config = MPushConfig::default();
    config.spi.cache_manager = "memory".to_string();
    config.spi.mq_client = "memory".to_string();
    config.spi.service_registry = "memory".to_string();
    Arc::new(config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inventory_factories_share_the_global_hub() {
    assert!(cache_manager_names().contains(&"memory"));
    let config = memory_config();

    let first = create_cache_manager(config.clone()).await.unwrap();
    let second = create_cache_manager(config.clone()).await.unwrap();
    first.set("inventory-test:k", "shared", None).await.unwrap();
    assert_eq!(
        second.get("inventory-test:k").await.unwrap().as_deref(),
        Some("shared")
    );
    let direct = MemoryCache::new(MemoryHub::global());
    assert_eq!(
        direct.get("inventory-test:k").await.unwrap().as_deref(),
        Some("shared")
    );

    // With no name configured, the only linked backend (priority 0) is still found.
    let unnamed = create_cache_manager(Arc::new(MPushConfig::default()))
        .await
        .unwrap();
    assert_eq!(
        unnamed.get("inventory-test:k").await.unwrap().as_deref(),
        Some("shared")
    );

    let mq_a = create_mq_client(config.clone()).await.unwrap();
    let mq_b = create_mq_client(config.clone()).await.unwrap();
    let inbox = Arc::new(Inbox::default());
    mq_b.subscribe("inventory-test:ch", inbox.clone())
        .await
        .unwrap();
    mq_a.publish("inventory-test:ch", "hi").await.unwrap();
    eventually("delivery between factory-made handles", || {
        inbox.messages() == ["hi"]
    })
    .await;

    let node_a = create_service_backend(config.clone()).await.unwrap();
    let node_b = create_service_backend(config).await.unwrap();
    let n = node("/inventory-test/cs", "n1");
    node_a.registry.register(&n).await.unwrap();
    assert_eq!(
        node_b.discovery.lookup("/inventory-test/cs").await.unwrap(),
        vec![n.clone()]
    );
    node_a.registry.deregister(&n).await.unwrap();
}

#[tokio::test]
async fn wrong_type_is_a_backend_error() {
    let cache = lone_cache();
    cache.set("s", "x", None).await.unwrap();
    cache.zadd("z", "m", 1.0).await.unwrap();
    cache.lpush("l", &["a".to_string()]).await.unwrap();
    let errors = [
        cache.hset("s", "f", "v").await.err(),
        cache.hget("s", "f").await.err(),
        cache.lrange("z", 0, -1).await.err(),
        cache.zcard("l").await.err(),
        cache.get("z").await.err(),
    ];
    for err in errors {
        match err {
            Some(SpiError::Backend {
                backend: "memory",
                message,
                ..
            }) => {
                assert!(message.starts_with("WRONGTYPE"), "{message}");
            }
            other => panic!("expected a WRONGTYPE error, got {other:?}"),
        }
    }
    // `del` and `set` work on any type.
    cache.set("z", "now a string", None).await.unwrap();
    cache.del("l").await.unwrap();
    cache.hset("l", "f", "v").await.unwrap();
}

#[tokio::test]
async fn bad_numbers_are_backend_errors() {
    let cache = lone_cache();
    cache.hset("h", "text", "abc").await.unwrap();
    cache.hset("h", "max", &i64::MAX.to_string()).await.unwrap();
    assert!(matches!(
        cache.hincr_by("h", "text", 1).await,
        Err(SpiError::Backend { .. })
    ));
    assert!(matches!(
        cache.hincr_by("h", "max", 1).await,
        Err(SpiError::Backend { .. })
    ));
    assert_eq!(
        cache.hget("h", "max").await.unwrap(),
        Some(i64::MAX.to_string())
    );
    assert!(matches!(
        cache.zadd("z", "m", f64::NAN).await,
        Err(SpiError::Backend { .. })
    ));
    assert_eq!(
        cache.zcard("z").await.unwrap(),
        0,
        "a failed zadd must not create the key"
    );
    cache.zadd("z", "neg", -0.0).await.unwrap();
    cache.zadd("z", "pos", 0.0).await.unwrap();
    assert_eq!(
        cache.zrange("z", 0, -1).await.unwrap(),
        ["neg", "pos"],
        "-0 and 0 are equal"
    );
}

#[tokio::test]
async fn emptied_collections_disappear() {
    let cache = lone_cache();
    cache.hset("k", "f", "v").await.unwrap();
    cache.hdel("k", "f").await.unwrap();
    // Redis deletes an empty hash, so the key is free for another type.
    cache.zadd("k", "m", 1.0).await.unwrap();
    cache.zrem("k", "m").await.unwrap();
    cache.set("k", "s", None).await.unwrap();
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("s"));
}

#[tokio::test(start_paused = true)]
async fn ttl_follows_the_clock() {
    let cache = lone_cache();
    cache
        .set("k", "v", Some(Duration::from_secs(10)))
        .await
        .unwrap();
    cache.set("zero", "v", Some(Duration::ZERO)).await.unwrap();
    assert_eq!(
        cache.get("zero").await.unwrap(),
        None,
        "a zero TTL expires at once"
    );
    tokio::time::advance(Duration::from_millis(9_999)).await;
    assert_eq!(cache.get("k").await.unwrap().as_deref(), Some("v"));
    tokio::time::advance(Duration::from_millis(1)).await;
    assert_eq!(
        cache.get("k").await.unwrap(),
        None,
        "expired exactly at the TTL"
    );
    cache.set("k", "v", Some(Duration::MAX)).await.unwrap();
    assert_eq!(
        cache.get("k").await.unwrap().as_deref(),
        Some("v"),
        "a huge TTL never expires"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_listener_does_not_block_publish_or_other_subscribers() {
    const CAPACITY: usize = 8;
    let hub = MemoryHub::with_queue_capacity(CAPACITY);
    let mq = MemoryMQ::new(hub);
    let stuck = Arc::new(Stuck::default());
    let _release = Release(stuck.clone());
    let fast = Arc::new(Inbox::default());
    mq.subscribe("ch", stuck.clone()).await.unwrap();
    mq.subscribe("ch", fast.clone()).await.unwrap();
    // Stuck inside its first message before the burst, so exactly CAPACITY more fit its queue.
    mq.publish("ch", "first").await.unwrap();
    eventually("the slow listener is entered", || {
        stuck.calls.load(Ordering::SeqCst) == 1
    })
    .await;

    // A publish that waited for the stuck listener would never finish: the bound only turns
    // that hang into a failure, it is not a speed target.
    let burst = async {
        for i in 0..10_000 {
            mq.publish("ch", &format!("m{i}")).await.unwrap();
        }
    };
    timeout(Duration::from_secs(60), burst)
        .await
        .expect("publish blocked on a slow listener");
    // The burst overflows the fast queue too, so one marker may be dropped: repeat it.
    let deadline = Instant::now() + DEADLINE;
    while !fast.messages().iter().any(|m| m == "marker") {
        assert!(
            Instant::now() < deadline,
            "the fast subscriber stopped receiving"
        );
        mq.publish("ch", "marker").await.unwrap();
        sleep(Duration::from_millis(5)).await;
    }

    stuck.released.store(true, Ordering::SeqCst);
    // The message in the listener plus a full queue; the rest was dropped (and logged).
    eventually("the slow listener drains its queue", || {
        stuck.calls.load(Ordering::SeqCst) == 1 + CAPACITY
    })
    .await;
    sleep(QUIET).await;
    assert_eq!(
        stuck.calls.load(Ordering::SeqCst),
        1 + CAPACITY,
        "more messages than its queue holds reached the slow listener"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_waits_for_a_call_in_progress_and_drops_queued_messages() {
    let mq = Arc::new(MemoryMQ::new(MemoryHub::new()));
    let stuck = Arc::new(Stuck::default());
    let _release = Release(stuck.clone());
    let id = mq.subscribe("ch", stuck.clone()).await.unwrap();
    for i in 0..5 {
        mq.publish("ch", &format!("m{i}")).await.unwrap();
    }
    eventually("the listener is entered", || {
        stuck.calls.load(Ordering::SeqCst) == 1
    })
    .await;

    let unsubscribing = tokio::spawn({
        let mq = mq.clone();
        async move { mq.unsubscribe(id).await }
    });
    // Shows that unsubscribe does *not* return while the call runs: a window, not an event.
    sleep(Duration::from_millis(50)).await;
    assert!(
        !unsubscribing.is_finished(),
        "unsubscribe returned while the listener still ran"
    );
    stuck.released.store(true, Ordering::SeqCst);
    timeout(DEADLINE, unsubscribing)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    sleep(QUIET).await;
    assert_eq!(
        stuck.calls.load(Ordering::SeqCst),
        1,
        "queued messages delivered after unsubscribe"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_listener_keeps_its_subscription() {
    let mq = MemoryMQ::new(MemoryHub::new());
    let inbox = Arc::new(Inbox::default());
    let seen = inbox.clone();
    let listener = move |_: &str, message: &str| {
        assert!(message != "boom", "listener panics on purpose");
        seen.on_message("", message);
    };
    mq.subscribe("ch", Arc::new(listener)).await.unwrap();
    mq.publish("ch", "boom").await.unwrap();
    mq.publish("ch", "after").await.unwrap();
    eventually("delivery continues after a panic", || {
        inbox.messages() == ["after"]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_an_mq_handle_ends_its_subscriptions() {
    let (publisher, node) = two_on_one_hub(MemoryMQ::new);
    let inbox = Arc::new(Inbox::default());
    node.subscribe("ch", inbox.clone()).await.unwrap();
    drop(node);
    publisher.publish("ch", "after-drop").await.unwrap();
    sleep(QUIET).await;
    assert!(inbox.messages().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_sorts_descending_and_nodes_are_ephemeral() {
    let (server, observer) = two_on_one_hub(MemoryServiceRegistry::new);
    let watch = Arc::new(Watch::default());
    observer
        .subscribe("/cluster/gs", watch.clone())
        .await
        .unwrap();
    for id in ["b", "c", "a"] {
        server.register(&node("/cluster/gs", id)).await.unwrap();
    }
    let ids: Vec<String> = observer
        .lookup("/cluster/gs")
        .await
        .unwrap()
        .into_iter()
        .map(|n| n.node_id)
        .collect();
    assert_eq!(ids, ["c", "b", "a"]);

    // The server "dies" without deregistering: its nodes go, as a ZooKeeper session's would.
    drop(server);
    assert!(observer.lookup("/cluster/gs").await.unwrap().is_empty());
    eventually("removals are notified", || {
        watch
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(added, _)| !added)
            .count()
            == 3
    })
    .await;
}

#[tokio::test]
async fn register_rejects_nodes_without_a_path() {
    let reg = MemoryServiceRegistry::new(MemoryHub::new());
    let mut n = node("/cluster/cs", "");
    assert!(matches!(
        reg.register(&n).await,
        Err(SpiError::Backend { .. })
    ));
    n.node_id = "id".to_string();
    n.service_name = String::new();
    assert!(matches!(
        reg.register(&n).await,
        Err(SpiError::Backend { .. })
    ));
}

#[test]
fn queue_capacity_is_at_least_one() {
    assert_eq!(MemoryHub::with_queue_capacity(0).queue_capacity(), 1);
    assert_eq!(
        MemoryHub::new().queue_capacity(),
        mpush_spi_memory::DEFAULT_QUEUE_CAPACITY
    );
}
