//! Load generator and measurements for mpush-rs.
//!
//! `cargo run --release --example bench -- --clients 10000`
//!
//! The orchestrator runs one server (memory backend) and a `PushSender` in its own process
//! and spawns `--procs` client processes (each connects its share of clients from its own
//! 127.0.0.x source address with the Rust client SDK). It reports:
//! - full handshakes + binds per second,
//! - server RSS per bound idle connection (RSS delta of the server process / N),
//! - local push throughput (`RunningServer::push_to_local_user`) and delivery latency,
//! - end-to-end unicast through PushSender → gateway → client, NO_ACK and AUTO_ACK,
//! - broadcast fan-out deliveries per second.
//!
//! Client processes talk to the orchestrator over stdin/stdout: `READY <ms>` once connected;
//! on `REPORT` they print `STATS <received> <p50_us> <p99_us> <max_us>` and reset.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use futures::StreamExt;
use mpush::AckModel;
use mpush::client::{Client, ClientConfig, Event, ReconnectPolicy};
use mpush::protocol::crypto::{RsaCipher, RsaKeys};
use mpush::sender::{PushContext, PushSender, ResultCode};
use mpush::spi::ClientType;
use mpush::{MPushConfig, MPushServer};
use mpush_spi_memory::{MemoryCache, MemoryHub, MemoryMQ, MemoryServiceRegistry};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Parser, Debug, Clone)]
#[command(about = "mpush-rs load generator")]
struct Args {
    /// Role: "orchestrator" (default) or "clients" (internal).
    #[arg(long, default_value = "orchestrator")]
    role: String,
    /// Total clients.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Client processes (each from its own 127.0.0.x).
    #[arg(long, default_value_t = 4)]
    procs: usize,
    /// Pushes per client in each throughput phase.
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// In-flight requests in the PushSender phases.
    #[arg(long, default_value_t = 4096)]
    inflight: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 64)]
    payload: usize,
    /// Serve the HTTP admin API (any free port), which installs the Prometheus recorder:
    /// compare a run with and without it to see what recording metrics costs.
    #[arg(long)]
    metrics: bool,
    // Internal (clients role):
    #[arg(long, default_value = "")]
    addr: String,
    #[arg(long, default_value_t = 0)]
    first: usize,
    #[arg(long, default_value_t = 0)]
    count: usize,
    #[arg(long, default_value = "127.0.0.2")]
    source: String,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

fn payload(size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(8));
    b.put_u64(now_us());
    b.resize(size.max(8), b'x');
    b.freeze()
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentiles(v: &mut [u64]) -> (u64, u64, u64) {
    if v.is_empty() {
        return (0, 0, 0);
    }
    v.sort_unstable();
    let p = |q: f64| v[((v.len() as f64 * q) as usize).min(v.len() - 1)];
    (p(0.5), p(0.99), v[v.len() - 1])
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match args.role.as_str() {
        "clients" => rt.block_on(clients(args)),
        _ => rt.block_on(orchestrate(args)),
    }
}

/// Client process: connect, bind, count pushes and their latency.
async fn clients(args: Args) -> anyhow::Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u64>::with_capacity(1 << 20)));
    let rsa = Arc::new(RsaCipher::new(Arc::new(RsaKeys::public_only(
        mpush::config::DEFAULT_PUBLIC_KEY,
    )?)));
    let source: std::net::IpAddr = args.source.parse()?;
    let start = Instant::now();
    let connects = futures::stream::iter(args.first..args.first + args.count)
        .map(|i| {
            let (received, latencies, rsa) = (received.clone(), latencies.clone(), rsa.clone());
            let mut cfg = ClientConfig::new(args.addr.clone(), format!("bench-dev-{i}"))
                .with_user(format!("user-{i}"), Some("bench"))
                .with_local_ip(source)
                .with_reconnect(ReconnectPolicy::disabled())
                .on_event(move |e| {
                    if let Event::Push { content, .. } = e {
                        received.fetch_add(1, Ordering::Relaxed);
                        if content.len() >= 8 {
                            let sent =
                                u64::from_be_bytes(content[..8].try_into().unwrap_or_default());
                            let lat = now_us().saturating_sub(sent);
                            if let Ok(mut l) = latencies.lock() {
                                l.push(lat);
                            }
                        }
                    }
                });
            cfg.rsa = Some(rsa);
            cfg.request_timeout = Duration::from_secs(30);
            Client::connect(cfg)
        })
        .buffer_unordered(64);
    let mut held = Vec::with_capacity(args.count);
    let mut connects = std::pin::pin!(connects);
    while let Some(r) = connects.next().await {
        let (client, events) = r.context("client connect")?;
        held.push((client, events));
    }
    let mut out = tokio::io::stdout();
    out.write_all(format!("READY {}\n", start.elapsed().as_millis()).as_bytes())
        .await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "REPORT" {
            let mut l =
                std::mem::take(&mut *latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
            let n = received.swap(0, Ordering::Relaxed);
            let (p50, p99, max) = percentiles(&mut l);
            out.write_all(format!("STATS {n} {p50} {p99} {max}\n").as_bytes())
                .await?;
            out.flush().await?;
        }
    }
    Ok(())
}

struct Child {
    proc: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    async fn line(&mut self) -> anyhow::Result<String> {
        match tokio::time::timeout(Duration::from_secs(600), self.lines.next_line()).await {
            Ok(Ok(Some(l))) => Ok(l),
            _ => bail!("client process ended or timed out"),
        }
    }
}

/// Asks every client process for its stats; returns (received, p50, p99, max) merged
/// (percentiles: the worst process's, a conservative merge).
async fn report(children: &mut [Child]) -> anyhow::Result<(u64, u64, u64, u64)> {
    let mut total = (0, 0, 0, 0);
    for c in children.iter_mut() {
        c.stdin.write_all(b"REPORT\n").await?;
        c.stdin.flush().await?;
        let l = c.line().await?;
        let f: Vec<u64> = l
            .split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() == 4 {
            total.0 += f[0];
            total.1 = total.1.max(f[1]);
            total.2 = total.2.max(f[2]);
            total.3 = total.3.max(f[3]);
        }
    }
    Ok(total)
}

async fn wait_received(
    children: &mut [Child],
    want: u64,
    settle: Duration,
) -> anyhow::Result<(u64, u64, u64, u64)> {
    // Deliveries finish shortly after the senders; give the clients a moment, then collect.
    let _ = want;
    tokio::time::sleep(settle).await;
    report(children).await
}

async fn orchestrate(args: Args) -> anyhow::Result<()> {
    let n = args.clients;
    let hub = MemoryHub::new();
    let mut cfg = MPushConfig::default();
    cfg.net.connect_server_bind_ip = "127.0.0.1".into();
    cfg.net.connect_server_port = 0;
    cfg.net.gateway_server_bind_ip = "127.0.0.1".into();
    cfg.net.gateway_server_port = 0;
    cfg.net.admin_server_port = 0;
    // Parallel benches must not compete for 3003; `--metrics` asks for any free port.
    cfg.net.admin_http_port = 0;
    cfg.net.local_ip = "127.0.0.1".into();
    cfg.net.public_ip = "127.0.0.1".into();
    // Measure the server, not the default limits: MPush caps single pushes at 5000/s.
    cfg.push.global_flow_control.limit = 10_000_000;
    cfg.push.broadcast_flow_control.limit = 10_000_000;
    cfg.push.broadcast_flow_control.max = 0;
    let registry = Arc::new(MemoryServiceRegistry::new(hub.clone()));
    let mut builder = MPushServer::builder().config(cfg.clone());
    if args.metrics {
        builder = builder.admin_http_port(0);
    }
    let server = builder
        .cache_manager(Arc::new(MemoryCache::new(hub.clone())))
        .mq_client(Arc::new(MemoryMQ::new(hub.clone())))
        .service_registry(registry.clone(), registry.clone())
        .start()
        .await?;
    let addr = server.connect_addr();
    let sender = PushSender::builder()
        .config(cfg)
        .cache_manager(Arc::new(MemoryCache::new(hub.clone())))
        .discovery(registry)
        .start()
        .await?;
    let rss0 = rss_kib();
    println!("server on {addr}; baseline RSS {} MiB", rss0 / 1024);

    // Phase 1: connect, handshake, bind.
    let exe = std::env::current_exe()?;
    let per = n.div_ceil(args.procs.max(1));
    let start = Instant::now();
    let mut children = Vec::new();
    for p in 0..args.procs.max(1) {
        let first = p * per;
        let count = per.min(n.saturating_sub(first));
        if count == 0 {
            break;
        }
        let mut proc = tokio::process::Command::new(&exe)
            .args(["--role", "clients", "--addr", &addr.to_string()])
            .args(["--first", &first.to_string(), "--count", &count.to_string()])
            .args(["--source", &format!("127.0.0.{}", p + 2)])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = proc.stdin.take().context("stdin")?;
        let lines = BufReader::new(proc.stdout.take().context("stdout")?).lines();
        children.push(Child { proc, stdin, lines });
    }
    for c in children.iter_mut() {
        let l = c.line().await?;
        if !l.starts_with("READY") {
            bail!("unexpected from client process: {l}");
        }
    }
    let took = start.elapsed();
    println!(
        "connect+handshake+bind: {n} clients in {:.2}s = {:.0}/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss1 = rss_kib();
    println!(
        "server RSS: {} MiB -> {} MiB = {:.0} bytes per bound idle connection (includes route tables)",
        rss0 / 1024,
        rss1 / 1024,
        (rss1.saturating_sub(rss0) * 1024) as f64 / n as f64
    );
    report(&mut children).await?;

    // Phase 2: local push throughput (no gateway).
    let users: Arc<Vec<String>> = Arc::new((0..n).map(|i| format!("user-{i}")).collect());
    let total = (n * args.rounds) as u64;
    let start = Instant::now();
    let server = Arc::new(server);
    let mut tasks = Vec::new();
    for w in 0..4usize {
        let (server, users, size) = (server.clone(), users.clone(), args.payload);
        let rounds = args.rounds;
        tasks.push(tokio::spawn(async move {
            for _ in 0..rounds {
                for u in users.iter().skip(w).step_by(4) {
                    let _ = server
                        .push_to_local_user(
                            u,
                            Some(ClientType::MOBILE),
                            payload(size),
                            AckModel::NoAck,
                            Duration::from_secs(5),
                        )
                        .await;
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    let sent_in = start.elapsed();
    let (got, p50, p99, max) = wait_received(&mut children, total, Duration::from_secs(2)).await?;
    println!(
        "local push NO_ACK: {total} pushes queued in {:.2}s = {:.0}/s; delivered {got}; latency p50 {p50}us p99 {p99}us max {max}us",
        sent_in.as_secs_f64(),
        total as f64 / sent_in.as_secs_f64()
    );

    // Phase 3: end-to-end unicast through the PushSender.
    for ack in [AckModel::NoAck, AckModel::AutoAck] {
        let start = Instant::now();
        let lat = Arc::new(Mutex::new(Vec::with_capacity(n * args.rounds)));
        let ok = Arc::new(AtomicU64::new(0));
        let reqs = futures::stream::iter((0..args.rounds).flat_map(|_| 0..n)).map(|i| {
            let (sender, users, lat, ok) = (sender.clone(), users.clone(), lat.clone(), ok.clone());
            let size = args.payload;
            async move {
                let t = Instant::now();
                let r = sender
                    .send(PushContext::to_user(users[i].clone(), payload(size)).ack(ack))
                    .await;
                if r.iter().all(|r| r.code == ResultCode::Success) {
                    ok.fetch_add(1, Ordering::Relaxed);
                }
                if let Ok(mut l) = lat.lock() {
                    l.push(t.elapsed().as_micros() as u64);
                }
            }
        });
        reqs.buffer_unordered(args.inflight)
            .collect::<Vec<()>>()
            .await;
        let took = start.elapsed();
        let mut l = std::mem::take(&mut *lat.lock().map_err(|_| anyhow::anyhow!("poisoned"))?);
        let (p50, p99, max) = percentiles(&mut l);
        let (got, ..) = wait_received(&mut children, total, Duration::from_secs(1)).await?;
        println!(
            "PushSender {ack:?}: {total} in {:.2}s = {:.0} results/s ({} SUCCESS); sender latency p50 {p50}us p99 {p99}us max {max}us; delivered {got}",
            took.as_secs_f64(),
            total as f64 / took.as_secs_f64(),
            ok.load(Ordering::Relaxed)
        );
    }

    // Phase 4: broadcast fan-out.
    for _ in 0..3 {
        let start = Instant::now();
        let r = sender
            .send(PushContext::broadcast(payload(args.payload)).timeout(Duration::from_secs(60)))
            .await;
        let took = start.elapsed();
        let (got, p50, p99, max) =
            wait_received(&mut children, n as u64, Duration::from_millis(500)).await?;
        println!(
            "broadcast to {n}: completed in {:.3}s = {:.0} deliveries/s (result {:?}); received {got}; latency p50 {p50}us p99 {p99}us max {max}us",
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            r.first().map(|r| r.code)
        );
    }

    for mut c in children {
        drop(c.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), c.proc.wait()).await;
    }
    sender.stop().await;
    // The push tasks that shared the server have all been awaited.
    match Arc::try_unwrap(server) {
        Ok(server) => server.shutdown().await,
        Err(_) => bail!("the server is still shared at the end of the run"),
    }
    let _ = std::io::stdout().flush();
    Ok(())
}
