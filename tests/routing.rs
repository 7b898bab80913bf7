//! Cluster routing correctness end to end (issue 7): one device per (user, client type), no
//! stale or lost routes, replies that never wait on backends. Black box: in-process clusters
//! of two or more nodes over real sockets, devices on the Rust client SDK, pushes through
//! `PushSender`, routes read straight from the cache (`mp:ur:<userId>`, spec §10).
//!
//! Every scenario is written once, generic over a [`Backend`] fixture, and runs on the memory
//! backend and on real Redis (single) + ZooKeeper. The Redis + ZooKeeper variants are
//! `#[ignore]`d (run them with `scripts/test-all.sh`, or `--include-ignored` with
//! `MPUSH_TEST_REDIS` / `MPUSH_TEST_ZK` set) and panic when those variables are missing.
//! The fault-injection scenarios (stall, outage), the cache-loss scenarios and the killed
//! node are Redis + ZooKeeper only. The fault-proxy self-tests need no backend.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::fault_proxy::FaultProxy;
use common::{WAIT, test_config};
use mpush::client::{Client, ClientConfig, ClientError, Event, ReconnectPolicy};
use mpush::protocol::message::{ErrorCode, GatewayPush};
use mpush::push::AckModel;
use mpush::router::ClientLocation;
use mpush::sender::gateway::{GatewayClient, GatewayReply};
use mpush::sender::{PushContext, PushResult, PushSender, ResultCode};
use mpush::spi::{CacheManager, ClientClassifier, ClientType, DefaultClientClassifier};
use mpush::{MPushConfig, MPushServer, RunningServer};
use mpush_spi_memory::{MemoryCache, MemoryHub, MemoryMQ, MemoryServiceRegistry};
use mpush_spi_redis::{RedisCache, RedisMQ, RedisNode, RedisOptions, RedisSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
// Link the ZooKeeper backend so its inventory registration exists.
use mpush_spi_zk as _;

/// Upper bound of one whole scenario.
const SCENARIO_LIMIT: Duration = Duration::from_secs(90);
/// How often conditions are polled.
const POLL: Duration = Duration::from_millis(50);
/// Item 6: all live routes are back within this long after Redis answers again.
const CACHE_LOSS_BOUND: Duration = Duration::from_secs(30);
/// Item 4: a handshake during a backend stall answers well under this (a behavioural bound,
/// not a performance target: the stall lasts seconds).
const HANDSHAKE_BOUND: Duration = Duration::from_secs(1);
/// The Redis command bound of the nodes behind the fault proxy (`RedisOptions`; there is no
/// `mp.redis.*` key for it).
const REDIS_OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// FAST_CONNECT waits for the reusable session at most 1 s (then answers SESSION_EXPIRED).
const FAST_CONNECT_BOUND: Duration = Duration::from_millis(1500);
/// Item 4: a bind whose route write succeeds answers OK well under this, whatever the MQ does
/// (behavioural bound: the MQ stall lasts longer).
const BIND_OK_BOUND: Duration = Duration::from_secs(1);
/// The Java client's timeout per connection step (handshake, bind).
const JAVA_STEP_TIMEOUT: Duration = Duration::from_secs(3);
/// Item 4/5: a bind during a stall or outage fails with ERROR before the Java client gives up.
const BIND_FAIL_BOUND: Duration = JAVA_STEP_TIMEOUT;
/// Item 8: after a node left the registry its users answer OFFLINE and its routes are
/// marked offline within this.
const DEAD_NODE_BOUND: Duration = Duration::from_secs(15);
/// The online set of every node here (`mp:oul:<public-ip>`, public ip 127.0.0.1).
const ONLINE_SET: &str = "mp:oul:127.0.0.1";

// ------------------------------------------------------------------------------------------
// Small helpers

/// Runs a scenario under the overall bound.
async fn within<F: Future<Output = ()>>(what: &str, f: F) {
    tokio::time::timeout(SCENARIO_LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: scenario exceeded {SCENARIO_LIMIT:?}"));
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Unique ids per test run, so runs sharing one Redis never see each other's users.
fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// The client type the default classifier gives the SDK's default os ("android").
fn mobile() -> ClientType {
    DefaultClientClassifier.classify(Some("android"))
}

/// Collects failed expectations so one run reports every broken requirement at once.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }

    fn assert_none(self, scenario: &str) {
        assert!(
            self.0.is_empty(),
            "{scenario}: {} requirement(s) failed:\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

/// The user's routes, read straight from the cache.
async fn routes(cache: &dyn CacheManager, user: &str) -> HashMap<ClientType, ClientLocation> {
    cache
        .hgetall(&format!("mp:ur:{user}"))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, ClientLocation::from_json(&v)?)))
        .collect()
}

/// The user's mobile route, read straight from the cache.
async fn route(cache: &dyn CacheManager, user: &str) -> Option<ClientLocation> {
    routes(cache, user).await.remove(&mobile())
}

/// Pushes `content` to `user` and returns the results.
async fn push(sender: &PushSender, user: &str, content: &str, ack: AckModel) -> Vec<PushResult> {
    sender
        .send(
            PushContext::to_user(user, Bytes::copy_from_slice(content.as_bytes()))
                .ack(ack)
                .timeout(Duration::from_secs(3)),
        )
        .await
}

fn codes(results: &[PushResult]) -> Vec<ResultCode> {
    results.iter().map(|r| r.code).collect()
}

/// Waits until `sender` lists `n` gateways (discovery is eventually consistent on ZooKeeper).
async fn wait_gateways(sender: &PushSender, n: usize) {
    let ok = eventually(WAIT, || async { sender.gateways().len() == n }).await;
    assert!(
        ok,
        "sender lists {:?}, expected {n} gateways",
        sender.gateways()
    );
}

/// One GATEWAY_PUSH straight to a node's gateway, as a (Java) SDK with a cached route does.
async fn gateway_push(gateway: SocketAddr, user: &str, content: &str) -> GatewayReply {
    gateway_push_with(gateway, user, content, AckModel::AutoAck).await
}

/// [`gateway_push`] with the given ACK model.
async fn gateway_push_with(
    gateway: SocketAddr,
    user: &str,
    content: &str,
    ack: AckModel,
) -> GatewayReply {
    let gw = GatewayClient::connect(&gateway.to_string(), None)
        .await
        .unwrap();
    let msg = GatewayPush {
        user_id: Some(user.to_string()),
        client_type: mobile().code(),
        timeout: 2500,
        content: Some(content.as_bytes().to_vec()),
        task_id: None,
        tags: None,
        condition: None,
    };
    let reply = gw
        .request(
            ack.flags(),
            &msg,
            tokio::time::Instant::now() + Duration::from_secs(3),
        )
        .await;
    gw.close();
    reply
}

fn is_error(reply: &GatewayReply, code: ErrorCode) -> bool {
    matches!(reply, GatewayReply::Error(e) if e.code == code.code())
}

// ------------------------------------------------------------------------------------------
// Devices (the Rust client SDK)

/// A device: an SDK client whose events are recorded in order.
struct Device {
    client: Client,
    device_id: String,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Device {
    /// Connects (full handshake) and, with `user`, binds it. Never reconnects by itself: a
    /// test moves devices explicitly.
    async fn connect(
        addr: SocketAddr,
        device_id: &str,
        user: Option<&str>,
    ) -> Result<Device, ClientError> {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let mut config = ClientConfig::new(addr.to_string(), device_id)
            .with_reconnect(ReconnectPolicy::disabled())
            .on_event(move |e| sink.lock().unwrap().push(e));
        // Long enough that a slow server shows up as its own answer (or a measured delay),
        // not as a client-side timeout.
        config.request_timeout = Duration::from_secs(10);
        if let Some(u) = user {
            config = config.with_user(u, None);
        }
        let (client, _no_stream) = Client::connect(config).await?;
        Ok(Device {
            client,
            device_id: device_id.to_string(),
            events,
        })
    }

    async fn bound(addr: SocketAddr, device_id: &str, user: &str) -> Device {
        Device::connect(addr, device_id, Some(user))
            .await
            .unwrap_or_else(|e| panic!("{device_id} cannot connect and bind {user}: {e}"))
    }

    fn kicked(&self) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Kicked { .. }))
    }

    /// Contents of the pushes received so far.
    fn pushes(&self) -> Vec<Bytes> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match e {
                Event::Push { content, .. } => Some(content.clone()),
                _ => None,
            })
            .collect()
    }

    fn count(&self, content: &str) -> usize {
        self.pushes()
            .iter()
            .filter(|c| &c[..] == content.as_bytes())
            .count()
    }

    async fn wait_push(&self, content: &str, limit: Duration) -> bool {
        eventually(limit, || async { self.count(content) > 0 }).await
    }

    /// A round trip on this connection (an AUTO_ACK upstream push answered by the server):
    /// everything the server queued for this device before it returns has been received.
    /// A connection the server has closed is a barrier too: nothing more can arrive on it
    /// (devices here never reconnect by themselves).
    async fn barrier(&self) {
        match self
            .client
            .push_upstream(&b"barrier"[..], AckModel::AutoAck)
            .await
        {
            Ok(())
            | Err(ClientError::NotConnected | ClientError::ConnectionLost | ClientError::Closed) => {
            }
            Err(e) => panic!("{}: barrier round trip failed: {e}", self.device_id),
        }
    }
}

// ------------------------------------------------------------------------------------------
// Backend fixtures

/// A started node of the cluster under test.
struct Node {
    server: RunningServer,
    addr: SocketAddr,
}

impl Node {
    fn gateway(&self) -> SocketAddr {
        self.server.gateway_addr()
    }

    /// The id of the connection of `device` bound to `user` on this node, if any.
    async fn conn_id(&self, user: &str, device: &str) -> Option<String> {
        self.server
            .local_sessions(user)
            .into_iter()
            .find(|s| s.device_id.as_deref() == Some(device))
            .map(|s| s.conn_id)
    }
}

/// What a scenario needs from a backend: nodes, a sender, and direct cache access.
trait Backend {
    /// Fixture name for messages.
    fn name(&self) -> &'static str;
    /// Starts a node.
    async fn node(&self) -> Node;
    /// Starts a sender on the same backends.
    async fn sender(&self) -> PushSender;
    /// The cache, read directly (not through any fault proxy).
    fn cache(&self) -> &dyn CacheManager;
}

/// The embedded memory backend: one hub shared by every node of the test.
struct Memory {
    hub: Arc<MemoryHub>,
    cache: MemoryCache,
}

impl Memory {
    fn new() -> Self {
        let hub = MemoryHub::new();
        let cache = MemoryCache::new(hub.clone());
        Self { hub, cache }
    }
}

impl Backend for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn node(&self) -> Node {
        let registry = Arc::new(MemoryServiceRegistry::new(self.hub.clone()));
        let server = MPushServer::builder()
            .config(test_config())
            .cache_manager(Arc::new(MemoryCache::new(self.hub.clone())))
            .mq_client(Arc::new(MemoryMQ::new(self.hub.clone())))
            .service_registry(registry.clone(), registry)
            .start()
            .await
            .unwrap();
        let addr = server.connect_addr();
        Node { server, addr }
    }

    async fn sender(&self) -> PushSender {
        PushSender::builder()
            .config(test_config())
            .cache_manager(Arc::new(MemoryCache::new(self.hub.clone())))
            .discovery(Arc::new(MemoryServiceRegistry::new(self.hub.clone())))
            .start()
            .await
            .unwrap()
    }

    fn cache(&self) -> &dyn CacheManager {
        &self.cache
    }
}

/// Serialises the scenarios that wipe Redis (FLUSHALL) against every other Redis scenario of
/// this binary; test binaries themselves run one after another.
static REDIS_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

enum RedisGuard {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, ()>),
}

/// Real Redis (single) + ZooKeeper from `MPUSH_TEST_REDIS` / `MPUSH_TEST_ZK`, a ZooKeeper
/// namespace of its own.
struct Redis {
    redis: SocketAddr,
    zk: String,
    namespace: String,
    cache: RedisCache,
    _guard: RedisGuard,
}

fn required_env(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set: this test needs Redis + ZooKeeper; run scripts/test-all.sh \
                 (or `source scripts/services.sh && services_start DIR`, then \
                 `cargo test --test routing -- --include-ignored`)"
            )
        })
}

impl Redis {
    /// Runs alongside the other Redis scenarios.
    async fn new() -> Self {
        Self::with_guard(RedisGuard::Shared(REDIS_LOCK.read().await)).await
    }

    /// Runs alone among the Redis scenarios (it flushes Redis).
    async fn exclusive() -> Self {
        Self::with_guard(RedisGuard::Exclusive(REDIS_LOCK.write().await)).await
    }

    async fn with_guard(guard: RedisGuard) -> Self {
        let redis_env = required_env("MPUSH_TEST_REDIS");
        let zk = required_env("MPUSH_TEST_ZK");
        let redis: SocketAddr = redis_env
            .parse()
            .unwrap_or_else(|_| panic!("MPUSH_TEST_REDIS={redis_env:?} is not host:port"));
        let cache = RedisCache::connect_with(&RedisSettings::single(RedisNode::new(
            redis.ip().to_string(),
            redis.port(),
        )))
        .await
        .unwrap();
        Self {
            redis,
            zk,
            namespace: format!("mpush-routing-{}", run_id()),
            cache,
            _guard: guard,
        }
    }

    /// Nodes and senders read everything from config: Redis cache + MQ, ZooKeeper registry.
    fn config(&self) -> MPushConfig {
        let mut c = test_config();
        c.spi.cache_manager = "redis".into();
        c.spi.mq_client = "redis".into();
        c.spi.service_registry = "zk".into();
        c.redis.cluster_model = "single".into();
        c.redis.nodes = vec![self.redis.to_string()];
        c.zk.server_address = self.zk.clone();
        c.zk.namespace = self.namespace.clone();
        c
    }

    /// Redis settings for `addr` with the short timeouts of the fault scenarios.
    fn settings_via(addr: SocketAddr) -> RedisSettings {
        let options = RedisOptions {
            connect_timeout: Duration::from_secs(1),
            response_timeout: REDIS_OPERATION_TIMEOUT,
            operation_timeout: REDIS_OPERATION_TIMEOUT,
            ..RedisOptions::default()
        };
        RedisSettings::single(RedisNode::new(addr.ip().to_string(), addr.port()))
            .with_options(options)
    }

    /// A node whose Redis (cache and MQ) is reached through `proxy`; ZooKeeper directly.
    async fn node_via(&self, proxy: &FaultProxy) -> Node {
        self.node_split(proxy.addr(), proxy.addr()).await
    }

    /// A node whose Redis cache is at `cache_addr` and Redis MQ at `mq_addr` (the real Redis
    /// or a proxy in front of it), with the short timeouts; ZooKeeper directly.
    async fn node_split(&self, cache_addr: SocketAddr, mq_addr: SocketAddr) -> Node {
        let cache = RedisCache::connect_with(&Self::settings_via(cache_addr))
            .await
            .unwrap();
        let mq = RedisMQ::connect_with(&Self::settings_via(mq_addr))
            .await
            .unwrap();
        let server = MPushServer::builder()
            .config(self.config())
            .cache_manager(Arc::new(cache))
            .mq_client(Arc::new(mq))
            .start()
            .await
            .unwrap();
        let addr = server.connect_addr();
        Node { server, addr }
    }

    /// A sender whose route reads go through `proxy`.
    async fn sender_via(&self, proxy: &FaultProxy) -> PushSender {
        let cache = RedisCache::connect_with(&Self::settings_via(proxy.addr()))
            .await
            .unwrap();
        PushSender::builder()
            .config(self.config())
            .cache_manager(Arc::new(cache))
            .start()
            .await
            .unwrap()
    }

    /// Sends one command to the real Redis (not through any proxy); returns the first line.
    async fn command(&self, args: &[&str]) -> String {
        let mut s = TcpStream::connect(self.redis).await.unwrap();
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        s.write_all(req.as_bytes()).await.unwrap();
        let mut line = Vec::new();
        tokio::time::timeout(WAIT, async {
            let mut b = [0u8; 1];
            while !line.ends_with(b"\r\n") {
                if s.read(&mut b).await.unwrap() == 0 {
                    break;
                }
                line.push(b[0]);
            }
        })
        .await
        .expect("redis did not answer");
        String::from_utf8_lossy(&line).trim_end().to_string()
    }
}

impl Backend for Redis {
    fn name(&self) -> &'static str {
        "redis+zk"
    }

    async fn node(&self) -> Node {
        let server = MPushServer::builder()
            .config(self.config())
            .start()
            .await
            .unwrap();
        let addr = server.connect_addr();
        Node { server, addr }
    }

    async fn sender(&self) -> PushSender {
        PushSender::builder()
            .config(self.config())
            .start()
            .await
            .unwrap()
    }

    fn cache(&self) -> &dyn CacheManager {
        &self.cache
    }
}

async fn stop_all(sender: PushSender, nodes: Vec<Node>) {
    sender.stop().await;
    for n in nodes {
        n.server.shutdown().await;
    }
}

/// Runs a scenario on the memory backend and on Redis + ZooKeeper.
macro_rules! on_both_backends {
    ($scenario:ident) => {
        mod $scenario {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                let fx = Memory::new();
                within(stringify!($scenario), super::$scenario(&fx)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs Redis + ZooKeeper: run scripts/test-all.sh"]
            async fn redis_zk() {
                let fx = Redis::new().await;
                within(stringify!($scenario), super::$scenario(&fx)).await;
            }
        }
    };
}

// ------------------------------------------------------------------------------------------
// Item 1: OFFLINE is never cached.

on_both_backends!(offline_then_bind_then_push_succeeds);

async fn offline_then_bind_then_push_succeeds<B: Backend>(fx: &B) {
    let (a, b) = (fx.node().await, fx.node().await);
    let sender = fx.sender().await;
    wait_gateways(&sender, 2).await;
    let user = format!("late-{}", run_id());
    let mut f = Failures::default();

    // Never bound: OFFLINE. Then the user binds: the next push must find it.
    let r = push(&sender, &user, "before-bind", AckModel::NoAck).await;
    assert_eq!(codes(&r), [ResultCode::Offline], "never-bound user");
    let phone = Device::bound(b.addr, "late-phone", &user).await;
    let r = push(&sender, &user, "after-bind", AckModel::AutoAck).await;
    f.check(codes(&r) == [ResultCode::Success], || {
        format!(
            "push after bind answered {:?}, expected [Success]: the sender cached the empty \
             route set of the OFFLINE answer (item 1)",
            codes(&r)
        )
    });
    f.check(
        phone.wait_push("after-bind", Duration::from_secs(2)).await,
        || "the bound device did not receive the push after bind".into(),
    );

    // Offline-only route set: the device goes, OFFLINE; it comes back on the other node.
    phone.client.close().await;
    let gone = eventually(WAIT, || async {
        route(fx.cache(), &user)
            .await
            .is_some_and(|l| !l.is_online())
    })
    .await;
    assert!(gone, "route not marked offline after disconnect");
    let r = push(&sender, &user, "while-offline", AckModel::NoAck).await;
    assert_eq!(codes(&r), [ResultCode::Offline], "disconnected user");
    let phone = Device::bound(a.addr, "late-phone", &user).await;
    let r = push(&sender, &user, "after-rebind", AckModel::AutoAck).await;
    f.check(codes(&r) == [ResultCode::Success], || {
        format!(
            "push after re-bind answered {:?}, expected [Success]: the sender cached the \
             offline-only route set (item 1)",
            codes(&r)
        )
    });
    f.check(
        phone
            .wait_push("after-rebind", Duration::from_secs(2))
            .await,
        || "the re-bound device did not receive the push".into(),
    );
    phone.client.close().await;
    stop_all(sender, vec![a, b]).await;
    f.assert_none(fx.name());
}

// ------------------------------------------------------------------------------------------
// Item 2: a displaced device is never served again.

on_both_backends!(displaced_device_gets_no_unicast_and_no_broadcast);

async fn displaced_device_gets_no_unicast_and_no_broadcast<B: Backend>(fx: &B) {
    let (a, b) = (fx.node().await, fx.node().await);
    let sender = fx.sender().await;
    wait_gateways(&sender, 2).await;
    let run = run_id();
    let mover = format!("mover-{run}");
    let local = format!("local-{run}");
    let mut f = Failures::default();

    // Cross-node displacement, with the sender's route cache warm on node A (the Java SDK
    // caches routes for 5 minutes too).
    let old = Device::bound(a.addr, "old-phone", &mover).await;
    let r = push(&sender, &mover, "warm", AckModel::AutoAck).await;
    assert_eq!(codes(&r), [ResultCode::Success], "warm-up push");
    assert!(
        old.wait_push("warm", WAIT).await,
        "warm-up push not delivered"
    );
    let new = Device::bound(b.addr, "new-phone", &mover).await;
    assert!(
        eventually(WAIT, || async { old.kicked() }).await,
        "the displaced device never got KICK"
    );
    let b_conn = b.conn_id(&mover, "new-phone").await;
    let r = route(fx.cache(), &mover).await;
    assert!(
        r.as_ref()
            .is_some_and(|l| l.is_online() && l.conn_id == b_conn),
        "route after the move should name node B's connection {b_conn:?}: {r:?}"
    );

    // Same-node displacement on node A.
    let old_local = Device::bound(a.addr, "old-tablet", &local).await;
    let new_local = Device::bound(a.addr, "new-tablet", &local).await;
    assert!(
        eventually(WAIT, || async { old_local.kicked() }).await,
        "the locally displaced device never got KICK"
    );

    // Unicast through the stale sender cache: A must answer ROUTER_CHANGE, the SDK
    // re-routes, the new phone gets it and the old one does not.
    let r = push(&sender, &mover, "after-move", AckModel::AutoAck).await;
    f.check(codes(&r) == [ResultCode::Success], || {
        format!("push after the move answered {:?}", codes(&r))
    });
    old.barrier().await;
    f.check(old.count("after-move") == 0, || {
        "the displaced (old) phone received a unicast push after the move: node A served \
         its stale local route (item 2)"
            .into()
    });
    f.check(
        new.wait_push("after-move", Duration::from_secs(2)).await,
        || {
            "the new phone did not receive the push sent after the move (the SDK was not \
         re-routed)"
                .into()
        },
    );
    let r = push(&sender, &local, "local-after", AckModel::AutoAck).await;
    f.check(codes(&r) == [ResultCode::Success], || {
        format!("push to the locally moved user answered {:?}", codes(&r))
    });
    old_local.barrier().await;
    f.check(old_local.count("local-after") == 0, || {
        "the locally displaced tablet received a unicast push".into()
    });
    f.check(
        new_local
            .wait_push("local-after", Duration::from_secs(2))
            .await,
        || "the new tablet did not receive its push".into(),
    );

    // A GATEWAY_PUSH reaching the old node answers ROUTER_CHANGE.
    let reply = gateway_push(a.gateway(), &mover, "direct-to-old-node").await;
    f.check(is_error(&reply, ErrorCode::RouterChange), || {
        format!(
            "GATEWAY_PUSH for the displaced user to the old node answered {reply:?}, \
             expected ERROR ROUTER_CHANGE (item 2)"
        )
    });
    old.barrier().await;
    f.check(old.count("direct-to-old-node") == 0, || {
        "the old phone received the GATEWAY_PUSH sent to its old node".into()
    });

    // Broadcast: the displaced devices are excluded, the new ones get it once.
    let results = sender.send(PushContext::broadcast(&b"bcast"[..])).await;
    f.check(
        results.len() == 2 && results.iter().all(|r| r.code == ResultCode::Success),
        || format!("broadcast results {results:?}"),
    );
    for d in [&old, &new, &old_local, &new_local] {
        d.barrier().await;
    }
    f.check(old.count("bcast") == 0, || {
        "the displaced (old) phone received the broadcast (item 2)".into()
    });
    f.check(old_local.count("bcast") == 0, || {
        "the locally displaced tablet received the broadcast".into()
    });
    f.check(new.count("bcast") == 1, || {
        format!(
            "the new phone received the broadcast {} times",
            new.count("bcast")
        )
    });
    f.check(new_local.count("bcast") == 1, || {
        format!(
            "the new tablet received the broadcast {} times",
            new_local.count("bcast")
        )
    });
    for d in [old, new, old_local, new_local] {
        d.client.close().await;
    }
    stop_all(sender, vec![a, b]).await;
    f.assert_none(fx.name());
}

// ------------------------------------------------------------------------------------------
// Item 3: route writes are atomic.

/// Users racing in the simultaneous-bind scenario.
const RACING_USERS: usize = 100;

on_both_backends!(simultaneous_binds_on_two_nodes_have_one_winner);

async fn simultaneous_binds_on_two_nodes_have_one_winner<B: Backend>(fx: &B) {
    let nodes = [fx.node().await, fx.node().await];
    let sender = fx.sender().await;
    wait_gateways(&sender, 2).await;
    let run = run_id();
    let users: Vec<String> = (0..RACING_USERS)
        .map(|i| format!("race-{run}-{i}"))
        .collect();
    // Two devices per user, one on each node, same client type, connected but not bound.
    let pairs: Vec<[Device; 2]> = futures::future::join_all(users.iter().map(|u| {
        let (a, b) = (nodes[0].addr, nodes[1].addr);
        async move {
            let da = Device::connect(a, &format!("{u}-a"), None).await.unwrap();
            let db = Device::connect(b, &format!("{u}-b"), None).await.unwrap();
            [da, db]
        }
    }))
    .await;

    // Every bind of every user leaves in the same poll: the two binds of a user reach their
    // nodes at the same instant.
    let binds = futures::future::join_all(pairs.iter().zip(&users).map(|(p, u)| async move {
        let (ra, rb) = tokio::join!(
            p[0].client.bind(u, None, None),
            p[1].client.bind(u, None, None)
        );
        [ra.is_ok(), rb.is_ok()]
    }))
    .await;
    let no_bind: Vec<&String> = users
        .iter()
        .zip(&binds)
        .filter(|(_, b)| !b[0] && !b[1])
        .map(|(u, _)| u)
        .collect();
    assert!(no_bind.is_empty(), "both binds failed for {no_bind:?}");

    // Settled: the route is online and exactly one bound device of the user is not kicked.
    let winner = |i: usize| -> Option<usize> {
        let alive: Vec<usize> = (0..2)
            .filter(|&k| binds[i][k] && !pairs[i][k].kicked())
            .collect();
        (alive.len() == 1).then(|| alive[0])
    };
    let settled = |i: usize| {
        let user = users[i].clone();
        async move {
            winner(i).is_some()
                && route(fx.cache(), &user)
                    .await
                    .is_some_and(|l| l.is_online())
        }
    };
    let ok = eventually(Duration::from_secs(20), || async {
        for i in 0..RACING_USERS {
            if !settled(i).await {
                return false;
            }
        }
        true
    })
    .await;
    if !ok {
        let mut bad = Vec::new();
        for i in 0..RACING_USERS {
            if !settled(i).await {
                bad.push(format!(
                    "{}: binds ok={:?} kicked=[{}, {}] route={:?}",
                    users[i],
                    binds[i],
                    pairs[i][0].kicked(),
                    pairs[i][1].kicked(),
                    route(fx.cache(), &users[i]).await
                ));
            }
        }
        panic!(
            "{}: {} of {RACING_USERS} users never settled to exactly one bound, unkicked \
             device with an online route (item 3); first ones:\n  {}",
            fx.name(),
            bad.len(),
            bad.iter().take(5).cloned().collect::<Vec<_>>().join("\n  ")
        );
    }

    let mut f = Failures::default();
    for i in 0..RACING_USERS {
        let w = winner(i).unwrap();
        let dev = &pairs[i][w];
        let conn = nodes[w].conn_id(&users[i], &dev.device_id).await;
        let r = route(fx.cache(), &users[i]).await.unwrap();
        f.check(
            r.device_id.as_deref() == Some(dev.device_id.as_str()) && r.conn_id == conn,
            || {
                format!(
                    "{}: route names {:?}/{:?}, the unkicked device is {} conn {conn:?}",
                    users[i], r.device_id, r.conn_id, dev.device_id
                )
            },
        );
    }
    let results = sender
        .send(
            PushContext::to_users(users.clone(), &b"after-race"[..])
                .ack(AckModel::AutoAck)
                .timeout(Duration::from_secs(5)),
        )
        .await;
    let bad: Vec<_> = results
        .iter()
        .filter(|r| r.code != ResultCode::Success)
        .map(|r| (r.user_id.clone(), r.code))
        .collect();
    f.check(bad.is_empty(), || {
        format!(
            "pushes after the race not SUCCESS: {} e.g. {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        )
    });
    for (i, p) in pairs.iter().enumerate() {
        let w = winner(i).unwrap();
        for (k, d) in p.iter().enumerate() {
            if binds[i][k] {
                d.barrier().await;
            }
        }
        f.check(p[w].count("after-race") == 1, || {
            format!(
                "{}: the winner got the push {} times",
                users[i],
                p[w].count("after-race")
            )
        });
        f.check(p[1 - w].count("after-race") == 0, || {
            format!("{}: the kicked device got the push", users[i])
        });
    }
    for p in pairs {
        for d in p {
            d.client.close().await;
        }
    }
    let [a, b] = nodes;
    stop_all(sender, vec![a, b]).await;
    f.assert_none(fx.name());
}

/// Users racing a disconnect on A against a bind on B.
const DISCONNECT_RACES: usize = 50;

on_both_backends!(disconnect_on_a_racing_bind_on_b_keeps_bs_route);

async fn disconnect_on_a_racing_bind_on_b_keeps_bs_route<B: Backend>(fx: &B) {
    let (a, b) = (fx.node().await, fx.node().await);
    let sender = fx.sender().await;
    wait_gateways(&sender, 2).await;
    let run = run_id();
    let users: Vec<String> = (0..DISCONNECT_RACES)
        .map(|i| format!("dr-{run}-{i}"))
        .collect();
    let devices: Vec<(Device, Device)> = futures::future::join_all(users.iter().map(|u| {
        let (aa, ba) = (a.addr, b.addr);
        async move {
            let on_a = Device::bound(aa, &format!("{u}-old"), u).await;
            let on_b = Device::connect(ba, &format!("{u}-new"), None)
                .await
                .unwrap();
            (on_a, on_b)
        }
    }))
    .await;

    // The old device disconnects from A while the new one binds on B, at the same instant.
    let binds = futures::future::join_all(devices.iter().zip(&users).map(
        |((old, new), u)| async move {
            let ((), bind) = tokio::join!(old.client.close(), new.client.bind(u, None, None));
            bind
        },
    ))
    .await;
    for (u, r) in users.iter().zip(&binds) {
        assert!(r.is_ok(), "{u}: bind on B failed: {r:?}");
    }
    // A has cleaned up the old connections.
    let cleaned = eventually(WAIT, || async {
        for u in &users {
            if !a.server.local_sessions(u).is_empty() {
                return false;
            }
        }
        true
    })
    .await;
    assert!(cleaned, "node A kept routes of closed connections");

    let mut bad = Vec::new();
    for (u, (_, new)) in users.iter().zip(&devices) {
        let conn = b.conn_id(u, &new.device_id).await;
        let r = route(fx.cache(), u).await;
        let ok = r
            .as_ref()
            .is_some_and(|l| l.is_online() && l.conn_id == conn && conn.is_some());
        if !ok {
            bad.push(format!("{u}: route {r:?}, B's connection {conn:?}"));
        }
    }
    let mut f = Failures::default();
    f.check(bad.is_empty(), || {
        format!(
            "{} of {DISCONNECT_RACES} routes do not name B's live connection after a \
             disconnect on A raced the bind on B (item 3); e.g.\n    {}",
            bad.len(),
            bad.iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n    ")
        )
    });
    let results = sender
        .send(
            PushContext::to_users(users.clone(), &b"after-disconnect-race"[..])
                .ack(AckModel::AutoAck)
                .timeout(Duration::from_secs(5)),
        )
        .await;
    let not_ok = results
        .iter()
        .filter(|r| r.code != ResultCode::Success)
        .count();
    f.check(not_ok == 0, || {
        format!("{not_ok} of {DISCONNECT_RACES} pushes to the users now on B were not SUCCESS")
    });
    for (_, new) in devices {
        new.client.close().await;
    }
    stop_all(sender, vec![a, b]).await;
    f.assert_none(fx.name());
}

// ------------------------------------------------------------------------------------------
// Items 4 and 5: a Redis stall and a Redis outage (Redis + ZooKeeper only: the fault proxy
// sits in front of Redis).

/// Connects `n` new devices at once and returns each one's connect time (handshake only).
async fn timed_handshakes(addr: SocketAddr, prefix: &str, n: usize) -> Vec<Duration> {
    futures::future::join_all((0..n).map(|i| async move {
        let t = Instant::now();
        let d = Device::connect(addr, &format!("{prefix}-{i}"), None)
            .await
            .unwrap_or_else(|e| panic!("handshake {prefix}-{i} failed: {e}"));
        let took = t.elapsed();
        d.client.close().await;
        took
    }))
    .await
}

/// A bind on a fresh device: how it ended and how long it took.
async fn timed_bind(
    addr: SocketAddr,
    device: &str,
    user: &str,
) -> (Result<(), ClientError>, Duration) {
    let d = Device::connect(addr, device, None).await.unwrap();
    let t = Instant::now();
    let r = d.client.bind(user, None, None).await;
    let took = t.elapsed();
    d.client.close().await;
    (r, took)
}

/// Binds fresh devices until one succeeds (the backend just recovered); the time it took.
async fn bind_after_recovery(
    addr: SocketAddr,
    device: &str,
    user: &str,
) -> Option<(Device, Duration)> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        match Device::connect(addr, device, Some(user)).await {
            Ok(d) => return Some((d, t.elapsed())),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis + ZooKeeper: run scripts/test-all.sh"]
async fn redis_stall_handshakes_answer_binds_fail_fast_then_recover() {
    let fx = Redis::new().await;
    within("redis stall", async {
        let proxy = FaultProxy::start(fx.redis).await.unwrap();
        let node = fx.node_via(&proxy).await;
        let sender = fx.sender().await;
        wait_gateways(&sender, 1).await;
        let run = run_id();
        let mut f = Failures::default();
        // A device that handshook before the stall, for a fast reconnect during it.
        let fc_device = format!("stall-{run}-fc");
        let mut raw = common::RawClient::connect(node.addr).await;
        let ticket = raw.handshake(&fc_device, "android").await.session_id.unwrap();
        drop(raw);
        let session_key = mpush::protocol::session::session_cache_key(&ticket);
        let stored = eventually(WAIT, || async {
            matches!(fx.cache().get(&session_key).await, Ok(Some(_)))
        })
        .await;
        assert!(stored, "the reusable session was never stored");

        proxy.pause();
        let stalled_at = Instant::now();
        // FAST_CONNECT needs the stored session: it waits for it at most FAST_CONNECT_BOUND and
        // then answers SESSION_EXPIRED, and the client's full handshake on the same
        // connection needs no backend.
        let mut raw = common::RawClient::connect(node.addr).await;
        let req = mpush::protocol::message::FastConnectRequest {
            session_id: Some(ticket.clone()),
            device_id: Some(fc_device.clone()),
            min_heartbeat: 0,
            max_heartbeat: 30_000,
        };
        let t = Instant::now();
        raw.send(&mpush::protocol::packet::Packet::with_body(
            mpush::protocol::Command::FastConnect,
            9,
            mpush::protocol::message::Message::encode(&req),
        ))
        .await;
        let reply = raw.recv_packet().await;
        let took = t.elapsed();
        let expired = reply.as_ref().is_some_and(|p| {
            p.cmd == mpush::protocol::Command::Error
                && <mpush::protocol::message::ErrorMessage as mpush::protocol::message::Message>::decode(&p.body)
                    .is_ok_and(|e| e.code == ErrorCode::SessionExpired.code())
        });
        f.check(expired && took < FAST_CONNECT_BOUND, || {
            format!(
                "FAST_CONNECT during a stall answered {reply:?} after {took:?}; expected                  SESSION_EXPIRED within {FAST_CONNECT_BOUND:?} (item 4)"
            )
        });
        let t = Instant::now();
        raw.handshake(&fc_device, "android").await;
        f.check(t.elapsed() < HANDSHAKE_BOUND, || {
            format!("the fallback handshake took {:?} (< {HANDSHAKE_BOUND:?})", t.elapsed())
        });
        drop(raw);
        let first = timed_handshakes(node.addr, &format!("stall-{run}-a"), 5).await;
        f.check(first.iter().all(|t| *t < HANDSHAKE_BOUND), || {
            format!(
                "handshakes at the start of a Redis stall took {first:?}; HandshakeOk must not \
                 wait for the backend (< {HANDSHAKE_BOUND:?}, item 4)"
            )
        });
        let (bind, took) = timed_bind(node.addr, &format!("stall-{run}-bind"), &format!("stall-{run}-u1")).await;
        f.check(
            matches!(bind, Err(ClientError::Rejected { .. })) && took < BIND_FAIL_BOUND,
            || {
                format!(
                    "a bind during the stall ended with {bind:?} after {took:?}; expected ERROR \
                     within {BIND_FAIL_BOUND:?} (item 4)"
                )
            },
        );
        // The stall outlasts the Java client's 3 s step timeout. This wait sets the length of
        // the fault; it synchronises nothing.
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            stalled_at + JAVA_STEP_TIMEOUT + Duration::from_millis(500),
        ))
        .await;
        let later = timed_handshakes(node.addr, &format!("stall-{run}-b"), 5).await;
        f.check(later.iter().all(|t| *t < HANDSHAKE_BOUND), || {
            format!(
                "handshakes {:?} into the Redis stall took {later:?} (< {HANDSHAKE_BOUND:?}, item 4)",
                stalled_at.elapsed()
            )
        });
        let stall = stalled_at.elapsed();
        assert!(
            proxy.mode() == common::fault_proxy::Mode::Paused,
            "the stall must last through the checks"
        );

        proxy.resume();
        let user = format!("stall-{run}-u2");
        match bind_after_recovery(node.addr, &format!("stall-{run}-after"), &user).await {
            Some((d, took)) => {
                let r = push(&sender, &user, "after-stall", AckModel::AutoAck).await;
                f.check(codes(&r) == [ResultCode::Success], || {
                    format!("push after the stall answered {:?}", codes(&r))
                });
                f.check(d.wait_push("after-stall", Duration::from_secs(2)).await, || {
                    "push after the stall not delivered".into()
                });
                eprintln!("stall lasted {stall:?}; bind succeeded {took:?} after resume");
                d.client.close().await;
            }
            None => f.0.push("no bind succeeded within 15 s after the stall ended".into()),
        }
        stop_all(sender, vec![node]).await;
        f.assert_none("redis stall");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis + ZooKeeper: run scripts/test-all.sh"]
async fn redis_outage_pushes_fail_not_offline_binds_fail_fast_then_recover() {
    let fx = Redis::new().await;
    within("redis outage", async {
        let proxy = FaultProxy::start(fx.redis).await.unwrap();
        let node = fx.node_via(&proxy).await;
        let run = run_id();
        let user = format!("outage-{run}");
        let phone = Device::bound(node.addr, &format!("outage-{run}-phone"), &user).await;
        // This sender has never looked the user up: it must read the route from Redis, through
        // the proxy, during the outage.
        let cold = fx.sender_via(&proxy).await;
        wait_gateways(&cold, 1).await;
        let mut f = Failures::default();

        proxy.refuse();
        let handshakes = timed_handshakes(node.addr, &format!("outage-{run}-hs"), 3).await;
        f.check(handshakes.iter().all(|t| *t < HANDSHAKE_BOUND), || {
            format!("handshakes during the Redis outage took {handshakes:?} (< {HANDSHAKE_BOUND:?}, item 4)")
        });
        let (bind, took) = timed_bind(node.addr, &format!("outage-{run}-bind"), &format!("outage-{run}-u1")).await;
        f.check(
            matches!(bind, Err(ClientError::Rejected { .. })) && took < BIND_FAIL_BOUND,
            || {
                format!(
                    "a bind during the outage ended with {bind:?} after {took:?}; expected \
                     ERROR within {BIND_FAIL_BOUND:?}"
                )
            },
        );
        let r = push(&cold, &user, "during-outage", AckModel::NoAck).await;
        f.check(
            codes(&r) == [ResultCode::Failure] && r[0].error.as_deref().is_some_and(|e| !e.is_empty()),
            || {
                format!(
                    "PushSender answered {r:?} for a bound user while Redis is down; expected \
                     FAILURE with a reason, never OFFLINE (item 5)"
                )
            },
        );
        // The gateway side: a GATEWAY_PUSH for a user with no route on this node cannot be
        // told offline without the cache.
        let reply = gateway_push(node.gateway(), &format!("outage-{run}-elsewhere"), "gw-during-outage").await;
        let failure_with_reason = matches!(&reply, GatewayReply::Error(e)
            if e.code != ErrorCode::Offline.code()
                && e.code != ErrorCode::RouterChange.code()
                && e.reason.as_deref().is_some_and(|s| !s.is_empty()));
        f.check(failure_with_reason, || {
            format!(
                "GATEWAY_PUSH during the outage answered {reply:?}; expected an ERROR that is \
                 neither OFFLINE nor ROUTER_CHANGE, with a reason (item 5)"
            )
        });

        proxy.resume();
        let user2 = format!("outage-{run}-u2");
        match bind_after_recovery(node.addr, &format!("outage-{run}-after"), &user2).await {
            Some((d, _)) => {
                // The sender's own Redis connection reconnects by itself: give it a bound.
                let t = Instant::now();
                let last = Mutex::new(Vec::new());
                let ok = eventually(Duration::from_secs(10), || async {
                    let c = codes(&push(&cold, &user2, "after-outage", AckModel::AutoAck).await);
                    let ok = c == [ResultCode::Success];
                    *last.lock().unwrap() = c;
                    ok
                })
                .await;
                f.check(ok, || {
                    format!(
                        "push after the outage still answered {:?} {:?} later",
                        last.lock().unwrap(),
                        t.elapsed()
                    )
                });
                d.client.close().await;
            }
            None => f.0.push("no bind succeeded within 15 s after the outage ended".into()),
        }
        phone.client.close().await;
        stop_all(cold, vec![node]).await;
        f.assert_none("redis outage");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis + ZooKeeper: run scripts/test-all.sh"]
async fn redis_mq_stall_does_not_delay_bind_ok() {
    let fx = Redis::new().await;
    within("redis mq stall", async {
        // Only the MQ (online event) is stalled; the cache, where the route goes, answers.
        let proxy = FaultProxy::start(fx.redis).await.unwrap();
        let node = fx.node_split(fx.redis, proxy.addr()).await;
        let run = run_id();
        let user = format!("mqstall-{run}");
        proxy.pause();
        let d = Device::connect(node.addr, &format!("{user}-phone"), None)
            .await
            .unwrap();
        let t = Instant::now();
        let r = d.client.bind(&user, None, None).await;
        let took = t.elapsed();
        let mut f = Failures::default();
        f.check(r.is_ok() && took < BIND_OK_BOUND, || {
            format!(
                "bind with the MQ stalled ended {r:?} after {took:?}; bind OK must wait only \
                 for the route write, the online event goes after the reply (< {BIND_OK_BOUND:?}, \
                 item 4)"
            )
        });
        let conn = node.conn_id(&user, &d.device_id).await;
        let written = route(fx.cache(), &user).await;
        f.check(
            written
                .as_ref()
                .is_some_and(|l| l.is_online() && l.conn_id == conn),
            || format!("route after the bind: {written:?}, connection {conn:?}"),
        );
        proxy.resume();
        d.client.close().await;
        node.server.shutdown().await;
        f.assert_none("redis mq stall");
    })
    .await;
}

// ------------------------------------------------------------------------------------------
// Item 6: routes survive the loss of the cache (Redis + ZooKeeper only).

/// How the cache is lost.
#[derive(Debug, Clone, Copy)]
enum Loss {
    /// A restart without persistence: connections drop, Redis comes back empty.
    Restart,
    /// FLUSHALL while connected.
    Flush,
}

async fn routes_come_back_after(loss: Loss) {
    let fx = &Redis::exclusive().await;
    let proxy = FaultProxy::start(fx.redis).await.unwrap();
    let nodes = [fx.node_via(&proxy).await, fx.node_via(&proxy).await];
    let run = run_id();
    let mut live = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for i in 0..10 {
            let user = format!("loss-{run}-{n}-{i}");
            let device = format!("{user}-phone");
            live.push((
                n,
                user.clone(),
                Device::bound(node.addr, &device, &user).await,
            ));
        }
    }
    // A live route: online and naming the device's connection on its node.
    let intact = |n: usize, user: String, device: String| {
        let node = &nodes[n];
        async move {
            let conn = node.conn_id(&user, &device).await;
            route(fx.cache(), &user)
                .await
                .is_some_and(|l| l.is_online() && conn.is_some() && l.conn_id == conn)
        }
    };
    for (n, u, d) in &live {
        assert!(
            intact(*n, u.clone(), d.device_id.clone()).await,
            "{u}: no route before the loss"
        );
    }

    if let Loss::Restart = loss {
        proxy.refuse();
    }
    assert_eq!(fx.command(&["FLUSHALL"]).await, "+OK");
    assert!(
        routes(fx.cache(), &live[0].1).await.is_empty(),
        "FLUSHALL left routes"
    );
    proxy.resume();
    let answering_again = Instant::now();

    let all_back = eventually(CACHE_LOSS_BOUND, || async {
        let online = fx
            .cache()
            .zrange(ONLINE_SET, 0, -1)
            .await
            .unwrap_or_default();
        for (n, u, d) in &live {
            if !online.contains(u) || !intact(*n, u.clone(), d.device_id.clone()).await {
                return false;
            }
        }
        true
    })
    .await;
    if !all_back {
        let online = fx
            .cache()
            .zrange(ONLINE_SET, 0, -1)
            .await
            .unwrap_or_default();
        let mut missing_routes = 0;
        let mut missing_online = 0;
        for (n, u, d) in &live {
            missing_routes += usize::from(!intact(*n, u.clone(), d.device_id.clone()).await);
            missing_online += usize::from(!online.contains(u));
        }
        panic!(
            "{loss:?}: {missing_routes} of {} live routes and {missing_online} online-set entries \
             not re-asserted within {CACHE_LOSS_BOUND:?} of Redis answering again (item 6)",
            live.len()
        );
    }
    eprintln!(
        "{loss:?}: routes back after {:?}",
        answering_again.elapsed()
    );
    let sender = fx.sender().await;
    wait_gateways(&sender, 2).await;
    for (_, u, d) in &live {
        let r = push(&sender, u, "after-loss", AckModel::AutoAck).await;
        assert_eq!(
            codes(&r),
            [ResultCode::Success],
            "{u}: push after the cache came back"
        );
        assert!(
            d.wait_push("after-loss", WAIT).await,
            "{u}: push not delivered"
        );
    }
    for (_, _, d) in live {
        d.client.close().await;
    }
    sender.stop().await;
    for n in nodes {
        n.server.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis + ZooKeeper: run scripts/test-all.sh"]
async fn routes_come_back_after_a_redis_restart_without_persistence() {
    within("redis restart", routes_come_back_after(Loss::Restart)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis + ZooKeeper: run scripts/test-all.sh"]
async fn routes_come_back_after_flushall() {
    within("redis flushall", routes_come_back_after(Loss::Flush)).await;
}

// ------------------------------------------------------------------------------------------
// Item 8: a dead node's users are OFFLINE and its routes are cleaned (Redis + ZooKeeper
// only). The memory backend lives inside one process, so a node cannot be killed without
// taking the backend with it: there is no memory variant of this scenario.

/// A node running as its own OS process (the `launcher` example), killable with SIGKILL.
struct Launched {
    child: tokio::process::Child,
    addr: SocketAddr,
    gateway: SocketAddr,
    /// Config and log; removed when the scenario passes, kept for a look when it fails.
    dir: std::path::PathBuf,
    log: std::path::PathBuf,
}

/// The `launcher` example next to this test binary (`target/<profile>/examples/launcher`).
fn launcher_path() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/routing-<hash> → target/<profile>/examples/launcher
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary is not under target/<profile>/deps");
    let path = profile_dir
        .join("examples")
        .join(format!("launcher{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} not found: `cargo test` (without --test filters) builds it, or run \
         `cargo build --example launcher`",
        path.display()
    );
    path
}

async fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

impl Launched {
    async fn start(fx: &Redis, zk_session_timeout: Duration) -> Self {
        let (port, gateway_port) = (free_port().await, free_port().await);
        let dir = std::env::temp_dir().join(format!("mpush-routing-{}", run_id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("node.conf");
        let log = dir.join("node.log");
        std::fs::write(
            &conf,
            format!(
                r#"mp {{
  spi {{ cache-manager = redis, mq-client = redis, service-registry = zk }}
  core {{ min-heartbeat = 1s, max-heartbeat = 60s }}
  net {{
    connect-server-bind-ip = "127.0.0.1"
    connect-server-port = {port}
    gateway-server-bind-ip = "127.0.0.1"
    gateway-server-port = {gateway_port}
    local-ip = "127.0.0.1"
    public-ip = "127.0.0.1"
    admin-server-port = 0
  }}
  redis {{ cluster-model = single, nodes = ["{redis}"] }}
  zk {{ server-address = "{zk}", namespace = "{ns}", sessionTimeoutMs = {timeout} }}
}}
"#,
                redis = fx.redis,
                zk = fx.zk,
                ns = fx.namespace,
                timeout = zk_session_timeout.as_millis()
            ),
        )
        .unwrap();
        // Fail here, with the parser's message, rather than as a process that never listens.
        MPushConfig::from_file(&conf).unwrap_or_else(|e| panic!("launcher config: {e}"));
        let out = std::fs::File::create(&log).unwrap();
        let child = tokio::process::Command::new(launcher_path())
            .arg("--config")
            .arg(&conf)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut me = Self {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            gateway: SocketAddr::from(([127, 0, 0, 1], gateway_port)),
            dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(me.addr).await.is_err() {
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("launcher exited with {status}; log: {}", me.log.display());
            }
            assert!(
                Instant::now() < deadline,
                "launcher not listening on {} after 20 s; log: {}",
                me.addr,
                me.log.display()
            );
            tokio::time::sleep(POLL).await;
        }
        me
    }

    /// SIGKILL: no `stop()`, no deregistration, no route cleanup.
    async fn kill_9(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis + ZooKeeper: run scripts/test-all.sh"]
async fn killed_node_users_answer_offline_and_its_routes_are_cleaned() {
    let fx = Redis::new().await;
    within("killed node", async {
        // ZooKeeper's minimum session timeout is 2 ticks (4 s with the test server's 2 s tick).
        let mut a = Launched::start(&fx, Duration::from_secs(4)).await;
        let b = fx.node().await;
        let sender = fx.sender().await;
        wait_gateways(&sender, 2).await;
        let run = run_id();
        let users: Vec<String> = (0..20).map(|i| format!("dead-{run}-{i}")).collect();
        let mut on_a = Vec::new();
        for u in &users {
            on_a.push(Device::bound(a.addr, &format!("{u}-phone"), u).await);
        }
        let r = push(&sender, &users[1], "warm", AckModel::AutoAck).await;
        assert_eq!(
            codes(&r),
            [ResultCode::Success],
            "push to a user on the launched node"
        );

        a.kill_9().await;
        drop(on_a);
        // One device reconnects to B at once, before A's ZooKeeper session expires.
        let mover = &users[0];
        let moved = Device::bound(b.addr, &format!("{mover}-phone"), mover).await;
        let moved_conn = b.conn_id(mover, &moved.device_id).await;
        assert!(moved_conn.is_some(), "the moved device is not bound on B");

        let gone = eventually(Duration::from_secs(30), || async {
            sender.gateways().len() == 1
        })
        .await;
        assert!(
            gone,
            "the killed node never left the registry: {:?} (log {})",
            sender.gateways(),
            a.log.display()
        );
        let left = Instant::now();
        let dead_users = &users[1..];
        let mut f = Failures::default();

        // Pushes to its users answer OFFLINE within seconds, through the SDK and through a
        // surviving node's gateway.
        let sdk_offline = eventually(DEAD_NODE_BOUND, || async {
            for u in dead_users {
                if codes(&push(&sender, u, "to-dead", AckModel::NoAck).await)
                    != [ResultCode::Offline]
                {
                    return false;
                }
            }
            true
        })
        .await;
        let last = push(&sender, &dead_users[0], "to-dead", AckModel::NoAck).await;
        f.check(sdk_offline, || {
            format!(
                "pushes to users of the dead node did not all answer OFFLINE within \
                 {DEAD_NODE_BOUND:?} of it leaving the registry; e.g. {last:?} (item 8)"
            )
        });
        let gw_b = b.gateway();
        let gw_offline = eventually(DEAD_NODE_BOUND.saturating_sub(left.elapsed()), || async {
            is_error(
                &gateway_push(gw_b, &dead_users[0], "gw-to-dead").await,
                ErrorCode::Offline,
            )
        })
        .await;
        let reply = gateway_push(gw_b, &dead_users[0], "gw-to-dead").await;
        f.check(gw_offline, || {
            format!(
                "GATEWAY_PUSH to a surviving node for a user of the dead node answers {reply:?}; \
                 expected ERROR OFFLINE (item 8)"
            )
        });

        // A surviving node marks the dead node's routes offline, on the exact connId.
        let cleaned = eventually(DEAD_NODE_BOUND.saturating_sub(left.elapsed()), || async {
            for u in dead_users {
                if route(fx.cache(), u).await.is_none_or(|l| l.is_online()) {
                    return false;
                }
            }
            true
        })
        .await;
        let mut still_online = 0;
        for u in dead_users {
            still_online += usize::from(route(fx.cache(), u).await.is_none_or(|l| l.is_online()));
        }
        f.check(cleaned, || {
            format!(
                "{still_online} of {} routes naming the dead node still online {:?} after it \
                 left the registry (item 8)",
                dead_users.len(),
                left.elapsed()
            )
        });
        for u in dead_users {
            let r = route(fx.cache(), u).await;
            f.check(
                r.as_ref()
                    .is_none_or(|l| l.port == i32::from(a.gateway.port())),
                || format!("{u}: route {r:?} no longer names the dead node"),
            );
        }

        // The device that reconnected elsewhere is untouched.
        let r = route(fx.cache(), mover).await;
        f.check(
            r.as_ref()
                .is_some_and(|l| l.is_online() && l.conn_id == moved_conn),
            || {
                format!(
                    "the moved device's route was changed: {r:?}, its connection is {moved_conn:?}"
                )
            },
        );
        let res = push(&sender, mover, "to-moved", AckModel::AutoAck).await;
        f.check(codes(&res) == [ResultCode::Success], || {
            format!(
                "push to the device that moved to B answered {:?}",
                codes(&res)
            )
        });
        f.check(
            moved.wait_push("to-moved", Duration::from_secs(2)).await,
            || "the device that moved to B did not receive its push".into(),
        );
        moved.client.close().await;
        stop_all(sender, vec![b]).await;
        f.assert_none(&format!("killed node (its log: {})", a.log.display()));
        let _ = std::fs::remove_dir_all(&a.dir);
    })
    .await;
}

// ------------------------------------------------------------------------------------------
// The fault proxy itself (no backend needed).

/// An echo server on a free port; serves until the test's runtime ends.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1024];
                while let Ok(n @ 1..) = s.read(&mut b).await {
                    if s.write_all(&b[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Reads exactly `want.len()` bytes within `limit`; `None` on timeout, EOF or error.
async fn read_within(s: &mut TcpStream, len: usize, limit: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    match tokio::time::timeout(limit, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

/// `true` once the peer closed the connection (EOF or reset) within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn fault_proxy_forwards_pauses_drops_refuses_and_resumes() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    c.write_all(b"one").await.unwrap();
    assert_eq!(
        read_within(&mut c, 3, WAIT).await.as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(proxy.connections(), 1);

    // Paused: the socket stays open, the bytes wait (an absence, checked over a short window).
    proxy.pause();
    c.write_all(b"two").await.unwrap();
    assert_eq!(
        read_within(&mut c, 3, Duration::from_millis(300)).await,
        None
    );
    let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
    during.write_all(b"new").await.unwrap();
    proxy.resume();
    assert_eq!(
        read_within(&mut c, 3, WAIT).await.as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(
        read_within(&mut during, 3, WAIT).await.as_deref(),
        Some(&b"new"[..])
    );

    // drop_all closes what is open; new connections still work.
    proxy.drop_all();
    assert!(
        closed_within(&mut c, WAIT).await,
        "drop_all left a connection open"
    );
    assert!(closed_within(&mut during, WAIT).await);
    let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
    after.write_all(b"3").await.unwrap();
    assert_eq!(
        read_within(&mut after, 1, WAIT).await.as_deref(),
        Some(&b"3"[..])
    );

    // refuse: open ones closed, new ones closed at once; resume brings service back.
    proxy.refuse();
    assert!(closed_within(&mut after, WAIT).await);
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(
        closed_within(&mut refused, WAIT).await,
        "refuse accepted a connection"
    );
    proxy.resume();
    let mut back = TcpStream::connect(proxy.addr()).await.unwrap();
    back.write_all(b"4").await.unwrap();
    assert_eq!(
        read_within(&mut back, 1, WAIT).await.as_deref(),
        Some(&b"4"[..])
    );
    assert!(
        eventually(WAIT, || async { proxy.connections() == 1 }).await,
        "closed connections still counted: {}",
        proxy.connections()
    );
}

#[tokio::test]
async fn fault_proxy_ends_every_task_when_dropped() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let addr = proxy.addr();
    let mut open = TcpStream::connect(addr).await.unwrap();
    open.write_all(b"x").await.unwrap();
    assert_eq!(
        read_within(&mut open, 1, WAIT).await.as_deref(),
        Some(&b"x"[..])
    );
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    proxy.pause();
    drop(proxy);
    assert!(
        closed_within(&mut open, WAIT).await,
        "connection outlived the proxy"
    );
    assert!(
        closed_within(&mut stalled, WAIT).await,
        "paused connection outlived the proxy"
    );
    // The accept task is gone with its listener.
    assert!(
        eventually(WAIT, || async { TcpStream::connect(addr).await.is_err() }).await,
        "the proxy still accepts after being dropped"
    );
}

// ------------------------------------------------------------------------------------------
// Item 7: a kick that is lost on the way

/// An MQ that loses every kick request it is asked to publish (as pub/sub may, or a dropped
/// UDP datagram), and passes everything else to the memory MQ.
struct LosesKicks(MemoryMQ);

#[async_trait::async_trait]
impl mpush::spi::MQClient for LosesKicks {
    async fn subscribe(
        &self,
        channel: &str,
        listener: Arc<dyn mpush::spi::MQMessageListener>,
    ) -> mpush::spi::SpiResult<mpush::spi::SubscriptionId> {
        self.0.subscribe(channel, listener).await
    }

    async fn unsubscribe(&self, id: mpush::spi::SubscriptionId) -> mpush::spi::SpiResult<()> {
        self.0.unsubscribe(id).await
    }

    async fn publish(&self, channel: &str, message: &str) -> mpush::spi::SpiResult<()> {
        if channel.starts_with("/mpush/kick/") {
            return Ok(());
        }
        self.0.publish(channel, message).await
    }
}

/// Node B's kick to node A is lost. The first push that still reaches A (a route cache that
/// names A) finds that the cluster route names B's connection: A answers ROUTER_CHANGE, treats
/// its own connection as displaced (KICK, no unicast, no broadcast from then on), and the SDK
/// delivers to the new device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_kick_cannot_leave_two_devices_served() {
    let fx = Memory::new();
    within("lost kick", async {
        let a = fx.node().await;
        let registry = Arc::new(MemoryServiceRegistry::new(fx.hub.clone()));
        let server_b = MPushServer::builder()
            .config(test_config())
            .cache_manager(Arc::new(MemoryCache::new(fx.hub.clone())))
            .mq_client(Arc::new(LosesKicks(MemoryMQ::new(fx.hub.clone()))))
            .service_registry(registry.clone(), registry)
            .start()
            .await
            .unwrap();
        let addr_b = server_b.connect_addr();
        let b = Node {
            server: server_b,
            addr: addr_b,
        };
        let sender = fx.sender().await;
        wait_gateways(&sender, 2).await;
        let run = run_id();
        let user = format!("lost-kick-{run}");
        let mut f = Failures::default();

        let old = Device::bound(a.addr, &format!("{user}-old"), &user).await;
        let new = Device::bound(b.addr, &format!("{user}-new"), &user).await;
        old.barrier().await;
        f.check(!old.kicked(), || {
            "the kick was meant to be lost, yet the old device got KICK".into()
        });

        // A push through a stale route to A: ROUTER_CHANGE, and A displaces its connection.
        let reply = gateway_push(a.gateway(), &user, "via-stale-route").await;
        f.check(is_error(&reply, ErrorCode::RouterChange), || {
            format!("GATEWAY_PUSH to the old node answered {reply:?}, expected ROUTER_CHANGE")
        });
        let kicked = eventually(WAIT, || async { old.kicked() }).await;
        f.check(kicked, || {
            "the old device was never told it was displaced (KICK)".into()
        });
        f.check(a.server.local_users().is_empty(), || {
            "the old node still routes the user locally after finding the newer route".into()
        });

        // The SDK delivers to the new device; a broadcast from anywhere reaches only it.
        let r = push(&sender, &user, "after-lost-kick", AckModel::AutoAck).await;
        f.check(codes(&r) == [ResultCode::Success], || {
            format!("push answered {:?}", codes(&r))
        });
        f.check(new.wait_push("after-lost-kick", WAIT).await, || {
            "new device missed the push".into()
        });
        let bc = sender
            .send(
                PushContext::broadcast(format!("bc-{run}").into_bytes())
                    .timeout(Duration::from_secs(3)),
            )
            .await;
        f.check(!bc.is_empty(), || "broadcast gave no result".into());
        let got_bc = new.wait_push(&format!("bc-{run}"), WAIT).await;
        f.check(got_bc, || "new device missed the broadcast".into());
        old.barrier().await;
        f.check(
            old.count("via-stale-route") == 0 && old.count("after-lost-kick") == 0,
            || "the displaced device received a unicast".into(),
        );
        f.check(old.count(&format!("bc-{run}")) == 0, || {
            "the displaced device received the broadcast".into()
        });
        old.client.close().await;
        new.client.close().await;
        stop_all(sender, vec![a, b]).await;
        f.assert_none("lost kick");
    })
    .await;
}

// ------------------------------------------------------------------------------------------
// A bind in progress is not a displacement

/// Hooks making route compare-and-sets wait at a gate while it is closed.
#[derive(Default)]
struct GatedRoutes {
    closed: std::sync::atomic::AtomicBool,
    parked: tokio::sync::Notify,
    open: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl common::hooked_cache::Hooks for GatedRoutes {
    async fn hcompare_and_set(
        &self,
        inner: &MemoryCache,
        k: &str,
        f: &str,
        expected: Option<&str>,
        v: &str,
    ) -> mpush::spi::SpiResult<mpush::spi::CasOutcome> {
        if k.starts_with("mp:ur:") && self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            let open = self.open.notified();
            self.parked.notify_one();
            open.await;
        }
        inner.hcompare_and_set(k, f, expected, v).await
    }
}

/// A push that reaches a node while one of its connections is binding (local route set,
/// cluster route write in flight) sees the *older* route, naming the previous device: that
/// must not displace the binding connection, which wins once its write lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_during_a_bind_does_not_displace_the_binding_connection() {
    let fx = Memory::new();
    within("push during bind", async {
        let a = fx.node().await;
        let gated = Arc::new(GatedRoutes::default());
        let cache = Arc::new(common::hooked_cache::HookedCache {
            inner: MemoryCache::new(fx.hub.clone()),
            hooks: gated.clone(),
        });
        let registry = Arc::new(MemoryServiceRegistry::new(fx.hub.clone()));
        let server_b = MPushServer::builder()
            .config(test_config())
            .cache_manager(cache)
            .mq_client(Arc::new(MemoryMQ::new(fx.hub.clone())))
            .service_registry(registry.clone(), registry)
            .start().await.unwrap();
        let addr_b = server_b.connect_addr();
        let b = Node { server: server_b, addr: addr_b };
        let run = run_id();
        let user = format!("binding-{run}");
        let mut f = Failures::default();

        let old = Device::bound(a.addr, &format!("{user}-old"), &user).await;
        let new = Device::connect(b.addr, &format!("{user}-new"), None).await.unwrap();
        gated.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        let parked = gated.parked.notified();
        let client = new.client.clone();
        let bind_user = user.clone();
        let bind = tokio::spawn(async move { client.bind(&bind_user, None, None).await });
        parked.await;
        // B's bind is parked on its route write; the cluster route still names A's device.
        // (NO_ACK: the device reads the push only once its bind has been answered.)
        let reply = gateway_push_with(b.gateway(), &user, "during-bind", AckModel::NoAck).await;
        f.check(matches!(reply, GatewayReply::Ok(_)), || {
            format!("a push during the bind answered {reply:?}; expected the binding connection to be served")
        });
        gated.closed.store(false, std::sync::atomic::Ordering::SeqCst);
        gated.open.notify_waiters();
        let bound = bind.await.unwrap();
        f.check(bound.is_ok(), || format!("the bind failed: {bound:?}"));
        new.barrier().await;
        f.check(!new.kicked(), || "the binding connection was displaced by a push that read the older route".into());
        f.check(new.wait_push("during-bind", WAIT).await, || "the push queued during the bind never arrived".into());
        let kicked = eventually(WAIT, || async { old.kicked() }).await;
        f.check(kicked, || "the previous device was not kicked".into());
        let r = route(fx.cache(), &user).await;
        f.check(
            r.as_ref().is_some_and(|l| l.is_online() && l.device_id.as_deref() == Some(new.device_id.as_str())),
            || format!("the route does not name the new device: {r:?}"),
        );
        old.client.close().await;
        new.client.close().await;
        let sender = fx.sender().await;
        stop_all(sender, vec![a, b]).await;
        f.assert_none("push during bind");
    })
    .await;
}
