//! One client connection: a single task that reads, dispatches and writes.
//!
//! Memory per idle connection is kept small on purpose (the target is 1.5 KiB): the read
//! buffer is allocated only while bytes are in flight and freed when drained, and outbound
//! bytes wait in a buffer that is released once the connection has been quiet for a
//! heartbeat check (a busy connection keeps its small buffer instead of reallocating it for
//! every push). Other tasks (pushes, kicks) only ever *write*: a frame queued while nothing
//! is pending goes straight to the socket under the out mutex that orders every write; the
//! rest is appended under that mutex and the connection task, woken unless it is awake
//! already, flushes it. Broadcast deliveries are always left to the task (see [`Kind`]).
//! Reading, waiting and closing are the task's alone; its heartbeat checks run on the
//! server's check wheel (`server::checks`), so the task holds no timer.
//!
//! A TCP connection that has sent only heartbeats for `connect-server-park-idle` has no task
//! at all for a while: the task hands its socket to the server's parker (`server::park`),
//! which answers its heartbeats and gives it a task again ([`resumed`]) for anything else.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::task::Poll;

use bytes::{Buf, Bytes, BytesMut};
use futures::task::AtomicWaker;
use tokio::io::Interest;
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::{Notify, OwnedSemaphorePermit};

use super::context::ServerContext;
use super::handler;
use super::session::{SessionInfo, SessionState};
use crate::protocol::body::{self, Prepared};
use crate::protocol::crypto::Cipher;
use crate::protocol::packet::{Command, Frame, HEARTBEAT_BYTE, Packet, decode_frame};

/// Why a frame could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendError {
    /// The connection is closed.
    #[error("connection closed")]
    Closed,
    /// The client is not reading: its outbound buffer is above the high water mark.
    #[error("connection not writable")]
    NotWritable,
    /// The body could not be encrypted.
    #[error("cannot encode packet")]
    Encode,
}

/// What a queued frame is: how the water marks treat it, and who writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A reply, a heartbeat echo, a kick: may go above the high mark (up to twice it).
    Control,
    /// A push to this one connection: refused above the high mark. Written by the caller
    /// when nothing is queued ahead (see [`Connection::enqueue`]).
    Push,
    /// One delivery of a broadcast: as `Push`, but always left to the connection task.
    /// Written by the broadcasting task itself, every delivery's syscall ran on that one
    /// task while the other workers idled: measured, a broadcast took longer and cost
    /// 21–23 µs of server CPU per delivery instead of 13–15 µs (docs/PERFORMANCE.md).
    Fanout,
}

impl Kind {
    /// The kind of a frame sent on its own: PUSH, or a control frame.
    fn of(cmd: Command) -> Self {
        if cmd == Command::Push {
            Kind::Push
        } else {
            Kind::Control
        }
    }
}

/// How a connection's packets are framed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Transport {
    /// MPush binary frames over TCP, with the session cipher.
    #[default]
    Binary,
    /// WebSocket JSON text frames (spec §1.9): no crypto, no compression. Queued frames are
    /// separated by `\n`, which compact JSON never contains, so the WebSocket task can split
    /// the shared outbound buffer back into frames.
    Json,
}

/// Outbound bytes waiting for the socket, with Netty-style water marks.
#[derive(Debug, Default)]
struct OutBuf {
    buf: BytesMut,
    /// Set above the high mark, cleared below the low mark.
    unwritable: bool,
    /// Complete flushes since the last heartbeat check (saturating): a connection that
    /// writes often keeps its small buffer, one that only answers now and then does not.
    flushes: u8,
    /// Seconds since the server's epoch of the last packet other than a heartbeat (or of the
    /// connect): how long the connection has been idle, for parking (`server::park`). Here,
    /// in the padding of this struct, since every connection has one.
    last_packet_s: u32,
    /// The frames larger than the high mark queued since the buffer was last below the low
    /// mark, in KiB (each rounded up, saturating; in this struct's padding too). Such a
    /// frame (an HTTP proxy response of up to `max-content-length`; at most
    /// `max-in-flight-per-connection` of them at once) leaves the buffer above the mark while
    /// a client that reads fine takes it in: it raises the "not reading" limit by its own
    /// size, so the next small frame (a heartbeat echo, an ACK) does not close it.
    big_kib: u16,
    /// The socket, while the connection task runs (binary transport only): a frame queued
    /// while nothing is pending is written straight to it by whoever queues it (see
    /// [`Connection::enqueue`]). Taken away when the task ends, so the socket closes with it.
    direct: Option<Arc<dyn TryWrite>>,
}

/// A socket another task may write to without waiting (the connection task still owns
/// reading, waiting for writability and closing).
pub(crate) trait TryWrite: Send + Sync + std::fmt::Debug {
    /// Writes what fits without waiting.
    fn try_write(&self, buf: &[u8]) -> std::io::Result<usize>;
}

/// Largest scratch buffer a thread keeps between direct writes; a larger frame's buffer is
/// freed after use.
const SCRATCH_KEEP: usize = 16 * 1024;

thread_local! {
    /// Where a frame is encoded before a direct write: one per thread instead of an
    /// allocation per push (only a frame the socket does not take whole is copied into the
    /// connection's own buffer).
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

impl OutBuf {
    /// Moves the process-wide outbound byte gauge by this buffer's change since `before`.
    fn account(&self, before: usize) {
        let now = self.buf.len();
        if now != before {
            crate::metrics::gauge_add(
                &crate::metrics::OUTBOUND_BYTES_KEY,
                now as f64 - before as f64,
            );
        }
    }

    /// Notes a queued frame of `len` bytes for [`OutBuf::big_kib`].
    fn note_frame(&mut self, len: usize, high_water: usize) {
        if len > high_water {
            let kib = u16::try_from(len.div_ceil(1024)).unwrap_or(u16::MAX);
            self.big_kib = self.big_kib.saturating_add(kib);
        }
    }

    /// Sets the water-mark state, counting connections over the high mark.
    fn set_unwritable(&mut self, unwritable: bool) {
        if self.unwritable != unwritable {
            self.unwritable = unwritable;
            let delta = if unwritable { 1.0 } else { -1.0 };
            crate::metrics::gauge_add(&crate::metrics::OVER_HIGH_WATER_KEY, delta);
        }
    }
}

/// A closed connection's leftovers leave the gauges with it.
impl Drop for OutBuf {
    fn drop(&mut self) {
        let before = self.buf.len();
        self.buf = BytesMut::new();
        self.account(before);
        self.set_unwritable(false);
    }
}

/// A connection id: 8 lowercase hex characters, kept inline (a `String` would cost every
/// connection a 32-byte heap chunk besides its 24 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnId([u8; 8]);

impl ConnId {
    /// The id of `n`, as `format!("{n:08x}")` spells it.
    pub(crate) fn from_u32(n: u32) -> Self {
        let mut b = [0u8; 8];
        // Four bytes fill the eight digits exactly: the only error (a length mismatch)
        // cannot happen.
        let _ = hex::encode_to_slice(n.to_be_bytes(), &mut b);
        Self(b)
    }

    /// The id as text.
    pub(crate) fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever stored (`from_u32`), so this never falls back.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// A live client connection, shared between its task and whoever pushes to it.
#[derive(Debug)]
pub(crate) struct Connection {
    seq: u64,
    id: ConnId,
    peer: SocketAddr,
    pub(crate) state: std::sync::Mutex<SessionState>,
    out: std::sync::Mutex<OutBuf>,
    /// Set when output was queued (or a close asked for) since the connection task last
    /// looked, and while that task is awake anyway: a writer that finds it set does not
    /// wake the task again (no self-wakeup for its own replies, one wakeup for a burst of
    /// pushes). Cleared by the task right before it flushes.
    wake_pending: AtomicBool,
    /// The connection task's waker (a lock-free slot: the task is the only waiter).
    waker: AtomicWaker,
    /// Set once closing; checked on every push, so a plain atomic (a cancellation token
    /// takes a lock to answer `is_cancelled`).
    closed: AtomicBool,
    /// Woken when `closed` is set.
    close_notify: Notify,
    /// Milliseconds since the server's epoch of the last inbound byte.
    last_read: AtomicI64,
    /// Set once the connection is fully cleaned up (routes removed).
    cleaned: AtomicBool,
    /// Whether a push may skip reading the cluster route (`router::verified`).
    pub(crate) route_check: crate::router::RouteCheck,
    /// Generation of the connection's heartbeat check grid in the server's check wheel
    /// (`server::checks`): a restarted grid makes the older wheel entry stale.
    checks_gen: AtomicU32,
    /// Water marks in bytes; `u32` keeps the struct from growing with `route_check`.
    low_water: u32,
    high_water: u32,
    transport: Transport,
}

impl Connection {
    pub(crate) fn new(seq: u64, id: ConnId, peer: SocketAddr, low: usize, high: usize) -> Self {
        Self {
            seq,
            id,
            peer,
            state: std::sync::Mutex::new(SessionState::default()),
            out: std::sync::Mutex::new(OutBuf::default()),
            wake_pending: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            closed: AtomicBool::new(false),
            close_notify: Notify::new(),
            last_read: AtomicI64::new(0),
            cleaned: AtomicBool::new(false),
            route_check: crate::router::RouteCheck::new(),
            checks_gen: AtomicU32::new(0),
            low_water: u32::try_from(low).unwrap_or(u32::MAX),
            high_water: u32::try_from(high).unwrap_or(u32::MAX),
            transport: Transport::Binary,
        }
    }

    fn high_water(&self) -> usize {
        usize::try_from(self.high_water).unwrap_or(usize::MAX)
    }

    fn low_water(&self) -> usize {
        usize::try_from(self.low_water).unwrap_or(usize::MAX)
    }

    /// A client connection just accepted from `peer` (TCP or WebSocket): numbered by `ctx`,
    /// with the connection server's water marks.
    pub(crate) fn accepted(ctx: &ServerContext, peer: SocketAddr) -> Self {
        let (seq, id) = ctx.next_conn_id();
        let net = &ctx.config.net;
        Self::new(
            seq,
            id,
            peer,
            net.connect_server_low_water_mark,
            net.connect_server_high_water_mark,
        )
    }

    /// Sets the wire framing (WebSocket connections use [`Transport::Json`]).
    pub(crate) fn with_transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        let flavor = match transport {
            Transport::Binary => crate::protocol::session::Flavor::Tcp,
            Transport::Json => crate::protocol::session::Flavor::Ws,
        };
        self.state
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .set_flavor(flavor);
        self
    }

    /// The connection id (8 hex chars, unique per server), as stored in routes.
    pub(crate) fn id(&self) -> &str {
        self.id.as_str()
    }

    /// A process-unique number for this connection.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The client's address.
    pub(crate) fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// `true` once the connection is closed or closing.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Resolves when the connection closes.
    pub(crate) async fn closed(&self) {
        let notified = self.close_notify.notified();
        tokio::pin!(notified);
        // Registered before the check, so a close between the two is not missed.
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await
    }

    /// Asks the connection task to close the socket.
    pub(crate) fn close(&self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            self.close_notify.notify_waiters();
        }
        self.wake();
    }

    /// Wakes the connection task unless a wakeup is already pending or the task is awake
    /// (it checks for output and for a close before it waits again).
    fn wake(&self) {
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            self.waker.wake();
        }
    }

    /// `false` while the client is behind on reading (outbound bytes above the high mark).
    pub(crate) fn is_writable(&self) -> bool {
        !self.is_closed() && !self.lock_out().unwritable
    }

    /// A snapshot of the session identity.
    pub(crate) fn info(&self) -> SessionInfo {
        let s = self.lock_state();
        SessionInfo {
            conn_id: self.id.as_str().to_owned(),
            device_id: s.device_id().map(str::to_owned),
            os_name: s.os_name().map(str::to_owned),
            os_version: s.os_version().map(str::to_owned),
            client_version: s.client_version().map(str::to_owned),
            user_id: s.user_id.as_deref().map(str::to_owned),
            tags: s.tags.as_deref().map(str::to_owned),
            client_type: s.client_type,
        }
    }

    pub(crate) fn lock_state(&self) -> std::sync::MutexGuard<'_, SessionState> {
        // A panic while holding this lock cannot leave the state half-written in a way that
        // matters more than losing the connection; recover the guard.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_out(&self) -> std::sync::MutexGuard<'_, OutBuf> {
        self.out.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The session cipher, if handshaken.
    pub(crate) fn cipher(&self) -> Option<Cipher> {
        self.lock_state().cipher.clone()
    }

    /// Queues an encoded frame. [`Kind::Control`] frames may go above the high mark up to
    /// twice it; beyond that the client is not reading at all and the connection is closed
    /// rather than let its buffer grow. `write` appends the frame, or fails leaving the
    /// buffer as it was.
    fn enqueue(
        &self,
        write: impl FnOnce(&mut BytesMut) -> Result<(), SendError>,
        kind: Kind,
    ) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let mut out = self.lock_out();
        if out.unwritable && kind != Kind::Control {
            return Err(SendError::NotWritable);
        }
        let limit = self
            .high_water()
            .saturating_mul(2)
            .saturating_add(usize::from(out.big_kib) * 1024);
        if out.buf.len() > limit {
            drop(out);
            tracing::debug!(conn = %self.id, "client not reading, closing");
            self.close();
            return Err(SendError::Closed);
        }
        let OutBuf { buf, direct, .. } = &mut *out;
        let direct = direct
            .as_deref()
            .filter(|_| buf.is_empty() && kind != Kind::Fanout);
        if let Some(direct) = direct {
            // Nothing is queued ahead of this frame: write it now, under the lock that orders
            // every write of this connection. A frame the socket takes whole costs no
            // wakeup of the connection task and no buffer; what it does not take is queued
            // for the task, which waits for writability.
            let rest = SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                scratch.clear();
                write(&mut scratch)?;
                // An error is the task's to see: its flush meets it and closes.
                let taken = direct.try_write(&scratch).unwrap_or_default();
                if taken < scratch.len() {
                    buf.extend_from_slice(&scratch[taken..]);
                }
                let frame = scratch.len();
                if scratch.capacity() > SCRATCH_KEEP {
                    *scratch = BytesMut::new();
                }
                Ok::<_, SendError>((buf.len(), frame))
            })?;
            if rest.0 == 0 {
                return Ok(());
            }
            out.account(0);
            out.note_frame(rest.1, self.high_water());
        } else {
            let before = out.buf.len();
            let written = write(&mut out.buf);
            out.account(before);
            written?;
            let frame = out.buf.len() - before;
            out.note_frame(frame, self.high_water());
        }
        if out.buf.len() > self.high_water() {
            out.set_unwritable(true);
        }
        drop(out);
        self.wake();
        Ok(())
    }

    /// Lets frames be written straight to `socket` while the connection task runs.
    fn attach(&self, socket: Arc<dyn TryWrite>) {
        // A WebSocket connection's frames are split back out of the buffer by its own task.
        debug_assert_eq!(self.transport, Transport::Binary);
        self.lock_out().direct = Some(socket);
    }

    /// Ends direct writes: the task (or the parker) is done with the socket, which closes when
    /// its owner drops it.
    pub(crate) fn detach(&self) {
        self.lock_out().direct = None;
    }

    /// Queues a packet as is (raw: its body and flags are sent unchanged). A WebSocket
    /// connection takes only PUSH this way (see [`Connection::send_secure`]).
    pub(crate) fn send_raw(&self, packet: &Packet) -> Result<(), SendError> {
        if self.transport == Transport::Json {
            return self.send_secure(
                packet.cmd,
                packet.session_id,
                packet.flags,
                packet.body.to_vec(),
                0,
            );
        }
        self.enqueue(
            |b| {
                packet.encode_to(b);
                Ok(())
            },
            Kind::of(packet.cmd),
        )
    }

    /// Queues a message through the body pipeline (compress above `compress_threshold`,
    /// encrypt with the session cipher).
    ///
    /// On a WebSocket connection there is no body pipeline and a binary body has no JSON
    /// form except for PUSH, whose body is the content itself: it goes out as the JSON
    /// `content`. Any other command is [`SendError::Encode`]; the server's own replies and
    /// kicks reach WebSocket clients as JSON built from the message (`protocol::json`).
    pub(crate) fn send_secure(
        &self,
        cmd: Command,
        session_id: i32,
        flags: u8,
        plain: Vec<u8>,
        compress_threshold: usize,
    ) -> Result<(), SendError> {
        let content = Prepared::new(Bytes::from(plain), compress_threshold);
        self.send_prepared(cmd, session_id, flags, &content)
    }

    /// Queues a message whose body went through compression already ([`Prepared`]: a
    /// broadcast compresses once for every connection): encrypted with the session cipher
    /// straight into the outbound buffer. WebSocket connections take PUSH only, as for
    /// [`Connection::send_secure`].
    pub(crate) fn send_prepared(
        &self,
        cmd: Command,
        session_id: i32,
        flags: u8,
        content: &Prepared,
    ) -> Result<(), SendError> {
        self.prepared(cmd, session_id, flags, content, Kind::of(cmd))
    }

    /// Queues one delivery of a broadcast (a PUSH without ACK) for the connection's own
    /// task to write, as [`Connection::send_prepared`] otherwise does (see [`Kind::Fanout`]).
    pub(crate) fn send_fanout(&self, session_id: i32, content: &Prepared) -> Result<(), SendError> {
        self.prepared(Command::Push, session_id, 0, content, Kind::Fanout)
    }

    fn prepared(
        &self,
        cmd: Command,
        session_id: i32,
        flags: u8,
        content: &Prepared,
        kind: Kind,
    ) -> Result<(), SendError> {
        if self.transport == Transport::Json {
            if cmd != Command::Push {
                return Err(SendError::Encode);
            }
            return self.send_json(
                &crate::protocol::json::encode_push(session_id, flags, content.plain()),
                false,
            );
        }
        let cipher = self.cipher();
        self.enqueue(
            |b| {
                body::encode_sealed(b, cmd, session_id, flags, content, cipher.as_ref())
                    .map_err(|_| SendError::Encode)
            },
            kind,
        )
    }

    /// `true` for a WebSocket (JSON text frame) connection.
    pub(crate) fn is_json(&self) -> bool {
        self.transport == Transport::Json
    }

    /// Queues one JSON text frame (a WebSocket connection's frames are built by
    /// `protocol::json`). `control` as for binary replies: may exceed the high water mark.
    pub(crate) fn send_json(&self, text: &str, control: bool) -> Result<(), SendError> {
        debug_assert!(self.is_json() && !text.contains('\n'));
        self.enqueue(
            |b| {
                b.extend_from_slice(text.as_bytes());
                b.extend_from_slice(b"\n");
                Ok(())
            },
            if control { Kind::Control } else { Kind::Push },
        )
    }

    /// Records inbound activity now (a WebSocket frame, pong included).
    pub(crate) fn touch_read_now(&self, ctx: &ServerContext) {
        self.touch_read(ctx.now_ms());
    }

    /// Milliseconds (server clock) of the last inbound activity.
    pub(crate) fn last_read_ms(&self) -> i64 {
        self.last_read.load(Ordering::Relaxed)
    }

    fn touch_read(&self, now_ms: i64) {
        self.last_read.store(now_ms, Ordering::Relaxed);
    }

    /// Milliseconds (server clock, whole seconds) of the last packet other than a heartbeat,
    /// or of the connect.
    pub(crate) fn last_packet_ms(&self) -> i64 {
        i64::from(self.lock_out().last_packet_s) * 1000
    }

    /// Records a packet (other than a heartbeat) at `now_ms`.
    fn touch_packet(&self, now_ms: i64) {
        self.lock_out().last_packet_s = u32::try_from(now_ms / 1000).unwrap_or(u32::MAX);
    }

    /// Echoes the heartbeats `beats` (the pings read; the server never pings on its own).
    pub(crate) fn echo_heartbeats(&self, beats: &[u8]) {
        if beats.is_empty() {
            return;
        }
        // A closed connection has nobody to answer; a full one is closed by `enqueue`.
        let _ = self.enqueue(
            |b| {
                b.extend_from_slice(beats);
                Ok(())
            },
            Kind::Control,
        );
    }

    /// Readies the connection for the parker (see `server::park`): `waker` (the parker's)
    /// takes the task's place, and direct writes stop until the parker attaches the socket
    /// again; frames sent meanwhile are queued and wake the parker. `false`, changing
    /// nothing the task's next pass does not set right again, while output is queued or a
    /// close was asked for.
    fn prepare_park(&self, waker: &std::task::Waker) -> bool {
        self.waker.register(waker);
        // From here a queued frame or a close wakes the parker's waker.
        self.disarm();
        let mut out = self.lock_out();
        if self.is_closed() || !out.buf.is_empty() {
            return false;
        }
        out.direct = None;
        true
    }

    /// The parker's answer to a wakeup of a parked connection: writes what is queued (a
    /// broadcast's deliveries, a frame the socket did not take whole) to `socket`. `true`
    /// when the connection stays parked: not closed and everything written. A frame queued
    /// from here on wakes the parker again.
    pub(crate) fn flush_parked(&self, socket: &dyn TryWrite) -> bool {
        self.disarm();
        !self.is_closed() && matches!(self.flush(socket), Ok(true))
    }

    /// Lets frames be written straight to the parked socket again. `false` if frames were
    /// queued, or a wakeup asked for, while it had no writer: the parker then gives the
    /// connection its task back.
    pub(crate) fn attach_parked(&self, socket: Arc<dyn TryWrite>) -> bool {
        let mut out = self.lock_out();
        out.direct = Some(socket);
        out.buf.is_empty() && !self.wake_pending.load(Ordering::SeqCst) && !self.is_closed()
    }

    /// Marks the connection cleaned up; `true` only for the first caller.
    pub(crate) fn mark_cleaned(&self) -> bool {
        !self.cleaned.swap(true, Ordering::AcqRel)
    }

    /// Writes as much pending output as the socket takes without blocking.
    /// Returns `Ok(true)` when everything was flushed.
    fn flush(&self, stream: &(impl TryWrite + ?Sized)) -> std::io::Result<bool> {
        let mut out = self.lock_out();
        let before = out.buf.len();
        let mut result = Ok(());
        while !out.buf.is_empty() {
            match stream.try_write(&out.buf) {
                Ok(0) => {
                    result = Err(std::io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => out.buf.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        out.account(before);
        result?;
        if out.buf.len() < self.low_water() {
            out.set_unwritable(false);
            out.big_kib = 0;
        }
        if out.buf.is_empty() {
            // A busy connection (pushes) keeps its small buffer, empty, for the next frame,
            // which reuses it from the start instead of reallocating; it goes at the next
            // heartbeat check (`release_idle_buffer`). An occasional reply (handshake, bind,
            // heartbeat echo) and a large buffer (a burst, a slow client) are released now,
            // so an idle connection holds no buffer.
            out.flushes = out.flushes.saturating_add(1);
            if out.flushes > KEEP_AFTER_FLUSHES && out.buf.capacity() <= KEEP_OUT_CAPACITY {
                out.buf.clear();
            } else {
                out.buf = BytesMut::new();
            }
            return Ok(true);
        }
        Ok(false)
    }

    /// Starts a new generation of heartbeat checks and returns it (see `server::checks`).
    pub(crate) fn restart_checks(&self) -> u32 {
        self.checks_gen
            .fetch_add(1, Ordering::AcqRel)
            .wrapping_add(1)
    }

    /// The generation of heartbeat checks in force.
    pub(crate) fn checks_generation(&self) -> u32 {
        self.checks_gen.load(Ordering::Acquire)
    }

    /// Whether an (empty) outbound buffer is kept: the heartbeat check releases it.
    pub(crate) fn holds_buffer(&self) -> bool {
        self.lock_out().buf.capacity() > 0
    }

    /// Frees an empty outbound buffer's allocation: an idle connection holds none.
    pub(crate) fn release_idle_buffer(&self) {
        let mut out = self.lock_out();
        out.flushes = 0;
        if out.buf.is_empty() && out.buf.capacity() > 0 {
            out.buf = BytesMut::new();
        }
    }

    /// Takes every queued frame (for a task that writes through its own sink, such as the
    /// WebSocket task). Bytes handed over no longer count toward the water marks; what piles
    /// up while that sink is blocked does.
    pub(crate) fn take_outbound(&self) -> BytesMut {
        let mut out = self.lock_out();
        out.set_unwritable(false);
        out.big_kib = 0;
        let taken = std::mem::take(&mut out.buf);
        out.account(taken.len());
        taken
    }

    /// Resolves when frames were queued or a close was requested since it last resolved
    /// (the caller then takes what is queued: what comes after wakes it again).
    pub(crate) fn woken(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_woken(cx))
    }

    /// [`Connection::woken`] as a poll: ready once frames were queued or a close asked for
    /// since it was last ready; otherwise registers `cx`'s waker.
    fn poll_woken(&self, cx: &mut std::task::Context<'_>) -> Poll<()> {
        if self.wake_pending.swap(false, Ordering::SeqCst) {
            return Poll::Ready(());
        }
        self.waker.register(cx.waker());
        // Queued between the check and the registration: it found no waker to wake.
        if self.wake_pending.swap(false, Ordering::SeqCst) {
            return Poll::Ready(());
        }
        Poll::Pending
    }

    /// Marks the connection task awake: writers (its own replies included) queue without
    /// waking it, since it flushes before it waits again.
    fn mark_awake(&self) {
        self.wake_pending.store(true, Ordering::SeqCst);
    }

    /// Clears the wakeup flag before a flush: whatever is queued from now on wakes the task.
    fn disarm(&self) {
        self.wake_pending.store(false, Ordering::SeqCst);
    }
}

/// Largest outbound buffer capacity kept across flushes: enough for a few small pushes
/// (a 100-byte push is a 125-byte frame), small against the per-connection memory budget.
const KEEP_OUT_CAPACITY: usize = 512;

/// Complete flushes within one heartbeat check interval before the buffer is kept: more
/// than a handshake, a bind and a heartbeat echo.
const KEEP_AFTER_FLUSHES: u8 = 3;

/// Backend work a handler leaves for after its reply is on the wire (online sets, events,
/// kick publishes, the reusable-session write). The connection task flushes first, then
/// runs it before reading the next packet, so a connection's effects stay in order.
pub(crate) type Effects = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

/// Outcome of handling one inbound packet.
pub(crate) enum Flow {
    /// Keep reading.
    Continue,
    /// Flush the reply, run these effects, then keep reading.
    Then(Effects),
    /// Flush what is queued, then close.
    Close,
}

/// The readiness-based socket calls the connection task makes: a plain `TcpStream`, or the
/// inner end of a TLS relay (see [`crate::tls::relay`]).
pub(crate) trait SocketIo: TryWrite + 'static {
    /// Polls for read readiness (one waker slot, the connection task's: no waiter in the
    /// task's future).
    fn poll_read_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>>;
    /// Polls for write readiness, as [`SocketIo::poll_read_ready`].
    fn poll_write_ready(&self, cx: &mut std::task::Context<'_>) -> Poll<std::io::Result<()>>;
    /// Reads what is there without waiting; `true` with the count when the read drained the
    /// socket (see [`Drained`]).
    fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<(usize, Drained)>;
    /// Reads what is there without waiting, into a slice; as [`SocketIo::try_read_buf`].
    fn try_read(&self, buf: &mut [u8]) -> std::io::Result<(usize, Drained)>;
    /// Resolves once the peer has gone (see [`peer_gone`]); may never resolve where that
    /// cannot be told without reading.
    fn peer_gone(&self) -> impl Future<Output = ()> + Send;
    /// Whether an idle connection on this socket may be parked (`server::park`): a plain
    /// TCP socket only (a TLS relay's inner end carries records the parker cannot read).
    const PARKABLE: bool;
    /// The socket out of tokio's reactor, for the parker (only called when `PARKABLE`).
    fn into_std_tcp(self) -> std::io::Result<std::net::TcpStream>;
}

/// Whether a read took everything the socket had: it returned fewer bytes than there was
/// room for. The socket's readiness is then cleared, as tokio's own `poll_read` does after
/// a short read, so the task goes back to epoll instead of paying one more `read` that
/// finds nothing: a heartbeat or an ACK costs two syscalls (read, echo), not three.
/// (A byte that arrives meanwhile raises a new readiness event, which the clear does not
/// touch: tokio clears only the event it handed out.)
pub(crate) type Drained = bool;

/// The [`SocketIo`] impl of a tokio stream type; `$gone` is its `peer_gone`.
macro_rules! socket_io {
    ($stream:ty, $gone:expr, $parkable:expr, $into_std:expr) => {
        impl SocketIo for $stream {
            fn poll_read_ready(
                &self,
                cx: &mut std::task::Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                <$stream>::poll_read_ready(self, cx)
            }
            fn poll_write_ready(
                &self,
                cx: &mut std::task::Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                <$stream>::poll_write_ready(self, cx)
            }
            fn try_read_buf(&self, buf: &mut BytesMut) -> std::io::Result<(usize, Drained)> {
                let room = buf.capacity() - buf.len();
                read_draining(
                    room,
                    |f| self.try_io(Interest::READABLE, f),
                    || <$stream>::try_read_buf(self, buf),
                )
            }
            fn try_read(&self, buf: &mut [u8]) -> std::io::Result<(usize, Drained)> {
                let room = buf.len();
                read_draining(
                    room,
                    |f| self.try_io(Interest::READABLE, f),
                    || <$stream>::try_read(self, buf),
                )
            }
            fn peer_gone(&self) -> impl Future<Output = ()> + Send {
                $gone(self)
            }
            const PARKABLE: bool = $parkable;
            fn into_std_tcp(self) -> std::io::Result<std::net::TcpStream> {
                $into_std(self)
            }
        }

        impl TryWrite for $stream {
            fn try_write(&self, buf: &[u8]) -> std::io::Result<usize> {
                <$stream>::try_write(self, buf)
            }
        }
    };
}

/// Runs `read` (a non-blocking read offering `room` bytes) inside the stream's `try_io`, and
/// turns a short read into a WouldBlock for `try_io` so that it clears the readiness; the
/// count still reaches the caller.
fn read_draining(
    room: usize,
    try_io: impl FnOnce(&mut dyn FnMut() -> std::io::Result<usize>) -> std::io::Result<usize>,
    mut read: impl FnMut() -> std::io::Result<usize>,
) -> std::io::Result<(usize, Drained)> {
    let mut short = None;
    let outcome = try_io(&mut || {
        let n = read()?;
        if n == 0 || n >= room {
            return Ok(n);
        }
        short = Some(n);
        Err(std::io::ErrorKind::WouldBlock.into())
    });
    match (outcome, short) {
        (_, Some(n)) => Ok((n, true)),
        (Ok(n), None) => Ok((n, false)),
        (Err(e), None) => Err(e),
    }
}

socket_io!(TcpStream, peer_gone, true, TcpStream::into_std);
// Behind a TLS relay a peek would see the relay, not the client (and TLS records are no
// plaintext bytes to peek): a handshake waiting for an RSA slot is not abandoned early; the
// handshake queue bound still limits the cost.
socket_io!(
    UnixStream,
    |_: &UnixStream| std::future::pending::<()>(),
    false,
    |_: UnixStream| Err(std::io::ErrorKind::Unsupported.into())
);

/// The future a plain TCP connection's task runs: [`run`], holding `slot` (its admission slot)
/// until it ends, or until the connection is parked (`server::park`), which keeps the slot.
pub(crate) fn task(
    ctx: Arc<ServerContext>,
    conn: Arc<Connection>,
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
) -> impl Future<Output = ()> + Send + 'static {
    // The stream goes into its `Arc` here, outside the async fn: moved inside it, it would
    // keep a slot of its own in the task future next to the `Arc`.
    run_with(ctx, conn, Arc::new(stream), Some(slot))
}

/// Drives one accepted connection until it closes, then cleans up its routes.
pub(crate) fn run<S: SocketIo>(
    ctx: Arc<ServerContext>,
    conn: Arc<Connection>,
    stream: Arc<S>,
) -> impl Future<Output = ()> + Send + 'static {
    run_with(ctx, conn, stream, None)
}

fn run_with<S: SocketIo>(
    ctx: Arc<ServerContext>,
    conn: Arc<Connection>,
    stream: Arc<S>,
    slot: Option<OwnedSemaphorePermit>,
) -> impl Future<Output = ()> + Send + 'static {
    // Set up here, outside the async fn, so the future holds `Running` alone and not also
    // the arguments it was made of.
    let now = ctx.now_ms();
    conn.touch_read(now);
    conn.touch_packet(now);
    ctx.connections.insert(conn.seq(), conn.clone());
    crate::metrics::gauge_add(&crate::metrics::CONN_TCP, 1.0);
    ctx.checks
        .start(&conn, now, ctx.heartbeat_check_interval(&conn));
    serve(started(ctx, conn, stream, slot), BytesMut::new)
}

/// A parked connection given its task back (`server::park`). Its table entry, gauge and
/// heartbeat checks carry on from before the parking. The same future as a new connection's.
pub(crate) fn resumed(
    ctx: Arc<ServerContext>,
    conn: Arc<Connection>,
    stream: TcpStream,
    slot: Option<OwnedSemaphorePermit>,
) -> impl Future<Output = ()> + Send + 'static {
    serve(started(ctx, conn, Arc::new(stream), slot), BytesMut::new)
}

/// [`resumed`] for a connection that sent a packet while parked: `rest`, the bytes the parker
/// read past the heartbeats, is handled first. A future of its own, so the others keep no
/// slot for such bytes.
pub(crate) fn resumed_with(
    ctx: Arc<ServerContext>,
    conn: Arc<Connection>,
    stream: TcpStream,
    slot: Option<OwnedSemaphorePermit>,
    rest: BytesMut,
) -> impl Future<Output = ()> + Send + 'static {
    serve(started(ctx, conn, Arc::new(stream), slot), move || rest)
}

/// The `Running` of a connection about to be served: direct writes on, closed if the server
/// is stopping.
fn started<S: SocketIo>(
    ctx: Arc<ServerContext>,
    conn: Arc<Connection>,
    stream: Arc<S>,
    slot: Option<OwnedSemaphorePermit>,
) -> Running<S> {
    // The shutdown closes every connection in the map (`close_all_on_shutdown`); one that was
    // not in it yet when that ran sees the token here instead.
    if ctx.shutdown.is_cancelled() {
        conn.close();
    }
    conn.attach(stream.clone());
    Running {
        ctx,
        conn,
        stream,
        slot,
        handed_over: false,
    }
}

/// [`run`] once the connection is set up; `rbuf` gives what was read before (a resumed
/// connection's bytes; nothing for a new one, a zero-sized `fn` then).
///
/// A plain `fn` around an `async move` block, as [`drive`]: an `async fn` keeps its
/// arguments twice in its future (as passed and as bound).
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice in its future"
)]
fn serve<S: SocketIo>(
    task: Running<S>,
    rbuf: impl FnOnce() -> BytesMut + Send + 'static,
) -> impl Future<Output = ()> + Send + 'static {
    async move {
        match drive(&task, rbuf()).await {
            End::Closed(reason) => {
                let conn = &task.conn;
                tracing::debug!(conn = %conn.id(), peer = %conn.peer_addr(), %reason, "connection closed");
            }
            End::Park => {
                // Boxed: only a lost socket has cleanup to await here.
                if let Some(lost) = park(task) {
                    lost.await;
                }
                return;
            }
        }
        task.end();
        // Best effort: let queued replies (e.g. the ERROR before a close) reach the client.
        let _ = task.conn.flush(&*task.stream);
        task.ctx.connections.remove(&task.conn.seq());
        Box::pin(handler::on_close(&task.ctx, &task.conn)).await;
    }
}

/// Hands the idle connection to the server's parker; its task ends here, the connection
/// does not. A socket tokio cannot let go of loses its connection: returned to be cleaned up
/// ([`abandon`]).
fn park<S: SocketIo>(task: Running<S>) -> Option<Effects> {
    let (ctx, conn, stream, slot) = task.hand_over();
    let stream = match Arc::try_unwrap(stream) {
        Ok(stream) => stream.into_std_tcp(),
        // `prepare_park` took the direct writer's reference; nobody else holds one.
        Err(_) => Err(std::io::Error::other("socket still shared")),
    };
    let stream = match stream {
        Ok(stream) => stream,
        Err(e) => {
            tracing::warn!(conn = %conn.id(), error = %e, "cannot park, connection lost");
            return Some(Box::pin(abandon(ctx, conn, slot)));
        }
    };
    if let Err(back) = ctx
        .parker
        .submit(super::park::Parked { conn, stream, slot })
    {
        // The parker stopped meanwhile (the server is stopping): served on by a new task.
        ctx.parker.resume(&ctx, back, BytesMut::new());
    }
    None
}

/// Cleans up a connection whose socket was lost between its task and the parker.
pub(crate) async fn abandon(
    ctx: Arc<ServerContext>,
    conn: Arc<Connection>,
    slot: Option<OwnedSemaphorePermit>,
) {
    conn.close();
    conn.detach();
    ctx.connections.remove(&conn.seq());
    crate::metrics::gauge_add(&crate::metrics::CONN_TCP, -1.0);
    Box::pin(handler::on_close(&ctx, &conn)).await;
    drop(slot);
}

/// What a running connection task holds, in one place (the task future stores it once and
/// its loop one reference to it). Closes the connection and takes its direct writer away
/// when dropped, also on a panic inside the task (tokio drops the future): the writer must
/// not keep the socket open with nobody reading it. Not once handed to the parker.
struct Running<S> {
    ctx: Arc<ServerContext>,
    conn: Arc<Connection>,
    stream: Arc<S>,
    /// The admission slot, for a plain TCP connection (a TLS connection's task holds its own).
    slot: Option<OwnedSemaphorePermit>,
    handed_over: bool,
}

impl<S> Running<S> {
    /// Closes the connection and ends direct writes (the gauge counts it open until drop).
    fn end(&self) {
        self.conn.close();
        self.conn.detach();
    }

    /// Everything it holds, for the parker: the connection stays open.
    #[allow(clippy::type_complexity)]
    fn hand_over(
        mut self,
    ) -> (
        Arc<ServerContext>,
        Arc<Connection>,
        Arc<S>,
        Option<OwnedSemaphorePermit>,
    ) {
        self.handed_over = true;
        let slot = self.slot.take();
        (
            self.ctx.clone(),
            self.conn.clone(),
            self.stream.clone(),
            slot,
        )
    }
}

impl<S> Drop for Running<S> {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        self.end();
        // Normally gone already (`serve`); not if the future was dropped unfinished.
        self.ctx.connections.remove(&self.conn.seq());
        crate::metrics::gauge_add(&crate::metrics::CONN_TCP, -1.0);
    }
}

/// Closes every binary (TCP) connection once the server shuts down. One task per server does
/// this instead of a shutdown waiter in every connection task: an idle connection's task then
/// holds no `Notified`. WebSocket tasks watch the token themselves (they answer with a close
/// frame of their own).
pub(crate) async fn close_all_on_shutdown(ctx: Arc<ServerContext>) {
    ctx.shutdown.cancelled().await;
    for c in ctx.connections.iter() {
        if !c.is_json() {
            c.close();
        }
    }
}

/// What woke the connection task.
enum Event {
    /// The socket has bytes (or EOF) to read.
    Readable,
    /// The socket takes bytes again (the flush at the top of the loop writes them).
    Writable,
    /// Output was queued, or a close asked for (a heartbeat timeout closes too).
    Woken,
}

/// The connection's event loop. Returns why it ended.
///
/// One pass per event: the flush at the top of the loop sends what the last pass queued (a
/// heartbeat echo, a reply, pushes from other tasks), so a task's own output costs it no
/// second wakeup. The wait is one `poll_fn` over the socket's readiness slots and the
/// wakeup flag: no readiness waiter, `Notified`, timer or `select!` state sits in an idle
/// task (the task future is what every idle connection holds; see
/// `per_connection_state_stays_small`). Heartbeats are answered without leaving this
/// future; a packet is handled in a boxed future (`handle_packets`), so the handler's state
/// is allocated only while a packet is being handled.
///
/// The heartbeat checks are not this task's: the server's check wheel (`server::checks`)
/// runs them, without waking the task for a check that finds the connection alive, and
/// closes the connection on a timeout.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice in its future"
)]
fn drive<S: SocketIo>(
    task: &Running<S>,
    mut rbuf: BytesMut,
) -> impl Future<Output = End> + Send + '_ {
    async move {
        // Only `task`, the read buffer and the wait are kept across the waits: the steps
        // between them are plain functions, so their locals stay out of the future.
        if !rbuf.is_empty() {
            // What the parker read past the heartbeats of a parked connection: it may hold whole
            // packets, which no readiness event announces again.
            let handling = match next_packet(&task.ctx, &task.conn, &mut rbuf) {
                Ok(None) => None,
                Ok(Some(packet)) => Some(Box::pin(handle_packets(task, &mut rbuf, packet))),
                Err(reason) => return End::Closed(reason),
            };
            if let Some(handling) = handling {
                if let Some(end) = handled(handling.await) {
                    return end;
                }
            }
        }
        loop {
            let pending = match before_wait(task) {
                Ok(pending) => pending,
                Err(reason) => return End::Closed(reason),
            };
            let event = std::future::poll_fn(move |cx| poll_event(task, pending, cx)).await;
            let readable = matches!(event, Ok(Event::Readable));
            // Boxed: the handler futures are large and only live while a packet is being
            // handled; inline they would sit in every idle connection's task.
            let handling = match read_event(task, event, &mut rbuf) {
                Ok(None) if readable && try_park(task, &rbuf) => return End::Park,
                Ok(None) => continue,
                Ok(Some(packet)) => Box::pin(handle_packets(task, &mut rbuf, packet)),
                Err(reason) => return End::Closed(reason),
            };
            if let Some(end) = handled(handling.await) {
                return end;
            }
        }
    }
}

/// How [`drive`] ends.
enum End {
    /// The connection is closed, for this reason.
    Closed(String),
    /// The connection is idle and ready for the parker ([`try_park`]).
    Park,
}

/// What the handling of packets means for the loop: `Some` to end it.
fn handled(outcome: Result<Flow, String>) -> Option<End> {
    match outcome {
        // Effects already ran inside `handle_packets`.
        Ok(Flow::Continue | Flow::Then(_)) => None,
        Ok(Flow::Close) => Some(End::Closed("closed after error reply".into())),
        Err(reason) => Some(End::Closed(reason)),
    }
}

/// After a read of heartbeats only: whether the connection goes to the server's parker
/// (`server::park`), readied for it if so. Only a plain TCP connection with nothing buffered
/// either way that has had no other packet for `connect-server-park-idle`.
fn try_park<S: SocketIo>(task: &Running<S>, rbuf: &BytesMut) -> bool {
    let (ctx, conn) = (&task.ctx, &task.conn);
    S::PARKABLE
        && rbuf.is_empty()
        && ctx.parker.may_park(conn, ctx.now_ms())
        && conn.prepare_park(&ctx.parker.waker(conn.seq()))
}

/// The top of a pass: clears the wakeup flag, ends a closed connection, flushes. `Ok` with
/// whether output is still pending (then the wait includes writability).
fn before_wait<S: SocketIo>(task: &Running<S>) -> Result<bool, String> {
    let conn = &task.conn;
    // Cleared before the flush and the close check: a frame or close that comes later
    // sets it again and wakes the task (see `Connection::wake`).
    conn.disarm();
    if conn.is_closed() {
        return Err(if task.ctx.shutdown.is_cancelled() {
            "server stopping".into()
        } else {
            "closed by server".into()
        });
    }
    match conn.flush(&*task.stream) {
        Ok(done) => Ok(!done),
        Err(e) => Err(format!("write error: {e}")),
    }
}

/// The wait of a pass, in this order (as a biased select): input first, then output, then
/// the wakeup flag.
fn poll_event<S: SocketIo>(
    task: &Running<S>,
    pending: bool,
    cx: &mut std::task::Context<'_>,
) -> Poll<std::io::Result<Event>> {
    if let Poll::Ready(r) = task.stream.poll_read_ready(cx) {
        return Poll::Ready(r.map(|()| Event::Readable));
    }
    if pending {
        if let Poll::Ready(r) = task.stream.poll_write_ready(cx) {
            return Poll::Ready(r.map(|()| Event::Writable));
        }
    }
    task.conn.poll_woken(cx).map(|()| Ok(Event::Woken))
}

/// Acts on what woke the task: reads on [`Event::Readable`] (see [`read_frames`]);
/// `Ok(Some)` with a packet to handle.
fn read_event<S: SocketIo>(
    task: &Running<S>,
    event: std::io::Result<Event>,
    rbuf: &mut BytesMut,
) -> Result<Option<Packet>, String> {
    match event {
        Err(e) => Err(format!("socket error: {e}")),
        // Writable, woken: the flush at the top of the loop writes.
        Ok(Event::Writable | Event::Woken) => Ok(None),
        Ok(Event::Readable) => {
            task.conn.mark_awake();
            read_frames(&task.ctx, &task.conn, &*task.stream, rbuf)
        }
    }
}

/// Reads what the socket has, answers the heartbeats at the front of it and returns the
/// first packet, if a complete one came (the rest stays in `rbuf` for [`handle_packets`]).
/// Not `async`: a connection that only heartbeats never leaves its task future.
fn read_frames(
    ctx: &ServerContext,
    conn: &Connection,
    stream: &impl SocketIo,
    rbuf: &mut BytesMut,
) -> Result<Option<Packet>, String> {
    // Bound the read burst so one chatty client cannot starve the decoder loop (or, with
    // heartbeats that never reach `rbuf`, the worker).
    let burst = ctx.config.core.max_packet_size + 64 * 1024;
    let mut read = 0;
    loop {
        match read_some(conn, stream, rbuf) {
            Ok((0, _)) => return Err("closed by peer".into()),
            Ok((n, drained)) => {
                conn.touch_read(ctx.now_ms());
                read += n;
                if drained {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(format!("read error: {e}")),
        }
        if read >= burst || rbuf.len() >= burst {
            break;
        }
    }
    next_packet(ctx, conn, rbuf)
}

/// Decodes frames from `rbuf`, answering heartbeats, up to the next complete packet. Frees
/// the buffer's allocation once it is empty (an idle connection holds none).
fn next_packet(
    ctx: &ServerContext,
    conn: &Connection,
    rbuf: &mut BytesMut,
) -> Result<Option<Packet>, String> {
    let next = loop {
        match decode_frame(rbuf, ctx.config.core.max_packet_size) {
            Ok(None) => break None,
            Ok(Some(Frame::Heartbeat)) => conn.echo_heartbeats(&[HEARTBEAT_BYTE]),
            Ok(Some(Frame::Packet(packet))) => break Some(packet),
            // As the original: a bad frame length closes the connection without a reply
            // (there is no sessionId to answer).
            Err(e) => return Err(format!("bad frame: {e}")),
        }
    };
    if rbuf.is_empty() {
        *rbuf = BytesMut::new();
    }
    Ok(next)
}

/// Handles `first` and every further packet already in `rbuf`, in order (heartbeats among
/// them answered inline). Returns [`Flow::Close`] to close, anything else to keep reading.
async fn handle_packets<S: SocketIo>(
    task: &Running<S>,
    rbuf: &mut BytesMut,
    first: Packet,
) -> Result<Flow, String> {
    let (ctx, conn, stream) = (&task.ctx, &task.conn, &*task.stream);
    let mut packet = first;
    loop {
        if let Flow::Close = handle_packet(ctx, conn, stream, packet).await? {
            return Ok(Flow::Close);
        }
        match next_packet(ctx, conn, rbuf)? {
            Some(next) => packet = next,
            None => return Ok(Flow::Continue),
        }
    }
}

/// Handles one packet: dispatch, then (for [`Flow::Then`]) the flush of the reply and the
/// effects. Returns [`Flow::Close`] to close, anything else to keep reading.
async fn handle_packet(
    ctx: &Arc<ServerContext>,
    conn: &Arc<Connection>,
    stream: &impl SocketIo,
    packet: Packet,
) -> Result<Flow, String> {
    conn.touch_packet(ctx.now_ms());
    let is_handshake = packet.cmd == Command::Handshake;
    // A handshake or fast connect negotiates the heartbeat the checks run on.
    let negotiates = is_handshake || packet.cmd == Command::FastConnect;
    let inbound = handler::tcp_inbound(ctx, conn, packet);
    let handled = handler::dispatch(ctx, conn, inbound);
    let flow = if is_handshake {
        // A handshake may wait for an RSA slot in a connect storm: a client that gave up
        // meanwhile is dropped from the queue instead of costing RSA work. (Only handshakes:
        // they change no shared state until they answer.)
        tokio::select! {
            flow = handled => flow,
            () = stream.peer_gone() => return Err("closed by peer during handshake".into()),
        }
    } else {
        handled.await
    };
    if negotiates {
        let every = ctx.heartbeat_check_interval(conn);
        ctx.checks.negotiated(conn, ctx.now_ms(), every);
    }
    match flow {
        Flow::Then(effects) => {
            // The reply goes out before the backend work it does not need.
            if let Err(e) = conn.flush(stream) {
                return Err(format!("write error: {e}"));
            }
            effects.await;
            Ok(Flow::Continue)
        }
        other => Ok(other),
    }
}

/// Reads once without waiting. An empty read buffer has no allocation (idle connections hold
/// none): the first read goes to the stack, heartbeats at its front are echoed from there,
/// and only the rest is copied to the heap, so a heartbeat costs no allocation and an ACK a
/// small one, not a 4 KiB one. Not `async`: the stack buffer must not live in the
/// connection's task future.
fn read_some(
    conn: &Connection,
    stream: &impl SocketIo,
    rbuf: &mut BytesMut,
) -> std::io::Result<(usize, Drained)> {
    if rbuf.capacity() == 0 {
        let mut first = [0u8; 1024];
        let (n, drained) = stream.try_read(&mut first)?;
        // Heartbeats at the front are echoed from here: a connection that only heartbeats
        // allocates nothing per heartbeat.
        let beats = first[..n]
            .iter()
            .take_while(|b| **b == HEARTBEAT_BYTE)
            .count();
        conn.echo_heartbeats(&first[..beats]);
        rbuf.extend_from_slice(&first[beats..n]);
        return Ok((n, drained));
    }
    if rbuf.capacity() - rbuf.len() < 512 {
        rbuf.reserve(4096);
    }
    stream.try_read_buf(rbuf)
}

/// Resolves once the peer has closed its side (EOF or a socket error) without consuming any
/// byte; never resolves while the peer is open, even if it has sent more data.
async fn peer_gone(stream: &TcpStream) {
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        // More bytes are waiting (a pipelined request): the peer is alive as far as can be
        // told without reading them.
        Ok(_) => std::future::pending().await,
    }
}

/// The pre-handshake idle check interval (spec §7.2).
pub(crate) use crate::protocol::session::PRE_HANDSHAKE_CHECK;

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, D, F: std::future::Future>(_: impl Fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    fn conn() -> Connection {
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        Connection::new(1, ConnId::from_u32(1), peer, 1024, 4096)
    }

    /// Out of the router no change notice reaches a connection, so what was verified
    /// about its route before is void when it comes back (an undone displacement, a
    /// failed unbind).
    #[test]
    fn re_entering_the_router_voids_a_route_verification() {
        use crate::router::{LocalRouter, RouteWatchState};
        use crate::spi::ClientType;
        let (router, checks) = (
            LocalRouter::<Connection>::default(),
            RouteWatchState::default(),
        );
        checks.watching();
        let c = Arc::new(conn());
        router.register("u", ClientType::MOBILE, c.clone());
        let ticket = checks.begin(&c.route_check).expect("watching");
        checks.confirm(&c.route_check, ticket);
        assert!(checks.is_verified(&c.route_check));
        assert!(router.unregister("u", ClientType::MOBILE, c.seq()));
        // A push that took its ticket before the connection left must not verify it either.
        let late = checks.begin(&c.route_check).expect("watching");
        router.register("u", ClientType::MOBILE, c.clone());
        assert!(!checks.is_verified(&c.route_check));
        checks.confirm(&c.route_check, late);
        assert!(!checks.is_verified(&c.route_check));
    }

    fn heartbeat(b: &mut BytesMut) -> Result<(), SendError> {
        b.extend_from_slice(&[HEARTBEAT_BYTE]);
        Ok(())
    }

    /// One reply larger than twice the high mark (an HTTP proxy response) is a client still
    /// reading it, not one that stopped: the frames after it are queued. A client that
    /// reads nothing at all is still closed, past twice the high mark plus that reply.
    #[test]
    fn a_large_reply_does_not_make_the_next_frame_close() {
        let c = conn();
        let big = |b: &mut BytesMut| {
            b.extend_from_slice(&[0u8; 20 * 1024]);
            Ok(())
        };
        // Two of them, as two proxied requests answered at once.
        c.enqueue(big, Kind::Control).expect("queued");
        c.enqueue(big, Kind::Control).expect("queued");
        c.enqueue(heartbeat, Kind::Control)
            .expect("a heartbeat echo after large replies closed the connection");
        assert!(!c.is_closed());
        let mut queued = 0;
        while c.enqueue(heartbeat, Kind::Control).is_ok() {
            queued += 1;
            assert!(queued <= 2 * 4096 + 1, "never closed");
        }
        assert!(c.is_closed());
        assert!(queued >= 2 * 4096 - 1, "closed after {queued} small frames");
    }

    /// A queued frame wakes the task once; while the task is awake (or a wakeup is
    /// pending) further frames do not wake it again, and after `disarm` the next one does.
    #[test]
    fn wakeups_are_coalesced() {
        use futures::FutureExt as _;
        let c = conn();
        assert!(c.woken().now_or_never().is_none(), "nothing queued yet");
        c.enqueue(heartbeat, Kind::Control).expect("queued");
        c.enqueue(heartbeat, Kind::Control).expect("queued");
        assert!(c.woken().now_or_never().is_some(), "queued frames wake");
        assert!(c.woken().now_or_never().is_none(), "one wakeup for both");
        c.mark_awake();
        c.enqueue(heartbeat, Kind::Control).expect("queued");
        assert!(
            c.wake_pending.load(Ordering::SeqCst),
            "awake: no wakeup needed"
        );
        c.disarm();
        assert!(c.woken().now_or_never().is_none());
        c.close();
        assert!(c.woken().now_or_never().is_some(), "a close wakes");
    }

    /// A flushed small buffer is kept for the next frame and released by the idle check;
    /// a large one is released by the flush itself.
    #[tokio::test]
    async fn out_buffer_kept_small_and_released_when_idle() {
        let (a, b) = UnixStream::pair().expect("pair");
        let c = conn();
        for _ in 0..KEEP_AFTER_FLUSHES {
            c.enqueue(heartbeat, Kind::Control).expect("queued");
            assert!(c.flush(&a).expect("flush"), "all written");
            assert_eq!(
                c.lock_out().buf.capacity(),
                0,
                "occasional writes keep nothing"
            );
        }
        c.enqueue(heartbeat, Kind::Control).expect("queued");
        assert!(c.flush(&a).expect("flush"), "all written");
        let kept = c.lock_out().buf.capacity();
        assert!(kept > 0 && kept <= KEEP_OUT_CAPACITY, "kept {kept}");
        c.release_idle_buffer();
        assert_eq!(c.lock_out().buf.capacity(), 0);
        for _ in 0..KEEP_AFTER_FLUSHES {
            c.enqueue(heartbeat, Kind::Control).expect("queued");
            assert!(c.flush(&a).expect("flush"), "all written");
        }
        c.enqueue(
            |buf| {
                buf.extend_from_slice(&[0u8; 2 * KEEP_OUT_CAPACITY]);
                Ok(())
            },
            Kind::Control,
        )
        .expect("queued");
        assert!(c.flush(&a).expect("flush"), "all written");
        assert_eq!(c.lock_out().buf.capacity(), 0, "a large buffer is not kept");
        // Everything written arrives: 2K + 1 heartbeat echoes, then the large frame.
        let beats = 2 * usize::from(KEEP_AFTER_FLUSHES) + 1;
        let got = read_exactly(&b, beats + 2 * KEEP_OUT_CAPACITY).await;
        assert!(got[..beats].iter().all(|b| *b == HEARTBEAT_BYTE));
        assert!(got[beats..].iter().all(|b| *b == 0));
    }

    /// Reads exactly `len` bytes from `b`, within 10 s.
    async fn read_exactly(b: &UnixStream, len: usize) -> Vec<u8> {
        let mut got = vec![0u8; len];
        let mut n = 0;
        let read_all = async {
            while n < len {
                b.readable().await.expect("readable");
                match b.try_read(&mut got[n..]) {
                    Ok(0) => panic!("closed after {n} of {len} bytes"),
                    Ok(k) => n += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read: {e}"),
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(10), read_all)
            .await
            .expect("all bytes arrive");
        got
    }

    /// With the socket attached, a frame queued while nothing is pending goes straight out:
    /// no buffer, no wakeup. Once the socket is full the rest is queued (counted for the
    /// water marks), the task is woken, and later frames queue behind it, so bytes arrive
    /// in order; after `detach` frames only queue.
    #[tokio::test]
    async fn frames_go_straight_out_until_the_socket_is_full() {
        use futures::FutureExt as _;
        const FRAME: usize = 4000;
        let (a, b) = UnixStream::pair().expect("pair");
        let a = Arc::new(a);
        let peer: SocketAddr = "127.0.0.1:9".parse().expect("addr");
        let c = Connection::new(1, ConnId::from_u32(1), peer, 1 << 16, 1 << 17);
        c.attach(a.clone());
        c.enqueue(heartbeat, Kind::Control).expect("written");
        assert_eq!(
            c.lock_out().buf.capacity(),
            0,
            "no buffer for a direct write"
        );
        assert!(c.woken().now_or_never().is_none(), "no wakeup");
        assert_eq!(read_exactly(&b, 1).await, [HEARTBEAT_BYTE]);

        // Frames numbered by their byte until the socket stops taking them (the peer is not
        // reading); control frames, so the high mark does not refuse them first.
        let frame = |i: u8| {
            move |buf: &mut BytesMut| {
                buf.extend_from_slice(&[i; FRAME]);
                Ok(())
            }
        };
        let mut sent = 0u8;
        while c.lock_out().buf.is_empty() {
            sent = sent.checked_add(1).expect("a socket buffer under 1 MB");
            c.enqueue(frame(sent), Kind::Control).expect("queued");
        }
        assert!(
            c.woken().now_or_never().is_some(),
            "a partial write wakes the task"
        );
        // Behind a queued frame the next one queues even if the socket had room.
        let queued = c.lock_out().buf.len();
        sent += 1;
        c.enqueue(frame(sent), Kind::Control).expect("queued");
        assert_eq!(c.lock_out().buf.len(), queued + FRAME);
        c.detach();
        sent += 1;
        c.enqueue(frame(sent), Kind::Control).expect("queued");
        assert_eq!(
            c.lock_out().buf.len(),
            queued + 2 * FRAME,
            "detached: queued only"
        );

        // The task's flush sends the rest once the peer reads: every frame, in order.
        let total = usize::from(sent) * FRAME;
        let reader = tokio::spawn(async move { read_exactly(&b, total).await });
        while !c.flush(&*a).expect("flush") {
            a.writable().await.expect("writable");
        }
        let got = reader.await.expect("reader");
        for (i, chunk) in got.chunks(FRAME).enumerate() {
            let want = u8::try_from(i + 1).expect("small");
            assert!(
                chunk.iter().all(|x| *x == want),
                "frame {want} out of order"
            );
        }
    }

    #[test]
    fn conn_id_spells_eight_hex_digits() {
        for n in [0, 1, 0x9e37_79b1, 0xdead_beef, u32::MAX] {
            let id = ConnId::from_u32(n);
            assert_eq!(id.as_str(), format!("{n:08x}"));
            assert_eq!(format!("{id} {id:?}"), format!("{n:08x} {n:08x}"));
        }
    }

    /// Every idle connection holds its task future and its `Connection`: keep both small
    /// (handler futures are boxed out of the task, see `read_and_dispatch`). Measured on the
    /// future that is spawned ([`task`], with its admission slot).
    #[test]
    fn per_connection_state_stays_small() {
        let task = future_size(task);
        let conn = std::mem::size_of::<Connection>();
        eprintln!("connection task future: {task} bytes, Connection: {conn} bytes");
        // 144 and 368 bytes when last measured (debug and release alike; 528 before the
        // heartbeat checks moved to the server's wheel). tokio's task cell (tokio 1.54, no
        // `tokio_unstable`) is the future plus 104 bytes (header 32, scheduler and task id 16,
        // stage tag 8, trailer 48), aligned to 128: a future of up to 152 bytes keeps it at
        // 256, one byte more makes it 384 (docs/PERFORMANCE.md).
        assert!(
            task <= 152,
            "connection task future grew to {task} bytes (tokio's cell steps from 256 to 384 B above 152)"
        );
        // 392 since the handshake identity is one allocation (`protocol::session::Identity`),
        // 368 since the session keeps its heartbeat in 4 bytes and its user and tags as
        // `Box<str>`. With `Arc`'s 16 bytes that is a 400-byte glibc chunk; 8 bytes more
        // step it to 416.
        assert!(conn <= 368, "Connection grew to {conn} bytes");
    }
}
