//! An in-process cluster of three servers on the memory backend plus a `PushSender`, over
//! real TCP: every result code end to end, router change, a node stopping, broadcast
//! filters and flow control.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use mpush::AckModel;
use mpush::MPushConfig;
use mpush::sender::{PushContext, ResultCode};

async fn cluster_with(n: usize, cfg: MPushConfig) -> Cluster {
    start_cluster(n, cfg).await
}

async fn cluster(n: usize) -> Cluster {
    cluster_with(n, test_config()).await
}

#[tokio::test]
async fn success_with_each_ack_mode_offline_and_timeout() {
    let c = cluster(3).await;
    assert_each_ack_mode_then_offline(&c, 1, "u1").await;
    assert_never_acking_client_times_out(&c, 2, "u2").await;
    c.shutdown().await;
}

#[tokio::test]
async fn failure_when_socket_dies_and_offline_after_disconnect() {
    let c = cluster(2).await;
    let mut rx = spawn_receiver(
        bound_client(c.addr(0), "d1", "android", "u1", None).await,
        AckPolicy::DieOnPush,
    );
    let start = Instant::now();
    expect_push(&c.sender, "u1", AckModel::BizAck, 5000, ResultCode::Failure).await;
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "failure reported before the timeout"
    );
    assert!(rx.recv().await.is_some());
    // Once the server has noticed the dead socket, pushes end OFFLINE.
    wait_not_local(&c.nodes[0], "u1").await;
    expect_push(&c.sender, "u1", AckModel::NoAck, 3000, ResultCode::Offline).await;
    c.shutdown().await;
}

#[tokio::test]
async fn router_change_reroutes_to_the_new_node() {
    assert_router_change_reroutes(cluster(3).await).await;
}

#[tokio::test]
async fn stopped_node_ends_pushes_without_hanging_and_is_dropped() {
    let mut c = cluster(3).await;
    let _rx = receiver(c.addr(2), "d", "on-2").await;
    expect_push(
        &c.sender,
        "on-2",
        AckModel::NoAck,
        3000,
        ResultCode::Success,
    )
    .await;
    let node = c.nodes.remove(2);
    node.shutdown().await;
    let start = Instant::now();
    let codes = push(&c.sender, "on-2", AckModel::AutoAck, 2000).await;
    assert!(
        matches!(codes[..], [ResultCode::Offline] | [ResultCode::Failure]),
        "{codes:?}"
    );
    assert!(start.elapsed() < Duration::from_secs(3));
    let deadline = Instant::now() + WAIT;
    while c.sender.gateways().len() != 2 {
        assert!(
            Instant::now() < deadline,
            "sender still lists the stopped gateway"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    c.shutdown().await;
}

/// One broadcast target: user id, tags, clientVersion and what its receiver task reports.
struct Target {
    user: String,
    tags: Option<String>,
    version: &'static str,
    rx: tokio::sync::mpsc::UnboundedReceiver<Received>,
}

/// Connects four clients per node with a mix of user ids, tags and client versions.
async fn audience(c: &Cluster) -> Vec<Target> {
    // "test-1.0" matches the documented version condition ("10" > 5), "test-0.3" fails its
    // number test ("03"), "android-9.9" its indexOf test.
    const VERSIONS: [&str; 3] = ["test-1.0", "test-0.3", "android-9.9"];
    let mut out = Vec::new();
    for node in 0..c.nodes.len() {
        for i in 0..4 {
            let user = format!("{}", node * 100 + i * 7);
            let tags = match i % 3 {
                0 => Some("vip,test".to_string()),
                1 => Some("normal".to_string()),
                _ => None,
            };
            let version = VERSIONS[(node + i) % VERSIONS.len()];
            let cl = bound_client_version(
                c.addr(node),
                &format!("dev-{user}"),
                "android",
                version,
                &user,
                tags.as_deref(),
            )
            .await;
            out.push(Target {
                user,
                tags,
                version,
                rx: spawn_receiver(cl, AckPolicy::All),
            });
        }
    }
    out
}

/// Which users received exactly one broadcast since the last call (asserting none received
/// more). A broadcast's OK comes once every matching connection has been written, so a
/// second, unfiltered "fence" broadcast lands behind it on every connection: whatever a
/// client got before the fence is all the earlier broadcast sent it.
async fn receivers(c: &Cluster, aud: &mut [Target]) -> Vec<String> {
    let results = c.sender.send(PushContext::broadcast(&b"fence"[..])).await;
    assert!(
        results.iter().all(|r| r.code == ResultCode::Success),
        "fence: {results:?}"
    );
    let mut got = Vec::new();
    for t in aud.iter_mut() {
        let mut n = 0;
        loop {
            let p = tokio::time::timeout(WAIT, t.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{}: no fence within {WAIT:?}", t.user))
                .unwrap_or_else(|| panic!("{}: receiver ended", t.user));
            if &p.content[..] == b"fence" {
                break;
            }
            n += 1;
        }
        assert!(n <= 1, "{} received the broadcast {n} times", t.user);
        if n == 1 {
            got.push(t.user.clone());
        }
    }
    got.sort();
    got
}

/// The users of `aud` for which `pred` holds, sorted.
fn users_where(aud: &[Target], pred: impl Fn(&Target) -> bool) -> Vec<String> {
    let mut v: Vec<String> = aud
        .iter()
        .filter(|t| pred(t))
        .map(|t| t.user.clone())
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn broadcast_filters_reach_exactly_the_matching_clients() {
    let c = cluster(3).await;
    let mut aud = audience(&c).await;
    let all = users_where(&aud, |_| true);
    let results = c.sender.send(PushContext::broadcast(&b"to all"[..])).await;
    assert_eq!(results.len(), 3, "one result per gateway");
    assert!(
        results.iter().all(|r| r.code == ResultCode::Success),
        "{results:?}"
    );
    // Q6: each gateway reported once (the results are what a callback used to see).
    let reported: std::collections::HashSet<String> = results
        .iter()
        .filter_map(|r| r.location.as_ref().map(|l| l.host_and_port()))
        .collect();
    let gateways: std::collections::HashSet<String> =
        (0..3).map(|i| c.gateway(i).to_string()).collect();
    assert_eq!(reported, gateways, "one result for each gateway (Q6)");
    assert_eq!(receivers(&c, &mut aud).await, all);

    // tags: substring match.
    c.sender
        .send(PushContext::broadcast(&b"vip"[..]).tags(vec!["vip".into()]))
        .await;
    let want = users_where(&aud, |t| t.tags.as_deref() == Some("vip,test"));
    assert_eq!(receivers(&c, &mut aud).await, want);

    // conditions: the documented examples, each matching some clients and not others.
    type Expect = Box<dyn Fn(&Target) -> bool>;
    let cases: [(&str, Expect); 3] = [
        (
            "userId % 100 < 20",
            Box::new(|t| t.user.parse::<i64>().unwrap() % 100 < 20),
        ),
        (
            "tags!=null && tags.indexOf(\"test\")!=-1",
            Box::new(|t| t.tags.as_deref().is_some_and(|t| t.contains("test"))),
        ),
        (
            "clientVersion.indexOf(\"test\")!=-1 && clientVersion.replace(/[^\\d]/g,\"\") > 5",
            Box::new(|t| {
                let digits: String = t.version.chars().filter(char::is_ascii_digit).collect();
                t.version.contains("test") && digits.parse::<f64>().unwrap() > 5.0
            }),
        ),
    ];
    for (cond, pred) in cases {
        let results = c
            .sender
            .send(PushContext::broadcast(&b"cond"[..]).condition(cond))
            .await;
        assert!(
            results.iter().all(|r| r.code == ResultCode::Success),
            "{cond}: {results:?}"
        );
        let want = users_where(&aud, &pred);
        assert!(
            !want.is_empty() && want.len() < all.len(),
            "{cond}: {want:?}"
        );
        assert_eq!(receivers(&c, &mut aud).await, want, "{cond}");
    }

    // A bad expression is an error for the sender, not "matches nobody".
    let results = c
        .sender
        .send(PushContext::broadcast(&b"bad"[..]).condition("userId %% ("))
        .await;
    assert!(
        results
            .iter()
            .all(|r| r.code == ResultCode::Failure && r.error.is_some()),
        "{results:?}"
    );
    assert!(receivers(&c, &mut aud).await.is_empty());
    c.shutdown().await;
}

#[tokio::test]
async fn broadcast_flow_control_caps_rate_and_total() {
    let mut cfg = test_config();
    cfg.push.broadcast_flow_control.limit = 5;
    cfg.push.broadcast_flow_control.max = 12;
    cfg.push.broadcast_flow_control.duration = Duration::from_millis(500);
    let c = cluster_with(1, cfg).await;
    let mut rxs = receivers_on_node_0(&c, "fc", 20).await;
    let start = Instant::now();
    let results = c
        .sender
        .send(PushContext::broadcast(&b"limited"[..]).timeout(Duration::from_secs(10)))
        .await;
    let took = start.elapsed();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].code, ResultCode::Success);
    let mut delivered = 0;
    for (i, rx) in rxs.iter_mut().enumerate() {
        delivered += received_before_fence(&c.sender, &format!("fc-{i}"), rx)
            .await
            .len();
    }
    assert_eq!(delivered, 12, "max caps the total");
    // 12 sends at 5 per 500 ms need at least two full windows.
    assert!(
        took >= Duration::from_millis(900),
        "rate limit respected: took {took:?}"
    );
    c.shutdown().await;
}

#[tokio::test]
async fn task_broadcast_records_progress_and_does_not_block_unicast() {
    let cfg = config_with(|c| c.push.broadcast_flow_control.max = 1000);
    let c = cluster_with(1, cfg).await;
    let _rxs = receivers_on_node_0(&c, "t", 12).await;
    let task = format!("task-{}", rand::random::<u32>());
    c.sender.set_task_qps(&task, 5).await.unwrap();
    let start = Instant::now();
    let results = c
        .sender
        .send(PushContext::broadcast(&b"slow task"[..]).task_id(task.clone()))
        .await;
    // With a task id the sender reports SUCCESS once sent; progress lives in the cache.
    assert_eq!(
        results.iter().map(|r| r.code).collect::<Vec<_>>(),
        [ResultCode::Success]
    );
    assert!(start.elapsed() < Duration::from_secs(1));

    // While the task crawls at 5/s, a unicast push and heartbeats are not held up.
    let t = Instant::now();
    expect_push(
        &c.sender,
        "t-0",
        AckModel::AutoAck,
        3000,
        ResultCode::Success,
    )
    .await;
    assert!(
        t.elapsed() < Duration::from_millis(2500),
        "unicast waited {:?} behind the broadcast",
        t.elapsed()
    );

    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = c.sender.task_progress(&task).await.unwrap();
        if p.sent == 12 {
            assert_eq!(p.qps, Some(5));
            break;
        }
        assert!(p.sent < 12);
        assert!(Instant::now() < deadline, "task stuck at {p:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 12 sends at 5 per second need at least two full windows.
    assert!(
        start.elapsed() >= Duration::from_millis(1900),
        "rate not respected: {:?}",
        start.elapsed()
    );
    let mut users = c.sender.task_users(&task).await.unwrap();
    users.sort();
    users.dedup();
    assert_eq!(users.len(), 12);
    c.shutdown().await;
}

/// `n` users `<prefix>-<i>` bound on node 0 (device id = user id), each with a receiver that
/// ACKs everything, in order.
async fn receivers_on_node_0(
    c: &Cluster,
    prefix: &str,
    n: usize,
) -> Vec<tokio::sync::mpsc::UnboundedReceiver<Received>> {
    let mut rxs = Vec::with_capacity(n);
    for i in 0..n {
        let id = format!("{prefix}-{i}");
        let cl = bound_client(c.addr(0), &id, "android", &id, None).await;
        rxs.push(spawn_receiver(cl, AckPolicy::All));
    }
    rxs
}
