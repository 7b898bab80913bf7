//! Cluster routing (issue 7) item 3: route writes are atomic under racing binds and a
//! disconnect racing a bind; each on the memory backend and on Redis + ZooKeeper.
//!
//! Black box: in-process clusters of two or more nodes over real sockets, devices on the Rust
//! client SDK, pushes through `PushSender`, routes read straight from the cache
//! (`mp:ur:<userId>`, spec §10). The kit lives in `tests/common/routing.rs`. Redis +
//! ZooKeeper variants are `#[ignore]`d (run them with `scripts/test-all.sh`, or
//! `--include-ignored` with `MPUSH_TEST_REDIS` / `MPUSH_TEST_ZK` set) and panic when those
//! variables are missing.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::WAIT;
use common::routing::*;
use mpush::spi::CacheManager as _;
// Link the ZooKeeper backend so its inventory registration exists.
use mpush_spi_zk as _;

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
    let bad = unsuccessful_pushes(&sender, &users, "after-race").await;
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
    let (a, b, sender) = two_nodes_and_sender(fx).await;
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
    let not_ok = unsuccessful_pushes(&sender, &users, "after-disconnect-race")
        .await
        .len();
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
// Two binds of one (user, type) on one node.

/// Holds the first route write of one key until a second write of that key has landed, or
/// until a bound has passed (a node that serialises its binds never sends the second one
/// while the first is held).
struct HoldFirstWrite {
    key: String,
    writes: std::sync::atomic::AtomicUsize,
    second_landed: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl common::hooked_cache::Hooks for HoldFirstWrite {
    async fn hcompare_and_set(
        &self,
        inner: &mpush_spi_memory::MemoryCache,
        cas: mpush::spi::HashCas<'_>,
    ) -> mpush::spi::SpiResult<mpush::spi::CasOutcome> {
        if cas.key != self.key {
            return inner.hcompare_and_set(cas).await;
        }
        let n = self
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == 0 {
            let _ =
                tokio::time::timeout(Duration::from_secs(1), self.second_landed.notified()).await;
            return inner.hcompare_and_set(cas).await;
        }
        let outcome = inner.hcompare_and_set(cas).await;
        self.second_landed.notify_one();
        outcome
    }
}

/// Two devices bind one (user, type) on one node at once, and the first bind's cluster
/// write is slow: the node still ends with one bound device, the one the cluster route
/// names, and the other kicked; pushes reach the bound one. Without the node ordering its
/// binds, the slow write landed last: the route named a device that had been kicked, the
/// other was displaced at the next check, and both were kicked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_binds_of_one_user_on_one_node_leave_one_device_bound() {
    let fx = Memory::new();
    within("two binds on one node", async {
        let user = format!("one-node-{}", run_id());
        let hooks = std::sync::Arc::new(HoldFirstWrite {
            key: mpush::protocol::keys::user_route_key(&user),
            writes: Default::default(),
            second_landed: tokio::sync::Notify::new(),
        });
        let cache = common::hooked_cache::HookedCache {
            inner: mpush_spi_memory::MemoryCache::new(fx.hub.clone()),
            hooks: hooks.clone(),
        };
        let node = fx.node_with(std::sync::Arc::new(cache), None).await;
        let sender = fx.sender().await;
        wait_gateways(&sender, 1).await;
        let devices = [
            Device::connect(node.addr, &format!("{user}-a"), None)
                .await
                .unwrap(),
            Device::connect(node.addr, &format!("{user}-b"), None)
                .await
                .unwrap(),
        ];
        let (ra, rb) = tokio::join!(
            devices[0].client.bind(&user, None, None),
            devices[1].client.bind(&user, None, None)
        );
        assert!(ra.is_ok() && rb.is_ok(), "binds: {ra:?} {rb:?}");
        // One of them is kicked, and the route names the other.
        let settled = eventually(WAIT, || async {
            devices.iter().filter(|d| d.kicked()).count() == 1
        })
        .await;
        assert!(
            settled,
            "kicked: [{}, {}]",
            devices[0].kicked(),
            devices[1].kicked()
        );
        let bound = devices.iter().find(|d| !d.kicked()).unwrap();
        let conn = node.conn_id(&user, &bound.device_id).await;
        assert!(conn.is_some(), "the unkicked device is not routed here");
        let r = route(fx.cache(), &user).await.unwrap();
        assert_eq!(r.conn_id, conn, "the route names {:?}", r.device_id);
        assert_eq!(
            codes(&push(&sender, &user, "after-binds", mpush::AckModel::AutoAck).await),
            vec![mpush::sender::ResultCode::Success]
        );
        assert!(bound.wait_push("after-binds", WAIT).await);
        for d in &devices {
            d.barrier().await;
        }
        assert_eq!(
            devices.iter().filter(|d| d.kicked()).count(),
            1,
            "the bound device was kicked after the push"
        );
        for d in devices {
            d.client.close().await;
        }
        stop_all(sender, vec![node]).await;
    })
    .await;
}
