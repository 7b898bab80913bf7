//! Load generator and server CPU-per-operation measurements for mpush-rs.
//!
//! `cargo run --release --example bench -- --backend redis --redis 127.0.0.1:6379 --clients 19900`
//!
//! Three roles of one binary, each its own process, so the server's CPU is the server's alone:
//! - `server` (spawned by the orchestrator): one `MPushServer` on the memory backend or on
//!   Redis; prints `LISTEN <connect addr> <gateway addr>` and runs until its stdin closes.
//! - `clients` (spawned `--procs` times): connects its share of clients with the Rust client
//!   SDK from its own 127.0.0.x source address (the per-process open-file limit), handshakes,
//!   binds on request, counts pushes and their latency, acknowledges BIZ_ACK pushes.
//! - `orchestrator` (default): drives the phases and reads the server's utime+stime from
//!   `/proc/<pid>/stat` and its RSS from `/proc/<pid>/status` around each phase. Pushes go
//!   through the real gateway path: `PushSender` (this process) → gateway → connection →
//!   client. The sender finds users' routes in the shared cache, so the push phases need
//!   `--backend redis`; with the memory backend (one process by construction) the run stops
//!   after the connection, memory and heartbeat phases.
//!
//! Phases: handshake, bind, RSS per bound idle connection, idle heartbeat cost over
//! `--idle-secs`, then unicast NO_ACK / AUTO_ACK / BIZ_ACK and broadcast, then AUTO_ACK paced
//! at `--paced-rate` pushes/s for `--paced-secs` (latency at a load the server is not
//! saturated by: the other phases' latency is mostly the sender's queue). CPU per operation is
//! reported raw and net of the idle (heartbeat) CPU rate measured in the idle phase, since the
//! clients keep heartbeating during every phase. `--perf-dir` runs `perf` on the server
//! during the idle, NO_ACK and broadcast phases (`--perf-opts`: `record -g -F 499` by
//! default, or e.g. `stat -e instructions:u` to count where the machine has hardware
//! counters). The result table is printed as markdown.
//!
//! Memory: `--server-wrapper CMD` runs the server role under a command prefix (split at
//! whitespace), e.g. `scripts/heaptrack-server.sh /tmp/h` for a heap profile or
//! `env GLIBC_TUNABLES=glibc.malloc.arena_max=1` to try an allocator setting; the server
//! reports its own pid, so the figures are the server's, not the wrapper's.
//! `--stop-after-bind` ends the run right after the bound-idle RSS: the server exits at once
//! without freeing anything, so a heap profiler's "leaked" figure is the live heap of N bound
//! idle connections. `--stop-after-idle` does the same after the idle phase (with parking:
//! the live heap of N parked connections).
//!
//! Client processes talk to the orchestrator over stdin/stdout: `READY <ms>` once connected;
//! `BIND` → `BOUND <ms>`; `SPREAD <interval_ms> <clients>` → `SPREAD` (each client's
//! heartbeat moved to its share of the interval); `COUNT` → `COUNT <received>`; `REPORT` → `STATS <received> <p50_us>
//! <p99_us> <max_us>` (and reset).

#[path = "support/procfs.rs"]
mod procfs;

/// jemalloc with `--features jemalloc`, as the launcher (the server role's RSS then shows it).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// The server role's allocator, for the report.
const ALLOCATOR: &str = if cfg!(feature = "jemalloc") {
    "jemalloc"
} else {
    "system malloc"
};

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::{BufMut, Bytes, BytesMut};
use clap::Parser;
use futures::StreamExt;
use mpush::AckModel;
use mpush::client::{Client, ClientConfig, Event, ReconnectPolicy};
use mpush::protocol::crypto::{RsaCipher, RsaKeys};
use mpush::sender::{PushContext, PushSender, ResultCode};
use mpush::spi::{CacheManager, MQClient, ServiceNode, services};
use mpush::{MPushConfig, MPushServer};
use mpush_spi_memory::testing::FixedDiscovery;
use mpush_spi_memory::{MemoryCache, MemoryHub, MemoryMQ, MemoryServiceRegistry};
use mpush_spi_redis::{RedisCache, RedisMQ, RedisSettings};
use procfs::{Proc, now_us};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[derive(Parser, Debug, Clone)]
#[command(about = "mpush-rs load generator")]
struct Args {
    /// Role: "orchestrator" (default), "server" or "clients" (both internal).
    #[arg(long, default_value = "orchestrator")]
    role: String,
    /// Server backend: "memory" or "redis".
    #[arg(long, default_value = "memory")]
    backend: String,
    /// Redis host:port for `--backend redis`.
    #[arg(long, default_value = "")]
    redis: String,
    /// Total clients.
    #[arg(long, default_value_t = 10_000)]
    clients: usize,
    /// Client processes (each from its own 127.0.0.x).
    #[arg(long, default_value_t = 4)]
    procs: usize,
    /// Pushes per client in each unicast phase.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Broadcasts in the broadcast phase.
    #[arg(long, default_value_t = 5)]
    broadcasts: usize,
    /// In-flight requests in the PushSender phases.
    #[arg(long, default_value_t = 4096)]
    inflight: usize,
    /// Pushes per second of the paced AUTO_ACK phase (tokio's timer ticks per millisecond,
    /// so faster rates go out in small bursts each millisecond).
    #[arg(long, default_value_t = 2000)]
    paced_rate: u64,
    /// Length of the paced phase in seconds; 0 = skip it.
    #[arg(long, default_value_t = 5)]
    paced_secs: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    payload: usize,
    /// Heartbeat the clients ask for and the server grants, in seconds.
    #[arg(long, default_value_t = 10)]
    heartbeat: u64,
    /// Length of the idle (heartbeat-only) phase, in seconds.
    #[arg(long, default_value_t = 60)]
    idle_secs: u64,
    /// Directory for `perf` output on the server (idle, NO_ACK and broadcast phases);
    /// empty = off.
    #[arg(long, default_value = "")]
    perf_dir: String,
    /// The `perf` command for `--perf-dir` (split at whitespace; `-o FILE -p PID` are
    /// added): e.g. `record --call-graph dwarf -F 999` to attribute samples in libc, which
    /// has no frame pointers, or `stat -e instructions:u,instructions:k` to count, which
    /// the machine's load does not change as it does CPU time (where the machine has
    /// hardware counters: the 2-core VM of docs/PERFORMANCE.md has none).
    #[arg(long, default_value = "record -g -F 499")]
    perf_opts: String,
    /// Serve the admin HTTP endpoint on the measured server, which installs the Prometheus
    /// recorder (so every metric on the push path is really recorded), and scrape `/metrics`
    /// once at the end. Off: no recorder, the facade's calls are no-ops.
    #[arg(long)]
    metrics: bool,
    /// Command prefix to run the server role under (split at whitespace), e.g.
    /// `scripts/heaptrack-server.sh /tmp/h`; empty = none.
    #[arg(long, default_value = "")]
    server_wrapper: String,
    /// Leave the clients' heartbeats in step. They all bind within about half a second, so
    /// without a correction they beat together, in one burst per interval, which the server
    /// takes with few wakeups (the figures of runs before 2026-12-02, evening). By default
    /// each client is moved to its own offset within the interval, as the heartbeats of a
    /// real population are.
    #[arg(long)]
    bunched_heartbeats: bool,
    /// Stop after the bound-idle RSS: the server exits at once, without freeing (so a heap
    /// profiler reports the live heap of the bound idle connections as "leaked").
    #[arg(long)]
    stop_after_bind: bool,
    /// Stop after the idle (heartbeat) phase the same way: with parking, the live heap of
    /// N parked connections.
    #[arg(long)]
    stop_after_idle: bool,
    /// Microseconds a server worker thread waits before it parks when it runs out of work,
    /// so that readiness events gather and are taken in one wakeup; 0 = park at once.
    #[arg(long, default_value_t = 0)]
    park_delay_us: u64,
    /// `mp.net.connect-server-park-idle` of the server in ms: idle connections leave
    /// tokio's reactor for the server's parker after this long; 0 = no parking. Unset, the
    /// server's default (60 s).
    #[arg(long)]
    park_idle_ms: Option<u64>,
    /// `mp.net.connect-server-park-poll` of the server in ms (unset: the default, 10 ms).
    #[arg(long)]
    park_poll_ms: Option<u64>,
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

fn payload(size: usize) -> Bytes {
    let mut b = BytesMut::with_capacity(size.max(8));
    b.put_u64(now_us());
    b.resize(size.max(8), b'x');
    b.freeze()
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
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if args.role == "server" && args.park_delay_us > 0 {
        let delay = Duration::from_micros(args.park_delay_us);
        rt.on_thread_park(move || std::thread::sleep(delay));
    }
    let rt = rt.build()?;
    match args.role.as_str() {
        "clients" => rt.block_on(clients(args)),
        "server" => rt.block_on(server(args)),
        "orchestrator" => rt.block_on(orchestrate(args)),
        other => bail!("unknown role {other:?}"),
    }
}

fn bench_config(args: &Args) -> MPushConfig {
    // Loopback, and no admin HTTP endpoint (so no metrics recorder) on the measured server.
    let mut cfg = mpush_spi_memory::testing::loopback_config();
    // Measure the server, not the default limits: MPush caps single pushes at 5000/s.
    cfg.push.global_flow_control.limit = 10_000_000;
    cfg.push.broadcast_flow_control.limit = 10_000_000;
    cfg.push.broadcast_flow_control.max = 0;
    let hb = Duration::from_secs(args.heartbeat.max(1));
    cfg.core.min_heartbeat = hb;
    cfg.core.max_heartbeat = hb;
    if args.backend == "redis" {
        cfg.redis.cluster_model = "single".into();
        cfg.redis.nodes = vec![args.redis.clone()];
    }
    if let Some(ms) = args.park_idle_ms {
        cfg.net.connect_server_park_idle = Duration::from_millis(ms);
    }
    if let Some(ms) = args.park_poll_ms {
        cfg.net.connect_server_park_poll = Duration::from_millis(ms);
    }
    cfg
}

/// The sender's Redis client. Its timeouts are the load generator's, not the server's: at
/// the start of the NO_ACK phase its route cache is cold, and the first 4,096 in-flight
/// pushes each read a route while the server, Redis and the clients share the two cores.
/// With the backend's default 2 s response timeout about 1 run in 5 on a busy machine
/// failed a few hundred of those reads and waited out the delivery deadline for them,
/// which measured the starved generator instead of the server (docs/PERFORMANCE.md).
async fn load_generator_cache(args: &Args) -> anyhow::Result<RedisCache> {
    let mut settings = RedisSettings::from_config(&bench_config(args).redis)?;
    settings.options.response_timeout = Duration::from_secs(10);
    settings.options.operation_timeout = Duration::from_secs(20);
    Ok(RedisCache::connect_with(&settings).await?)
}

/// Server process: one server until stdin closes.
async fn server(args: Args) -> anyhow::Result<()> {
    let cfg = bench_config(&args);
    let hub = MemoryHub::new();
    let registry = Arc::new(MemoryServiceRegistry::new(hub.clone()));
    let (cache, mq): (Arc<dyn CacheManager>, Arc<dyn MQClient>) = match args.backend.as_str() {
        "memory" => (
            Arc::new(MemoryCache::new(hub.clone())),
            Arc::new(MemoryMQ::new(hub.clone())),
        ),
        "redis" => (
            Arc::new(RedisCache::connect(&cfg.redis).await?),
            Arc::new(RedisMQ::connect(&cfg.redis).await?),
        ),
        other => bail!("unknown backend {other:?}"),
    };
    let mut builder = MPushServer::builder()
        .config(cfg)
        .cache_manager(cache)
        .mq_client(mq)
        .service_registry(registry.clone(), registry);
    if args.metrics {
        // Port 0 on the builder: any free port (0 in the config would disable it).
        builder = builder.admin_http_port(0);
    }
    let server = builder.start().await?;
    let admin = server
        .admin_http_addr()
        .map_or_else(|| "-".to_string(), |a| a.to_string());
    let mut out = tokio::io::stdout();
    out.write_all(
        format!(
            "LISTEN {} {} {admin} {}\n",
            server.connect_addr(),
            server.gateway_addr(),
            std::process::id()
        )
        .as_bytes(),
    )
    .await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim() == "EXIT" {
            // `--stop-after-bind`: leave with every connection's memory still allocated.
            out.flush().await?;
            std::process::exit(0);
        }
    }
    server.shutdown().await;
    Ok(())
}

/// Client process: connect (handshake), bind on request, count pushes and their latency.
async fn clients(args: Args) -> anyhow::Result<()> {
    let received = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(Mutex::new(Vec::<u64>::with_capacity(1 << 20)));
    let rsa = Arc::new(RsaCipher::new(Arc::new(RsaKeys::public_only(
        mpush::config::DEFAULT_PUBLIC_KEY,
    )?)));
    let source: std::net::IpAddr = args.source.parse()?;
    let heartbeat = Duration::from_secs(args.heartbeat.max(1));
    let start = Instant::now();
    let connects = futures::stream::iter(args.first..args.first + args.count)
        .map(|i| {
            let (received, latencies, rsa) = (received.clone(), latencies.clone(), rsa.clone());
            // The callback acknowledges BIZ_ACK pushes, so it needs the client it belongs to.
            let me: Arc<OnceLock<Client>> = Arc::new(OnceLock::new());
            let me2 = me.clone();
            let mut cfg = ClientConfig::new(args.addr.clone(), format!("bench-dev-{i}"))
                .with_local_ip(source)
                .with_heartbeat(heartbeat)
                .with_reconnect(ReconnectPolicy::disabled())
                .on_event(move |e| {
                    if let Event::Push {
                        content,
                        message_id,
                        needs_ack,
                        ..
                    } = e
                    {
                        if content.len() >= 8 {
                            let sent =
                                u64::from_be_bytes(content[..8].try_into().unwrap_or_default());
                            let lat = now_us().saturating_sub(sent);
                            if let Ok(mut l) = latencies.lock() {
                                l.push(lat);
                            }
                        }
                        if needs_ack {
                            if let (Some(c), Ok(rt)) =
                                (me2.get(), tokio::runtime::Handle::try_current())
                            {
                                let c = c.clone();
                                rt.spawn(async move { c.ack(message_id).await });
                            }
                        }
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                });
            cfg.rsa = Some(rsa);
            cfg.request_timeout = Duration::from_secs(30);
            async move {
                let (client, events) = Client::connect(cfg).await?;
                let _ = me.set(client.clone());
                Ok::<_, mpush::client::ClientError>((client, events))
            }
        })
        .buffer_unordered(64);
    let mut held = Vec::with_capacity(args.count);
    let mut connects = std::pin::pin!(connects);
    while let Some(r) = connects.next().await {
        held.push(r.context("client connect")?);
    }
    let mut out = tokio::io::stdout();
    out.write_all(format!("READY {}\n", start.elapsed().as_millis()).as_bytes())
        .await?;
    out.flush().await?;
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Some(line) = lines.next_line().await? {
        let reply = match line.trim() {
            "BIND" => {
                let start = Instant::now();
                let binds = futures::stream::iter(held.iter().enumerate())
                    .map(|(k, (c, _))| {
                        let user = format!("user-{}", args.first + k);
                        async move { c.bind(&user, Some("bench"), None).await }
                    })
                    .buffer_unordered(64);
                let results: Vec<_> = binds.collect().await;
                if let Some(Err(e)) = results.into_iter().find(Result::is_err) {
                    bail!("bind failed: {e}");
                }
                format!("BOUND {}\n", start.elapsed().as_millis())
            }
            spread if spread.starts_with("SPREAD ") => {
                // `SPREAD <interval_ms> <total clients>`: client `first + k` heartbeats once
                // at its share of the interval, so its later ones keep that offset.
                let mut it = spread.split_whitespace().skip(1);
                let (Some(Ok(interval)), Some(Ok(total))) = (
                    it.next().map(str::parse::<u64>),
                    it.next().map(str::parse::<u64>),
                ) else {
                    bail!("bad request {spread:?}");
                };
                let beats = held.iter().enumerate().map(|(k, (c, _))| {
                    let at = interval * (args.first + k) as u64 / total.max(1);
                    async move {
                        tokio::time::sleep(Duration::from_millis(at)).await;
                        c.heartbeat().await
                    }
                });
                if let Some(Err(e)) = futures::future::join_all(beats)
                    .await
                    .into_iter()
                    .find(Result::is_err)
                {
                    bail!("heartbeat failed: {e}");
                }
                "SPREAD\n".to_string()
            }
            "COUNT" => format!("COUNT {}\n", received.load(Ordering::Relaxed)),
            "REPORT" => {
                let mut l = std::mem::take(
                    &mut *latencies.lock().map_err(|_| anyhow::anyhow!("poisoned"))?,
                );
                let n = received.swap(0, Ordering::Relaxed);
                let (p50, p99, max) = percentiles(&mut l);
                format!("STATS {n} {p50} {p99} {max}\n")
            }
            other => bail!("unknown request {other:?}"),
        };
        out.write_all(reply.as_bytes()).await?;
        out.flush().await?;
    }
    Ok(())
}

struct Child {
    proc: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Child {
    fn spawn(args: &[String]) -> anyhow::Result<Self> {
        Self::spawn_wrapped("", args)
    }

    /// Spawns this binary with `args`, under the command prefix `wrapper` if not empty.
    fn spawn_wrapped(wrapper: &str, args: &[String]) -> anyhow::Result<Self> {
        let exe = std::env::current_exe()?;
        let mut prefix = wrapper.split_whitespace();
        let mut cmd = match prefix.next() {
            Some(program) => {
                let mut c = tokio::process::Command::new(program);
                c.args(prefix).arg(&exe);
                c
            }
            None => tokio::process::Command::new(&exe),
        };
        let mut proc = cmd
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = proc.stdin.take().context("stdin")?;
        let lines = BufReader::new(proc.stdout.take().context("stdout")?).lines();
        Ok(Self { proc, stdin, lines })
    }

    async fn line(&mut self) -> anyhow::Result<String> {
        match tokio::time::timeout(Duration::from_secs(600), self.lines.next_line()).await {
            Ok(Ok(Some(l))) => Ok(l),
            _ => bail!("child process ended or timed out"),
        }
    }

    async fn ask(&mut self, req: &str) -> anyhow::Result<Vec<u64>> {
        self.stdin.write_all(format!("{req}\n").as_bytes()).await?;
        self.stdin.flush().await?;
        let l = self.line().await?;
        Ok(l.split_whitespace()
            .skip(1)
            .filter_map(|x| x.parse().ok())
            .collect())
    }
}

/// Asks every client process for its stats; returns (received, p50, p99, max) merged
/// (percentiles: the worst process's, a conservative merge).
async fn report(children: &mut [Child]) -> anyhow::Result<(u64, u64, u64, u64)> {
    let mut total = (0, 0, 0, 0);
    for c in children.iter_mut() {
        let f = c.ask("REPORT").await?;
        if let [n, p50, p99, max] = f[..] {
            total.0 += n;
            total.1 = total.1.max(p50);
            total.2 = total.2.max(p99);
            total.3 = total.3.max(max);
        }
    }
    Ok(total)
}

/// Polls the client processes until `want` pushes arrived in total or `deadline` passed.
async fn wait_received(
    children: &mut [Child],
    want: u64,
    deadline: Duration,
) -> anyhow::Result<u64> {
    let end = Instant::now() + deadline;
    loop {
        let mut got = 0;
        for c in children.iter_mut() {
            got += c.ask("COUNT").await?.first().copied().unwrap_or(0);
        }
        if got >= want || Instant::now() >= end {
            return Ok(got);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The bytes received so far by the established TCP sockets on local port `port` (the
/// server's client connections), from `ss`'s `bytes_received`.
fn received_bytes(port: u16) -> anyhow::Result<u64> {
    let out = std::process::Command::new("ss")
        .args([
            "-tnHi",
            "state",
            "established",
            "sport",
            "=",
            &format!(":{port}"),
        ])
        .output()
        .context("ss")?;
    if !out.status.success() {
        bail!("ss failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("bytes_received:")?.parse::<u64>().ok())
        .sum())
}

/// One phase's window on the server: wall time and server CPU.
struct Window {
    t0: Instant,
    cpu0: Duration,
    switches0: HashMap<u64, u64>,
}

impl Window {
    fn open(p: &Proc) -> anyhow::Result<Self> {
        Ok(Self {
            t0: Instant::now(),
            cpu0: p.cpu()?,
            switches0: p.switches()?,
        })
    }

    /// Wall time, server CPU and server context switches since `open`.
    fn close(&self, p: &Proc) -> anyhow::Result<(Duration, Duration, u64)> {
        Ok((
            self.t0.elapsed(),
            p.cpu()?.saturating_sub(self.cpu0),
            // Per thread, since threads come and go (the blocking pool's idle threads end
            // after 10 s, taking their counts along): a thread that ended within the window
            // is not counted, one that started is counted from zero.
            p.switches()?
                .into_iter()
                .map(|(tid, n)| n.saturating_sub(self.switches0.get(&tid).copied().unwrap_or(0)))
                .sum(),
        ))
    }
}

/// A row of the result table.
struct Row {
    op: String,
    ops: u64,
    wall: Duration,
    cpu: Duration,
    /// Server context switches over the phase.
    switches: u64,
    /// Idle CPU per second to subtract (the heartbeats that go on meanwhile).
    idle_per_s: f64,
    latency: String,
}

impl Row {
    /// A phase with nothing to subtract and no latency: `measured` is [`Window::close`]'s.
    fn plain(op: String, ops: u64, measured: (Duration, Duration, u64)) -> Self {
        let (wall, cpu, switches) = measured;
        Row {
            op,
            ops,
            wall,
            cpu,
            switches,
            idle_per_s: 0.0,
            latency: "-".to_string(),
        }
    }

    fn print(&self) {
        let ops = self.ops.max(1) as f64;
        let raw = self.cpu.as_secs_f64() * 1e6 / ops;
        let net = (self.cpu.as_secs_f64() - self.idle_per_s * self.wall.as_secs_f64()).max(0.0)
            * 1e6
            / ops;
        println!(
            "| {} | {} | {:.2} | {:.0} | {:.1} | {:.1} | {:.2} | {} |",
            self.op,
            self.ops,
            self.wall.as_secs_f64(),
            ops / self.wall.as_secs_f64().max(1e-9),
            raw,
            net,
            self.switches as f64 / ops,
            self.latency
        );
    }
}

/// `GET /metrics` from the server's admin HTTP endpoint (one HTTP/1.1 exchange, the
/// connection closed by the server after the answer); returns the body.
async fn scrape_metrics(admin: &str) -> anyhow::Result<String> {
    use tokio::io::AsyncReadExt;
    let mut s = tokio::net::TcpStream::connect(admin)
        .await
        .with_context(|| format!("connect to admin HTTP {admin}"))?;
    s.write_all(
        format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(30), s.read_to_end(&mut raw))
        .await
        .context("/metrics timed out")??;
    let text = String::from_utf8(raw).context("/metrics is not UTF-8")?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .context("no HTTP header end in the /metrics answer")?;
    if !head.starts_with("HTTP/1.1 200") {
        bail!("/metrics answered {}", head.lines().next().unwrap_or(""));
    }
    Ok(body.to_string())
}

/// The result table (markdown) of the phases run, with how its CPU figures were taken.
fn print_table(server_pid: u32, rows: &[Row]) {
    println!();
    println!(
        "Server CPU from /proc/{server_pid}/stat (utime+stime, all threads); net = raw minus the idle \
         phase's CPU rate × phase wall time."
    );
    println!();
    println!(
        "| operation | ops | wall s | ops/s | server CPU µs/op (raw) | µs/op (net of idle) | server context switches/op | latency / notes |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        r.print();
    }
    println!();
}

/// Tells the server role to exit without freeing anything (`--stop-after-bind`,
/// `--stop-after-idle`), then ends the client processes.
async fn exit_at_once(mut srv: Child, children: Vec<Child>) -> anyhow::Result<()> {
    srv.stdin.write_all(b"EXIT\n").await?;
    srv.stdin.flush().await?;
    let _ = tokio::time::timeout(Duration::from_secs(60), srv.proc.wait()).await;
    for mut c in children {
        drop(c.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), c.proc.wait()).await;
    }
    Ok(())
}

/// perf recording of the server over one phase.
struct Perf(Option<std::process::Child>);

impl Perf {
    fn start(args: &Args, pid: u32, name: &str) -> anyhow::Result<Self> {
        if args.perf_dir.is_empty() {
            return Ok(Self(None));
        }
        std::fs::create_dir_all(&args.perf_dir)?;
        let out = format!("{}/{name}.data", args.perf_dir);
        let child = std::process::Command::new("perf")
            .args(args.perf_opts.split_whitespace())
            .args(["-o", &out, "-p", &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("perf record")?;
        Ok(Self(Some(child)))
    }

    fn stop(self) -> anyhow::Result<()> {
        if let Some(mut child) = self.0 {
            // perf writes its data file on SIGINT.
            std::process::Command::new("kill")
                .args(["-INT", &child.id().to_string()])
                .status()?;
            child.wait()?;
        }
        Ok(())
    }
}

/// AUTO_ACK pushes issued at `--paced-rate` per second (not as fast as the sender takes
/// them), to users in turn; at most `--inflight` outstanding.
async fn paced_phase(
    args: &Args,
    server: &Proc,
    children: &mut [Child],
    sender: &PushSender,
    users: &Arc<Vec<String>>,
    idle_per_s: f64,
) -> anyhow::Result<Row> {
    let total = args.paced_rate * args.paced_secs;
    let w = Window::open(server)?;
    let ok = Arc::new(Outcomes::default());
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / args.paced_rate as f64));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut running = tokio::task::JoinSet::new();
    for i in 0..total {
        tick.tick().await;
        while running.len() >= args.inflight {
            running.join_next().await;
        }
        let (sender, users, ok) = (sender.clone(), users.clone(), ok.clone());
        let size = args.payload;
        running.spawn(async move {
            let user = users[(i as usize) % users.len()].clone();
            let r = sender
                .send(PushContext::to_user(user, payload(size)).ack(AckModel::AutoAck))
                .await;
            ok.record(&r);
        });
    }
    while running.join_next().await.is_some() {}
    let got = wait_received(children, total, Duration::from_secs(30)).await?;
    let (wall, cpu, switches) = w.close(server)?;
    let (_, p50, p99, max) = report(children).await?;
    Ok(Row {
        op: format!("unicast AutoAck paced at {}/s", args.paced_rate),
        ops: total,
        wall,
        cpu,
        switches,
        idle_per_s,
        latency: delivery(got, total, &ok, (p50, p99, max)),
    })
}

/// The latency column of a unicast phase: deliveries, SUCCESS results, percentiles (µs).
fn delivery(got: u64, total: u64, ok: &Outcomes, (p50, p99, max): (u64, u64, u64)) -> String {
    let success = ok.success.load(Ordering::Relaxed);
    let failed = ok.failed.lock().map(|f| f.clone()).unwrap_or_default();
    let mut failed: String = failed
        .iter()
        .map(|(code, n)| format!(", {n} {code}"))
        .collect();
    let users = ok.failed_users.lock().map(|u| u.len()).unwrap_or_default();
    if users > 0 {
        failed.push_str(&format!(" ({users} users)"));
    }
    format!(
        "delivered {got}/{total}, {success} SUCCESS{failed}; p50 {p50} µs p99 {p99} µs max {max} µs"
    )
}

/// The results of a phase's pushes: how many succeeded, and the others by result code (a
/// push whose results were not all SUCCESS counts once, under its first other code).
#[derive(Default)]
struct Outcomes {
    success: AtomicU64,
    failed: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
    failed_users: std::sync::Mutex<std::collections::HashSet<String>>,
}

impl Outcomes {
    fn record(&self, results: &[mpush::sender::PushResult]) {
        match results.iter().find(|r| r.code != ResultCode::Success) {
            None => {
                self.success.fetch_add(1, Ordering::Relaxed);
            }
            Some(r) => {
                if let Ok(mut f) = self.failed.lock() {
                    let why = r
                        .error
                        .as_deref()
                        .map(|e| format!(" [{e}]"))
                        .unwrap_or_default();
                    *f.entry(format!("{:?}{why}", r.code)).or_default() += 1;
                }
                if let (Ok(mut u), Some(user)) = (self.failed_users.lock(), &r.user_id) {
                    u.insert(user.clone());
                }
            }
        }
    }
}

async fn orchestrate(args: Args) -> anyhow::Result<()> {
    let n = args.clients;
    let cfg = bench_config(&args);
    let a = |s: &str| s.to_string();
    let mut server_args = vec![
        a("--role"),
        a("server"),
        a("--backend"),
        args.backend.clone(),
        a("--redis"),
        args.redis.clone(),
        a("--heartbeat"),
        args.heartbeat.to_string(),
        a("--park-delay-us"),
        args.park_delay_us.to_string(),
    ];
    for (flag, value) in [
        ("--park-idle-ms", args.park_idle_ms),
        ("--park-poll-ms", args.park_poll_ms),
    ] {
        if let Some(v) = value {
            server_args.extend([a(flag), v.to_string()]);
        }
    }
    if args.metrics {
        server_args.push(a("--metrics"));
    }
    let mut srv = Child::spawn_wrapped(&args.server_wrapper, &server_args)?;
    // A wrapper may print lines of its own first (heaptrack does).
    let listen = loop {
        let l = srv.line().await?;
        if l.starts_with("LISTEN ") {
            break l;
        }
    };
    let mut parts = listen.split_whitespace().skip(1);
    let (Some(addr), Some(gateway), Some(admin), Some(pid)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        bail!("unexpected from server process: {listen}");
    };
    let gateway: SocketAddr = gateway.parse()?;
    // The server's own pid: under `--server-wrapper` the spawned process is the wrapper.
    let server = Proc::new(pid.parse().context("server pid")?);
    let rss0 = server.rss_kib()?;
    println!(
        "server pid {} on {addr} (gateway {gateway}, admin HTTP {admin}), backend {}, {ALLOCATOR}; baseline RSS {} KiB",
        server.pid, args.backend, rss0
    );
    let mut rows = Vec::new();

    // Handshake: every client connects and handshakes (RSA + AES), no bind yet.
    let per = n.div_ceil(args.procs.max(1));
    let w = Window::open(&server)?;
    let mut children = Vec::new();
    for p in 0..args.procs.max(1) {
        let first = p * per;
        let count = per.min(n.saturating_sub(first));
        if count == 0 {
            break;
        }
        children.push(Child::spawn(&[
            a("--role"),
            a("clients"),
            a("--addr"),
            a(addr),
            a("--first"),
            first.to_string(),
            a("--count"),
            count.to_string(),
            a("--source"),
            format!("127.0.0.{}", p + 2),
            a("--heartbeat"),
            args.heartbeat.to_string(),
        ])?);
    }
    for c in children.iter_mut() {
        let l = c.line().await?;
        if !l.starts_with("READY") {
            bail!("unexpected from client process: {l}");
        }
    }
    rows.push(Row::plain(
        a("handshake (connect + RSA + AES)"),
        n as u64,
        w.close(&server)?,
    ));

    // Bind.
    let w = Window::open(&server)?;
    for c in children.iter_mut() {
        c.ask("BIND").await?;
    }
    rows.push(Row::plain(a("bind"), n as u64, w.close(&server)?));
    let rss1 = server.rss_kib()?;
    if args.stop_after_bind {
        println!(
            "server RSS ({} backend): baseline {rss0} KiB, {n} bound idle: {rss1} KiB = {:.0} B per connection (stopping after bind)",
            args.backend,
            (rss1.saturating_sub(rss0) * 1024) as f64 / n.max(1) as f64,
        );
        return exit_at_once(srv, children).await;
    }

    if !args.bunched_heartbeats {
        // Spread the heartbeats over the client's interval (heartbeat − 1 s without a write,
        // as the Java client), then wait one more interval so every client is on its offset.
        let interval_ms = args.heartbeat.max(2) * 1000 - 1000;
        let req = format!("SPREAD {interval_ms} {n}\n");
        for c in children.iter_mut() {
            c.stdin.write_all(req.as_bytes()).await?;
            c.stdin.flush().await?;
        }
        for c in children.iter_mut() {
            let l = c.line().await?;
            if l.trim() != "SPREAD" {
                bail!("unexpected from a client process: {l}");
            }
        }
        tokio::time::sleep(Duration::from_millis(interval_ms + 1000)).await;
    }

    // Idle: only heartbeats. A client sends one after `heartbeat − 1 s` without writing (as
    // the Java client does), so they are counted, not derived from the heartbeat: every
    // byte the server's client sockets receive in this phase is one heartbeat.
    let port: u16 = addr.rsplit(':').next().unwrap_or("").parse()?;
    let received0 = received_bytes(port);
    let perf = Perf::start(&args, server.pid, &format!("idle-{}", args.backend))?;
    let w = Window::open(&server)?;
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let (wall, cpu, switches) = w.close(&server)?;
    perf.stop()?;
    let (beats, counted) = match (received0, received_bytes(port)) {
        (Ok(a), Ok(b)) => (
            b.saturating_sub(a),
            "counted: bytes the client sockets received",
        ),
        (a, b) => {
            let e = a
                .err()
                .or(b.err())
                .map(|e| e.to_string())
                .unwrap_or_default();
            eprintln!("cannot count heartbeats with ss ({e}); estimating");
            let write_idle = args.heartbeat.max(2) as f64 - 1.0;
            let est = (n as f64 * wall.as_secs_f64() / write_idle) as u64;
            (est, "estimated: conns × window / (heartbeat − 1 s)")
        }
    };
    let idle_per_s = cpu.as_secs_f64() / wall.as_secs_f64();
    rows.push(Row {
        op: format!(
            "heartbeat ({n} conns, {} s heartbeat, {}, {} s window; {counted})",
            args.heartbeat,
            if args.bunched_heartbeats {
                "in step"
            } else {
                "spread"
            },
            args.idle_secs
        ),
        ops: beats,
        wall,
        cpu,
        switches,
        idle_per_s: 0.0,
        latency: format!("idle CPU {:.2}% of one core", idle_per_s * 100.0),
    });
    let rss2 = server.rss_kib()?;
    if args.stop_after_idle {
        print_table(server.pid, &rows);
        println!(
            "server RSS ({} backend): baseline {rss0} KiB, after the idle phase {rss2} KiB = {:.0} B per connection (stopping after the idle phase)",
            args.backend,
            (rss2.saturating_sub(rss0) * 1024) as f64 / n.max(1) as f64,
        );
        return exit_at_once(srv, children).await;
    }

    if args.backend == "redis" {
        let sender = PushSender::builder()
            .config(cfg)
            .cache_manager(Arc::new(load_generator_cache(&args).await?))
            // The server registers on its own in-process registry: this process only needs
            // to know where the one gateway listens, which never changes during a run.
            .discovery(Arc::new(FixedDiscovery::new(vec![ServiceNode::new(
                services::GATEWAY_SERVER,
                gateway.ip().to_string(),
                gateway.port(),
            )])))
            .start()
            .await?;
        let users: Arc<Vec<String>> = Arc::new((0..n).map(|i| format!("user-{i}")).collect());
        let total = (n * args.rounds) as u64;
        for ack in [AckModel::NoAck, AckModel::AutoAck, AckModel::BizAck] {
            let perf = if ack == AckModel::NoAck {
                Perf::start(&args, server.pid, "no-ack")?
            } else {
                Perf(None)
            };
            let w = Window::open(&server)?;
            let ok = Arc::new(Outcomes::default());
            let reqs = futures::stream::iter((0..args.rounds).flat_map(|_| 0..n)).map(|i| {
                let (sender, users, ok) = (sender.clone(), users.clone(), ok.clone());
                let size = args.payload;
                async move {
                    let r = sender
                        .send(PushContext::to_user(users[i].clone(), payload(size)).ack(ack))
                        .await;
                    ok.record(&r);
                }
            });
            reqs.buffer_unordered(args.inflight)
                .collect::<Vec<()>>()
                .await;
            let got = wait_received(&mut children, total, Duration::from_secs(30)).await?;
            let (wall, cpu, switches) = w.close(&server)?;
            perf.stop()?;
            let (_, p50, p99, max) = report(&mut children).await?;
            rows.push(Row {
                op: format!("unicast {ack:?} via PushSender → gateway"),
                ops: total,
                wall,
                cpu,
                switches,
                idle_per_s,
                latency: delivery(got, total, &ok, (p50, p99, max)),
            });
        }

        let perf = Perf::start(&args, server.pid, "broadcast")?;
        let w = Window::open(&server)?;
        let mut codes = Vec::new();
        for _ in 0..args.broadcasts {
            let r = sender
                .send(
                    PushContext::broadcast(payload(args.payload))
                        .timeout(Duration::from_secs(60))
                        .build(),
                )
                .await;
            codes.extend(r.into_iter().map(|r| r.code));
        }
        let want = (n * args.broadcasts) as u64;
        let got = wait_received(&mut children, want, Duration::from_secs(60)).await?;
        let (wall, cpu, switches) = w.close(&server)?;
        perf.stop()?;
        let (_, p50, p99, max) = report(&mut children).await?;
        rows.push(Row {
            op: format!("broadcast delivery ({} broadcasts × {n})", args.broadcasts),
            ops: want,
            wall,
            cpu,
            switches,
            idle_per_s,
            latency: format!(
                "delivered {got}/{want}, {} SUCCESS; p50 {p50} µs p99 {p99} µs max {max} µs",
                codes.iter().filter(|c| **c == ResultCode::Success).count()
            ),
        });
        if args.paced_secs > 0 && args.paced_rate > 0 {
            rows.push(
                paced_phase(&args, &server, &mut children, &sender, &users, idle_per_s).await?,
            );
        }
        sender.stop().await;
    } else {
        println!(
            "(push phases skipped: the PushSender in this process needs the server's routes in a \
             shared cache; run with --backend redis)"
        );
    }

    print_table(server.pid, &rows);
    println!(
        "server RSS ({} backend): baseline {rss0} KiB, {n} bound idle: {rss1} KiB = {:.0} B per connection; after the idle phase {rss2} KiB = {:.0} B per connection",
        args.backend,
        (rss1.saturating_sub(rss0) * 1024) as f64 / n.max(1) as f64,
        (rss2.saturating_sub(rss0) * 1024) as f64 / n.max(1) as f64,
    );

    if args.metrics {
        let text = scrape_metrics(admin).await?;
        let pushes: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("mpush_pushes_total{")
                    || l.starts_with("mpush_broadcast_deliveries_total")
            })
            .collect();
        println!(
            "scraped /metrics from {admin}: {} bytes, {} lines; {}",
            text.len(),
            text.lines().count(),
            pushes.join("; ")
        );
    }

    for mut c in children {
        drop(c.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(10), c.proc.wait()).await;
    }
    drop(srv.stdin);
    let _ = tokio::time::timeout(Duration::from_secs(10), srv.proc.wait()).await;
    let _ = std::io::stdout().flush();
    Ok(())
}
