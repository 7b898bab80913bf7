//! End-to-end tests of the WebSocket listener (spec §1.9, §3.15) over loopback with a
//! tokio-tungstenite client: JSON handshake, bind, pushes with ACK, upstream AUTO_ACK
//! (quirk Q8 fixed), coexistence with TCP clients, rejection of bad input, liveness (idle
//! reaping with server pings, the handshake deadline, the frame size limit) and the demo
//! page's plain HTTP answers.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use mpush::AckModel;
use mpush::sender::{PushSender, ResultCode};
use mpush::spi::{ClientType, PushOutcome, ServiceDiscovery};
use mpush_spi_memory::{MemoryCache, MemoryHub, MemoryServiceRegistry};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A server with the WebSocket listener on; returns it with (tcp, ws) addresses.
async fn start_ws(
    hub: &std::sync::Arc<MemoryHub>,
) -> (mpush::RunningServer, SocketAddr, SocketAddr) {
    start_ws_with(hub, |_| {}).await
}

/// As [`start_ws`], with the config adjusted first.
async fn start_ws_with(
    hub: &std::sync::Arc<MemoryHub>,
    tweak: impl FnOnce(&mut mpush::MPushConfig),
) -> (mpush::RunningServer, SocketAddr, SocketAddr) {
    let mut config = test_config();
    config.net.ws_server_port = free_port();
    config.net.ws_path = "/ws".into();
    tweak(&mut config);
    let (server, addr) = start_server(hub, config).await;
    let ws = server.ws_addr().unwrap();
    (server, addr, ws)
}

/// The WebSocket heartbeat of the liveness tests (`mp.core.min-heartbeat`): short, so a dead
/// client is reaped after about 2 s (§7.2: the third consecutive miss past heartbeat + 1 s).
const SHORT_HEARTBEAT: Duration = Duration::from_millis(300);

fn short_heartbeat(c: &mut mpush::MPushConfig) {
    c.core.min_heartbeat = SHORT_HEARTBEAT;
    c.core.max_heartbeat = SHORT_HEARTBEAT;
}

/// A WebSocket server with the short heartbeat, a sender on its hub, and its ws address.
async fn short_heartbeat_server() -> (mpush::RunningServer, PushSender, SocketAddr) {
    let hub = MemoryHub::new();
    let (server, _, ws) = start_ws_with(&hub, short_heartbeat).await;
    (server, sender_for(&hub).await, ws)
}

async fn sender_for(hub: &std::sync::Arc<MemoryHub>) -> PushSender {
    PushSender::builder()
        .config(test_config())
        .cache_manager(std::sync::Arc::new(MemoryCache::new(hub.clone())))
        .discovery(std::sync::Arc::new(MemoryServiceRegistry::new(hub.clone())))
        .start()
        .await
        .unwrap()
}

/// Reads until the server's close frame; returns it with the number of pings seen before.
async fn close_frame(c: &mut Ws) -> (Option<CloseFrame>, usize) {
    let mut pings = 0;
    loop {
        match tokio::time::timeout(WAIT, c.next())
            .await
            .expect("no close in time")
        {
            Some(Ok(WsMessage::Close(frame))) => return (frame, pings),
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            Some(Ok(other)) => panic!("unexpected frame before the close: {other:?}"),
            Some(Err(e)) => panic!("connection failed before a close frame: {e}"),
            None => panic!("connection ended without a close frame"),
        }
    }
}

async fn connect(ws: SocketAddr) -> Ws {
    let (c, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{ws}/ws")),
    )
    .await
    .unwrap()
    .unwrap();
    c
}

async fn send(c: &mut Ws, v: Value) {
    c.send(WsMessage::text(v.to_string())).await.unwrap();
}

/// Next JSON packet, or `None` when the server closed the connection.
async fn recv(c: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(WAIT, c.next())
            .await
            .expect("no frame in time")
        {
            Some(Ok(WsMessage::Text(t))) => return Some(serde_json::from_str(t.as_str()).unwrap()),
            Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => return None,
            Some(Ok(_)) => continue,
        }
    }
}

/// `true` once the server has closed the connection (after any remaining frames).
async fn closed(c: &mut Ws) -> bool {
    loop {
        match tokio::time::timeout(WAIT, c.next()).await {
            Err(_) => return false,
            Ok(Some(Ok(WsMessage::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
}

/// A WebSocket client on `ws`, handshaken as `device` on `os` and bound (checked) as `user`.
async fn bound_web(ws: SocketAddr, device: &str, os: &str, user: &str) -> Ws {
    let mut c = connect(ws).await;
    handshake(&mut c, device, os).await;
    assert_eq!(bind(&mut c, user).await["cmd"], 11, "bind {user}");
    c
}

async fn handshake(c: &mut Ws, device: &str, os: &str) -> Value {
    send(
        c,
        json!({"cmd":2,"flags":16,"sessionId":1,
               "body":{"deviceId":device,"osName":os,"osVersion":"1","clientVersion":"js-1"}}),
    )
    .await;
    recv(c).await.unwrap()
}

async fn bind(c: &mut Ws, user: &str) -> Value {
    send(
        c,
        json!({"cmd":5,"sessionId":2,"body":{"userId":user,"tags":"t"}}),
    )
    .await;
    recv(c).await.unwrap()
}

#[tokio::test]
async fn handshake_bind_push_and_ack() {
    let hub = MemoryHub::new();
    let (server, _, ws) = start_ws(&hub).await;
    let mut c = connect(ws).await;

    let ok = handshake(&mut c, "web-dev-1", "web").await;
    assert_eq!(ok, json!({"cmd":2,"flags":16,"sessionId":1}));
    // Same deviceId again: ERROR 102, connection kept.
    let again = handshake(&mut c, "web-dev-1", "web").await;
    assert_eq!(again["cmd"], 10);
    assert_eq!(again["body"]["code"], 102);
    assert_eq!(again["body"]["cmd"], 2);

    let bound = bind(&mut c, "wsu").await;
    assert_eq!(
        bound,
        json!({"cmd":11,"flags":16,"sessionId":2,"body":{"cmd":5,"data":"bind success"}})
    );
    assert_eq!(server.local_sessions("wsu")[0].client_type, ClientType::WEB);

    // NO_ACK push.
    let out = push_local(&server, "wsu", &b"hello"[..], Duration::from_secs(3)).await;
    assert_eq!(out, vec![(ClientType::WEB, PushOutcome::Success)]);
    let p = recv(&mut c).await.unwrap();
    assert_eq!(
        (p["cmd"].clone(), p["flags"].clone()),
        (json!(15), json!(16))
    );
    assert_eq!(p["body"]["content"], "hello");

    // AUTO_ACK push: the client ACKs with the push id.
    let push = server.push_to_local_user(
        "wsu",
        Some(ClientType::WEB),
        "héllo".as_bytes(),
        AckModel::AutoAck,
        Duration::from_secs(5),
    );
    let client = async {
        let p = recv(&mut c).await.unwrap();
        assert_eq!(p["flags"], 24);
        assert_eq!(p["body"]["content"], "héllo");
        send(&mut c, json!({"cmd":23,"sessionId":p["sessionId"]})).await;
    };
    let (out, ()) = tokio::join!(push, client);
    assert_eq!(out, vec![(ClientType::WEB, PushOutcome::AckSuccess)]);

    // Upstream push with AUTO_ACK: a JSON ACK comes back (Q8 fixed).
    send(
        &mut c,
        json!({"cmd":15,"flags":24,"sessionId":77,"body":{"content":"up"}}),
    )
    .await;
    assert_eq!(
        recv(&mut c).await.unwrap(),
        json!({"cmd":23,"flags":16,"sessionId":77})
    );

    // Unbind.
    send(
        &mut c,
        json!({"cmd":6,"sessionId":3,"body":{"userId":"wsu"}}),
    )
    .await;
    let unbound = recv(&mut c).await.unwrap();
    assert_eq!(unbound["body"]["data"], "unbind success");
    assert!(server.local_sessions("wsu").is_empty());
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_and_ws_clients_of_one_user_coexist_and_node_is_registered() {
    let hub = MemoryHub::new();
    let (server, addr, ws) = start_ws(&hub).await;
    let nodes = MemoryServiceRegistry::new(hub.clone())
        .lookup("/cluster/ws")
        .await
        .unwrap();
    assert_eq!(nodes.len(), 1);
    assert_eq!(
        (nodes[0].host.as_str(), nodes[0].port),
        ("127.0.0.1", ws.port())
    );

    let tcp = bound_client(addr, "tcp-dev", "android", "both", None).await;
    let mut tcp_rx = spawn_receiver(tcp, AckPolicy::All);
    let mut c = bound_web(ws, "ws-dev", "web", "both").await;

    let push = server.push_to_local_user(
        "both",
        None,
        &b"to-all"[..],
        AckModel::AutoAck,
        Duration::from_secs(5),
    );
    let client = async {
        let p = recv(&mut c).await.unwrap();
        send(&mut c, json!({"cmd":23,"sessionId":p["sessionId"]})).await;
    };
    let (out, ()) = tokio::join!(push, client);
    let mut out = out;
    out.sort_by_key(|(t, _)| *t);
    assert_eq!(
        out,
        vec![
            (ClientType::MOBILE, PushOutcome::AckSuccess),
            (ClientType::WEB, PushOutcome::AckSuccess)
        ]
    );
    let got = recv_within(&mut tcp_rx).await;
    assert_eq!(&got.content[..], b"to-all");

    // A second web client of the same user displaces the first: JSON KICK (§3.15).
    let _c2 = bound_web(ws, "ws-dev-2", "h5", "both").await;
    let kick = recv(&mut c).await.unwrap();
    assert_eq!(kick["cmd"], 13);
    assert_eq!(kick["body"], json!({"deviceId":"ws-dev","userId":"both"}));
    server.shutdown().await;
}

#[tokio::test]
async fn bad_input_closes_only_the_offending_client() {
    let hub = MemoryHub::new();
    let (server, _, ws) = start_ws(&hub).await;
    let mut good = bound_web(ws, "good", "web", "good-user").await;

    // Unknown command and HEARTBEAT (cmd 1): ERROR 101, then close.
    for cmd in [1, 99] {
        let mut c = connect(ws).await;
        send(&mut c, json!({"cmd":cmd,"sessionId":5})).await;
        let e = recv(&mut c).await.unwrap();
        assert_eq!(e["cmd"], 10);
        assert_eq!(e["sessionId"], 5);
        assert_eq!(e["body"]["code"], 101);
        assert_eq!(e["body"]["cmd"], cmd);
        assert!(closed(&mut c).await, "cmd {cmd}");
    }

    // A binary frame: closed.
    let mut c = connect(ws).await;
    c.send(WsMessage::binary(vec![1u8, 2, 3])).await.unwrap();
    assert!(closed(&mut c).await);

    // Malformed JSON: ERROR 100, then close.
    let mut c = connect(ws).await;
    c.send(WsMessage::text("{not json")).await.unwrap();
    let e = recv(&mut c).await.unwrap();
    assert_eq!(
        (e["cmd"].clone(), e["body"]["code"].clone()),
        (json!(10), json!(100))
    );
    assert!(closed(&mut c).await);

    // Bind before handshake: ERROR "not handshake", then close.
    let mut c = connect(ws).await;
    let e = bind(&mut c, "x").await;
    assert_eq!(e["body"]["reason"], "not handshake");
    assert!(closed(&mut c).await);

    // The well-behaved client still gets its pushes.
    let out = push_local(&server, "good-user", &b"still"[..], Duration::from_secs(3)).await;
    assert_eq!(out, vec![(ClientType::WEB, PushOutcome::Success)]);
    assert_eq!(recv(&mut good).await.unwrap()["body"]["content"], "still");

    // Another path is not upgraded.
    assert!(ws_upgrade_refused(&format!("ws://{ws}/nope")).await);
    server.shutdown().await;
}

#[tokio::test]
async fn disabled_by_default() {
    let hub = MemoryHub::new();
    let (server, _) = start_server(&hub, test_config()).await;
    assert!(server.ws_addr().is_none());
    let nodes = MemoryServiceRegistry::new(hub.clone())
        .lookup("/cluster/ws")
        .await
        .unwrap();
    assert!(nodes.is_empty());
    server.shutdown().await;
}

/// Splits unmasked server frames (opcode, payload); payloads here are under 126 bytes.
fn server_frames(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let (op, len) = (bytes[0] & 0x0f, usize::from(bytes[1] & 0x7f));
        assert!(
            bytes[1] & 0x80 == 0 && len < 126,
            "unexpected frame header {:?}",
            &bytes[..2]
        );
        assert!(bytes.len() >= 2 + len, "truncated frame");
        frames.push((op, bytes[2..2 + len].to_vec()));
        bytes = &bytes[2 + len..];
    }
    assert!(bytes.is_empty(), "trailing bytes {bytes:?}");
    frames
}

/// A half-open browser socket (it stops answering pings, here: stops reading) is reaped by
/// the idle rule, its route goes offline, and pushes to the user report OFFLINE instead of
/// SUCCESS.
#[tokio::test]
async fn a_client_that_stops_answering_pings_is_reaped_and_goes_offline() {
    let (server, sender, ws) = short_heartbeat_server().await;
    let mut c = bound_web(ws, "silent-dev", "web", "silent").await;
    expect_push(
        &sender,
        "silent",
        AckModel::NoAck,
        3000,
        ResultCode::Success,
    )
    .await;
    assert_eq!(recv(&mut c).await.unwrap()["body"]["content"], "hello");

    // From here the client reads nothing: no pong goes back.
    wait_not_local(&server, "silent").await;
    expect_push(
        &sender,
        "silent",
        AckModel::NoAck,
        3000,
        ResultCode::Offline,
    )
    .await;
    assert!(
        push_local(&server, "silent", &b"x"[..], Duration::from_secs(1))
            .await
            .is_empty()
    );
    // What the client was sent meanwhile, read off the socket (tungstenite would try to
    // answer the pings first and fail on the closed socket): pings, then a close 1001.
    let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = c.get_mut() else {
        panic!("not a plain TCP stream");
    };
    let mut bytes = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut bytes))
        .await
        .expect("socket not closed in time")
        .unwrap();
    let frames = server_frames(&bytes);
    let (close, pings) = frames.split_last().expect("no frame at all");
    assert!(!pings.is_empty(), "no ping before the close");
    assert!(pings.iter().all(|(op, _)| *op == 0x9), "{frames:?}");
    assert_eq!(close.0, 0x8, "last frame is not a close: {frames:?}");
    assert_eq!(u16::from_be_bytes([close.1[0], close.1[1]]), 1001);
    assert!(String::from_utf8_lossy(&close.1[2..]).starts_with("heartbeat timeout"));
    server.shutdown().await;
}

/// A live client that reads (tungstenite answers each ping) and sends nothing itself stays
/// connected and bound over many heartbeats, well past the time a silent one is reaped.
#[tokio::test]
async fn a_live_client_answering_pings_survives_many_intervals() {
    let (server, sender, ws) = short_heartbeat_server().await;
    let mut c = bound_web(ws, "live-dev", "web", "live").await;

    // Ten pings: 3 s of silence from the client's side, where ~2 s reaps a dead one.
    let mut pings = 0;
    while pings < 10 {
        match tokio::time::timeout(WAIT, c.next())
            .await
            .expect("no ping in time")
        {
            Some(Ok(WsMessage::Ping(_))) => pings += 1,
            other => panic!("expected a ping, got {other:?}"),
        }
    }
    assert_eq!(server.local_sessions("live").len(), 1);
    let (codes, got) = tokio::join!(push(&sender, "live", AckModel::NoAck, 3000), recv(&mut c));
    assert_eq!(codes, [ResultCode::Success]);
    assert_eq!(got.unwrap()["body"]["content"], "hello");
    server.shutdown().await;
}

/// A client that upgrades but never sends HANDSHAKE is closed (1008) after
/// `mp.net.ws-handshake-timeout`, even though it answers pings; one that never completes
/// the HTTP upgrade is closed after the same time.
#[tokio::test]
async fn clients_that_never_handshake_or_upgrade_are_closed_after_the_deadline() {
    let hub = MemoryHub::new();
    let deadline = Duration::from_millis(300);
    let (server, _, ws) = start_ws_with(&hub, |c| c.net.ws_handshake_timeout = deadline).await;

    let started = tokio::time::Instant::now();
    let mut c = connect(ws).await;
    let (frame, _) = close_frame(&mut c).await;
    let frame = frame.expect("close without a code");
    assert_eq!(frame.code, CloseCode::Policy);
    assert_eq!(frame.reason.as_str(), "no handshake in time");
    assert!(started.elapsed() >= deadline);

    // Half a request head, then nothing: the server hangs up (EOF, no response).
    let started = tokio::time::Instant::now();
    let mut raw = TcpStream::connect(ws).await.unwrap();
    raw.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, raw.read(&mut buf))
        .await
        .expect("not closed in time")
        .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "unexpected answer {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    assert!(started.elapsed() >= deadline);

    // A client that handshakes in time is not affected.
    let mut c = connect(ws).await;
    assert_eq!(handshake(&mut c, "in-time", "web").await["cmd"], 2);
    assert_eq!(bind(&mut c, "in-time").await["cmd"], 11);
    server.shutdown().await;
}

/// Frames and messages above `mp.net.ws-max-frame-size` close the connection with 1009;
/// one within the limit is served.
#[tokio::test]
async fn an_oversized_frame_closes_with_code_1009() {
    let hub = MemoryHub::new();
    let (server, _, ws) = start_ws_with(&hub, |c| c.net.ws_max_frame_size = 1024).await;
    let mut c = connect(ws).await;
    handshake(&mut c, "big-dev", "web").await;
    let content = "x".repeat(900);
    send(
        &mut c,
        json!({"cmd":15,"flags":24,"sessionId":8,"body":{"content":content}}),
    )
    .await;
    assert_eq!(
        recv(&mut c).await.unwrap(),
        json!({"cmd":23,"flags":16,"sessionId":8})
    );

    let content = "y".repeat(2000);
    send(
        &mut c,
        json!({"cmd":15,"flags":24,"sessionId":9,"body":{"content":content}}),
    )
    .await;
    let (frame, _) = close_frame(&mut c).await;
    let frame = frame.expect("close without a code");
    assert_eq!(frame.code, CloseCode::Size);
    assert!(frame.reason.contains("too large"), "{frame}");
    server.shutdown().await;
}

/// `GET /index.html` is the demo page (told the configured path); anything else that is not
/// an upgrade is 404.
#[tokio::test]
async fn the_demo_page_and_404s_over_plain_http() {
    let hub = MemoryHub::new();
    let (server, _, ws) = start_ws(&hub).await;
    let page =
        common::http::exchange(ws, "GET /index.html?user=u1 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    let (head, body) = page.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("Content-Type: text/html; charset=utf-8"));
    assert!(head.contains(&format!("Content-Length: {}", body.len())));
    assert!(
        body.contains(r#"|| "/ws";"#),
        "the page does not use ws-path"
    );
    assert!(!body.contains("<script src"), "external script");

    for request in [
        "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
        "POST /index.html HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    ] {
        let r = common::http::exchange(ws, request).await;
        assert!(
            r.starts_with("HTTP/1.1 404 Not Found\r\n"),
            "{request:?} -> {r}"
        );
    }
    let r = common::http::exchange(ws, "\x01\x02 nonsense\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{r}");

    // The listener still upgrades on the same port.
    let mut c = connect(ws).await;
    assert_eq!(handshake(&mut c, "after-http", "web").await["cmd"], 2);
    server.shutdown().await;
}
