//! The cluster-routing kit shared by the `routing_*` end-to-end tests (issue 7): backend
//! fixtures (memory, Redis + ZooKeeper), SDK devices whose events are recorded, and the
//! polling and route-reading helpers every scenario uses.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::fault_proxy::FaultProxy;
use super::{WAIT, test_config};
use bytes::Bytes;
use mpush::AckModel;
use mpush::ClientLocation;
use mpush::client::{Client, ClientConfig, ClientError, Event, ReconnectPolicy};
use mpush::protocol::message::{ErrorCode, GatewayPush};
use mpush::sender::{GatewayClient, GatewayReply};
use mpush::sender::{PushContext, PushResult, PushSender, ResultCode};
use mpush::spi::{CacheManager, ClientClassifier, ClientType, DefaultClientClassifier};
use mpush::{MPushConfig, MPushServer, RunningServer};
use mpush_spi_memory::{MemoryCache, MemoryHub};
use mpush_spi_redis::{RedisCache, RedisMQ, RedisNode, RedisOptions, RedisSettings};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
// Link the ZooKeeper backend so its inventory registration exists.
use mpush_spi_zk as _;

/// Upper bound of one whole scenario.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(90);
/// How often conditions are polled.
pub const POLL: Duration = Duration::from_millis(50);
/// Item 6: all live routes are back within this long after Redis answers again.
pub const CACHE_LOSS_BOUND: Duration = Duration::from_secs(30);
/// Item 4: a handshake during a backend stall answers well under this (a behavioural bound,
/// not a performance target: the stall lasts seconds).
pub const HANDSHAKE_BOUND: Duration = Duration::from_secs(1);
/// The Redis command bound of the nodes behind the fault proxy (`RedisOptions`; there is no
/// `mp.redis.*` key for it).
pub const REDIS_OPERATION_TIMEOUT: Duration = Duration::from_secs(2);
/// FAST_CONNECT waits for the reusable session at most 1 s (then answers SESSION_EXPIRED).
pub const FAST_CONNECT_BOUND: Duration = Duration::from_millis(1500);
/// Item 4: a bind whose route write succeeds answers OK well under this, whatever the MQ does
/// (behavioural bound: the MQ stall lasts longer).
pub const BIND_OK_BOUND: Duration = Duration::from_secs(1);
/// The Java client's timeout per connection step (handshake, bind).
pub const JAVA_STEP_TIMEOUT: Duration = Duration::from_secs(3);
/// Item 4/5: a bind during a stall or outage fails with ERROR before the Java client gives up.
pub const BIND_FAIL_BOUND: Duration = JAVA_STEP_TIMEOUT;
/// Item 8: after a node left the registry its users answer OFFLINE and its routes are
/// marked offline within this.
pub const DEAD_NODE_BOUND: Duration = Duration::from_secs(15);
/// The online set of every node here (`mp:oul:<public-ip>`, public ip 127.0.0.1).
pub const ONLINE_SET: &str = "mp:oul:127.0.0.1";

// ------------------------------------------------------------------------------------------
// Small helpers

/// Runs a scenario under the overall bound.
pub async fn within<F: Future<Output = ()>>(what: &str, f: F) {
    tokio::time::timeout(SCENARIO_LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: scenario exceeded {SCENARIO_LIMIT:?}"));
}

/// Polls `cond` until it holds or `limit` passes; returns whether it held.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
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
pub fn run_id() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// The client type the default classifier gives the SDK's default os ("android").
pub fn mobile() -> ClientType {
    DefaultClientClassifier.classify(Some("android"))
}

/// Collects failed expectations so one run reports every broken requirement at once.
#[derive(Default)]
pub struct Failures(pub Vec<String>);

impl Failures {
    pub fn check(&mut self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.0.push(msg());
        }
    }

    pub fn assert_none(self, scenario: &str) {
        assert!(
            self.0.is_empty(),
            "{scenario}: {} requirement(s) failed:\n  - {}",
            self.0.len(),
            self.0.join("\n  - ")
        );
    }
}

/// The user's routes, read straight from the cache.
pub async fn routes(cache: &dyn CacheManager, user: &str) -> HashMap<ClientType, ClientLocation> {
    cache
        .hgetall(&format!("mp:ur:{user}"))
        .await
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(k, v)| Some((k.parse().ok()?, ClientLocation::from_json(&v)?)))
        .collect()
}

/// The user's mobile route, read straight from the cache.
pub async fn route(cache: &dyn CacheManager, user: &str) -> Option<ClientLocation> {
    routes(cache, user).await.remove(&mobile())
}

/// Pushes `content` to `user` and returns the results.
pub async fn push(
    sender: &PushSender,
    user: &str,
    content: &str,
    ack: AckModel,
) -> Vec<PushResult> {
    sender
        .send(
            PushContext::to_user(user, Bytes::copy_from_slice(content.as_bytes()))
                .ack(ack)
                .timeout(Duration::from_secs(3)),
        )
        .await
}

pub fn codes(results: &[PushResult]) -> Vec<ResultCode> {
    results.iter().map(|r| r.code).collect()
}

/// Waits until `sender` lists `n` gateways (discovery is eventually consistent on ZooKeeper).
pub async fn wait_gateways(sender: &PushSender, n: usize) {
    let ok = eventually(WAIT, || async { sender.gateways().len() == n }).await;
    assert!(
        ok,
        "sender lists {:?}, expected {n} gateways",
        sender.gateways()
    );
}

/// One GATEWAY_PUSH straight to a node's gateway, as a (Java) SDK with a cached route does.
pub async fn gateway_push(gateway: SocketAddr, user: &str, content: &str) -> GatewayReply {
    gateway_push_with(gateway, user, content, AckModel::AutoAck).await
}

/// [`gateway_push`] with the given ACK model.
pub async fn gateway_push_with(
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

pub fn is_error(reply: &GatewayReply, code: ErrorCode) -> bool {
    matches!(reply, GatewayReply::Error(e) if e.code == code.code())
}

// ------------------------------------------------------------------------------------------
// Devices (the Rust client SDK)

/// A device: an SDK client whose events are recorded in order.
pub struct Device {
    pub client: Client,
    pub device_id: String,
    pub events: Arc<Mutex<Vec<Event>>>,
}

impl Device {
    /// Connects (full handshake) and, with `user`, binds it. Never reconnects by itself: a
    /// test moves devices explicitly.
    pub async fn connect(
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

    pub async fn bound(addr: SocketAddr, device_id: &str, user: &str) -> Device {
        Device::connect(addr, device_id, Some(user))
            .await
            .unwrap_or_else(|e| panic!("{device_id} cannot connect and bind {user}: {e}"))
    }

    pub fn kicked(&self) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|e| matches!(e, Event::Kicked { .. }))
    }

    /// Contents of the pushes received so far.
    pub fn pushes(&self) -> Vec<Bytes> {
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

    pub fn count(&self, content: &str) -> usize {
        self.pushes()
            .iter()
            .filter(|c| &c[..] == content.as_bytes())
            .count()
    }

    pub async fn wait_push(&self, content: &str, limit: Duration) -> bool {
        eventually(limit, || async { self.count(content) > 0 }).await
    }

    /// A round trip on this connection (an AUTO_ACK upstream push answered by the server):
    /// everything the server queued for this device before it returns has been received.
    /// A connection the server has closed is a barrier too: nothing more can arrive on it
    /// (devices here never reconnect by themselves).
    pub async fn barrier(&self) {
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
pub struct Node {
    pub server: RunningServer,
    pub addr: SocketAddr,
}

impl Node {
    /// The node of a started server.
    pub fn started(server: RunningServer) -> Node {
        let addr = server.connect_addr();
        Node { server, addr }
    }

    pub fn gateway(&self) -> SocketAddr {
        self.server.gateway_addr()
    }

    /// The id of the connection of `device` bound to `user` on this node, if any.
    pub async fn conn_id(&self, user: &str, device: &str) -> Option<String> {
        self.server
            .local_sessions(user)
            .into_iter()
            .find(|s| s.device_id.as_deref() == Some(device))
            .map(|s| s.conn_id)
    }
}

/// What a scenario needs from a backend: nodes, a sender, and direct cache access.
pub trait Backend {
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
pub struct Memory {
    pub hub: Arc<MemoryHub>,
    pub cache: MemoryCache,
}

impl Memory {
    pub fn new() -> Self {
        let hub = MemoryHub::new();
        let cache = MemoryCache::new(hub.clone());
        Self { hub, cache }
    }

    /// A node on this hub whose cache is `cache` (a test double wrapping the hub's), with
    /// the hub's MQ unless `mq` is given.
    pub async fn node_with(
        &self,
        cache: Arc<dyn CacheManager>,
        mq: Option<Arc<dyn mpush::spi::MQClient>>,
    ) -> Node {
        self.node_seeing(cache, mq, None).await
    }

    /// [`Memory::node_with`], discovering through `discovery` (a test double wrapping a
    /// registry of the hub) if given.
    pub async fn node_seeing(
        &self,
        cache: Arc<dyn CacheManager>,
        mq: Option<Arc<dyn mpush::spi::MQClient>>,
        discovery: Option<Arc<dyn mpush::spi::ServiceDiscovery>>,
    ) -> Node {
        let registry = Arc::new(mpush_spi_memory::MemoryServiceRegistry::new(
            self.hub.clone(),
        ));
        let discovery: Arc<dyn mpush::spi::ServiceDiscovery> =
            discovery.unwrap_or_else(|| registry.clone());
        let mq = mq.unwrap_or_else(|| Arc::new(mpush_spi_memory::MemoryMQ::new(self.hub.clone())));
        let server = MPushServer::builder()
            .config(test_config())
            .cache_manager(cache)
            .mq_client(mq)
            .service_registry(registry, discovery)
            .start()
            .await
            .unwrap();
        Node::started(server)
    }
}

impl Backend for Memory {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn node(&self) -> Node {
        let builder = MPushServer::builder().config(test_config());
        let server = mpush_spi_memory::testing::on_hub(&self.hub, builder)
            .start()
            .await
            .unwrap();
        Node::started(server)
    }

    async fn sender(&self) -> PushSender {
        mpush_spi_memory::testing::sender_on(&self.hub, test_config())
            .await
            .unwrap()
    }

    fn cache(&self) -> &dyn CacheManager {
        &self.cache
    }
}

/// Serialises the scenarios that wipe Redis (FLUSHALL) against every other Redis scenario of
/// the same test binary; test binaries themselves run one after another.
pub static REDIS_LOCK: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

pub enum RedisGuard {
    Shared(#[allow(dead_code)] tokio::sync::RwLockReadGuard<'static, ()>),
    Exclusive(#[allow(dead_code)] tokio::sync::RwLockWriteGuard<'static, ()>),
}

/// Real Redis (single) + ZooKeeper from `MPUSH_TEST_REDIS` / `MPUSH_TEST_ZK`, a ZooKeeper
/// namespace of its own.
pub struct Redis {
    pub redis: SocketAddr,
    pub zk: String,
    pub namespace: String,
    pub cache: RedisCache,
    _guard: RedisGuard,
}

pub fn required_env(name: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not set: this test needs Redis + ZooKeeper; run scripts/test-all.sh \
                 (or `source scripts/services.sh && services_start DIR`, then \
                 `cargo test --test routing_displace -- --include-ignored`)"
            )
        })
}

impl Redis {
    /// Runs alongside the other Redis scenarios.
    pub async fn new() -> Self {
        Self::with_guard(RedisGuard::Shared(REDIS_LOCK.read().await)).await
    }

    /// Runs alone among the Redis scenarios (it flushes Redis).
    pub async fn exclusive() -> Self {
        Self::with_guard(RedisGuard::Exclusive(REDIS_LOCK.write().await)).await
    }

    pub async fn with_guard(guard: RedisGuard) -> Self {
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
    pub fn config(&self) -> MPushConfig {
        let mut c = test_config();
        super::on_redis_and_zk(&mut c, &self.redis.to_string(), &self.zk, &self.namespace);
        c
    }

    /// Redis settings for `addr` with the short timeouts of the fault scenarios.
    pub fn settings_via(addr: SocketAddr) -> RedisSettings {
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
    pub async fn node_via(&self, proxy: &FaultProxy) -> Node {
        self.node_split(proxy.addr(), proxy.addr()).await
    }

    /// A node whose Redis cache is at `cache_addr` and Redis MQ at `mq_addr` (the real Redis
    /// or a proxy in front of it), with the short timeouts; ZooKeeper directly.
    pub async fn node_split(&self, cache_addr: SocketAddr, mq_addr: SocketAddr) -> Node {
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
        Node::started(server)
    }

    /// A sender whose route reads go through `proxy`.
    pub async fn sender_via(&self, proxy: &FaultProxy) -> PushSender {
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
    pub async fn command(&self, args: &[&str]) -> String {
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
        Node::started(server)
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

/// Pushes `content` (AUTO_ACK) to all of `users` at once; the user and code of every result
/// that is not SUCCESS.
pub async fn unsuccessful_pushes(
    sender: &PushSender,
    users: &[String],
    content: &str,
) -> Vec<(Option<String>, ResultCode)> {
    let ctx = PushContext::to_users(users.to_vec(), Bytes::copy_from_slice(content.as_bytes()))
        .ack(AckModel::AutoAck)
        .timeout(Duration::from_secs(5));
    sender
        .send(ctx)
        .await
        .into_iter()
        .filter(|r| r.code != ResultCode::Success)
        .map(|r| (r.user_id, r.code))
        .collect()
}

/// Two nodes of `fx` and a sender that has discovered both gateways.
pub async fn two_nodes_and_sender<B: Backend>(fx: &B) -> (Node, Node, PushSender) {
    let (a, b) = (fx.node().await, fx.node().await);
    let sender = fx.sender().await;
    wait_gateways(&sender, 2).await;
    (a, b, sender)
}

pub async fn stop_all(sender: PushSender, nodes: Vec<Node>) {
    sender.stop().await;
    for n in nodes {
        n.server.shutdown().await;
    }
}

/// Runs a scenario on the memory backend and on Redis + ZooKeeper.
// Only the scenario binaries use it; every other test binary compiles this kit too.
#[allow(unused_macros)]
macro_rules! on_both_backends {
    ($scenario:ident) => {
        mod $scenario {
            use $crate::common::routing::{Memory, Redis, within};

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
#[allow(unused_imports)]
pub(crate) use on_both_backends;
