//! Standalone mpush-rs server: config file → builder → serve until Ctrl-C.
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
    let server = MPushServer::builder().config(config).build()?;
    server.start().await?;
    let connect = server.connect_addr().await;
    let gateway = server.gateway_addr().await;
    tracing::info!(?connect, ?gateway, "listening (Ctrl-C to stop)");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    tracing::info!("stopping");
    server.stop().await;
    Ok(())
}
