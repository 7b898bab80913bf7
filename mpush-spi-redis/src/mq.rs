//! [`RedisMQ`]: [`MQClient`] on Redis pub/sub (classic `SUBSCRIBE`/`PUBLISH`, as Java MPush).
//!
//! # How it works
//! One RESP3 connection per handle carries `PUBLISH`, `SUBSCRIBE` and `UNSUBSCRIBE`; Redis
//! sends messages back as RESP3 pushes, which the library forwards to an unbounded channel
//! (the library requires a non-blocking sink). A single dispatcher task reads that channel
//! in order and hands each message to the per-listener queues of its channel
//! ([`crate::delivery`]), so a slow listener only fills its own queue.
//!
//! Redis subscribes a connection, not a listener: the first listener of a channel sends
//! `SUBSCRIBE`, the last one to leave sends `UNSUBSCRIBE`; the others only touch the local
//! routing table. Subscription changes are serialized by an async lock so a `subscribe`
//! returns only after Redis confirmed the channel (two concurrent subscribers of one new
//! channel cannot return before the confirmation).
//!
//! # Reconnects
//! When the connection drops, the library reports a disconnect push, reconnects in the
//! background and (single server) replays the subscriptions it tracked. The dispatcher logs
//! a warning and wakes a recovery task that re-sends `SUBSCRIBE` for every channel with
//! listeners (harmless if already subscribed: Redis subscribes a connection to a channel at
//! most once) until it succeeds, with a capped backoff. This covers what the library cannot:
//! a reconnect round that gave up because Redis stayed down longer than its retries, a cluster
//! node whose replayed subscription failed, and `UNSUBSCRIBE`s that failed while
//! disconnected. Messages published while disconnected are lost (Redis pub/sub keeps none).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use async_trait::async_trait;
use mpush::config::RedisConfig;
use mpush::spi::{MQClient, MQMessageListener, SpiResult, SubscriptionId};
use redis::{Msg, PushInfo, PushKind, cmd};
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::sync::{Mutex as AsyncMutex, Notify};
use tokio::task::JoinHandle;

use crate::conn::{Conn, describe};
use mpush::spi::delivery::{self, SubState};

/// The dispatcher's side of one listener's queue.
type Outlet = delivery::Outlet<Arc<str>>;
use crate::settings::RedisSettings;

/// First pause between two recovery attempts while Redis stays unreachable.
const RECOVERY_MIN_DELAY: Duration = Duration::from_millis(250);
/// Longest pause between two recovery attempts.
const RECOVERY_MAX_DELAY: Duration = Duration::from_secs(5);

/// Local routing: which listeners get which channel.
#[derive(Default)]
struct Routes {
    inner: Mutex<RoutesInner>,
}

#[derive(Default)]
struct RoutesInner {
    channels: HashMap<String, Vec<Outlet>>,
    channel_of: HashMap<u64, String>,
    /// Channels without listeners that may still be subscribed on Redis (an `UNSUBSCRIBE` or
    /// `SUBSCRIBE` failed half-way); recovery unsubscribes them. Their messages are ignored.
    stale: HashSet<String>,
}

impl Routes {
    fn lock(&self) -> MutexGuard<'_, RoutesInner> {
        // Critical sections only move plain data, so a poisoned lock still holds valid state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `outlet`; true when the channel had no listener, i.e. Redis must `SUBSCRIBE`.
    fn add(&self, channel: &str, outlet: Outlet) -> bool {
        let mut inner = self.lock();
        inner.channel_of.insert(outlet.id, channel.to_string());
        let subs = inner.channels.entry(channel.to_string()).or_default();
        subs.push(outlet);
        subs.len() == 1
    }

    /// Detaches subscription `id`; returns its state and, when it was the channel's last
    /// listener, the channel (which Redis should then `UNSUBSCRIBE`).
    fn remove(&self, id: u64) -> Option<(Arc<SubState>, Option<String>)> {
        let mut inner = self.lock();
        let channel = inner.channel_of.remove(&id)?;
        let subs = inner.channels.get_mut(&channel)?;
        let pos = subs.iter().position(|o| o.id == id)?;
        let outlet = subs.swap_remove(pos);
        let emptied = subs.is_empty().then(|| {
            inner.channels.remove(&channel);
            channel
        });
        Some((outlet.state, emptied))
    }

    fn mark_stale(&self, channel: String) {
        self.lock().stale.insert(channel);
    }

    fn clear_stale(&self, channel: &str) {
        self.lock().stale.remove(channel);
    }

    /// Channels with listeners, and stale channels without.
    fn snapshot(&self) -> (Vec<String>, Vec<String>) {
        let inner = self.lock();
        let live: Vec<String> = inner.channels.keys().cloned().collect();
        let stale = inner
            .stale
            .iter()
            .filter(|c| !inner.channels.contains_key(*c))
            .cloned()
            .collect();
        (live, stale)
    }

    /// Queues `message` for every listener of `channel`.
    fn deliver(&self, channel: &str, message: &str) {
        let inner = self.lock();
        if let Some(subs) = inner.channels.get(channel) {
            let message: Arc<str> = Arc::from(message);
            for outlet in subs {
                outlet.offer(message.clone());
            }
        } else {
            // Normal right after an unsubscribe, or for a stale channel.
            tracing::debug!(%channel, "redis backend: message for a channel without listeners");
        }
    }

    /// Detaches every listener (the handle is going away).
    fn close_all(&self) {
        let mut inner = self.lock();
        for outlet in inner.channels.values().flatten() {
            outlet.state.close_now();
        }
        inner.channels.clear();
        inner.channel_of.clear();
    }
}

/// State shared by the handle and its recovery task.
struct Shared {
    conn: Conn,
    limit: Duration,
    routes: Arc<Routes>,
    /// Serializes changes of what this connection is subscribed to on Redis.
    ops: AsyncMutex<()>,
}

impl Shared {
    /// Re-sends `SUBSCRIBE` for every channel with listeners and `UNSUBSCRIBE` for stale
    /// ones; returns how many channels are subscribed. Fails while Redis is unreachable.
    async fn resubscribe(&self) -> SpiResult<usize> {
        let _ops = self.ops.lock().await;
        let (live, stale) = self.routes.snapshot();
        if live.is_empty() && stale.is_empty() {
            // Nothing to restore: still confirm the connection is back, for the log.
            self.conn
                .query::<()>(&cmd("PING"), self.limit, "PING")
                .await?;
        }
        for channel in &live {
            self.conn.subscribe(channel, self.limit).await?;
        }
        for channel in &stale {
            self.conn.unsubscribe(channel, self.limit).await?;
            self.routes.clear_stale(channel);
        }
        Ok(live.len())
    }
}

/// An [`MQClient`] on Redis pub/sub, wire-compatible with Java MPush's channels
/// (`/mpush/online/`, `/mpush/offline/`, `/mpush/kick/<host>:<port>`; plain string messages).
///
/// Guarantees: a message published on a channel after `subscribe` returned reaches the
/// listener once, in publish order per publisher (one connection, one dispatcher); several
/// listeners per channel share one Redis subscription; each listener has its own queue of
/// [`RedisOptions::queue_capacity`](crate::RedisOptions::queue_capacity) messages and task,
/// and a full queue drops (with a warning) instead of blocking the others. After
/// `unsubscribe` returns the listener is not called again. `publish` fails with
/// [`mpush::spi::SpiError::Unavailable`] while Redis is unreachable (bounded by the
/// operation timeout) rather than losing the message silently.
///
/// Best effort, as Redis pub/sub: messages published while this handle is disconnected are
/// missed; subscriptions are restored automatically after a reconnect (see the module docs).
/// In a Redis Cluster the connection is the cluster connection: classic `PUBLISH` is
/// broadcast to every node, and the library subscribes each channel on the node owning its
/// slot, so any node works. During a cluster topology change a channel may briefly be
/// subscribed on two nodes and deliver a message twice.
///
/// Needs a tokio runtime (it spawns the dispatcher; delivery threads enter its context). Dropping the
/// handle closes its connection, which ends its subscriptions on Redis.
pub struct RedisMQ {
    shared: Arc<Shared>,
    capacity: usize,
    next_id: AtomicU64,
    target: String,
    tasks: Vec<JoinHandle<()>>,
}

impl RedisMQ {
    /// Connects as configured by `mp.redis`; fails (within the operation timeout) when Redis
    /// cannot be reached. Needs Redis ≥ 6 (RESP3).
    pub async fn connect(config: &RedisConfig) -> SpiResult<Self> {
        Self::connect_with(&RedisSettings::from_config(config)?).await
    }

    /// Connects with explicit settings.
    pub async fn connect_with(settings: &RedisSettings) -> SpiResult<Self> {
        let (tx, rx) = unbounded_channel();
        let conn = Conn::connect(settings, Some(tx)).await?;
        let routes = Arc::new(Routes::default());
        let shared = Arc::new(Shared {
            conn,
            limit: settings.options.operation_timeout,
            routes: routes.clone(),
            ops: AsyncMutex::new(()),
        });
        let target = describe(settings);
        let lost = Arc::new(Notify::new());
        let dispatcher = tokio::spawn(dispatch(rx, routes, lost.clone(), target.clone()));
        let recovery = tokio::spawn(recover(Arc::downgrade(&shared), lost, target.clone()));
        Ok(Self {
            shared,
            capacity: settings.options.queue_capacity,
            next_id: AtomicU64::new(1),
            target,
            tasks: vec![dispatcher, recovery],
        })
    }
}

/// Reads the connection's pushes in order: routes messages, reports disconnects.
async fn dispatch(
    mut rx: UnboundedReceiver<PushInfo>,
    routes: Arc<Routes>,
    lost: Arc<Notify>,
    target: String,
) {
    while let Some(push) = rx.recv().await {
        match push.kind {
            PushKind::Message | PushKind::SMessage => {
                let Some(msg) = Msg::from_push_info(push) else {
                    tracing::warn!(%target, "redis backend: malformed pub/sub message push ignored");
                    continue;
                };
                let channel = msg.get_channel_name();
                match std::str::from_utf8(msg.get_payload_bytes()) {
                    Ok(message) => routes.deliver(channel, message),
                    Err(_) => {
                        // MPush messages are strings; keep the message, but say it was mangled.
                        tracing::warn!(%target, %channel, "redis backend: non-UTF-8 message, delivered lossily");
                        let lossy = String::from_utf8_lossy(msg.get_payload_bytes());
                        routes.deliver(channel, &lossy);
                    }
                }
            }
            PushKind::Disconnection => {
                tracing::warn!(
                    %target,
                    "redis backend: pub/sub connection lost; reconnecting, subscriptions will be \
                     restored (messages published meanwhile are missed)"
                );
                lost.notify_one();
            }
            kind => tracing::debug!(%target, ?kind, data = ?push.data, "redis backend: push"),
        }
    }
}

/// After each reported disconnect, re-subscribes until it succeeds (capped backoff).
async fn recover(shared: Weak<Shared>, lost: Arc<Notify>, target: String) {
    loop {
        lost.notified().await;
        let mut delay = RECOVERY_MIN_DELAY;
        let mut attempt: u32 = 0;
        loop {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            attempt += 1;
            match shared.resubscribe().await {
                Ok(channels) => {
                    tracing::warn!(
                        %target,
                        channels,
                        attempt,
                        "redis backend: pub/sub reconnected, subscriptions restored"
                    );
                    break;
                }
                Err(e) => {
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        tracing::warn!(
                            %target,
                            attempt,
                            error = %e,
                            "redis backend: pub/sub still disconnected, retrying"
                        );
                    }
                }
            }
            drop(shared);
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECOVERY_MAX_DELAY);
        }
    }
}

impl fmt::Debug for RedisMQ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let listeners = self.shared.routes.lock().channel_of.len();
        f.debug_struct("RedisMQ")
            .field("target", &self.target)
            .field("listeners", &listeners)
            .finish()
    }
}

#[async_trait]
impl MQClient for RedisMQ {
    async fn subscribe(
        &self,
        channel: &str,
        listener: Arc<dyn MQMessageListener>,
    ) -> SpiResult<SubscriptionId> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = &self.shared;
        let _ops = shared.ops.lock().await;
        let name: Arc<str> = Arc::from(channel);
        let outlet = delivery::open(
            crate::BACKEND,
            id,
            self.capacity,
            channel,
            move |m: Arc<str>| listener.on_message(&name, &m),
        )?;
        // Route first, so the first message after Redis' confirmation already finds it.
        if shared.routes.add(channel, outlet) {
            if let Err(e) = shared.conn.subscribe(channel, shared.limit).await {
                if let Some((state, emptied)) = shared.routes.remove(id) {
                    state.close_now();
                    // Redis may have subscribed before the failure surfaced.
                    if let Some(channel) = emptied {
                        shared.routes.mark_stale(channel);
                    }
                }
                return Err(e);
            }
            shared.routes.clear_stale(channel);
        }
        Ok(SubscriptionId(id))
    }

    async fn unsubscribe(&self, id: SubscriptionId) -> SpiResult<()> {
        let shared = &self.shared;
        let ops = shared.ops.lock().await;
        let Some((state, emptied)) = shared.routes.remove(id.0) else {
            return Ok(());
        };
        // Stop deliveries now; the wait for a call in progress comes after the network call.
        state.close_now();
        if let Some(channel) = emptied {
            if let Err(e) = shared.conn.unsubscribe(&channel, shared.limit).await {
                // The listener is detached either way; recovery unsubscribes Redis later and
                // messages arriving meanwhile are ignored.
                tracing::warn!(
                    target = %self.target,
                    %channel,
                    error = %e,
                    "redis backend: UNSUBSCRIBE failed; will retry after reconnect"
                );
                shared.routes.mark_stale(channel);
            }
        }
        drop(ops);
        state.close().await;
        Ok(())
    }

    async fn publish(&self, channel: &str, message: &str) -> SpiResult<()> {
        self.shared
            .conn
            .query::<()>(
                cmd("PUBLISH").arg(channel).arg(message),
                self.shared.limit,
                "PUBLISH",
            )
            .await
    }
}

impl Drop for RedisMQ {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.shared.routes.close_all();
    }
}
