//! Standalone mpush-rs server: config file → builder → serve until Ctrl-C, SIGTERM or the
//! admin console's `shutdown`.
//!
//! `cargo run --release --example launcher [-- --config examples/mpush.conf]`
//! With no config it uses MPush's defaults on the embedded in-memory backend.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use mpush::{MPushConfig, MPushServer};

// Link the backends so their inventory registrations exist (see spi::registry).
use mpush_spi_memory as _;
use mpush_spi_redis as _;
use mpush_spi_zk as _;

#[derive(Parser, Debug)]
#[command(about = "Run a standalone mpush-rs server")]
struct Args {
    /// HOCON/JSON config file with MPush `mp.*` keys.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override mp.net.connect-server-port.
    #[arg(long)]
    port: Option<u16>,
    /// Override mp.net.gateway-server-port.
    #[arg(long)]
    gateway_port: Option<u16>,
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
    let mut config = match &args.config {
        Some(path) => {
            MPushConfig::from_file(path).with_context(|| format!("loading {}", path.display()))?
        }
        None => {
            let mut c = MPushConfig::default();
            // Standalone default: the embedded backends, whatever else is linked.
            c.spi.cache_manager = "memory".into();
            c.spi.mq_client = "memory".into();
            c.spi.service_registry = "memory".into();
            c
        }
    };
    if let Some(p) = args.port {
        config.net.connect_server_port = p;
    }
    if let Some(p) = args.gateway_port {
        config.net.gateway_server_port = p;
    }
    let builder = MPushServer::builder().config(config);
    // Installed before the listeners open: whoever sees the ports open (a supervisor, the
    // lifecycle test) may signal at once, and must not hit the default action (exit 143).
    let stop = stop_signal()?;
    let server = builder.start().await?;
    let connect = server.connect_addr();
    let gateway = server.gateway_addr();
    let admin = server.admin_addr();
    tracing::info!(
        %connect,
        %gateway,
        ?admin,
        "listening (Ctrl-C or SIGTERM to stop)"
    );
    // The console's `shutdown` takes the same path as a signal.
    let signal = tokio::select! {
        s = stop => s?,
        _ = server.shutdown_requested() => "admin console shutdown",
    };
    tracing::info!(signal, "stopping");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves with the name of the first stop signal: SIGINT (Ctrl-C) or SIGTERM, which
/// systemd and Kubernetes send. Both handlers are installed when this returns.
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
