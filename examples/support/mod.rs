//! What the standalone binaries (`launcher`, `alloc`) share: logging, config loading and
//! the stop signals, so both read `mp.*` files and stop the same way.

use std::path::Path;

use anyhow::Context;
use mpush::MPushConfig;

/// Logs to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_tracing() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,mpush=info".into()),
        )
        .init();
}

/// The config file at `path`, or with none MPush's defaults on the embedded backends.
pub fn load_config(path: Option<&Path>) -> anyhow::Result<MPushConfig> {
    match path {
        Some(path) => {
            MPushConfig::from_file(path).with_context(|| format!("loading {}", path.display()))
        }
        None => {
            let mut c = MPushConfig::default();
            // Standalone default: the embedded backends, whatever else is linked.
            c.spi.cache_manager = "memory".into();
            c.spi.mq_client = "memory".into();
            c.spi.service_registry = "memory".into();
            Ok(c)
        }
    }
}

/// The stop signals: SIGINT (Ctrl-C) and SIGTERM, which systemd and Kubernetes send.
#[cfg(unix)]
pub struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

#[cfg(unix)]
impl Signals {
    /// Installs both handlers: from here on neither signal has its default action.
    pub fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// The name of the next signal.
    pub async fn next(&mut self) -> anyhow::Result<&'static str> {
        tokio::select! {
            _ = self.int.recv() => Ok("SIGINT"),
            _ = self.term.recv() => Ok("SIGTERM"),
        }
    }
}

/// Ctrl-C only (elsewhere than Unix).
#[cfg(not(unix))]
pub struct Signals;

#[cfg(not(unix))]
impl Signals {
    pub fn install() -> anyhow::Result<Self> {
        Ok(Self)
    }

    pub async fn next(&mut self) -> anyhow::Result<&'static str> {
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok("Ctrl-C")
    }
}
