//! The Rust MPush client SDK: what a device embeds, and what our end-to-end tests and load
//! generator use.
//!
//! [`Client::connect`] opens a session the way the Java client does (spec §4.5): FAST_CONNECT
//! with a stored ticket when one is usable (falling back to a full HANDSHAKE on the same socket
//! if the server refuses it), otherwise an RSA/AES HANDSHAKE, then BIND of the configured user.
//! It returns once the session is up. From then on one tokio task per client owns the socket:
//! it answers AUTO_ACK pushes, sends heartbeats, detects a dead peer, reconnects with back-off
//! (re-binding the user) and reports everything as [`Event`]s.
//!
//! Requests are correlated by (command, sessionId) rather than by sessionId alone (quirk Q14),
//! so a server push that happens to reuse a request's id cannot complete it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mpush::client::ClientError> {
//! use mpush::client::{Client, ClientConfig, Event};
//! let config = ClientConfig::new("127.0.0.1:3000", "device-1").with_user("user-1", None);
//! let (client, mut events) = Client::connect(config).await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Push { message_id, content, needs_ack: true, .. } = event {
//!         println!("{content:?}");
//!         client.ack(message_id).await?;
//!     }
//! }
//! # Ok(()) }
//! ```

mod config;
mod conn;
mod driver;
mod error;
mod event;
mod socket;
mod ticket;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The ACK model of an upstream push (shared with the push center).
pub use crate::protocol::AckModel;
pub use config::{ClientConfig, ReconnectPolicy};
pub use error::ClientError;
pub use event::{Event, EventCallback, EventStream};
pub use ticket::{MemoryTicketStore, StoredTicket, TicketStore};

use conn::Reply;
use driver::{Cmd, Outgoing};
use event::EventSink;

use crate::protocol::crypto::{RsaCipher, RsaKeys};
use crate::protocol::message::BindUser;
pub use crate::protocol::message::{HttpRequest, HttpResponse};
use crate::protocol::{Command, Message as _};

/// Commands queued from handles to the connection task before senders wait.
const COMMAND_QUEUE: usize = 16;

/// A bound user, remembered for re-binding after reconnects.
#[derive(Debug, Clone)]
struct BindInfo {
    user_id: String,
    tags: Option<String>,
    data: Option<String>,
}

/// What the handles and the connection task share.
struct State {
    config: ClientConfig,
    rsa: Arc<RsaCipher>,
    connected: AtomicBool,
    heartbeat_ms: AtomicU32,
    bound: Mutex<Option<BindInfo>>,
    /// Cancelled by `close()` or when the last handle is dropped.
    cancel: CancellationToken,
}

impl State {
    fn bound_user(&self) -> Option<BindInfo> {
        self.bound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_bound(&self, bind: Option<BindInfo>) {
        *self.bound.lock().unwrap_or_else(PoisonError::into_inner) = bind;
    }
}

/// Request ids: one counter per process starting at 1, as the Java SDK (spec §1.5); wraps
/// back to 1 instead of going negative.
fn next_request_id() -> i32 {
    static NEXT: AtomicI32 = AtomicI32::new(1);
    match NEXT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(if v == i32::MAX { 1 } else { v + 1 })
    }) {
        Ok(v) | Err(v) => v,
    }
}

fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Parses the public key once per distinct key string: a load generator creating thousands
/// of clients with the same key shares one cipher.
fn rsa_cipher(config: &ClientConfig) -> Result<Arc<RsaCipher>, ClientError> {
    if let Some(rsa) = &config.rsa {
        return Ok(rsa.clone());
    }
    static CACHE: Mutex<Option<(String, Arc<RsaCipher>)>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((key, rsa)) = cache.as_ref() {
        if *key == config.public_key {
            return Ok(rsa.clone());
        }
    }
    let rsa = Arc::new(RsaCipher::new(Arc::new(RsaKeys::public_only(
        &config.public_key,
    )?)));
    *cache = Some((config.public_key.clone(), rsa.clone()));
    Ok(rsa)
}

struct Inner {
    tx: mpsc::Sender<Cmd>,
    state: Arc<State>,
    driver: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last handle is gone: nobody can use the connection any more.
        self.state.cancel.cancel();
    }
}

/// A connected MPush client. Cheap to clone; all clones drive the same connection and may be
/// used from many tasks. Dropping the last clone closes the connection.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("device_id", &self.inner.state.config.device_id)
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connects and opens a session (FAST_CONNECT or HANDSHAKE, then BIND if
    /// `config.user_id` is set). Returns when the session is established; the first event
    /// is `Event::Connected`.
    ///
    /// # Errors
    /// `Config` for an empty device id or unusable key, `Io` if the TCP connection fails,
    /// `Timeout` if the server does not answer in `request_timeout`, `Rejected` if it refuses
    /// the handshake or the bind, `InvalidServerKey`/`Protocol` for malformed answers. The
    /// first connection is not retried.
    pub async fn connect(config: ClientConfig) -> Result<(Client, EventStream), ClientError> {
        if config.device_id.is_empty() {
            return Err(ClientError::Config("device_id must not be empty".into()));
        }
        let rsa = rsa_cipher(&config)?;
        let (sink, stream) = match &config.on_event {
            Some(cb) => (EventSink::Callback(cb.clone()), EventStream::new(None)),
            None => {
                let (tx, rx) = mpsc::unbounded_channel();
                (EventSink::Channel(tx), EventStream::new(Some(rx)))
            }
        };
        let bound = config.user_id.clone().map(|user_id| BindInfo {
            user_id,
            tags: config.tags.clone(),
            data: config.bind_data.clone(),
        });
        let state = Arc::new(State {
            config,
            rsa,
            connected: AtomicBool::new(false),
            heartbeat_ms: AtomicU32::new(0),
            bound: Mutex::new(bound),
            cancel: CancellationToken::new(),
        });
        let (tx, rx) = mpsc::channel(COMMAND_QUEUE);
        let (first_tx, first_rx) = oneshot::channel();
        let driver = tokio::spawn(driver::run(state.clone(), rx, sink, first_tx));
        let client = Client {
            inner: Arc::new(Inner {
                tx,
                state,
                driver: tokio::sync::Mutex::new(Some(driver)),
            }),
        };
        match first_rx.await {
            Ok(Ok(())) => Ok((client, stream)),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ClientError::Closed),
        }
    }

    fn state(&self) -> &State {
        &self.inner.state
    }

    /// Sends a request and waits (at most `request_timeout`, queueing included) for the
    /// answer keyed by (cmd, sessionId).
    async fn request(&self, out: Outgoing, what: &'static str) -> Result<Reply, ClientError> {
        let timeout = self.state().config.request_timeout;
        self.request_within(out, what, timeout).await
    }

    /// [`Client::request`] with its own timeout.
    async fn request_within(
        &self,
        out: Outgoing,
        what: &'static str,
        timeout: Duration,
    ) -> Result<Reply, ClientError> {
        if !self.is_connected() {
            return Err(self.offline_error());
        }
        let (reply_tx, reply_rx) = oneshot::channel();
        let exchange = async {
            self.inner
                .tx
                .send(Cmd::Send {
                    out,
                    reply: Some(reply_tx),
                })
                .await
                .map_err(|_| ClientError::Closed)?;
            reply_rx.await.map_err(|_| ClientError::Closed)?
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| ClientError::Timeout { what })?
    }

    /// Queues a packet without waiting for an answer.
    async fn send(&self, cmd: Cmd) -> Result<(), ClientError> {
        if !self.is_connected() {
            return Err(self.offline_error());
        }
        self.inner
            .tx
            .send(cmd)
            .await
            .map_err(|_| ClientError::Closed)
    }

    fn offline_error(&self) -> ClientError {
        if self.state().cancel.is_cancelled() || self.inner.tx.is_closed() {
            ClientError::Closed
        } else {
            ClientError::NotConnected
        }
    }

    /// Binds `user_id` to this connection (BIND, spec §8.2) and waits for the server's OK.
    /// On success the user is re-bound automatically after every reconnect.
    ///
    /// # Errors
    /// `Rejected` on an ERROR answer (the server then closes the connection), `Timeout`,
    /// `NotConnected` while reconnecting, `ConnectionLost`, `Closed`.
    pub async fn bind(
        &self,
        user_id: &str,
        tags: Option<&str>,
        data: Option<&str>,
    ) -> Result<(), ClientError> {
        let info = BindInfo {
            user_id: user_id.to_owned(),
            tags: tags.map(str::to_owned),
            data: data.map(str::to_owned),
        };
        let out = Outgoing {
            cmd: Command::Bind,
            session_id: next_request_id(),
            flags: 0,
            body: info.to_message().encode(),
            secure: true,
        };
        self.request(out, "bind").await?;
        self.state().set_bound(Some(info));
        Ok(())
    }

    /// Unbinds the connection's user (UNBIND, spec §8.3; the server acts on the bound user,
    /// `user_id` must just be non-empty) and waits for the OK. Stops automatic re-binding.
    ///
    /// # Errors
    /// As [`Client::bind`].
    pub async fn unbind(&self, user_id: &str) -> Result<(), ClientError> {
        let msg = BindUser {
            user_id: Some(user_id.to_owned()),
            data: None,
            tags: None,
        };
        let out = Outgoing {
            cmd: Command::Unbind,
            session_id: next_request_id(),
            flags: 0,
            body: msg.encode(),
            secure: true,
        };
        self.request(out, "unbind").await?;
        self.state().set_bound(None);
        Ok(())
    }

    /// Sends an upstream PUSH (spec §9.2). With [`AckModel::AutoAck`] waits for the server's
    /// ACK; otherwise returns once the push is queued for writing.
    ///
    /// # Errors
    /// `Timeout` (no ACK in time), `NotConnected`, `ConnectionLost`, `Closed`, `Rejected` if
    /// the server answers with an ERROR for cmd 15.
    pub async fn push_upstream(
        &self,
        content: impl Into<Vec<u8>>,
        ack: AckModel,
    ) -> Result<(), ClientError> {
        let out = Outgoing {
            cmd: Command::Push,
            session_id: next_request_id(),
            flags: ack.flags(),
            body: content.into(),
            secure: true,
        };
        if ack == AckModel::AutoAck {
            self.request(out, "push ack").await.map(|_| ())
        } else {
            self.send(Cmd::Send { out, reply: None }).await
        }
    }

    /// Sends an HTTP request through the server's HTTP proxy (HTTP_PROXY, cmd 12, spec §12),
    /// as the Java client's `sendHttp`: the request travels sealed, the server performs it and
    /// answers with the upstream response (or its own 400/403/405/408/502/503/504). A
    /// `readTimeout` header with `timeout` in ms is added, as the Java client does, and the
    /// answer is awaited for `timeout` plus the configured request timeout.
    ///
    /// # Errors
    /// `Rejected` (ERROR 101 when the server's proxy is disabled; the server then closes the
    /// connection), `Timeout` (a local 408 in the Java client), `NotConnected`,
    /// `ConnectionLost`, `Closed`.
    pub async fn send_http(
        &self,
        mut request: HttpRequest,
        timeout: Duration,
    ) -> Result<HttpResponse, ClientError> {
        request
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("readTimeout"));
        request
            .headers
            .push(("readTimeout".to_owned(), timeout.as_millis().to_string()));
        let out = Outgoing {
            cmd: Command::HttpProxy,
            session_id: next_request_id(),
            flags: 0,
            body: request.encode(),
            secure: true,
        };
        let wait = timeout.saturating_add(self.state().config.request_timeout);
        match self.request_within(out, "http response", wait).await? {
            Reply::Http(response) => Ok(response),
            _ => Err(ClientError::Timeout {
                what: "http response",
            }),
        }
    }

    /// Acknowledges a push (ACK with the push's sessionId, raw and empty): required for
    /// pushes reported with `needs_ack: true`.
    ///
    /// # Errors
    /// `NotConnected` while reconnecting (the server forgets the push anyway), `Closed`.
    pub async fn ack(&self, message_id: i32) -> Result<(), ClientError> {
        let out = Outgoing {
            cmd: Command::Ack,
            session_id: message_id,
            flags: 0,
            body: Vec::new(),
            secure: false,
        };
        self.send(Cmd::Send { out, reply: None }).await
    }

    /// Sends a heartbeat byte now (the client also sends them on its own when idle).
    ///
    /// # Errors
    /// `NotConnected`, `Closed`.
    pub async fn heartbeat(&self) -> Result<(), ClientError> {
        self.send(Cmd::Heartbeat).await
    }

    /// Closes the connection gracefully (queued packets are flushed) and stops reconnecting.
    /// Returns when the connection task has finished; the event stream then ends after a
    /// final `Disconnected { will_reconnect: false }`. Idempotent.
    pub async fn close(&self) {
        self.state().cancel.cancel();
        let handle = self.inner.driver.lock().await.take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }

    /// Whether a session is currently established.
    pub fn is_connected(&self) -> bool {
        self.state().connected.load(Ordering::Acquire)
    }

    /// The heartbeat negotiated for the current (or last) session, in milliseconds.
    pub fn heartbeat_ms(&self) -> u32 {
        self.state().heartbeat_ms.load(Ordering::Relaxed)
    }

    /// The negotiated heartbeat as a duration.
    pub fn heartbeat_interval(&self) -> Duration {
        Duration::from_millis(u64::from(self.heartbeat_ms()))
    }

    /// The fast-reconnect ticket currently stored, if any.
    pub fn session_ticket(&self) -> Option<StoredTicket> {
        self.state().config.ticket_store.load()
    }

    /// The ticket store (to inspect or clear the ticket).
    pub fn ticket_store(&self) -> &Arc<dyn TicketStore> {
        &self.state().config.ticket_store
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        &self.state().config.device_id
    }

    /// The user re-bound after reconnects (configured, or last bound with [`Client::bind`]).
    pub fn bound_user(&self) -> Option<String> {
        self.state().bound_user().map(|b| b.user_id)
    }
}
