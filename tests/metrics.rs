//! `/metrics` after a known workload shows exact counts. The recorder is process-wide, so
//! this binary holds one workload test only and compares deltas of one scrape before and one
//! after it.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::http::{request, sample};
use common::{WAIT, bound_client, start_with, test_config};
use mpush::AckModel;
use mpush::MPushServer;
use mpush::protocol::Command;
use mpush::sender::ResultCode;
use mpush_spi_memory::MemoryHub;

const USERS: usize = 100;
const PUSHES_PER_USER: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_workload_scrapes_as_exact_counts() {
    let hub = MemoryHub::new();
    let cfg = test_config();
    let (server, addr) = start_with(
        &hub,
        MPushServer::builder()
            .config(cfg.clone())
            .admin_http_port(0),
    )
    .await;
    let admin = server.admin_http_addr().expect("admin API enabled");
    let scrape = || async move {
        let (status, body) = request(admin, "GET", "/metrics", &[], b"").await;
        assert_eq!(status, 200, "{body}");
        body
    };
    let before = scrape().await;

    let mut clients = Vec::new();
    for i in 0..USERS {
        clients
            .push(bound_client(addr, &format!("dev-{i}"), "android", &format!("u{i}"), None).await);
    }
    let sender = mpush_spi_memory::testing::sender_on(&hub, cfg)
        .await
        .unwrap();
    for i in 0..USERS {
        for _ in 0..PUSHES_PER_USER {
            let codes = common::push(&sender, &format!("u{i}"), AckModel::NoAck, 5000).await;
            assert_eq!(codes, vec![ResultCode::Success]);
        }
    }
    // Every push reached its client before the counts are read.
    for c in &mut clients {
        let mut got = 0;
        while got < PUSHES_PER_USER {
            let p = tokio::time::timeout(WAIT, c.recv_packet())
                .await
                .unwrap()
                .unwrap();
            if p.cmd == Command::Push {
                got += 1;
            }
        }
    }
    let after = scrape().await;
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sample(&after, name, labels) - sample(&before, name, labels)
    };
    assert_eq!(
        delta("mpush_handshakes_total", &[("outcome", "ok")]),
        USERS as f64
    );
    assert_eq!(
        delta("mpush_handshakes_total", &[("outcome", "error")]),
        0.0
    );
    assert_eq!(
        delta("mpush_binds_total", &[("outcome", "ok")]),
        USERS as f64
    );
    assert_eq!(
        delta(
            "mpush_pushes_total",
            &[("outcome", "success"), ("ack", "none")]
        ),
        (USERS * PUSHES_PER_USER) as f64
    );
    assert_eq!(delta("mpush_pushes_total", &[("outcome", "offline")]), 0.0);
    assert_eq!(
        delta("mpush_connections", &[("transport", "tcp")]),
        USERS as f64
    );
    // The binds wrote routes through the metered cache: at least one CAS per bind.
    assert!(
        delta(
            "mpush_backend_calls_total",
            &[
                ("spi", "cache"),
                ("op", "hcompare_and_set"),
                ("result", "ok")
            ]
        ) >= USERS as f64,
        "{after}"
    );

    // The clients go: the connection gauge comes back to where it was.
    drop(clients);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let now = scrape().await;
        let open = sample(&now, "mpush_connections", &[("transport", "tcp")])
            - sample(&before, "mpush_connections", &[("transport", "tcp")]);
        if open == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} connections still counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    sender.stop().await;
    server.shutdown().await;
}
