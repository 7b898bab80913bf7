//! End-to-end tests of the WebSocket listener (spec §1.9, §3.15) over loopback with a
//! tokio-tungstenite client: JSON handshake, bind, pushes with ACK, upstream AUTO_ACK
//! (quirk Q8 fixed), coexistence with TCP clients, and rejection of bad input.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use futures::{SinkExt, StreamExt};
use mpush::push::AckModel;
use mpush::spi::{PushOutcome, ServiceDiscovery};
use mpush_spi_memory::{MemoryHub, MemoryServiceRegistry};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A free loopback port: `ws-server-port` 0 means "disabled", so the test picks one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A server with the WebSocket listener on; returns it with (tcp, ws) addresses.
async fn start_ws(
    hub: &std::sync::Arc<MemoryHub>,
) -> (mpush::RunningServer, SocketAddr, SocketAddr) {
    let mut config = test_config();
    config.net.ws_server_port = free_port();
    config.net.ws_path = "/ws".into();
    let (server, addr) = start_server(hub, config).await;
    let ws = server.ws_addr().unwrap();
    (server, addr, ws)
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
    assert_eq!(server.local_sessions("wsu")[0].client_type, 3);

    // NO_ACK push.
    let out = server
        .push_to_local_user(
            "wsu",
            None,
            &b"hello"[..],
            AckModel::NoAck,
            Duration::from_secs(3),
        )
        .await;
    assert_eq!(out, vec![(3, PushOutcome::Success)]);
    let p = recv(&mut c).await.unwrap();
    assert_eq!(
        (p["cmd"].clone(), p["flags"].clone()),
        (json!(15), json!(16))
    );
    assert_eq!(p["body"]["content"], "hello");

    // AUTO_ACK push: the client ACKs with the push id.
    let push = server.push_to_local_user(
        "wsu",
        Some(3),
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
    assert_eq!(out, vec![(3, PushOutcome::AckSuccess)]);

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
    let mut c = connect(ws).await;
    handshake(&mut c, "ws-dev", "web").await;
    assert_eq!(bind(&mut c, "both").await["cmd"], 11);

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
        vec![(1, PushOutcome::AckSuccess), (3, PushOutcome::AckSuccess)]
    );
    let got = tokio::time::timeout(WAIT, tcp_rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got.content[..], b"to-all");

    // A second web client of the same user displaces the first: JSON KICK (§3.15).
    let mut c2 = connect(ws).await;
    handshake(&mut c2, "ws-dev-2", "h5").await;
    assert_eq!(bind(&mut c2, "both").await["cmd"], 11);
    let kick = recv(&mut c).await.unwrap();
    assert_eq!(kick["cmd"], 13);
    assert_eq!(kick["body"], json!({"deviceId":"ws-dev","userId":"both"}));
    server.shutdown().await;
}

#[tokio::test]
async fn bad_input_closes_only_the_offending_client() {
    let hub = MemoryHub::new();
    let (server, _, ws) = start_ws(&hub).await;
    let mut good = connect(ws).await;
    handshake(&mut good, "good", "web").await;
    bind(&mut good, "good-user").await;

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
    let out = server
        .push_to_local_user(
            "good-user",
            None,
            &b"still"[..],
            AckModel::NoAck,
            Duration::from_secs(3),
        )
        .await;
    assert_eq!(out, vec![(3, PushOutcome::Success)]);
    assert_eq!(recv(&mut good).await.unwrap()["body"]["content"], "still");

    // Another path is not upgraded.
    let other = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(format!("ws://{ws}/nope")),
    )
    .await
    .unwrap();
    assert!(other.is_err());
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
