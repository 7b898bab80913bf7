//! What the standalone binaries (`launcher`, `alloc`) share: logging, config loading and
//! the stop signal, so both read `mp.*` files and stop the same way.

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

/// Resolves with the name of the first stop signal: SIGINT (Ctrl-C) or SIGTERM, which
/// systemd and Kubernetes send. Both handlers are installed when this returns.
#[cfg(unix)]
pub fn stop_signal()
-> anyhow::Result<impl std::future::Future<Output = anyhow::Result<&'static str>>> {
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
pub fn stop_signal()
-> anyhow::Result<impl std::future::Future<Output = anyhow::Result<&'static str>>> {
    Ok(async {
        tokio::signal::ctrl_c()
            .await
            .context("waiting for Ctrl-C")?;
        Ok("Ctrl-C")
    })
}
