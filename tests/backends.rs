//! The cluster push path on the production backends: two servers and a `PushSender` built
//! from config only (Redis cache + MQ, ZooKeeper registry, resolved through `inventory`),
//! against real Redis (single node and cluster) and ZooKeeper started by the test command.
//! The tests are `#[ignore]`d so that plain `cargo test` lists them as ignored;
//! `scripts/test-all.sh` runs them with `--include-ignored`, and they fail when
//! `MPUSH_TEST_REDIS` / `MPUSH_TEST_REDIS_CLUSTER` / `MPUSH_TEST_ZK` are unset.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use mpush::AckModel;
use mpush::sender::{PushContext, PushSender, ResultCode};
use mpush::{MPushConfig, MPushServer};
// Link the backends so their inventory registrations exist.
use mpush_spi_redis as _;
use mpush_spi_zk as _;

fn backend_config(redis_nodes: &str, cluster: bool, zk: &str, namespace: &str) -> MPushConfig {
    let mut c = test_config();
    c.spi.cache_manager = "redis".into();
    c.spi.mq_client = "redis".into();
    c.spi.service_registry = "zk".into();
    c.redis.cluster_model = if cluster { "cluster" } else { "single" }.into();
    c.redis.nodes = redis_nodes.split(',').map(str::to_string).collect();
    c.zk.server_address = zk.into();
    c.zk.namespace = namespace.into();
    c
}

async fn scenario(cfg: MPushConfig) {
    let run: u32 = rand::random();
    let a = MPushServer::builder()
        .config(cfg.clone())
        .start()
        .await
        .unwrap();
    let b = MPushServer::builder()
        .config(cfg.clone())
        .start()
        .await
        .unwrap();
    let (addr_a, addr_b) = (a.connect_addr(), b.connect_addr());
    let sender = PushSender::builder()
        .config(cfg.clone())
        .start()
        .await
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while sender.gateways().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "sender did not discover both gateways: {:?}",
            sender.gateways()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A user on node B, pushed through B's gateway, with AUTO_ACK.
    let user = format!("be-user-{run}");
    let mut on_b = bound_client(
        addr_b,
        &format!("dev-b-{run}"),
        "android",
        &user,
        Some("vip"),
    )
    .await;
    let ctx = PushContext::to_user(user.clone(), &b"via redis+zk"[..]).ack(AckModel::AutoAck);
    let push = sender.send(ctx);
    let client = async {
        let p = on_b.recv_packet().await.unwrap();
        assert_eq!(&on_b.open(&p)[..], b"via redis+zk");
        on_b.send(&mpush::protocol::Packet::new(
            mpush::protocol::Command::Ack,
            p.session_id,
        ))
        .await;
    };
    let (results, ()) = tokio::join!(push, client);
    assert_eq!(
        results.iter().map(|r| r.code).collect::<Vec<_>>(),
        [ResultCode::Success]
    );
    let loc = results[0].location.clone().unwrap();
    assert_eq!(
        loc.port,
        i32::from(b.gateway_addr().port()),
        "route points at B's gateway"
    );

    // The same user's phone binds on node A: B's connection is kicked through Redis pub/sub.
    let _on_a = bound_client(addr_a, &format!("dev-a-{run}"), "android", &user, None).await;
    let p = on_b.recv_packet().await.unwrap();
    assert_eq!(p.cmd, mpush::protocol::Command::Kick);

    // Offline user, and a node leaving: ZooKeeper's ephemeral node goes, the sender drops it.
    let codes: Vec<_> = sender
        .send(PushContext::to_user(format!("nobody-{run}"), &b"x"[..]))
        .await
        .into_iter()
        .map(|r| r.code)
        .collect();
    assert_eq!(codes, [ResultCode::Offline]);
    b.shutdown().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while sender.gateways().len() != 1 {
        assert!(Instant::now() < deadline, "stopped gateway still listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sender.stop().await;
    a.shutdown().await;
}

/// The environment variable `name`; panics when unset (the test was asked for explicitly).
fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!("{name} is not set: run this test through scripts/test-all.sh"),
    }
}

/// The scenario on the Redis named by `redis_var` (a cluster when `cluster`) and ZooKeeper,
/// in a ZooKeeper namespace of its own, bounded.
async fn scenario_on_redis(redis_var: &str, cluster: bool) {
    let (redis, zk) = (env(redis_var), env("MPUSH_TEST_ZK"));
    let ns = format!("mpush-e2e-{}", rand::random::<u32>());
    tokio::time::timeout(
        Duration::from_secs(60),
        scenario(backend_config(&redis, cluster, &zk, &ns)),
    )
    .await
    .expect("scenario timed out");
}

#[ignore = "needs Redis and ZooKeeper: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_push_on_redis_single_and_zookeeper() {
    scenario_on_redis("MPUSH_TEST_REDIS", false).await;
}

#[ignore = "needs Redis and ZooKeeper: run scripts/test-all.sh"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_push_on_redis_cluster_and_zookeeper() {
    scenario_on_redis("MPUSH_TEST_REDIS_CLUSTER", true).await;
}
