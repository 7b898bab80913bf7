//! Client tests against a scripted fake server built from the protocol module.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::*;
use crate::protocol::crypto::{AesCipher, Cipher, RsaCipher, RsaKeys, mix_keys, random_key};
use crate::protocol::crypto::{DEFAULT_PRIVATE_KEY, DEFAULT_PUBLIC_KEY};
use crate::protocol::message::{
    ErrorMessage, FastConnectOk, FastConnectRequest, HandshakeOk, HandshakeRequest, Kick, OkMessage,
};
use crate::protocol::packet::{Frame, decode_frame};
use crate::protocol::{Packet, body, flags};

/// Upper bound for every test.
const LIMIT: Duration = Duration::from_secs(15);
const MAX: usize = 1 << 20;

fn server_rsa() -> Arc<RsaCipher> {
    static RSA: OnceLock<Arc<RsaCipher>> = OnceLock::new();
    RSA.get_or_init(|| {
        Arc::new(RsaCipher::new(Arc::new(
            RsaKeys::from_base64(DEFAULT_PRIVATE_KEY, DEFAULT_PUBLIC_KEY).unwrap(),
        )))
    })
    .clone()
}

/// What the fake server learnt from a handshake.
struct Hs {
    ticket: String,
    session_key: [u8; 16],
    iv: [u8; 16],
    req: HandshakeRequest,
}

/// The server side of one connection.
struct Peer {
    stream: TcpStream,
    rbuf: BytesMut,
    cipher: Option<Cipher>,
}

impl Peer {
    async fn accept(listener: &TcpListener) -> Self {
        let (stream, _) = listener.accept().await.unwrap();
        Self {
            stream,
            rbuf: BytesMut::new(),
            cipher: None,
        }
    }

    /// Next frame; `None` on EOF.
    async fn frame(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = decode_frame(&mut self.rbuf, MAX).unwrap() {
                return Some(f);
            }
            if self.stream.read_buf(&mut self.rbuf).await.unwrap_or(0) == 0 {
                return None;
            }
        }
    }

    /// Next packet, heartbeats skipped.
    async fn packet(&mut self) -> Packet {
        loop {
            match self.frame().await.expect("client closed the connection") {
                Frame::Heartbeat => continue,
                Frame::Packet(p) => return p,
            }
        }
    }

    async fn send(&mut self, p: Packet) {
        self.stream.write_all(&p.to_bytes()).await.unwrap();
    }

    async fn send_sealed(&mut self, cmd: Command, sid: i32, extra: u8, plain: Vec<u8>) {
        let (body, f) = body::seal(plain, self.cipher.as_ref(), 1024).unwrap();
        self.send(Packet {
            flags: f | extra,
            body,
            ..Packet::new(cmd, sid)
        })
        .await;
    }

    fn open(&self, p: &Packet) -> Bytes {
        body::open(p, self.cipher.as_ref(), MAX).unwrap()
    }

    async fn handshake_with_key(&mut self, heartbeat: i32, server_key: Vec<u8>) -> Hs {
        let p = self.packet().await;
        assert_eq!(p.cmd, Command::Handshake);
        assert!(p.has_flag(flags::CRYPTO));
        let plain = body::open(&p, Some(&Cipher::Rsa(server_rsa())), MAX).unwrap();
        let req = HandshakeRequest::decode(&plain).unwrap();
        let ck: [u8; 16] = req.client_key.clone().unwrap().try_into().unwrap();
        let iv: [u8; 16] = req.iv.clone().unwrap().try_into().unwrap();
        let ticket = format!("ticket-{}", hex::encode(random_key()));
        let ok = HandshakeOk {
            server_key: Some(server_key.clone()),
            heartbeat,
            session_id: Some(ticket.clone()),
            expire_time: now_millis() + 86_400_000,
        };
        self.cipher = Some(Cipher::Aes(AesCipher::new(ck, iv)));
        self.send_sealed(Command::Handshake, p.session_id, 0, ok.encode())
            .await;
        let sk: [u8; 16] = server_key.try_into().unwrap_or([0; 16]);
        let session_key = mix_keys(&ck, &sk);
        self.cipher = Some(Cipher::Aes(AesCipher::new(session_key, iv)));
        Hs {
            ticket,
            session_key,
            iv,
            req,
        }
    }

    async fn handshake(&mut self, heartbeat: i32) -> Hs {
        self.handshake_with_key(heartbeat, random_key().to_vec())
            .await
    }

    /// The next connection on `listener`, past a full handshake.
    async fn handshaken(listener: &TcpListener, heartbeat: i32) -> (Self, Hs) {
        let mut peer = Self::accept(listener).await;
        let hs = peer.handshake(heartbeat).await;
        (peer, hs)
    }

    /// Reads a FAST_CONNECT, checks the ticket, accepts it and restores the session cipher.
    async fn accept_fast_connect(&mut self, ticket: &str, key: [u8; 16], iv: [u8; 16], hb: i32) {
        let p = self.packet().await;
        assert_eq!(p.cmd, Command::FastConnect);
        assert_eq!(p.flags, 0, "fast connect is sent raw");
        let req = FastConnectRequest::decode(&p.body).unwrap();
        assert_eq!(req.session_id.as_deref(), Some(ticket));
        let ok = FastConnectOk { heartbeat: hb }.encode();
        self.send(Packet::with_body(Command::FastConnect, p.session_id, ok))
            .await;
        self.cipher = Some(Cipher::Aes(AesCipher::new(key, iv)));
    }

    /// Reads a BIND/UNBIND; returns its sessionId and message (no answer sent).
    async fn expect_bind(&mut self, cmd: Command) -> (i32, BindUser) {
        let p = self.packet().await;
        assert_eq!(p.cmd, cmd);
        assert!(p.has_flag(flags::CRYPTO));
        (p.session_id, BindUser::decode(&self.open(&p)).unwrap())
    }

    async fn ok(&mut self, cmd: Command, sid: i32) {
        let m = OkMessage {
            cmd: cmd.code(),
            code: 0,
            data: Some("ok".into()),
        };
        self.send(Packet::with_body(Command::Ok, sid, m.encode()))
            .await;
    }

    async fn error(&mut self, cmd: Command, sid: i32, code: i8, reason: &str) {
        let m = ErrorMessage {
            cmd: cmd.code(),
            code,
            reason: Some(reason.into()),
            data: None,
        };
        self.send(Packet::with_body(Command::Error, sid, m.encode()))
            .await;
    }
}

async fn listener() -> (TcpListener, SocketAddr) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

fn config(addr: SocketAddr, device: &str) -> ClientConfig {
    let mut c =
        ClientConfig::new(addr.to_string(), device).with_reconnect(ReconnectPolicy::disabled());
    c.request_timeout = Duration::from_secs(3);
    c
}

/// Runs `script` as the fake server on a fresh loopback listener; the test joins the handle.
async fn serve<T, Fut>(script: impl FnOnce(TcpListener) -> Fut) -> (SocketAddr, JoinHandle<T>)
where
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (l, addr) = listener().await;
    (addr, tokio::spawn(script(l)))
}

/// A client connected with `cfg` whose first event (checked) is `Connected`.
async fn connected(cfg: ClientConfig) -> (Client, EventStream) {
    let (client, mut events) = Client::connect(cfg).await.unwrap();
    let first = next(&mut events).await;
    assert!(matches!(first, Event::Connected { .. }), "{first:?}");
    (client, events)
}

/// The next event, which must be a `Disconnected` with this `will_reconnect`; its reason.
async fn expect_disconnected(events: &mut EventStream, will_reconnect: bool) -> String {
    match next(events).await {
        Event::Disconnected {
            reason,
            will_reconnect: w,
        } if w == will_reconnect => reason,
        other => panic!("expected a disconnect (will_reconnect {will_reconnect}), got {other:?}"),
    }
}

async fn next(events: &mut EventStream) -> Event {
    tokio::time::timeout(Duration::from_secs(8), events.recv())
        .await
        .expect("no event in time")
        .expect("event stream ended")
}

fn ticket(device: &str, expire_time: i64) -> StoredTicket {
    StoredTicket {
        session_id: "stored-ticket".into(),
        expire_time,
        session_key: random_key(),
        iv: random_key(),
        device_id: device.into(),
    }
}

async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .expect("test timed out")
}

#[tokio::test]
async fn handshake_bind_unbind_and_rejected_bind() {
    bounded(async {
        let (addr, server) = serve(|l| async move {
            let (mut peer, hs) = Peer::handshaken(&l, 60_000).await;
            assert_eq!(hs.req.device_id.as_deref(), Some("dev-1"));
            assert_eq!(hs.req.os_name.as_deref(), Some("android"));
            assert_eq!(hs.req.max_heartbeat, 240_000);
            let (sid, bind) = peer.expect_bind(Command::Bind).await;
            assert_eq!(bind.user_id.as_deref(), Some("u1"));
            assert_eq!(bind.tags.as_deref(), Some("t1"));
            // Quirk Q14: a push reusing the request's id must not complete the bind.
            peer.send_sealed(Command::Push, sid, 0, b"x".to_vec()).await;
            peer.ok(Command::Bind, sid).await;

            let (sid, bind) = peer.expect_bind(Command::Bind).await;
            assert_eq!(bind.user_id.as_deref(), Some("u2"));
            assert_eq!(bind.data.as_deref(), Some("d"));
            // An OK for another command with the same id answers nothing.
            peer.ok(Command::Unbind, sid).await;
            peer.ok(Command::Bind, sid).await;

            let (sid, _) = peer.expect_bind(Command::Unbind).await;
            peer.ok(Command::Unbind, sid).await;

            let (sid, _) = peer.expect_bind(Command::Bind).await;
            peer.error(Command::Bind, sid, 0, "bind failed").await;
            hs
        })
        .await;

        let cfg = config(addr, "dev-1").with_user("u1", Some("t1"));
        let (client, mut events) = Client::connect(cfg).await.unwrap();
        assert!(client.is_connected());
        assert_eq!(client.heartbeat_ms(), 60_000);
        assert_eq!(
            next(&mut events).await,
            Event::Connected {
                fast: false,
                heartbeat: Duration::from_secs(60),
                reconnect: false
            }
        );
        match next(&mut events).await {
            Event::Push {
                content, needs_ack, ..
            } => {
                assert_eq!(&content[..], b"x");
                assert!(!needs_ack);
            }
            other => panic!("unexpected {other:?}"),
        }
        client.bind("u2", None, Some("d")).await.unwrap();
        assert_eq!(client.bound_user().as_deref(), Some("u2"));
        client.unbind("u2").await.unwrap();
        assert_eq!(client.bound_user(), None);
        match client.bind("u3", None, None).await {
            Err(ClientError::Rejected {
                cmd: 5,
                code: 0,
                reason,
            }) => {
                assert_eq!(reason, "bind failed")
            }
            other => panic!("unexpected {other:?}"),
        }

        let hs = server.await.unwrap();
        let t = client.session_ticket().unwrap();
        assert_eq!(t.session_id, hs.ticket);
        assert_eq!(t.session_key, hs.session_key);
        assert_eq!(t.iv, hs.iv);
        assert_eq!(t.device_id, "dev-1");
    })
    .await;
}

#[tokio::test]
async fn fast_connect_resumes_the_stored_session() {
    bounded(async {
        let (l, addr) = listener().await;
        let stored = ticket("dev-fc", now_millis() + 3_600_000);
        let (key, iv) = (stored.session_key, stored.iv);
        let server = tokio::spawn(async move {
            let mut peer = Peer::accept(&l).await;
            peer.accept_fast_connect("stored-ticket", key, iv, 45_000)
                .await;
            let (sid, bind) = peer.expect_bind(Command::Bind).await;
            assert_eq!(bind.user_id.as_deref(), Some("u-fc"));
            peer.ok(Command::Bind, sid).await;
            peer.send_sealed(Command::Push, 900, flags::AUTO_ACK, b"after-fc".to_vec())
                .await;
            let ack = peer.packet().await;
            assert_eq!((ack.cmd, ack.session_id), (Command::Ack, 900));
        });
        let store = Arc::new(MemoryTicketStore::with_ticket(stored.clone()));
        let cfg = config(addr, "dev-fc")
            .with_user("u-fc", None)
            .with_ticket_store(store.clone());
        let (client, mut events) = Client::connect(cfg).await.unwrap();
        assert_eq!(
            next(&mut events).await,
            Event::Connected {
                fast: true,
                heartbeat: Duration::from_secs(45),
                reconnect: false
            }
        );
        match next(&mut events).await {
            Event::Push { content, .. } => assert_eq!(&content[..], b"after-fc"),
            other => panic!("unexpected {other:?}"),
        }
        server.await.unwrap();
        assert_eq!(store.load(), Some(stored));
        client.close().await;
    })
    .await;
}

#[tokio::test]
async fn refused_fast_connect_falls_back_to_handshake_on_the_same_socket() {
    bounded(async {
        let (addr, server) = serve(|l| async move {
            let mut peer = Peer::accept(&l).await;
            let p = peer.packet().await;
            assert_eq!(p.cmd, Command::FastConnect);
            peer.error(Command::FastConnect, p.session_id, 103, "session expired")
                .await;
            peer.handshake(30_000).await
        })
        .await;
        let store = Arc::new(MemoryTicketStore::with_ticket(ticket(
            "dev-x",
            now_millis() + 3_600_000,
        )));
        let cfg = config(addr, "dev-x").with_ticket_store(store.clone());
        let (client, mut events) = Client::connect(cfg).await.unwrap();
        assert!(matches!(
            next(&mut events).await,
            Event::Connected { fast: false, .. }
        ));
        let hs = server.await.unwrap();
        let t = store.load().unwrap();
        assert_eq!(t.session_id, hs.ticket);
        assert_eq!(t.session_key, hs.session_key);
        assert_eq!(client.heartbeat_ms(), 30_000);
    })
    .await;
}

#[tokio::test]
async fn expired_ticket_is_not_offered() {
    bounded(async {
        let (addr, server) = serve(|l| async move {
            let mut peer = Peer::accept(&l).await;
            // handshake() asserts that the first packet is a HANDSHAKE.
            peer.handshake(30_000).await;
        })
        .await;
        let store = Arc::new(MemoryTicketStore::with_ticket(ticket(
            "dev-e",
            now_millis() - 1,
        )));
        let cfg = config(addr, "dev-e").with_ticket_store(store);
        let (_client, _events) = Client::connect(cfg).await.unwrap();
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn auto_ack_push_is_acked_with_its_session_id() {
    bounded(async {
        let (addr, server) = serve(|l| async move {
            let (mut peer, _) = Peer::handshaken(&l, 60_000).await;
            peer.send_sealed(Command::Push, 5000, flags::AUTO_ACK, b"hello".to_vec())
                .await;
            let ack = peer.packet().await;
            assert_eq!(ack.cmd, Command::Ack);
            assert_eq!(ack.session_id, 5000);
            assert_eq!((ack.flags, ack.body.len()), (0, 0));
            // A large push arrives compressed.
            peer.send_sealed(Command::Push, 5001, 0, vec![b'a'; 5000])
                .await;
        })
        .await;
        let (client, mut events) = connected(config(addr, "dev-aa")).await;
        match next(&mut events).await {
            Event::Push {
                message_id,
                flags: f,
                content,
                needs_ack,
            } => {
                assert_eq!(message_id, 5000);
                assert!(f & flags::AUTO_ACK != 0);
                assert_eq!(&content[..], b"hello");
                assert!(!needs_ack);
            }
            other => panic!("unexpected {other:?}"),
        }
        match next(&mut events).await {
            Event::Push {
                flags: f, content, ..
            } => {
                assert!(f & flags::COMPRESS != 0);
                assert_eq!(content.len(), 5000);
            }
            other => panic!("unexpected {other:?}"),
        }
        server.await.unwrap();
        drop(client);
    })
    .await;
}

#[tokio::test]
async fn biz_ack_push_waits_for_the_application() {
    bounded(async {
        let (l, addr) = listener().await;
        let (window_over, window_over_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let (mut peer, _) = Peer::handshaken(&l, 60_000).await;
            peer.send_sealed(Command::Push, 6000, flags::BIZ_ACK, b"biz".to_vec())
                .await;
            // Nothing may come back on its own: an absence, so a window is what is tested.
            assert!(
                tokio::time::timeout(Duration::from_millis(300), peer.frame())
                    .await
                    .is_err()
            );
            window_over.send(()).unwrap();
            let ack = peer.packet().await;
            assert_eq!((ack.cmd, ack.session_id), (Command::Ack, 6000));
        });
        let (client, mut events) = connected(config(addr, "dev-biz")).await;
        let id = match next(&mut events).await {
            Event::Push {
                message_id,
                needs_ack: true,
                ..
            } => message_id,
            other => panic!("unexpected {other:?}"),
        };
        // The application acknowledges only after the peer has watched for an automatic ACK.
        window_over_rx.await.unwrap();
        client.ack(id).await.unwrap();
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn kick_is_reported_and_the_connection_kept() {
    bounded(async {
        let (addr, server) = serve(|l| async move {
            let mut peer = Peer::accept(&l).await;
            let peer_ip = peer.stream.peer_addr().unwrap().ip();
            peer.handshake(60_000).await;
            let kick = Kick {
                device_id: Some("dev-k".into()),
                user_id: Some("u-k".into()),
            };
            peer.send_sealed(Command::Kick, 0, 0, kick.encode()).await;
            peer.send_sealed(Command::Push, 1, 0, b"still here".to_vec())
                .await;
            (peer_ip, peer)
        })
        .await;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let cfg = config(addr, "dev-k")
            .with_local_ip("127.0.0.2".parse().unwrap())
            .on_event(move |e| sink.lock().unwrap().push(e));
        let (client, mut events) = Client::connect(cfg).await.unwrap();
        // Callback mode: the stream carries nothing.
        assert_eq!(events.recv().await, None);
        let (peer_ip, _peer) = server.await.unwrap();
        assert_eq!(peer_ip.to_string(), "127.0.0.2");
        for _ in 0..100 {
            if seen.lock().unwrap().len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let seen = seen.lock().unwrap().clone();
        assert!(matches!(seen[0], Event::Connected { .. }));
        assert_eq!(
            seen[1],
            Event::Kicked {
                device_id: "dev-k".into(),
                user_id: "u-k".into()
            }
        );
        assert!(matches!(&seen[2], Event::Push { content, .. } if &content[..] == b"still here"));
        assert!(client.is_connected());
    })
    .await;
}

#[tokio::test]
async fn heartbeats_are_sent_when_idle_and_on_demand() {
    bounded(async {
        let (l, addr) = listener().await;
        let (two_idle, two_idle_rx) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(async move {
            let (mut peer, _) = Peer::handshaken(&l, 1200).await;
            let start = tokio::time::Instant::now();
            for _ in 0..2 {
                assert_eq!(peer.frame().await, Some(Frame::Heartbeat));
                // Echo, as the server does.
                peer.stream.write_all(&[0xDF]).await.unwrap();
            }
            // Write idle = 600 ms for a 1.2 s heartbeat.
            assert!(start.elapsed() >= Duration::from_millis(1000));
            let asked = tokio::time::Instant::now();
            two_idle.send(()).unwrap();
            assert_eq!(peer.frame().await, Some(Frame::Heartbeat));
            // The next idle one is due 600 ms after the last write; this one came on demand.
            assert!(asked.elapsed() < Duration::from_millis(600));
        });
        let (client, _events) = Client::connect(config(addr, "dev-hb")).await.unwrap();
        assert_eq!(client.heartbeat_interval(), Duration::from_millis(1200));
        two_idle_rx.await.unwrap();
        client.heartbeat().await.unwrap();
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn silent_server_is_detected_and_the_client_reconnects() {
    bounded(async {
        let (addr, server) = serve(|l| async move {
            let (mut peer, hs) = Peer::handshaken(&l, 300).await;
            // Never echo: read heartbeats until the client gives up on this connection.
            while peer.frame().await.is_some() {}
            let mut peer2 = Peer::accept(&l).await;
            peer2
                .accept_fast_connect(&hs.ticket, hs.session_key, hs.iv, 60_000)
                .await;
        })
        .await;
        let cfg = config(addr, "dev-rt").with_reconnect(ReconnectPolicy::scaled(
            Duration::from_millis(10),
            Duration::from_millis(50),
        ));
        let (_client, mut events) = Client::connect(cfg).await.unwrap();
        assert!(matches!(next(&mut events).await, Event::Connected { .. }));
        assert_eq!(expect_disconnected(&mut events, true).await, "read timeout");
        assert!(matches!(
            next(&mut events).await,
            Event::Connected {
                fast: true,
                reconnect: true,
                ..
            }
        ));
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn reconnects_after_drop_with_fast_connect_and_rebind_then_closes() {
    bounded(async {
        let (addr, server) = serve(|l| async move {
            let (mut peer, hs) = Peer::handshaken(&l, 60_000).await;
            let (sid, _) = peer.expect_bind(Command::Bind).await;
            peer.ok(Command::Bind, sid).await;
            drop(peer);

            let mut peer = Peer::accept(&l).await;
            peer.accept_fast_connect(&hs.ticket, hs.session_key, hs.iv, 60_000)
                .await;
            let (sid, bind) = peer.expect_bind(Command::Bind).await;
            assert_eq!(bind.user_id.as_deref(), Some("u-r"));
            assert_eq!(bind.tags.as_deref(), Some("tag"));
            peer.ok(Command::Bind, sid).await;
            // The client closes gracefully: EOF.
            assert_eq!(peer.frame().await, None);
        })
        .await;
        let cfg = config(addr, "dev-r")
            .with_user("u-r", Some("tag"))
            .with_reconnect(ReconnectPolicy::scaled(
                Duration::from_millis(10),
                Duration::from_millis(50),
            ));
        let (client, mut events) = Client::connect(cfg).await.unwrap();
        assert!(matches!(
            next(&mut events).await,
            Event::Connected { fast: false, .. }
        ));
        expect_disconnected(&mut events, true).await;
        assert!(matches!(
            next(&mut events).await,
            Event::Connected {
                fast: true,
                reconnect: true,
                ..
            }
        ));
        assert!(client.is_connected());
        client.close().await;
        server.await.unwrap();
        expect_disconnected(&mut events, false).await;
        assert_eq!(events.recv().await, None);
        assert!(!client.is_connected());
        assert!(matches!(
            client.bind("u", None, None).await,
            Err(ClientError::Closed)
        ));
    })
    .await;
}

#[tokio::test]
async fn unsolicited_error_ends_the_session_without_reconnect() {
    bounded(async {
        let (addr, server) = serve(|l| async move {
            let (mut peer, _) = Peer::handshaken(&l, 60_000).await;
            // An error for a handshake/fast-connect is only reported...
            peer.error(Command::Handshake, 4242, 102, "repeat handshake")
                .await;
            // ...one for any other command ends the session (spec §4.5 step 6).
            peer.error(Command::Push, 77, 100, "handle message error")
                .await;
            assert_eq!(peer.frame().await, None);
        })
        .await;
        let (client, mut events) = connected(config(addr, "dev-err")).await;
        assert_eq!(
            next(&mut events).await,
            Event::Error {
                cmd: 2,
                code: 102,
                reason: "repeat handshake".into()
            }
        );
        assert_eq!(
            next(&mut events).await,
            Event::Error {
                cmd: 15,
                code: 100,
                reason: "handle message error".into()
            }
        );
        expect_disconnected(&mut events, false).await;
        assert_eq!(events.recv().await, None);
        assert!(!client.is_connected());
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn upstream_push_waits_for_the_matching_ack() {
    bounded(async {
        let (addr, server) = serve(|l| async move {
            let (mut peer, _) = Peer::handshaken(&l, 60_000).await;
            let p = peer.packet().await;
            assert_eq!(p.cmd, Command::Push);
            assert!(p.has_flag(flags::AUTO_ACK | flags::CRYPTO));
            assert!(p.has_flag(flags::COMPRESS), "3000 bytes > 1024 threshold");
            assert_eq!(peer.open(&p), vec![b'z'; 3000]);
            // Wrong id, then the right one.
            peer.send(Packet::new(Command::Ack, p.session_id + 1000))
                .await;
            peer.send(Packet::new(Command::Ack, p.session_id)).await;

            let p = peer.packet().await;
            assert_eq!(p.flags & flags::ACK_MASK, 0);
            assert_eq!(&peer.open(&p)[..], b"no ack");
            // The third push gets no ACK: the client times out.
            let p = peer.packet().await;
            assert!(p.has_flag(flags::AUTO_ACK));
            peer
        })
        .await;
        let mut cfg = config(addr, "dev-up");
        cfg.request_timeout = Duration::from_millis(300);
        let (client, _events) = Client::connect(cfg).await.unwrap();
        client
            .push_upstream(vec![b'z'; 3000], AckModel::AutoAck)
            .await
            .unwrap();
        client
            .push_upstream(&b"no ack"[..], AckModel::NoAck)
            .await
            .unwrap();
        assert!(matches!(
            client.push_upstream(&b"lost"[..], AckModel::AutoAck).await,
            Err(ClientError::Timeout { .. })
        ));
        server.await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn connect_errors_are_clear() {
    bounded(async {
        // Wrong server key length.
        let (addr, server) = serve(|l| async move {
            let mut peer = Peer::accept(&l).await;
            peer.handshake_with_key(60_000, vec![1; 8]).await;
            // Then a server that never answers.
            let mut peer = Peer::accept(&l).await;
            let _ = peer.packet().await;
            peer.frame().await
        })
        .await;
        assert!(matches!(
            Client::connect(config(addr, "dev-k8")).await,
            Err(ClientError::InvalidServerKey { len: 8 })
        ));
        let mut cfg = config(addr, "dev-slow");
        cfg.request_timeout = Duration::from_millis(200);
        assert!(matches!(
            Client::connect(cfg).await,
            Err(ClientError::Timeout { what: "handshake" })
        ));
        server.await.unwrap();

        // Nobody listening.
        let (l, addr) = listener().await;
        drop(l);
        assert!(matches!(
            Client::connect(config(addr, "dev-io")).await,
            Err(ClientError::Io(_))
        ));
        assert!(matches!(
            Client::connect(config(addr, "")).await,
            Err(ClientError::Config(_))
        ));
    })
    .await;
}

#[test]
fn backoff_follows_the_java_client() {
    let p = ReconnectPolicy::default();
    let secs = |n| p.delay_before(n).as_secs();
    assert_eq!(
        (secs(1), secs(2), secs(3), secs(9), secs(10)),
        (0, 0, 3, 9, 10)
    );
    assert_eq!((secs(11), secs(12), secs(13)), (600, 0, 3));
    assert!(p.allows(1000) && !p.allows(1001));
    assert!(!ReconnectPolicy::disabled().allows(1));
    let fast = ReconnectPolicy::scaled(Duration::from_millis(10), Duration::from_millis(50));
    assert_eq!(fast.delay_before(4), Duration::from_millis(40));
    assert_eq!(fast.delay_before(8), Duration::from_millis(50));
}

#[test]
fn request_ids_are_positive_and_increasing() {
    let a = next_request_id();
    let b = next_request_id();
    assert!(a > 0 && b > a);
}

/// Load tests hold 10,000+ idle clients: keep the per-connection task small.
#[test]
fn connection_task_stays_small() {
    fn size_of_future<F: std::future::Future>(_: &F) -> usize {
        std::mem::size_of::<F>()
    }
    let config = ClientConfig::new("127.0.0.1:1", "d");
    let state = Arc::new(State {
        rsa: rsa_cipher(&config).unwrap(),
        config,
        connected: AtomicBool::new(false),
        heartbeat_ms: AtomicU32::new(0),
        bound: Mutex::new(None),
        cancel: CancellationToken::new(),
    });
    let (_tx, rx) = mpsc::channel(1);
    let (first, _) = oneshot::channel();
    let (events, _) = mpsc::unbounded_channel();
    let task = driver::run(state, rx, event::EventSink::Channel(events), first);
    assert!(size_of_future(&task) < 4096, "{}", size_of_future(&task));
}

/// An HTTP proxy reply whose body does not open (too large inflated, corrupt) fails its own
/// request at once: the header names it, so it is not left to time out.
#[test]
fn an_http_reply_that_does_not_open_fails_its_request() {
    use crate::protocol::Command;
    // A body flagged compressed that is no zlib stream.
    let mut p = Packet::with_body(Command::HttpProxy, 7, b"not zlib at all".to_vec());
    p.flags = flags::COMPRESS;
    let (key, reply) = super::conn::as_response(&p, None, 1024).expect("answered");
    assert_eq!(key, (Command::HttpProxy.code(), 7));
    assert!(matches!(reply, Err(ClientError::Protocol(_))), "{reply:?}");
}
