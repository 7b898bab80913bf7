//! The alloc service (spec §14) end to end: the server list in load order, kept in step with
//! the registry without waiting for the 5-minute refresh, a client connecting to the server
//! it was given, `POST /push` reaching a device, and bad requests. On the memory backends,
//! and (ignored unless the test command provides them) on Redis + ZooKeeper.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use mpush::MPushConfig;
use mpush::alloc::{AllocServer, MAX_BODY, PUSH_REPLY, RunningAlloc};
use mpush_spi_memory::{MemoryCache, MemoryHub, MemoryServiceRegistry};

/// One HTTP/1.1 exchange on a fresh connection: (status, body).
async fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    common::http::request(addr, method, path, &[], body).await
}

/// Polls GET / until it answers `want`.
async fn wait_list(alloc: &RunningAlloc, want: &str) {
    poll_until(Duration::from_millis(20), move || async move {
        let (status, body) = http(alloc.local_addr(), "GET", "/", b"").await;
        assert_eq!(status, 200);
        if body == want {
            Ok(())
        } else {
            Err(format!("alloc list {body:?}, want {want:?}"))
        }
    })
    .await;
}

/// A test config whose connect server listens and registers on `ip` (any 127.0.0.0/8
/// address is loopback on Linux), so each server has its own online set `mp:oul:<ip>`.
fn config_on(ip: &str) -> MPushConfig {
    let mut c = test_config();
    c.net.connect_server_bind_ip = ip.into();
    c.net.public_ip = ip.into();
    c
}

async fn start_alloc(hub: &Arc<MemoryHub>) -> RunningAlloc {
    AllocServer::builder()
        .config(test_config())
        .cache_manager(Arc::new(MemoryCache::new(hub.clone())))
        .discovery(Arc::new(MemoryServiceRegistry::new(hub.clone())))
        .bind_ip("127.0.0.1")
        .port(0)
        .start()
        .await
        .unwrap()
}

/// Waits until `n` users are in the online set of `server` (written after the bind's OK).
async fn wait_online(server: &mpush::RunningServer, n: u64) {
    poll_until(Duration::from_millis(10), move || async move {
        let got = server.online_user_count().await.unwrap();
        if got == n {
            Ok(())
        } else {
            Err(format!("{got} users online, want {n}"))
        }
    })
    .await;
}

#[tokio::test]
async fn servers_in_load_order_following_the_registry() {
    let hub = MemoryHub::new();
    let (a, addr_a) = start_server(&hub, config_on("127.0.0.1")).await;
    let (b, addr_b) = start_server(&hub, config_on("127.0.0.2")).await;
    let mut clients = Vec::new();
    for i in 0..2 {
        clients
            .push(bound_client(addr_a, &format!("a{i}"), "android", &format!("ua{i}"), None).await);
    }
    clients.push(bound_client(addr_b, "b0", "android", "ub0", None).await);
    wait_online(&a, 2).await;
    wait_online(&b, 1).await;

    // Least loaded first, whatever the registration order.
    let alloc = start_alloc(&hub).await;
    wait_list(&alloc, &format!("{addr_b},{addr_a}")).await;
    assert_eq!(alloc.servers(), format!("{addr_b},{addr_a}"));

    // A device given the list connects to its first entry, as MPush's client does.
    let (_, body) = http(alloc.local_addr(), "GET", "/any/path?x=1", b"").await;
    let first: SocketAddr = body.split(',').next().unwrap().parse().unwrap();
    clients.push(bound_client(first, "new-dev", "android", "new-user", None).await);
    assert!(b.local_users().contains(&"new-user".to_string()));

    // B gets busier (4 users); a new, empty server C joins: the registry change re-sorts
    // the list now, not at the next periodic refresh.
    for i in 1..3 {
        clients
            .push(bound_client(addr_b, &format!("b{i}"), "android", &format!("ub{i}"), None).await);
    }
    wait_online(&b, 4).await;
    let (c, addr_c) = start_server(&hub, config_on("127.0.0.3")).await;
    wait_list(&alloc, &format!("{addr_c},{addr_a},{addr_b}")).await;

    // A server that stops leaves the list without waiting for the periodic refresh.
    c.shutdown().await;
    wait_list(&alloc, &format!("{addr_a},{addr_b}")).await;

    alloc.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test]
async fn post_push_reaches_a_connected_client() {
    let hub = MemoryHub::new();
    let (server, addr) = start_server(&hub, test_config()).await;
    let client = bound_client(addr, "dev-p", "android", "push-user", None).await;
    let mut rx = spawn_receiver(client, AckPolicy::All);
    let alloc = start_alloc(&hub).await;

    let (status, body) = http(
        alloc.local_addr(),
        "POST",
        "/push",
        br#"{"userId":"push-user","hello":"from alloc"}"#,
    )
    .await;
    assert_eq!((status, body.as_str()), (200, PUSH_REPLY));
    let got = tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("push within WAIT")
        .expect("receiver alive");
    // §9.8: a PushMsg of type 3 whose content is the NotificationDO JSON.
    let msg: serde_json::Value = serde_json::from_slice(&got.content).unwrap();
    assert_eq!(msg["msgType"], 3);
    assert!(msg["msgId"].as_str().unwrap().starts_with("msg_"), "{msg}");
    let notification: serde_json::Value =
        serde_json::from_str(msg["content"].as_str().unwrap()).unwrap();
    assert!(
        notification["content"]
            .as_str()
            .unwrap()
            .ends_with("from alloc"),
        "{notification}"
    );
    assert_eq!(notification["nid"], 1);

    // A broadcast reaches the same device.
    let (status, _) = http(
        alloc.local_addr(),
        "POST",
        "/push",
        br#"{"broadcast":true,"hello":"everyone"}"#,
    )
    .await;
    assert_eq!(status, 200);
    let got = recv_within(&mut rx).await;
    let msg: serde_json::Value = serde_json::from_slice(&got.content).unwrap();
    assert!(
        msg["content"].as_str().unwrap().contains("everyone"),
        "{msg}"
    );

    alloc.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_requests_get_4xx() {
    let hub = MemoryHub::new();
    let alloc = start_alloc(&hub).await;
    let at = alloc.local_addr();

    let (status, body) = http(at, "POST", "/push", b"{not json").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid JSON"), "{body}");
    let (status, _) = http(at, "POST", "/push", br#"{"userId":42}"#).await;
    assert_eq!(status, 400, "a userId must be a string");
    let (status, body) = http(at, "POST", "/push", b"{}").await;
    assert_eq!(status, 400, "no target: {body}");
    let big = format!(r#"{{"userId":"u","hello":"{}"}}"#, "x".repeat(MAX_BODY));
    let (status, _) = http(at, "POST", "/push", big.as_bytes()).await;
    assert_eq!(status, 413, "body over {MAX_BODY} bytes");
    let (status, _) = http(at, "GET", "/push", b"").await;
    assert_eq!(status, 405, "/push is not a list path");

    // No servers registered: an empty list. The demo page is served.
    assert_eq!(http(at, "GET", "/", b"").await, (200, String::new()));
    let (status, page) = http(at, "GET", "/index.html", b"").await;
    assert_eq!(status, 200);
    assert!(page.contains("/push"), "{page}");

    alloc.shutdown().await;
}

#[ignore = "needs Redis and ZooKeeper: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alloc_on_redis_and_zookeeper() {
    use mpush_spi_redis as _;
    use mpush_spi_zk as _;
    let (redis, zk) = (
        routing::required_env("MPUSH_TEST_REDIS"),
        routing::required_env("MPUSH_TEST_ZK"),
    );
    let run: u32 = rand::random();
    let backend = |ip: &str| {
        let mut c = config_on(ip);
        on_redis_and_zk(&mut c, &redis, &zk, &format!("mpush-alloc-{run}"));
        c
    };
    // Distinct public IPs per run: mp:oul:<ip> is shared by every test using that Redis.
    let ip = |n: u32| format!("127.{}.{}.{n}", (run >> 8) & 0xff, run & 0xff);
    let (ip_a, ip_b) = (ip(1), ip(2));
    let start = |cfg: MPushConfig| async move {
        let s = mpush::MPushServer::builder()
            .config(cfg)
            .start()
            .await
            .unwrap();
        let addr = s.connect_addr();
        (s, addr)
    };
    let (a, addr_a) = start(backend(&ip_a)).await;
    let (b, addr_b) = start(backend(&ip_b)).await;
    let _on_a = bound_client(
        addr_a,
        &format!("za-{run}"),
        "android",
        &format!("zua-{run}"),
        None,
    )
    .await;
    let client = bound_client(
        addr_b,
        &format!("zb-{run}"),
        "android",
        &format!("zub-{run}"),
        None,
    )
    .await;
    let mut rx = spawn_receiver(client, AckPolicy::All);
    let _on_a2 = bound_client(
        addr_a,
        &format!("za2-{run}"),
        "ios",
        &format!("zua2-{run}"),
        None,
    )
    .await;
    wait_online(&a, 2).await;
    wait_online(&b, 1).await;

    let alloc = AllocServer::builder()
        .config(backend("127.0.0.1"))
        .bind_ip("127.0.0.1")
        .port(0)
        .start()
        .await
        .unwrap();
    wait_list(&alloc, &format!("{addr_b},{addr_a}")).await;

    let body = format!(r#"{{"userId":"zub-{run}","hello":"zk"}}"#);
    let (status, reply) = http(alloc.local_addr(), "POST", "/push", body.as_bytes()).await;
    assert_eq!((status, reply.as_str()), (200, PUSH_REPLY));
    let got = recv_within(&mut rx).await;
    let msg: serde_json::Value = serde_json::from_slice(&got.content).unwrap();
    let notification: serde_json::Value =
        serde_json::from_str(msg["content"].as_str().unwrap()).unwrap();
    assert!(
        notification["content"].as_str().unwrap().ends_with("zk"),
        "{notification}"
    );

    // A node deregistered from ZooKeeper leaves the list through the watch.
    b.shutdown().await;
    wait_list(&alloc, &addr_a.to_string()).await;

    alloc.shutdown().await;
    a.shutdown().await;
}
