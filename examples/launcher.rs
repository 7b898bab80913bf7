//! Standalone mpush-rs server: config file → builder → serve until Ctrl-C, SIGTERM or the
//! admin console's `shutdown` (the last two drain first: `mp.core.drain-*`).
//!
//! `cargo run --release --example launcher [-- --config examples/mpush.conf]`
//! With no config it uses MPush's defaults on the embedded in-memory backend.

use std::path::PathBuf;

use clap::Parser;
use mpush::{DrainOptions, MPushServer};

/// jemalloc with `--features jemalloc` (recommended for production builds): less RSS per
/// idle connection than the system's malloc (docs/PERFORMANCE.md, "Where a parked heartbeat's time goes; jemalloc").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

// Shared with the alloc example: config loading and the stop signals (this binary sets up
// its own tracing, with the OpenTelemetry layer, so `support::init_tracing` is unused here).
#[allow(dead_code)]
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
    /// Export the push path's tracing spans (level DEBUG, `mpush.*`) to this OTLP/HTTP
    /// collector, e.g. http://127.0.0.1:4318/v1/traces (needs the `otel` cargo feature).
    #[arg(long)]
    otel_endpoint: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let otel = init_tracing(args.otel_endpoint.as_deref())?;
    let result = run(args).await;
    otel.shutdown();
    result
}

async fn run(args: Args) -> anyhow::Result<()> {
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
    let mut signals = Signals::install()?;
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
    // SIGTERM (a deploy) and the console's `shutdown` drain: deregister, keep serving for
    // mp.core.drain-window, close connections at mp.core.drain-close-rate. Ctrl-C, or any
    // second signal during a drain, stops at once.
    let drain = tokio::select! {
        s = signals.next() => s? == "SIGTERM",
        _ = server.shutdown_requested() => true,
    };
    if drain {
        let options = DrainOptions::from_config(&server.config().core);
        tracing::info!(?options, "draining");
        tokio::select! {
            report = server.drain(options) => tracing::info!(?report, "drained"),
            s = signals.next() => tracing::warn!(signal = s?, "stopping without finishing the drain"),
        }
    }
    tracing::info!("stopping");
    server.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// Logs to stderr (`RUST_LOG`, default info); with `--otel-endpoint`, also the `mpush`
/// spans at DEBUG to OpenTelemetry, whatever `RUST_LOG` says.
fn init_tracing(otel_endpoint: Option<&str>) -> anyhow::Result<Otel> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let fmt = tracing_subscriber::fmt::layer().with_filter(
        EnvFilter::try_from_default_env().unwrap_or_else(|_| "info,mpush=info".into()),
    );
    let registry = tracing_subscriber::registry().with(fmt);
    let Some(endpoint) = otel_endpoint else {
        registry.init();
        return Ok(Otel::disabled());
    };
    otel::init(registry, endpoint)
}

#[cfg(feature = "otel")]
mod otel {
    //! The OTLP exporter (feature `otel`).

    use anyhow::Context;
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;

    /// The tracer provider, flushed at exit.
    pub(super) struct Otel(Option<SdkTracerProvider>);

    impl Otel {
        /// No exporter.
        pub(super) fn disabled() -> Self {
            Self(None)
        }

        /// Sends the spans still batched.
        pub(super) fn shutdown(self) {
            if let Some(p) = self.0 {
                if let Err(e) = p.shutdown() {
                    eprintln!("OpenTelemetry shutdown: {e}");
                }
            }
        }
    }

    pub(super) fn init<S>(registry: S, endpoint: &str) -> anyhow::Result<Otel>
    where
        S: tracing::Subscriber
            + for<'a> tracing_subscriber::registry::LookupSpan<'a>
            + Send
            + Sync
            + 'static,
    {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_endpoint(endpoint)
            .build()
            .with_context(|| format!("OTLP exporter for {endpoint}"))?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name("mpush")
                    .build(),
            )
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("mpush"))
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target("mpush", tracing::Level::DEBUG),
            );
        registry.with(layer).init();
        tracing::info!(endpoint, "exporting push spans to OpenTelemetry");
        Ok(Otel(Some(provider)))
    }
}

#[cfg(not(feature = "otel"))]
mod otel {
    //! Built without the `otel` feature: `--otel-endpoint` is refused.

    /// Nothing to flush.
    pub(super) struct Otel;

    impl Otel {
        pub(super) fn disabled() -> Self {
            Self
        }

        pub(super) fn shutdown(self) {}
    }

    pub(super) fn init<S>(_registry: S, endpoint: &str) -> anyhow::Result<Otel> {
        anyhow::bail!(
            "--otel-endpoint {endpoint}: this launcher was built without the `otel` feature \
             (cargo run --features otel --example launcher)"
        )
    }
}

use otel::Otel;

use support::Signals;
