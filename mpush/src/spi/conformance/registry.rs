//! The ServiceRegistry / ServiceDiscovery conformance suite.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{QUIET_PERIOD, call, eventually, lock};
use crate::spi::{ServiceDiscovery, ServiceListener, ServiceNode, ServiceRegistry};

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

/// After a change: `lookup` returns exactly `expected` (`rule` is what that checks), and
/// `watch` comes to show the same nodes (`seen`).
async fn expect_nodes(
    discovery: &dyn ServiceDiscovery,
    svc: &str,
    watch: &Watch,
    expected: &[&ServiceNode],
    rule: &str,
    seen: &str,
) {
    assert_eq!(
        by_id(call("lookup", discovery.lookup(svc)).await),
        by_id(expected.iter().map(|n| (*n).clone()).collect()),
        "{rule}"
    );
    eventually(seen, || watch.shows(expected)).await;
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
    let rule = "lookup must return every registered node with all fields and attrs intact";
    let seen = "the listener sees both registrations";
    expect_nodes(&*discovery, &svc, &watch, &[&a, &b], rule, seen).await;

    // Replace.
    let mut a2 = a.clone();
    a2.port = 3100;
    a2.attrs.insert("weight".into(), serde_json::json!(2));
    call("register again (replace)", registry.register(&a2)).await;
    let rule = "registering an existing node must replace its data";
    let seen = "the listener sees the replacement";
    expect_nodes(&*discovery, &svc, &watch, &[&a2, &b], rule, seen).await;

    // Deregister.
    call("deregister", registry.deregister(&b)).await;
    let (rule, seen) = (
        "deregister must remove the node",
        "the listener sees the removal",
    );
    expect_nodes(&*discovery, &svc, &watch, &[&a2], rule, seen).await;
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
