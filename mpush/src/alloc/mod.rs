//! The alloc service (spec §14): the HTTP load balancer MPush clients ask for a server.
//!
//! `GET` on any path but `/push` and `/index.html` answers `host:port,host:port`: the
//! connect servers of the service registry, least online users first (`list.rs`). `POST /push`
//! sends MPush's demo notification (§9.8) through a [`PushSender`]; `/index.html` is a form
//! for it. It is an edge service on the SDK side: registry, cache and sender, no server.
//!
//! ```no_run
//! # async fn run() -> Result<(), mpush::alloc::AllocError> {
//! // The application links backend crates (`use mpush_spi_redis as _;` …) or passes its own.
//! let alloc = mpush::alloc::AllocServer::builder()
//!     .config(mpush::MPushConfig::default())
//!     .start()
//!     .await?;
//! println!("alloc on http://{}/", alloc.local_addr());
//! alloc.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Bounds: at most [`MAX_CONNECTIONS`] HTTP connections (more wait in the listen backlog),
//! request headers within [`HEADER_TIMEOUT`], a whole request within [`REQUEST_TIMEOUT`],
//! `/push` bodies up to [`MAX_BODY`] bytes and at most [`MAX_PUSHES_IN_FLIGHT`] demo pushes
//! running (more get 503).

mod list;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::MPushConfig;
use crate::protocol::demo::{DemoPushRequest, demo_notification};
use crate::sender::{PushContext, PushMsg, PushSender, SenderError};
use crate::spi::registry::{self, ServiceBackend};
use crate::spi::{CacheManager, ServiceDiscovery, SpiError, SubscriptionId, services};

/// HTTP connections served at once; further clients wait in the listen backlog.
pub const MAX_CONNECTIONS: usize = 1024;
/// A client must send a request's headers within this time (also bounds idle keep-alive).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request (body included) must be answered within this time, else 408.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `POST /push` body.
pub const MAX_BODY: usize = 16 * 1024;
/// Demo pushes sent at once; more are refused with 503.
pub const MAX_PUSHES_IN_FLIGHT: usize = 256;
/// Default interval of the periodic list refresh (spec §14: 5 minutes).
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// How long a demo push may wait for its result (the reply does not wait for it).
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// Open connections get this long to finish on shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The fixed reply of MPush's `/push` handler.
pub const PUSH_REPLY: &str = "服务已经开始推送,请注意查收消息";

/// Errors starting the alloc service.
#[derive(Debug, thiserror::Error)]
pub enum AllocError {
    /// A backend could not be created, or the registry refused the watch.
    #[error(transparent)]
    Spi(#[from] SpiError),
    /// The push sender could not be started.
    #[error(transparent)]
    Sender(#[from] SenderError),
    /// The HTTP listener could not be bound.
    #[error("cannot listen on {addr} for the alloc service (mp.net.alloc-server-port): {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `mp.net.alloc-server-tls` names a certificate, key or CA that cannot be loaded.
    #[error("cannot set up TLS for the alloc service (mp.net.alloc-server-tls): {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// The alloc service; see the [module docs](self).
#[derive(Debug)]
pub struct AllocServer;

impl AllocServer {
    /// A builder with MPush's defaults.
    pub fn builder() -> AllocServerBuilder {
        AllocServerBuilder::default()
    }
}

/// Builds and starts the alloc service.
#[derive(Default)]
pub struct AllocServerBuilder {
    config: Option<MPushConfig>,
    cache: Option<Arc<dyn CacheManager>>,
    discovery: Option<Arc<dyn ServiceDiscovery>>,
    sender: Option<PushSender>,
    bind_ip: Option<String>,
    port: Option<u16>,
    refresh_interval: Option<Duration>,
}

debug_fields!(AllocServerBuilder { bind_ip, port });

impl AllocServerBuilder {
    setters! {
        /// The configuration: backends (`mp.spi`, `mp.redis`, `mp.zk`) and the port
        /// (`mp.net.alloc-server-port`, 9999). Default: MPush's reference defaults.
        config(config: MPushConfig) => config = Some(config);
        /// Reads online counts from this cache instead of a registered backend.
        cache_manager(cache: Arc<dyn CacheManager>) => cache = Some(cache);
        /// Lists connect servers from this discovery instead of a registered backend.
        discovery(discovery: Arc<dyn ServiceDiscovery>) => discovery = Some(discovery);
        /// Sends `/push` through this sender (default: one started on the same cache and
        /// discovery, stopped with the service).
        push_sender(sender: PushSender) => sender = Some(sender);
        /// The address to listen on (default "0.0.0.0": clients on the network ask alloc).
        bind_ip(ip: impl Into<String>) => bind_ip = Some(ip.into());
        /// The port, overriding `mp.net.alloc-server-port` (0 = any free port).
        port(port: u16) => port = Some(port);
        /// The periodic refresh interval (default [`DEFAULT_REFRESH_INTERVAL`]); registry
        /// changes refresh at once regardless.
        refresh_interval(interval: Duration) => refresh_interval = Some(interval);
    }

    /// Creates missing backends, builds the list, binds the port and serves.
    pub async fn start(self) -> Result<RunningAlloc, AllocError> {
        let config = Arc::new(self.config.unwrap_or_default());
        // Before any backend: a missing certificate fails the start at once.
        let tls = config
            .net
            .alloc_server_tls
            .enabled()
            .then(|| crate::tls::ReloadableTls::load(&config.net.alloc_server_tls).map(Arc::new))
            .transpose()?;
        let cache = match self.cache {
            Some(c) => c,
            None => registry::create_cache_manager(config.clone()).await?,
        };
        let discovery = match self.discovery {
            Some(d) => d,
            None => {
                let ServiceBackend { discovery, .. } =
                    registry::create_service_backend(config.clone()).await?;
                discovery
            }
        };
        let (sender, own_sender) = match self.sender {
            Some(s) => (s, false),
            None => {
                let s = PushSender::builder()
                    .config((*config).clone())
                    .cache_manager(cache.clone())
                    .discovery(discovery.clone())
                    .start()
                    .await?;
                (s, true)
            }
        };
        let list = Arc::new(list::ServerList::new(cache, discovery.clone()));
        // Watch before the first listing, so that no change falls between the two.
        let subscription = match discovery
            .subscribe(
                services::CONNECT_SERVER,
                Arc::new(list::ChangeListener(Arc::downgrade(&list))),
            )
            .await
        {
            Ok(id) => id,
            Err(e) => {
                if own_sender {
                    sender.stop().await;
                }
                return Err(e.into());
            }
        };
        list.refresh().await;

        let ip = self.bind_ip.unwrap_or_else(|| "0.0.0.0".into());
        let port = self.port.unwrap_or(config.net.alloc_server_port);
        let addr = format!("{ip}:{port}");
        let listener = match TcpListener::bind(&addr).await {
            Ok(l) => l,
            Err(source) => {
                let _ = discovery.unsubscribe(subscription).await;
                if own_sender {
                    sender.stop().await;
                }
                return Err(AllocError::Bind { addr, source });
            }
        };
        let local_addr = listener
            .local_addr()
            .map_err(|source| AllocError::Bind { addr, source })?;

        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        tasks.spawn(list.clone().run(
            self.refresh_interval.unwrap_or(DEFAULT_REFRESH_INTERVAL),
            stop.clone(),
        ));
        let state = Arc::new(AppState {
            list: list.clone(),
            sender: sender.clone(),
            pushes: Arc::new(Semaphore::new(MAX_PUSHES_IN_FLIGHT)),
            msg_seq: AtomicU64::new(0),
            tasks: tasks.clone(),
        });
        if let Some(tls) = &tls {
            tasks.spawn(crate::tls::watch(
                vec![("alloc service", tls.clone())],
                config.net.tls_reload_interval,
                stop.clone(),
            ));
        }
        tasks.spawn(crate::httpd::serve(
            "alloc",
            listener,
            router(state),
            crate::httpd::Limits {
                max_connections: MAX_CONNECTIONS,
                header_timeout: HEADER_TIMEOUT,
                shutdown_grace: SHUTDOWN_GRACE,
            },
            tls,
            stop.clone(),
            tasks.clone(),
        ));
        tracing::info!(%local_addr, "alloc service started");
        Ok(RunningAlloc {
            local_addr,
            list,
            stop,
            tasks,
            discovery,
            subscription,
            sender: own_sender.then_some(sender),
        })
    }
}

/// A started alloc service. Dropping it stops serving (without waiting); call
/// [`shutdown`](Self::shutdown) to also unsubscribe and wait for open requests.
pub struct RunningAlloc {
    local_addr: SocketAddr,
    list: Arc<list::ServerList>,
    stop: CancellationToken,
    tasks: TaskTracker,
    discovery: Arc<dyn ServiceDiscovery>,
    subscription: SubscriptionId,
    sender: Option<PushSender>,
}

debug_fields!(RunningAlloc { local_addr });

impl RunningAlloc {
    /// The bound HTTP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The list a GET serves now (`host:port,host:port`).
    pub fn servers(&self) -> String {
        self.list.body()
    }

    /// Stops accepting, lets open requests finish (a few seconds at most), stops watching
    /// the registry and stops the sender this service created.
    pub async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE * 2, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("alloc: some requests did not finish in time");
        }
        if let Err(e) = self.discovery.unsubscribe(self.subscription).await {
            tracing::warn!(error = %e, "alloc: cannot unsubscribe from the registry");
        }
        if let Some(sender) = &self.sender {
            sender.stop().await;
        }
        tracing::info!(local_addr = %self.local_addr, "alloc service stopped");
    }
}

impl Drop for RunningAlloc {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct AppState {
    list: Arc<list::ServerList>,
    sender: PushSender,
    pushes: Arc<Semaphore>,
    msg_seq: AtomicU64,
    tasks: TaskTracker,
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/push", post(push).layer(DefaultBodyLimit::max(MAX_BODY)))
        .route("/index.html", get(index))
        .fallback(get(servers))
        .layer(axum::middleware::from_fn(request_timeout))
        .with_state(state)
}

async fn request_timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timed out").into_response(),
    }
}

/// `GET` anything else: the server list. The README of MPush promises this content type.
async fn servers(State(state): State<Arc<AppState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain;charset=utf-8")],
        state.list.body(),
    )
        .into_response()
}

async fn index() -> Html<&'static str> {
    Html(INDEX_HTML)
}

async fn push(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let req = match DemoPushRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_REQUEST, e).into_response(),
    };
    let user = req.unicast_user();
    let Ok(permit) = state.pushes.clone().try_acquire_owned() else {
        return (StatusCode::SERVICE_UNAVAILABLE, "too many pushes in flight").into_response();
    };
    let msg = PushMsg {
        content: Some(demo_notification(req.hello.as_deref())),
        msg_id: Some(format!(
            "msg_{}",
            state.msg_seq.fetch_add(1, Ordering::Relaxed) + 1
        )),
        msg_type: 3,
    };
    // A condition filters a broadcast only (as the original); a user push ignores it.
    let ctx = match &user {
        Some(u) => PushContext::to_user(u.clone(), msg.to_bytes()).timeout(PUSH_TIMEOUT),
        _ => {
            let mut b = PushContext::broadcast(msg.to_bytes()).timeout(PUSH_TIMEOUT);
            if let Some(c) = req.condition {
                b = b.condition(c);
            }
            b.build()
        }
    };
    // As the original, the reply does not wait for delivery; the result is logged.
    let sender = state.sender.clone();
    state.tasks.spawn(async move {
        for r in sender.send(ctx).await {
            tracing::info!(user = ?r.user_id, code = ?r.code, error = ?r.error, "alloc: demo push");
        }
        drop(permit);
    });
    PUSH_REPLY.into_response()
}

const INDEX_HTML: &str = r#"<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>MPush alloc</title></head>
<body>
<h1>MPush alloc</h1>
<p>Servers (least loaded first): <code id="servers"></code></p>
<form id="f">
  <label>userId <input name="userId"></label>
  <label>hello <input name="hello" value="hello"></label>
  <label><input type="checkbox" name="broadcast"> broadcast</label>
  <label>condition <input name="condition"></label>
  <button>push</button>
</form>
<pre id="out"></pre>
<script>
fetch("/").then(r => r.text()).then(t => document.getElementById("servers").textContent = t);
document.getElementById("f").onsubmit = e => {
  e.preventDefault();
  const f = e.target;
  const body = {userId: f.userId.value, hello: f.hello.value,
                broadcast: f.broadcast.checked, condition: f.condition.value};
  fetch("/push", {method: "POST", headers: {"Content-Type": "application/json"},
                  body: JSON.stringify(body)})
    .then(r => r.text()).then(t => document.getElementById("out").textContent = t);
};
</script>
</body></html>
"#;
