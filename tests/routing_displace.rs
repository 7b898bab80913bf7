//! Cluster routing (issue 7) items 1 and 2: OFFLINE is never cached, and a displaced
//! device is never served again; each on the memory backend and on Redis + ZooKeeper.
//!
//! Black box: in-process clusters of two or more nodes over real sockets, devices on the Rust
//! client SDK, pushes through `PushSender`, routes read straight from the cache
//! (`mp:ur:<userId>`, spec §10). The kit lives in `tests/common/routing.rs`. Redis +
//! ZooKeeper variants are `#[ignore]`d (run them with `scripts/test-all.sh`, or
//! `--include-ignored` with `MPUSH_TEST_REDIS` / `MPUSH_TEST_ZK` set) and panic when those
//! variables are missing.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::WAIT;
use common::routing::*;
use mpush::AckModel;
use mpush::protocol::message::ErrorCode;
use mpush::sender::{PushContext, PushSender, ResultCode};
// Link the ZooKeeper backend so its inventory registration exists.
use mpush_spi_zk as _;

// ------------------------------------------------------------------------------------------
// Item 1: OFFLINE is never cached.

on_both_backends!(offline_then_bind_then_push_succeeds);

async fn offline_then_bind_then_push_succeeds<B: Backend>(fx: &B) {
    let (a, b, sender) = two_nodes_and_sender(fx).await;
    let user = format!("late-{}", run_id());
    let mut f = Failures::default();

    // Never bound: OFFLINE. Then the user binds: the next push must find it.
    let phone = offline_bind(&sender, &user, b.addr, "before-bind", "after-bind", &mut f).await;

    // Offline-only route set: the device goes, OFFLINE; it comes back on the other node.
    phone.client.close().await;
    let gone = eventually(WAIT, || async {
        route(fx.cache(), &user)
            .await
            .is_some_and(|l| !l.is_online())
    })
    .await;
    assert!(gone, "route not marked offline after disconnect");
    let phone = offline_bind(
        &sender,
        &user,
        a.addr,
        "while-offline",
        "after-rebind",
        &mut f,
    )
    .await;
    phone.client.close().await;
    stop_all(sender, vec![a, b]).await;
    f.assert_none(fx.name());
}

/// A push while `user` has no online route is OFFLINE; the user then binds on `addr`, and
/// the next push must reach the device: the OFFLINE answer's route set was not cached.
async fn offline_bind(
    sender: &PushSender,
    user: &str,
    addr: SocketAddr,
    before: &str,
    after: &str,
    f: &mut Failures,
) -> Device {
    let r = push(sender, user, before, AckModel::NoAck).await;
    assert_eq!(
        codes(&r),
        [ResultCode::Offline],
        "{before}: {user} has no online route"
    );
    let phone = Device::bound(addr, "late-phone", user).await;
    let r = push(sender, user, after, AckModel::AutoAck).await;
    f.check(codes(&r) == [ResultCode::Success], || {
        format!(
            "push {after} answered {:?}, expected [Success]: the sender cached the route set \
             of the OFFLINE answer to {before} (item 1)",
            codes(&r)
        )
    });
    f.check(phone.wait_push(after, Duration::from_secs(2)).await, || {
        format!("the device bound on {addr} did not receive the push {after}")
    });
    phone
}

// ------------------------------------------------------------------------------------------
// Item 2: a displaced device is never served again.

on_both_backends!(displaced_device_gets_no_unicast_and_no_broadcast);

async fn displaced_device_gets_no_unicast_and_no_broadcast<B: Backend>(fx: &B) {
    let (a, b, sender) = two_nodes_and_sender(fx).await;
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
