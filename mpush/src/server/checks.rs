//! The heartbeat checks of every TCP connection of a server, on one timer run by one task.
//!
//! Each connection used to hold its own tokio `Sleep` (112 bytes) and its check state
//! (64 bytes) in its task future, which every idle connection keeps for its lifetime; the
//! future crossed a 128-byte step of tokio's task cell because of them. Here the check state
//! of a connection is one [`Entry`] in a map ordered by due time, and one task per server
//! runs the checks that are due: MPush's grid, lazily ([`CheckGrid`]): a check that cannot
//! find a miss is slept through, and a check that finds the connection alive plans the next
//! one without waking the connection's task. Only a timeout touches the connection (it is
//! closed, and its task sees the close).
//!
//! Bounds: one live entry per connection, plus at most one stale entry: the first
//! negotiated heartbeat (handshake or fast connect) restarts the grid, and the pre-handshake
//! entry is dropped when it comes due, at most `PRE_HANDSHAKE_CHECK` (10 s) after the connect;
//! later renegotiations do not restart it (the next check takes the new interval up). An
//! entry whose connection is gone is dropped when it comes due, at most two check intervals
//! after the close (a connection that heartbeats on time is planned up to two ahead), so
//! after a reconnect storm the old connections' entries (≈ 60 B each) linger that long.
//!
//! A check runs whether or not the connection task is busy: a task held in a handler (an
//! RSA queue, a slow bind validator) does not read, and a client whose heartbeats stay
//! unread that long is closed, as MPush's independent timer does. The task sees the close
//! when the handler returns.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::connection::Connection;
use super::context::ServerContext;
use crate::protocol::session::{CheckGrid, CheckPlan, PRE_HANDSHAKE_CHECK};

/// Due times are rounded up to a grain of an eighth of the check interval, between these
/// bounds, so the checks of connections due close together run in one pass of the task:
/// with 10 s or longer heartbeats the task wakes at most once a second. Measured: rounded
/// to 10 ms it woke ≈ 100 times a second at 19,900 connections with a 10 s heartbeat, a
/// context switch each, and a heartbeat cost 2–5 µs more of server CPU
/// (docs/PERFORMANCE.md). A check runs at most one grain late, never early.
const MIN_GRAIN_MS: i64 = 10;
const MAX_GRAIN_MS: i64 = 1000;

/// Checks run between yields of the check task, so a pass over many connections that came
/// due together (a connect storm's grid) does not hold a worker.
const YIELD_EVERY: usize = 1024;

/// The check state of one connection: 56 bytes (every connection has one, so its fields
/// are milliseconds, not `Duration`s; the rounding grain is computed from the interval).
#[derive(Debug)]
struct Entry {
    seq: u64,
    /// The grid's origin on the server clock (`ServerContext::now_ms`).
    origin_ms: i64,
    /// The wakeup the grid planned, in milliseconds from the origin.
    deadline_ms: u64,
    /// The connection's check generation when this entry was made: a restarted grid makes
    /// older entries stale (see [`Connection::restart_checks`]).
    generation: u32,
    grid: CheckGrid,
}

impl Entry {
    fn due_ms(&self) -> i64 {
        let offset = i64::try_from(self.deadline_ms).unwrap_or(i64::MAX / 2);
        self.origin_ms.saturating_add(offset)
    }

    /// The planned wakeup as the grid takes it.
    fn deadline(&self) -> Duration {
        Duration::from_millis(self.deadline_ms)
    }

    /// What the due time is rounded up to: [`grain_of`] the interval in force.
    fn grain_ms(&self) -> i64 {
        grain_of(self.grid.every())
    }
}

#[derive(Debug, Default)]
struct Inner {
    /// Entries by due tick (due time rounded up to the entry's grain).
    due: BTreeMap<i64, Vec<Entry>>,
    /// The tick the check task sleeps until (`i64::MAX` when it waits for an entry).
    wake_at: i64,
}

/// The server's heartbeat checks (see the module doc).
#[derive(Debug)]
pub(crate) struct CheckWheel {
    inner: Mutex<Inner>,
    /// Wakes the check task for an entry due before the tick it sleeps until.
    earlier: Notify,
    max_misses: u32,
}

impl CheckWheel {
    /// An empty wheel; a connection closes after more than `max_misses` missed checks.
    pub(crate) fn new(max_misses: u32) -> Self {
        Self {
            inner: Mutex::new(Inner {
                due: BTreeMap::new(),
                wake_at: i64::MAX,
            }),
            earlier: Notify::new(),
            max_misses,
        }
    }

    /// Starts (or restarts, after a handshake negotiated its heartbeat) the grid of `conn`
    /// at `now_ms`, checked every `every`.
    pub(crate) fn start(&self, conn: &Connection, now_ms: i64, every: Duration) {
        self.insert(std::iter::once(Entry {
            seq: conn.seq(),
            generation: conn.restart_checks(),
            origin_ms: now_ms,
            deadline_ms: whole_ms(every),
            grid: CheckGrid::new(self.max_misses, every),
        }));
    }

    /// After a handshake or fast connect answered with heartbeat `every`: the first
    /// negotiated heartbeat restarts the grid, so the pre-handshake interval is not waited
    /// out; a later one is taken up by the next check (`CheckGrid::plan`), so a client
    /// renegotiating over and over leaves no trail of stale entries.
    pub(crate) fn negotiated(&self, conn: &Connection, now_ms: i64, every: Duration) {
        if conn.checks_generation() <= 1 && every != PRE_HANDSHAKE_CHECK {
            self.start(conn, now_ms, every);
        }
    }

    /// Number of entries held (live and stale), for tests.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().due.values().map(Vec::len).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The map stays consistent whatever panicked while holding it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, entries: impl IntoIterator<Item = Entry>) {
        let mut inner = self.lock();
        let mut earliest = i64::MAX;
        for e in entries {
            let tick = tick_of(e.due_ms(), e.grain_ms());
            earliest = earliest.min(tick);
            let bucket = inner.due.entry(tick).or_default();
            if bucket.len() == bucket.capacity() {
                // Grown by an eighth, not doubled: a bucket holds the checks of thousands of
                // connections, and doubling leaves ≈ 40 % of it unused on average (heaptrack:
                // 125 B per 88-byte entry). Reallocating a large bucket is a `mremap`.
                bucket.reserve_exact((bucket.len() / 8).max(8));
            }
            bucket.push(e);
        }
        if earliest < inner.wake_at {
            inner.wake_at = earliest;
            drop(inner);
            self.earlier.notify_one();
        }
    }

    /// Moves every entry due at `now_ms` into `out`; returns the tick of the next one.
    fn take_due(&self, now_ms: i64, out: &mut Vec<Entry>) -> i64 {
        let mut inner = self.lock();
        while let Some(first) = inner.due.first_entry() {
            if *first.key() > now_ms {
                break;
            }
            out.append(&mut first.remove());
        }
        let next = inner.due.keys().next().copied().unwrap_or(i64::MAX);
        inner.wake_at = next;
        next
    }
}

/// The rounding grain of checks every `every` (see [`MIN_GRAIN_MS`]).
fn grain_of(every: Duration) -> i64 {
    let ms = i64::try_from(every.as_millis()).unwrap_or(i64::MAX);
    (ms / 8).clamp(MIN_GRAIN_MS, MAX_GRAIN_MS)
}

/// A planned wakeup as an entry stores it: whole milliseconds from the origin (the grid
/// plans in whole milliseconds).
fn whole_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Rounds a due time up to a multiple of `grain_ms` (never before it is due).
fn tick_of(due_ms: i64, grain_ms: i64) -> i64 {
    due_ms.saturating_add(grain_ms - 1).div_euclid(grain_ms) * grain_ms
}

/// What one due check concluded.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    /// Plan the entry again (it holds its new deadline).
    Again,
    /// The connection timed out and was closed, or is gone: drop the entry.
    Done,
}

/// Runs the check of one due entry against its connection.
fn check(ctx: &ServerContext, e: &mut Entry, now_ms: i64) -> Outcome {
    let Some(conn) = ctx.connections.get(&e.seq).map(|c| c.value().clone()) else {
        return Outcome::Done;
    };
    if conn.checks_generation() != e.generation || conn.is_closed() {
        return Outcome::Done;
    }
    let since =
        |ms: i64| Duration::from_millis(ms.saturating_sub(e.origin_ms).max(0).unsigned_abs());
    let hb = ctx.heartbeat_check_interval(&conn);
    let plan = e.grid.plan(
        since(now_ms),
        e.deadline(),
        since(conn.last_read_ms()),
        hb,
        conn.holds_buffer(),
    );
    match plan {
        CheckPlan::TimedOut(misses) => {
            tracing::debug!(conn = %conn.id(), peer = %conn.peer_addr(), misses, "heartbeat timeout");
            conn.close();
            Outcome::Done
        }
        CheckPlan::Wait { until, checked } => {
            if checked {
                conn.release_idle_buffer();
            }
            // Never in the past: a grid behind the clock (a stalled task) catches up one
            // check per pass instead of spinning.
            let until = until.max(since(now_ms) + Duration::from_millis(1));
            e.deadline_ms = whole_ms(until);
            Outcome::Again
        }
    }
}

/// The check task of a server: runs the due checks until the server stops.
pub(crate) async fn run(ctx: Arc<ServerContext>) {
    let mut due = Vec::new();
    let mut again = Vec::new();
    loop {
        let now = ctx.now_ms();
        let next = ctx.checks.take_due(now, &mut due);
        for (i, mut e) in due.drain(..).enumerate() {
            if check(&ctx, &mut e, now) == Outcome::Again {
                again.push(e);
            }
            if i % YIELD_EVERY == YIELD_EVERY - 1 {
                tokio::task::yield_now().await;
            }
        }
        if !again.is_empty() {
            ctx.checks.insert(again.drain(..));
            continue;
        }
        if due.capacity() > 4 * YIELD_EVERY {
            // A storm's batch is not kept for the quiet hours after it.
            due = Vec::new();
            again = Vec::new();
        }
        let wait = async {
            if next == i64::MAX {
                std::future::pending::<()>().await;
            }
            let ms = next.saturating_sub(ctx.now_ms()).max(0).unsigned_abs();
            tokio::time::sleep(Duration::from_millis(ms)).await;
        };
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            () = ctx.checks.earlier.notified() => {}
            () = wait => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::connection::ConnId;

    fn conn(seq: u64) -> Connection {
        let peer = "127.0.0.1:9".parse().expect("addr");
        Connection::new(seq, ConnId::from_u32(1), peer, 1024, 4096)
    }

    #[test]
    fn due_times_round_up_to_their_grain() {
        assert_eq!(tick_of(0, 10), 0);
        assert_eq!(tick_of(1, 10), 10);
        assert_eq!(tick_of(10, 10), 10);
        assert_eq!(tick_of(11, 10), 20);
        assert_eq!(tick_of(10_001, 1000), 11_000);
        assert_eq!(grain_of(Duration::from_millis(200)), 25);
        assert_eq!(grain_of(Duration::from_millis(40)), MIN_GRAIN_MS);
        assert_eq!(grain_of(Duration::from_secs(10)), MAX_GRAIN_MS);
        assert_eq!(grain_of(Duration::from_secs(180)), MAX_GRAIN_MS);
    }

    /// Every connection holds one entry: it stays at 56 bytes (88 with `Duration` fields).
    #[test]
    fn an_entry_stays_small() {
        assert!(
            std::mem::size_of::<Entry>() <= 56,
            "{}",
            std::mem::size_of::<Entry>()
        );
    }

    /// Entries come out in due order, only once due, and the wheel reports the next tick.
    #[test]
    fn entries_come_out_when_due() {
        let w = CheckWheel::new(2);
        let (a, b) = (conn(1), conn(2));
        // Grains 20 and 10 ms: due at 160 and 80 exactly.
        w.start(&a, 0, Duration::from_millis(160));
        w.start(&b, 0, Duration::from_millis(80));
        let mut out = Vec::new();
        assert_eq!(w.take_due(79, &mut out), 80);
        assert!(out.is_empty());
        assert_eq!(w.take_due(80, &mut out), 160);
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [2]);
        assert_eq!(w.take_due(1000, &mut out), i64::MAX);
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [2, 1]);
        assert_eq!(w.len(), 0);
    }

    /// A restarted grid (a handshake) makes the older entry stale: only the new one counts.
    #[test]
    fn a_restart_makes_the_older_entry_stale() {
        let w = CheckWheel::new(2);
        let c = conn(1);
        w.start(&c, 0, Duration::from_secs(10));
        let first = c.checks_generation();
        w.start(&c, 5, Duration::from_millis(200));
        assert_ne!(c.checks_generation(), first);
        let mut out = Vec::new();
        w.take_due(i64::MAX / 4, &mut out);
        let live: Vec<_> = out
            .iter()
            .filter(|e| e.generation == c.checks_generation())
            .map(Entry::due_ms)
            .collect();
        assert_eq!(live, [205], "the restarted grid's first check");
        assert_eq!(out.len(), 2);
    }

    /// Only the first negotiated heartbeat that differs from the pre-handshake interval
    /// restarts the grid: renegotiating again adds no entry.
    #[test]
    fn only_the_first_negotiation_restarts_the_grid() {
        let w = CheckWheel::new(2);
        let c = conn(1);
        w.start(&c, 0, PRE_HANDSHAKE_CHECK);
        w.negotiated(&c, 5, PRE_HANDSHAKE_CHECK);
        assert_eq!(w.len(), 1, "the same interval: nothing to restart");
        w.negotiated(&c, 5, Duration::from_millis(200));
        assert_eq!(w.len(), 2, "restarted (the old entry is stale)");
        w.negotiated(&c, 9, Duration::from_secs(180));
        w.negotiated(&c, 9, Duration::from_millis(200));
        assert_eq!(w.len(), 2, "later negotiations add nothing");
    }

    /// An entry due before the tick the task sleeps until wakes it; a later one does not.
    #[test]
    fn an_earlier_entry_wakes_the_task() {
        use futures::FutureExt as _;
        let w = CheckWheel::new(2);
        let mut out = Vec::new();
        assert_eq!(w.take_due(0, &mut out), i64::MAX);
        w.start(&conn(1), 0, Duration::from_millis(500));
        assert!(w.earlier.notified().now_or_never().is_some(), "woken");
        w.start(&conn(2), 0, Duration::from_millis(900));
        assert!(
            w.earlier.notified().now_or_never().is_none(),
            "not due before the first"
        );
        w.start(&conn(3), 0, Duration::from_millis(100));
        assert!(w.earlier.notified().now_or_never().is_some(), "woken again");
    }
}
