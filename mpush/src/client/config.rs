//! Client configuration and the reconnect back-off policy.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::event::{Event, EventCallback};
use super::ticket::{MemoryTicketStore, TicketStore};
use crate::protocol::crypto::DEFAULT_PUBLIC_KEY;
use crate::protocol::crypto::RsaCipher;

/// How a [`super::Client`] connects and behaves. Construct with [`ClientConfig::new`] and
/// adjust the public fields or use the `with_*` helpers.
#[derive(Clone)]
pub struct ClientConfig {
    /// Server address `host:port` (resolved on every connect attempt).
    pub server_addr: String,
    /// Local source IP to bind before connecting (port chosen by the OS), so a load generator
    /// can spread its connections over 127.0.0.x.
    pub local_ip: Option<IpAddr>,
    /// The server's RSA public key, base64 X.509 (default: MPush's default key, spec §4.6).
    pub public_key: String,
    /// An already-parsed RSA cipher, shared by many clients; overrides `public_key`.
    pub rsa: Option<Arc<RsaCipher>>,
    /// Device id (required, non-empty; keys the fast-reconnect ticket on the server).
    pub device_id: String,
    /// OS name sent in the handshake; drives the server's client type (default "android").
    pub os_name: String,
    /// OS version sent in the handshake.
    pub os_version: String,
    /// Client version sent in the handshake.
    pub client_version: String,
    /// Heartbeat the client asks for (default 240 s, as the Java client). The server decides.
    pub max_heartbeat: Duration,
    /// Sent for compatibility; servers ignore it (quirk Q10). Default 240 s.
    pub min_heartbeat: Duration,
    /// User to bind after every (re)connect, if any.
    pub user_id: Option<String>,
    /// Tags sent with the automatic bind.
    pub tags: Option<String>,
    /// Data sent with the automatic bind (passed to the server's bind validator).
    pub bind_data: Option<String>,
    /// Acknowledge AUTO_ACK pushes on receipt (default `true`).
    pub auto_ack: bool,
    /// Where the fast-reconnect ticket lives (default: a fresh [`MemoryTicketStore`]).
    pub ticket_store: Arc<dyn TicketStore>,
    /// Time allowed for each answer (handshake, fast connect, bind, upstream ACK). Default 3 s.
    pub request_timeout: Duration,
    /// Time allowed for the TCP connect. Default 5 s.
    pub connect_timeout: Duration,
    /// Reconnect behaviour after the connection drops.
    pub reconnect: ReconnectPolicy,
    /// Bodies strictly longer than this are zlib-compressed (Java client: 1024).
    pub compress_threshold: usize,
    /// Largest body accepted from the server, both on the wire and after inflating (default
    /// 8 MiB: above the server's default HTTP proxy `max-content-length` of 5 MiB with its
    /// headers; the Java client has no limit, this guards against zip bombs).
    pub max_packet_size: usize,
    /// Send events to this callback instead of the [`super::EventStream`] (saves the queue).
    pub on_event: Option<EventCallback>,
    /// TLS to the connection server (`None` = plain TCP, the default: the server's TLS is
    /// optional, `mp.net.connect-server-tls`).
    pub tls: Option<crate::tls::ClientTls>,
}

debug_fields!(ClientConfig { server_addr, local_ip, device_id, os_name, max_heartbeat, user_id, tags, auto_ack, request_timeout, reconnect, on_event.is_some(), tls.is_some() });

impl ClientConfig {
    /// Defaults for connecting `device_id` to `server_addr` (`host:port`).
    pub fn new(server_addr: impl Into<String>, device_id: impl Into<String>) -> Self {
        Self {
            server_addr: server_addr.into(),
            local_ip: None,
            public_key: DEFAULT_PUBLIC_KEY.to_string(),
            rsa: None,
            device_id: device_id.into(),
            os_name: "android".to_string(),
            os_version: String::new(),
            client_version: String::new(),
            max_heartbeat: Duration::from_millis(240_000),
            min_heartbeat: Duration::from_millis(240_000),
            user_id: None,
            tags: None,
            bind_data: None,
            auto_ack: true,
            ticket_store: Arc::new(MemoryTicketStore::new()),
            request_timeout: Duration::from_secs(3),
            connect_timeout: Duration::from_secs(5),
            reconnect: ReconnectPolicy::default(),
            compress_threshold: 1024,
            max_packet_size: 8 * 1024 * 1024,
            on_event: None,
            tls: None,
        }
    }

    /// Connects with TLS, trusting the CA certificates of `ca_pem` (a PEM file); the server
    /// certificate must name the host of `server_addr` (or `server_name` when not "").
    pub fn with_tls(
        mut self,
        ca_pem: impl Into<String>,
        server_name: impl Into<String>,
    ) -> Result<Self, crate::tls::TlsError> {
        let tls = crate::config::TlsClientConfig {
            ca: ca_pem.into(),
            server_name: server_name.into(),
            ..Default::default()
        };
        self.tls = Some(crate::tls::ClientTls::from_config(&tls)?);
        Ok(self)
    }

    setters! {
        /// Binds `user_id` (with `tags`) after every connect and reconnect.
        with_user(user_id: impl Into<String>, tags: Option<&str>)
            => user_id = Some(user_id.into()), tags = tags.map(str::to_owned);
        /// Connects from this local IP.
        with_local_ip(ip: IpAddr) => local_ip = Some(ip);
        /// Uses this ticket store (e.g. one shared with a test, or a persistent one).
        with_ticket_store(store: Arc<dyn TicketStore>) => ticket_store = store;
        /// Uses this reconnect policy.
        with_reconnect(policy: ReconnectPolicy) => reconnect = policy;
        /// Asks the server for this heartbeat (both min and max).
        with_heartbeat(heartbeat: Duration) => max_heartbeat = heartbeat, min_heartbeat = heartbeat;
        /// Delivers events to `callback` (on the connection task) instead of the event stream.
        on_event(callback: impl Fn(Event) + Send + Sync + 'static)
            => on_event = Some(Arc::new(callback));
    }
}

/// Reconnect back-off. The default reproduces the Java client (spec §7.3): attempts 1–2
/// immediately, then wait `n` seconds before attempt `n`, after each round of 10 attempts pause
/// 10 minutes, give up after 1000 attempts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReconnectPolicy {
    /// Reconnect at all (default `true`).
    pub enabled: bool,
    /// Attempts at the start of each round made without waiting (default 2).
    pub immediate_attempts: u32,
    /// The wait before attempt `n` of a round is `step × n` (default 1 s).
    pub step: Duration,
    /// Upper bound of that wait (default 10 s).
    pub max_delay: Duration,
    /// Attempts per round (default 10); a round ends with `round_pause`.
    pub attempts_per_round: u32,
    /// Wait after a full round failed (default 10 min).
    pub round_pause: Duration,
    /// Give up after this many consecutive failed attempts; 0 = never (default 1000).
    pub max_attempts: u32,
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            immediate_attempts: 2,
            step: Duration::from_secs(1),
            max_delay: Duration::from_secs(10),
            attempts_per_round: 10,
            round_pause: Duration::from_secs(600),
            max_attempts: 1000,
        }
    }
}

impl ReconnectPolicy {
    /// Never reconnect: a dropped connection ends the client.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    /// The Java shape scaled down: waits of `step × n` capped at `max_delay`, and `max_delay`
    /// as the pause between rounds (for tests and load generators).
    pub fn scaled(step: Duration, max_delay: Duration) -> Self {
        Self {
            step,
            max_delay,
            round_pause: max_delay,
            ..Self::default()
        }
    }

    /// How long to wait before reconnect attempt `attempt` (1-based, counted since the last
    /// successful connection).
    pub fn delay_before(&self, attempt: u32) -> Duration {
        let per_round = self.attempts_per_round.max(1);
        let index = attempt.saturating_sub(1);
        if index > 0 && index.is_multiple_of(per_round) {
            return self.round_pause;
        }
        let n = index % per_round + 1;
        if n <= self.immediate_attempts {
            Duration::ZERO
        } else {
            self.step.saturating_mul(n).min(self.max_delay)
        }
    }

    /// Whether attempt `attempt` (1-based) may still be made.
    pub fn allows(&self, attempt: u32) -> bool {
        self.enabled && (self.max_attempts == 0 || attempt <= self.max_attempts)
    }
}
