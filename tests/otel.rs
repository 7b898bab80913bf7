//! The launcher's OpenTelemetry exporter (cargo feature `otel`): the push-path spans of one
//! push reach an OTLP/HTTP collector, here a small axum server standing in for one.
//!
//! Built only with the feature: `scripts/test-all.sh` builds the launcher with it and runs
//! `cargo test --features otel --test otel`.

#![cfg(feature = "otel")]
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::launcher::Launcher;
use common::routing::gateway_push_with;
use common::{WAIT, bound_client};
use mpush::AckModel;
use mpush::protocol::Command;
use mpush::sender::GatewayReply;

/// The OTLP/HTTP export requests the collector received (protobuf bodies).
type Received = Arc<Mutex<Vec<Bytes>>>;

async fn collector() -> (SocketAddr, Received) {
    let received = Received::default();
    let app = Router::new()
        .route(
            "/v1/traces",
            // An empty body is an empty ExportTraceServiceResponse: accepted, nothing rejected.
            post(|State(r): State<Received>, body: Bytes| async move {
                r.lock().unwrap().push(body);
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, received)
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_spans_reach_the_otlp_collector() {
    let (collector, received) = collector().await;
    let endpoint = format!("http://{collector}/v1/traces");
    let mut launcher = Launcher::start(
        "otel",
        // Short, so SIGTERM's drain does not wait for the bound client below.
        "mp.spi.service-registry = memory\nmp.core.drain-window = 100ms",
        &["--otel-endpoint", &endpoint],
    );
    let addr: SocketAddr = ([127, 0, 0, 1], launcher.port).into();
    let gateway: SocketAddr = ([127, 0, 0, 1], launcher.gateway).into();
    let mut client = bound_client(addr, "otel-dev", "android", "otel-user", None).await;
    let reply = gateway_push_with(gateway, "otel-user", "traced push", AckModel::NoAck).await;
    assert!(matches!(reply, GatewayReply::Ok(_)), "{reply:?}");
    let push = tokio::time::timeout(WAIT, client.recv_packet())
        .await
        .expect("push delivered")
        .expect("connection open");
    assert_eq!(push.cmd, Command::Push);

    // The batch exporter flushes at exit: SIGTERM drains, stops and shuts the provider down.
    launcher.signal("TERM");
    let status = tokio::task::spawn_blocking(move || launcher.wait_exit())
        .await
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let bodies = received.lock().unwrap().clone();
    assert!(!bodies.is_empty(), "the collector received no export");
    let all: Vec<u8> = bodies.iter().flat_map(|b| b.iter().copied()).collect();
    for span in [
        "mpush.gateway.push",
        "mpush.route.lookup",
        "mpush.connection.write",
    ] {
        assert!(contains(&all, span), "span {span} not exported");
    }
    // The resource names the service, and the push's user is a span attribute.
    assert!(contains(&all, "mpush"), "service name not exported");
    assert!(
        contains(&all, "otel-user"),
        "the push's user id is not on its span"
    );
}
