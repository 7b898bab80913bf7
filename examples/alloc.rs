//! Standalone alloc service, MPush's separate `alloc` process (spec §14): config file →
//! `AllocServer` → serve until Ctrl-C or SIGTERM.
//!
//! `cargo run --example alloc -- --config examples/mpush.conf`
//! It reads the same `mp.*` keys as the launcher: the registry (`mp.zk`, `mp.spi`), the cache
//! holding the online sets (`mp.redis`) and `mp.net.alloc-server-port` (9999).
//! With no config it uses MPush's defaults on the embedded in-memory backend (which then only
//! sees servers in this process: useful to try the HTTP side alone).

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mpush::MPushConfig;
use mpush::alloc::AllocServer;

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
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,mpush=info".into()),
        )
        .init();
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => {
            MPushConfig::from_file(path).with_context(|| format!("loading {}", path.display()))?
        }
        None => {
            let mut c = MPushConfig::default();
            c.spi.cache_manager = "memory".into();
            c.spi.mq_client = "memory".into();
            c.spi.service_registry = "memory".into();
            c
        }
    };
    let mut builder = AllocServer::builder().config(config).bind_ip(args.bind);
    if let Some(p) = args.port {
        builder = builder.port(p);
    }
    let stop = stop_signal()?;
    let alloc = builder.start().await?;
    tracing::info!(addr = %alloc.local_addr(), "alloc listening (Ctrl-C or SIGTERM to stop)");
    let signal = stop.await?;
    tracing::info!(signal, "stopping");
    alloc.shutdown().await;
    Ok(())
}

/// Resolves with the name of the first stop signal: SIGINT (Ctrl-C) or SIGTERM.
#[cfg(unix)]
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<&'static str>>>
{
    use tokio::signal::unix::{SignalKind, signal};
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => Ok("SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        }
    })
}

/// Resolves on Ctrl-C (elsewhere than Unix).
#[cfg(not(unix))]
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = anyhow::Result<&'static str>>>
{
    Ok(async {
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok("Ctrl-C")
    })
}
