//! Cluster routing (issue 7) items 4 and 5: a Redis stall and a Redis outage through the
//! fault-injection proxy (Redis + ZooKeeper only), and the fault proxy's own self-tests
//! (no backend).
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
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::WAIT;
use common::fault_proxy::FaultProxy;
use common::routing::*;
use mpush::AckModel;
use mpush::client::ClientError;
use mpush::protocol::message::ErrorCode;
use mpush::sender::GatewayReply;
use mpush::sender::ResultCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
// Link the ZooKeeper backend so its inventory registration exists.
use mpush_spi_zk as _;

// ------------------------------------------------------------------------------------------
// Items 4 and 5: a Redis stall and a Redis outage (Redis + ZooKeeper only: the fault proxy
// sits in front of Redis).

/// Connects `n` new devices at once and returns each one's connect time (handshake only).
async fn timed_handshakes(addr: SocketAddr, prefix: &str, n: usize) -> Vec<Duration> {
    futures::future::join_all((0..n).map(|i| async move {
        let t = Instant::now();
        let d = Device::connect(addr, &format!("{prefix}-{i}"), None)
            .await
            .unwrap_or_else(|e| panic!("handshake {prefix}-{i} failed: {e}"));
        let took = t.elapsed();
        d.client.close().await;
        took
    }))
    .await
}

/// A bind on a fresh device: how it ended and how long it took.
async fn timed_bind(
    addr: SocketAddr,
    device: &str,
    user: &str,
) -> (Result<(), ClientError>, Duration) {
    let d = Device::connect(addr, device, None).await.unwrap();
    let t = Instant::now();
    let r = d.client.bind(user, None, None).await;
    let took = t.elapsed();
    d.client.close().await;
    (r, took)
}

/// Binds fresh devices until one succeeds (the backend just recovered); the time it took.
async fn bind_after_recovery(
    addr: SocketAddr,
    device: &str,
    user: &str,
) -> Option<(Device, Duration)> {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(15) {
        match Device::connect(addr, device, Some(user)).await {
            Ok(d) => return Some((d, t.elapsed())),
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis + ZooKeeper: run scripts/test-all.sh"]
async fn redis_stall_handshakes_answer_binds_fail_fast_then_recover() {
    let fx = Redis::new().await;
    within("redis stall", async {
        let proxy = FaultProxy::start(fx.redis).await.unwrap();
        let node = fx.node_via(&proxy).await;
        let sender = fx.sender().await;
        wait_gateways(&sender, 1).await;
        let run = run_id();
        let mut f = Failures::default();
        // A device that handshook before the stall, for a fast reconnect during it.
        let fc_device = format!("stall-{run}-fc");
        let mut raw = common::RawClient::connect(node.addr).await;
        let ticket = raw.handshake(&fc_device, "android").await.session_id.unwrap();
        drop(raw);
        let session_key = mpush::protocol::session::session_cache_key(&ticket);
        let stored = eventually(WAIT, || async {
            matches!(fx.cache().get(&session_key).await, Ok(Some(_)))
        })
        .await;
        assert!(stored, "the reusable session was never stored");

        proxy.pause();
        let stalled_at = Instant::now();
        // FAST_CONNECT needs the stored session: it waits for it at most FAST_CONNECT_BOUND and
        // then answers SESSION_EXPIRED, and the client's full handshake on the same
        // connection needs no backend.
        let mut raw = common::RawClient::connect(node.addr).await;
        let req = mpush::protocol::message::FastConnectRequest {
            session_id: Some(ticket.clone()),
            device_id: Some(fc_device.clone()),
            min_heartbeat: 0,
            max_heartbeat: 30_000,
        };
        let t = Instant::now();
        raw.send(&mpush::protocol::packet::Packet::with_body(
            mpush::protocol::Command::FastConnect,
            9,
            mpush::protocol::message::Message::encode(&req),
        ))
        .await;
        let reply = raw.recv_packet().await;
        let took = t.elapsed();
        let expired = reply.as_ref().is_some_and(|p| {
            p.cmd == mpush::protocol::Command::Error
                && <mpush::protocol::message::ErrorMessage as mpush::protocol::message::Message>::decode(&p.body)
                    .is_ok_and(|e| e.code == ErrorCode::SessionExpired.code())
        });
        f.check(expired && took < FAST_CONNECT_BOUND, || {
            format!(
                "FAST_CONNECT during a stall answered {reply:?} after {took:?}; expected                  SESSION_EXPIRED within {FAST_CONNECT_BOUND:?} (item 4)"
            )
        });
        let t = Instant::now();
        raw.handshake(&fc_device, "android").await;
        f.check(t.elapsed() < HANDSHAKE_BOUND, || {
            format!("the fallback handshake took {:?} (< {HANDSHAKE_BOUND:?})", t.elapsed())
        });
        drop(raw);
        let first = timed_handshakes(node.addr, &format!("stall-{run}-a"), 5).await;
        f.check(first.iter().all(|t| *t < HANDSHAKE_BOUND), || {
            format!(
                "handshakes at the start of a Redis stall took {first:?}; HandshakeOk must not \
                 wait for the backend (< {HANDSHAKE_BOUND:?}, item 4)"
            )
        });
        let (bind, took) = timed_bind(node.addr, &format!("stall-{run}-bind"), &format!("stall-{run}-u1")).await;
        f.check(
            matches!(bind, Err(ClientError::Rejected { .. })) && took < BIND_FAIL_BOUND,
            || {
                format!(
                    "a bind during the stall ended with {bind:?} after {took:?}; expected ERROR \
                     within {BIND_FAIL_BOUND:?} (item 4)"
                )
            },
        );
        // The stall outlasts the Java client's 3 s step timeout. This wait sets the length of
        // the fault; it synchronises nothing.
        tokio::time::sleep_until(tokio::time::Instant::from_std(
            stalled_at + JAVA_STEP_TIMEOUT + Duration::from_millis(500),
        ))
        .await;
        let later = timed_handshakes(node.addr, &format!("stall-{run}-b"), 5).await;
        f.check(later.iter().all(|t| *t < HANDSHAKE_BOUND), || {
            format!(
                "handshakes {:?} into the Redis stall took {later:?} (< {HANDSHAKE_BOUND:?}, item 4)",
                stalled_at.elapsed()
            )
        });
        let stall = stalled_at.elapsed();
        assert!(
            proxy.mode() == common::fault_proxy::Mode::Paused,
            "the stall must last through the checks"
        );

        proxy.resume();
        let user = format!("stall-{run}-u2");
        match bind_after_recovery(node.addr, &format!("stall-{run}-after"), &user).await {
            Some((d, took)) => {
                let r = push(&sender, &user, "after-stall", AckModel::AutoAck).await;
                f.check(codes(&r) == [ResultCode::Success], || {
                    format!("push after the stall answered {:?}", codes(&r))
                });
                f.check(d.wait_push("after-stall", Duration::from_secs(2)).await, || {
                    "push after the stall not delivered".into()
                });
                eprintln!("stall lasted {stall:?}; bind succeeded {took:?} after resume");
                d.client.close().await;
            }
            None => f.0.push("no bind succeeded within 15 s after the stall ended".into()),
        }
        stop_all(sender, vec![node]).await;
        f.assert_none("redis stall");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis + ZooKeeper: run scripts/test-all.sh"]
async fn redis_outage_pushes_fail_not_offline_binds_fail_fast_then_recover() {
    let fx = Redis::new().await;
    within("redis outage", async {
        let proxy = FaultProxy::start(fx.redis).await.unwrap();
        let node = fx.node_via(&proxy).await;
        let run = run_id();
        let user = format!("outage-{run}");
        let phone = Device::bound(node.addr, &format!("outage-{run}-phone"), &user).await;
        // This sender has never looked the user up: it must read the route from Redis, through
        // the proxy, during the outage.
        let cold = fx.sender_via(&proxy).await;
        wait_gateways(&cold, 1).await;
        let mut f = Failures::default();

        proxy.refuse();
        let handshakes = timed_handshakes(node.addr, &format!("outage-{run}-hs"), 3).await;
        f.check(handshakes.iter().all(|t| *t < HANDSHAKE_BOUND), || {
            format!("handshakes during the Redis outage took {handshakes:?} (< {HANDSHAKE_BOUND:?}, item 4)")
        });
        let (bind, took) = timed_bind(node.addr, &format!("outage-{run}-bind"), &format!("outage-{run}-u1")).await;
        f.check(
            matches!(bind, Err(ClientError::Rejected { .. })) && took < BIND_FAIL_BOUND,
            || {
                format!(
                    "a bind during the outage ended with {bind:?} after {took:?}; expected \
                     ERROR within {BIND_FAIL_BOUND:?}"
                )
            },
        );
        let r = push(&cold, &user, "during-outage", AckModel::NoAck).await;
        f.check(
            codes(&r) == [ResultCode::Failure] && r[0].error.as_deref().is_some_and(|e| !e.is_empty()),
            || {
                format!(
                    "PushSender answered {r:?} for a bound user while Redis is down; expected \
                     FAILURE with a reason, never OFFLINE (item 5)"
                )
            },
        );
        // The gateway side: a GATEWAY_PUSH for a user with no route on this node cannot be
        // told offline without the cache.
        let reply = gateway_push(node.gateway(), &format!("outage-{run}-elsewhere"), "gw-during-outage").await;
        let failure_with_reason = matches!(&reply, GatewayReply::Error(e)
            if e.code != ErrorCode::Offline.code()
                && e.code != ErrorCode::RouterChange.code()
                && e.reason.as_deref().is_some_and(|s| !s.is_empty()));
        f.check(failure_with_reason, || {
            format!(
                "GATEWAY_PUSH during the outage answered {reply:?}; expected an ERROR that is \
                 neither OFFLINE nor ROUTER_CHANGE, with a reason (item 5)"
            )
        });

        proxy.resume();
        let user2 = format!("outage-{run}-u2");
        match bind_after_recovery(node.addr, &format!("outage-{run}-after"), &user2).await {
            Some((d, _)) => {
                // The sender's own Redis connection reconnects by itself: give it a bound.
                let t = Instant::now();
                let last = Mutex::new(Vec::new());
                let ok = eventually(Duration::from_secs(10), || async {
                    let c = codes(&push(&cold, &user2, "after-outage", AckModel::AutoAck).await);
                    let ok = c == [ResultCode::Success];
                    *last.lock().unwrap() = c;
                    ok
                })
                .await;
                f.check(ok, || {
                    format!(
                        "push after the outage still answered {:?} {:?} later",
                        last.lock().unwrap(),
                        t.elapsed()
                    )
                });
                d.client.close().await;
            }
            None => f.0.push("no bind succeeded within 15 s after the outage ended".into()),
        }
        phone.client.close().await;
        stop_all(cold, vec![node]).await;
        f.assert_none("redis outage");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis + ZooKeeper: run scripts/test-all.sh"]
async fn redis_mq_stall_does_not_delay_bind_ok() {
    let fx = Redis::new().await;
    within("redis mq stall", async {
        // Only the MQ (online event) is stalled; the cache, where the route goes, answers.
        let proxy = FaultProxy::start(fx.redis).await.unwrap();
        let node = fx.node_split(fx.redis, proxy.addr()).await;
        let run = run_id();
        let user = format!("mqstall-{run}");
        proxy.pause();
        let d = Device::connect(node.addr, &format!("{user}-phone"), None)
            .await
            .unwrap();
        let t = Instant::now();
        let r = d.client.bind(&user, None, None).await;
        let took = t.elapsed();
        let mut f = Failures::default();
        f.check(r.is_ok() && took < BIND_OK_BOUND, || {
            format!(
                "bind with the MQ stalled ended {r:?} after {took:?}; bind OK must wait only \
                 for the route write, the online event goes after the reply (< {BIND_OK_BOUND:?}, \
                 item 4)"
            )
        });
        let conn = node.conn_id(&user, &d.device_id).await;
        let written = route(fx.cache(), &user).await;
        f.check(
            written
                .as_ref()
                .is_some_and(|l| l.is_online() && l.conn_id == conn),
            || format!("route after the bind: {written:?}, connection {conn:?}"),
        );
        proxy.resume();
        d.client.close().await;
        node.server.shutdown().await;
        f.assert_none("redis mq stall");
    })
    .await;
}

// ------------------------------------------------------------------------------------------
// The fault proxy itself (no backend needed).

/// An echo server on a free port; serves until the test's runtime ends.
async fn echo_server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1024];
                while let Ok(n @ 1..) = s.read(&mut b).await {
                    if s.write_all(&b[..n]).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// Reads exactly `want.len()` bytes within `limit`; `None` on timeout, EOF or error.
async fn read_within(s: &mut TcpStream, len: usize, limit: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; len];
    match tokio::time::timeout(limit, s.read_exact(&mut buf)).await {
        Ok(Ok(_)) => Some(buf),
        _ => None,
    }
}

/// `true` once the peer closed the connection (EOF or reset) within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(limit, s.read(&mut b)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn fault_proxy_forwards_pauses_drops_refuses_and_resumes() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let mut c = TcpStream::connect(proxy.addr()).await.unwrap();
    c.write_all(b"one").await.unwrap();
    assert_eq!(
        read_within(&mut c, 3, WAIT).await.as_deref(),
        Some(&b"one"[..])
    );
    assert_eq!(proxy.connections(), 1);

    // Paused: the socket stays open, the bytes wait (an absence, checked over a short window).
    proxy.pause();
    c.write_all(b"two").await.unwrap();
    assert_eq!(
        read_within(&mut c, 3, Duration::from_millis(300)).await,
        None
    );
    let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
    during.write_all(b"new").await.unwrap();
    proxy.resume();
    assert_eq!(
        read_within(&mut c, 3, WAIT).await.as_deref(),
        Some(&b"two"[..])
    );
    assert_eq!(
        read_within(&mut during, 3, WAIT).await.as_deref(),
        Some(&b"new"[..])
    );

    // drop_all closes what is open; new connections still work.
    proxy.drop_all();
    assert!(
        closed_within(&mut c, WAIT).await,
        "drop_all left a connection open"
    );
    assert!(closed_within(&mut during, WAIT).await);
    let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
    after.write_all(b"3").await.unwrap();
    assert_eq!(
        read_within(&mut after, 1, WAIT).await.as_deref(),
        Some(&b"3"[..])
    );

    // refuse: open ones closed, new ones closed at once; resume brings service back.
    proxy.refuse();
    assert!(closed_within(&mut after, WAIT).await);
    let mut refused = TcpStream::connect(proxy.addr()).await.unwrap();
    assert!(
        closed_within(&mut refused, WAIT).await,
        "refuse accepted a connection"
    );
    proxy.resume();
    let mut back = TcpStream::connect(proxy.addr()).await.unwrap();
    back.write_all(b"4").await.unwrap();
    assert_eq!(
        read_within(&mut back, 1, WAIT).await.as_deref(),
        Some(&b"4"[..])
    );
    assert!(
        eventually(WAIT, || async { proxy.connections() == 1 }).await,
        "closed connections still counted: {}",
        proxy.connections()
    );
}

#[tokio::test]
async fn fault_proxy_ends_every_task_when_dropped() {
    let proxy = FaultProxy::start(echo_server().await).await.unwrap();
    let addr = proxy.addr();
    let mut open = TcpStream::connect(addr).await.unwrap();
    open.write_all(b"x").await.unwrap();
    assert_eq!(
        read_within(&mut open, 1, WAIT).await.as_deref(),
        Some(&b"x"[..])
    );
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    proxy.pause();
    drop(proxy);
    assert!(
        closed_within(&mut open, WAIT).await,
        "connection outlived the proxy"
    );
    assert!(
        closed_within(&mut stalled, WAIT).await,
        "paused connection outlived the proxy"
    );
    // The accept task is gone with its listener.
    assert!(
        eventually(WAIT, || async { TcpStream::connect(addr).await.is_err() }).await,
        "the proxy still accepts after being dropped"
    );
}

/// A node's route watch over a Redis that stalls (the connection stays open, nothing comes
/// back, so no disconnect is ever reported) is found dead by its keeper's PING: the node
/// stops trusting verified routes, so every push reads the route again, and trusts them
/// again once Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Redis + ZooKeeper: run scripts/test-all.sh"]
async fn redis_stall_suspends_the_route_watch_until_redis_answers() {
    let fx = Redis::new().await;
    within("route watch stall", async {
        let proxy = FaultProxy::start(fx.redis).await.unwrap();
        let node = fx.node_via(&proxy).await;
        let mut f = Failures::default();
        let up = eventually(WAIT, || async { node.server.route_changes_watched() }).await;
        f.check(up, || {
            "a node on a single Redis never watched route changes".into()
        });

        proxy.pause();
        // The keeper pings every 2 s and waits 2 s for the answer.
        let lost = eventually(Duration::from_secs(10), || async {
            !node.server.route_changes_watched()
        })
        .await;
        f.check(lost, || {
            "a stalled route watch was still trusted 10 s into the stall".into()
        });

        proxy.resume();
        let back = eventually(Duration::from_secs(20), || async {
            node.server.route_changes_watched()
        })
        .await;
        f.check(back, || {
            "the route watch did not come back within 20 s of Redis answering".into()
        });
        node.server.shutdown().await;
        f.assert_none("route watch stall");
    })
    .await;
}
