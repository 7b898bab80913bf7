//! The web application of the `embedded` example, shared with its end-to-end test
//! (`tests/embedded.rs`): an axum app with its own sessions that runs the MPush server and a
//! `PushSender` in-process, on the same tokio runtime.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use mpush::sender::{PushContext, PushSender};
use mpush::spi::{BindRejection, BindValidator};
use mpush::{MPushConfig, MPushServer, RunningServer};
use mpush_spi_memory::{MemoryCache, MemoryHub, MemoryMQ, MemoryServiceRegistry};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Sessions the app keeps at most; a login beyond it is refused (503).
const MAX_SESSIONS: usize = 100_000;

/// The app's logins: token → user id.
#[derive(Debug, Default)]
pub struct Sessions(RwLock<HashMap<String, String>>);

impl Sessions {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, String>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    /// A new token for `user`, or `None` when the session table is full.
    fn login(&self, user: &str) -> Option<String> {
        let mut map = self.0.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_SESSIONS {
            return None;
        }
        let token = format!("{:032x}", rand::random::<u128>());
        map.insert(token.clone(), user.to_string());
        Some(token)
    }

    /// `true` when `token` is a login of `user`.
    pub fn is_login_of(&self, token: &str, user: &str) -> bool {
        self.read().get(token).is_some_and(|u| u == user)
    }
}

/// Lets a device bind only as the user its app login belongs to: the client puts the token
/// of `POST /login` in the bind's `data` (spec §8: BIND carries userId, data, tags).
#[derive(Debug)]
pub struct SessionBindValidator(pub Arc<Sessions>);

#[async_trait::async_trait]
impl BindValidator for SessionBindValidator {
    async fn validate(&self, user_id: &str, data: Option<&str>) -> Result<(), BindRejection> {
        if data.is_some_and(|token| self.0.is_login_of(token, user_id)) {
            Ok(())
        } else {
            Err(BindRejection::Denied {
                reason: format!("no app login of {user_id} with that token"),
            })
        }
    }
}

#[derive(Clone)]
struct AppState {
    sessions: Arc<Sessions>,
    sender: PushSender,
}

/// `POST /login {"user": "..."}` → `{"token": "..."}`.
async fn login(State(s): State<AppState>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let Some(user) = body
        .get("user")
        .and_then(Value::as_str)
        .filter(|u| !u.is_empty())
    else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "user missing"})),
        );
    };
    match s.sessions.login(user) {
        Some(token) => (StatusCode::OK, Json(json!({ "token": token }))),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": "too many sessions"})),
        ),
    }
}

/// `POST /notify {"user": "...", "content": "..."}` → `{"results": ["Success", ...]}`.
async fn notify(State(s): State<AppState>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    let (Some(user), Some(content)) = (
        body.get("user").and_then(Value::as_str),
        body.get("content").and_then(Value::as_str),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "user and content are required"})),
        );
    };
    let results = s
        .sender
        .send(PushContext::to_user(user, content.as_bytes().to_vec()))
        .await;
    let codes: Vec<String> = results.iter().map(|r| format!("{:?}", r.code)).collect();
    (StatusCode::OK, Json(json!({ "results": codes })))
}

/// The running app: web server, MPush server and sender.
#[derive(Debug)]
pub struct App {
    /// Where the web app listens.
    pub http_addr: SocketAddr,
    /// The embedded MPush server.
    pub server: RunningServer,
    sender: PushSender,
    stop: CancellationToken,
    web: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl App {
    /// Starts everything: MPush on `config`'s ports (in-memory backends: one process), the
    /// sender, and the web app on `http` (port 0: any).
    pub async fn start(config: MPushConfig, http: SocketAddr) -> anyhow::Result<Self> {
        let sessions = Arc::new(Sessions::default());
        let hub = MemoryHub::new();
        let registry = Arc::new(MemoryServiceRegistry::new(hub.clone()));
        let server = MPushServer::builder()
            .config(config.clone())
            .cache_manager(Arc::new(MemoryCache::new(hub.clone())))
            .mq_client(Arc::new(MemoryMQ::new(hub.clone())))
            .service_registry(registry.clone(), registry.clone())
            .bind_validator(Arc::new(SessionBindValidator(sessions.clone())))
            .start()
            .await?;
        let sender = PushSender::builder()
            .config(config)
            .cache_manager(Arc::new(MemoryCache::new(hub)))
            .discovery(registry)
            .start()
            .await?;
        let state = AppState {
            sessions,
            sender: sender.clone(),
        };
        let router = Router::new()
            .route("/login", post(login))
            .route("/notify", post(notify))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind(http).await?;
        let http_addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let signal = stop.clone();
        let web = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { signal.cancelled().await })
                .await
        });
        Ok(Self {
            http_addr,
            server,
            sender,
            stop,
            web,
        })
    }

    /// Stops the web app (in-flight requests finish), then the sender and the server.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.stop.cancel();
        self.web.await??;
        self.sender.stop().await;
        self.server.shutdown().await;
        Ok(())
    }
}
