//! Tests against a real ZooKeeper (3.6+; CI runs 3.8), given as `MPUSH_TEST_ZK=host:port`.
//! The tests that need it are `#[ignore]`d so that plain `cargo test` lists them as ignored;
//! `scripts/test-all.sh` starts ZooKeeper and runs them with `--include-ignored`, and a test
//! then fails when the variable is unset.
//!
//! Each test works in its own namespace (`/mpush-test-<random>`), deleted at the end, so
//! tests run in parallel and on a shared server. Every wait is bounded.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mpush::MPushConfig;
use mpush::spi::registry::{ServiceRegistryFactory, create_service_backend};
use mpush::spi::{
    ServiceDiscovery, ServiceListener, ServiceNode, ServiceRegistry, SpiError, conformance,
    services,
};
use mpush_spi_zk::zookeeper_client::{Acls, Client, CreateMode, Error as ZkError, Permission};
use mpush_spi_zk::{ZkOptions, ZkServiceRegistry};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};

/// What MPush's digest auth "mpush" becomes in an ACL: `mpush:` + base64(sha1("mpush")).
const MPUSH_DIGEST_ID: &str = "mpush:IoF5XrL443rOdy6w434vrj+58TQ=";
const WAIT: Duration = Duration::from_secs(10);

/// `MPUSH_TEST_ZK`; panics when unset (the test was asked for and must not pass without it).
fn zk_addr() -> String {
    match std::env::var("MPUSH_TEST_ZK") {
        Ok(addr) if !addr.trim().is_empty() => addr,
        _ => panic!("MPUSH_TEST_ZK is not set: run this test through scripts/test-all.sh"),
    }
}

fn namespace() -> String {
    format!("mpush-test-{}", hex::encode(rand::random::<[u8; 6]>()))
}

fn options(addr: &str, namespace: &str) -> ZkOptions {
    let mut o = ZkOptions::new(addr);
    o.namespace = namespace.to_string();
    o.session_timeout = Duration::from_secs(4);
    o.connection_timeout = Duration::from_secs(3);
    o.operation_timeout = Duration::from_secs(3);
    o
}

async fn connect(addr: &str, namespace: &str) -> Arc<ZkServiceRegistry> {
    let registry = timeout(WAIT, ZkServiceRegistry::connect(options(addr, namespace)))
        .await
        .unwrap()
        .unwrap();
    Arc::new(registry)
}

/// A plain client without chroot, authenticated like a Java MPush peer.
async fn raw_client(addr: &str, digest: Option<&str>) -> Client {
    let mut connector = Client::connector().with_session_timeout(Duration::from_secs(4));
    if let Some(digest) = digest {
        connector = connector.with_auth("digest", digest.as_bytes());
    }
    timeout(WAIT, connector.connect(addr))
        .await
        .unwrap()
        .unwrap()
}

/// Deletes `/namespace` and everything below (best effort).
async fn delete_tree(client: &Client, path: String) {
    let children = client.list_children(&path).await.unwrap_or_default();
    for child in children {
        Box::pin(delete_tree(client, format!("{path}/{child}"))).await;
    }
    let _ = client.delete(&path, None).await;
}

async fn cleanup(addr: &str, namespace: &str) {
    let client = raw_client(addr, Some("mpush")).await;
    let _ = timeout(WAIT, delete_tree(&client, format!("/{namespace}"))).await;
}

/// Polls `check` every 20 ms until it holds; panics after [`WAIT`].
async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "not observed within {WAIT:?}: {what}"
        );
        sleep(Duration::from_millis(20)).await;
    }
}

fn ids(nodes: &[ServiceNode]) -> Vec<String> {
    nodes.iter().map(|n| n.node_id.clone()).collect()
}

#[derive(Default)]
struct Recorder {
    events: Mutex<Vec<(bool, ServiceNode)>>,
}

impl ServiceListener for Recorder {
    fn on_added(&self, node: &ServiceNode) {
        self.events.lock().unwrap().push((true, node.clone()));
    }
    fn on_removed(&self, node: &ServiceNode) {
        self.events.lock().unwrap().push((false, node.clone()));
    }
}

impl Recorder {
    /// The node ids the events add up to.
    fn view(&self) -> Vec<String> {
        let mut view = BTreeMap::new();
        for (added, node) in self.events.lock().unwrap().iter() {
            if *added {
                view.insert(node.node_id.clone(), ());
            } else {
                view.remove(&node.node_id);
            }
        }
        view.into_keys().collect()
    }

    fn removed(&self, id: &str) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|(added, n)| !added && n.node_id == id)
    }
}

#[ignore = "needs ZooKeeper: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conforms_to_the_service_registry_suite() {
    let addr = zk_addr();
    let ns = namespace();
    let registry = connect(&addr, &ns).await;
    let r: Arc<dyn ServiceRegistry> = registry.clone();
    let d: Arc<dyn ServiceDiscovery> = registry.clone();
    conformance::service_registry(r, d, "/conformance").await;
    registry.close().await;
    cleanup(&addr, &ns).await;
}

#[ignore = "needs ZooKeeper: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layout_and_acl_match_java_mpush() {
    let addr = zk_addr();
    let ns = namespace();
    let registry = connect(&addr, &ns).await;
    let session = registry.session().unwrap().id().0;

    let mut node = ServiceNode::new(services::CONNECT_SERVER, "10.0.0.5", 3000);
    node.attrs.insert("weight".into(), serde_json::json!(1));
    registry.register(&node).await.unwrap();

    // Read back as a Java peer would: same digest, absolute path.
    let peer = raw_client(&addr, Some("mpush")).await;
    let path = format!("/{ns}/cluster/cs/{}", node.node_id);
    let (data, stat) = peer.get_data(&path).await.unwrap();
    assert_eq!(
        std::str::from_utf8(&data).unwrap(),
        r#"{"attrs":{"weight":1},"host":"10.0.0.5","port":3000}"#
    );
    assert_eq!(
        stat.ephemeral_owner, session,
        "node must be EPHEMERAL, owned by our session"
    );
    for p in [
        path.clone(),
        format!("/{ns}/cluster/cs"),
        format!("/{ns}/cluster"),
        format!("/{ns}"),
    ] {
        let (acl, stat) = peer.get_acl(&p).await.unwrap();
        assert_eq!(acl.len(), 1, "{p}: {acl:?}");
        assert_eq!(
            (acl[0].scheme(), acl[0].id()),
            ("digest", MPUSH_DIGEST_ID),
            "{p}"
        );
        assert_eq!(acl[0].permission(), Permission::ALL, "{p}");
        if p != path {
            assert_eq!(stat.ephemeral_owner, 0, "{p} must be persistent");
        }
    }
    // CREATOR_ALL: without the digest a client sees the node but cannot read it.
    let stranger = raw_client(&addr, None).await;
    assert!(stranger.check_stat(&path).await.unwrap().is_some());
    assert_eq!(stranger.get_data(&path).await.unwrap_err(), ZkError::NoAuth);

    // A node written by a Java peer (plus one with foreign data) shows up through the watch;
    // the foreign one is skipped; lookup is sorted by node id descending.
    let service = format!("/{ns}/cluster/cs");
    let creator_all = CreateMode::Ephemeral.with_acls(Acls::creator_all());
    let java_id = "ffffffff-0000-4000-8000-000000000000";
    peer.create(
        &format!("{service}/{java_id}"),
        br#"{"host":"10.0.0.6","port":3000,"attrs":{"public_ip":"203.0.113.9"}}"#,
        &creator_all,
    )
    .await
    .unwrap();
    peer.create(&format!("{service}/zzz-not-json"), b"hello", &creator_all)
        .await
        .unwrap();
    let mut expected = vec![java_id.to_string(), node.node_id.clone()];
    expected.sort_by(|a, b| b.cmp(a));
    eventually("the Java peer's node is discovered", || async {
        ids(&registry.lookup(services::CONNECT_SERVER).await.unwrap()) == expected
    })
    .await;
    let java = registry
        .lookup(services::CONNECT_SERVER)
        .await
        .unwrap()
        .into_iter()
        .find(|n| n.node_id == java_id)
        .unwrap();
    assert_eq!((java.host.as_str(), java.port), ("10.0.0.6", 3000));
    assert_eq!(java.attrs["public_ip"], "203.0.113.9");
    assert_eq!(java.service_name, services::CONNECT_SERVER);

    // An existing node at the exact path (another session's) is replaced by ours.
    let taken = ServiceNode {
        node_id: java_id.to_string(),
        ..node.clone()
    };
    registry.register(&taken).await.unwrap();
    let (data, stat) = peer
        .get_data(&format!("{service}/{java_id}"))
        .await
        .unwrap();
    assert_eq!(stat.ephemeral_owner, session);
    assert_eq!(std::str::from_utf8(&data).unwrap(), taken.to_json());

    registry.deregister(&node).await.unwrap();
    assert!(peer.check_stat(&path).await.unwrap().is_none());
    registry.close().await;
    assert!(
        peer.check_stat(&format!("{service}/{java_id}"))
            .await
            .unwrap()
            .is_none(),
        "closing the registry must remove its ephemeral nodes"
    );
    drop((peer, stranger));
    cleanup(&addr, &ns).await;
}

#[ignore = "needs ZooKeeper: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_see_each_other_and_ephemeral_nodes_vanish() {
    let addr = zk_addr();
    let ns = namespace();
    let a = connect(&addr, &ns).await;
    let b = connect(&addr, &ns).await;
    let svc = services::GATEWAY_SERVER;
    let node_a = ServiceNode::new(svc, "10.0.0.1", 3001);
    let node_b = ServiceNode::new(svc, "10.0.0.2", 3001);

    let b_watch = Arc::new(Recorder::default());
    b.subscribe(svc, b_watch.clone()).await.unwrap();
    a.register(&node_a).await.unwrap();
    b.register(&node_b).await.unwrap();
    let mut both = vec![node_a.node_id.clone(), node_b.node_id.clone()];
    both.sort_by(|x, y| y.cmp(x));
    for (name, server) in [("a", &a), ("b", &b)] {
        eventually(&format!("server {name} sees both nodes"), || async {
            ids(&server.lookup(svc).await.unwrap()) == both
        })
        .await;
    }
    let mut sorted = both.clone();
    sorted.sort();
    eventually("b's listener sees both nodes", || async {
        b_watch.view() == sorted
    })
    .await;
    let seen_by_b = b.lookup(svc).await.unwrap();
    assert!(
        seen_by_b.contains(&node_a),
        "a's node with every field: {seen_by_b:?}"
    );

    // a's session ends: its ephemeral node goes, b notices.
    a.close().await;
    eventually("a's node disappears from b", || async {
        ids(&b.lookup(svc).await.unwrap()) == [node_b.node_id.clone()]
    })
    .await;
    eventually("b's listener gets on_removed", || async {
        b_watch.removed(&node_a.node_id)
    })
    .await;
    assert!(matches!(
        a.register(&node_a).await,
        Err(SpiError::Unavailable { .. })
    ));

    // Dropping the handle ends the session too.
    let c = connect(&addr, &ns).await;
    let node_c = ServiceNode::new(svc, "10.0.0.3", 3001);
    c.register(&node_c).await.unwrap();
    eventually("c's node appears at b", || async {
        b.lookup(svc).await.unwrap().contains(&node_c)
    })
    .await;
    drop(c);
    eventually("c's node disappears after drop", || async {
        !b.lookup(svc).await.unwrap().contains(&node_c)
    })
    .await;

    b.close().await;
    cleanup(&addr, &ns).await;
}

/// A TCP proxy to ZooKeeper that can be cut and restored, to simulate an outage.
struct Proxy {
    port: u16,
    upstream: String,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(upstream: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let proxy = Self {
            port,
            upstream: upstream.to_string(),
            tasks: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let upstream = self.upstream.clone();
        let tasks = self.tasks.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut down, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let copy = tokio::spawn(async move {
                    if let Ok(mut up) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                tasks.lock().unwrap().push(copy);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Closes the listener and every proxied connection.
    fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    async fn restore(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }
}

#[ignore = "needs ZooKeeper: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_expiry_re_registers_and_re_watches() {
    let addr = zk_addr();
    let ns = namespace();
    let proxy = Proxy::start(&addr).await;
    let registry = connect(&format!("127.0.0.1:{}", proxy.port), &ns).await;
    let svc = services::CONNECT_SERVER;
    let node = ServiceNode::new(svc, "10.0.0.1", 3000);
    registry.register(&node).await.unwrap();
    let watch = Arc::new(Recorder::default());
    registry.subscribe(svc, watch.clone()).await.unwrap();
    let old = registry.session().unwrap();

    // Expire the session: cut the registry off, take the session over from a second
    // client and close it there (the server then deletes its ephemeral nodes at once).
    proxy.cut();
    let thief = timeout(
        WAIT,
        Client::connector()
            .with_session_timeout(Duration::from_secs(4))
            .with_session(old.clone())
            .connect(&addr),
    )
    .await
    .unwrap()
    .unwrap();
    drop(thief);
    let peer = raw_client(&addr, Some("mpush")).await;
    let path = format!("/{ns}/cluster/cs/{}", node.node_id);
    eventually("the expired session's node is deleted", || async {
        peer.check_stat(&path).await.unwrap().is_none()
    })
    .await;
    proxy.restore().await;

    eventually("a new session re-registers the node", || async {
        let new = registry.session().map(|s| s.id().0);
        match (new, peer.check_stat(&path).await) {
            (Some(new), Ok(Some(stat))) => new != old.id().0 && stat.ephemeral_owner == new,
            _ => false,
        }
    })
    .await;

    // The watch is back: a node created by someone else is seen and notified.
    let other_id = "00000000-0000-4000-8000-000000000001";
    peer.create(
        &format!("/{ns}/cluster/cs/{other_id}"),
        br#"{"host":"10.0.0.9","port":3000}"#,
        &CreateMode::Ephemeral.with_acls(Acls::creator_all()),
    )
    .await
    .unwrap();
    // Depending on whether the watch re-attached before or after the re-registration, the
    // listener saw our node's gap (removed, added again) or nothing of it; it must end up
    // consistent either way.
    eventually("the re-attached watch reports the new node", || async {
        let view = watch.view();
        view.contains(&other_id.to_string())
            && (watch.removed(&node.node_id) == view.contains(&node.node_id))
    })
    .await;
    let mut both = vec![node.node_id.clone(), other_id.to_string()];
    both.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids(&registry.lookup(svc).await.unwrap()), both);

    drop(peer);
    registry.close().await;
    proxy.cut();
    cleanup(&addr, &ns).await;
}

#[ignore = "needs ZooKeeper: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_fails_fast_then_recovers() {
    let addr = zk_addr();
    let ns = namespace();
    let proxy = Proxy::start(&addr).await;
    let mut o = options(&format!("127.0.0.1:{}", proxy.port), &ns);
    o.operation_timeout = Duration::from_secs(1);
    let registry = ZkServiceRegistry::connect(o).await.unwrap();
    let svc = services::GATEWAY_SERVER;
    let node = ServiceNode::new(svc, "10.0.0.1", 3001);
    registry.register(&node).await.unwrap();
    assert_eq!(registry.lookup(svc).await.unwrap(), vec![node.clone()]);

    proxy.cut();
    let started = Instant::now();
    let other = ServiceNode::new("/cluster/other", "10.0.0.2", 1);
    let result = timeout(Duration::from_secs(3), registry.register(&other)).await;
    assert!(
        matches!(result, Ok(Err(SpiError::Unavailable { .. }))),
        "register during an outage: {result:?}"
    );
    let result = timeout(Duration::from_secs(3), registry.lookup("/cluster/other")).await;
    assert!(
        matches!(result, Ok(Err(SpiError::Unavailable { .. }))),
        "lookup of an uncached service during an outage: {result:?}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded by the operation timeout"
    );
    assert_eq!(
        registry.lookup(svc).await.unwrap(),
        vec![node.clone()],
        "a cached service is served during an outage"
    );

    proxy.restore().await;
    eventually("calls work again after the outage", || async {
        registry.register(&other).await.is_ok()
    })
    .await;
    eventually("the cache catches up", || async {
        registry
            .lookup("/cluster/other")
            .await
            .map(|n| n == [other.clone()])
            .unwrap_or(false)
    })
    .await;
    let peer = raw_client(&addr, Some("mpush")).await;
    let path = format!("/{ns}{}", node.node_path());
    eventually("our node is registered after the outage", || async {
        peer.check_stat(&path).await.ok().flatten().is_some()
    })
    .await;
    drop(peer);
    registry.close().await;
    proxy.cut();
    cleanup(&addr, &ns).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_zookeeper_is_unavailable_within_the_connection_timeout() {
    // Runs without MPUSH_TEST_ZK: it needs no ZooKeeper.
    // A port nobody listens on (refused) and one that accepts but never answers (hangs).
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = mpush::testkit::free_loopback_port();
    for address in [
        format!("127.0.0.1:{refused}"),
        silent.local_addr().unwrap().to_string(),
    ] {
        let mut o = options(&address, &namespace());
        o.connection_timeout = Duration::from_secs(1);
        let started = Instant::now();
        let result = timeout(Duration::from_secs(5), ZkServiceRegistry::connect(o))
            .await
            .expect("connect must give up by itself");
        assert!(
            matches!(result, Err(SpiError::Unavailable { .. })),
            "{address}: {result:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(3), "{address}");
    }
}

#[ignore = "needs ZooKeeper: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factory_is_registered_as_zk() {
    let zk = inventory::iter::<ServiceRegistryFactory>()
        .find(|f| f.name == "zk")
        .expect("a \"zk\" ServiceRegistryFactory");
    assert_eq!(zk.priority, 10);

    let addr = zk_addr();
    let ns = namespace();
    let mut config = MPushConfig::default();
    config.spi.service_registry = "zk".into();
    config.zk.server_address = addr.clone();
    config.zk.namespace = ns.clone();
    let backend = timeout(WAIT, create_service_backend(Arc::new(config)))
        .await
        .unwrap()
        .unwrap();
    let node = ServiceNode::new(services::WS_SERVER, "10.0.0.1", 8080);
    backend.registry.register(&node).await.unwrap();
    assert_eq!(
        backend.discovery.lookup(services::WS_SERVER).await.unwrap(),
        vec![node.clone()]
    );
    backend.registry.deregister(&node).await.unwrap();
    drop(backend);
    cleanup(&addr, &ns).await;
}

/// `/dns/mapping` (spec §11), written by another system: the `zk` DNS mapping manager maps
/// each node's `attrs.origin` to its host:port and follows additions and removals.
#[ignore = "needs ZooKeeper: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_mapping_manager_reads_and_watches_dns_mapping() {
    use mpush::spi::DnsMapping;
    use mpush::spi::registry::create_dns_mapping_manager;

    let addr = zk_addr();
    let ns = namespace();
    let peer = raw_client(&addr, Some("mpush")).await;
    let persistent = CreateMode::Persistent.with_acls(Acls::creator_all());
    for path in [
        format!("/{ns}"),
        format!("/{ns}/dns"),
        format!("/{ns}/dns/mapping"),
    ] {
        match peer.create(&path, b"", &persistent).await {
            Ok(_) | Err(ZkError::NodeExists) => {}
            Err(e) => panic!("create {path}: {e}"),
        }
    }
    let first = format!("/{ns}/dns/mapping/a");
    peer.create(
        &first,
        br#"{"host":"10.1.0.1","port":8080,"attrs":{"origin":"API.example.com"}}"#,
        &persistent,
    )
    .await
    .unwrap();
    peer.create(&format!("/{ns}/dns/mapping/junk"), b"not json", &persistent)
        .await
        .unwrap();

    let mut config = MPushConfig::default();
    config.spi.dns_mapping_manager = "zk".into();
    config.zk.server_address = addr.clone();
    config.zk.namespace = ns.clone();
    let manager = timeout(WAIT, create_dns_mapping_manager(Arc::new(config)))
        .await
        .unwrap()
        .unwrap()
        .expect("zk is selected by name");
    let target = |ip: &str, port| {
        Some(DnsMapping {
            ip: ip.into(),
            port,
        })
    };
    eventually("the existing mapping is read", || async {
        manager.lookup("api.example.com") == target("10.1.0.1", 8080)
    })
    .await;
    assert_eq!(manager.lookup("other.example.com"), None);

    peer.create(
        &format!("/{ns}/dns/mapping/b"),
        br#"{"host":"10.1.0.2","port":9090,"attrs":{"origin":"api.example.com"}}"#,
        &persistent,
    )
    .await
    .unwrap();
    peer.delete(&first, None).await.unwrap();
    eventually("the change is watched", || async {
        manager.lookup("api.example.com") == target("10.1.0.2", 9090)
    })
    .await;
    drop(manager);
    cleanup(&addr, &ns).await;
}
