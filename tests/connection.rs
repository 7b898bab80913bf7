//! End-to-end tests of the connection server over real TCP with a wire-level client:
//! handshake, fast connect, bind/kick, pushes with each ACK mode, idle close, bad input.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::*;
use mpush::AckModel;
use mpush::protocol::message::{ErrorCode, FastConnectOk, FastConnectRequest, Kick, Message};
use mpush::protocol::packet::Packet;
use mpush::protocol::{Command, flags};
use mpush::spi::{ClientType, PushOutcome};
use mpush_spi_memory::MemoryHub;

/// [`assert_push_delivered`] to every client type of `user`, whose one session is mobile.
async fn assert_mobile_push_delivered(
    server: &mpush::RunningServer,
    user: &str,
    client: &mut RawClient,
    body: &[u8],
) {
    assert_push_delivered(server, user, None, ClientType::MOBILE, client, body).await;
}

/// Pushes `body` NO_ACK to `user` on `server`, expects one Success on `client_type` and the
/// PUSH (with that content) at `client`.
async fn assert_push_delivered(
    server: &mpush::RunningServer,
    user: &str,
    only: Option<ClientType>,
    client_type: ClientType,
    client: &mut RawClient,
    body: &[u8],
) {
    let out = server
        .push_to_local_user(
            user,
            only,
            body.to_vec(),
            AckModel::NoAck,
            Duration::from_secs(1),
        )
        .await;
    assert_eq!(out, vec![(client_type, PushOutcome::Success)]);
    let p = client.recv_packet().await.unwrap();
    assert_eq!(p.cmd, Command::Push);
    assert_eq!(&client.open(&p)[..], body);
}

#[tokio::test]
async fn handshake_bind_and_push_no_ack() {
    let (server, addr) = start_alone(test_config()).await;
    let mut c = RawClient::connect(addr).await;
    let ok = c.handshake("dev-1", "android").await;
    assert_eq!(ok.heartbeat, 60_000);
    assert_eq!(ok.session_id.as_ref().map(String::len), Some(32));
    let bound = c.bind("user-1", Some("vip,test")).await.unwrap();
    assert_eq!(
        (bound.cmd, bound.data.as_deref()),
        (5, Some("bind success"))
    );

    let out = push_local(
        &server,
        "user-1",
        &b"{\"content\":\"hi\"}"[..],
        Duration::from_secs(3),
    )
    .await;
    assert_eq!(out, vec![(ClientType::MOBILE, PushOutcome::Success)]);
    let p = c.recv_packet().await.unwrap();
    assert_eq!(p.cmd, Command::Push);
    assert!(p.has_flag(flags::CRYPTO));
    assert!(
        p.session_id >= 0x4000_0000,
        "server push ids live in their own range (Q14)"
    );
    assert_eq!(&c.open(&p)[..], b"{\"content\":\"hi\"}");

    // A heartbeat is echoed.
    c.expect_heartbeat_echo().await;
    server.shutdown().await;
}

#[tokio::test]
async fn auto_ack_biz_ack_and_ack_timeout() {
    let (server, addr) = start_alone(test_config()).await;
    let mut c = bound_client(addr, "dev-1", "ios", "u", None).await;

    for model in [AckModel::AutoAck, AckModel::BizAck] {
        let push = server.push_to_local_user(
            "u",
            Some(ClientType::MOBILE),
            &b"x"[..],
            model,
            Duration::from_secs(5),
        );
        let client = async {
            let p = c.recv_packet().await.unwrap();
            assert_eq!(p.cmd, Command::Push);
            assert_eq!(p.flags & flags::ACK_MASK, model.flags());
            c.send(&Packet::new(Command::Ack, p.session_id)).await;
        };
        let (out, ()) = tokio::join!(push, client);
        assert_eq!(
            out,
            vec![(ClientType::MOBILE, PushOutcome::AckSuccess)],
            "{model:?}"
        );
    }

    // No ACK: the push times out.
    let out = server
        .push_to_local_user(
            "u",
            Some(ClientType::MOBILE),
            &b"y"[..],
            AckModel::BizAck,
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(out, vec![(ClientType::MOBILE, PushOutcome::Timeout)]);
    let late = c.recv_packet().await.unwrap();
    assert_eq!(&c.open(&late)[..], b"y");
    // A late ACK is harmless: the connection stays bound, and the stale ACK is not taken for
    // the next push's (which still waits for, and gets, its own ACK).
    c.send(&Packet::new(Command::Ack, late.session_id)).await;
    let push = server.push_to_local_user(
        "u",
        Some(ClientType::MOBILE),
        &b"z"[..],
        AckModel::BizAck,
        WAIT,
    );
    let client = async {
        let p = c.recv_packet().await.unwrap();
        assert_eq!((p.cmd, &c.open(&p)[..]), (Command::Push, &b"z"[..]));
        assert_ne!(p.session_id, late.session_id);
        c.send(&Packet::new(Command::Ack, p.session_id)).await;
    };
    let (out, ()) = tokio::join!(push, client);
    assert_eq!(out, vec![(ClientType::MOBILE, PushOutcome::AckSuccess)]);
    server.shutdown().await;
}

#[tokio::test]
async fn fast_connect_valid_unknown_and_wrong_device() {
    let hub = MemoryHub::new();
    let (server, addr) = start_server(&hub, test_config()).await;
    let mut c = RawClient::connect(addr).await;
    let ok = c.handshake("dev-fc", "android").await;
    let ticket = ok.session_id.unwrap();
    let cipher = c.cipher.clone();
    drop(c);
    // HandshakeOk does not wait for the session write (it runs after the reply): wait for it.
    let cache = mpush_spi_memory::MemoryCache::new(hub.clone());
    let key = mpush::protocol::session::session_cache_key(&ticket);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while mpush::spi::CacheManager::get(&cache, &key)
        .await
        .unwrap()
        .is_none()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "session never stored"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Valid ticket: FastConnectOk (raw), then the old session key works for BIND.
    let mut c = RawClient::connect(addr).await;
    let req = FastConnectRequest {
        session_id: Some(ticket.clone()),
        device_id: Some("dev-fc".into()),
        min_heartbeat: 0,
        max_heartbeat: 30_000,
    };
    c.send(&Packet::with_body(Command::FastConnect, 5, req.encode()))
        .await;
    let p = c.recv_packet().await.unwrap();
    assert_eq!((p.cmd, p.session_id, p.flags), (Command::FastConnect, 5, 0));
    assert_eq!(FastConnectOk::decode(&p.body).unwrap().heartbeat, 30_000);
    c.cipher = cipher;
    c.bind("fc-user", None).await.unwrap();

    // Wrong device → 104, connection kept.
    let mut c2 = RawClient::connect(addr).await;
    let bad = FastConnectRequest {
        device_id: Some("other".into()),
        ..req.clone()
    };
    c2.send(&Packet::with_body(Command::FastConnect, 6, bad.encode()))
        .await;
    let (p, e) = c2.expect_error().await;
    assert_eq!(
        (p.session_id, e.cmd, e.code),
        (6, 7, ErrorCode::InvalidDevice.code())
    );

    // Unknown ticket → 103, then a full handshake on the same socket works.
    let unknown = FastConnectRequest {
        session_id: Some("0".repeat(32)),
        ..req
    };
    c2.send(&Packet::with_body(
        Command::FastConnect,
        7,
        unknown.encode(),
    ))
    .await;
    let (_, e) = c2.expect_error().await;
    assert_eq!(
        (e.cmd, e.code, e.reason.as_deref()),
        (7, 103, Some("session expired"))
    );
    c2.handshake("dev-2", "android").await;
    c2.bind("u2", None).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn same_type_kicks_different_types_coexist() {
    let (server, addr) = start_alone(test_config()).await;
    let mut phone1 = bound_client(addr, "phone-1", "android", "alice", None).await;
    let mut pc = bound_client(addr, "pc-1", "windows", "alice", None).await;

    let _phone2 = bound_client(addr, "phone-2", "ios", "alice", None).await;

    let p = phone1.recv_packet().await.unwrap();
    assert_eq!(p.cmd, Command::Kick);
    let kick = Kick::decode(&phone1.open(&p)).unwrap();
    assert_eq!(
        (kick.device_id.as_deref(), kick.user_id.as_deref()),
        (Some("phone-1"), Some("alice"))
    );

    let sessions = server.local_sessions("alice");
    let mut devices: Vec<_> = sessions
        .iter()
        .filter_map(|s| s.device_id.clone())
        .collect();
    devices.sort();
    assert_eq!(devices, ["pc-1", "phone-2"]);

    // The PC (another type) was not kicked: a push reaches it.
    assert_push_delivered(
        &server,
        "alice",
        Some(ClientType::PC),
        ClientType::PC,
        &mut pc,
        b"pc",
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn upstream_push_gets_auto_ack() {
    let (server, addr) = start_alone(test_config()).await;
    let mut c = RawClient::handshaken(addr, "dev-up", "android").await;
    let (body, f) =
        mpush::protocol::body::seal(b"hello server".to_vec(), c.cipher.as_ref(), 1024).unwrap();
    c.send(&Packet {
        flags: f | flags::AUTO_ACK,
        body,
        ..Packet::new(Command::Push, 42)
    })
    .await;
    let p = c.recv_packet().await.unwrap();
    assert_eq!((p.cmd, p.session_id, p.body.len()), (Command::Ack, 42, 0));
    server.shutdown().await;
}

#[tokio::test]
async fn idle_connection_is_closed() {
    let hub = MemoryHub::new();
    let mut cfg = test_config();
    cfg.core.min_heartbeat = Duration::from_millis(200);
    cfg.core.max_heartbeat = Duration::from_millis(200);
    cfg.core.max_hb_timeout_times = 1;
    let (server, addr) = start_server(&hub, cfg).await;
    // A client that heartbeats on the same server must stay open: the close is for idleness.
    let mut alive = RawClient::handshaken(addr, "alive", "android").await;
    let mut c = RawClient::connect(addr).await;
    let ok = c.handshake("idle", "android").await;
    assert_eq!(ok.heartbeat, 200);
    let start = std::time::Instant::now();
    let idle_closed = c.closed_by_server();
    let heartbeats = async {
        loop {
            alive.expect_heartbeat_echo().await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let closed = tokio::select! {
        closed = idle_closed => closed,
        () = heartbeats => unreachable!("the heartbeat loop only ends by panicking"),
    };
    assert!(closed, "idle connection still open after {WAIT:?}");
    // A check every heartbeat (200 ms) counts a miss once the client is silent for more than
    // heartbeat + 1 s; the second miss closes: not before 1.2 s + 200 ms of silence (100 ms
    // off for the handshake reply that preceded `start`).
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(1300),
        "closed early, after {took:?}"
    );
    // The heartbeating client outlived it and still gets its echo.
    alive.expect_heartbeat_echo().await;
    server.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_errors_and_others_keep_working() {
    let (server, addr) = start_alone(test_config()).await;
    let mut good = bound_client(addr, "good", "android", "good-user", None).await;

    // Garbage bytes: closed.
    let mut g = RawClient::connect(addr).await;
    g.send_bytes(b"GET / HTTP/1.1\r\n\r\n").await;
    assert!(g.closed_by_server().await);

    // Oversized frame: rejected from the header alone, closed.
    let mut big = RawClient::connect(addr).await;
    big.send_bytes(&[0x00, 0x10, 0x00, 0x00, 15, 0, 0, 0, 0, 0, 0, 1, 0])
        .await;
    assert!(big.closed_by_server().await);

    // Wrong RSA key: ERROR 100 (or "Param invalid") and close.
    let mut wrong = RawClient::connect(addr).await;
    let other_key = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDM3Pm3t2P4Tzz9oQBVOkEj+S2Ve0D2jX4mPxVQdnEUk2nv8dfvaVRgc4Xn+rPkN7yRw5BztqXTHTN2t/MLk/9rD8eTuDNqB0gK1pwaMQm8Kq4XU/DUeIg/lV9XjgppUFS2sdczHk0qLNGK5kfPxq8zdwXGq7XaEuAcPVtmk6cgnwIDAQAB";
    match RsaKeysCheck::valid(other_key) {
        true => {
            let err = wrong
                .handshake_with_key("w", "android", other_key)
                .await
                .unwrap_err();
            assert_eq!(err.cmd, Command::Error);
            assert!(wrong.closed_by_server().await);
        }
        false => unreachable!("test key must parse"),
    }

    // Bind before handshake: "not handshake", closed.
    let mut early = RawClient::connect(addr).await;
    let e = early.bind("x", None).await.unwrap_err();
    assert_eq!((e.cmd, e.reason.as_deref()), (5, Some("not handshake")));
    assert!(early.closed_by_server().await);

    // Unknown command: ERROR 101, closed.
    let mut unk = RawClient::connect(addr).await;
    unk.send(&Packet::new(Command::Unknown(99), 9)).await;
    let (p, e) = unk.expect_error().await;
    assert_eq!(
        (p.session_id, e.cmd, e.code),
        (9, 99, ErrorCode::UnsupportedCmd.code())
    );
    assert!(unk.closed_by_server().await);

    // The good client still gets pushes and heartbeats.
    assert_mobile_push_delivered(&server, "good-user", &mut good, b"still here").await;
    server.shutdown().await;
}

struct RsaKeysCheck;
impl RsaKeysCheck {
    fn valid(k: &str) -> bool {
        mpush::protocol::crypto::RsaKeys::public_only(k).is_ok()
    }
}

#[tokio::test]
async fn a_client_that_does_not_read_is_bounded() {
    let (server, addr) = start_alone(test_config()).await;
    // Handshaken and bound, then never reads again.
    let _stuck = bound_client(addr, "stuck", "android", "stuck-user", None).await;
    let mut good = bound_client(addr, "fine", "ios", "fine-user", None).await;

    // Incompressible 16 KiB pushes: once the kernel buffers and the 64 KiB high water mark
    // are full, pushes fail instead of queueing more.
    let chunk: Vec<u8> = (0..16 * 1024).map(|_| rand::random::<u8>()).collect();
    let mut failed_at = None;
    for i in 0..2000 {
        let out = push_local(&server, "stuck-user", chunk.clone(), Duration::from_secs(1)).await;
        if out == vec![(ClientType::MOBILE, PushOutcome::Failure)] {
            failed_at = Some(i);
            break;
        }
    }
    let n = failed_at.expect("pushes to a client that never reads must start failing");
    assert!(n > 0);
    // Everyone else is unaffected.
    assert_mobile_push_delivered(&server, "fine-user", &mut good, b"ok").await;
    server.shutdown().await;
}

#[tokio::test]
async fn unbind_and_kick_user_api() {
    let hub = MemoryHub::new();
    let (a, addr_a) = start_server(&hub, test_config()).await;
    let (b, addr_b) = start_server(&hub, test_config()).await;
    let mut on_b = bound_client(addr_b, "kick-me", "android", "target", None).await;
    // Any server can kick a user wherever it is connected.
    assert_eq!(a.kick_user("target", None).await.unwrap(), 1);
    let p = on_b.recv_packet().await.unwrap();
    assert_eq!(p.cmd, Command::Kick);
    // A kicked connection no longer holds the user (deviation D1 in COMPATIBILITY.md): no
    // unicast or broadcast reaches it, and its route is offline at once.
    assert!(b.local_users().is_empty());
    let outcomes = push_local(&b, "target", b"x".to_vec(), Duration::from_secs(1)).await;
    assert!(
        outcomes.is_empty(),
        "a kicked connection was still served: {outcomes:?}"
    );

    // A bound user can unbind: OK, the user is gone; unbinding again is a no-op OK (Q5 fixed).
    on_b.bind("target", None).await.unwrap();
    assert_eq!(b.local_users(), ["target"]);
    assert!(b.online_user_count().await.unwrap() >= 1);
    let ok = on_b
        .bind_cmd(Command::Unbind, "target", None)
        .await
        .unwrap();
    assert_eq!((ok.cmd, ok.data.as_deref()), (6, Some("unbind success")));
    assert!(b.local_users().is_empty());
    let ok = on_b
        .bind_cmd(Command::Unbind, "target", None)
        .await
        .unwrap();
    assert_eq!(ok.cmd, 6);
    let _ = addr_a;
    a.shutdown().await;
    b.shutdown().await;
}

/// A start that fails (here: the client port is taken) can be retried once the cause is
/// gone, and dropping a running server stops it (its port is free again, its node leaves
/// the registry).
#[tokio::test]
async fn failed_start_can_be_retried_and_drop_stops() {
    use mpush_spi_memory::{MemoryCache, MemoryMQ, MemoryServiceRegistry};
    use std::sync::Arc;
    let hub = MemoryHub::new();
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = blocker.local_addr().unwrap().port();
    let config = config_with(|c| c.net.connect_server_port = port);
    let registry = Arc::new(MemoryServiceRegistry::new(hub.clone()));
    let builder = mpush::MPushServer::builder()
        .config(config)
        .cache_manager(Arc::new(MemoryCache::new(hub.clone())))
        .mq_client(Arc::new(MemoryMQ::new(hub.clone())))
        .service_registry(registry.clone(), registry.clone());
    let err = builder.start().await.expect_err("the port is taken");
    assert!(
        err.to_string().contains("connection server"),
        "unexpected error: {err}"
    );
    // A failed start leaves nothing behind: no node is registered.
    use mpush::spi::{ServiceDiscovery, services};
    let listed = registry.lookup(services::CONNECT_SERVER).await.unwrap();
    assert!(listed.is_empty(), "a failed start registered {listed:?}");
    drop(blocker);
    let server = builder
        .start()
        .await
        .expect("a failed start can be retried");
    assert!(server.is_running());
    let mut c = bound_client(
        server.connect_addr(),
        "retry-dev",
        "android",
        "retry-user",
        None,
    )
    .await;
    let listed = registry.lookup(services::CONNECT_SERVER).await.unwrap();
    assert!(
        listed.iter().any(|n| n.port == port),
        "started server is registered"
    );

    drop(server);
    // The port is released and the node deregistered, without a call to stop().
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let free = std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
        let listed = registry.lookup(services::CONNECT_SERVER).await.unwrap();
        if free && !listed.iter().any(|n| n.port == port) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dropped server still holds its port ({free}) or registration"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        c.recv_packet().await.is_none(),
        "connections of a dropped server close"
    );
}
