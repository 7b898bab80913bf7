//! Graceful drain with two in-process nodes (issue 11 §4): clients on node A reconnect to
//! whatever discovery lists when A closes them, a `PushSender` keeps pushing AUTO_ACK to every
//! user meanwhile; no push the SDK saw acknowledged is lost, node B picks every client up,
//! and A's closes are spread at least as the configured rate requires.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mpush::AckModel;
use mpush::DrainOptions;
use mpush::protocol::{Command, flags};
use mpush::sender::{PushContext, PushSender, ResultCode};
use mpush::spi::{ServiceDiscovery, services};
use mpush_spi_memory::MemoryServiceRegistry;
use tokio_util::sync::CancellationToken;

const USERS: usize = 20;
/// Closes per second during the drain.
const CLOSE_RATE: u32 = 20;
/// The pusher's pause after a push that was not delivered (the user is between nodes).
const RETRY_PAUSE: Duration = Duration::from_millis(10);

/// What the clients and the pusher observed.
#[derive(Default)]
struct Observed {
    /// Push contents each client received (recorded before its ACK goes out).
    received: Mutex<HashSet<String>>,
    /// Push contents a client received while connected to node B.
    received_on_b: Mutex<HashSet<String>>,
    /// Push contents the sender reported SUCCESS for (AUTO_ACK: the client acknowledged).
    acked: Mutex<HashSet<String>>,
    /// When each client saw node A close its connection.
    closes_from_a: Mutex<Vec<Instant>>,
    /// The node each user is currently bound on.
    bound_on: Mutex<HashMap<String, SocketAddr>>,
}

/// Connects, binds, reads pushes (ACKing them after recording), and on a close by the server
/// reconnects to a connection server discovery lists other than the one that closed it.
async fn client(
    user: String,
    mut addr: SocketAddr,
    a: SocketAddr,
    b: SocketAddr,
    discovery: Arc<MemoryServiceRegistry>,
    seen: Arc<Observed>,
    stop: CancellationToken,
) {
    loop {
        let mut c = bound_client(addr, &format!("dev-{user}"), "android", &user, None).await;
        seen.bound_on.lock().unwrap().insert(user.clone(), addr);
        loop {
            let p = tokio::select! {
                _ = stop.cancelled() => return,
                p = c.recv_packet() => p,
            };
            let Some(p) = p else { break };
            if p.cmd != Command::Push {
                continue;
            }
            let content = String::from_utf8(c.open(&p).to_vec()).unwrap();
            seen.received.lock().unwrap().insert(content.clone());
            if addr == b {
                seen.received_on_b.lock().unwrap().insert(content);
            }
            if p.flags & flags::ACK_MASK != 0 {
                c.send(&mpush::protocol::packet::Packet::new(
                    Command::Ack,
                    p.session_id,
                ))
                .await;
            }
        }
        assert_eq!(addr, a, "{user}: only node A closes connections");
        seen.closes_from_a.lock().unwrap().push(Instant::now());
        // As a real client: ask discovery again, and take a server other than this one.
        let deadline = Instant::now() + WAIT;
        addr = loop {
            let nodes = discovery.lookup(services::CONNECT_SERVER).await.unwrap();
            let other = nodes
                .iter()
                .filter_map(|n| format!("{}:{}", n.host, n.port).parse::<SocketAddr>().ok())
                .find(|s| *s != addr);
            if let Some(other) = other {
                break other;
            }
            assert!(Instant::now() < deadline, "{user}: no other server listed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
    }
}

/// Pushes `user:<n>` AUTO_ACK to `user` until stopped; records what the SDK saw acknowledged.
async fn pusher(
    user: String,
    sender: Arc<PushSender>,
    seen: Arc<Observed>,
    stop: CancellationToken,
) {
    let mut n = 0u64;
    while !stop.is_cancelled() {
        n += 1;
        let content = format!("{user}:{n}");
        let ctx = PushContext::to_user(&user, content.clone().into_bytes())
            .ack(AckModel::AutoAck)
            .timeout(Duration::from_secs(2));
        let results = sender.send(ctx).await;
        if results.iter().any(|r| r.code == ResultCode::Success) {
            seen.acked.lock().unwrap().insert(content);
        } else {
            // An OFFLINE answer comes from the cache without any wait: retry at a business
            // server's pace instead of spinning the runtime's workers.
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Polls `cond` until it holds, failing after [`WAIT`] with `what`.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "{what} within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn addrs(nodes: &[mpush::spi::ServiceNode]) -> Vec<u16> {
    nodes.iter().map(|n| n.port).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_node_hands_its_clients_over_without_losing_acked_pushes() {
    let hub = mpush_spi_memory::MemoryHub::new();
    let mut cfg = test_config();
    // No heartbeat is due during the test: the clients only answer pushes.
    cfg.core.min_heartbeat = Duration::from_secs(30);
    let (node_a, a) = start_server(&hub, cfg.clone()).await;
    let (node_b, b) = start_server(&hub, cfg.clone()).await;
    let sender = Arc::new(
        mpush_spi_memory::testing::sender_on(&hub, cfg)
            .await
            .unwrap(),
    );
    let discovery = Arc::new(MemoryServiceRegistry::new(hub.clone()));
    let seen = Arc::new(Observed::default());
    let stop_clients = CancellationToken::new();
    let stop_pushing = CancellationToken::new();
    let users: Vec<String> = (0..USERS).map(|i| format!("user{i}")).collect();

    let clients: Vec<_> = users
        .iter()
        .map(|u| {
            tokio::spawn(client(
                u.clone(),
                a,
                a,
                b,
                discovery.clone(),
                seen.clone(),
                stop_clients.clone(),
            ))
        })
        .collect();
    wait_for("every user bound on A", || {
        node_a.local_users().len() == USERS
    })
    .await;
    let pushers: Vec<_> = users
        .iter()
        .map(|u| {
            tokio::spawn(pusher(
                u.clone(),
                sender.clone(),
                seen.clone(),
                stop_pushing.clone(),
            ))
        })
        .collect();
    wait_for(
        "acknowledged pushes for every user before the drain",
        || {
            let acked = seen.acked.lock().unwrap();
            users
                .iter()
                .all(|u| acked.iter().any(|c| c.starts_with(&format!("{u}:"))))
        },
    )
    .await;
    let options = DrainOptions {
        window: Duration::from_secs(1),
        close_rate: CLOSE_RATE,
    };
    let drain_started = Instant::now();
    let watch = async {
        // Deregistration comes first: A's connection server leaves discovery at once.
        let deadline = Instant::now() + WAIT;
        loop {
            let cs = discovery.lookup(services::CONNECT_SERVER).await.unwrap();
            if addrs(&cs) == [b.port()] {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "A still listed: {:?}",
                addrs(&cs)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(node_a.is_draining());
        // A's gateway stays listed while A still holds connections (the sender must reach
        // them); the count only falls during a drain, so read it after the lookup.
        let gs = discovery.lookup(services::GATEWAY_SERVER).await.unwrap();
        let open = node_a.connection_count();
        if open > 0 {
            assert!(
                addrs(&gs).contains(&node_a.gateway_addr().port()),
                "A's gateway left discovery with {open} connections open"
            );
        }
        // The client listener closes right after the deregistration: new clients are refused.
        // A probe accepted before that is an open connection the drain may close too.
        let deadline = Instant::now() + WAIT;
        let mut probes = 0;
        while tokio::net::TcpStream::connect(a).await.is_ok() {
            probes += 1;
            assert!(Instant::now() < deadline, "A still accepts clients");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        probes
    };
    let (report, probes) = tokio::join!(node_a.drain(options), watch);
    assert!(
        (USERS..=USERS + probes).contains(&report.closed),
        "{report:?}, {probes} probes"
    );
    assert_eq!(report.left_open, 0, "{report:?}");
    assert!(
        drain_started.elapsed() >= options.window,
        "the window was served before closing"
    );
    assert!(!node_a.is_running());
    wait_for("every user bound on B", || {
        let users_b = node_b.local_users();
        users.iter().all(|u| users_b.contains(u))
    })
    .await;
    // Keep pushing until every user got an acknowledged push through B.
    wait_for("an acknowledged push to every user on B", || {
        let acked = seen.acked.lock().unwrap();
        let on_b = seen.received_on_b.lock().unwrap();
        users.iter().all(|u| {
            on_b.iter()
                .any(|c| c.starts_with(&format!("{u}:")) && acked.contains(c))
        })
    })
    .await;
    stop_pushing.cancel();
    for p in pushers {
        p.await.unwrap();
    }
    stop_clients.cancel();
    for c in clients {
        c.await.unwrap();
    }
    let acked = seen.acked.lock().unwrap().clone();
    let received = seen.received.lock().unwrap().clone();
    let lost: Vec<_> = acked.difference(&received).collect();
    assert!(lost.is_empty(), "acknowledged but never received: {lost:?}");
    let bound = seen.bound_on.lock().unwrap().clone();
    assert!(bound.values().all(|s| *s == b), "{bound:?}");

    // The pace: N closes one interval apart span at least (N-1)/rate; slack for the
    // clients' own scheduling, no upper bound (a loaded machine only spreads them more).
    let closes = seen.closes_from_a.lock().unwrap().clone();
    assert_eq!(closes.len(), USERS);
    let spread = *closes.iter().max().unwrap() - *closes.iter().min().unwrap();
    let paced = Duration::from_secs(1) * (USERS as u32 - 1) / CLOSE_RATE;
    assert!(
        spread >= paced * 3 / 4,
        "{USERS} closes within {spread:?}; {CLOSE_RATE}/s needs about {paced:?}"
    );

    sender.stop().await;
    node_a.shutdown().await;
    node_b.shutdown().await;
}
