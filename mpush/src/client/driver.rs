//! The connection task: one per client. It owns the socket, runs the session loop (reads,
//! writes, heartbeats, request correlation) and reconnects with back-off.
//!
//! Memory per idle client is kept small on purpose (load tests hold 10,000+ clients): the
//! socket is driven through `readable()`/`writable()` readiness so no read buffer is held
//! while nothing is arriving, and the write buffer is released once flushed.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::{Buf as _, BufMut as _, BytesMut};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::State;
use super::conn::{Conn, Key, READ_CHUNK, Reply, Session, as_response, establish, sealed_packet};
use super::error::ClientError;
use super::event::{Event, EventSink};
use crate::protocol::message::Kick;
use crate::protocol::packet::{Frame, HEARTBEAT_BYTE, decode_frame};
use crate::protocol::{Command, Message as _, Packet, body, flags};

/// Stop taking commands while this much is waiting to be written (back-pressure on callers).
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// Time allowed to flush queued bytes on a graceful close.
const CLOSE_FLUSH: Duration = Duration::from_secs(1);
/// Consecutive read-timeout checks that end the session (spec §7.3).
const MAX_READ_MISSES: u32 = 2;

/// Something to put on the wire.
#[derive(Debug)]
pub(super) struct Outgoing {
    pub cmd: Command,
    pub session_id: i32,
    /// Extra header flags (ACK model of an upstream push).
    pub flags: u8,
    pub body: Vec<u8>,
    /// Seal with the session cipher (`false`: raw, as ACK).
    pub secure: bool,
}

/// A command from a `Client` handle to its connection task.
#[derive(Debug)]
pub(super) enum Cmd {
    /// Write a packet; with `reply`, wait for the answer keyed by (cmd, sessionId).
    Send {
        out: Outgoing,
        reply: Option<oneshot::Sender<Result<Reply, ClientError>>>,
    },
    /// Write a heartbeat byte now.
    Heartbeat,
}

/// Why a session ended.
enum End {
    /// close() or every handle dropped: stop for good.
    Closed(String),
    /// The connection failed: reconnect if allowed.
    Lost(String),
}

struct Pending {
    key: Key,
    reply: oneshot::Sender<Result<Reply, ClientError>>,
}

/// The task body. Reports the outcome of the first connection through `first`, then keeps
/// the session alive until closed.
pub(super) async fn run(
    state: Arc<State>,
    mut cmds: mpsc::Receiver<Cmd>,
    sink: EventSink,
    first: oneshot::Sender<Result<(), ClientError>>,
) {
    // Boxed: the opening phase's future is large and only alive while (re)connecting.
    let opened = tokio::select! {
        biased;
        () = state.cancel.cancelled() => Err(ClientError::Closed),
        r = Box::pin(establish(&state)) => r,
    };
    let (mut conn, mut session) = match opened {
        Ok(x) => x,
        Err(e) => {
            let _ = first.send(Err(e));
            return;
        }
    };
    let mut reconnect = false;
    let mut first = Some(first);
    loop {
        state.heartbeat_ms.store(
            u32::try_from(session.heartbeat.as_millis()).unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        state.connected.store(true, Ordering::Release);
        sink.emit(Event::Connected {
            fast: session.fast,
            heartbeat: session.heartbeat,
            reconnect,
        });
        if let Some(first) = first.take() {
            let _ = first.send(Ok(()));
        }
        let end = run_session(&state, conn, &session, &mut cmds, &sink).await;
        state.connected.store(false, Ordering::Release);
        let reason = match end {
            End::Closed(reason) => {
                sink.emit(Event::Disconnected {
                    reason,
                    will_reconnect: false,
                });
                return;
            }
            End::Lost(reason) => reason,
        };
        let will_reconnect = state.config.reconnect.allows(1) && !state.cancel.is_cancelled();
        tracing::debug!(device = %state.config.device_id, %reason, will_reconnect, "session ended");
        sink.emit(Event::Disconnected {
            reason,
            will_reconnect,
        });
        if !will_reconnect {
            return;
        }
        match reconnect_loop(&state, &mut cmds).await {
            Ok((c, s)) => (conn, session) = (c, s),
            Err(reason) => {
                sink.emit(Event::Disconnected {
                    reason,
                    will_reconnect: false,
                });
                return;
            }
        }
        reconnect = true;
    }
}

/// Retries `establish` under the back-off policy. Requests made meanwhile fail at once with
/// `NotConnected` rather than waiting for a connection that may never come.
async fn reconnect_loop(
    state: &State,
    cmds: &mut mpsc::Receiver<Cmd>,
) -> Result<(Conn, Session), String> {
    let policy = &state.config.reconnect;
    let mut attempt = 0u32;
    let mut last_error = String::new();
    loop {
        attempt += 1;
        if !policy.allows(attempt) {
            return Err(format!(
                "gave up reconnecting after {} attempts: {last_error}",
                attempt - 1
            ));
        }
        let delay = tokio::time::sleep(policy.delay_before(attempt));
        if serve_offline(state, cmds, delay).await.is_none() {
            return Err("closed by client".to_string());
        }
        let opening = Box::pin(establish(state));
        if let Some(result) = serve_offline(state, cmds, opening).await {
            match result {
                Ok(opened) => return Ok(opened),
                Err(e) => {
                    tracing::debug!(device = %state.config.device_id, attempt, error = %e, "reconnect failed");
                    last_error = e.to_string();
                }
            }
        } else {
            return Err("closed by client".to_string());
        }
    }
}

/// Drives `fut` while rejecting commands; `None` if the client is closed meanwhile.
async fn serve_offline<F: std::future::Future>(
    state: &State,
    cmds: &mut mpsc::Receiver<Cmd>,
    fut: F,
) -> Option<F::Output> {
    tokio::pin!(fut);
    loop {
        tokio::select! {
            biased;
            () = state.cancel.cancelled() => return None,
            out = &mut fut => return Some(out),
            cmd = cmds.recv() => match cmd {
                None => return None,
                Some(Cmd::Send { reply: Some(reply), .. }) => {
                    let _ = reply.send(Err(ClientError::NotConnected));
                }
                Some(_) => {}
            },
        }
    }
}

/// Heartbeat timing derived from the negotiated interval (spec §7.3).
struct Timing {
    /// Send 0xDF after this long without writing (heartbeat − 1 s).
    write_idle: Duration,
    /// A read check fails when nothing arrived for this long (heartbeat + 1 s).
    read_timeout: Duration,
}

impl Timing {
    fn new(heartbeat: Duration) -> Self {
        let margin = Duration::from_secs(1);
        // Tiny test heartbeats would make heartbeat − 1 s zero: fall back to half of it.
        let write_idle = if heartbeat > margin * 2 {
            heartbeat - margin
        } else {
            (heartbeat / 2).max(Duration::from_millis(10))
        };
        Self {
            write_idle,
            read_timeout: heartbeat + margin,
        }
    }
}

/// State of one established session inside the loop.
struct Live<'a> {
    state: &'a State,
    sink: &'a EventSink,
    session: &'a Session,
    wbuf: BytesMut,
    pending: Vec<Pending>,
}

impl Live<'_> {
    fn queue(&mut self, p: &Packet) {
        p.encode_to(&mut self.wbuf);
    }

    fn on_cmd(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Heartbeat => self.wbuf.put_u8(HEARTBEAT_BYTE),
            Cmd::Send { out, reply } => {
                let cfg = &self.state.config;
                let packet = if out.secure {
                    match sealed_packet(
                        out.cmd,
                        out.session_id,
                        out.flags,
                        out.body,
                        &self.session.cipher,
                        cfg.compress_threshold,
                    ) {
                        Ok(p) => p,
                        Err(e) => {
                            if let Some(reply) = reply {
                                let _ = reply.send(Err(e));
                            }
                            return;
                        }
                    }
                } else {
                    Packet {
                        flags: out.flags,
                        ..Packet::with_body(out.cmd, out.session_id, out.body)
                    }
                };
                if let Some(reply) = reply {
                    // Callers that timed out dropped their receiver: forget them here.
                    self.pending.retain(|p| !p.reply.is_closed());
                    self.pending.push(Pending {
                        key: (out.cmd.code(), out.session_id),
                        reply,
                    });
                }
                self.queue(&packet);
            }
        }
    }

    /// Handles one packet from the server; `Some` ends the session.
    fn on_packet(&mut self, p: Packet) -> Option<End> {
        let cfg = &self.state.config;
        let cipher = Some(&self.session.cipher);
        if let Some((key, result)) = as_response(&p, cipher, cfg.max_packet_size) {
            if let Some(i) = self.pending.iter().position(|x| x.key == key) {
                let _ = self.pending.swap_remove(i).reply.send(result);
                return None;
            }
            if let Err(ClientError::Rejected { cmd, code, reason }) = result {
                let end = (cmd != Command::Handshake.code() && cmd != Command::FastConnect.code())
                    .then(|| {
                        End::Lost(format!(
                            "server error for cmd {cmd}: code {code} {reason:?}"
                        ))
                    });
                self.sink.emit(Event::Error { cmd, code, reason });
                // Spec §4.5 step 6: the Java client reconnects on such errors.
                return end;
            }
            tracing::debug!(?key, "answer for no pending request ignored");
            return None;
        }
        match p.cmd {
            Command::Push => match body::open(&p, cipher, cfg.max_packet_size) {
                Ok(content) => {
                    let auto = p.has_flag(flags::AUTO_ACK);
                    if auto && cfg.auto_ack {
                        // Acked before the application sees it: "on receipt" (spec §4.5).
                        self.queue(&Packet::new(Command::Ack, p.session_id));
                    }
                    self.sink.emit(Event::Push {
                        message_id: p.session_id,
                        flags: p.flags,
                        content,
                        needs_ack: p.has_flag(flags::BIZ_ACK) || (auto && !cfg.auto_ack),
                    });
                }
                Err(e) => self.decode_failed(&p, &e),
            },
            Command::Kick => {
                match body::open(&p, cipher, cfg.max_packet_size).and_then(|b| Kick::decode(&b)) {
                    Ok(k) => self.sink.emit(Event::Kicked {
                        device_id: k.device_id.unwrap_or_default(),
                        user_id: k.user_id.unwrap_or_default(),
                    }),
                    Err(e) => self.decode_failed(&p, &e),
                }
            }
            // Like the Java client: other commands are logged and ignored.
            other => tracing::debug!(cmd = ?other, "ignoring packet"),
        }
        None
    }

    fn decode_failed(&self, p: &Packet, e: &crate::protocol::ProtocolError) {
        self.sink.emit(Event::Error {
            cmd: p.cmd.code(),
            code: -1,
            reason: format!("cannot decode packet: {e}"),
        });
    }
}

async fn run_session(
    state: &State,
    conn: Conn,
    session: &Session,
    cmds: &mut mpsc::Receiver<Cmd>,
    sink: &EventSink,
) -> End {
    let Conn {
        mut stream,
        mut rbuf,
        early,
    } = conn;
    let max = state.config.max_packet_size;
    let timing = Timing::new(session.heartbeat);
    let mut live = Live {
        state,
        sink,
        session,
        wbuf: BytesMut::new(),
        pending: Vec::new(),
    };
    let start = Instant::now();
    let (mut last_read, mut last_write, mut last_hb) = (start, start, start);
    let mut next_check = start + timing.read_timeout;
    let mut misses = 0u32;
    let timer = tokio::time::sleep_until(next_check);
    tokio::pin!(timer);

    let mut end = None;
    for p in early {
        if end.is_none() {
            end = live.on_packet(p);
        }
    }

    let end = match end {
        Some(end) => end,
        None => loop {
            // Everything already buffered first (several packets may arrive in one read).
            let decoded = loop {
                match decode_frame(&mut rbuf, max) {
                    Ok(Some(Frame::Heartbeat)) => {}
                    Ok(Some(Frame::Packet(p))) => {
                        if let Some(end) = live.on_packet(p) {
                            break Err(end);
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(End::Lost(format!("protocol error: {e}"))),
                }
            };
            if let Err(end) = decoded {
                break end;
            }
            if rbuf.is_empty() && rbuf.capacity() > 0 {
                // Idle connections hold no read buffer.
                rbuf = BytesMut::new();
            }

            // Heartbeat when nothing was written for a while, or when nothing was read
            // (a busy writer would otherwise get no echo and time its own reads out).
            let hb_due =
                (last_write + timing.write_idle).min(last_read.max(last_hb) + timing.write_idle);
            timer.as_mut().reset(hb_due.min(next_check));

            tokio::select! {
                biased;
                () = state.cancel.cancelled() => {
                    break End::Closed("closed by client".to_string());
                }
                ready = stream.readable() => {
                    if let Err(e) = ready {
                        break End::Lost(format!("read failed: {e}"));
                    }
                    if rbuf.capacity() - rbuf.len() < READ_CHUNK / 4 {
                        rbuf.reserve(READ_CHUNK);
                    }
                    match stream.try_read_buf(&mut rbuf) {
                        Ok(0) => break End::Lost("connection closed by server".to_string()),
                        Ok(_) => last_read = Instant::now(),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => break End::Lost(format!("read failed: {e}")),
                    }
                }
                ready = stream.writable(), if !live.wbuf.is_empty() => {
                    if let Err(e) = ready {
                        break End::Lost(format!("write failed: {e}"));
                    }
                    match stream.try_write(&live.wbuf) {
                        Ok(n) => {
                            live.wbuf.advance(n);
                            last_write = Instant::now();
                            if live.wbuf.is_empty() {
                                live.wbuf = BytesMut::new();
                            }
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(e) => break End::Lost(format!("write failed: {e}")),
                    }
                }
                cmd = cmds.recv(), if live.wbuf.len() < WRITE_HIGH_WATER => match cmd {
                    Some(cmd) => live.on_cmd(cmd),
                    None => break End::Closed("client dropped".to_string()),
                },
                () = &mut timer => {
                    let now = Instant::now();
                    if now >= next_check {
                        if now.duration_since(last_read) > timing.read_timeout {
                            misses += 1;
                            if misses >= MAX_READ_MISSES {
                                break End::Lost("read timeout".to_string());
                            }
                        } else {
                            misses = 0;
                        }
                        next_check = now + timing.read_timeout;
                    }
                    if now >= hb_due {
                        live.wbuf.put_u8(HEARTBEAT_BYTE);
                        last_hb = now;
                        // Counted as written now, so the timer does not fire again before
                        // the byte is actually flushed.
                        last_write = now;
                    }
                }
            }
        },
    };

    if let End::Closed(_) = end {
        // Graceful: flush what callers already queued (ACKs, unbind), then FIN.
        let flush = async {
            stream.write_all(&live.wbuf).await?;
            stream.shutdown().await
        };
        let _ = tokio::time::timeout(CLOSE_FLUSH, flush).await;
    }
    for p in live.pending.drain(..) {
        let err = match end {
            End::Closed(_) => ClientError::Closed,
            End::Lost(_) => ClientError::ConnectionLost,
        };
        let _ = p.reply.send(Err(err));
    }
    end
}
