//! An existing axum web application that embeds the MPush server in-process: one tokio
//! runtime, the app's own `BindValidator` checking its logins, a `POST /notify` route that
//! pushes through `PushSender`, and a clean shutdown of both on Ctrl-C or SIGTERM.
//!
//! ```text
//! cargo run --example embedded            # web on 127.0.0.1:8080, clients on :3000
//! curl -XPOST localhost:8080/login -H 'content-type: application/json' -d '{"user":"alice"}'
//! # a device connects to :3000 and binds as alice with the token as the bind data
//! curl -XPOST localhost:8080/notify -H 'content-type: application/json' \
//!      -d '{"user":"alice","content":"hi"}'
//! ```

mod app;

use std::net::SocketAddr;

use mpush::MPushConfig;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt().init();
    let mut config = MPushConfig::default();
    config.net.connect_server_port = 3000;
    config.net.gateway_server_port = 3001;
    config.net.gateway_server_bind_ip = "127.0.0.1".into();
    config.net.local_ip = "127.0.0.1".into();
    let app = app::App::start(config, SocketAddr::from(([127, 0, 0, 1], 8080))).await?;
    tracing::info!(web = %app.http_addr, clients = %app.server.connect_addr(), "embedded app up");
    stop_signal().await?;
    tracing::info!("stopping");
    app.shutdown().await
}

/// Ctrl-C, or SIGTERM (what systemd and Kubernetes send).
async fn stop_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
