//! Idle connections parked off tokio's reactor (`mp.net.connect-server-park-idle`, issue 12):
//! parked, a connection keeps its heartbeats, pushes, ACKs, packets, kicks, heartbeat
//! timeout, close and the shutdown, over real TCP with the wire-level client.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use mpush::protocol::message::{Kick, Message};
use mpush::protocol::packet::Packet;
use mpush::protocol::{Command, flags};
use mpush::spi::{ClientType, PushOutcome};
use mpush::{AckModel, MPushConfig, RunningServer};

/// Parks at the first heartbeat after any packet, and polls parked sockets every 5 ms.
fn parking(change: impl FnOnce(&mut MPushConfig)) -> MPushConfig {
    config_with(|c| {
        c.net.connect_server_park_idle = Duration::from_millis(1);
        c.net.connect_server_park_poll = Duration::from_millis(5);
        change(c);
    })
}

/// A heartbeat that parks `c` (answered by its task), then `want` parked connections.
async fn park(server: &RunningServer, c: &mut RawClient, want: usize) {
    c.expect_heartbeat_echo().await;
    let what = format!("{want} connection(s) parked");
    wait_until(&what, || server.parked_count() == want).await;
}

/// A server with `config` and one client ("dev-1", bound as "u1"), parked.
async fn one_parked(config: MPushConfig) -> (RunningServer, RawClient) {
    let (server, addr) = start_alone(config).await;
    let mut c = bound_client(addr, "dev-1", "android", "u1", None).await;
    park(&server, &mut c, 1).await;
    (server, c)
}

/// `n` clients ("dev-i", bound as "ui") on the server at `addr`, each parked in turn.
async fn parked_clients(
    server: &RunningServer,
    addr: std::net::SocketAddr,
    n: usize,
) -> Vec<RawClient> {
    let mut clients = Vec::new();
    for i in 0..n {
        let mut c =
            bound_client(addr, &format!("dev-{i}"), "android", &format!("u{i}"), None).await;
        park(server, &mut c, i + 1).await;
        clients.push(c);
    }
    clients
}

/// A NO_ACK push of `body` to `user`, which must be delivered to `c`.
async fn push_no_ack(server: &RunningServer, user: &str, c: &mut RawClient, body: &[u8]) {
    let out = server
        .push_to_local_user(user, None, body.to_vec(), AckModel::NoAck, WAIT)
        .await;
    assert_eq!(out, vec![(ClientType::MOBILE, PushOutcome::Success)]);
    let p = c.recv_packet().await.unwrap();
    assert_eq!((p.cmd, &c.open(&p)[..]), (Command::Push, body));
}

#[tokio::test]
async fn a_parked_connection_answers_heartbeats_and_gets_pushes_without_a_task() {
    let (server, mut c) = one_parked(parking(|_| {})).await;
    for _ in 0..3 {
        c.expect_heartbeat_echo().await;
    }
    // A push is written straight to the parked socket: it stays parked.
    push_no_ack(&server, "u1", &mut c, b"while parked").await;
    assert_eq!(server.parked_count(), 1);

    // An AUTO_ACK push: the client's ACK is a packet, which gives the connection a task back
    // to handle it.
    let push = server.push_to_local_user("u1", None, &b"ack me"[..], AckModel::AutoAck, WAIT);
    let client = async {
        let p = c.recv_packet().await.unwrap();
        assert_eq!(p.cmd, Command::Push);
        assert_ne!(p.flags & flags::AUTO_ACK, 0);
        c.send(&Packet::new(Command::Ack, p.session_id)).await;
    };
    let (out, ()) = tokio::join!(push, client);
    // AckSuccess: a task handled the ACK. (With a 1 ms idle time the task may park the
    // connection again at once, so the count is not checked here.)
    assert_eq!(out, vec![(ClientType::MOBILE, PushOutcome::AckSuccess)]);
    // Idle again: the next heartbeat parks it again.
    park(&server, &mut c, 1).await;
    assert_eq!(server.connection_count(), 1);
    server.shutdown().await;
}

#[tokio::test]
async fn packets_read_by_the_parker_are_handled_in_order() {
    let (server, mut c) = one_parked(parking(|_| {})).await;
    // A bind while parked: the parker reads it and hands it, with the connection, to a task.
    c.bind("u2", None).await.unwrap();
    assert_eq!(server.local_users(), ["u2"]);
    park(&server, &mut c, 1).await;

    // Heartbeats, a bind and a heartbeat in one write, to a parked connection: the leading
    // heartbeats are echoed by the parker, the rest by the task, in order.
    let msg = mpush::protocol::message::BindUser {
        user_id: Some("u3".into()),
        data: None,
        tags: None,
    };
    let id = c.id();
    let (body, f) = mpush::protocol::body::seal(msg.encode(), c.cipher.as_ref(), 1024).unwrap();
    let frame = Packet {
        flags: f,
        body,
        ..Packet::new(Command::Bind, id)
    }
    .to_bytes();
    let mut bytes = vec![0xDF, 0xDF];
    bytes.extend_from_slice(&frame);
    bytes.push(0xDF);
    c.send_bytes(&bytes).await;
    use mpush::protocol::packet::Frame;
    assert_eq!(c.recv().await, Some(Frame::Heartbeat));
    assert_eq!(c.recv().await, Some(Frame::Heartbeat));
    match c.recv().await {
        Some(Frame::Packet(p)) => assert_eq!((p.cmd, p.session_id), (Command::Ok, id)),
        other => panic!("expected the bind's OK, got {other:?}"),
    }
    assert_eq!(c.recv().await, Some(Frame::Heartbeat));
    assert_eq!(server.local_users(), ["u3"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_parked_connection_is_kicked_and_cleaned_up() {
    let (server, addr) = start_alone(parking(|_| {})).await;
    let mut old = bound_client(addr, "phone-1", "android", "alice", None).await;
    park(&server, &mut old, 1).await;
    let mut new = bound_client(addr, "phone-2", "ios", "alice", None).await;
    let p = old.recv_packet().await.unwrap();
    assert_eq!(p.cmd, Command::Kick);
    let kick = Kick::decode(&old.open(&p)).unwrap();
    assert_eq!(kick.device_id.as_deref(), Some("phone-1"));
    // The server leaves the socket to the kicked client to close (COMPATIBILITY.md Q24): the
    // parked connection keeps answering heartbeats until it does.
    old.expect_heartbeat_echo().await;
    drop(old);
    wait_until("the kicked connection gone", || {
        server.connection_count() == 1
    })
    .await;
    push_no_ack(&server, "alice", &mut new, b"to the new one").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_silent_parked_connection_times_out() {
    let (server, mut c) = one_parked(parking(|c| {
        c.core.min_heartbeat = Duration::from_millis(200);
        c.core.max_heartbeat = Duration::from_millis(200);
        c.core.max_hb_timeout_times = 1;
    }))
    .await;
    // The check wheel closes it; the close gives it a task, which cleans up its route.
    assert!(c.closed_by_server().await, "still open after {WAIT:?}");
    wait_until("the route removed", || server.local_users().is_empty()).await;
    assert_eq!((server.parked_count(), server.connection_count()), (0, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn a_client_that_closes_while_parked_is_cleaned_up() {
    let (server, c) = one_parked(parking(|_| {})).await;
    drop(c);
    wait_until("the connection gone", || server.connection_count() == 0).await;
    wait_until("the route removed", || server.local_users().is_empty()).await;
    assert_eq!(server.parked_count(), 0);
    server.shutdown().await;
}

/// A heartbeat and the client's FIN in one poll of the parker (one edge-triggered event):
/// the heartbeat is read, the EOF is taken from the event, and the server closes at once, not
/// at the heartbeat timeout. (The client half-closes: a fully closed one would answer the
/// echo with an RST, a second event.)
#[tokio::test]
async fn a_heartbeat_then_a_half_close_while_parked_is_closed() {
    use tokio::io::AsyncWriteExt as _;
    let (server, mut c) = one_parked(parking(|c| {
        // Both land within one poll.
        c.net.connect_server_park_poll = Duration::from_millis(300);
    }))
    .await;
    c.send_bytes(&[0xDF]).await;
    c.stream.shutdown().await.unwrap();
    assert!(
        c.closed_by_server().await,
        "the half-closed connection stays open"
    );
    wait_until("the connection gone", || server.connection_count() == 0).await;
    assert_eq!(server.parked_count(), 0);
    server.shutdown().await;
}

/// A broadcast is written to parked connections by the parker: they get it and stay parked.
#[tokio::test]
async fn a_broadcast_reaches_parked_connections_and_leaves_them_parked() {
    let hub = mpush_spi_memory::MemoryHub::new();
    let (server, addr) = start_server(&hub, parking(|_| {})).await;
    let mut clients = parked_clients(&server, addr, 3).await;
    let sender = mpush::sender::PushSender::builder()
        .config(test_config())
        .cache_manager(std::sync::Arc::new(mpush_spi_memory::MemoryCache::new(
            hub.clone(),
        )))
        .discovery(std::sync::Arc::new(
            mpush_spi_memory::MemoryServiceRegistry::new(hub.clone()),
        ))
        .start()
        .await
        .unwrap();
    let sent = sender.send(mpush::sender::PushContext::broadcast(&b"to all"[..]));
    let received = async {
        for c in &mut clients {
            let p = c.recv_packet().await.unwrap();
            assert_eq!((p.cmd, &c.open(&p)[..]), (Command::Push, &b"to all"[..]));
        }
    };
    let (result, ()) = tokio::join!(sent, received);
    assert_eq!(result.len(), 1, "one result per gateway: {result:?}");
    assert_eq!(
        result[0].code,
        mpush::sender::ResultCode::Success,
        "{result:?}"
    );
    assert_eq!(server.parked_count(), 3);
    for c in &mut clients {
        c.expect_heartbeat_echo().await;
    }
    assert_eq!(server.parked_count(), 3);
    server.shutdown().await;
}

#[tokio::test]
async fn the_shutdown_closes_parked_connections() {
    let (server, addr) = start_alone(parking(|_| {})).await;
    let clients = parked_clients(&server, addr, 3).await;
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("the shutdown waits for no parked connection");
    for mut c in clients {
        assert!(
            c.closed_by_server().await,
            "a parked connection outlived the shutdown"
        );
    }
}

/// Pushes from another task while the connection parks and is woken over and over (ACK
/// pushes wake it, heartbeats park it): every push arrives, in order.
#[tokio::test]
async fn pushes_racing_the_handover_arrive_in_order() {
    const PUSHES: u32 = 200;
    let (server, addr) = start_alone(parking(|_| {})).await;
    let server = std::sync::Arc::new(server);
    let mut c = bound_client(addr, "dev-1", "android", "u1", None).await;
    let pusher = {
        let server = server.clone();
        tokio::spawn(async move {
            for n in 0..PUSHES {
                let (ack, want) = if n % 4 == 0 {
                    (AckModel::AutoAck, PushOutcome::AckSuccess)
                } else {
                    (AckModel::NoAck, PushOutcome::Success)
                };
                let out = server
                    .push_to_local_user("u1", None, n.to_be_bytes().to_vec(), ack, WAIT)
                    .await;
                assert_eq!(out, vec![(ClientType::MOBILE, want)], "push {n}");
            }
        })
    };
    let mut next = 0u32;
    let mut parked_seen = false;
    let mut pusher = Some(pusher);
    while next < PUSHES {
        if pusher.as_ref().is_some_and(|p| p.is_finished()) {
            // A failed push ends the test here; after the last one the rest is in flight
            // (a lost push ends it in `recv`'s timeout).
            pusher.take().unwrap().await.unwrap();
        }
        // A heartbeat between pushes parks the connection whenever its task is idle.
        c.send_bytes(&[0xDF]).await;
        loop {
            use mpush::protocol::packet::Frame;
            match c.recv().await.expect("closed") {
                Frame::Heartbeat => break,
                Frame::Packet(p) => {
                    assert_eq!(p.cmd, Command::Push);
                    let n = u32::from_be_bytes(c.open(&p)[..].try_into().unwrap());
                    assert_eq!(n, next, "pushes out of order");
                    next += 1;
                    if p.flags & flags::AUTO_ACK != 0 {
                        c.send(&Packet::new(Command::Ack, p.session_id)).await;
                    }
                }
            }
        }
        parked_seen |= server.parked_count() == 1;
    }
    if let Some(pusher) = pusher {
        pusher.await.unwrap();
    }
    assert!(parked_seen, "the connection never parked");
    assert_eq!(server.connection_count(), 1);
}

#[tokio::test]
async fn no_parking_when_off() {
    let (server, addr) = start_alone(parking(|c| {
        c.net.connect_server_park_idle = Duration::ZERO;
    }))
    .await;
    let mut c = bound_client(addr, "dev-1", "android", "u1", None).await;
    for _ in 0..3 {
        c.expect_heartbeat_echo().await;
    }
    push_no_ack(&server, "u1", &mut c, b"hello").await;
    assert_eq!(server.parked_count(), 0);
    server.shutdown().await;
}
