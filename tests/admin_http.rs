//! The HTTP admin API end to end: every endpoint, the bearer token (and its refusal without
//! one configured), bad input.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;

use common::http::{request, sample};
use common::{WAIT, bound_client, start_with, test_config};
use mpush::protocol::Command;
use mpush::{MPushConfig, MPushServer, RunningServer};
use mpush_spi_memory::MemoryHub;

const TOKEN: &str = "s3cret-admin-token";

/// A server on a hub of its own with the admin API on a free port and `token`.
async fn server_with(token: &str) -> (RunningServer, SocketAddr, SocketAddr) {
    let hub = &MemoryHub::new();
    let mut cfg: MPushConfig = test_config();
    cfg.net.admin_http_token = token.into();
    let (server, addr) =
        start_with(hub, MPushServer::builder().config(cfg).admin_http_port(0)).await;
    let admin = server.admin_http_addr().expect("admin API enabled");
    (server, addr, admin)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn disabled_by_port_zero_in_config() {
    let hub = MemoryHub::new();
    let (server, _) = start_with(&hub, MPushServer::builder().config(test_config())).await;
    assert_eq!(server.admin_http_addr(), None);
    server.shutdown().await;
}

#[tokio::test]
async fn health_ready_stats_and_metrics() {
    let (server, addr, admin) = server_with(TOKEN).await;
    let (status, body) = request(admin, "GET", "/health", &[], b"").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (status, body) = request(admin, "GET", "/ready", &[], b"").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["ready"], true);

    let _c = bound_client(addr, "dev-s", "android", "stats-user", None).await;
    let (status, body) = request(admin, "GET", "/stats", &[], b"").await;
    assert_eq!(status, 200, "{body}");
    let stats = json(&body);
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["localUsers"], 1);
    assert_eq!(stats["onlineUsers"], 1);
    assert_eq!(stats["draining"], false);
    assert_eq!(stats["gateway"]["inFlight"], 0);

    let (status, body) = request(admin, "GET", "/metrics", &[], b"").await;
    assert_eq!(status, 200);
    assert!(
        sample(&body, "mpush_binds_total", &[("outcome", "ok")]) >= 1.0,
        "{body}"
    );
    assert!(body.contains("# TYPE mpush_connections gauge"), "{body}");
    let (status, _) = request(admin, "GET", "/nope", &[], b"").await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn routes_of_known_and_unknown_users() {
    let (server, addr, admin) = server_with(TOKEN).await;
    let _c = bound_client(addr, "dev-r", "android", "route-user", None).await;
    let (status, body) = request(admin, "GET", "/users/route-user/routes", &[], b"").await;
    assert_eq!(status, 200, "{body}");
    let v = json(&body);
    assert_eq!(v["userId"], "route-user");
    let routes = v["routes"].as_object().unwrap();
    assert_eq!(routes.len(), 1, "{body}");
    let (status, body) = request(admin, "GET", "/users/nobody/routes", &[], b"").await;
    assert_eq!(status, 404, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("unknown user")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn mutating_calls_need_the_token() {
    let (server, _, admin) = server_with(TOKEN).await;
    let push = br#"{"userId":"u","hello":"x"}"#;
    let (status, _) = request(admin, "POST", "/push", &[], push).await;
    assert_eq!(status, 401);
    let wrong = [("Authorization", "Bearer not-the-token")];
    let (status, _) = request(admin, "POST", "/push", &wrong, push).await;
    assert_eq!(status, 403);
    let (status, _) = request(admin, "POST", "/users/u/kick", &wrong, b"").await;
    assert_eq!(status, 403);
    server.shutdown().await;

    // Without a configured token, even a request with a bearer is refused.
    let (server, _, admin) = server_with("").await;
    let any = [("Authorization", "Bearer ")];
    let (status, body) = request(admin, "POST", "/push", &any, push).await;
    assert_eq!(status, 403);
    assert!(body.contains("mp.net.admin-http-token"), "{body}");
    let (status, _) = request(admin, "POST", "/users/u/kick", &any, b"").await;
    assert_eq!(status, 403);
    server.shutdown().await;
}

#[tokio::test]
async fn push_kick_and_bad_input() {
    let (server, addr, admin) = server_with(TOKEN).await;
    let auth = [("Authorization", "Bearer s3cret-admin-token")];
    let mut c = bound_client(addr, "dev-p", "android", "push-user", None).await;

    let (status, body) = request(
        admin,
        "POST",
        "/push",
        &auth,
        br#"{"userId":"push-user","hello":"from admin"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["results"][0]["outcome"], "success");
    let p = tokio::time::timeout(WAIT, async {
        loop {
            let p = c.recv_packet().await.unwrap();
            if p.cmd == Command::Push {
                return p;
            }
        }
    })
    .await
    .unwrap();
    let content: serde_json::Value = serde_json::from_slice(&c.open(&p)).unwrap();
    assert_eq!(content["msgType"], 3);
    assert!(content["content"].as_str().unwrap().contains("from admin"));

    let (status, body) = request(admin, "POST", "/push", &auth, br#"{"broadcast":true}"#).await;
    assert_eq!(status, 202, "{body}");

    // Bad input: clear 4xx answers.
    let (status, body) = request(admin, "POST", "/push", &auth, b"{not json").await;
    assert_eq!(status, 400);
    assert!(body.contains("invalid JSON"), "{body}");
    let (status, body) = request(admin, "POST", "/push", &auth, br#"{"hello":"x"}"#).await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = request(admin, "POST", "/push", &auth, br#"{"userId":"ghost"}"#).await;
    assert_eq!(status, 404);
    let big = vec![b' '; mpush::server::ADMIN_HTTP_MAX_BODY + 1];
    let (status, _) = request(admin, "POST", "/push", &auth, &big).await;
    assert_eq!(status, 413);
    let (status, _) = request(admin, "POST", "/users/ghost/kick", &auth, b"").await;
    assert_eq!(status, 404);

    let (status, body) = request(admin, "POST", "/users/push-user/kick", &auth, b"").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["kicked"], 1);
    let kicked = tokio::time::timeout(WAIT, async {
        loop {
            match c.recv_packet().await {
                Some(p) if p.cmd == Command::Kick => return true,
                Some(_) => continue,
                None => return false,
            }
        }
    })
    .await
    .unwrap();
    assert!(kicked, "the device got KICK");
    server.shutdown().await;
}

/// `POST /drain` starts the graceful drain (the host's stop request fires too): `/ready`
/// turns 503 at once, a second call is a conflict, the client listener closes, and once the
/// last connection has left the drain stops the server.
#[tokio::test]
async fn drain_through_the_api() {
    let hub = MemoryHub::new();
    let mut cfg: MPushConfig = test_config();
    cfg.net.admin_http_token = TOKEN.into();
    // Long enough that the checks below run inside the window; the window ends early once
    // the one client has gone.
    cfg.core.drain_window = std::time::Duration::from_secs(60);
    let (server, addr) =
        start_with(&hub, MPushServer::builder().config(cfg).admin_http_port(0)).await;
    let admin = server.admin_http_addr().expect("admin API enabled");
    let auth = [("Authorization", "Bearer s3cret-admin-token")];
    let client = bound_client(addr, "dev-d", "android", "drain-user", None).await;

    let (status, _) = request(admin, "POST", "/drain", &[], b"").await;
    assert_eq!(status, 401);
    assert!(!server.is_draining());
    let (status, body) = request(admin, "POST", "/drain", &auth, b"").await;
    assert_eq!(status, 202, "{body}");
    let v = json(&body);
    assert_eq!(
        (v["draining"].clone(), v["windowMs"].clone()),
        (true.into(), 60_000.into())
    );
    assert!(server.is_draining());
    let (status, body) = request(admin, "POST", "/drain", &auth, b"").await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = request(admin, "GET", "/ready", &[], b"").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("draining"), "{body}");
    tokio::time::timeout(WAIT, server.shutdown_requested())
        .await
        .expect("the host is asked to stop");
    // The client listener closes at the start of the drain.
    common::poll_until(std::time::Duration::from_millis(20), || async move {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(_) => Err("the client port still accepts".to_string()),
            Err(_) => Ok(()),
        }
    })
    .await;

    // The last client leaves: the window ends and the drain stops the server, which closes
    // the admin listener as well.
    drop(client);
    common::poll_until(std::time::Duration::from_millis(20), || async move {
        match tokio::net::TcpStream::connect(admin).await {
            Ok(_) => Err("the admin port still accepts".to_string()),
            Err(_) => Ok(()),
        }
    })
    .await;
    server.shutdown().await;
}
