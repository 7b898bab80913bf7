//! Key-change watches for [`crate::RedisCache`]: Redis client-side-caching invalidations
//! (`CLIENT TRACKING ON BCAST PREFIX <p>`, Redis ≥ 6) on a RESP3 connection of their own.
//!
//! # How it works
//! In broadcast mode Redis sends the connection an `invalidate` push with the names of the
//! keys under the prefix that any client changed, before it answers the writer (the
//! invalidations go out first in Redis' event loop). A dispatcher task reads those pushes
//! in order and reports each key; a `FLUSHALL`/`FLUSHDB` arrives as a null invalidation
//! and is reported as a lost and renewed watch, since every key changed.
//!
//! Tracking belongs to one connection: when it drops, the library reports a disconnect push,
//! the watch reports [`KeyWatch::lost`], and a recovery task turns tracking on again (which
//! reconnects) with a capped backoff, reporting [`KeyWatch::watching`] only if no other
//! disconnect came meanwhile. A watch on a connection that is silently gone (no RST) is
//! noticed by TCP keepalive; the server meanwhile acts on what it verified, as it would
//! with an unreachable Redis. Redis Cluster is not watched (tracking is per node and would
//! have to follow slot moves): [`crate::RedisCache::watch_prefix`] answers `None` there.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mpush::spi::{KeyWatch, SpiResult};
use redis::{PushInfo, PushKind, Value, cmd};
use tokio::sync::Notify;
use tokio::sync::mpsc::{UnboundedReceiver, unbounded_channel};
use tokio::task::JoinHandle;

use crate::conn::Conn;
use crate::settings::RedisSettings;

/// First pause between two attempts to turn tracking on again.
const RECOVERY_MIN_DELAY: Duration = Duration::from_millis(250);
/// Longest pause between two attempts.
const RECOVERY_MAX_DELAY: Duration = Duration::from_secs(5);

/// One running watch: its connection lives in its tasks; dropping it ends both (and closes
/// the connection, which ends the tracking on Redis).
pub(crate) struct Watcher {
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Watcher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// State shared by the dispatcher and the recovery task.
struct Shared {
    conn: Conn,
    prefix: String,
    limit: Duration,
    target: String,
    watch: Arc<dyn KeyWatch>,
    /// Disconnects seen so far: a recovery that saw one come in while it was turning
    /// tracking on must not report the watch as in place.
    disconnects: AtomicU64,
    lost: Notify,
}

impl Shared {
    /// Turns tracking of the prefix on for the connection (reconnecting it if needed).
    async fn track(&self) -> SpiResult<()> {
        let mut c = cmd("CLIENT");
        c.arg("TRACKING")
            .arg("ON")
            .arg("BCAST")
            .arg("PREFIX")
            .arg(&self.prefix);
        match self
            .conn
            .query::<()>(&c, self.limit, "CLIENT TRACKING")
            .await
        {
            // The connection never dropped (a disconnect notice for an earlier one): its
            // tracking is still on.
            Err(e) if e.to_string().contains("overlaps with an existing prefix") => Ok(()),
            other => other,
        }
    }
}

/// Opens a tracking connection for `prefix` and reports to `watch`; fails (within the
/// operation timeout) when Redis cannot be reached or refuses tracking.
pub(crate) async fn start(
    settings: &RedisSettings,
    prefix: &str,
    watch: Arc<dyn KeyWatch>,
    target: String,
) -> SpiResult<Watcher> {
    let (tx, rx) = unbounded_channel();
    let conn = Conn::connect(settings, Some(tx)).await?;
    let shared = Arc::new(Shared {
        conn,
        prefix: prefix.to_string(),
        limit: settings.options.operation_timeout,
        target,
        watch,
        disconnects: AtomicU64::new(0),
        lost: Notify::new(),
    });
    shared.track().await?;
    shared.watch.watching();
    let dispatcher = tokio::spawn(dispatch(rx, shared.clone()));
    let recovery = tokio::spawn(recover(shared));
    Ok(Watcher {
        tasks: [dispatcher, recovery],
    })
}

/// Reads the connection's pushes in order. The library needs a sink that never blocks, so
/// the channel is unbounded; it carries one push per batch of route changes and this task
/// only flips atomics per key, so it does not fall behind.
async fn dispatch(mut rx: UnboundedReceiver<PushInfo>, shared: Arc<Shared>) {
    while let Some(push) = rx.recv().await {
        match push.kind {
            PushKind::Invalidate => match push.data.first() {
                Some(Value::Array(keys)) => {
                    for key in keys {
                        match key {
                            Value::BulkString(b) => match std::str::from_utf8(b) {
                                Ok(key) => shared.watch.changed(key),
                                Err(_) => {
                                    // Not one of ours (server keys are UTF-8); nothing to void.
                                    tracing::debug!(target = %shared.target, "redis backend: non-UTF-8 key invalidated");
                                }
                            },
                            other => {
                                tracing::warn!(target = %shared.target, ?other, "redis backend: unexpected invalidation entry; treating the watch as renewed");
                                renew(&shared);
                            }
                        }
                    }
                }
                // FLUSHALL / FLUSHDB: every key changed.
                _ => renew(&shared),
            },
            PushKind::Disconnection => {
                tracing::warn!(target = %shared.target, "redis backend: key-watch connection lost; reconnecting");
                shared.disconnects.fetch_add(1, Ordering::AcqRel);
                shared.watch.lost();
                shared.lost.notify_one();
            }
            kind => {
                tracing::debug!(target = %shared.target, ?kind, "redis backend: push on the key-watch connection")
            }
        }
    }
}

/// Everything may have changed: a new epoch for the watcher.
fn renew(shared: &Shared) {
    shared.watch.lost();
    shared.watch.watching();
}

/// After each disconnect, turns tracking on again until it succeeds (capped backoff).
async fn recover(shared: Arc<Shared>) {
    loop {
        shared.lost.notified().await;
        let mut delay = RECOVERY_MIN_DELAY;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let seen = shared.disconnects.load(Ordering::Acquire);
            match shared.track().await {
                Ok(()) if shared.disconnects.load(Ordering::Acquire) == seen => {
                    shared.watch.watching();
                    tracing::warn!(target = %shared.target, attempt, "redis backend: key watch restored");
                    break;
                }
                // Another disconnect came meanwhile: its notice is pending, go round again.
                Ok(()) => break,
                Err(e) => {
                    if attempt == 1 || attempt.is_multiple_of(10) {
                        tracing::warn!(target = %shared.target, attempt, error = %e, "redis backend: key watch still down, retrying");
                    }
                }
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(RECOVERY_MAX_DELAY);
        }
    }
}
