//! Opening a session: TCP connect, FAST_CONNECT or HANDSHAKE, then the automatic BIND
//! (spec §4.2, §4.4, §4.5, §8.2).
//!
//! This phase is strictly request/response, so it runs as straight-line code on the socket;
//! packets that arrive meanwhile and answer nothing are kept for the session loop.

use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpSocket;
use tokio::time::Instant;

use super::error::ClientError;
use super::socket::{Relay, Socket};
use super::ticket::StoredTicket;
use super::{BindInfo, ClientConfig, State, now_millis};
use crate::protocol::body;
use crate::protocol::crypto::{AES_KEY_LEN, AesCipher, Cipher, mix_keys, random_key};
use crate::protocol::message::{
    BindUser, ErrorMessage, FastConnectOk, FastConnectRequest, HandshakeOk, HandshakeRequest,
    HttpResponse, OkMessage,
};
use crate::protocol::packet::{Frame, decode_frame};
use crate::protocol::{Command, Message as _, Packet};

/// Packets kept from the opening phase for the session loop; more are dropped (a sane server
/// sends nothing unsolicited before the session exists).
const MAX_EARLY: usize = 32;
/// Read granularity: enough for typical packets without holding much memory.
pub(super) const READ_CHUNK: usize = 4096;

/// A correlation key: the *request's* command code and sessionId (quirk Q14: never the
/// sessionId alone, since server pushes share the numeric space).
pub(super) type Key = (u8, i32);

/// A positive answer to a request.
#[derive(Debug)]
pub(super) enum Reply {
    /// HandshakeOk or FastConnectOk (body still sealed).
    Packet(Packet),
    /// OK for BIND/UNBIND (or any other command); its `data` text is not needed.
    Ok,
    /// ACK for an upstream push.
    Ack,
    /// The answer to an HTTP_PROXY request (sealed or raw, opened).
    Http(HttpResponse),
}

/// If `p` answers a request, the request's key and the outcome. OK/ERROR name the answered
/// command in their body; ACK answers PUSH; HandshakeOk/FastConnectOk reuse the request's
/// code. Undecodable OK/ERROR bodies answer nothing.
pub(super) fn as_response(
    p: &Packet,
    cipher: Option<&Cipher>,
    max: usize,
) -> Option<(Key, Result<Reply, ClientError>)> {
    let sid = p.session_id;
    match p.cmd {
        Command::Ok => {
            let m = OkMessage::decode(&body::open(p, cipher, max).ok()?).ok()?;
            Some(((m.cmd, sid), Ok(Reply::Ok)))
        }
        Command::Error => {
            let m = ErrorMessage::decode(&body::open(p, cipher, max).ok()?).ok()?;
            let err = ClientError::Rejected {
                cmd: m.cmd,
                code: m.code,
                reason: m.reason.unwrap_or_default(),
            };
            Some(((m.cmd, sid), Err(err)))
        }
        Command::Ack => Some(((Command::Push.code(), sid), Ok(Reply::Ack))),
        Command::HttpProxy => {
            // Upstream answers are sealed, the proxy's own (408, 502, ...) raw: the flags say.
            // The request waiting for it is known from the header alone: a body that does
            // not open (over `max_packet_size` inflated, say) fails that request at once
            // instead of leaving it to time out.
            let key = (Command::HttpProxy.code(), sid);
            let m = body::open(p, cipher, max)
                .and_then(|b| HttpResponse::decode(&b))
                .map_err(ClientError::from);
            Some((key, m.map(Reply::Http)))
        }
        Command::Handshake | Command::FastConnect => {
            Some(((p.cmd.code(), sid), Ok(Reply::Packet(p.clone()))))
        }
        _ => None,
    }
}

/// The result of the opening phase.
#[derive(Debug)]
pub(super) struct Session {
    /// AES(sessionKey, iv).
    pub cipher: Cipher,
    /// Negotiated heartbeat.
    pub heartbeat: Duration,
    /// Resumed with FAST_CONNECT.
    pub fast: bool,
}

/// A connected socket with its read buffer.
#[derive(Debug)]
pub(super) struct Conn {
    pub stream: Socket,
    pub rbuf: BytesMut,
    /// Unrelated packets received while waiting for an answer.
    pub early: Vec<Packet>,
}

impl Conn {
    async fn open(state: &State) -> Result<Self, ClientError> {
        let cfg = &state.config;
        let addrs: Vec<_> = tokio::net::lookup_host(cfg.server_addr.as_str())
            .await?
            .collect();
        // With a local IP, only an address of the same family can be reached from it.
        let usable: Vec<_> = addrs
            .iter()
            .filter(|a| cfg.local_ip.is_none_or(|ip| ip.is_ipv4() == a.is_ipv4()))
            .copied()
            .collect();
        if usable.is_empty() {
            return Err(ClientError::Config(format!(
                "no usable address for {}",
                cfg.server_addr
            )));
        }
        // Each address in turn, within one connect timeout: `localhost` resolving to ::1
        // first while the server listens on 0.0.0.0, or a host name whose first A record
        // is down, must not fail every attempt (the Java client prefers IPv4).
        let deadline = tokio::time::Instant::now() + cfg.connect_timeout;
        let mut last = None;
        let mut connected = None;
        for addr in usable {
            let socket = if addr.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            if let Some(ip) = cfg.local_ip {
                socket.bind((ip, 0).into())?;
            }
            match tokio::time::timeout_at(deadline, socket.connect(addr)).await {
                Ok(Ok(stream)) => {
                    connected = Some(stream);
                    break;
                }
                Ok(Err(e)) => last = Some(ClientError::from(e)),
                Err(_) => {
                    last = Some(ClientError::Timeout {
                        what: "tcp connect",
                    });
                    break;
                }
            }
        }
        let Some(stream) = connected else {
            return Err(last.unwrap_or(ClientError::Timeout {
                what: "tcp connect",
            }));
        };
        // Requests are small and latency-bound (handshake, ACKs, heartbeats).
        stream.set_nodelay(true)?;
        let stream = match &cfg.tls {
            None => Socket::Tcp(stream),
            Some(tls) => {
                let tls_stream = tokio::time::timeout(
                    cfg.connect_timeout,
                    tls.connect(&cfg.server_addr, stream),
                )
                .await
                .map_err(|_| ClientError::Timeout {
                    what: "tls handshake",
                })?
                .map_err(|e| ClientError::Tls(e.to_string()))?;
                let (inner, relay) = crate::tls::relay(tls_stream)?;
                Socket::Tls(inner, Relay(tokio::spawn(relay)))
            }
        };
        Ok(Self {
            stream,
            rbuf: BytesMut::new(),
            early: Vec::new(),
        })
    }

    async fn write_packet(&mut self, p: &Packet) -> Result<(), ClientError> {
        self.stream.write_all(&p.to_bytes()).await?;
        Ok(())
    }

    async fn read_frame(&mut self, max: usize) -> Result<Frame, ClientError> {
        loop {
            if let Some(frame) = decode_frame(&mut self.rbuf, max)? {
                return Ok(frame);
            }
            self.rbuf.reserve(READ_CHUNK);
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "server closed the connection while opening the session",
                )
                .into());
            }
        }
    }

    /// Reads until the answer for `key` arrives (or `timeout` passes).
    async fn await_response(
        &mut self,
        key: Key,
        cipher: Option<&Cipher>,
        max: usize,
        timeout: Duration,
        what: &'static str,
    ) -> Result<Reply, ClientError> {
        let deadline = Instant::now() + timeout;
        let wait = async {
            loop {
                let Frame::Packet(p) = self.read_frame(max).await? else {
                    continue;
                };
                match as_response(&p, cipher, max) {
                    Some((k, result)) if k == key => return result,
                    _ if self.early.len() < MAX_EARLY => self.early.push(p),
                    _ => {
                        tracing::debug!(cmd = ?p.cmd, "dropping packet received before the session")
                    }
                }
            }
        };
        tokio::time::timeout_at(deadline, wait)
            .await
            .map_err(|_| ClientError::Timeout { what })?
    }

    /// Waits for the answer to request (`cmd`, `sid`), which must be a packet sealed with
    /// `cipher` (not an OK or ERROR), and opens its body.
    async fn sealed_reply(
        &mut self,
        cmd: Command,
        sid: i32,
        cipher: &Cipher,
        cfg: &ClientConfig,
        what: &'static str,
    ) -> Result<Bytes, ClientError> {
        let reply = self
            .await_response(
                (cmd.code(), sid),
                Some(cipher),
                cfg.max_packet_size,
                cfg.request_timeout,
                what,
            )
            .await?;
        let Reply::Packet(p) = reply else {
            return Err(unexpected(what));
        };
        Ok(body::open(&p, Some(cipher), cfg.max_packet_size)?)
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

fn heartbeat_or_default(server: i32, state: &State) -> Duration {
    // A server that negotiates nothing usable gets the client's own wish.
    match u64::try_from(server) {
        Ok(ms) if ms > 0 => Duration::from_millis(ms),
        _ => state.config.max_heartbeat,
    }
}

/// Connects and opens a session: FAST_CONNECT with a usable stored ticket (falling back to a
/// full handshake on the same socket when the server refuses it), else HANDSHAKE; then BIND
/// of the remembered user.
pub(super) async fn establish(state: &State) -> Result<(Conn, Session), ClientError> {
    let mut conn = Conn::open(state).await?;
    let cfg = &state.config;
    let store = &cfg.ticket_store;

    let mut session = None;
    if let Some(ticket) = store.load() {
        if ticket.is_usable(&cfg.device_id, now_millis()) {
            match fast_connect(&mut conn, state, &ticket).await {
                Ok(s) => session = Some(s),
                // Any refusal (103 expired, 104 wrong device): forget the ticket, handshake
                // on the same socket, as the Java client does.
                Err(ClientError::Rejected { code, reason, .. }) => {
                    tracing::debug!(code, %reason, "fast connect refused; full handshake");
                    store.clear();
                }
                Err(e) => return Err(e),
            }
        } else if ticket.device_id == cfg.device_id {
            store.clear();
        }
    }
    let session = match session {
        Some(s) => s,
        None => handshake(&mut conn, state).await?,
    };

    let bind = state.bound_user();
    if let Some(bind) = bind {
        bind_user(&mut conn, state, &session.cipher, &bind).await?;
    }
    Ok((conn, session))
}

async fn fast_connect(
    conn: &mut Conn,
    state: &State,
    ticket: &StoredTicket,
) -> Result<Session, ClientError> {
    let cfg = &state.config;
    let sid = super::next_request_id();
    let req = FastConnectRequest {
        session_id: Some(ticket.session_id.clone()),
        device_id: Some(cfg.device_id.clone()),
        min_heartbeat: millis(cfg.min_heartbeat),
        max_heartbeat: millis(cfg.max_heartbeat),
    };
    // Sent raw (spec §1.6): the server does not know the session yet.
    conn.write_packet(&Packet::with_body(Command::FastConnect, sid, req.encode()))
        .await?;
    let cipher = Cipher::Aes(AesCipher::new(ticket.session_key, ticket.iv));
    let reply = conn
        .sealed_reply(Command::FastConnect, sid, &cipher, cfg, "fast connect")
        .await?;
    let ok = FastConnectOk::decode(&reply)?;
    Ok(Session {
        cipher,
        heartbeat: heartbeat_or_default(ok.heartbeat, state),
        fast: true,
    })
}

async fn handshake(conn: &mut Conn, state: &State) -> Result<Session, ClientError> {
    let cfg = &state.config;
    let client_key = random_key();
    let iv = random_key();
    let req = HandshakeRequest {
        device_id: Some(cfg.device_id.clone()),
        os_name: Some(cfg.os_name.clone()),
        os_version: Some(cfg.os_version.clone()),
        client_version: Some(cfg.client_version.clone()),
        iv: Some(iv.to_vec()),
        client_key: Some(client_key.to_vec()),
        min_heartbeat: millis(cfg.min_heartbeat),
        max_heartbeat: millis(cfg.max_heartbeat),
        timestamp: 0,
    };
    let sid = super::next_request_id();
    let rsa = Cipher::Rsa(state.rsa.clone());
    let (body, flags) = body::seal(req.encode(), Some(&rsa), cfg.compress_threshold)?;
    let packet = Packet {
        flags,
        body,
        ..Packet::new(Command::Handshake, sid)
    };
    conn.write_packet(&packet).await?;

    // HandshakeOk is sealed with the client key, not yet the session key (spec §3.2).
    let hs_cipher = Cipher::Aes(AesCipher::new(client_key, iv));
    let reply = conn
        .sealed_reply(Command::Handshake, sid, &hs_cipher, cfg, "handshake")
        .await?;
    let ok = HandshakeOk::decode(&reply)?;
    let server_key: [u8; AES_KEY_LEN] = ok
        .server_key
        .as_deref()
        .and_then(|k| k.try_into().ok())
        .ok_or(ClientError::InvalidServerKey {
            len: ok.server_key.as_ref().map_or(0, Vec::len),
        })?;
    let session_key = mix_keys(&client_key, &server_key);
    match ok.session_id {
        Some(ticket) if !ticket.is_empty() => cfg.ticket_store.save(StoredTicket {
            session_id: ticket,
            expire_time: ok.expire_time,
            session_key,
            iv,
            device_id: cfg.device_id.clone(),
        }),
        // No ticket (e.g. a server without a session cache): nothing to resume later.
        _ => cfg.ticket_store.clear(),
    }
    Ok(Session {
        cipher: Cipher::Aes(AesCipher::new(session_key, iv)),
        heartbeat: heartbeat_or_default(ok.heartbeat, state),
        fast: false,
    })
}

async fn bind_user(
    conn: &mut Conn,
    state: &State,
    cipher: &Cipher,
    bind: &BindInfo,
) -> Result<(), ClientError> {
    let cfg = &state.config;
    let sid = super::next_request_id();
    let packet = sealed_packet(
        Command::Bind,
        sid,
        0,
        bind.to_message().encode(),
        cipher,
        cfg.compress_threshold,
    )?;
    conn.write_packet(&packet).await?;
    conn.await_response(
        (Command::Bind.code(), sid),
        Some(cipher),
        cfg.max_packet_size,
        cfg.request_timeout,
        "bind",
    )
    .await
    .map(|_| ())
}

/// A packet whose body went through the secure pipeline (compress, then encrypt).
pub(super) fn sealed_packet(
    cmd: Command,
    sid: i32,
    extra_flags: u8,
    plain: Vec<u8>,
    cipher: &Cipher,
    compress_threshold: usize,
) -> Result<Packet, ClientError> {
    let (body, flags): (Bytes, u8) = body::seal(plain, Some(cipher), compress_threshold)?;
    Ok(Packet {
        flags: flags | extra_flags,
        body,
        ..Packet::new(cmd, sid)
    })
}

fn unexpected(what: &'static str) -> ClientError {
    ClientError::Protocol(crate::protocol::ProtocolError::InvalidField {
        field: what,
        reason: "unexpected answer".to_string(),
    })
}

impl BindInfo {
    pub(super) fn to_message(&self) -> BindUser {
        BindUser {
            user_id: Some(self.user_id.clone()),
            data: self.data.clone(),
            tags: self.tags.clone(),
        }
    }
}
