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
//! the watch reports [`KeyWatch::lost`], and a keeper task turns tracking on again (which
//! reconnects) with a capped backoff, reporting [`KeyWatch::watching`] only if no other
//! loss came meanwhile (both under one lock, so a loss cannot slip between the check and
//! the report). The connection otherwise only receives, so a silently dead one (no RST, a
//! middlebox that dropped it) would go unnoticed: the keeper sends `PING` every
//! [`HEALTH_INTERVAL`], and one unanswered within the interval is a loss too (the replies
//! and pushes of one connection arrive in order, so an answered `PING` also means every
//! invalidation sent before it has arrived). Redis Cluster is not watched (tracking is per
//! node and would have to follow slot moves): [`crate::RedisCache::watch_prefix`] answers
//! `None` there.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use mpush::spi::{KeyWatch, SpiError, SpiResult};
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
/// How often the keeper checks that the connection still answers, and how long it waits.
const HEALTH_INTERVAL: Duration = Duration::from_secs(2);

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
    /// Losses so far, and whether the watch is reported in place. `lost`/`watching` are
    /// called under this lock, so a loss cannot come between the keeper's check and its
    /// report.
    state: Mutex<Health>,
    lost: Notify,
}

#[derive(Debug, Default)]
struct Health {
    losses: u64,
    watching: bool,
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
            Err(e) if says_already_tracking(&e) => Ok(()),
            other => other,
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notices may be missed from now on.
    fn lose(&self) {
        let mut h = self.health();
        h.losses += 1;
        if std::mem::take(&mut h.watching) {
            self.watch.lost();
        }
        drop(h);
        self.lost.notify_one();
    }

    /// The losses so far (to pass to [`Self::restore`]).
    fn losses(&self) -> u64 {
        self.health().losses
    }

    /// Reports the watch in place if no loss came since `seen`; `false` if one did.
    fn restore(&self, seen: u64) -> bool {
        let mut h = self.health();
        if h.losses != seen {
            return false;
        }
        h.watching = true;
        self.watch.watching();
        true
    }
}

/// `true` for Redis' refusal of a prefix the connection already tracks (the error's text is
/// in its source: [`mpush::spi::SpiError`] names only the command).
fn says_already_tracking(e: &SpiError) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.to_string().contains("overlaps with an existing prefix") {
            return true;
        }
        cause = c.source();
    }
    false
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
        state: Mutex::new(Health::default()),
        lost: Notify::new(),
    });
    let seen = shared.losses();
    shared.track().await?;
    let dispatcher = tokio::spawn(dispatch(rx, shared.clone()));
    if !shared.restore(seen) {
        // Lost already (its notice is queued): the keeper takes over from here.
        shared.lost.notify_one();
    }
    let keeper = tokio::spawn(keep(shared));
    Ok(Watcher {
        tasks: [dispatcher, keeper],
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
                shared.lose();
            }
            kind => {
                tracing::debug!(target = %shared.target, ?kind, "redis backend: push on the key-watch connection")
            }
        }
    }
}

/// Everything may have changed (a flush): a new epoch for the watcher.
fn renew(shared: &Shared) {
    let h = shared.health();
    if h.watching {
        shared.watch.lost();
        shared.watch.watching();
    }
}

/// Checks the connection every [`HEALTH_INTERVAL`]; after a loss, turns tracking on again
/// until it succeeds (capped backoff).
async fn keep(shared: Arc<Shared>) {
    loop {
        tokio::select! {
            () = shared.lost.notified() => {}
            () = tokio::time::sleep(HEALTH_INTERVAL) => {
                let answered = shared
                    .conn
                    .query::<()>(&cmd("PING"), HEALTH_INTERVAL, "PING")
                    .await;
                match answered {
                    Ok(()) => continue,
                    Err(e) => {
                        tracing::warn!(target = %shared.target, error = %e, "redis backend: key-watch connection does not answer; treating the watch as lost");
                        shared.lose();
                    }
                }
            }
        }
        let mut delay = RECOVERY_MIN_DELAY;
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let seen = shared.losses();
            match shared.track().await {
                Ok(()) if shared.restore(seen) => {
                    tracing::warn!(target = %shared.target, attempt, "redis backend: key watch restored");
                    break;
                }
                // Another loss came meanwhile: go round again at once.
                Ok(()) => continue,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_already_tracking_refusal_is_found_in_the_error_chain() {
        let redis = redis::RedisError::from((
            redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError),
            "Prefix 'mp:ur:' overlaps with an existing prefix 'mp:ur:'. Prefixes for a single client must not overlap.",
        ));
        let e = crate::conn::map_err("CLIENT TRACKING", redis);
        assert!(
            !e.to_string().contains("overlaps"),
            "the top-level text no longer hides the cause: simplify says_already_tracking"
        );
        assert!(says_already_tracking(&e));
        assert!(!says_already_tracking(&SpiError::backend(
            crate::BACKEND,
            "ERR unknown command"
        )));
    }
}
