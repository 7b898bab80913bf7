//! `examples/embedded` end to end, in-process: the same app setup, a login over HTTP, a Rust
//! client binding with the token, `POST /notify` reaching it; a wrong token is refused.

#![allow(clippy::unwrap_used)]

mod common;

#[path = "../examples/embedded/app.rs"]
#[allow(dead_code)]
mod app;

use std::net::SocketAddr;

use mpush::client::{Client, ClientConfig, Event};
use mpush_spi_memory::testing::{WAIT, test_config};
use serde_json::{Value, json};

/// One HTTP/1.1 POST with a JSON body (the connection is closed after the answer).
async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let req = format!(
        "POST {path} HTTP/1.1\r\nhost: app\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let text = common::http::exchange(addr, &req).await;
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).unwrap())
}

fn client_config(app: &app::App, device: &str, user: &str, token: &str) -> ClientConfig {
    let mut c =
        ClientConfig::new(app.server.connect_addr().to_string(), device).with_user(user, None);
    c.bind_data = Some(token.to_string());
    c
}

#[tokio::test]
async fn login_bind_with_token_and_notify_reaches_the_client() {
    let app = app::App::start(test_config(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let (status, login) = post(app.http_addr, "/login", &json!({"user": "alice"})).await;
    assert_eq!(status, 200, "{login}");
    let token = login["token"].as_str().unwrap().to_string();

    // Someone else's token, or none, does not bind as alice.
    let (_, other) = post(app.http_addr, "/login", &json!({"user": "mallory"})).await;
    let wrong = other["token"].as_str().unwrap();
    let refused = Client::connect(client_config(&app, "d-wrong", "alice", wrong)).await;
    assert!(
        refused.is_err(),
        "a bind with another user's token was accepted"
    );
    assert!(app.server.local_sessions("alice").is_empty());

    let (_client, mut events) = Client::connect(client_config(&app, "d-alice", "alice", &token))
        .await
        .unwrap();
    let (status, sent) = post(
        app.http_addr,
        "/notify",
        &json!({"user": "alice", "content": "hello alice"}),
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    assert_eq!(sent["results"], json!(["Success"]));
    let content = tokio::time::timeout(WAIT, async {
        while let Some(e) = events.recv().await {
            if let Event::Push { content, .. } = e {
                return Some(content);
            }
        }
        None
    })
    .await
    .expect("the push arrived in time")
    .expect("the client's events ended before the push");
    assert_eq!(&content[..], b"hello alice");

    let (status, _) = post(app.http_addr, "/notify", &json!({"user": "alice"})).await;
    assert_eq!(status, 400, "a notify without content is a bad request");
    app.shutdown().await.unwrap();
}
