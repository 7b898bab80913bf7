//! Standalone mpush-rs server: config file → builder → serve until Ctrl-C, SIGTERM or the
//! admin console's `shutdown`.
//!
//! `cargo run --release --example launcher [-- --config examples/mpush.conf]`
//! With no config it uses MPush's defaults on the embedded in-memory backend.

use std::path::PathBuf;

use clap::Parser;
use mpush::MPushServer;

mod support;

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
    support::init_tracing();
    let args = Args::parse();
    let mut config = support::load_config(args.config.as_deref())?;
    if let Some(p) = args.port {
        config.net.connect_server_port = p;
    }
    if let Some(p) = args.gateway_port {
        config.net.gateway_server_port = p;
    }
    let builder = MPushServer::builder().config(config);
    // Installed before the listeners open: whoever sees the ports open (a supervisor, the
    // lifecycle test) may signal at once, and must not hit the default action (exit 143).
    let stop = support::stop_signal()?;
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
