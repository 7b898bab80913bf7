//! Idle TCP connections parked off tokio's reactor: one epoll set per server answers their
//! heartbeats, a batch at a time.
//!
//! An idle connection otherwise holds a tokio task cell (256 B) and a reactor registration
//! (256 B), and every heartbeat wakes a worker for that one task: with heartbeats that arrive
//! one at a time that wakeup is most of a heartbeat's cost (docs/PERFORMANCE.md). A parked
//! connection holds one [`Entry`] here instead, and the parker takes the readiness of every
//! parked socket at most once per `mp.net.connect-server-park-poll`, answering the
//! heartbeats it finds in one pass.
//!
//! Who owns the socket:
//! - A connection task parks its connection when it read nothing but heartbeats and has had
//!   no other packet for `mp.net.connect-server-park-idle` (`connection::try_park`): it
//!   registers [`Parker::waker`] as the connection's waker, stops direct writes, leaves
//!   tokio's reactor and hands the socket over ([`Parker::submit`]). Its task ends; the
//!   connection stays in the server's table, its routes and its heartbeat checks unchanged.
//! - While parked, whoever sends a frame writes it straight to the socket under the
//!   connection's out lock, as with a task (`Connection::enqueue`). Pushes do not wait.
//! - A wakeup of a parked connection (a queued frame: a broadcast's delivery, or a frame the
//!   socket did not take whole) is answered by the parker writing the queue out; the
//!   connection stays parked if the socket took it all.
//! - The parker gives the connection a task again (`connection::resumed`) when a byte other
//!   than a heartbeat arrives (with the bytes read, which the task handles first), on EOF or a
//!   socket error (also when the event that reports them carried heartbeats), and for a
//!   wakeup it cannot answer: output the socket does not take, a close (a heartbeat timeout
//!   on the check wheel, the client not reading, the shutdown).
//!
//! Bounds: one entry per parked connection (the table shrinks after a mass unpark); the
//! request queue holds at most one park and one wakeup per connection and parking (a wakeup
//! is armed again only once answered), and a pass takes at most `REQUESTS_PER_PASS` of them
//! before the worker runs other tasks; a readiness event reads at most 1 KiB (a full read
//! hands the connection back, a busy client is no parked one); a poll takes at most
//! `MAX_ROUNDS` × `EVENTS` events before the next sleep. If the parker task ends in any way,
//! dropping its state stops parking and hands every connection back.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Wake, Waker};
use std::time::Duration;

use bytes::BytesMut;
use tokio::runtime::Handle;
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio_util::task::TaskTracker;

use super::connection::{self, Connection, TryWrite};
use super::context::ServerContext;
use crate::protocol::packet::HEARTBEAT_BYTE;

/// Readiness events taken from the epoll set per call.
const EVENTS: usize = 1024;

/// Calls per pass: past `EVENTS` × `MAX_ROUNDS` ready sockets the rest wait for the next pass
/// (they stay ready in the set), so one pass does not hold a worker.
const MAX_ROUNDS: usize = 16;

/// The most a parked connection's read takes: heartbeats are one byte each.
const READ_MAX: usize = 1024;

/// Parks and wakeups taken from the queue per pass; the rest wait for the next pass, after
/// the parker has let the worker run other tasks (a broadcast wakes every parked connection).
const REQUESTS_PER_PASS: usize = 4096;

/// The parking of one server: its settings and the queue the connection tasks and wakers
/// talk to the parker task through.
#[derive(Debug)]
pub(crate) struct Parker {
    /// `connect-server-park-idle` in ms; 0 = never park.
    idle_ms: i64,
    /// `connect-server-park-poll`.
    poll_every: Duration,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    queue: Mutex<Queue>,
    notify: Notify,
    /// Set while the parker task runs: connections park only then.
    running: AtomicBool,
    /// Connections parked now.
    parked: AtomicUsize,
    /// Where resumed connection tasks are spawned (set when the parker task starts).
    spawn: OnceLock<(Handle, TaskTracker)>,
}

#[derive(Debug, Default)]
struct Queue {
    parks: Vec<Parked>,
    wakes: Vec<u64>,
}

/// A connection handed to the parker by its task.
#[derive(Debug)]
pub(crate) struct Parked {
    pub(crate) conn: Arc<Connection>,
    pub(crate) stream: std::net::TcpStream,
    pub(crate) slot: Option<OwnedSemaphorePermit>,
}

/// A parked connection.
#[derive(Debug)]
struct Entry {
    conn: Arc<Connection>,
    /// Shared with the connection's direct writer (`Connection::attach`).
    sock: Arc<ParkedSocket>,
    slot: Option<OwnedSemaphorePermit>,
}

/// A parked socket, as the connection's direct writer sees it.
#[derive(Debug)]
struct ParkedSocket(mio::net::TcpStream);

impl TryWrite for ParkedSocket {
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
        use std::io::Write as _;
        (&self.0).write(buf)
    }
}

/// The waker a parked connection is woken through: asks the parker to give it a task.
#[derive(Debug)]
struct WakeParked {
    seq: u64,
    shared: Arc<Shared>,
}

impl Wake for WakeParked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // A stopped parker has handed every connection back already; a wakeup for a
        // connection that is not parked (any more, or not yet) finds no entry and is dropped.
        if self.shared.running.load(Ordering::Acquire) {
            lock(&self.shared.queue).wakes.push(self.seq);
            self.shared.notify.notify_one();
        }
    }
}

fn lock(q: &Mutex<Queue>) -> std::sync::MutexGuard<'_, Queue> {
    q.lock().unwrap_or_else(|e| e.into_inner())
}

impl Parker {
    /// The parking of a server with `net`'s settings (off with a zero idle time).
    pub(crate) fn new(net: &crate::config::NetConfig) -> Self {
        Self {
            idle_ms: i64::try_from(net.connect_server_park_idle.as_millis()).unwrap_or(i64::MAX),
            poll_every: net.connect_server_park_poll,
            shared: Arc::default(),
        }
    }

    /// Whether `conn`, which just read only heartbeats at `now_ms`, has been quiet long enough
    /// to park (its last other packet `idle` ago) and the parker runs.
    pub(crate) fn may_park(&self, conn: &Connection, now_ms: i64) -> bool {
        self.idle_ms > 0
            && now_ms.saturating_sub(conn.last_packet_ms()) >= self.idle_ms
            && self.shared.running.load(Ordering::Acquire)
    }

    /// How many connections are parked now.
    pub(crate) fn parked(&self) -> usize {
        self.shared.parked.load(Ordering::Relaxed)
    }

    /// The waker of connection `seq` while it is parked.
    pub(crate) fn waker(&self, seq: u64) -> Waker {
        Waker::from(Arc::new(WakeParked {
            seq,
            shared: self.shared.clone(),
        }))
    }

    /// Hands a connection to the parker; given back if the parker has stopped.
    pub(crate) fn submit(&self, parked: Parked) -> Result<(), Parked> {
        let mut q = lock(&self.shared.queue);
        // Checked under the queue's lock: the parker clears it under the same lock before it
        // takes the last requests, so nothing is queued after it stopped looking.
        if !self.shared.running.load(Ordering::Acquire) {
            return Err(parked);
        }
        q.parks.push(parked);
        drop(q);
        self.shared.notify.notify_one();
        Ok(())
    }

    /// Gives `parked` a connection task again, `rest` (bytes read past its heartbeats) first.
    /// A socket that cannot be registered with tokio again loses its connection, cleaned up
    /// as any closed one.
    pub(crate) fn resume(&self, ctx: &Arc<ServerContext>, parked: Parked, rest: BytesMut) {
        let Some((io, tasks)) = self.shared.spawn.get() else {
            // Never parked without a running parker, which sets this first.
            tracing::error!(conn = %parked.conn.id(), "no parker runtime, connection lost");
            if let Ok(rt) = Handle::try_current() {
                rt.spawn(connection::abandon(ctx.clone(), parked.conn, parked.slot));
            } else {
                parked.conn.close();
            }
            return;
        };
        let Parked { conn, stream, slot } = parked;
        let stream = {
            let _rt = io.enter();
            tokio::net::TcpStream::from_std(stream)
        };
        match stream {
            Ok(stream) if rest.is_empty() => {
                io.spawn(tasks.track_future(connection::resumed(ctx.clone(), conn, stream, slot)));
            }
            Ok(stream) => {
                io.spawn(tasks.track_future(connection::resumed_with(
                    ctx.clone(),
                    conn,
                    stream,
                    slot,
                    rest,
                )));
            }
            Err(e) => {
                tracing::warn!(conn = %conn.id(), error = %e, "cannot resume a parked connection");
                io.spawn(tasks.track_future(connection::abandon(ctx.clone(), conn, slot)));
            }
        }
    }
}

/// The parker task of a server: runs until the server stops, then hands every parked
/// connection back (the shutdown has closed them, so their tasks end at once).
pub(crate) async fn run(ctx: Arc<ServerContext>, io: Handle, tasks: TaskTracker) {
    let parker = &ctx.parker;
    if parker.idle_ms == 0 {
        return;
    }
    let poll = match mio::Poll::new() {
        Ok(poll) => poll,
        Err(e) => {
            tracing::warn!(error = %e, "cannot open the parker's epoll set; connections are not parked");
            return;
        }
    };
    let _ = parker.shared.spawn.set((io, tasks));
    parker.shared.running.store(true, Ordering::Release);
    let mut state = State {
        ctx: &ctx,
        poll,
        parked: HashMap::new(),
        events: mio::Events::with_capacity(EVENTS),
        ready: Vec::new(),
    };
    // The set is polled every `poll_every` while it holds a connection, not woken per
    // socket: what became ready meanwhile is taken in one pass. (An idle parker costs one
    // timer wakeup and one `epoll_wait` per tick; an empty one does not tick.)
    let mut next_poll = tokio::time::Instant::now();
    loop {
        // The poll before the requests: a steady stream of parks and wakeups does not hold
        // back the heartbeats of the parked connections.
        let woke = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => Woke::Stop,
            () = tokio::time::sleep_until(next_poll), if !state.parked.is_empty() => Woke::Poll,
            () = parker.shared.notify.notified() => Woke::Requests,
        };
        match woke {
            Woke::Stop => break,
            Woke::Requests => {
                if state.take_requests() {
                    // More than a pass's worth: the rest after the other tasks had a turn.
                    parker.shared.notify.notify_one();
                    tokio::task::yield_now().await;
                }
            }
            Woke::Poll => {
                state.on_events();
                next_poll = tokio::time::Instant::now() + parker.poll_every;
            }
        }
    }
    // Dropping `state` stops parking and hands every connection back (also when this task
    // panics or is dropped).
    drop(state);
}

/// What the parker task woke for.
enum Woke {
    Stop,
    Requests,
    Poll,
}

/// Takes the ready events of the set into `events` without waiting; `false` if the set
/// could not be read (then `events` is empty).
fn poll_ready(poll: &mut mio::Poll, events: &mut mio::Events) -> bool {
    loop {
        match poll.poll(events, Some(Duration::ZERO)) {
            Ok(()) => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "parker poll failed");
                events.clear();
                return false;
            }
        }
    }
}

/// The parker task's own state.
struct State<'a> {
    ctx: &'a Arc<ServerContext>,
    poll: mio::Poll,
    parked: HashMap<u64, Entry>,
    events: mio::Events,
    /// The ready sockets of one poll (kept: a poll per tick must not allocate).
    ready: Vec<(u64, bool)>,
}

impl State<'_> {
    /// Parks the connections handed over and answers the wakeups, at most
    /// `REQUESTS_PER_PASS` of them; `true` if more are queued.
    fn take_requests(&mut self) -> bool {
        let (parks, wakes, more) = {
            let mut guard = lock(&self.ctx.parker.shared.queue);
            let q = &mut *guard;
            let parks: Vec<Parked> = q
                .parks
                .drain(..q.parks.len().min(REQUESTS_PER_PASS))
                .collect();
            let room = REQUESTS_PER_PASS - parks.len();
            let wakes: Vec<u64> = q.wakes.drain(..q.wakes.len().min(room)).collect();
            let more = !q.parks.is_empty() || !q.wakes.is_empty();
            if !more {
                // A burst's queue does not keep its size.
                q.parks.shrink_to(REQUESTS_PER_PASS);
                q.wakes.shrink_to(REQUESTS_PER_PASS);
            }
            (parks, wakes, more)
        };
        for p in parks {
            self.park(p);
        }
        for seq in wakes {
            self.woken(seq);
        }
        more
    }

    /// A wakeup of connection `seq`: what was queued for it is written here, and it stays
    /// parked, unless it is closed or the socket does not take it all (then its task waits
    /// for writability).
    fn woken(&mut self, seq: u64) {
        let stays = self
            .parked
            .get(&seq)
            .is_some_and(|e| e.conn.flush_parked(&*e.sock));
        if !stays {
            self.unpark(seq, BytesMut::new());
        }
    }

    fn park(&mut self, p: Parked) {
        let seq = p.conn.seq();
        let mut sock = mio::net::TcpStream::from_std(p.stream);
        let token = mio::Token(usize::try_from(seq).unwrap_or(usize::MAX));
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut sock, token, mio::Interest::READABLE)
        {
            tracing::debug!(conn = %p.conn.id(), error = %e, "cannot park, resuming");
            let back = Parked {
                stream: sock.into(),
                ..p
            };
            self.ctx.parker.resume(self.ctx, back, BytesMut::new());
            return;
        }
        let sock = Arc::new(ParkedSocket(sock));
        // Frames queued while the socket changed hands (and a close) were announced through
        // the parker's waker before the entry existed: looked at once it does.
        let quiet = p.conn.attach_parked(sock.clone());
        let conn = p.conn.clone();
        self.parked.insert(
            seq,
            Entry {
                conn: p.conn,
                sock,
                slot: p.slot,
            },
        );
        self.ctx
            .parker
            .shared
            .parked
            .fetch_add(1, Ordering::Relaxed);
        crate::metrics::gauge_add(&crate::metrics::CONN_PARKED_KEY, 1.0);
        if !quiet {
            self.woken(seq);
        }
        drop(conn);
    }

    /// Gives connection `seq` its task again, if it is parked.
    fn unpark(&mut self, seq: u64, rest: BytesMut) {
        let Some(entry) = self.parked.remove(&seq) else {
            return;
        };
        self.ctx
            .parker
            .shared
            .parked
            .fetch_sub(1, Ordering::Relaxed);
        crate::metrics::gauge_add(&crate::metrics::CONN_PARKED_KEY, -1.0);
        let Entry { conn, sock, slot } = entry;
        // No writer keeps the socket past its lock: the entry holds the last reference.
        conn.detach();
        let Ok(ParkedSocket(mut sock)) = Arc::try_unwrap(sock) else {
            tracing::error!(conn = %conn.id(), "parked socket still shared, connection lost");
            conn.close();
            if let Some((io, tasks)) = self.ctx.parker.shared.spawn.get() {
                io.spawn(tasks.track_future(connection::abandon(self.ctx.clone(), conn, slot)));
            }
            return;
        };
        if let Err(e) = self.poll.registry().deregister(&mut sock) {
            // Still in the set, the socket could not be parked again: the connection is
            // dropped (closing the socket takes it out of the set).
            tracing::warn!(conn = %conn.id(), error = %e, "cannot unpark, connection lost");
            drop(sock);
            if let Some((io, tasks)) = self.ctx.parker.shared.spawn.get() {
                io.spawn(tasks.track_future(connection::abandon(self.ctx.clone(), conn, slot)));
            }
            return;
        }
        let parked = Parked {
            conn,
            stream: sock.into(),
            slot,
        };
        self.ctx.parker.resume(self.ctx, parked, rest);
    }

    /// Answers the heartbeats of the ready sockets; hands back those with anything else.
    fn on_events(&mut self) {
        for _ in 0..MAX_ROUNDS {
            if !poll_ready(&mut self.poll, &mut self.events) {
                return;
            }
            let mut ready = std::mem::take(&mut self.ready);
            // Edge-triggered: a heartbeat and the client's close in one event are one read
            // of the heartbeat and no event for the EOF, so the close is taken from the event.
            ready.extend(self.events.iter().map(|e| {
                let seq = u64::try_from(e.token().0).unwrap_or(u64::MAX);
                (seq, e.is_read_closed() || e.is_error())
            }));
            for &(seq, closed) in &ready {
                let Some(entry) = self.parked.get(&seq) else {
                    continue;
                };
                let back = self.read(entry);
                if let Some(back) = back.or_else(|| closed.then(BytesMut::new)) {
                    self.unpark(seq, back);
                }
            }
            let full = ready.len() == EVENTS;
            ready.clear();
            self.ready = ready;
            if !full {
                break;
            }
        }
        // A mass unpark does not keep the table's size.
        if self.parked.capacity() > 64 && self.parked.len() < self.parked.capacity() / 4 {
            self.parked.shrink_to(self.parked.len() * 2);
        }
    }

    /// Reads what a parked socket has: heartbeats are echoed and it stays parked (`None`);
    /// anything else (with the bytes read past the heartbeats), EOF or an error gives it its
    /// task back, which reads the rest and meets the EOF or error itself.
    fn read(&self, e: &Entry) -> Option<BytesMut> {
        let mut buf = [0u8; READ_MAX];
        loop {
            return match (&e.sock.0).read(&mut buf) {
                Ok(0) => Some(BytesMut::new()),
                Ok(n) => {
                    e.conn.touch_read_now(self.ctx);
                    let beats = buf[..n]
                        .iter()
                        .take_while(|b| **b == HEARTBEAT_BYTE)
                        .count();
                    e.conn.echo_heartbeats(&buf[..beats]);
                    // A short read took everything (see `connection::Drained`): the next byte
                    // raises a new event.
                    (beats < n || n == READ_MAX).then(|| BytesMut::from(&buf[beats..n]))
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => None,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => Some(BytesMut::new()),
            };
        }
    }

    /// Stops parking and hands every connection back.
    fn stop(&mut self) {
        let shared = &self.ctx.parker.shared;
        let parks = {
            let mut q = lock(&shared.queue);
            shared.running.store(false, Ordering::Release);
            q.wakes.clear();
            std::mem::take(&mut q.parks)
        };
        for p in parks {
            self.ctx.parker.resume(self.ctx, p, BytesMut::new());
        }
        let seqs: Vec<u64> = self.parked.keys().copied().collect();
        for seq in seqs {
            self.unpark(seq, BytesMut::new());
        }
    }
}

impl Drop for State<'_> {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn off_with_a_zero_idle_time_and_until_the_parker_runs() {
        let mut net = crate::config::NetConfig::default();
        let conn = Connection::new(
            1,
            super::super::connection::ConnId::from_u32(1),
            "127.0.0.1:9".parse().expect("addr"),
            1024,
            4096,
        );
        let p = Parker::new(&net);
        assert!(!p.may_park(&conn, i64::MAX / 2), "not running yet");
        p.shared.running.store(true, Ordering::Release);
        assert!(p.may_park(&conn, i64::MAX / 2));
        assert!(!p.may_park(&conn, 0), "not idle long enough");
        net.connect_server_park_idle = Duration::ZERO;
        let off = Parker::new(&net);
        off.shared.running.store(true, Ordering::Release);
        assert!(!off.may_park(&conn, i64::MAX / 2));
    }
}
