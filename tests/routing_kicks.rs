//! Cluster routing (issue 7) item 7 and the bind in progress: a lost kick cannot leave two
//! devices served (found by the route watch where the cache reports changes, by the next
//! push where it cannot), and a push during a bind does not displace the binding connection
//! (memory backend: the faults are injected through wrapped SPI backends).
//!
//! Black box: in-process clusters of two or more nodes over real sockets, devices on the Rust
//! client SDK, pushes through `PushSender`, routes read straight from the cache
//! (`mp:ur:<userId>`, spec §10). The kit lives in `tests/common/routing.rs`. Redis +
//! ZooKeeper variants are `#[ignore]`d (run them with `scripts/test-all.sh`, or
//! `--include-ignored` with `MPUSH_TEST_REDIS` / `MPUSH_TEST_ZK` set) and panic when those
//! variables are missing.

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::WAIT;
use common::routing::*;
use mpush::AckModel;
use mpush::protocol::message::ErrorCode;
use mpush::sender::GatewayReply;
use mpush::sender::{PushContext, ResultCode};
use mpush::spi::CacheManager;
use mpush_spi_memory::{MemoryCache, MemoryMQ};
// Link the ZooKeeper backend so its inventory registration exists.
use mpush_spi_zk as _;

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

/// A node on `fx`'s hub whose kick requests to other nodes are all lost.
async fn node_losing_kicks(fx: &Memory) -> Node {
    fx.node_with(
        Arc::new(MemoryCache::new(fx.hub.clone())),
        Some(Arc::new(LosesKicks(MemoryMQ::new(fx.hub.clone())))),
    )
    .await
}

/// Hooks of a cache that cannot report key changes (as a Redis Cluster answers
/// `watch_prefix`): everything else passes through.
struct NoWatch;

#[async_trait::async_trait]
impl common::hooked_cache::Hooks for NoWatch {
    fn watches(&self) -> bool {
        false
    }
}

/// A node on `fx`'s hub whose cache does not report route changes.
async fn node_without_watch(fx: &Memory) -> Node {
    let cache = common::hooked_cache::HookedCache {
        inner: MemoryCache::new(fx.hub.clone()),
        hooks: Arc::new(NoWatch),
    };
    fx.node_with(Arc::new(cache), None).await
}

/// Node B's kick to node A is lost, and A's cache does not report route changes. The first
/// push that still reaches A (a route cache that names A) finds that the cluster route names
/// B's connection: A answers ROUTER_CHANGE, treats its own connection as displaced (KICK, no
/// unicast, no broadcast from then on), and the SDK delivers to the new device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_kick_cannot_leave_two_devices_served() {
    let fx = Memory::new();
    within("lost kick", async {
        let a = node_without_watch(&fx).await;
        let b = node_losing_kicks(&fx).await;
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

/// Node B's kick to node A is lost, and A's cache reports route changes (the memory cache,
/// a single Redis): the change of the route is enough. A checks its connection's route at
/// once, finds B's connection named, and displaces its own (KICK) with no push at all; a
/// broadcast then reaches only the new device.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_kick_is_found_when_the_route_changes() {
    let fx = Memory::new();
    within("lost kick, watched", async {
        let a = fx.node().await;
        let b = node_losing_kicks(&fx).await;
        let sender = fx.sender().await;
        wait_gateways(&sender, 2).await;
        let run = run_id();
        let user = format!("lost-kick-watched-{run}");
        let mut f = Failures::default();
        let watched = eventually(WAIT, || async { a.server.route_changes_watched() }).await;
        f.check(watched, || {
            "the memory cache's route watch never came up".into()
        });

        let old = Device::bound(a.addr, &format!("{user}-old"), &user).await;
        let new = Device::bound(b.addr, &format!("{user}-new"), &user).await;
        let kicked = eventually(WAIT, || async { old.kicked() }).await;
        f.check(kicked, || {
            "the route changed, its kick was lost, and the old device was never displaced".into()
        });
        let gone = eventually(WAIT, || async { a.server.local_users().is_empty() }).await;
        f.check(gone, || {
            "the old node still routes the user locally after the route changed".into()
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
        f.check(old.count(&format!("bc-{run}")) == 0, || {
            "the displaced device received the broadcast".into()
        });
        old.client.close().await;
        new.client.close().await;
        stop_all(sender, vec![a, b]).await;
        f.assert_none("lost kick, watched");
    })
    .await;
}

/// Counts one node's route reads (`HGET mp:ur:*`), and holds them while `closed`.
#[derive(Default)]
struct CountsRouteReads {
    reads: std::sync::atomic::AtomicUsize,
    closed: std::sync::atomic::AtomicBool,
    parked: std::sync::atomic::AtomicUsize,
    open: tokio::sync::Notify,
}

impl CountsRouteReads {
    fn get(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn parked(&self) -> usize {
        self.parked.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn open(&self) {
        self.closed
            .store(false, std::sync::atomic::Ordering::SeqCst);
        self.open.notify_waiters();
    }
}

#[async_trait::async_trait]
impl common::hooked_cache::Hooks for CountsRouteReads {
    async fn hget(
        &self,
        inner: &MemoryCache,
        key: &str,
        field: &str,
    ) -> mpush::spi::SpiResult<Option<String>> {
        if key.starts_with("mp:ur:") {
            self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            // Registered before the flag is read, so an `open` in between is not missed.
            let open = self.open.notified();
            if self.closed.load(std::sync::atomic::Ordering::SeqCst) {
                self.parked
                    .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                open.await;
                self.parked
                    .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        inner.hget(key, field).await
    }
}

/// While the cache reports route changes, a push to a connection whose route was read and
/// found naming it does not read the route again. A bind elsewhere is such a change even
/// when its kick is lost: it voids the verification, so a push through the old node before
/// the change's own route check has answered reads the route too, answers ROUTER_CHANGE and
/// displaces the old connection, as when every push read the route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_route_is_read_again_once_it_changes() {
    let fx = Memory::new();
    within("verified route", async {
        let reads = Arc::new(CountsRouteReads::default());
        let cache = common::hooked_cache::HookedCache {
            inner: MemoryCache::new(fx.hub.clone()),
            hooks: reads.clone(),
        };
        let a = fx.node_with(Arc::new(cache), None).await;
        let b = node_losing_kicks(&fx).await;
        let run = run_id();
        let user = format!("verified-{run}");
        let mut f = Failures::default();
        let watched = eventually(WAIT, || async { a.server.route_changes_watched() }).await;
        f.check(watched, || {
            "the memory cache's route watch never came up".into()
        });

        let old = Device::bound(a.addr, &format!("{user}-old"), &user).await;
        // The bind's route write may still be in flight when the device hears BIND OK (the
        // reply goes first): a push meanwhile reads the route without verifying it. Within a
        // few pushes one must verify it, and from then on pushes read nothing.
        let mut free_from = None;
        for i in 0..8 {
            let before = reads.get();
            let reply = gateway_push(a.gateway(), &user, &format!("verified-{i}")).await;
            f.check(matches!(reply, GatewayReply::Ok(_)), || {
                format!("push {i} answered {reply:?}")
            });
            if reads.get() == before && free_from.is_none() {
                free_from = Some(i);
            }
            if free_from.is_some() && reads.get() != before {
                f.check(false, || {
                    format!("push {i} read the route again with nothing changed")
                });
            }
        }
        f.check(matches!(free_from, Some(i) if i <= 4), || {
            format!(
                "no push skipped the route read until push {free_from:?} ({} reads)",
                reads.get()
            )
        });
        f.check(old.wait_push("verified-7", WAIT).await, || {
            "the device missed the pushes".into()
        });

        // The rebind on B changes the route; its kick to A is lost. A's route reads are
        // held, so the change's own check of the route (one read) cannot answer first.
        reads.close();
        let before = reads.get();
        let new = Device::bound(b.addr, &format!("{user}-new"), &user).await;
        let rebound = eventually(WAIT, || async {
            route(fx.cache(), &user)
                .await
                .is_some_and(|l| l.device_id.as_deref() == Some(new.device_id.as_str()))
        })
        .await;
        f.check(rebound, || "the route never named the new device".into());
        let checking = eventually(WAIT, || async { reads.parked() == 1 }).await;
        f.check(checking, || {
            format!(
                "the route change did not make node A check the route ({} held reads)",
                reads.parked()
            )
        });
        let gateway = a.gateway();
        let stale_user = user.clone();
        let push =
            tokio::spawn(
                async move { gateway_push(gateway, &stale_user, "via-stale-route").await },
            );
        let read_again = eventually(WAIT, || async { reads.parked() == 2 }).await;
        f.check(read_again, || {
            "the push after the route changed did not read it".into()
        });
        old.barrier().await;
        f.check(!old.kicked(), || {
            "the kick was meant to be lost, yet the old device got KICK".into()
        });
        f.check(reads.get() == before + 2, || {
            format!(
                "{} route reads since the rebind, expected 2",
                reads.get() - before
            )
        });
        reads.open();
        let reply = push.await.unwrap();
        f.check(is_error(&reply, ErrorCode::RouterChange), || {
            format!("GATEWAY_PUSH to the old node answered {reply:?}, expected ROUTER_CHANGE")
        });
        let kicked = eventually(WAIT, || async { old.kicked() }).await;
        f.check(kicked, || {
            "the old device was never told it was displaced (KICK)".into()
        });
        old.barrier().await;
        f.check(old.count("via-stale-route") == 0, || {
            "the displaced device received the push".into()
        });

        old.client.close().await;
        new.client.close().await;
        let sender = fx.sender().await;
        stop_all(sender, vec![a, b]).await;
        f.assert_none("verified route");
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
        cas: mpush::spi::HashCas<'_>,
    ) -> mpush::spi::SpiResult<mpush::spi::CasOutcome> {
        if cas.key.starts_with("mp:ur:") && self.closed.load(std::sync::atomic::Ordering::SeqCst) {
            let open = self.open.notified();
            self.parked.notify_one();
            open.await;
        }
        inner.hcompare_and_set(cas).await
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
        let b = fx.node_with(cache, None).await;
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
