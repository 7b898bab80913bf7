//! UDP gateway mode (`mp.net.gateway-server-net = udp`, spec §1.8, §9.7): an in-process
//! cluster of three servers on one memory hub plus a `PushSender` in UDP mode, over real
//! loopback UDP. Multicast is disabled (groups set to ""), so broadcasts are unicast to
//! every gateway; multicast itself is not exercised here.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use mpush::AckModel;
use mpush::MPushConfig;
use mpush::protocol::message::{ErrorMessage, GatewayKick, GatewayPush, Kick, Message};
use mpush::protocol::packet::decode_datagram;
use mpush::protocol::{Command, Packet};
use mpush::sender::{PushContext, ResultCode};
use tokio::net::UdpSocket;

/// Test config in UDP gateway mode: loopback, ephemeral ports, no multicast.
fn udp_config() -> MPushConfig {
    let mut c = test_config();
    c.net.gateway_server_net = "udp".into();
    c.net.gateway_server_multicast = String::new();
    c.net.gateway_client_multicast = String::new();
    c.net.gateway_client_port = 0;
    c
}

async fn cluster(n: usize) -> Cluster {
    start_cluster(n, udp_config()).await
}

/// Datagrams received on `sock` within `window`, decoded.
async fn replies(sock: &UdpSocket, window: Duration) -> Vec<Packet> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_536];
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf)).await {
        out.push(decode_datagram(&buf[..n], 1 << 20).unwrap());
    }
    out
}

#[tokio::test]
async fn udp_gateway_is_advertised_and_tcp_gateway_is_not_bound() {
    let c = cluster(1).await;
    let gw = c.gateway(0);
    assert_eq!(c.sender.gateways(), vec![gw.to_string()]);
    // Nothing listens on TCP at the advertised port in UDP mode.
    assert!(tokio::net::TcpStream::connect(gw).await.is_err());
    c.shutdown().await;
}

#[tokio::test]
async fn success_offline_and_timeout_over_udp() {
    let c = cluster(3).await;
    assert_each_ack_mode_then_offline(&c, 1, "u1").await;

    // A cached online route whose device has gone → the gateway answers ERROR 1 → OFFLINE.
    let gone = bound_client(c.addr(0), "d3", "android", "u3", None).await;
    let mut gone_rx = spawn_receiver(gone, AckPolicy::DieOnPush);
    expect_push(&c.sender, "u3", AckModel::NoAck, 3000, ResultCode::Success).await;
    recv_within(&mut gone_rx).await;
    wait_not_local(&c.nodes[0], "u3").await;
    expect_push(&c.sender, "u3", AckModel::NoAck, 3000, ResultCode::Offline).await;

    // A client that never ACKs → no gateway reply → TIMEOUT, within the context timeout.
    assert_never_acking_client_times_out(&c, 2, "u2").await;
    c.shutdown().await;
}

#[tokio::test]
async fn router_change_reroutes_to_the_new_node() {
    assert_router_change_reroutes(cluster(3).await).await;
}

#[tokio::test]
async fn broadcast_reaches_every_node_exactly_once() {
    let c = cluster(3).await;
    let mut rxs = Vec::new();
    for node in 0..3 {
        for i in 0..2 {
            let user = format!("b{node}-{i}");
            let cl =
                bound_client(c.addr(node), &format!("dev-{user}"), "android", &user, None).await;
            rxs.push((user, spawn_receiver(cl, AckPolicy::All)));
        }
    }
    let results = tokio::time::timeout(WAIT, c.sender.send(PushContext::broadcast(&b"to all"[..])))
        .await
        .unwrap();
    assert_eq!(results.len(), 3, "one result per gateway: {results:?}");
    assert!(
        results.iter().all(|r| r.code == ResultCode::Success),
        "{results:?}"
    );
    for (user, rx) in rxs.iter_mut() {
        let got = received_before_fence(&c.sender, user, rx).await;
        assert_eq!(
            got.len(),
            1,
            "{user} received the broadcast {} times",
            got.len()
        );
        assert_eq!(&got[0].content[..], b"to all");
    }
    c.shutdown().await;
}

#[tokio::test]
async fn cross_node_kick_travels_as_a_gateway_kick_datagram() {
    let c = cluster(2).await;
    // The MQ kick path is not subscribed in UDP mode, so this can only arrive over UDP.
    let mut old = bound_client(c.addr(0), "old-phone", "android", "kicked", None).await;
    let _new = bound_client(c.addr(1), "new-phone", "android", "kicked", None).await;
    let p = old.recv_packet().await.expect("connection closed");
    assert_eq!(p.cmd, Command::Kick);
    let kick = Kick::decode(&old.open(&p)).unwrap();
    assert_eq!(kick.device_id.as_deref(), Some("old-phone"));
    assert_eq!(kick.user_id.as_deref(), Some("kicked"));
    c.shutdown().await;
}

#[tokio::test]
async fn hand_made_gateway_kick_needs_the_right_target_and_conn_id() {
    let c = cluster(1).await;
    let gw = c.gateway(0);
    let mut phone = bound_client(c.addr(0), "p1", "android", "hk", None).await;
    let conn_id = c.nodes[0].local_sessions("hk")[0].conn_id.clone();
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let kick = |conn: &str, port: i32| {
        let msg = GatewayKick {
            user_id: Some("hk".into()),
            device_id: Some("p1".into()),
            conn_id: Some(conn.into()),
            client_type: 1,
            target_server: Some("127.0.0.1".into()),
            target_port: port,
        };
        Packet::with_body(Command::GatewayKick, 0, msg.encode()).to_bytes()
    };
    let port = i32::from(gw.port());
    // Wrong connection, wrong target port: ignored, and never answered.
    sock.send_to(&kick("deadbeef", port), gw).await.unwrap();
    sock.send_to(&kick(&conn_id, port + 1), gw).await.unwrap();
    assert!(replies(&sock, Duration::from_millis(300)).await.is_empty());
    sock.send_to(&kick(&conn_id, port), gw).await.unwrap();
    let p = phone.recv_packet().await.expect("connection closed");
    assert_eq!(p.cmd, Command::Kick, "only the matching kick is delivered");
    c.shutdown().await;
}

#[tokio::test]
async fn bad_datagrams_never_close_the_gateway_socket() {
    let c = cluster(1).await;
    let gw = c.gateway(0);
    let mut rx = receiver(c.addr(0), "d", "robust").await;
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    let push_msg = GatewayPush {
        user_id: Some("nobody".into()),
        client_type: 1,
        timeout: 2500,
        content: Some(b"x".to_vec()),
        ..Default::default()
    };
    let valid = Packet::with_body(Command::GatewayPush, 80, push_msg.encode()).to_bytes();
    // Garbage, a bare heartbeat byte, an empty datagram: no readable header, no reply.
    sock.send_to(b"hello", gw).await.unwrap();
    sock.send_to(&[0xDF], gw).await.unwrap();
    sock.send_to(&[], gw).await.unwrap();
    // Oversized: the header announces more than gateway-max-packet-size (10240).
    let mut oversized = Packet::with_body(Command::GatewayPush, 77, vec![0u8; 20_000])
        .to_bytes()
        .to_vec();
    sock.send_to(&oversized, gw).await.unwrap();
    // Truncated: a valid GATEWAY_PUSH cut short.
    sock.send_to(&valid[..valid.len() - 3], gw).await.unwrap();
    // Whole packet, undecodable GATEWAY_PUSH body (a negative string length).
    let bad_body = Packet::with_body(Command::GatewayPush, 79, vec![0xFF, 0xFF]).to_bytes();
    sock.send_to(&bad_body, gw).await.unwrap();
    // Unknown and unhandled commands: logged only.
    sock.send_to(&Packet::new(Command::Unknown(99), 81).to_bytes(), gw)
        .await
        .unwrap();
    sock.send_to(&Packet::new(Command::Bind, 82).to_bytes(), gw)
        .await
        .unwrap();
    // An ERROR datagram is never answered (no error ping-pong between peers).
    oversized.truncate(20);
    oversized[4] = Command::Error.code();
    sock.send_to(&oversized, gw).await.unwrap();

    let got = replies(&sock, Duration::from_millis(500)).await;
    let mut errors: HashMap<i32, ErrorMessage> = HashMap::new();
    for p in got {
        assert_eq!(p.cmd, Command::Error, "{p:?}");
        errors.insert(p.session_id, ErrorMessage::decode(&p.body).unwrap());
    }
    let mut ids: Vec<i32> = errors.keys().copied().collect();
    ids.sort();
    // 77 oversized, 80 truncated, 79 bad body: ERROR 100 echoing the sessionId.
    assert_eq!(ids, [77, 79, 80]);
    for e in errors.values() {
        assert_eq!((e.cmd, e.code), (Command::GatewayPush.code(), 100));
    }

    // The socket still serves: the valid datagram gets the TCP gateway's OFFLINE answer...
    sock.send_to(&valid, gw).await.unwrap();
    let got = replies(&sock, Duration::from_millis(500)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!((got[0].cmd, got[0].session_id), (Command::Error, 80));
    let e = ErrorMessage::decode(&got[0].body).unwrap();
    assert_eq!(e.code, 1, "OFFLINE");
    assert!(e.data.unwrap().contains("\"userId\":\"nobody\""));

    // ...and the push SDK still delivers.
    expect_push(
        &c.sender,
        "robust",
        AckModel::AutoAck,
        3000,
        ResultCode::Success,
    )
    .await;
    let got = recv_within(&mut rx).await;
    assert_eq!(&got.content[..], b"hello");
    c.shutdown().await;
}
