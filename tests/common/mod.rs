//! Shared helpers for the end-to-end tests: in-process servers on an isolated in-memory
//! backend, and a raw wire-level client that speaks MPush with the protocol module only
//! (so the server is checked against the spec, not against our own client SDK).

#![allow(dead_code, clippy::unwrap_used)]

pub mod fault_proxy;
pub mod hooked_cache;
pub mod http;
pub mod launcher;
pub mod routing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use mpush::MPushConfig;
use mpush::protocol::crypto::{AesCipher, Cipher, RsaCipher, RsaKeys, mix_keys, random_key};
use mpush::protocol::message::{ErrorMessage, HandshakeOk, HandshakeRequest, Message, OkMessage};
use mpush::protocol::packet::{Frame, Packet, decode_frame};
use mpush::protocol::{Command, body, flags};
use mpush::{MPushServer, RunningServer};
use mpush_spi_memory::MemoryHub;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub use mpush_spi_memory::testing::{TestCluster as Cluster, WAIT, test_config};

pub use mpush::testkit::free_loopback_port as free_port;

/// A launcher config file's text: every listener and address on loopback, the in-memory
/// cache and MQ, no admin HTTP API, then the `extra` lines (later keys win).
pub fn launcher_conf(extra: &str) -> String {
    format!(
        "mp.net.connect-server-bind-ip = \"127.0.0.1\"\n\
         mp.net.gateway-server-bind-ip = \"127.0.0.1\"\n\
         mp.net.local-ip = \"127.0.0.1\"\n\
         mp.net.public-ip = \"127.0.0.1\"\n\
         mp.spi.cache-manager = memory\n\
         mp.spi.mq-client = memory\n\
         mp.net.admin-http-port = 0\n\
         {extra}\n"
    )
}

/// Puts `config` on Redis in single mode (`redis`: its node(s), comma-separated) for the
/// cache and MQ and on ZooKeeper `zk` for the registry, in the ZooKeeper namespace
/// `namespace`.
pub fn on_redis_and_zk(config: &mut MPushConfig, redis: &str, zk: &str, namespace: &str) {
    config.spi.cache_manager = "redis".into();
    config.spi.mq_client = "redis".into();
    config.spi.service_registry = "zk".into();
    config.redis.cluster_model = "single".into();
    config.redis.nodes = redis.split(',').map(str::to_string).collect();
    config.zk.server_address = zk.into();
    config.zk.namespace = namespace.into();
}

/// [`test_config`] changed by `change`.
pub fn config_with(change: impl FnOnce(&mut MPushConfig)) -> MPushConfig {
    let mut c = test_config();
    change(&mut c);
    c
}

/// A started server on `hub`.
pub async fn start_server(
    hub: &Arc<MemoryHub>,
    config: MPushConfig,
) -> (RunningServer, SocketAddr) {
    start_with(hub, MPushServer::builder().config(config)).await
}

/// A started server on a hub of its own: for tests where nothing else shares its backends.
pub async fn start_alone(config: MPushConfig) -> (RunningServer, SocketAddr) {
    start_server(&MemoryHub::new(), config).await
}

/// Starts a server from a builder, wiring the hub's backends.
pub async fn start_with(
    hub: &Arc<MemoryHub>,
    builder: mpush::MPushServerBuilder,
) -> (RunningServer, SocketAddr) {
    let server = mpush_spi_memory::testing::on_hub(hub, builder)
        .start()
        .await
        .unwrap();
    let addr = server.connect_addr();
    (server, addr)
}

/// A wire-level client: explicit frames, its own handshake.
pub struct RawClient {
    pub stream: TcpStream,
    buf: BytesMut,
    pub cipher: Option<Cipher>,
    pub next_id: i32,
    /// The clientVersion the handshake announces.
    pub client_version: String,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).await.unwrap())
    }

    /// Wraps an already connected stream.
    pub fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            buf: BytesMut::new(),
            cipher: None,
            next_id: 1,
            client_version: "test-1.0".into(),
        }
    }

    pub fn id(&mut self) -> i32 {
        self.next_id += 1;
        self.next_id
    }

    pub async fn send(&mut self, p: &Packet) {
        self.stream.write_all(&p.to_bytes()).await.unwrap();
    }

    pub async fn send_bytes(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.unwrap();
    }

    /// Sends a message through the session cipher.
    pub async fn send_secure(&mut self, cmd: Command, id: i32, plain: Vec<u8>) {
        let (body, f) = body::seal(plain, self.cipher.as_ref(), 1024).unwrap();
        let p = Packet {
            flags: f,
            body,
            ..Packet::new(cmd, id)
        };
        self.send(&p).await;
    }

    /// Next frame, or `None` when the server closed the connection.
    pub async fn recv(&mut self) -> Option<Frame> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(f) = decode_frame(&mut self.buf, usize::MAX >> 1).unwrap() {
                    return Some(f);
                }
                let n = self.stream.read_buf(&mut self.buf).await.ok()?;
                if n == 0 {
                    return None;
                }
            }
        })
        .await
        .expect("timed out waiting for a frame")
    }

    /// Sends a heartbeat byte and expects the server's echo as the next frame.
    pub async fn expect_heartbeat_echo(&mut self) {
        self.send_bytes(&[0xDF]).await;
        assert_eq!(self.recv().await, Some(Frame::Heartbeat), "heartbeat echo");
    }

    /// Next packet (skipping heartbeats).
    pub async fn recv_packet(&mut self) -> Option<Packet> {
        loop {
            match self.recv().await? {
                Frame::Heartbeat => continue,
                Frame::Packet(p) => return Some(p),
            }
        }
    }

    /// Decrypted body of a packet.
    pub fn open(&self, p: &Packet) -> Bytes {
        body::open(p, self.cipher.as_ref(), 1 << 24).unwrap()
    }

    /// `true` once the server has closed the socket (within the wait bound).
    pub async fn closed_by_server(&mut self) -> bool {
        tokio::time::timeout(WAIT, async {
            loop {
                let mut b = [0u8; 1024];
                match self.stream.read(&mut b).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await
        .unwrap_or(false)
    }

    /// Full handshake with the default key; returns HandshakeOk.
    /// Connects to `addr` and completes a handshake as `device_id` on `os`.
    pub async fn handshaken(addr: SocketAddr, device_id: &str, os: &str) -> Self {
        let mut c = Self::connect(addr).await;
        c.handshake(device_id, os).await;
        c
    }

    pub async fn handshake(&mut self, device_id: &str, os: &str) -> HandshakeOk {
        self.handshake_with_key(device_id, os, mpush::config::DEFAULT_PUBLIC_KEY)
            .await
            .unwrap()
    }

    pub async fn handshake_with_key(
        &mut self,
        device_id: &str,
        os: &str,
        public_key: &str,
    ) -> Result<HandshakeOk, Packet> {
        let iv = random_key();
        let client_key = random_key();
        let req = HandshakeRequest {
            device_id: Some(device_id.into()),
            os_name: Some(os.into()),
            os_version: Some("1.0".into()),
            client_version: Some(self.client_version.clone()),
            iv: Some(iv.to_vec()),
            client_key: Some(client_key.to_vec()),
            min_heartbeat: 1000,
            max_heartbeat: 60_000,
            timestamp: 0,
        };
        let rsa = RsaCipher::new(Arc::new(RsaKeys::public_only(public_key).unwrap()));
        let body = rsa.encrypt(&req.encode()).unwrap();
        let id = self.id();
        self.send(&Packet {
            flags: flags::CRYPTO,
            body: body.into(),
            ..Packet::new(Command::Handshake, id)
        })
        .await;
        let reply = self
            .recv_packet()
            .await
            .ok_or_else(|| Packet::new(Command::Unknown(0), 0))?;
        if reply.cmd != Command::Handshake {
            return Err(reply);
        }
        assert_eq!(reply.session_id, id);
        let hello = Cipher::Aes(AesCipher::new(client_key, iv));
        let ok = HandshakeOk::decode(&body::open(&reply, Some(&hello), 1 << 20).unwrap()).unwrap();
        let server_key: [u8; 16] = ok.server_key.clone().unwrap().try_into().unwrap();
        self.cipher = Some(Cipher::Aes(AesCipher::new(
            mix_keys(&client_key, &server_key),
            iv,
        )));
        Ok(ok)
    }

    /// BIND and wait for OK/ERROR.
    pub async fn bind(
        &mut self,
        user: &str,
        tags: Option<&str>,
    ) -> Result<OkMessage, ErrorMessage> {
        self.bind_cmd(Command::Bind, user, tags).await
    }

    pub async fn bind_cmd(
        &mut self,
        cmd: Command,
        user: &str,
        tags: Option<&str>,
    ) -> Result<OkMessage, ErrorMessage> {
        let msg = mpush::protocol::message::BindUser {
            user_id: Some(user.into()),
            data: None,
            tags: tags.map(Into::into),
        };
        let id = self.id();
        self.send_secure(cmd, id, msg.encode()).await;
        loop {
            let p = self
                .recv_packet()
                .await
                .expect("connection closed while binding");
            match p.cmd {
                Command::Ok if p.session_id == id => return Ok(OkMessage::decode(&p.body).unwrap()),
                Command::Error if p.session_id == id => {
                    return Err(ErrorMessage::decode(&p.body).unwrap());
                }
                _ => continue,
            }
        }
    }

    /// Next ERROR packet's message.
    pub async fn expect_error(&mut self) -> (Packet, ErrorMessage) {
        let p = self
            .recv_packet()
            .await
            .expect("expected an ERROR, connection closed");
        assert_eq!(p.cmd, Command::Error, "expected ERROR, got {p:?}");
        let e = ErrorMessage::decode(&p.body).unwrap();
        (p, e)
    }
}

/// A received PUSH: id, flags, decrypted content.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: i32,
    pub flags: u8,
    pub content: Bytes,
}

/// How a background client answers pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckPolicy {
    /// ACK whatever asks for an ACK (AUTO_ACK and BIZ_ACK).
    All,
    /// Never ACK.
    Never,
    /// Close the socket as soon as a push arrives, without ACK.
    DieOnPush,
}

/// Moves a handshaken client into a task that reads pushes, answers them per `policy`,
/// and reports them on the returned channel. Closing the channel's receiver stops it.
pub fn spawn_receiver(
    mut c: RawClient,
    policy: AckPolicy,
) -> tokio::sync::mpsc::UnboundedReceiver<Received> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let p = match tokio::time::timeout(Duration::from_secs(60), c.recv_packet()).await {
                Ok(Some(p)) => p,
                _ => return,
            };
            if p.cmd != Command::Push {
                continue;
            }
            let content = c.open(&p);
            if policy == AckPolicy::DieOnPush {
                let _ = tx.send(Received {
                    id: p.session_id,
                    flags: p.flags,
                    content,
                });
                return;
            }
            if policy == AckPolicy::All && p.flags & flags::ACK_MASK != 0 {
                c.send(&Packet::new(Command::Ack, p.session_id)).await;
            }
            if tx
                .send(Received {
                    id: p.session_id,
                    flags: p.flags,
                    content,
                })
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

/// An Android client bound as `user` (no tags) on `addr`, acknowledging every push, as a
/// [`spawn_receiver`] channel.
pub async fn receiver(
    addr: SocketAddr,
    device: &str,
    user: &str,
) -> tokio::sync::mpsc::UnboundedReceiver<Received> {
    spawn_receiver(
        bound_client(addr, device, "android", user, None).await,
        AckPolicy::All,
    )
}

/// A NO_ACK push of `content` to every local session of `user` on `server`, waiting at most
/// `wait`; the outcome per client type.
pub async fn push_local(
    server: &RunningServer,
    user: &str,
    content: impl Into<Bytes>,
    wait: Duration,
) -> Vec<(mpush::ClientType, mpush::spi::PushOutcome)> {
    server
        .push_to_local_user(user, None, content, mpush::AckModel::NoAck, wait)
        .await
}

/// The next item on `rx`, within [`WAIT`] (the channel must stay open).
pub async fn recv_within<T>(rx: &mut tokio::sync::mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("nothing arrived within WAIT")
        .expect("the channel closed")
}

/// Yields until `done()` holds; fails the test with `what` after [`WAIT`].
pub async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::task::yield_now().await;
    }
}

/// Connects, handshakes and binds a client on `addr`.
pub async fn bound_client(
    addr: SocketAddr,
    device: &str,
    os: &str,
    user: &str,
    tags: Option<&str>,
) -> RawClient {
    bound_client_version(addr, device, os, "test-1.0", user, tags).await
}

/// [`bound_client`] announcing `client_version` in its handshake.
pub async fn bound_client_version(
    addr: SocketAddr,
    device: &str,
    os: &str,
    client_version: &str,
    user: &str,
    tags: Option<&str>,
) -> RawClient {
    let mut c = RawClient::connect(addr).await;
    c.client_version = client_version.into();
    c.handshake(device, os).await;
    c.bind(user, tags).await.unwrap();
    c
}

/// Starts `n` servers with `cfg` and a sender that has discovered all their gateways.
pub async fn start_cluster(n: usize, cfg: MPushConfig) -> Cluster {
    Cluster::start(n, cfg).await.unwrap()
}

/// Pushes `hello` to `user` and returns the result codes.
pub async fn push(
    sender: &mpush::sender::PushSender,
    user: &str,
    ack: mpush::AckModel,
    timeout_ms: u64,
) -> Vec<mpush::sender::ResultCode> {
    let ctx = mpush::sender::PushContext::to_user(user, &b"hello"[..])
        .ack(ack)
        .timeout(Duration::from_millis(timeout_ms));
    sender.send(ctx).await.into_iter().map(|r| r.code).collect()
}

/// [`push`] must answer exactly `[want]` (one user, one result).
pub async fn expect_push(
    sender: &mpush::sender::PushSender,
    user: &str,
    ack: mpush::AckModel,
    timeout_ms: u64,
    want: mpush::sender::ResultCode,
) {
    assert_eq!(
        push(sender, user, ack, timeout_ms).await,
        [want],
        "push to {user}"
    );
}

/// Waits (bounded by [`WAIT`]) until `server` has no local route for `user` any more, i.e.
/// it noticed that the user's connection went.
pub async fn wait_not_local(server: &RunningServer, user: &str) {
    poll_until(Duration::from_millis(10), move || async move {
        if server.local_users().iter().any(|u| u == user) {
            Err(format!("{user} still routed locally"))
        } else {
            Ok(())
        }
    })
    .await;
}

/// What `rx` (the receiver of `user`'s only connection) got before a unicast "fence" push.
/// Pushes to one connection are written in order and a broadcast's OK comes after its
/// writes, so everything sent earlier arrives before the fence: no quiet period needed.
pub async fn received_before_fence(
    sender: &mpush::sender::PushSender,
    user: &str,
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Received>,
) -> Vec<Received> {
    let ctx = mpush::sender::PushContext::to_user(user, &b"fence"[..])
        .ack(mpush::AckModel::NoAck)
        .timeout(WAIT);
    let codes: Vec<_> = sender.send(ctx).await.into_iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [mpush::sender::ResultCode::Success],
        "fence to {user}"
    );
    let mut got = Vec::new();
    loop {
        let r = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap_or_else(|_| panic!("{user}: no fence within {WAIT:?}"))
            .unwrap_or_else(|| panic!("{user}: receiver ended before the fence"));
        if &r.content[..] == b"fence" {
            return got;
        }
        got.push(r);
    }
}

/// The `launcher` example, `target/<profile>/examples/launcher`, found from the running test
/// binary's path (`target/<profile>/deps/<test>-<hash>`).
pub fn launcher_binary() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe
        .parent()
        .and_then(std::path::Path::parent)
        .expect("test binary inside target/<profile>/deps");
    let bin = profile_dir
        .join("examples")
        .join(format!("launcher{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --example launcher` (cargo test builds it \
         unless the run is limited to some test targets)",
        bin.display()
    );
    bin
}

/// Pushes to `user` (bound on node `node` of `c`, its receiver ACKing everything) once per ack
/// model: each one is SUCCESS and arrives with that model's flags. A user never bound is
/// OFFLINE. Shared by the TCP and the UDP gateway suites, which must answer alike.
pub async fn assert_each_ack_mode_then_offline(c: &Cluster, node: usize, user: &str) {
    use mpush::AckModel;
    use mpush::sender::ResultCode;
    let mut rx = spawn_receiver(
        bound_client(c.addr(node), "d1", "android", user, None).await,
        AckPolicy::All,
    );
    for ack in [AckModel::NoAck, AckModel::AutoAck, AckModel::BizAck] {
        assert_eq!(
            push(&c.sender, user, ack, 3000).await,
            [ResultCode::Success],
            "{ack:?}"
        );
        let got = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&got.content[..], b"hello");
        assert_eq!(got.flags & mpush::protocol::flags::ACK_MASK, ack.flags());
    }
    // Never bound: no route → OFFLINE without gateway traffic.
    assert_eq!(
        push(&c.sender, "nobody", AckModel::NoAck, 3000).await,
        [ResultCode::Offline]
    );
}

/// A client on node `node` that never ACKs: a BIZ_ACK push to `user` gets no gateway reply and
/// answers TIMEOUT, within the context timeout.
pub async fn assert_never_acking_client_times_out(c: &Cluster, node: usize, user: &str) {
    use mpush::AckModel;
    use mpush::sender::ResultCode;
    let _rx = spawn_receiver(
        bound_client(c.addr(node), "d2", "android", user, None).await,
        AckPolicy::Never,
    );
    let start = std::time::Instant::now();
    assert_eq!(
        push(&c.sender, user, AckModel::BizAck, 1200).await,
        [ResultCode::Timeout]
    );
    assert!(start.elapsed() < Duration::from_secs(3));
}

/// A device moves from node 0 to node 2 of `c` (three nodes) while the sender's route cache
/// still names node 0: node 0 kicks the displaced connection, answers ROUTER_CHANGE instead
/// of serving it, and the sender re-routes to node 2. Shared by the TCP and the UDP gateway
/// suites. Shuts `c` down at the end.
pub async fn assert_router_change_reroutes(c: Cluster) {
    use mpush::AckModel;
    use mpush::sender::ResultCode;
    let mut first = bound_client(c.addr(0), "phone", "android", "mover", None).await;
    // Warm the sender's route cache with node 0.
    assert_eq!(
        push(&c.sender, "mover", AckModel::NoAck, 3000).await,
        [ResultCode::Success]
    );
    assert_eq!(
        first.recv_packet().await.unwrap().cmd,
        mpush::protocol::Command::Push
    );

    // The device moves to node 2 (a new connection of the same type). Its old connection
    // stays open, as a phone that has not noticed yet: node 0 kicks it but does not close it
    // (quirk Q24).
    let mut rx2 = spawn_receiver(
        bound_client(c.addr(2), "phone", "android", "mover", None).await,
        AckPolicy::All,
    );
    assert_eq!(
        first.recv_packet().await.unwrap().cmd,
        mpush::protocol::Command::Kick,
        "the displaced connection is kicked"
    );
    // The stale cache says node 0; node 0 must answer ROUTER_CHANGE instead of serving the
    // displaced connection; the sender re-routes to node 2.
    assert_eq!(
        push(&c.sender, "mover", AckModel::AutoAck, 3000).await,
        [ResultCode::Success],
        "push through a route cache that still names node 0"
    );
    // A heartbeat round trip on the old connection: whatever node 0 sent it before the echo
    // has arrived by then.
    first
        .send_bytes(&[mpush::protocol::packet::HEARTBEAT_BYTE])
        .await;
    while let Some(frame) = first.recv().await {
        match frame {
            mpush::protocol::Frame::Heartbeat => break,
            mpush::protocol::Frame::Packet(p) => assert_ne!(
                p.cmd,
                mpush::protocol::Command::Push,
                "the displaced connection on node 0 received the push"
            ),
        }
    }
    let got = tokio::time::timeout(WAIT, rx2.recv())
        .await
        .expect("the new connection on node 2 never received the push");
    assert_eq!(&got.unwrap().content[..], b"hello");
    c.shutdown().await;
}

/// Whether a plain-TCP WebSocket upgrade to `url` (`ws://…`) is refused; it must be answered
/// one way or the other within [`WAIT`].
pub async fn ws_upgrade_refused(url: &str) -> bool {
    tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
        .await
        .expect("the upgrade was neither answered nor refused in time")
        .is_err()
}

/// Polls `probe` every `step` until it returns `Ok`, for at most [`WAIT`]; panics with the
/// last `Err` (what was seen instead) when the deadline passes.
pub async fn poll_until<T, F, Fut>(step: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(seen) => assert!(
                tokio::time::Instant::now() < deadline,
                "after {WAIT:?}: {seen}"
            ),
        }
        tokio::time::sleep(step).await;
    }
}
