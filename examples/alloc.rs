//! Standalone alloc service, MPush's separate `alloc` process (spec §14): config file →
//! `AllocServer` → serve until Ctrl-C or SIGTERM.
//!
//! `cargo run --example alloc -- --config examples/mpush.conf`
//! It reads the same `mp.*` keys as the launcher: the registry (`mp.zk`, `mp.spi`), the cache
//! holding the online sets (`mp.redis`) and `mp.net.alloc-server-port` (9999).
//! With no config it uses MPush's defaults on the embedded in-memory backend (which then only
//! sees servers in this process: useful to try the HTTP side alone).

use std::path::PathBuf;

use clap::Parser;
use mpush::alloc::AllocServer;

mod support;

// Link the backends so their inventory registrations exist (see spi::registry).
use mpush_spi_memory as _;
use mpush_spi_redis as _;
use mpush_spi_zk as _;

#[derive(Parser, Debug)]
#[command(about = "Run the mpush-rs alloc service (client load balancer)")]
struct Args {
    /// HOCON/JSON config file with MPush `mp.*` keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override mp.net.alloc-server-port.
    #[arg(long)]
    port: Option<u16>,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    support::init_tracing();
    let args = Args::parse();
    let config = support::load_config(args.config.as_deref())?;
    let mut builder = AllocServer::builder().config(config).bind_ip(args.bind);
    if let Some(p) = args.port {
        builder = builder.port(p);
    }
    let mut signals = support::Signals::install()?;
    let alloc = builder.start().await?;
    tracing::info!(addr = %alloc.local_addr(), "alloc listening (Ctrl-C or SIGTERM to stop)");
    let signal = signals.next().await?;
    tracing::info!(signal, "stopping");
    alloc.shutdown().await;
    Ok(())
}
