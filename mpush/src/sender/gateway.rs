//! One TCP connection from the push SDK to a gateway server: GATEWAY_PUSH out, OK/ERROR in,
//! correlated by sessionId. No handshake, no cipher, no heartbeat (spec §9.3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use std::collections::HashMap;
use std::sync::Mutex;
use std::task::Poll;

use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;
use tokio_util::time::{DelayQueue, delay_queue};

use crate::protocol::message::{ErrorMessage, GatewayPush, GatewayTraceId, Message, OkMessage};
use crate::protocol::{Command, Frame, Packet, PacketCodec};

/// Connect timeout, as the Java SDK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// How long [`GatewayClient::send_only`] waits for room in a full queue (the UDP sender's
/// bound too).
const SEND_ONLY_LIMIT: Duration = Duration::from_secs(4);
/// Largest reply accepted (replies are small JSON).
const MAX_REPLY: usize = 1 << 20;

/// The connection's closed state: a token to await and a flag to check, because the flag
/// is read on every request and `CancellationToken::is_cancelled` takes a lock.
#[derive(Debug, Clone, Default)]
struct Closer {
    token: CancellationToken,
    flag: Arc<AtomicBool>,
}

impl Closer {
    fn close(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    fn is_closed(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }
}

/// A request waiting for its answer.
#[derive(Debug)]
struct Waiter {
    /// Its entry in [`Pending::timers`].
    timer: delay_queue::Key,
    tx: oneshot::Sender<GatewayReply>,
}

/// The requests of one connection waiting for an answer, and their deadlines. One timer
/// wheel per connection instead of a tokio timer per request (at tens of thousands of
/// requests per second per-request timer registration showed in profiles), and no periodic
/// scan of every request either: the sweeper sleeps until the earliest deadline.
///
/// Map and queue sit under one lock so that a request leaves both at once: a
/// `delay_queue::Key` is reused once its entry is gone, so removing a timer by a key whose
/// entry already expired could otherwise cancel another request's timer.
#[derive(Debug, Default)]
struct Pending {
    waiters: HashMap<i32, Waiter>,
    timers: DelayQueue<i32>,
}

impl Pending {
    /// Answers and forgets the request `id`, if it is still waiting.
    fn answer(&mut self, id: i32, reply: GatewayReply) {
        if let Some(w) = self.waiters.remove(&id) {
            self.timers.try_remove(&w.timer);
            let _ = w.tx.send(reply);
        }
    }

    /// Forgets the request `id` (its caller is gone) without answering it.
    fn forget(&mut self, id: i32) {
        if let Some(w) = self.waiters.remove(&id) {
            self.timers.try_remove(&w.timer);
        }
    }
}

type SharedPending = Arc<Mutex<Pending>>;

fn lock(p: &SharedPending) -> std::sync::MutexGuard<'_, Pending> {
    p.lock().unwrap_or_else(|e| e.into_inner())
}

/// A gateway's answer.
#[derive(Debug)]
pub enum GatewayReply {
    /// OK.
    Ok(OkMessage),
    /// ERROR.
    Error(ErrorMessage),
    /// The connection closed before an answer.
    Closed,
    /// No answer before the deadline.
    Timeout,
}

type Reader = Box<dyn tokio::io::AsyncRead + Send + Unpin>;
type Writer = Box<dyn tokio::io::AsyncWrite + Send + Unpin>;

/// A connection to one gateway.
#[derive(Debug)]
pub struct GatewayClient {
    addr: String,
    tx: mpsc::Sender<Packet>,
    pending: SharedPending,
    next_id: AtomicI32,
    closed: Closer,
    /// This end of the connection: with a request's sessionId, the push's trace id.
    local: Option<std::net::SocketAddr>,
}

impl GatewayClient {
    /// Connects to `addr` (host:port), over TLS when `tls` is given.
    pub async fn connect(addr: &str, tls: Option<&crate::tls::ClientTls>) -> std::io::Result<Self> {
        let timed_out = |what: &str| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, format!("{what} timeout"))
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out("connect"))??;
        stream.set_nodelay(true)?;
        let local = stream.local_addr().ok();
        let (rd, wr): (Reader, Writer) = match tls {
            None => {
                let (rd, wr) = stream.into_split();
                (Box::new(rd), Box::new(wr))
            }
            Some(tls) => {
                let s = tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(addr, stream))
                    .await
                    .map_err(|_| timed_out("TLS handshake"))??;
                let (rd, wr) = tokio::io::split(s);
                (Box::new(rd), Box::new(wr))
            }
        };
        let (tx, mut rx) = mpsc::channel::<Packet>(8192);
        let pending: SharedPending = Arc::default();
        let closed = Closer::default();

        let c = closed.clone();
        tokio::spawn(async move {
            let mut w = FramedWrite::new(wr, PacketCodec::new(usize::MAX));
            let write = async {
                while let Some(p) = rx.recv().await {
                    if w.feed(Frame::Packet(p)).await.is_err() {
                        return;
                    }
                    while let Ok(p) = rx.try_recv() {
                        if w.feed(Frame::Packet(p)).await.is_err() {
                            return;
                        }
                    }
                    if w.flush().await.is_err() {
                        return;
                    }
                }
            };
            // A close also ends a write that a gateway which stopped reading (or a
            // black-holed connection) holds forever; the queue's senders then fail at once.
            tokio::select! {
                _ = c.token.cancelled() => {}
                _ = write => {}
            }
            c.close();
        });

        let (c, p) = (closed.clone(), pending.clone());
        let peer = addr.to_string();
        tokio::spawn(async move {
            let mut r = FramedRead::new(rd, PacketCodec::new(MAX_REPLY));
            loop {
                let frame = tokio::select! {
                    _ = c.token.cancelled() => break,
                    f = r.next() => f,
                };
                let packet = match frame {
                    Some(Ok(Frame::Packet(p))) => p,
                    Some(Ok(Frame::Heartbeat)) => continue,
                    Some(Err(e)) => {
                        tracing::warn!(gateway = %peer, error = %e, "bad frame from gateway");
                        break;
                    }
                    None => break,
                };
                let reply = match packet.cmd {
                    Command::Ok => OkMessage::decode(&packet.body).map(GatewayReply::Ok),
                    Command::Error => ErrorMessage::decode(&packet.body).map(GatewayReply::Error),
                    other => {
                        tracing::warn!(gateway = %peer, cmd = ?other, "unexpected command from gateway");
                        continue;
                    }
                };
                match reply {
                    Ok(reply) => lock(&p).answer(packet.session_id, reply),
                    Err(e) => {
                        tracing::warn!(gateway = %peer, error = %e, "undecodable gateway reply")
                    }
                }
            }
            c.close();
            // Fail everything still waiting: the connection is gone (dropping a waiter's
            // sender answers it Closed).
            let mut p = lock(&p);
            p.waiters.clear();
            p.timers.clear();
        });

        let (c, p) = (closed.clone(), pending.clone());
        tokio::spawn(async move {
            // Each expired deadline answers its request TIMEOUT; an answered request took its
            // timer out of the queue already.
            let next_expired = || {
                std::future::poll_fn(|cx| {
                    let mut p = lock(&p);
                    match p.timers.poll_expired(cx) {
                        Poll::Ready(Some(e)) => Poll::Ready(p.waiters.remove(e.get_ref())),
                        // Empty: the queue keeps this task's waker and wakes it on insert.
                        Poll::Ready(None) | Poll::Pending => Poll::Pending,
                    }
                })
            };
            loop {
                let expired = tokio::select! {
                    _ = c.token.cancelled() => return,
                    w = next_expired() => w,
                };
                if let Some(w) = expired {
                    let _ = w.tx.send(GatewayReply::Timeout);
                }
            }
        });

        Ok(Self {
            addr: addr.to_string(),
            tx,
            pending,
            next_id: AtomicI32::new(0),
            closed,
            local,
        })
    }

    /// The gateway address.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// `true` once the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.is_closed()
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.closed.close();
    }

    fn packet(&self, flags: u8, msg: &GatewayPush) -> (i32, Packet) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let p = Packet {
            flags,
            ..Packet::with_body(Command::GatewayPush, id, msg.encode())
        };
        (id, p)
    }

    /// Sends a GATEWAY_PUSH and waits for its answer until `deadline`.
    pub async fn request(
        &self,
        flags: u8,
        msg: &GatewayPush,
        deadline: tokio::time::Instant,
    ) -> GatewayReply {
        let (id, packet) = self.packet(flags, msg);
        // The caller's `mpush.push.request` span learns the ids only here (a no-op when the
        // span is disabled; the trace id is formatted only by a subscriber that records it).
        let span = tracing::Span::current();
        span.record("session_id", id);
        if let Some(sender) = self.local {
            span.record(
                "trace_id",
                tracing::field::display(GatewayTraceId {
                    sender,
                    session_id: id,
                }),
            );
        }
        let (tx, rx) = oneshot::channel();
        {
            let mut p = lock(&self.pending);
            let timer = p.timers.insert_at(id, deadline);
            if let Some(old) = p.waiters.insert(id, Waiter { timer, tx }) {
                // Only after 2^32 requests on one connection: the older one has waited far
                // beyond any timeout; it is answered TIMEOUT rather than left in the queue.
                p.timers.try_remove(&old.timer);
                let _ = old.tx.send(GatewayReply::Timeout);
            }
        }
        // Forgets the request on every way out, a cancelled caller included.
        let _forget = ForgetOnDrop(&self.pending, id);
        if self.is_closed() {
            return GatewayReply::Closed;
        }
        // The queue is full while the gateway does not read: the request still ends at its
        // deadline, or when the connection is closed.
        tokio::select! {
            sent = self.tx.send(packet) => if sent.is_err() {
                return GatewayReply::Closed;
            },
            _ = tokio::time::sleep_until(deadline) => return GatewayReply::Timeout,
            _ = self.closed.token.cancelled() => return GatewayReply::Closed,
        }
        // Answered by the reader (reply), the sweeper (timeout) or the reader's exit (closed:
        // the waiter is dropped).
        rx.await.unwrap_or(GatewayReply::Closed)
    }

    /// Sends a GATEWAY_PUSH without waiting for an answer; `false` if it could not be queued.
    pub async fn send_only(&self, flags: u8, msg: &GatewayPush) -> bool {
        let (_, packet) = self.packet(flags, msg);
        if self.is_closed() {
            return false;
        }
        tokio::select! {
            sent = self.tx.send(packet) => sent.is_ok(),
            _ = tokio::time::sleep(SEND_ONLY_LIMIT) => false,
            _ = self.closed.token.cancelled() => false,
        }
    }
}

/// Removes a request from [`Pending`] when its `request` call ends or is dropped.
struct ForgetOnDrop<'a>(&'a SharedPending, i32);

impl Drop for ForgetOnDrop<'_> {
    fn drop(&mut self) {
        lock(self.0).forget(self.1);
    }
}

impl Drop for GatewayClient {
    fn drop(&mut self) {
        self.closed.close();
    }
}
