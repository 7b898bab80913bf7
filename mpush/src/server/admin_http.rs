//! The HTTP admin API on `mp.net.admin-http-port` (docs/OPERATIONS.md): `/metrics`
//! (Prometheus), `/health`, `/ready`, `/stats`, `GET /users/{userId}/routes`, and the
//! mutating `POST /users/{userId}/kick` and `POST /push`, which need
//! `Authorization: Bearer <mp.net.admin-http-token>` (refused with 403 while no token is
//! configured).
//!
//! It acts on this node: `/push` delivers to the user's connections here (a user connected
//! elsewhere is answered 409 with the route, OFFLINE users 404) and a broadcast walks this
//! node's connections; cluster-wide sends go through `PushSender` or the alloc service.
//! Bounds as the alloc service: [`MAX_CONNECTIONS`], header and request timeouts, bodies up
//! to [`MAX_BODY`], at most [`MAX_PUSHES_IN_FLIGHT`] pushes at once.

use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes as RawBytes;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::context::ServerContext;
use crate::protocol::AckModel;
use crate::protocol::demo::{DemoPushRequest, demo_push_content};
use crate::protocol::message::GatewayPush;
use crate::spi::{ClientType, PushOutcome, ServiceDiscovery, ServiceNode};

/// HTTP connections served at once; further clients wait in the listen backlog.
pub(crate) const MAX_CONNECTIONS: usize = 64;
/// A client must send a request's headers within this time (also bounds idle keep-alive).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request must be answered within this time, else 408.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request body.
pub const MAX_BODY: usize = 16 * 1024;
/// Pushes (unicast or broadcast) running at once; more are refused with 503.
pub(crate) const MAX_PUSHES_IN_FLIGHT: usize = 64;
/// How long `/ready` waits for each backend probe.
/// At shutdown, how long an open request gets to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a unicast from `/push` waits for delivery.
const PUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// The process-wide Prometheus recorder: installed by the first server that enables the
/// admin API; `None` when the application had installed a recorder of its own first.
static PROMETHEUS: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The Prometheus handle `/metrics` renders, installing the recorder on first use.
pub(crate) fn prometheus() -> Option<&'static PrometheusHandle> {
    PROMETHEUS
        .get_or_init(|| {
            let builder = match PrometheusBuilder::new().set_buckets_for_metric(
                Matcher::Suffix("_seconds".into()),
                crate::metrics::LATENCY_BUCKETS,
            ) {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: bad histogram buckets");
                    return None;
                }
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            match ::metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    crate::metrics::own_recorder_installed();
                    Some(handle)
                }
                Err(_) => {
                    tracing::info!(
                        "metrics: the application installed its own recorder; /metrics is off"
                    );
                    None
                }
            }
        })
        .as_ref()
}

struct AdminState {
    ctx: Arc<ServerContext>,
    discovery: Arc<dyn ServiceDiscovery>,
    nodes: Vec<ServiceNode>,
    pushes: Arc<Semaphore>,
    msg_seq: std::sync::atomic::AtomicU64,
    tasks: TaskTracker,
    /// The server's stop request (as the console's `shutdown`): the host stops once the
    /// drain that `POST /drain` started has finished.
    shutdown_request: CancellationToken,
}

/// Serves the admin API on `listener` until the server stops.
pub(crate) async fn serve(
    ctx: Arc<ServerContext>,
    listener: TcpListener,
    discovery: Arc<dyn ServiceDiscovery>,
    nodes: Vec<ServiceNode>,
    tasks: TaskTracker,
    shutdown_request: CancellationToken,
    tls: Option<Arc<crate::tls::ReloadableTls>>,
) {
    let handle = prometheus();
    if let Some(h) = handle {
        // Histograms are drained by upkeep; without it their buffers would only grow.
        let (h, stop) = (h.clone(), ctx.shutdown.clone());
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => h.run_upkeep(),
                }
            }
        });
    }
    let state = Arc::new(AdminState {
        ctx: ctx.clone(),
        discovery,
        nodes,
        pushes: Arc::new(Semaphore::new(MAX_PUSHES_IN_FLIGHT)),
        msg_seq: std::sync::atomic::AtomicU64::new(0),
        tasks: tasks.clone(),
        shutdown_request,
    });
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/stats", get(stats))
        .route("/users/{user_id}/routes", get(routes))
        .route("/users/{user_id}/kick", post(kick))
        .route("/push", post(push))
        .route("/drain", post(drain))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(axum::middleware::from_fn(request_timeout))
        .with_state(state);
    crate::httpd::serve(
        "admin http",
        listener,
        app,
        crate::httpd::Limits {
            max_connections: MAX_CONNECTIONS,
            header_timeout: HEADER_TIMEOUT,
            shutdown_grace: SHUTDOWN_GRACE,
        },
        tls,
        ctx.shutdown.clone(),
        tasks,
    )
    .await;
}

async fn request_timeout(req: Request, next: Next) -> Response {
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(req)).await {
        Ok(r) => r,
        Err(_) => (StatusCode::REQUEST_TIMEOUT, "request timed out").into_response(),
    }
}

/// A JSON body (the crate's axum has no `json` feature; one `to_vec` is all it would do).
struct Json(serde_json::Value);

impl IntoResponse for Json {
    fn into_response(self) -> Response {
        (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&self.0).unwrap_or_default(),
        )
            .into_response()
    }
}

fn json_error(status: StatusCode, error: impl Into<String>) -> Response {
    (status, Json(json!({ "error": error.into() }))).into_response()
}

/// `None` when the request carries the configured bearer token.
fn refuse_unauthorized(ctx: &ServerContext, headers: &HeaderMap) -> Option<Response> {
    let token = &ctx.config.net.admin_http_token;
    if token.is_empty() {
        return Some(json_error(
            StatusCode::FORBIDDEN,
            "mutating calls are disabled: set mp.net.admin-http-token",
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(t) if constant_time_eq(t.as_bytes(), token.as_bytes()) => None,
        Some(_) => Some(json_error(StatusCode::FORBIDDEN, "wrong bearer token")),
        None => Some(
            (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                Json(json!({ "error": "Authorization: Bearer <token> required" })),
            )
                .into_response(),
        ),
    }
}

/// Compares without an early exit, so the reply time does not tell how much of a guess
/// was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn metrics() -> Response {
    match prometheus() {
        Some(h) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => json_error(
            StatusCode::NOT_FOUND,
            "the application installed its own metrics recorder",
        ),
    }
}

/// Ready = not draining, the cache answers, and this node's connect server is registered.
async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    let ctx = &state.ctx;
    if ctx.drain.is_draining() {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    match tokio::time::timeout(PROBE_TIMEOUT, ctx.router.online.online_count()).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            return json_error(StatusCode::SERVICE_UNAVAILABLE, format!("cache: {e}"));
        }
        Err(_) => return json_error(StatusCode::SERVICE_UNAVAILABLE, "cache: timed out"),
    }
    for node in &state.nodes {
        let listed =
            match tokio::time::timeout(PROBE_TIMEOUT, state.discovery.lookup(&node.service_name))
                .await
            {
                Ok(Ok(list)) => list,
                Ok(Err(e)) => {
                    return json_error(StatusCode::SERVICE_UNAVAILABLE, format!("registry: {e}"));
                }
                Err(_) => {
                    return json_error(StatusCode::SERVICE_UNAVAILABLE, "registry: timed out");
                }
            };
        if !listed
            .iter()
            .any(|n| n.host == node.host && n.port == node.port)
        {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{} not registered", node.service_name),
            );
        }
    }
    Json(json!({ "ready": true })).into_response()
}

async fn stats(State(state): State<Arc<AdminState>>) -> Response {
    let ctx = &state.ctx;
    let load = ctx.gateway_load();
    let online = match ctx.router.online.online_count().await {
        Ok(n) => json!(n),
        Err(_) => serde_json::Value::Null,
    };
    Json(json!({
        "connections": ctx.connections.len(),
        "localUsers": ctx.router.local.user_count(),
        "onlineUsers": online,
        "draining": ctx.drain.is_draining(),
        "gateway": {
            "connections": load.connections,
            "inFlight": load.in_flight,
            "peakInFlight": load.peak_in_flight,
            "pendingAcks": load.pending_acks,
        },
    }))
    .into_response()
}

async fn routes(State(state): State<Arc<AdminState>>, Path(user_id): Path<String>) -> Response {
    match state.ctx.router.remote.lookup_all(&user_id).await {
        Ok(all) if all.is_empty() => json_error(StatusCode::NOT_FOUND, "unknown user"),
        Ok(all) => {
            let routes: serde_json::Map<String, serde_json::Value> = all
                .into_iter()
                .map(|(t, loc)| {
                    (
                        t.to_string(),
                        serde_json::to_value(&loc).unwrap_or_default(),
                    )
                })
                .collect();
            Json(json!({ "userId": user_id, "routes": routes })).into_response()
        }
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, format!("cache: {e}")),
    }
}

async fn kick(
    State(state): State<Arc<AdminState>>,
    Path(user_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refuse_unauthorized(&state.ctx, &headers) {
        return r;
    }
    match super::kick_user(&state.ctx, &user_id, None).await {
        Ok(0) => json_error(StatusCode::NOT_FOUND, "unknown user (no online route)"),
        Ok(n) => Json(json!({ "userId": user_id, "kicked": n })).into_response(),
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// Starts a graceful drain with the configured window and pace and answers 202 at once; the
/// host's stop request fires too, so a launcher (or an application waiting on
/// `RunningServer::shutdown_requested`) stops the process once the drain has finished.
async fn drain(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse_unauthorized(&state.ctx, &headers) {
        return r;
    }
    if state.ctx.drain.is_draining() {
        return json_error(StatusCode::CONFLICT, "already draining");
    }
    let options = super::DrainOptions::from_config(&state.ctx.config.core);
    let ctx = state.ctx.clone();
    state.tasks.spawn(async move {
        super::drain::drain(&ctx, options).await;
    });
    state.shutdown_request.cancel();
    (
        StatusCode::ACCEPTED,
        Json(json!({
            "draining": true,
            "windowMs": options.window.as_millis() as u64,
            "closeRate": options.close_rate,
        })),
    )
        .into_response()
}

async fn push(State(state): State<Arc<AdminState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(r) = refuse_unauthorized(&state.ctx, &headers) {
        return r;
    }
    let req = match DemoPushRequest::parse(&body) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, e),
    };
    let Ok(permit) = state.pushes.clone().try_acquire_owned() else {
        return json_error(StatusCode::SERVICE_UNAVAILABLE, "too many pushes in flight");
    };
    let ctx = state.ctx.clone();
    let msg_id = format!(
        "admin_{}",
        state.msg_seq.fetch_add(1, Ordering::Relaxed) + 1
    );
    let content = RawBytes::from(demo_push_content(req.hello.as_deref(), &msg_id));
    let Some(user_id) = req.unicast_user() else {
        let msg = GatewayPush {
            content: Some(content.to_vec()),
            condition: req.condition.clone(),
            ..GatewayPush::default()
        };
        // A broadcast may take long: answered at once, run under the server's tasks.
        state.tasks.spawn(async move {
            let _ = crate::push::broadcast::run(&ctx, 0, msg).await;
            drop(permit);
        });
        return (
            StatusCode::ACCEPTED,
            Json(json!({ "broadcast": true, "scope": "this node" })),
        )
            .into_response();
    };
    let outcomes = crate::push::local::push_to_local_user(
        &ctx,
        &user_id,
        None,
        content,
        AckModel::NoAck,
        PUSH_TIMEOUT,
    )
    .await;
    drop(permit);
    if !outcomes.is_empty() {
        let results: Vec<_> = outcomes
            .iter()
            .map(|(t, o)| json!({ "clientType": t.to_string(), "outcome": outcome_name(*o) }))
            .collect();
        return Json(json!({ "userId": user_id, "results": results })).into_response();
    }
    match ctx.router.remote.lookup_all(&user_id).await {
        Ok(all) => {
            let elsewhere: Vec<(ClientType, _)> =
                all.into_iter().filter(|(_, l)| l.is_online()).collect();
            if elsewhere.is_empty() {
                crate::push::local::record_push(PushOutcome::Offline, 0);
                json_error(StatusCode::NOT_FOUND, "unknown user (offline)")
            } else {
                crate::push::local::record_push(PushOutcome::RouterChange, 0);
                let at: Vec<_> = elsewhere
                    .iter()
                    .map(|(t, l)| json!({ "clientType": t.to_string(), "server": l.host_and_port() }))
                    .collect();
                (
                    StatusCode::CONFLICT,
                    Json(json!({
                        "error": "user connected to another server; push through PushSender",
                        "routes": at,
                    })),
                )
                    .into_response()
            }
        }
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, format!("cache: {e}")),
    }
}

fn outcome_name(o: PushOutcome) -> &'static str {
    match o {
        PushOutcome::Success | PushOutcome::AckSuccess => "success",
        PushOutcome::Offline => "offline",
        PushOutcome::Failure => "failure",
        PushOutcome::Timeout => "timeout",
        PushOutcome::RouterChange => "router_change",
    }
}
