//! The platform's floor for a heartbeat: what a bare tokio echo server (accept, read, write
//! the byte back; no protocol, no checks, no state) costs per one-byte echo, measured like
//! `bench`'s heartbeat phase (issue 12).
//!
//! The server runs as its own process, the clients in `--procs` processes from
//! 127.0.0.2, .3, ...; each connection sends one byte every `--heartbeat` seconds, spread
//! evenly over the interval (or all within `--burst-ms`, like `bench --bunched-heartbeats`),
//! and waits for the echo. Server CPU is utime+stime from `/proc/<pid>/stat` over
//! the window; the echo count is what the clients received inside it. On loopback the
//! server's CPU includes the kernel's receive path of the client's socket (the server's
//! write runs it), as in `bench`.
//!
//! ```text
//! cargo build --release --example echo_floor
//! ulimit -n 20000
//! target/release/examples/echo_floor --conns 19900 --heartbeat 10 --secs 60
//! target/release/examples/echo_floor --conns 19900 --heartbeat 10 --secs 60 --burst-ms 500
//! ```

#[path = "support/procfs.rs"]
mod procfs;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use procfs::{Proc, now_us};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket};

#[derive(Parser, Debug, Clone)]
#[command(about = "bare tokio echo: the floor of a heartbeat's server CPU")]
struct Args {
    /// "orchestrator" (default), "server" or "clients" (both internal).
    #[arg(long, default_value = "orchestrator")]
    role: String,
    /// Connections in all.
    #[arg(long, default_value_t = 10_000)]
    conns: usize,
    /// Client processes, each from its own 127.0.0.x.
    #[arg(long, default_value_t = 4)]
    procs: usize,
    /// Seconds between two bytes of one connection.
    #[arg(long, default_value_t = 10)]
    heartbeat: u64,
    /// Server runtime: 0 = tokio's multi-thread runtime with its default workers (as
    /// `bench`'s server), 1 = the current-thread runtime.
    #[arg(long, default_value_t = 0)]
    server_threads: usize,
    /// Length of the measured window, in seconds.
    #[arg(long, default_value_t = 60)]
    secs: u64,
    /// Put the connections' beats within this many ms of each other, in step (`bench
    /// --bunched-heartbeats`: its clients bind within about 500 ms); 0 = spread evenly over
    /// the whole interval.
    #[arg(long, default_value_t = 0)]
    burst_ms: u64,
    // Internal (clients role):
    #[arg(long, default_value = "")]
    addr: String,
    #[arg(long, default_value_t = 0)]
    count: usize,
    #[arg(long, default_value = "127.0.0.2")]
    source: String,
    /// Start of the measured window, µs since the epoch.
    #[arg(long, default_value_t = 0)]
    window_start_us: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rt = if args.role == "server" && args.server_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
    };
    match args.role.as_str() {
        "server" => rt.block_on(server()),
        "clients" => rt.block_on(clients(args)),
        "orchestrator" => orchestrate(&args),
        other => bail!("unknown role {other:?}"),
    }
}

async fn server() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?);
    loop {
        let (mut stream, _) = listener.accept().await?;
        stream.set_nodelay(true)?;
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        if stream.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
    }
}

async fn clients(args: Args) -> anyhow::Result<()> {
    let addr: SocketAddr = args.addr.parse()?;
    let source: SocketAddr = format!("{}:0", args.source).parse()?;
    let mut streams = Vec::with_capacity(args.count);
    for _ in 0..args.count {
        let socket = TcpSocket::new_v4()?;
        socket.bind(source)?;
        let stream = socket.connect(addr).await.context("connect")?;
        stream.set_nodelay(true)?;
        streams.push(stream);
    }
    println!("ready");
    let start = args.window_start_us;
    let end = start + args.secs * 1_000_000;
    let period = Duration::from_secs(args.heartbeat.max(1));
    let echoes = Arc::new(AtomicU64::new(0));
    let n = streams.len().max(1) as u32;
    let mut tasks = Vec::new();
    for (i, mut stream) in streams.into_iter().enumerate() {
        let echoes = echoes.clone();
        let span = if args.burst_ms > 0 {
            Duration::from_millis(args.burst_ms).min(period)
        } else {
            period
        };
        let offset = span * i as u32 / n;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
            let mut b = [0u8; 1];
            loop {
                tick.tick().await;
                if stream.write_all(&[0xdf]).await.is_err()
                    || stream.read_exact(&mut b).await.is_err()
                {
                    return;
                }
                let t = now_us();
                if t >= end {
                    return;
                }
                if t >= start {
                    echoes.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await?;
    }
    println!("{}", echoes.load(Ordering::Relaxed));
    Ok(())
}

/// The child processes; killed if the run fails half-way, so none is left behind.
struct Children(Vec<std::process::Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn orchestrate(args: &Args) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut children = Children(Vec::new());
    let server = Command::new(&exe)
        .args(["--role", "server"])
        .args(["--server-threads", &args.server_threads.to_string()])
        .stdout(Stdio::piped())
        .spawn()?;
    children.0.push(server);
    let server = &mut children.0[0];
    let server_pid = server.id();
    let mut out = BufReader::new(server.stdout.take().context("server stdout")?);
    let mut addr = String::new();
    out.read_line(&mut addr)?;
    let addr = addr.trim().to_string();
    // The window opens once every client is connected; the clients learn its start up front
    // and count only the echoes inside it.
    let procs = args.procs.max(1);
    let connect_allowance = Duration::from_secs(5 + args.conns as u64 / 1_000);
    let start = now_us() + connect_allowance.as_micros() as u64;
    for p in 0..procs {
        let count = args.conns / procs + usize::from(p < args.conns % procs);
        let child = Command::new(&exe)
            .args(["--role", "clients", "--addr", &addr])
            .args(["--count", &count.to_string()])
            .args(["--source", &format!("127.0.0.{}", p + 2)])
            .args(["--heartbeat", &args.heartbeat.to_string()])
            .args(["--secs", &args.secs.to_string()])
            .args(["--window-start-us", &start.to_string()])
            .args(["--burst-ms", &args.burst_ms.to_string()])
            .stdout(Stdio::piped())
            .spawn()?;
        children.0.push(child);
    }
    let mut readers = Vec::new();
    for c in &mut children.0[1..] {
        let mut r = BufReader::new(c.stdout.take().context("client stdout")?);
        let mut line = String::new();
        r.read_line(&mut line)?;
        if line.trim() != "ready" {
            bail!("a client process did not connect: {line:?}");
        }
        readers.push(r);
    }
    let wait = start.saturating_sub(now_us());
    if wait == 0 {
        bail!("connecting took longer than the allowance; the window began without everyone");
    }
    std::thread::sleep(Duration::from_micros(wait));
    let server = Proc::new(server_pid);
    let switches = || -> anyhow::Result<u64> { Ok(server.switches()?.values().sum()) };
    let (cpu0, cs0) = (server.cpu()?.as_secs_f64(), switches()?);
    std::thread::sleep(Duration::from_secs(args.secs));
    let (cpu1, cs1) = (server.cpu()?.as_secs_f64(), switches()?);
    // Every connection is still open at the window's end (clients leave at their next beat).
    let rss = server.rss_kib()?;
    let mut echoes = 0u64;
    for mut r in readers {
        let mut line = String::new();
        r.read_line(&mut line)?;
        echoes += line.trim().parse::<u64>().context("echo count")?;
    }
    let cpu = cpu1 - cpu0;
    println!(
        "bare echo ({}), {} conns, {} s heartbeat {}, {} s window: {echoes} echoes, server CPU \
         {:.3} s = {:.1} µs per echo ({:.2} % of one core), {:.2} context switches per echo; server RSS {rss} KiB",
        if args.server_threads == 1 {
            "tokio current-thread runtime"
        } else {
            "tokio multi-thread runtime"
        },
        args.conns,
        args.heartbeat,
        if args.burst_ms > 0 {
            format!("in step within {} ms", args.burst_ms)
        } else {
            "spread".to_string()
        },
        args.secs,
        cpu,
        cpu * 1e6 / echoes.max(1) as f64,
        cpu * 100.0 / args.secs as f64,
        cs1.saturating_sub(cs0) as f64 / echoes.max(1) as f64
    );
    Ok(())
}
