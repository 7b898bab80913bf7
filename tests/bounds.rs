//! Bounded in-flight work and truthful routing answers, end to end on in-process servers:
//! the `PushSender`'s route cache, single-flight gateway connects, bounded multi-user sends,
//! OFFLINE vs FAILURE for dead nodes and backend errors; the gateway's in-flight cap.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use common::*;
use mpush::AckModel;
use mpush::ClientLocation;
use mpush::RunningServer;
use mpush::protocol::keys::user_route_key;
use mpush::sender::{PushContext, PushSender, ResultCode};
use mpush::spi::{
    CacheManager, ServiceDiscovery, ServiceNode, ServiceRegistry, SpiError, SpiResult, services,
};
use mpush_spi_memory::testing::FixedDiscovery;
use mpush_spi_memory::{MemoryCache, MemoryHub, MemoryServiceRegistry};

/// Hooks making HGETALL fail on demand (a Redis outage) and recording how many HGETALLs
/// ran at once.
#[derive(Default)]
struct Flaky {
    fail_hgetall: AtomicBool,
    running: AtomicUsize,
    most_running: AtomicUsize,
    hgetalls: AtomicUsize,
}

/// A memory cache with [`Flaky`] HGETALLs.
type FlakyCache = common::hooked_cache::HookedCache<Flaky>;

fn flaky_cache(hub: &Arc<MemoryHub>) -> Arc<FlakyCache> {
    Arc::new(FlakyCache {
        inner: MemoryCache::new(hub.clone()),
        hooks: Arc::new(Flaky::default()),
    })
}

#[async_trait]
impl common::hooked_cache::Hooks for Flaky {
    async fn hgetall(&self, inner: &MemoryCache, key: &str) -> SpiResult<HashMap<String, String>> {
        if self.fail_hgetall.load(Ordering::SeqCst) {
            return Err(SpiError::backend("flaky", "connection refused"));
        }
        self.hgetalls.fetch_add(1, Ordering::SeqCst);
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_running.fetch_max(now, Ordering::SeqCst);
        // Stay in flight across a few polls so that concurrent lookups overlap.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        let r = inner.hgetall(key).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
        r
    }
}

/// One node on a fresh hub, and a sender (8 users at once) that reads routes through a
/// [`FlakyCache`] over the same hub.
async fn one_node_behind_flaky_cache() -> (RunningServer, SocketAddr, Arc<FlakyCache>, PushSender) {
    let hub = MemoryHub::new();
    let (server, addr) = start_server(&hub, test_config()).await;
    let cache = flaky_cache(&hub);
    let sender = sender_on(
        cache.clone(),
        Arc::new(MemoryServiceRegistry::new(hub.clone())),
        8,
    )
    .await;
    (server, addr, cache, sender)
}

/// Sends `content` to `user` alone and checks it is a FAILURE whose reason names `why`.
async fn assert_failure(sender: &PushSender, user: &str, content: &[u8], why: &str) {
    let r = sender
        .send(PushContext::to_user(user, content.to_vec()))
        .await
        .remove(0);
    assert_eq!(r.code, ResultCode::Failure, "{user}");
    let reason = r.error.unwrap();
    assert!(reason.contains(why), "{user}: {reason}");
}

async fn sender_on(
    cache: Arc<dyn CacheManager>,
    discovery: Arc<dyn ServiceDiscovery>,
    users_at_once: usize,
) -> PushSender {
    PushSender::builder()
        .config(test_config())
        .cache_manager(cache)
        .discovery(discovery)
        .max_concurrent_users(users_at_once)
        .start()
        .await
        .unwrap()
}

/// Issue 7 item 1: an OFFLINE answer is not cached past the user's bind.
#[tokio::test]
async fn offline_then_bind_then_success() {
    let c = start_cluster(1, test_config()).await;
    expect_push(
        &c.sender,
        "late",
        AckModel::NoAck,
        3000,
        ResultCode::Offline,
    )
    .await;
    let mut rx = receiver(c.addr(0), "d-late", "late").await;
    expect_push(
        &c.sender,
        "late",
        AckModel::NoAck,
        3000,
        ResultCode::Success,
    )
    .await;
    assert_eq!(&rx.recv().await.unwrap().content[..], b"hello");

    // An offline-only route set (the user disconnected) is not cached either.
    drop(rx);
    let u2 = bound_client(c.addr(0), "d-u2", "android", "u2", None).await;
    expect_push(&c.sender, "u2", AckModel::NoAck, 3000, ResultCode::Success).await;
    drop(u2);
    let deadline = tokio::time::Instant::now() + WAIT;
    while push(&c.sender, "u2", AckModel::NoAck, 3000).await != [ResultCode::Offline] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "u2 never went offline"
        );
        tokio::task::yield_now().await;
    }
    let mut rx2 = receiver(c.addr(0), "d-u2b", "u2").await;
    expect_push(&c.sender, "u2", AckModel::NoAck, 3000, ResultCode::Success).await;
    assert_eq!(&rx2.recv().await.unwrap().content[..], b"hello");
    c.shutdown().await;
}

/// 500 concurrent first sends share the configured number of gateway connections.
#[tokio::test]
async fn concurrent_first_sends_open_gateway_client_num_connections() {
    for per_node in [1usize, 3] {
        let cfg = config_with(|c| c.net.gateway_client_num = per_node);
        let c = start_cluster(1, cfg).await;
        let _rx = receiver(c.addr(0), "d1", "u1").await;
        let gw = c.gateway(0).to_string();
        assert_eq!(c.sender.gateway_connections(&gw), 0);
        let sends = (0..500).map(|_| {
            let s = c.sender.clone();
            tokio::spawn(async move { push(&s, "u1", AckModel::NoAck, 5000).await })
        });
        for r in futures::future::join_all(sends).await {
            assert_eq!(r.unwrap(), [ResultCode::Success]);
        }
        // Every connection the sender opened carried a request that has been answered, so
        // the server has seen all of them by now.
        assert_eq!(c.sender.gateway_connections(&gw), per_node);
        assert_eq!(c.nodes[0].gateway_load().connections, per_node);
        c.shutdown().await;
    }
}

/// A send to many users runs a bounded number of them at once, and answers every user.
#[tokio::test]
async fn multi_user_send_is_bounded() {
    let (server, addr, cache, sender) = one_node_behind_flaky_cache().await;
    let _rx = receiver(addr, "d0", "user-0").await;
    let users: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
    let results = sender
        .send(PushContext::to_users(users.clone(), &b"hi"[..]))
        .await;
    assert_eq!(results.len(), 100);
    for (r, u) in results.iter().zip(&users) {
        assert_eq!(r.user_id.as_deref(), Some(u.as_str()));
        let want = if u == "user-0" {
            ResultCode::Success
        } else {
            ResultCode::Offline
        };
        assert_eq!(r.code, want, "{u}");
    }
    assert_eq!(cache.hooks.most_running.load(Ordering::SeqCst), 8);
    sender.stop().await;
    server.shutdown().await;
}

/// Issue 7 item 5 (SDK side): a cache error is FAILURE with the reason, never OFFLINE.
#[tokio::test]
async fn route_read_error_is_failure_with_reason() {
    let (server, addr, cache, sender) = one_node_behind_flaky_cache().await;
    let _rx = receiver(addr, "d1", "u1").await;
    cache.hooks.fail_hgetall.store(true, Ordering::SeqCst);
    for user in ["u1", "never-bound"] {
        assert_failure(&sender, user, b"x", "connection refused").await;
    }
    cache.hooks.fail_hgetall.store(false, Ordering::SeqCst);
    expect_push(&sender, "u1", AckModel::NoAck, 3000, ResultCode::Success).await;
    sender.stop().await;
    server.shutdown().await;
}

/// Issue 7 item 8 (SDK side): users whose route names a node that died (its registry node
/// is gone, its gateway port is closed, its routes were left behind) are OFFLINE.
#[tokio::test]
async fn dead_node_users_are_offline() {
    let mut c = start_cluster(2, test_config()).await;
    let cache = MemoryCache::new(c.hub.clone());
    let mut clients = Vec::new();
    let mut stale = Vec::new();
    for i in 0..20 {
        let user = format!("dead-{i}");
        clients.push(bound_client(c.addr(0), &format!("dd-{i}"), "android", &user, None).await);
        expect_push(&c.sender, &user, AckModel::NoAck, 3000, ResultCode::Success).await;
        stale.push((
            user.clone(),
            cache.hgetall(&user_route_key(&user)).await.unwrap(),
        ));
    }
    let _alive = receiver(c.addr(1), "d-alive", "alive").await;
    // `kill -9`: the node's registry entry disappears and its ports stop answering, but
    // nothing cleans its routes. `stop()` does the first two; the routes are put back.
    let dead = c.nodes.remove(0);
    let dead_gw = dead.gateway_addr().to_string();
    dead.shutdown().await;
    drop(clients);
    for (user, fields) in &stale {
        for (field, value) in fields {
            cache
                .hset(&user_route_key(user), field, value)
                .await
                .unwrap();
        }
        let loc = ClientLocation::from_json(fields.values().next().unwrap()).unwrap();
        assert!(loc.is_online());
        assert_eq!(loc.host_and_port(), dead_gw);
    }
    for (user, _) in &stale {
        assert_eq!(
            push(&c.sender, user, AckModel::NoAck, 3000).await,
            [ResultCode::Offline],
            "{user}"
        );
    }
    // The live node still answers.
    expect_push(
        &c.sender,
        "alive",
        AckModel::NoAck,
        3000,
        ResultCode::Success,
    )
    .await;
    c.shutdown().await;
}

/// A node that is in the registry but whose gateway cannot be reached is FAILURE, with
/// the reason.
#[tokio::test]
async fn registered_but_unreachable_gateway_is_failure() {
    let c = start_cluster(1, test_config()).await;
    let closed_port = free_port();
    let registry = MemoryServiceRegistry::new(c.hub.clone());
    let node = ServiceNode::new(services::GATEWAY_SERVER, "127.0.0.1", closed_port);
    registry.register(&node).await.unwrap();
    let loc = ClientLocation {
        host: "127.0.0.1".into(),
        port: i32::from(closed_port),
        os_name: Some("android".into()),
        conn_id: Some("cafebabe".into()),
        ..Default::default()
    };
    let cache = MemoryCache::new(c.hub.clone());
    cache
        .hset(&user_route_key("ghost"), "1", &loc.to_json())
        .await
        .unwrap();
    assert_failure(&c.sender, "ghost", b"x", "cannot connect").await;
    registry.deregister(&node).await.unwrap();
    c.shutdown().await;
}

/// A discovery that cannot be read is FAILURE, not OFFLINE; once it answers, pushes flow.
#[tokio::test]
async fn unreadable_discovery_is_failure() {
    let hub = MemoryHub::new();
    let (server, addr) = start_server(&hub, test_config()).await;
    // A registry the sender cannot read; later it answers with what the hub's registry holds.
    let discovery = Arc::new(FixedDiscovery::failing("session expired"));
    let sender = sender_on(
        Arc::new(MemoryCache::new(hub.clone())),
        discovery.clone(),
        8,
    )
    .await;
    assert!(sender.gateways().is_empty());
    let _rx = receiver(addr, "d1", "u1").await;
    assert_failure(&sender, "u1", b"x", "session expired").await;
    let registry = MemoryServiceRegistry::new(hub.clone());
    discovery.set(registry.lookup(services::GATEWAY_SERVER).await.unwrap());
    expect_push(&sender, "u1", AckModel::NoAck, 3000, ResultCode::Success).await;
    sender.stop().await;
    server.shutdown().await;
}

/// `timeout(Duration::MAX)` saturates instead of panicking on the deadline.
#[tokio::test]
async fn huge_timeout_does_not_panic() {
    let c = start_cluster(1, test_config()).await;
    let _rx = receiver(c.addr(0), "d1", "u1").await;
    let ctx = PushContext::to_user("u1", &b"x"[..])
        .ack(AckModel::BizAck)
        .timeout(Duration::MAX);
    let r = c.sender.send(ctx).await;
    assert_eq!(r[0].code, ResultCode::Success);
    c.shutdown().await;
}

/// A raw gateway client: writes `n` BIZ_ACK GATEWAY_PUSH frames for `user` (client type 1)
/// with the largest timeout the wire allows, from a task; the socket stays open until the
/// returned handle is dropped or aborted.
fn flood_gateway(
    gateway: std::net::SocketAddr,
    user: &str,
    n: usize,
) -> tokio::task::JoinHandle<tokio::net::TcpStream> {
    use mpush::protocol::message::{GatewayPush, Message};
    use mpush::protocol::{Command, Packet, flags};
    use tokio::io::AsyncWriteExt;
    let body = GatewayPush {
        user_id: Some(user.to_string()),
        client_type: 1,
        timeout: i32::MAX,
        content: Some(b"flood".to_vec()),
        task_id: None,
        tags: None,
        condition: None,
    }
    .encode();
    tokio::spawn(async move {
        let mut s = tokio::net::TcpStream::connect(gateway).await.unwrap();
        for i in 0..n {
            let p = Packet {
                flags: flags::BIZ_ACK,
                ..Packet::with_body(Command::GatewayPush, i as i32 + 1, body.clone())
            };
            s.write_all(&p.to_bytes()).await.unwrap();
        }
        s
    })
}

/// Polls `server`'s gateway load until `done` holds (bounded by `WAIT`).
async fn wait_load(
    server: &mpush::RunningServer,
    what: &str,
    done: impl Fn(&mpush::server::GatewayLoad) -> bool,
) -> mpush::server::GatewayLoad {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let load = server.gateway_load();
        if done(&load) {
            return load;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {load:?}");
        tokio::task::yield_now().await;
    }
}

fn flood_config(cap: usize, max_ack: Duration) -> mpush::MPushConfig {
    let mut cfg = test_config();
    cfg.net.gateway_max_in_flight = cap;
    cfg.push.max_ack_timeout = max_ack;
    // Global flow control is not what is measured here.
    cfg.push.global_flow_control.limit = 1_000_000;
    cfg
}

/// 10,000 never-acknowledged BIZ_ACK pushes with a huge timeout on one gateway connection:
/// the server runs `gateway-max-in-flight` of them and reads no further.
#[tokio::test]
async fn gateway_in_flight_is_capped() {
    const CAP: usize = 1000;
    let (server, addr) = start_alone(flood_config(CAP, Duration::from_secs(60))).await;
    let mut rx = spawn_receiver(
        bound_client(addr, "d1", "android", "u1", None).await,
        AckPolicy::Never,
    );
    let flood = flood_gateway(server.gateway_addr(), "u1", 10_000);
    let load = wait_load(&server, "cap never filled", |l| l.pending_acks >= CAP).await;
    for _ in 0..CAP {
        assert_eq!(&rx.recv().await.unwrap().content[..], b"flood");
    }
    let after = server.gateway_load();
    for l in [load, after] {
        assert_eq!(l.pending_acks, CAP, "{l:?}");
        assert_eq!(l.in_flight, CAP, "{l:?}");
        assert_eq!(l.peak_in_flight, CAP, "{l:?}");
    }
    assert!(
        rx.try_recv().is_err(),
        "a push beyond the cap was delivered"
    );
    flood.abort();
    server.shutdown().await;
}

/// The same flood with `mp.push.max-ack-timeout` small: the huge wire timeout is cut, so
/// every push ends, all 10,000 are delivered in turn, and the cap holds throughout.
#[tokio::test]
async fn huge_ack_timeouts_are_capped() {
    const CAP: usize = 1000;
    const N: usize = 10_000;
    let (server, addr) = start_alone(flood_config(CAP, Duration::from_millis(200))).await;
    let mut rx = spawn_receiver(
        bound_client(addr, "d1", "android", "u1", None).await,
        AckPolicy::Never,
    );
    let flood = flood_gateway(server.gateway_addr(), "u1", N);
    for i in 0..N {
        assert_eq!(&rx.recv().await.unwrap().content[..], b"flood");
        if i % 500 == 0 {
            let l = server.gateway_load();
            assert!(l.pending_acks <= CAP && l.in_flight <= CAP, "{l:?}");
        }
    }
    let load = wait_load(&server, "ACK waits never ended", |l| {
        l.pending_acks == 0 && l.in_flight == 0
    })
    .await;
    assert!(load.peak_in_flight <= CAP, "{load:?}");
    flood.await.unwrap();
    server.shutdown().await;
}

/// Records the `delivered` count of every finished broadcast.
#[derive(Default)]
struct BroadcastDone(std::sync::Mutex<Vec<u64>>);

impl mpush::spi::PushListener for BroadcastDone {
    fn on_broadcast_done(&self, _task_id: Option<&str>, delivered: u64) {
        self.0.lock().unwrap().push(delivered);
    }
}

/// A broadcast paused by flow control ends when the server stops, instead of sleeping
/// through the window (and past `stop()`'s wait for its tasks).
#[tokio::test]
async fn broadcast_stops_when_the_server_stops() {
    let mut cfg = test_config();
    cfg.push.broadcast_flow_control.limit = 1;
    cfg.push.broadcast_flow_control.duration = Duration::from_secs(600);
    let hub = MemoryHub::new();
    let done = Arc::new(BroadcastDone::default());
    let (server, addr) = start_with(
        &hub,
        mpush::MPushServer::builder()
            .config(cfg)
            .push_listener(done.clone()),
    )
    .await;
    let (tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    for i in 0..3 {
        let mut rx = receiver(addr, &format!("d{i}"), &format!("u{i}")).await;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                let _ = tx.send(r);
            }
        });
    }
    let sender = sender_on(
        Arc::new(MemoryCache::new(hub.clone())),
        Arc::new(MemoryServiceRegistry::new(hub.clone())),
        8,
    )
    .await;
    let bc = {
        let sender = sender.clone();
        tokio::spawn(async move {
            sender
                .send(PushContext::broadcast(&b"all"[..]).timeout(Duration::from_secs(600)))
                .await
        })
    };
    // One send per 600 s window: the first arrives, then the broadcast waits.
    let first = recv_within(&mut got).await;
    assert_eq!(&first.content[..], b"all");
    server.shutdown().await;
    assert_eq!(
        *done.0.lock().unwrap(),
        [1],
        "the broadcast did not end with the server"
    );
    let results = tokio::time::timeout(WAIT, bc).await.unwrap().unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].code, ResultCode::Failure, "{results:?}");
    assert!(got.try_recv().is_err(), "a second push went out");
    sender.stop().await;
}

/// Global flow control: past `max` total sends, pushes are refused (FAILURE with the
/// reason) instead of flowing with no limit at all.
#[tokio::test]
async fn global_flow_control_max_refuses_instead_of_unlimiting() {
    let cfg = config_with(|c| c.push.global_flow_control.max = 5);
    let c = start_cluster(1, cfg).await;
    let mut rx = receiver(c.addr(0), "d1", "u1").await;
    for _ in 0..5 {
        expect_push(&c.sender, "u1", AckModel::NoAck, 3000, ResultCode::Success).await;
        assert_eq!(&rx.recv().await.unwrap().content[..], b"hello");
    }
    for _ in 0..3 {
        assert_failure(&c.sender, "u1", b"over", "global.max").await;
    }
    assert!(rx.try_recv().is_err(), "a push over the cap was delivered");
    c.shutdown().await;
}

/// Global flow control: a push that waits for the next window past its own timeout is
/// dropped (the SDK has answered TIMEOUT), as the original's `checkTimeout` does, instead of
/// reaching the device after its sender gave up on it.
#[tokio::test]
async fn a_push_held_by_flow_control_past_its_timeout_is_dropped() {
    let cfg = config_with(|c| {
        c.push.global_flow_control.limit = 1;
        // Long enough that the second push surely comes within the first window.
        c.push.global_flow_control.duration = Duration::from_secs(2);
    });
    let c = start_cluster(1, cfg).await;
    let mut rx = receiver(c.addr(0), "d1", "u1").await;
    expect_push(&c.sender, "u1", AckModel::NoAck, 3000, ResultCode::Success).await;
    assert_eq!(&rx.recv().await.unwrap().content[..], b"hello");
    // The window's one send is taken: this push waits past its timeout (800 ms at the SDK,
    // which gives the gateway 300 ms of it).
    expect_push(&c.sender, "u1", AckModel::NoAck, 800, ResultCode::Timeout).await;
    // The next window serves the next push, and nothing else.
    expect_push(&c.sender, "u1", AckModel::NoAck, 5000, ResultCode::Success).await;
    assert_eq!(&rx.recv().await.unwrap().content[..], b"hello");
    assert!(rx.try_recv().is_err(), "the timed-out push was delivered");
    c.shutdown().await;
}

/// `mp.net.connect-server-max-connections`: a connection beyond the cap is closed at once;
/// once one leaves, a new one is served.
#[tokio::test]
async fn connection_cap_refuses_then_admits_again() {
    let cfg = config_with(|c| c.net.connect_server_max_connections = 3);
    let (server, addr) = start_alone(cfg).await;
    let mut held = Vec::new();
    for i in 0..3 {
        held.push(RawClient::handshaken(addr, &format!("cap-{i}"), "android").await);
    }
    let mut over = RawClient::connect(addr).await;
    assert!(
        over.closed_by_server().await,
        "the 4th connection was served"
    );
    drop(held.pop());
    wait_until("the closed client never left", || {
        server.connection_count() <= 2
    })
    .await;
    // The slot is freed when the connection's task ends (after its cleanup): poll until a
    // new client is served.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut again = loop {
        let mut c = RawClient::connect(addr).await;
        let shook = c
            .handshake_with_key("cap-again", "android", mpush::config::DEFAULT_PUBLIC_KEY)
            .await;
        if shook.is_ok() {
            break c;
        }
        assert!(tokio::time::Instant::now() < deadline, "no slot was freed");
    };
    again.bind("cap-user", None).await.unwrap();
    assert_eq!(server.connection_count(), 3);
    server.shutdown().await;
}

/// `mp.net.connect-server-ip-connect-rate`: one source IP connecting faster than the rate
/// is refused; another source IP is not affected.
#[tokio::test]
async fn per_ip_connect_rate() {
    let cfg = config_with(|c| c.net.connect_server_ip_connect_rate = 1);
    let (server, addr) = start_alone(cfg).await;
    let _first = RawClient::handshaken(addr, "rate-1", "android").await;
    // Within the same second (the burst is the rate: 1).
    let mut second = RawClient::connect(addr).await;
    assert!(
        second.closed_by_server().await,
        "a second connection in 1 s was served"
    );
    // Another loopback source address has its own budget.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let stream = sock.connect(addr).await.unwrap();
    let mut other = RawClient::from_stream(stream);
    other.handshake("rate-2", "android").await;
    server.shutdown().await;
}

/// Records the order in which unicast pushes and broadcasts end.
#[derive(Default)]
struct EndOrder(std::sync::Mutex<Vec<&'static str>>);

impl mpush::spi::PushListener for EndOrder {
    fn on_push(
        &self,
        _user_id: &str,
        _client_type: mpush::spi::ClientType,
        _outcome: mpush::spi::PushOutcome,
    ) {
        self.0.lock().unwrap().push("unicast");
    }
    fn on_broadcast_done(&self, _task_id: Option<&str>, _delivered: u64) {
        self.0.lock().unwrap().push("broadcast");
    }
}

/// A tag-filtered broadcast over many sessions that matches none of them still yields: a
/// unicast that arrives right behind it ends first. On this single-threaded runtime a
/// broadcast that never yielded would run to its end before the unicast task got a turn.
#[tokio::test]
async fn selective_broadcast_lets_unicast_through() {
    use mpush::protocol::message::{GatewayPush, Message};
    use mpush::protocol::{Command, Packet};
    use tokio::io::AsyncWriteExt;
    const SESSIONS: usize = 600;
    let hub = MemoryHub::new();
    let order = Arc::new(EndOrder::default());
    let (server, addr) = start_with(
        &hub,
        mpush::MPushServer::builder()
            .config(test_config())
            .push_listener(order.clone()),
    )
    .await;
    let mut clients = Vec::new();
    for chunk in 0..SESSIONS / 50 {
        let batch = (0..50).map(|i| async move {
            let n = chunk * 50 + i;
            bound_client(
                addr,
                &format!("many-{n}"),
                "android",
                &format!("m{n}"),
                None,
            )
            .await
        });
        clients.extend(futures::future::join_all(batch).await);
    }
    let mut rx = receiver(addr, "target-d", "target").await;
    let broadcast = GatewayPush {
        user_id: None,
        client_type: 0,
        timeout: 0,
        content: Some(b"nobody".to_vec()),
        task_id: None,
        tags: Some(vec!["no-such-tag".into()]),
        condition: None,
    };
    let unicast = GatewayPush {
        user_id: Some("target".into()),
        client_type: 1,
        timeout: 3000,
        content: Some(b"unicast".to_vec()),
        task_id: None,
        tags: None,
        condition: None,
    };
    // Both requests in one write: the gateway reads them together and spawns the unicast
    // right behind the broadcast.
    let mut bytes = Packet::with_body(Command::GatewayPush, 1, broadcast.encode())
        .to_bytes()
        .to_vec();
    bytes.extend_from_slice(
        &Packet::with_body(Command::GatewayPush, 2, unicast.encode()).to_bytes(),
    );
    let mut gw = tokio::net::TcpStream::connect(server.gateway_addr())
        .await
        .unwrap();
    gw.write_all(&bytes).await.unwrap();
    assert_eq!(&rx.recv().await.unwrap().content[..], b"unicast");
    wait_until("the broadcast never ended", || {
        order.0.lock().unwrap().len() >= 2
    })
    .await;
    assert_eq!(*order.0.lock().unwrap(), ["unicast", "broadcast"]);
    drop(clients);
    server.shutdown().await;
}

/// Runs RSA decryptions on a runtime whose blocking pool has one thread, which the test
/// can hold: a handshake then waits in the queue for exactly as long as the test wants.
struct HeldBlockingPool {
    io: tokio::runtime::Handle,
    blocking: tokio::runtime::Handle,
}

impl mpush::spi::ExecutorFactory for HeldBlockingPool {
    fn handle(&self, role: mpush::spi::ExecutorRole) -> tokio::runtime::Handle {
        match role {
            mpush::spi::ExecutorRole::Blocking => self.blocking.clone(),
            _ => self.io.clone(),
        }
    }
}

/// `mp.net.connect-server-max-pending-handshakes`: with room for one handshake, of two
/// arriving together one holds the place (its RSA waits behind a job the test holds on the
/// one blocking thread) and the other is answered ERROR "Server busy" and closed. Once the
/// held job ends, the first is served and the place is free again.
#[tokio::test]
async fn handshake_queue_is_bounded() {
    use mpush::protocol::Message as _;
    let pool = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(1)
        .build()
        .unwrap();
    let (release, held) = std::sync::mpsc::channel::<()>();
    // Queued first, so it takes the one blocking thread and every RSA job queues behind it.
    let blocker = pool.spawn_blocking(move || held.recv_timeout(WAIT).is_ok());
    let executor = HeldBlockingPool {
        io: tokio::runtime::Handle::current(),
        blocking: pool.handle().clone(),
    };
    let cfg = config_with(|c| c.net.connect_server_max_pending_handshakes = 1);
    let builder = mpush::MPushServer::builder()
        .config(cfg)
        .executor(Arc::new(executor));
    let (server, addr) = start_with(&MemoryHub::new(), builder).await;
    let key = mpush::config::DEFAULT_PUBLIC_KEY;
    let handshake = |device: &'static str| async move {
        let mut c = RawClient::connect(addr).await;
        let r = c.handshake_with_key(device, "android", key).await;
        (c, r)
    };
    let a = tokio::spawn(handshake("hq-a"));
    let b = tokio::spawn(handshake("hq-b"));
    // Whichever came second is refused while the first waits; the first cannot finish
    // before the blocker is released, so the first to finish is the refused one.
    let (first, second) = match futures::future::select(a, b).await {
        futures::future::Either::Left((done, other))
        | futures::future::Either::Right((done, other)) => (done.unwrap(), other),
    };
    let (mut refused, busy) = first;
    let busy = busy.expect_err("the second handshake was served with no place in the queue");
    assert_eq!(busy.cmd, mpush::protocol::Command::Error);
    let e = mpush::protocol::message::ErrorMessage::decode(&busy.body).unwrap();
    assert_eq!(e.reason.as_deref(), Some("Server busy"));
    assert!(refused.closed_by_server().await);
    release.send(()).unwrap();
    assert!(
        blocker.await.unwrap(),
        "the blocker timed out before release"
    );
    let (_served, ok) = tokio::time::timeout(WAIT, second).await.unwrap().unwrap();
    ok.expect("the queued handshake is served once its RSA runs");
    // The place is free again once the first handshake's RSA is done.
    let _c = RawClient::handshaken(addr, "hq-c", "android").await;
    server.shutdown().await;
    pool.shutdown_background();
}

/// The connection cap counts WebSocket clients too: with the one slot held by a TCP
/// client, a WebSocket upgrade is refused; once the TCP client leaves it succeeds.
#[tokio::test]
async fn connection_cap_covers_websocket() {
    let mut cfg = test_config();
    cfg.net.connect_server_max_connections = 1;
    cfg.net.ws_server_port = free_port();
    let (server, addr) = start_alone(cfg).await;
    let ws = server.ws_addr().unwrap();
    let url = format!("ws://{ws}/");
    let tcp = RawClient::handshaken(addr, "ws-cap", "android").await;
    let refused = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
        .await
        .unwrap();
    assert!(
        refused.is_err(),
        "the WebSocket client was served over the cap"
    );
    drop(tcp);
    let deadline = tokio::time::Instant::now() + WAIT;
    let _ws = loop {
        match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(&url))
            .await
            .unwrap()
        {
            Ok((c, _)) => break c,
            Err(e) => assert!(
                tokio::time::Instant::now() < deadline,
                "never admitted: {e}"
            ),
        }
    };
    server.shutdown().await;
}

/// Online route sets are cached (one read for repeated pushes); capacity 0 turns the cache
/// off (one read per push).
#[tokio::test]
async fn route_cache_on_and_off() {
    let hub = MemoryHub::new();
    let (server, addr) = start_server(&hub, test_config()).await;
    let _rx = receiver(addr, "d1", "u1").await;
    for (capacity, reads) in [(1000, 1), (0, 3)] {
        let cache = flaky_cache(&hub);
        let sender = PushSender::builder()
            .config(test_config())
            .cache_manager(cache.clone())
            .discovery(Arc::new(MemoryServiceRegistry::new(hub.clone())))
            .route_cache_capacity(capacity)
            .start()
            .await
            .unwrap();
        for _ in 0..3 {
            expect_push(&sender, "u1", AckModel::NoAck, 3000, ResultCode::Success).await;
        }
        assert_eq!(
            cache.hooks.hgetalls.load(Ordering::SeqCst),
            reads,
            "capacity {capacity}"
        );
        sender.stop().await;
    }
    server.shutdown().await;
}

/// A gateway that accepts and then never reads (its in-flight cap full, or black-holed):
/// once the sender's socket and queue are full, a request still ends at its deadline, and
/// a close frees the queue at once, instead of both waiting for TCP to give up (minutes).
#[tokio::test]
async fn a_gateway_that_stops_reading_cannot_hold_requests_past_their_deadline() {
    use mpush::protocol::message::GatewayPush;
    use mpush::sender::{GatewayClient, GatewayReply};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (held_tx, held_rx) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        // Held open, never read, until the test ends.
        let _ = held_rx.await;
        drop(socket);
    });
    let gw = GatewayClient::connect(&addr.to_string(), None)
        .await
        .unwrap();
    let msg = GatewayPush {
        user_id: Some("stuck".into()),
        client_type: 1,
        timeout: 3000,
        content: Some(vec![b'x'; 4096]),
        task_id: None,
        tags: None,
        condition: None,
    };
    // Fill the socket buffers and the queue: a send that cannot be queued in 100 ms means
    // both are full (bounded: the socket takes a few MB, the queue 8,192 packets).
    let mut full = false;
    for _ in 0..50_000 {
        let queued = tokio::time::timeout(
            Duration::from_millis(100),
            gw.send_only(AckModel::NoAck.flags(), &msg),
        )
        .await;
        if queued.is_err() {
            full = true;
            break;
        }
        assert_eq!(
            queued,
            Ok(true),
            "send_only failed before the queue was full"
        );
    }
    assert!(full, "the queue never filled");

    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        gw.request(AckModel::AutoAck.flags(), &msg, deadline),
    )
    .await
    .expect("a request to a full queue outlived its deadline");
    assert!(matches!(reply, GatewayReply::Timeout), "{reply:?}");

    gw.close();
    let far = tokio::time::Instant::now() + Duration::from_secs(60);
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        gw.request(AckModel::AutoAck.flags(), &msg, far),
    )
    .await
    .expect("a request after close waited");
    assert!(matches!(reply, GatewayReply::Closed), "{reply:?}");
    let sent = tokio::time::timeout(
        Duration::from_secs(10),
        gw.send_only(AckModel::NoAck.flags(), &msg),
    )
    .await
    .expect("send_only after close waited");
    assert!(!sent);
    let _ = held_tx.send(());
}
