//! One TCP connection from the push SDK to a gateway server: GATEWAY_PUSH out, OK/ERROR in,
//! correlated by sessionId. No handshake, no cipher, no heartbeat (spec §9.3).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::{FramedRead, FramedWrite};
use tokio_util::sync::CancellationToken;

use crate::protocol::message::{ErrorMessage, GatewayPush, Message, OkMessage};
use crate::protocol::{Command, Frame, Packet, PacketCodec};

/// Connect timeout, as the Java SDK.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
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

/// How often expired requests are answered TIMEOUT. One sweeper per connection instead of a
/// timer per request: at tens of thousands of requests per second the per-request timer
/// registration showed in profiles; 50 ms of slack on a multi-second timeout does not.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// A request waiting for its answer.
#[derive(Debug)]
struct Waiter {
    deadline: tokio::time::Instant,
    tx: oneshot::Sender<GatewayReply>,
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

/// A connection to one gateway.
#[derive(Debug)]
pub struct GatewayClient {
    addr: String,
    tx: mpsc::Sender<Packet>,
    pending: Arc<DashMap<i32, Waiter>>,
    next_id: AtomicI32,
    closed: Closer,
}

impl GatewayClient {
    /// Connects to `addr` (host:port).
    pub async fn connect(addr: &str) -> std::io::Result<Self> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timeout"))??;
        stream.set_nodelay(true)?;
        let (rd, wr) = stream.into_split();
        let (tx, mut rx) = mpsc::channel::<Packet>(8192);
        let pending: Arc<DashMap<i32, Waiter>> = Arc::new(DashMap::new());
        let closed = Closer::default();

        let c = closed.clone();
        tokio::spawn(async move {
            let mut w = FramedWrite::new(wr, PacketCodec::new(usize::MAX));
            loop {
                let p = tokio::select! {
                    _ = c.token.cancelled() => break,
                    p = rx.recv() => match p { Some(p) => p, None => break },
                };
                if w.feed(Frame::Packet(p)).await.is_err() {
                    break;
                }
                while let Ok(p) = rx.try_recv() {
                    if w.feed(Frame::Packet(p)).await.is_err() {
                        c.close();
                        return;
                    }
                }
                if w.flush().await.is_err() {
                    break;
                }
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
                    Ok(reply) => {
                        if let Some((_, w)) = p.remove(&packet.session_id) {
                            let _ = w.tx.send(reply);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(gateway = %peer, error = %e, "undecodable gateway reply")
                    }
                }
            }
            c.close();
            // Fail everything still waiting: the connection is gone (dropping a waiter's
            // sender answers it Closed).
            p.retain(|_, _| false);
        });

        let (c, p) = (closed.clone(), pending.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = c.token.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let now = tokio::time::Instant::now();
                let expired: Vec<i32> = p
                    .iter()
                    .filter(|e| e.value().deadline <= now)
                    .map(|e| *e.key())
                    .collect();
                for id in expired {
                    if let Some((_, w)) = p.remove(&id) {
                        let _ = w.tx.send(GatewayReply::Timeout);
                    }
                }
            }
        });

        Ok(Self {
            addr: addr.to_string(),
            tx,
            pending,
            next_id: AtomicI32::new(0),
            closed,
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
        let (tx, rx) = oneshot::channel();
        self.pending.insert(id, Waiter { deadline, tx });
        if self.is_closed() || self.tx.send(packet).await.is_err() {
            self.pending.remove(&id);
            return GatewayReply::Closed;
        }
        // Answered by the reader (reply), the sweeper (timeout) or the reader's exit (closed:
        // the waiter is dropped). Removing on the way out covers a cancelled caller.
        let reply = rx.await.unwrap_or(GatewayReply::Closed);
        self.pending.remove(&id);
        reply
    }

    /// Sends a GATEWAY_PUSH without waiting for an answer; `false` if it could not be queued.
    pub async fn send_only(&self, flags: u8, msg: &GatewayPush) -> bool {
        let (_, packet) = self.packet(flags, msg);
        !self.is_closed() && self.tx.send(packet).await.is_ok()
    }
}

impl Drop for GatewayClient {
    fn drop(&mut self) {
        self.closed.close();
    }
}
