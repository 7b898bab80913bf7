//! Server configuration: the `mp.*` tree of MPush's `reference.conf` (spec §16).
//!
//! Field names follow the HOCON keys (kebab-case in files, snake_case here). Defaults are
//! MPush's reference defaults and live only in the `Default` impls below.
//!
//! # File format
//!
//! [`MPushConfig::from_file`] and [`MPushConfig::from_hocon_str`] read
//! [HOCON](https://github.com/lightbend/config/blob/main/HOCON.md) (JSON is valid HOCON), so an
//! existing MPush `mpush.conf` loads unchanged:
//!
//! ```text
//! mp.core.min-heartbeat=10s                       # dotted keys
//! mp.net { connect-server-port=3000, admin-server-port=3002 }   # objects, merged with dotted keys
//! mp.redis { cluster-model=single, nodes:["127.0.0.1:6379"] }
//! mp.zk.sessionTimeoutMs=5s                       # MPush's camelCase zk keys are kept
//! mp.log-dir=${mp.home}/logs                      # substitutions (see below)
//! ```
//!
//! * Comments: `#` and `//`. `include "other.conf"` is resolved relative to the file.
//! * Sizes (`max-packet-size`, water marks, …): `10k` = 10240, `10m` = 10 MiB, a plain number is
//!   bytes. Durations (heartbeats, timeouts, …): `500ms`, `10s`, `3m` (minutes!), `1h`, `1d`; a
//!   plain number is milliseconds. `3m` therefore means 3 minutes as a duration but 3 MiB as a size.
//! * `${...}` substitutions resolve against the file first, then the process environment, then
//!   Java-style properties MPush files use: `user.dir` (current directory), `user.home`, and
//!   `mp.home` (= `user.dir` unless the file sets it). `${?VAR}` is an optional substitution.
//! * `mp.redis.nodes` entries are `"ip:port"` (or MPush's `"ip:port:password"`) strings; the older
//!   object form `{host, port, password}` is accepted and converted to that string form.
//!
//! # Unknown and ignored keys
//!
//! Keys MPush knows but mpush-rs does not use (`mp.log-*`, `mp.http.*`, `mp.thread.*`,
//! `mp.monitor.*`, `mp.net.snd_buf`/`rcv_buf`/`traffic-shaping`, `mp.core.epoll-provider`,
//! `mp.redis.config.*`, `mp.zk.retry.*`, …) are accepted and ignored. Those an operator sets to
//! tune the server (socket buffers, traffic shaping, thread pools, `mp.http.*`, the gateway
//! water marks) are warned about once each at server start when their
//! value differs from MPush's default ([`MPushConfig::settings_without_effect`]). An unknown key *inside* a
//! section mpush-rs implements (`mp.core`, `mp.security`, `mp.net`, `mp.zk`, `mp.redis`, `mp.push`,
//! `mp.spi`) is an error, with a "did you mean" hint, so typos do not silently fall back to a
//! default. Unknown top-level `mp.*` keys only log a warning (MPush deployments carry extra
//! sections such as `mp.snowflake`), and keys outside `mp` are ignored.
//!
//! # Precedence
//!
//! Built-in defaults (MPush's `reference.conf`) < the file < code: every field is `pub`, so an
//! embedding application may override values after loading and should then call
//! [`MPushConfig::validate`] again. The loaders validate before returning.
//!
//! # Addresses
//!
//! Empty addresses mean "auto" and are resolved by [`NetConfig::resolved_local_ip`],
//! [`NetConfig::resolved_public_ip`], [`NetConfig::connect_register_ip`] and
//! [`NetConfig::gateway_register_ip`] (spec §11).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine as _;
use hocon::{HoconValue, ScalarType};

/// Configuration errors, reported at startup.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid HOCON/JSON or a value has the wrong type.
    #[error("cannot parse config: {0}")]
    Parse(String),
    /// A value is out of range or inconsistent.
    #[error("invalid config value {key}: {message}")]
    Invalid {
        /// The `mp.*` key.
        key: &'static str,
        /// Why it is invalid.
        message: String,
    },
}

/// The whole `mp` tree.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MPushConfig {
    /// `mp.core`.
    pub core: CoreConfig,
    /// `mp.security`.
    pub security: SecurityConfig,
    /// `mp.net`.
    pub net: NetConfig,
    /// `mp.zk`.
    pub zk: ZkConfig,
    /// `mp.redis`.
    pub redis: RedisConfig,
    /// `mp.push`.
    pub push: PushConfig,
    /// `mp.spi`: which backend to use per SPI ("" = highest priority linked).
    pub spi: SpiConfig,
    /// Keys of the loaded file that MPush uses for tuning (socket buffers, traffic shaping,
    /// thread pools, `mp.http.*`) and mpush-rs accepts without effect; filled by
    /// [`from_file`](Self::from_file) / [`from_hocon_str`](Self::from_hocon_str) and reported
    /// by [`settings_without_effect`](Self::settings_without_effect).
    pub accepted_without_effect: Vec<String>,
}

/// `mp.core`.
#[derive(Debug, Clone, PartialEq)]
pub struct CoreConfig {
    /// `max-packet-size`: largest encoded body the connection server accepts (10k).
    pub max_packet_size: usize,
    /// `compress-threshold`: bodies strictly larger are zlib-compressed (10k).
    pub compress_threshold: usize,
    /// `min-heartbeat` (3m).
    pub min_heartbeat: Duration,
    /// `max-heartbeat` (3m).
    pub max_heartbeat: Duration,
    /// `max-hb-timeout-times`: close after more than this many consecutive misses (2).
    pub max_hb_timeout_times: u32,
    /// `session-expired-time`: fast-reconnect ticket TTL (1d).
    pub session_expired_time: Duration,
}

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 10 * 1024,
            compress_threshold: 10 * 1024,
            min_heartbeat: Duration::from_secs(180),
            max_heartbeat: Duration::from_secs(180),
            max_hb_timeout_times: 2,
            session_expired_time: Duration::from_secs(86_400),
        }
    }
}

/// `mp.security`.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityConfig {
    /// `private-key`: base64 PKCS#8 (spec §4.6 default).
    pub private_key: String,
    /// `public-key`: base64 X.509 SubjectPublicKeyInfo.
    pub public_key: String,
    /// `aes-key-length`: must be 16.
    pub aes_key_length: usize,
}

/// MPush's default public key (spec §4.6).
pub const DEFAULT_PUBLIC_KEY: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCghPCWCobG8nTD24juwSVataW7iViRxcTkey/B792VZEhuHjQvA3cAJgx2Lv8GnX8NIoShZtoCg3Cx6ecs+VEPD2fBcg2L4JK7xldGpOJ3ONEAyVsLOttXZtNXvyDZRijiErQALMTorcgi79M5uVX9/jMv2Ggb2XAeZhlLD28fHwIDAQAB";
/// MPush's default private key (spec §4.6; non-CRT, zeroed fields).
pub const DEFAULT_PRIVATE_KEY: &str = "MIIBNgIBADANBgkqhkiG9w0BAQEFAASCASAwggEcAgEAAoGBAKCE8JYKhsbydMPbiO7BJVq1pbuJWJHFxOR7L8Hv3ZVkSG4eNC8DdwAmDHYu/wadfw0ihKFm2gKDcLHp5yz5UQ8PZ8FyDYvgkrvGV0ak4nc40QDJWws621dm01e/INlGKOIStAAsxOityCLv0zm5Vf3+My/YaBvZcB5mGUsPbx8fAgEAAoGAAy0+WanRqwRHXUzt89OsupPXuNNqBlCEqgTqGAt4Nimq6Ur9u2R1KXKXUotxjp71Ubw6JbuUWvJg+5Rmd9RjT0HOUEQF3rvzEepKtaraPhV5ejEIrB+nJWNfGye4yzLdfEXJBGUQzrG+wNe13izfRNXI4dN/6Q5npzqaqv0E1CkCAQACAQACAQACAQACAQA=";

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            private_key: DEFAULT_PRIVATE_KEY.to_string(),
            public_key: DEFAULT_PUBLIC_KEY.to_string(),
            aes_key_length: 16,
        }
    }
}

/// `mp.net`.
#[derive(Debug, Clone, PartialEq)]
pub struct NetConfig {
    /// `local-ip` ("" = auto).
    pub local_ip: String,
    /// `public-ip` ("" = auto).
    pub public_ip: String,
    /// `connect-server-bind-ip` ("" = all interfaces).
    pub connect_server_bind_ip: String,
    /// `connect-server-register-ip` ("" = public-ip).
    pub connect_server_register_ip: String,
    /// `connect-server-port` (3000; 0 = pick a free port).
    pub connect_server_port: u16,
    /// `connect-server-max-connections` (mpush-rs extension, 100000): client connections
    /// (TCP and WebSocket together) served at once; one accepted beyond it is closed at once.
    pub connect_server_max_connections: usize,
    /// `connect-server-ip-connect-rate` (mpush-rs extension, 0 = off): new client
    /// connections accepted per second from one source IP (bursts up to the same number);
    /// more are closed at once. Off by default because carrier NATs put many devices
    /// behind one address.
    pub connect_server_ip_connect_rate: u32,
    /// `connect-server-max-pending-handshakes` (mpush-rs extension, 1024): handshakes
    /// waiting for an RSA slot; beyond it a handshake is answered ERROR and closed.
    pub connect_server_max_pending_handshakes: usize,
    /// `connect-server-register-attr` ({weight:1}).
    pub connect_server_register_attr: BTreeMap<String, serde_json::Value>,
    /// `gateway-server-bind-ip` ("" = all interfaces).
    pub gateway_server_bind_ip: String,
    /// `gateway-server-register-ip` ("" = local-ip).
    pub gateway_server_register_ip: String,
    /// `gateway-server-port` (3001; 0 = pick a free port).
    pub gateway_server_port: u16,
    /// `gateway-server-net`: "tcp" or "udp".
    pub gateway_server_net: String,
    /// `gateway-client-num`: SDK connections per gateway server (1).
    pub gateway_client_num: usize,
    /// `gateway-client-port`: UDP port of the push SDK in UDP gateway mode (4000; 0 = any).
    pub gateway_client_port: u16,
    /// `gateway-server-multicast`: group the UDP gateway joins and the SDK broadcasts to
    /// ("239.239.239.88"; "" = no multicast, broadcasts are unicast to every gateway).
    pub gateway_server_multicast: String,
    /// `gateway-client-multicast`: group the push SDK joins in UDP gateway mode
    /// ("239.239.239.99"; "" = none).
    pub gateway_client_multicast: String,
    /// `gateway-max-packet-size` (mpush-rs extension, Q7): largest gateway body (10k).
    pub gateway_max_packet_size: usize,
    /// `gateway-max-in-flight` (mpush-rs extension): GATEWAY_PUSH requests one TCP gateway
    /// connection may have running at once (4096). When full the server stops reading that
    /// connection until one finishes, so back-pressure reaches the sender through TCP.
    pub gateway_max_in_flight: usize,
    /// `admin-server-port`: the telnet admin console (3002; 0 = disabled).
    pub admin_server_port: u16,
    /// `admin-server-host` (mpush-rs extension): the console's bind address ("127.0.0.1";
    /// the console can shut the server down, so it is not reachable from outside by default).
    pub admin_server_host: String,
    /// `alloc-server-port`: the alloc service's HTTP port (9999; used by `mpush::alloc`).
    pub alloc_server_port: u16,
    /// `ws-server-port` (0 = disabled).
    pub ws_server_port: u16,
    /// `ws-path` ("/").
    pub ws_path: String,
    /// `write-buffer-water-mark.connect-server-low` (32k).
    pub connect_server_low_water_mark: usize,
    /// `write-buffer-water-mark.connect-server-high` (64k).
    pub connect_server_high_water_mark: usize,
    /// `write-buffer-water-mark.gateway-server-low` (10m).
    pub gateway_server_low_water_mark: usize,
    /// `write-buffer-water-mark.gateway-server-high` (20m).
    pub gateway_server_high_water_mark: usize,
    /// `public-host-mapping`: local-ip → public-ip ({}; deprecated in MPush, still honoured by
    /// [`NetConfig::resolved_public_ip`] as spec §11 describes).
    pub public_host_mapping: BTreeMap<String, String>,
}

impl Default for NetConfig {
    fn default() -> Self {
        let mut attr = BTreeMap::new();
        attr.insert("weight".to_string(), serde_json::Value::from(1));
        Self {
            local_ip: String::new(),
            public_ip: String::new(),
            connect_server_bind_ip: String::new(),
            connect_server_register_ip: String::new(),
            connect_server_port: 3000,
            connect_server_register_attr: attr,
            connect_server_max_connections: 100_000,
            connect_server_ip_connect_rate: 0,
            connect_server_max_pending_handshakes: 1024,
            gateway_server_bind_ip: String::new(),
            gateway_server_register_ip: String::new(),
            gateway_server_port: 3001,
            gateway_server_net: "tcp".to_string(),
            gateway_client_num: 1,
            gateway_client_port: 4000,
            gateway_server_multicast: "239.239.239.88".to_string(),
            gateway_client_multicast: "239.239.239.99".to_string(),
            gateway_max_packet_size: 10 * 1024,
            gateway_max_in_flight: DEFAULT_GATEWAY_MAX_IN_FLIGHT,
            admin_server_port: 3002,
            admin_server_host: "127.0.0.1".to_string(),
            alloc_server_port: 9999,
            ws_server_port: 0,
            ws_path: "/".to_string(),
            connect_server_low_water_mark: 32 * 1024,
            connect_server_high_water_mark: 64 * 1024,
            gateway_server_low_water_mark: 10 * 1024 * 1024,
            gateway_server_high_water_mark: 20 * 1024 * 1024,
            public_host_mapping: BTreeMap::new(),
        }
    }
}

/// `mp.zk`.
#[derive(Debug, Clone, PartialEq)]
pub struct ZkConfig {
    /// `server-address` ("127.0.0.1:2181").
    pub server_address: String,
    /// `namespace` ("mpush").
    pub namespace: String,
    /// `digest` ("mpush").
    pub digest: String,
    /// `sessionTimeoutMs` (5s).
    pub session_timeout: Duration,
    /// `connectionTimeoutMs` (5s).
    pub connection_timeout: Duration,
}

impl Default for ZkConfig {
    fn default() -> Self {
        Self {
            server_address: "127.0.0.1:2181".to_string(),
            namespace: "mpush".to_string(),
            digest: "mpush".to_string(),
            session_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(5),
        }
    }
}

/// `mp.redis`.
#[derive(Debug, Clone, PartialEq)]
pub struct RedisConfig {
    /// `cluster-model`: "single" or "cluster".
    pub cluster_model: String,
    /// `nodes`: "host:port" strings.
    pub nodes: Vec<String>,
    /// `password` ("" = none).
    pub password: String,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            cluster_model: "single".to_string(),
            nodes: vec!["127.0.0.1:6379".to_string()],
            password: String::new(),
        }
    }
}

/// One flow-control setting: `limit` sends per `duration`, at most `max` in total (0 = no cap).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowControlConfig {
    /// Sends per window.
    pub limit: u32,
    /// Total cap (0 = unlimited).
    pub max: u64,
    /// Window length.
    pub duration: Duration,
}

/// Default of `mp.net.gateway-max-in-flight`.
pub const DEFAULT_GATEWAY_MAX_IN_FLIGHT: usize = 4096;
/// Largest accepted `mp.net.gateway-max-in-flight`.
pub const MAX_GATEWAY_IN_FLIGHT: usize = 1_000_000;
/// Default of `mp.push.max-ack-timeout`: 20 × the Java SDK's default push timeout (3 s).
pub const DEFAULT_MAX_ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// `mp.push`.
#[derive(Debug, Clone, PartialEq)]
pub struct PushConfig {
    /// `flow-control.global` (5000, 0, 1s). Past `max` sends in the server's lifetime
    /// (when > 0) single-user pushes are refused with ERROR 2, as MPush's overflow.
    pub global_flow_control: FlowControlConfig,
    /// `flow-control.broadcast` (3000, 100000, 1s).
    pub broadcast_flow_control: FlowControlConfig,
    /// `max-ack-timeout` (mpush-rs extension, 60s): the longest a server waits for a
    /// client's ACK, whatever timeout a GATEWAY_PUSH asks for (the wire allows 24.8 days,
    /// each wait holds an ACK-table entry and a gateway in-flight slot).
    pub max_ack_timeout: Duration,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            global_flow_control: FlowControlConfig {
                limit: 5000,
                max: 0,
                duration: Duration::from_secs(1),
            },
            broadcast_flow_control: FlowControlConfig {
                limit: 3000,
                max: 100_000,
                duration: Duration::from_secs(1),
            },
            max_ack_timeout: DEFAULT_MAX_ACK_TIMEOUT,
        }
    }
}

/// `mp.spi`: backend names ("" = the highest-priority registered backend).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpiConfig {
    /// `cache-manager`, e.g. "memory" or "redis".
    pub cache_manager: String,
    /// `mq-client`, e.g. "memory" or "redis".
    pub mq_client: String,
    /// `service-registry` (also discovery), e.g. "memory" or "zk".
    pub service_registry: String,
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// Largest accepted `mp.core.max-packet-size` / `mp.net.gateway-max-packet-size` (1 GiB).
const MAX_PACKET_SIZE_LIMIT: usize = 1 << 30;
/// Smallest accepted packet size limit (1 KiB).
const MIN_PACKET_SIZE_LIMIT: usize = 1024;

impl MPushConfig {
    /// Reads and validates a HOCON (or JSON) file of `mp.*` keys, e.g. an MPush `mpush.conf`.
    ///
    /// Missing keys keep their defaults; see the [module docs](self) for the syntax, the
    /// substitutions available and which keys are ignored. `include` directives are resolved
    /// relative to the file's directory.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Io`] if the file cannot be read, [`ConfigError::Parse`] for a syntax error,
    /// an unresolvable substitution, a value of the wrong type or an unknown key, and
    /// [`ConfigError::Invalid`] if [`validate`](Self::validate) rejects the result.
    pub fn from_file(path: impl AsRef<Path>) -> Result<MPushConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.display().to_string(),
            source,
        })?;
        let mut options = hocon::ParseOptions::defaults()
            .with_env(substitution_env())
            .with_origin_description(path.display().to_string());
        if let Some(dir) = path.parent() {
            options = options.with_base_dir(dir.to_path_buf());
        }
        let tree = hocon::parse_string_with_options(&text, options).map_err(|e| {
            ConfigError::Parse(format!("{}: {}", path.display(), hocon_message(&e)))
        })?;
        Self::from_tree(tree)
    }

    /// Parses and validates HOCON (or JSON) text of `mp.*` keys; see [`from_file`](Self::from_file).
    ///
    /// `include` directives are resolved relative to the current directory.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Parse`] or [`ConfigError::Invalid`], as for [`from_file`](Self::from_file).
    pub fn from_hocon_str(text: &str) -> Result<MPushConfig, ConfigError> {
        let options = hocon::ParseOptions::defaults().with_env(substitution_env());
        let tree = hocon::parse_string_with_options(text, options)
            .map_err(|e| ConfigError::Parse(hocon_message(&e)))?;
        Self::from_tree(tree)
    }

    /// Reads the `mp` object of a parsed tree into a default config, then validates it.
    //
    // Design: we walk the parsed tree key by key instead of serde-deriving the structs, because
    // (1) the defaults then stay in one place, the `Default` impls, and a partial file simply
    // overwrites the fields it names; (2) MPush mixes key styles (kebab-case, `sessionTimeoutMs`,
    // `snd_buf`) and nests some fields differently from our flat structs (water marks, flow
    // control); (3) the unit of each field is explicit (`3m` is a duration or a size depending on
    // the field, which serde-by-type cannot tell from the text); (4) every error can name the full
    // `mp.*` key, and the "known but ignored" key lists below give typo detection without dummy
    // fields for every Java-only setting.
    fn from_tree(root: hocon::Config) -> Result<MPushConfig, ConfigError> {
        let r = Reader { root };
        let mut config = MPushConfig::default();
        let Some(mp) = r.value("mp") else {
            config.validate()?;
            return Ok(config);
        };
        if !mp.is_object() {
            return Err(wrong_type("mp", "an object", mp));
        }
        r.warn_unknown(
            "mp",
            &["core", "security", "net", "zk", "redis", "push", "spi"],
            &[
                "home",
                "log-level",
                "log-dir",
                "log-conf-path",
                "log",
                "http",
                "thread",
                "monitor",
                "conf",
                "snowflake",
            ],
        );
        read_core(&r, &mut config.core)?;
        read_security(&r, &mut config.security)?;
        read_net(&r, &mut config.net)?;
        read_zk(&r, &mut config.zk)?;
        read_redis(&r, &mut config.redis)?;
        read_push(&r, &mut config.push)?;
        read_spi(&r, &mut config.spi)?;
        config.accepted_without_effect = TUNING_WITHOUT_EFFECT
            .iter()
            .filter_map(|key| r.value(key).map(|v| tuned_keys(key, v)))
            .flatten()
            .collect();
        config.validate()?;
        Ok(config)
    }
}

fn read_core(r: &Reader, c: &mut CoreConfig) -> Result<(), ConfigError> {
    r.check_keys(
        "mp.core",
        &[
            "max-packet-size",
            "compress-threshold",
            "min-heartbeat",
            "max-heartbeat",
            "max-hb-timeout-times",
            "session-expired-time",
        ],
        &["epoll-provider"],
    )?;
    r.size("mp.core.max-packet-size", &mut c.max_packet_size)?;
    r.size("mp.core.compress-threshold", &mut c.compress_threshold)?;
    r.duration("mp.core.min-heartbeat", &mut c.min_heartbeat)?;
    r.duration("mp.core.max-heartbeat", &mut c.max_heartbeat)?;
    r.int(
        "mp.core.max-hb-timeout-times",
        &mut c.max_hb_timeout_times,
        "0..=4294967295",
    )?;
    r.duration("mp.core.session-expired-time", &mut c.session_expired_time)
}

fn read_security(r: &Reader, c: &mut SecurityConfig) -> Result<(), ConfigError> {
    r.check_keys(
        "mp.security",
        &["private-key", "public-key", "aes-key-length"],
        &["ras-key-length"],
    )?;
    r.string("mp.security.private-key", &mut c.private_key)?;
    r.string("mp.security.public-key", &mut c.public_key)?;
    r.int("mp.security.aes-key-length", &mut c.aes_key_length, "16")
}

fn read_net(r: &Reader, c: &mut NetConfig) -> Result<(), ConfigError> {
    const PORT: &str = "0..=65535";
    r.check_keys(
        "mp.net",
        &[
            "local-ip",
            "public-ip",
            "connect-server-bind-ip",
            "connect-server-register-ip",
            "connect-server-port",
            "connect-server-register-attr",
            "connect-server-max-connections",
            "connect-server-ip-connect-rate",
            "connect-server-max-pending-handshakes",
            "gateway-server-bind-ip",
            "gateway-server-register-ip",
            "gateway-server-port",
            "gateway-server-net",
            "gateway-client-num",
            "gateway-client-port",
            "gateway-server-multicast",
            "gateway-client-multicast",
            "gateway-max-packet-size",
            "gateway-max-in-flight",
            "admin-server-port",
            "admin-server-host",
            "alloc-server-port",
            "ws-server-port",
            "ws-path",
            "write-buffer-water-mark",
            "public-host-mapping",
        ],
        &[
            "snd_buf",
            "rcv_buf",
            "traffic-shaping",
            "alloc-server-protocol",
        ],
    )?;
    r.string("mp.net.local-ip", &mut c.local_ip)?;
    r.string("mp.net.public-ip", &mut c.public_ip)?;
    r.string(
        "mp.net.connect-server-bind-ip",
        &mut c.connect_server_bind_ip,
    )?;
    r.string(
        "mp.net.connect-server-register-ip",
        &mut c.connect_server_register_ip,
    )?;
    r.int(
        "mp.net.connect-server-port",
        &mut c.connect_server_port,
        PORT,
    )?;
    if let Some(v) = r.value("mp.net.connect-server-register-attr") {
        let key = "mp.net.connect-server-register-attr";
        let map = v
            .as_object()
            .ok_or_else(|| wrong_type(key, "an object", v))?;
        // Merged over the default {weight:1}, as Java's `withFallback(reference.conf)` does.
        for (k, v) in map.iter() {
            c.connect_server_register_attr
                .insert(k.clone(), hocon_to_json(v));
        }
    }
    r.string(
        "mp.net.gateway-server-bind-ip",
        &mut c.gateway_server_bind_ip,
    )?;
    r.string(
        "mp.net.gateway-server-register-ip",
        &mut c.gateway_server_register_ip,
    )?;
    r.int(
        "mp.net.gateway-server-port",
        &mut c.gateway_server_port,
        PORT,
    )?;
    r.string("mp.net.gateway-server-net", &mut c.gateway_server_net)?;
    r.int(
        "mp.net.gateway-client-num",
        &mut c.gateway_client_num,
        "a positive integer",
    )?;
    r.int(
        "mp.net.gateway-client-port",
        &mut c.gateway_client_port,
        PORT,
    )?;
    r.string(
        "mp.net.gateway-server-multicast",
        &mut c.gateway_server_multicast,
    )?;
    r.string(
        "mp.net.gateway-client-multicast",
        &mut c.gateway_client_multicast,
    )?;
    r.size(
        "mp.net.gateway-max-packet-size",
        &mut c.gateway_max_packet_size,
    )?;
    r.int(
        "mp.net.connect-server-max-connections",
        &mut c.connect_server_max_connections,
        "1..=10000000",
    )?;
    r.int(
        "mp.net.connect-server-ip-connect-rate",
        &mut c.connect_server_ip_connect_rate,
        "0 (off) or a positive integer",
    )?;
    r.int(
        "mp.net.connect-server-max-pending-handshakes",
        &mut c.connect_server_max_pending_handshakes,
        "1..=1000000",
    )?;
    r.int(
        "mp.net.gateway-max-in-flight",
        &mut c.gateway_max_in_flight,
        "1..=1000000",
    )?;
    r.int("mp.net.admin-server-port", &mut c.admin_server_port, PORT)?;
    r.string("mp.net.admin-server-host", &mut c.admin_server_host)?;
    r.int("mp.net.alloc-server-port", &mut c.alloc_server_port, PORT)?;
    r.int("mp.net.ws-server-port", &mut c.ws_server_port, PORT)?;
    r.string("mp.net.ws-path", &mut c.ws_path)?;
    r.check_keys(
        "mp.net.write-buffer-water-mark",
        &[
            "connect-server-low",
            "connect-server-high",
            "gateway-server-low",
            "gateway-server-high",
        ],
        &[],
    )?;
    r.size(
        "mp.net.write-buffer-water-mark.connect-server-low",
        &mut c.connect_server_low_water_mark,
    )?;
    r.size(
        "mp.net.write-buffer-water-mark.connect-server-high",
        &mut c.connect_server_high_water_mark,
    )?;
    r.size(
        "mp.net.write-buffer-water-mark.gateway-server-low",
        &mut c.gateway_server_low_water_mark,
    )?;
    r.size(
        "mp.net.write-buffer-water-mark.gateway-server-high",
        &mut c.gateway_server_high_water_mark,
    )?;
    if let Some(v) = r.value("mp.net.public-host-mapping") {
        let key = "mp.net.public-host-mapping";
        let map = v
            .as_object()
            .ok_or_else(|| wrong_type(key, "an object of \"local-ip\":\"public-ip\"", v))?;
        for (k, v) in map.iter() {
            let ip = scalar_text(v)
                .ok_or_else(|| wrong_type(key, "an object of \"local-ip\":\"public-ip\"", v))?;
            c.public_host_mapping.insert(k.clone(), ip);
        }
    }
    Ok(())
}

fn read_zk(r: &Reader, c: &mut ZkConfig) -> Result<(), ConfigError> {
    r.check_keys(
        "mp.zk",
        &[
            "server-address",
            "namespace",
            "digest",
            "sessionTimeoutMs",
            "connectionTimeoutMs",
        ],
        &["watch-path", "retry", "local-cache-path"],
    )?;
    r.string("mp.zk.server-address", &mut c.server_address)?;
    r.string("mp.zk.namespace", &mut c.namespace)?;
    r.string("mp.zk.digest", &mut c.digest)?;
    r.duration("mp.zk.sessionTimeoutMs", &mut c.session_timeout)?;
    r.duration("mp.zk.connectionTimeoutMs", &mut c.connection_timeout)
}

fn read_redis(r: &Reader, c: &mut RedisConfig) -> Result<(), ConfigError> {
    r.check_keys(
        "mp.redis",
        &["cluster-model", "nodes", "password"],
        &[
            "sentinel-master",
            "config",
            "write-to-zk",
            "cluster-group",
            "maxAttempts",
            "soTimeout",
            "connectionTimeout",
        ],
    )?;
    if r.value("mp.redis.cluster-group").is_some() {
        tracing::warn!(
            "mp.redis.cluster-group (MPush 0.0.x) is ignored; use mp.redis.nodes=[\"ip:port\", ...]"
        );
    }
    r.string("mp.redis.cluster-model", &mut c.cluster_model)?;
    r.string("mp.redis.password", &mut c.password)?;
    let key = "mp.redis.nodes";
    if let Some(v) = r.value(key) {
        const EXPECTED: &str = "a list of \"ip:port\" strings";
        let items = r
            .root
            .get_list(key)
            .map_err(|_| wrong_type(key, EXPECTED, v))?;
        c.nodes = items
            .iter()
            .map(|item| redis_node(item).ok_or_else(|| wrong_type(key, EXPECTED, item)))
            .collect::<Result<_, _>>()?;
    }
    Ok(())
}

/// One `mp.redis.nodes` entry: `"ip:port[:password]"`, or the object form `{host, port, password}`
/// converted to that string.
fn redis_node(item: &HoconValue) -> Option<String> {
    let Some(obj) = item.as_object() else {
        return scalar_text(item);
    };
    let host = obj.get("host").and_then(scalar_text)?;
    let port = obj.get("port").and_then(HoconValue::as_i64)?;
    match obj.get("password").and_then(scalar_text) {
        Some(password) if !password.is_empty() => Some(format!("{host}:{port}:{password}")),
        _ => Some(format!("{host}:{port}")),
    }
}

fn read_push(r: &Reader, c: &mut PushConfig) -> Result<(), ConfigError> {
    r.check_keys("mp.push", &["flow-control", "max-ack-timeout"], &[])?;
    r.duration("mp.push.max-ack-timeout", &mut c.max_ack_timeout)?;
    r.check_keys("mp.push.flow-control", &["global", "broadcast"], &[])?;
    read_flow_control(
        r,
        &mut c.global_flow_control,
        [
            "mp.push.flow-control.global",
            "mp.push.flow-control.global.limit",
            "mp.push.flow-control.global.max",
            "mp.push.flow-control.global.duration",
        ],
    )?;
    read_flow_control(
        r,
        &mut c.broadcast_flow_control,
        [
            "mp.push.flow-control.broadcast",
            "mp.push.flow-control.broadcast.limit",
            "mp.push.flow-control.broadcast.max",
            "mp.push.flow-control.broadcast.duration",
        ],
    )
}

/// `keys` = [section, limit, max, duration].
fn read_flow_control(
    r: &Reader,
    c: &mut FlowControlConfig,
    [section, limit, max, duration]: [&'static str; 4],
) -> Result<(), ConfigError> {
    r.check_keys(section, &["limit", "max", "duration"], &[])?;
    r.int(limit, &mut c.limit, "1..=4294967295")?;
    r.int(max, &mut c.max, "0 or a positive integer")?;
    r.duration(duration, &mut c.duration)
}

fn read_spi(r: &Reader, c: &mut SpiConfig) -> Result<(), ConfigError> {
    r.check_keys(
        "mp.spi",
        &["cache-manager", "mq-client", "service-registry"],
        &["thread-pool-factory", "dns-mapping-manager"],
    )?;
    r.string("mp.spi.cache-manager", &mut c.cache_manager)?;
    r.string("mp.spi.mq-client", &mut c.mq_client)?;
    r.string("mp.spi.service-registry", &mut c.service_registry)
}

/// Typed, key-by-key access to the parsed tree by full `mp.*` path. Each setter leaves the
/// target untouched when the key is absent, so defaults survive.
/// MPush tuning keys (or sections) that mpush-rs accepts for compatibility but does not
/// implement: an operator who sets one expects an effect, so start-up warns about it.
const TUNING_WITHOUT_EFFECT: [&str; 5] = [
    "mp.net.snd_buf",
    "mp.net.rcv_buf",
    "mp.net.traffic-shaping",
    "mp.thread",
    "mp.http",
];

/// MPush's `reference.conf` values for [`TUNING_WITHOUT_EFFECT`]: a file that repeats them
/// (a copied `mpush.conf`) tunes nothing, so only other values are reported.
const TUNING_DEFAULTS: &str = r#"mp {
    net {
        snd_buf { connect-server=32k, gateway-server=0, gateway-client=0 }
        rcv_buf { connect-server=32k, gateway-server=0, gateway-client=0 }
        traffic-shaping {
            gateway-client { enabled:false, check-interval:100ms, write-global-limit:30k, read-global-limit:0, write-channel-limit:3k, read-channel-limit:0 }
            gateway-server { enabled:false, check-interval:100ms, write-global-limit:0, read-global-limit:30k, write-channel-limit:0, read-channel-limit:3k }
            connect-server { enabled:false, check-interval:100ms, write-global-limit:0, read-global-limit:100k, write-channel-limit:3k, read-channel-limit:3k }
        }
    }
    http { proxy-enabled=false, max-conn-per-host=5, default-read-timeout=10s, max-content-length=5m }
    thread.pool {
        conn-work:0, gateway-server-work:0, http-work:0, ack-timer:1, push-task:0,
        gateway-client-work:0, push-client:2
        event-bus { min:1, max:16, queue-size:10000 }
        mq { min:1, max:4, queue-size:10000 }
    }
}"#;

/// The full keys of the scalars at or below `key` whose value differs from MPush's default.
fn tuned_keys(key: &str, v: &HoconValue) -> Vec<String> {
    static DEFAULTS: OnceLock<Option<hocon::Config>> = OnceLock::new();
    let defaults = DEFAULTS.get_or_init(|| {
        hocon::parse_string_with_options(TUNING_DEFAULTS, hocon::ParseOptions::defaults()).ok()
    });
    let mut out = Vec::new();
    collect_tuned(key, v, defaults.as_ref(), &mut out);
    out.sort();
    out
}

fn collect_tuned(
    key: &str,
    v: &HoconValue,
    defaults: Option<&hocon::Config>,
    out: &mut Vec<String>,
) {
    match v {
        HoconValue::Object(map) if !map.is_empty() => {
            for (k, child) in map.iter() {
                collect_tuned(&format!("{key}.{k}"), child, defaults, out);
            }
        }
        // An empty object (`dns-mapping {}`) sets nothing.
        HoconValue::Object(_) => {}
        _ => {
            let default = defaults.and_then(|d| d.get(key)).map(hocon_to_json);
            if default != Some(hocon_to_json(v)) {
                out.push(key.to_string());
            }
        }
    }
}

struct Reader {
    root: hocon::Config,
}

impl Reader {
    fn value(&self, key: &str) -> Option<&HoconValue> {
        self.root.get(key)
    }

    fn string(&self, key: &'static str, out: &mut String) -> Result<(), ConfigError> {
        if let Some(v) = self.value(key) {
            *out = self
                .root
                .get_string(key)
                .map_err(|_| wrong_type(key, "a string", v))?;
        }
        Ok(())
    }

    fn size(&self, key: &'static str, out: &mut usize) -> Result<(), ConfigError> {
        if let Some(v) = self.value(key) {
            let n = self.root.get_bytes(key).map_err(|_| {
                wrong_type(key, "a size such as 10k, 10m or a plain number of bytes", v)
            })?;
            *out = usize::try_from(n).map_err(|_| ConfigError::Invalid {
                key,
                message: format!("{n} bytes is too large"),
            })?;
        }
        Ok(())
    }

    fn duration(&self, key: &'static str, out: &mut Duration) -> Result<(), ConfigError> {
        if let Some(v) = self.value(key) {
            *out = self.root.get_duration(key).map_err(|_| {
                wrong_type(
                    key,
                    "a duration such as 500ms, 10s, 3m or 1d (a plain number is milliseconds)",
                    v,
                )
            })?;
        }
        Ok(())
    }

    fn int<T: TryFrom<i64>>(
        &self,
        key: &'static str,
        out: &mut T,
        range: &str,
    ) -> Result<(), ConfigError> {
        if let Some(v) = self.value(key) {
            let n = self
                .root
                .get_i64(key)
                .map_err(|_| wrong_type(key, "an integer", v))?;
            *out = T::try_from(n).map_err(|_| ConfigError::Invalid {
                key,
                message: format!("must be {range}, got {n}"),
            })?;
        }
        Ok(())
    }

    /// Errors on a key of `section` that is neither `used` nor known-and-`ignored`.
    fn check_keys(
        &self,
        section: &'static str,
        used: &[&str],
        ignored: &[&str],
    ) -> Result<(), ConfigError> {
        match self.unknown_keys(section, used, ignored)?.first() {
            None => Ok(()),
            Some(unknown) => Err(ConfigError::Parse(unknown.clone())),
        }
    }

    /// Logs a warning for each key of `section` that is neither `used` nor `ignored`.
    fn warn_unknown(&self, section: &'static str, used: &[&str], ignored: &[&str]) {
        if let Ok(unknown) = self.unknown_keys(section, used, ignored) {
            for message in unknown {
                tracing::warn!("{message}; ignored");
            }
        }
    }

    fn unknown_keys(
        &self,
        section: &'static str,
        used: &[&str],
        ignored: &[&str],
    ) -> Result<Vec<String>, ConfigError> {
        let Some(v) = self.value(section) else {
            return Ok(Vec::new());
        };
        let map = v
            .as_object()
            .ok_or_else(|| wrong_type(section, "an object", v))?;
        Ok(map
            .keys()
            .filter(|k| !used.contains(&k.as_str()) && !ignored.contains(&k.as_str()))
            .map(|k| {
                let hint = suggest(k, used.iter().chain(ignored))
                    .map(|s| format!(" (did you mean {section}.{s}?)"))
                    .unwrap_or_default();
                format!("unknown key {section}.{k}{hint}")
            })
            .collect())
    }
}

/// The closest known key, if it is close enough to be a plausible typo.
fn suggest<'a>(key: &str, known: impl Iterator<Item = &'a &'a str>) -> Option<&'a str> {
    let norm = |s: &str| -> Vec<char> {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_'))
            .flat_map(char::to_lowercase)
            .collect()
    };
    let key = norm(key);
    known
        .map(|k| (edit_distance(&key, &norm(k)), *k))
        .filter(|(d, _)| *d <= 2.max(key.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let subst = prev[j] + usize::from(ca != cb);
            cur[j + 1] = subst.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// `ConfigError::Parse` for a value of the wrong type or format.
fn wrong_type(key: &str, expected: &str, got: &HoconValue) -> ConfigError {
    ConfigError::Parse(format!("{key}: expected {expected}, got {}", describe(got)))
}

fn describe(v: &HoconValue) -> String {
    match v {
        HoconValue::Scalar(s) if s.value_type == ScalarType::String => format!("{:?}", s.raw),
        HoconValue::Scalar(s) => s.raw.clone(),
        HoconValue::Object(_) => "an object".to_string(),
        HoconValue::Array(_) => "a list".to_string(),
        _ => "an unresolved value".to_string(),
    }
}

/// The text of a non-null scalar (strings, and numbers/booleans as written).
fn scalar_text(v: &HoconValue) -> Option<String> {
    match v {
        HoconValue::Scalar(s) if s.value_type != ScalarType::Null => Some(s.raw.clone()),
        _ => None,
    }
}

fn hocon_to_json(v: &HoconValue) -> serde_json::Value {
    use serde_json::Value;
    match v {
        HoconValue::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), hocon_to_json(v)))
                .collect(),
        ),
        HoconValue::Array(items) => Value::Array(items.iter().map(hocon_to_json).collect()),
        HoconValue::Scalar(s) => match s.value_type {
            ScalarType::Null => Value::Null,
            ScalarType::Boolean => v.as_bool().map_or(Value::Null, Value::Bool),
            ScalarType::Number => s
                .raw
                .parse::<i64>()
                .map(Value::from)
                .ok()
                .or_else(|| {
                    s.raw
                        .parse::<f64>()
                        .ok()
                        .and_then(serde_json::Number::from_f64)
                        .map(Value::Number)
                })
                .unwrap_or_else(|| Value::String(s.raw.clone())),
            _ => Value::String(s.raw.clone()),
        },
        _ => Value::Null,
    }
}

/// The parser's message, with a hint for MPush's known `reference.conf` typo.
fn hocon_message(e: &hocon::HoconError) -> String {
    let message = e.to_string();
    if message.contains("got array + string") {
        format!(
            "{message} (MPush's reference.conf has `nodes:[] s//...` with a stray `s`: remove the `s`)"
        )
    } else {
        message
    }
}

/// What `${...}` may resolve to besides keys of the file itself: the process environment plus the
/// Java system properties MPush configs use. Keys of the file always win.
fn substitution_env() -> HashMap<String, String> {
    let mut env: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let user_dir = std::env::current_dir()
        .map(|d| d.display().to_string())
        .unwrap_or_else(|_| ".".to_string());
    if let Some(home) = env.get("HOME").cloned() {
        env.entry("user.home".to_string()).or_insert(home);
    }
    env.insert("user.dir".to_string(), user_dir.clone());
    // reference.conf defines `mp.home=${user.dir}` and lets other keys refer to `${mp.home}`,
    // `${mp.net.public-ip}` and `${mp.net.local-ip}`; supply them for files that use them
    // without defining them.
    env.insert("mp.home".to_string(), user_dir);
    env.insert("mp.net.public-ip".to_string(), String::new());
    env.insert("mp.net.local-ip".to_string(), String::new());
    env
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

impl MPushConfig {
    /// Checks ranges and consistency; the loaders call it, and code that changes fields after
    /// loading should call it again.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Invalid`] naming the first offending `mp.*` key, e.g.
    /// `invalid config value mp.core.min-heartbeat: must not exceed mp.core.max-heartbeat (10s > 5s)`.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.core.validate()?;
        self.security.validate()?;
        self.net.validate()?;
        self.zk.validate()?;
        self.redis.validate(&self.spi)?;
        self.push.validate()
    }
}

fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

fn check_packet_size(key: &'static str, size: usize) -> Result<(), ConfigError> {
    if !(MIN_PACKET_SIZE_LIMIT..=MAX_PACKET_SIZE_LIMIT).contains(&size) {
        return Err(invalid(
            key,
            format!("must be between 1k and 1g (1024..=1073741824 bytes), got {size} bytes"),
        ));
    }
    Ok(())
}

impl CoreConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        check_packet_size("mp.core.max-packet-size", self.max_packet_size)?;
        if self.compress_threshold == 0 {
            return Err(invalid(
                "mp.core.compress-threshold",
                "must be greater than 0",
            ));
        }
        let one_sec = Duration::from_secs(1);
        // Sub-second heartbeats are useless in production but let tests exercise idle
        // handling quickly; below 100ms the idle timer would just spin.
        let min_hb = Duration::from_millis(100);
        // The negotiated heartbeat travels as a 32-bit millisecond count (HANDSHAKE ok).
        let wire_max = Duration::from_millis(i32::MAX as u64);
        for (key, hb) in [
            ("mp.core.min-heartbeat", self.min_heartbeat),
            ("mp.core.max-heartbeat", self.max_heartbeat),
        ] {
            if hb < min_hb {
                return Err(invalid(
                    key,
                    format!("must be at least 100ms, got {}", fmt_duration(hb)),
                ));
            }
            if hb > wire_max {
                return Err(invalid(
                    key,
                    format!(
                        "must be at most 2147483647ms (a 32-bit millisecond count on the wire), got {}",
                        fmt_duration(hb)
                    ),
                ));
            }
        }
        if self.min_heartbeat > self.max_heartbeat {
            return Err(invalid(
                "mp.core.min-heartbeat",
                format!(
                    "must not exceed mp.core.max-heartbeat ({} > {})",
                    fmt_duration(self.min_heartbeat),
                    fmt_duration(self.max_heartbeat)
                ),
            ));
        }
        let ttl = self.session_expired_time;
        if ttl < one_sec {
            return Err(invalid(
                "mp.core.session-expired-time",
                format!("must be at least 1s, got {}", fmt_duration(ttl)),
            ));
        }
        // MPush keeps this as an int of seconds; the cap also keeps `now + ttl` in milliseconds
        // far from i64 overflow (spec Q26).
        if ttl.as_secs() > i32::MAX as u64 {
            return Err(invalid(
                "mp.core.session-expired-time",
                format!(
                    "must be at most 2147483647s (about 68 years), got {}",
                    fmt_duration(ttl)
                ),
            ));
        }
        Ok(())
    }
}

impl SecurityConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.aes_key_length != 16 {
            return Err(invalid(
                "mp.security.aes-key-length",
                format!(
                    "must be 16 (AES-128, the only length MPush clients use), got {}",
                    self.aes_key_length
                ),
            ));
        }
        for (key, value) in [
            ("mp.security.private-key", &self.private_key),
            ("mp.security.public-key", &self.public_key),
        ] {
            if value.is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
            if let Err(e) = base64::engine::general_purpose::STANDARD.decode(value) {
                return Err(invalid(key, format!("is not valid base64: {e}")));
            }
        }
        Ok(())
    }
}

impl NetConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        match self.gateway_server_net.as_str() {
            "tcp" | "udp" => {}
            "sctp" | "udt" => {
                return Err(invalid(
                    "mp.net.gateway-server-net",
                    format!(
                        "{:?} is not supported by mpush-rs (use tcp or udp)",
                        self.gateway_server_net
                    ),
                ));
            }
            other => {
                return Err(invalid(
                    "mp.net.gateway-server-net",
                    format!("must be tcp or udp, got {other:?}"),
                ));
            }
        }
        if self.gateway_client_num == 0 {
            return Err(invalid("mp.net.gateway-client-num", "must be at least 1"));
        }
        for (key, group) in [
            (
                "mp.net.gateway-server-multicast",
                &self.gateway_server_multicast,
            ),
            (
                "mp.net.gateway-client-multicast",
                &self.gateway_client_multicast,
            ),
        ] {
            // "" disables multicast; anything else must be an IPv4 group address.
            if !group.is_empty() && !group.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_multicast()) {
                return Err(invalid(
                    key,
                    format!("must be \"\" or an IPv4 multicast address, got {group:?}"),
                ));
            }
        }
        check_packet_size(
            "mp.net.gateway-max-packet-size",
            self.gateway_max_packet_size,
        )?;
        for (key, value, max) in [
            (
                "mp.net.connect-server-max-connections",
                self.connect_server_max_connections,
                10_000_000,
            ),
            (
                "mp.net.connect-server-max-pending-handshakes",
                self.connect_server_max_pending_handshakes,
                1_000_000,
            ),
        ] {
            if !(1..=max).contains(&value) {
                return Err(invalid(key, format!("must be 1..={max}, got {value}")));
            }
        }
        if !(1..=MAX_GATEWAY_IN_FLIGHT).contains(&self.gateway_max_in_flight) {
            return Err(invalid(
                "mp.net.gateway-max-in-flight",
                format!(
                    "must be 1..={MAX_GATEWAY_IN_FLIGHT}, got {}",
                    self.gateway_max_in_flight
                ),
            ));
        }
        for (low_key, low, high_key, high) in [
            (
                "mp.net.write-buffer-water-mark.connect-server-low",
                self.connect_server_low_water_mark,
                "mp.net.write-buffer-water-mark.connect-server-high",
                self.connect_server_high_water_mark,
            ),
            (
                "mp.net.write-buffer-water-mark.gateway-server-low",
                self.gateway_server_low_water_mark,
                "mp.net.write-buffer-water-mark.gateway-server-high",
                self.gateway_server_high_water_mark,
            ),
        ] {
            if low > high {
                return Err(invalid(
                    low_key,
                    format!("must not exceed {high_key} ({low} > {high} bytes)"),
                ));
            }
        }
        Ok(())
    }

    /// The machine's LAN address: `local-ip` if configured, else the first site-local
    /// (10/8, 172.16/12, 192.168/16) IPv4 address of this machine, else `127.0.0.1` (spec §11).
    ///
    /// Interfaces are listed with `if-addrs`; the default route's interface (`/proc/net/route`
    /// on Linux) comes first, then the others in listing order, bridges (docker0, virbr0, …)
    /// last. [`MPushConfig::log_startup_notes`] logs the choice. Set `mp.net.local-ip` on
    /// multi-homed hosts.
    pub fn resolved_local_ip(&self) -> String {
        if !self.local_ip.is_empty() {
            return self.local_ip.clone();
        }
        machine_ips()
            .site_local
            .first()
            .map_or_else(|| Ipv4Addr::LOCALHOST.to_string(), Ipv4Addr::to_string)
    }

    /// The machine's public address (spec §11): `public-ip` if configured, else
    /// `public-host-mapping[resolved local ip]`, else the first IPv4 address of this machine
    /// that is neither site-local, loopback nor link-local, else [`resolved_local_ip`](Self::resolved_local_ip).
    pub fn resolved_public_ip(&self) -> String {
        if !self.public_ip.is_empty() {
            return self.public_ip.clone();
        }
        let local = self.resolved_local_ip();
        if let Some(mapped) = self.public_host_mapping.get(&local) {
            if !mapped.is_empty() {
                return mapped.clone();
            }
        }
        machine_ips()
            .public
            .first()
            .map_or(local, Ipv4Addr::to_string)
    }

    /// The host registered for the connection server (ZK `/cluster/cs`):
    /// `connect-server-register-ip` if configured, else [`resolved_public_ip`](Self::resolved_public_ip).
    pub fn connect_register_ip(&self) -> String {
        if self.connect_server_register_ip.is_empty() {
            self.resolved_public_ip()
        } else {
            self.connect_server_register_ip.clone()
        }
    }

    /// The host registered for the gateway server (ZK `/cluster/gs`):
    /// `gateway-server-register-ip` if configured, else [`resolved_local_ip`](Self::resolved_local_ip).
    pub fn gateway_register_ip(&self) -> String {
        if self.gateway_server_register_ip.is_empty() {
            self.resolved_local_ip()
        } else {
            self.gateway_server_register_ip.clone()
        }
    }
}

impl MPushConfig {
    /// Settings that are accepted but have no effect in mpush-rs, one message each: the keys
    /// in [`accepted_without_effect`](Self::accepted_without_effect), and fields that are
    /// parsed but unused when set to a non-default value.
    pub fn settings_without_effect(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .accepted_without_effect
            .iter()
            .map(|k| format!("{k} is accepted for MPush compatibility but has no effect"))
            .collect();
        let (net, default) = (&self.net, NetConfig::default());
        let unused = [
            (
                "mp.net.write-buffer-water-mark.gateway-server-low",
                net.gateway_server_low_water_mark != default.gateway_server_low_water_mark,
            ),
            (
                "mp.net.write-buffer-water-mark.gateway-server-high",
                net.gateway_server_high_water_mark != default.gateway_server_high_water_mark,
            ),
        ];
        for (key, set) in unused {
            if set {
                out.push(format!(
                    "{key} is set but has no effect (not implemented in mpush-rs)"
                ));
            }
        }
        out
    }

    /// Logs what an operator should know when a server starts: the addresses it will
    /// register (info; a warning when one is loopback or on a bridge), and a warning for each
    /// of [`settings_without_effect`](Self::settings_without_effect).
    pub fn log_startup_notes(&self) {
        let net = &self.net;
        let ips = machine_ips();
        let addresses = [
            ("local-ip", net.resolved_local_ip()),
            ("public-ip", net.resolved_public_ip()),
            ("connect-server-register-ip", net.connect_register_ip()),
            ("gateway-server-register-ip", net.gateway_register_ip()),
        ];
        for (key, ip) in &addresses {
            let (how, suspicious) = describe_address(ips, ip);
            if suspicious {
                tracing::warn!(
                    key = %format!("mp.net.{key}"),
                    %ip,
                    "address {how}; set mp.net.{key} if other machines must reach this server"
                );
            } else {
                tracing::info!(key = %format!("mp.net.{key}"), %ip, "address {how}");
            }
        }
        for message in self.settings_without_effect() {
            tracing::warn!("{message}");
        }
    }
}

impl ZkConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.session_timeout.is_zero() {
            return Err(invalid("mp.zk.sessionTimeoutMs", "must be greater than 0"));
        }
        if self.connection_timeout.is_zero() {
            return Err(invalid(
                "mp.zk.connectionTimeoutMs",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}

impl RedisConfig {
    fn validate(&self, spi: &SpiConfig) -> Result<(), ConfigError> {
        match self.cluster_model.as_str() {
            "single" | "cluster" => {}
            "sentinel" => {
                return Err(invalid(
                    "mp.redis.cluster-model",
                    "sentinel is not supported by mpush-rs (use single or cluster)",
                ));
            }
            other => {
                return Err(invalid(
                    "mp.redis.cluster-model",
                    format!("must be single or cluster, got {other:?}"),
                ));
            }
        }
        // Nodes are only required when a Redis backend may be selected ("" = highest priority
        // linked, which can be Redis); a memory/zk-only setup may leave MPush's `nodes:[]`.
        let may_use_redis = [&spi.cache_manager, &spi.mq_client]
            .iter()
            .any(|name| name.is_empty() || name.as_str() == "redis");
        if self.nodes.is_empty() && may_use_redis {
            return Err(invalid(
                "mp.redis.nodes",
                "must not be empty (e.g. nodes:[\"127.0.0.1:6379\"])",
            ));
        }
        for node in &self.nodes {
            let mut parts = node.splitn(3, ':');
            let host = parts.next().unwrap_or_default();
            let port = parts.next().and_then(|p| p.parse::<u16>().ok());
            if host.is_empty() || !matches!(port, Some(p) if p != 0) {
                return Err(invalid(
                    "mp.redis.nodes",
                    format!("entry {node:?} is not \"ip:port\" (or \"ip:port:password\")"),
                ));
            }
        }
        Ok(())
    }
}

impl PushConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        for (fc, limit_key, duration_key) in [
            (
                &self.global_flow_control,
                "mp.push.flow-control.global.limit",
                "mp.push.flow-control.global.duration",
            ),
            (
                &self.broadcast_flow_control,
                "mp.push.flow-control.broadcast.limit",
                "mp.push.flow-control.broadcast.duration",
            ),
        ] {
            if fc.limit == 0 {
                return Err(invalid(limit_key, "must be at least 1"));
            }
            if fc.duration.is_zero() {
                return Err(invalid(duration_key, "must be greater than 0"));
            }
        }
        if self.max_ack_timeout.is_zero() || self.max_ack_timeout > MAX_WIRE_TIMEOUT {
            return Err(invalid(
                "mp.push.max-ack-timeout",
                format!(
                    "must be greater than 0 and at most {} (the wire's i32 milliseconds), got {}",
                    fmt_duration(MAX_WIRE_TIMEOUT),
                    fmt_duration(self.max_ack_timeout)
                ),
            ));
        }
        Ok(())
    }
}

/// The longest timeout a GATEWAY_PUSH can carry (`i32` milliseconds, about 24.8 days).
const MAX_WIRE_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// Formats a duration in the largest HOCON unit that represents it exactly (`3m`, `10s`, `500ms`).
fn fmt_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    if d.subsec_nanos() == 0 {
        let s = d.as_secs();
        return match s {
            _ if s.is_multiple_of(86_400) => format!("{}d", s / 86_400),
            _ if s.is_multiple_of(3_600) => format!("{}h", s / 3_600),
            _ if s.is_multiple_of(60) => format!("{}m", s / 60),
            _ => format!("{s}s"),
        };
    }
    if d.subsec_nanos().is_multiple_of(1_000_000) {
        return format!("{}ms", d.as_millis());
    }
    format!("{d:?}")
}

// ---------------------------------------------------------------------------------------------
// Machine addresses
// ---------------------------------------------------------------------------------------------

/// One IPv4 address of a network interface, as address detection sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InterfaceAddr {
    /// Interface name (`eth0`, `docker0`).
    name: String,
    ip: Ipv4Addr,
    /// A Linux bridge (`/sys/class/net/<name>/bridge`) or a container/VM bridge by name: its
    /// addresses are reachable from this host only, so they are the last choice.
    bridge: bool,
}

/// This machine's IPv4 addresses, split as spec §11 needs them, best first.
#[derive(Debug, Default)]
struct MachineIps {
    /// 10/8, 172.16/12, 192.168/16.
    site_local: Vec<Ipv4Addr>,
    /// Neither site-local, loopback, link-local, unspecified, broadcast nor multicast.
    public: Vec<Ipv4Addr>,
    /// The interface of each address above, and whether it is a bridge (for the start-up log).
    interfaces: Vec<(Ipv4Addr, String, bool)>,
}

impl MachineIps {
    fn interface_of(&self, ip: &str) -> Option<(&str, bool)> {
        let ip: Ipv4Addr = ip.parse().ok()?;
        self.interfaces
            .iter()
            .find(|(a, _, _)| *a == ip)
            .map(|(_, name, bridge)| (name.as_str(), *bridge))
    }
}

fn machine_ips() -> &'static MachineIps {
    static IPS: OnceLock<MachineIps> = OnceLock::new();
    IPS.get_or_init(|| {
        let interfaces = match if_addrs::get_if_addrs() {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list network interfaces; using 127.0.0.1");
                Vec::new()
            }
        };
        let addrs: Vec<InterfaceAddr> = interfaces
            .into_iter()
            .filter_map(|i| match i.addr {
                if_addrs::IfAddr::V4(v4) => Some(InterfaceAddr {
                    bridge: is_bridge(&i.name),
                    name: i.name,
                    ip: v4.ip,
                }),
                if_addrs::IfAddr::V6(_) => None,
            })
            .collect();
        // Only the choice of interface comes from the routing table; "" when there is none.
        let route = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
        choose_addresses(&addrs, default_route_interface(&route).as_deref())
    })
}

/// Whether `name` is a bridge: a Linux bridge device, or a name Docker, libvirt, LXC or a
/// CNI plugin gives its bridges.
fn is_bridge(name: &str) -> bool {
    const BRIDGE_PREFIXES: [&str; 6] = ["docker", "br-", "virbr", "lxcbr", "cni", "podman"];
    BRIDGE_PREFIXES.iter().any(|p| name.starts_with(p))
        || Path::new("/sys/class/net")
            .join(name)
            .join("bridge")
            .is_dir()
}

/// The interface of the IPv4 default route with the lowest metric in a `/proc/net/route`
/// dump (columns: Iface Destination Gateway Flags RefCnt Use Metric Mask ...), if any.
fn default_route_interface(route: &str) -> Option<String> {
    const RTF_UP: u32 = 0x1;
    route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, flags, metric, mask) = (
                cols.first()?,
                cols.get(1)?,
                cols.get(3)?,
                cols.get(6)?,
                cols.get(7)?,
            );
            let flags = u32::from_str_radix(flags, 16).ok()?;
            let metric: u32 = metric.parse().ok()?;
            (*dest == "00000000" && *mask == "00000000" && flags & RTF_UP != 0)
                .then(|| (metric, iface.to_string()))
        })
        .min_by_key(|(metric, _)| *metric)
        .map(|(_, iface)| iface)
}

/// Orders the addresses for spec §11: the default route's interface first, then the other
/// interfaces in listing order, bridges last; loopback and link-local are never chosen.
fn choose_addresses(addrs: &[InterfaceAddr], default_if: Option<&str>) -> MachineIps {
    let rank = |a: &InterfaceAddr| {
        if Some(a.name.as_str()) == default_if {
            0
        } else if a.bridge {
            2
        } else {
            1
        }
    };
    let mut ordered: Vec<&InterfaceAddr> = addrs.iter().collect();
    // Stable: listing order is kept within a rank.
    ordered.sort_by_key(|a| rank(a));
    let mut m = MachineIps::default();
    for a in ordered {
        let ip = a.ip;
        let list = if ip.is_private() {
            &mut m.site_local
        } else if ip.is_loopback()
            || ip.is_link_local()
            || ip.is_unspecified()
            || ip.is_broadcast()
            || ip.is_multicast()
        {
            continue;
        } else {
            &mut m.public
        };
        if !list.contains(&ip) {
            list.push(ip);
            m.interfaces.push((ip, a.name.clone(), a.bridge));
        }
    }
    m
}

/// Describes how `ip` was chosen, for the start-up log, and whether it deserves a warning
/// (loopback: other machines cannot reach it; bridge: only this host can).
fn describe_address(ips: &MachineIps, ip: &str) -> (String, bool) {
    if ip.parse::<Ipv4Addr>().is_ok_and(|a| a.is_loopback()) {
        return ("loopback: other machines cannot reach it".into(), true);
    }
    match ips.interface_of(ip) {
        Some((name, true)) => (
            format!("on bridge {name}: likely reachable from this host only"),
            true,
        ),
        Some((name, false)) => (format!("on {name}"), false),
        None => ("configured".into(), false),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The brief's sample plus keys from MPush's own `mpush.conf` / `reference.conf`.
    const FULL: &str = r#"
mp.log-level=debug
mp.log-dir=${mp.home}/logs
mp.core.min-heartbeat=10s
mp.core.max-packet-size=10k
mp.core.epoll-provider=netty
mp.net { connect-server-port=3000, gateway-server-port=3001, admin-server-port=3002 }
mp.net.write-buffer-water-mark.connect-server-high=64k
mp.net.write-buffer-water-mark.gateway-server-low=1m
mp.net.snd_buf { connect-server=32k, gateway-server=0, gateway-client=0 }
mp.net.traffic-shaping.connect-server { enabled:false, check-interval:100ms, read-global-limit:100k }
mp.net.connect-server-register-attr { zone = "east" }
mp.net.public-host-mapping { "10.0.0.5":"1.2.3.4" }
mp.net.gateway-client-multicast="239.239.239.99"
mp.redis { cluster-model=single, nodes:["127.0.0.1:6379"], password="" }
mp.redis.config { maxTotal:8, maxIdle:4, jmxNamePrefix:pool }
mp.zk { server-address="127.0.0.1:2181", namespace=mpush, digest=mpush }
mp.zk.sessionTimeoutMs=7s
mp.zk.connectionTimeoutMs=2000
mp.zk.retry { baseSleepTimeMs=3s, maxRetries=3, maxSleepMs=5s }
mp.push.flow-control.global { limit=5000, max=0, duration=1s }
mp.push.flow-control.broadcast.limit=100
mp.spi { cache-manager=memory, thread-pool-factory:"com.mpush.tools.thread.pool.DefaultThreadPoolFactory" }
mp.security.private-key="AAEC"
mp.security.public-key="AAECAw=="
mp.http.proxy-enabled=true
mp.http.dns-mapping {"www.baidu.com":["127.0.0.1:8080"]}
mp.thread.pool.conn-work=0
mp.thread.pool.event-bus { min:1, max:16, queue-size:10000 }
mp.monitor.dump-stack=false
mp.monitor.dump-dir=${mp.home}/tmp
mp.snowflake { workerId=0 }
other.app.key = 1
"#;

    type Mutation = Box<dyn FnOnce(&mut MPushConfig)>;

    fn invalid_key(mutate: impl FnOnce(&mut MPushConfig)) -> (&'static str, String) {
        let mut c = MPushConfig::default();
        mutate(&mut c);
        match c.validate() {
            Err(ConfigError::Invalid { key, message }) => (key, message),
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    fn parse_err(text: &str) -> String {
        match MPushConfig::from_hocon_str(text) {
            Err(ConfigError::Parse(m)) => m,
            other => panic!("expected Parse, got {other:?}"),
        }
    }

    #[test]
    fn defaults_match_spec_16() {
        let c = MPushConfig::default();
        c.validate().unwrap();
        assert_eq!(c.core.max_packet_size, 10240);
        assert_eq!(c.core.compress_threshold, 10240);
        assert_eq!(c.core.min_heartbeat, Duration::from_secs(180));
        assert_eq!(c.core.max_heartbeat, Duration::from_secs(180));
        assert_eq!(c.core.max_hb_timeout_times, 2);
        assert_eq!(c.core.session_expired_time, Duration::from_secs(86_400));
        assert_eq!(c.security.aes_key_length, 16);
        assert_eq!(c.security.public_key, DEFAULT_PUBLIC_KEY);
        assert_eq!(c.security.private_key, DEFAULT_PRIVATE_KEY);
        let n = &c.net;
        assert_eq!((n.local_ip.as_str(), n.public_ip.as_str()), ("", ""));
        assert_eq!(n.connect_server_bind_ip, "");
        assert_eq!(n.connect_server_register_ip, "");
        assert_eq!(n.connect_server_port, 3000);
        assert_eq!(
            serde_json::to_string(&n.connect_server_register_attr).unwrap(),
            r#"{"weight":1}"#
        );
        assert_eq!(n.gateway_server_bind_ip, "");
        assert_eq!(n.gateway_server_register_ip, "");
        assert_eq!(n.gateway_server_port, 3001);
        assert_eq!(n.gateway_server_net, "tcp");
        assert_eq!(n.gateway_client_num, 1);
        assert_eq!(n.gateway_client_port, 4000);
        assert_eq!(n.gateway_server_multicast, "239.239.239.88");
        assert_eq!(n.gateway_client_multicast, "239.239.239.99");
        assert_eq!(n.gateway_max_packet_size, 10240);
        assert_eq!(n.gateway_max_in_flight, 4096);
        assert_eq!(n.connect_server_max_connections, 100_000);
        assert_eq!(n.connect_server_ip_connect_rate, 0);
        assert_eq!(n.connect_server_max_pending_handshakes, 1024);
        assert_eq!(n.admin_server_port, 3002);
        assert_eq!((n.ws_server_port, n.ws_path.as_str()), (0, "/"));
        assert_eq!(n.connect_server_low_water_mark, 32 * 1024);
        assert_eq!(n.connect_server_high_water_mark, 64 * 1024);
        assert_eq!(n.gateway_server_low_water_mark, 10 * 1024 * 1024);
        assert_eq!(n.gateway_server_high_water_mark, 20 * 1024 * 1024);
        assert!(n.public_host_mapping.is_empty());
        assert_eq!(c.zk.server_address, "127.0.0.1:2181");
        assert_eq!(
            (c.zk.namespace.as_str(), c.zk.digest.as_str()),
            ("mpush", "mpush")
        );
        assert_eq!(c.zk.session_timeout, Duration::from_secs(5));
        assert_eq!(c.zk.connection_timeout, Duration::from_secs(5));
        assert_eq!(c.redis.cluster_model, "single");
        assert_eq!(c.redis.nodes, ["127.0.0.1:6379"]);
        assert_eq!(c.redis.password, "");
        let fc = |limit, max| FlowControlConfig {
            limit,
            max,
            duration: Duration::from_secs(1),
        };
        assert_eq!(c.push.global_flow_control, fc(5000, 0));
        assert_eq!(c.push.broadcast_flow_control, fc(3000, 100_000));
        assert_eq!(c.push.max_ack_timeout, Duration::from_secs(60));
        assert_eq!(c.spi, SpiConfig::default());
        assert_eq!(c.spi.cache_manager, "");
    }

    #[test]
    fn empty_input_is_defaults() {
        assert_eq!(
            MPushConfig::from_hocon_str("").unwrap(),
            MPushConfig::default()
        );
        assert_eq!(
            MPushConfig::from_hocon_str("{}").unwrap(),
            MPushConfig::default()
        );
    }

    #[test]
    fn full_sample_lands_in_the_right_fields() {
        let c = MPushConfig::from_hocon_str(FULL).unwrap();
        let mut want = MPushConfig::default();
        want.core.min_heartbeat = Duration::from_secs(10);
        want.net.gateway_server_low_water_mark = 1024 * 1024;
        want.net
            .connect_server_register_attr
            .insert("zone".into(), serde_json::Value::from("east"));
        want.net
            .public_host_mapping
            .insert("10.0.0.5".into(), "1.2.3.4".into());
        want.zk.session_timeout = Duration::from_secs(7);
        want.zk.connection_timeout = Duration::from_millis(2000);
        want.push.broadcast_flow_control.limit = 100;
        want.spi.cache_manager = "memory".into();
        want.security.private_key = "AAEC".into();
        want.security.public_key = "AAECAw==".into();
        // The sample's other tuning keys repeat MPush's defaults.
        want.accepted_without_effect = vec![
            "mp.http.dns-mapping.www.baidu.com".into(),
            "mp.http.proxy-enabled".into(),
        ];
        assert_eq!(c, want);
    }

    #[test]
    fn json_and_units() {
        let c = MPushConfig::from_hocon_str(
            r#"{"mp": {"core": {"max-packet-size": 65536, "compress-threshold": "1m",
                "min-heartbeat": 500000, "max-heartbeat": "1h", "session-expired-time": "2d"},
                "net": {"gateway-max-packet-size": "64K", "ws-path": "/ws",
                    "gateway-max-in-flight": 100, "connect-server-max-connections": 7,
                    "connect-server-ip-connect-rate": 20,
                    "connect-server-max-pending-handshakes": 9},
                "push": {"max-ack-timeout": "2m"}}}"#,
        )
        .unwrap();
        assert_eq!(c.net.gateway_max_in_flight, 100);
        assert_eq!(c.net.connect_server_max_connections, 7);
        assert_eq!(c.net.connect_server_ip_connect_rate, 20);
        assert_eq!(c.net.connect_server_max_pending_handshakes, 9);
        assert_eq!(c.push.max_ack_timeout, Duration::from_secs(120));
        assert_eq!(c.core.max_packet_size, 65536);
        assert_eq!(c.core.compress_threshold, 1024 * 1024);
        assert_eq!(c.core.min_heartbeat, Duration::from_millis(500_000));
        assert_eq!(c.core.max_heartbeat, Duration::from_secs(3600));
        assert_eq!(c.core.session_expired_time, Duration::from_secs(2 * 86_400));
        assert_eq!(c.net.gateway_max_packet_size, 64 * 1024);
        assert_eq!(c.net.ws_path, "/ws");
        // `3m` is minutes as a duration, MiB as a size.
        let c = MPushConfig::from_hocon_str(
            "mp.core { max-heartbeat=3m, max-packet-size=3m }\nmp.core.min-heartbeat=500ms\nmp.core.min-heartbeat=${mp.core.max-heartbeat}",
        )
        .unwrap();
        assert_eq!(c.core.max_heartbeat, Duration::from_secs(180));
        assert_eq!(c.core.min_heartbeat, Duration::from_secs(180));
        assert_eq!(c.core.max_packet_size, 3 * 1024 * 1024);
    }

    #[test]
    fn redis_nodes_forms() {
        let c = MPushConfig::from_hocon_str(
            r#"mp.redis { cluster-model=cluster, nodes:["10.0.0.1:6380", "10.0.0.2:6381:secret",
                {host:"10.0.0.3", port:6382}, {host:"10.0.0.4", port:6383, password:pw}] }"#,
        )
        .unwrap();
        assert_eq!(c.redis.cluster_model, "cluster");
        assert_eq!(
            c.redis.nodes,
            [
                "10.0.0.1:6380",
                "10.0.0.2:6381:secret",
                "10.0.0.3:6382",
                "10.0.0.4:6383:pw"
            ]
        );
        let m = parse_err("mp.redis.nodes = \"127.0.0.1:6379\"");
        assert!(m.contains("mp.redis.nodes: expected a list"), "{m}");
        let m = parse_err("mp.redis.nodes = [[\"127.0.0.1:6379\"]]");
        assert!(m.contains("mp.redis.nodes"), "{m}");
    }

    #[test]
    fn substitutions() {
        let dir = std::env::current_dir().unwrap().display().to_string();
        let c = MPushConfig::from_hocon_str(
            "mp.zk.namespace=${user.dir}\nmp.zk.digest=${mp.home}x\nmp.net.connect-server-register-ip=${mp.net.public-ip}",
        )
        .unwrap();
        assert_eq!(c.zk.namespace, dir);
        assert_eq!(c.zk.digest, format!("{dir}x"));
        assert_eq!(c.net.connect_server_register_ip, "");
        // The file wins over the built-in fallbacks.
        let c =
            MPushConfig::from_hocon_str("mp.home=/opt/mp\nmp.zk.namespace=${mp.home}/ns").unwrap();
        assert_eq!(c.zk.namespace, "/opt/mp/ns");
        // The process environment (PATH is set in any test environment).
        let path = std::env::var("PATH").unwrap();
        let c = MPushConfig::from_hocon_str("mp.zk.digest=${?PATH}").unwrap();
        assert_eq!(c.zk.digest, path);
        let m = parse_err("mp.zk.digest=${NO_SUCH_VARIABLE_FOR_MPUSH_TEST}");
        assert!(m.contains("NO_SUCH_VARIABLE_FOR_MPUSH_TEST"), "{m}");
    }

    #[test]
    fn unknown_keys_in_implemented_sections_are_errors() {
        let m = parse_err("mp.core.max-pakcet-size=10k");
        assert!(
            m.contains(
                "unknown key mp.core.max-pakcet-size (did you mean mp.core.max-packet-size?)"
            ),
            "{m}"
        );
        let m = parse_err("mp.zk.session-timeout-ms=5s");
        assert!(m.contains("did you mean mp.zk.sessionTimeoutMs?"), "{m}");
        let m = parse_err("mp.net.write-buffer-water-mark.connect-low=1k");
        assert!(
            m.contains("unknown key mp.net.write-buffer-water-mark.connect-low"),
            "{m}"
        );
        let m = parse_err("mp.push.flow-control.global.limt=1");
        assert!(m.contains("mp.push.flow-control.global.limit?"), "{m}");
        let m = parse_err("mp.spi.totally-unrelated-thing=x");
        assert!(
            m.ends_with("unknown key mp.spi.totally-unrelated-thing"),
            "{m}"
        );
        // Unknown top-level mp keys and keys outside mp are only warned about / ignored.
        MPushConfig::from_hocon_str("mp.whatever=1\nfoo.bar=2").unwrap();
    }

    #[test]
    fn wrong_types_are_parse_errors_naming_the_key() {
        let m = parse_err("mp.core.min-heartbeat=fast");
        assert!(
            m.starts_with("mp.core.min-heartbeat: expected a duration")
                && m.ends_with("got \"fast\""),
            "{m}"
        );
        let m = parse_err("mp.core.max-packet-size=10 KB");
        assert!(
            m.starts_with("mp.core.max-packet-size: expected a size"),
            "{m}"
        );
        let m = parse_err("mp.net.connect-server-port=abc");
        assert!(
            m.contains("mp.net.connect-server-port: expected an integer"),
            "{m}"
        );
        let m = parse_err("mp.net.ws-path { a = 1 }");
        assert!(
            m.contains("mp.net.ws-path: expected a string, got an object"),
            "{m}"
        );
        let m = parse_err("mp.core = 5");
        assert!(m.contains("mp.core: expected an object, got 5"), "{m}");
        let m = parse_err("mp = 5");
        assert!(m.contains("mp: expected an object"), "{m}");
        match MPushConfig::from_hocon_str("mp.net.connect-server-port=70000") {
            Err(ConfigError::Invalid { key, message }) => {
                assert_eq!(key, "mp.net.connect-server-port");
                assert_eq!(message, "must be 0..=65535, got 70000");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_syntax_is_parse_error_with_parser_message() {
        let m = parse_err("mp { core { max-packet-size = ");
        assert!(m.contains("ParseError at 1:"), "{m}");
        let m = parse_err("mp.redis { nodes:[] s//[\"127.0.0.1:6379\"]\n }");
        assert!(m.contains("stray `s`"), "{m}");
    }

    #[test]
    fn missing_file_is_io_error_with_path() {
        let path = "/nonexistent/dir/mpush.conf";
        match MPushConfig::from_file(path) {
            Err(e @ ConfigError::Io { .. }) => {
                assert!(e.to_string().contains(path), "{e}");
                let ConfigError::Io { path: p, source } = e else {
                    unreachable!()
                };
                assert_eq!(p, path);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn from_file_reports_path_in_parse_errors_and_resolves_includes() {
        let dir = std::env::temp_dir().join(format!("mpush-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("base.conf"), "mp.net.connect-server-port=4000\n").unwrap();
        let main = dir.join("main.conf");
        std::fs::write(
            &main,
            "include \"base.conf\"\nmp.net.gateway-server-port=4001\n",
        )
        .unwrap();
        let c = MPushConfig::from_file(&main).unwrap();
        assert_eq!(c.net.connect_server_port, 4000);
        assert_eq!(c.net.gateway_server_port, 4001);
        let bad = dir.join("bad.conf");
        std::fs::write(&bad, "mp {").unwrap();
        match MPushConfig::from_file(&bad) {
            Err(ConfigError::Parse(m)) => {
                assert!(m.starts_with(&bad.display().to_string()), "{m}");
                assert!(m.contains("ParseError"), "{m}");
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn example_config_loads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/mpush.conf");
        let c = MPushConfig::from_file(path).unwrap();
        assert_eq!(c.spi.cache_manager, "memory");
        assert_eq!(c.spi.mq_client, "memory");
        assert_eq!(c.spi.service_registry, "memory");
        assert_eq!(
            (
                c.net.connect_server_port,
                c.net.gateway_server_port,
                c.net.admin_server_port
            ),
            (3000, 3001, 3002)
        );
        assert_eq!(c.core.min_heartbeat, Duration::from_secs(10));
        assert_eq!(c.core.max_heartbeat, Duration::from_secs(180));
    }

    /// MPush's `reference.conf` (key structure of the last release, comments dropped, the stray
    /// `s` after `nodes:[]` removed) loads, with `nodes` filled in as a user would.
    #[test]
    fn mpush_reference_conf_loads() {
        let text = r#"
mp {
    home=${user.dir}
    log-level=warn
    log-dir=${mp.home}/logs
    log-conf-path=${mp.home}/conf/logback.xml
    core {
        max-packet-size=10k
        compress-threshold=10k
        min-heartbeat=3m
        max-heartbeat=3m
        max-hb-timeout-times=2
        session-expired-time=1d
        epoll-provider=netty
    }
    security {
        private-key="MIIBNgIBADANBgkqhkiG9w0BAQEFAASCASAwggEcAgEAAoGBAKCE8JYKhsbydMPbiO7BJVq1pbuJWJHFxOR7L8Hv3ZVkSG4eNC8DdwAmDHYu/wadfw0ihKFm2gKDcLHp5yz5UQ8PZ8FyDYvgkrvGV0ak4nc40QDJWws621dm01e/INlGKOIStAAsxOityCLv0zm5Vf3+My/YaBvZcB5mGUsPbx8fAgEAAoGAAy0+WanRqwRHXUzt89OsupPXuNNqBlCEqgTqGAt4Nimq6Ur9u2R1KXKXUotxjp71Ubw6JbuUWvJg+5Rmd9RjT0HOUEQF3rvzEepKtaraPhV5ejEIrB+nJWNfGye4yzLdfEXJBGUQzrG+wNe13izfRNXI4dN/6Q5npzqaqv0E1CkCAQACAQACAQACAQACAQA="
        public-key="MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCghPCWCobG8nTD24juwSVataW7iViRxcTkey/B792VZEhuHjQvA3cAJgx2Lv8GnX8NIoShZtoCg3Cx6ecs+VEPD2fBcg2L4JK7xldGpOJ3ONEAyVsLOttXZtNXvyDZRijiErQALMTorcgi79M5uVX9/jMv2Ggb2XAeZhlLD28fHwIDAQAB"
        aes-key-length=16
    }
    net {
        local-ip=""
        public-ip=""
        connect-server-bind-ip=""
        connect-server-register-ip=${mp.net.public-ip}
        connect-server-port=3000
        connect-server-register-attr { weight:1 }
        gateway-server-bind-ip=""
        gateway-server-register-ip=${mp.net.local-ip}
        gateway-server-port=3001
        gateway-server-net=tcp
        gateway-client-port=4000
        gateway-server-multicast="239.239.239.88"
        gateway-client-multicast="239.239.239.99"
        gateway-client-num=1
        admin-server-port=3002
        ws-server-port=0
        ws-path="/"
        public-host-mapping { //"10.0.10.156":"111.1.32.137"
        }
        snd_buf { connect-server=32k, gateway-server=0, gateway-client=0 }
        rcv_buf { connect-server=32k, gateway-server=0, gateway-client=0 }
        write-buffer-water-mark {
            connect-server-low=32k
            connect-server-high=64k
            gateway-server-low=10m
            gateway-server-high=20m
        }
        traffic-shaping {
            gateway-client { enabled:false, check-interval:100ms, write-global-limit:30k, read-global-limit:0, write-channel-limit:3k, read-channel-limit:0 }
            gateway-server { enabled:false, check-interval:100ms, write-global-limit:0, read-global-limit:30k, write-channel-limit:0, read-channel-limit:3k }
            connect-server { enabled:false, check-interval:100ms, write-global-limit:0, read-global-limit:100k, write-channel-limit:3k, read-channel-limit:3k }
        }
    }
    zk {
        server-address="127.0.0.1:2181"
        namespace=mpush
        digest=mpush
        watch-path=/
        retry { baseSleepTimeMs=3s, maxRetries=3, maxSleepMs=5s }
        connectionTimeoutMs=5s
        sessionTimeoutMs=5s
    }
    redis {
        cluster-model=single //single,cluster,sentinel
        sentinel-master:""
        nodes:[] //["127.0.0.1:6379"]
        password=""
        config {
            maxTotal:8, maxIdle:4, minIdle:1, lifo:true, fairness:false, maxWaitMillis:5000,
            minEvictableIdleTimeMillis:300000, softMinEvictableIdleTimeMillis:1800000,
            numTestsPerEvictionRun:3, testOnCreate:false, testOnBorrow:false, testOnReturn:false,
            testWhileIdle:false, timeBetweenEvictionRunsMillis:60000, blockWhenExhausted:true,
            jmxEnabled:false, jmxNamePrefix:pool, jmxNameBase:pool
        }
    }
    http {
        proxy-enabled=false
        max-conn-per-host=5
        default-read-timeout=10s
        max-content-length=5m
        dns-mapping { //"mpush.com":["127.0.0.1:8080", "127.0.0.1:8081"]
        }
    }
    thread {
        pool {
            conn-work:0
            gateway-server-work:0
            http-work:0
            ack-timer:1
            push-task:0
            gateway-client-work:0
            push-client:2
            event-bus { min:1, max:16, queue-size:10000 }
            mq { min:1, max:4, queue-size:10000 }
        }
    }
    push {
       flow-control {
            global:{ limit:5000, max:0, duration:1s }
            broadcast:{ limit:3000, max:100000, duration:1s }
       }
    }
    monitor {
        dump-dir=${mp.home}/tmp
        dump-stack=false
        dump-period=1m
        print-log=true
        profile-enabled=false
        profile-slowly-duration=10ms
    }
    spi {
        thread-pool-factory:"com.mpush.tools.thread.pool.DefaultThreadPoolFactory"
        dns-mapping-manager:"com.mpush.common.net.HttpProxyDnsMappingManager"
    }
}
"#;
        // nodes:[] with backends that may be Redis is rejected...
        match MPushConfig::from_hocon_str(text) {
            Err(ConfigError::Invalid { key, .. }) => assert_eq!(key, "mp.redis.nodes"),
            other => panic!("{other:?}"),
        }
        // ...and accepted once nodes are given (what every real mpush.conf does).
        let c =
            MPushConfig::from_hocon_str(&format!("{text}\nmp.redis.nodes=[\"127.0.0.1:6379\"]"))
                .unwrap();
        assert_eq!(c, MPushConfig::default());
        // ...or when no Redis backend can be selected.
        MPushConfig::from_hocon_str(&format!(
            "{text}\nmp.spi {{ cache-manager=memory, mq-client=memory }}"
        ))
        .unwrap();
    }

    #[test]
    fn validation_errors() {
        let one_sec = Duration::from_secs(1);
        let cases: Vec<(Mutation, &str, &str)> = vec![
            (
                Box::new(|c| c.security.aes_key_length = 32),
                "mp.security.aes-key-length",
                "must be 16",
            ),
            (
                Box::new(|c| c.core.max_packet_size = 1023),
                "mp.core.max-packet-size",
                "between 1k and 1g",
            ),
            (
                Box::new(|c| c.core.max_packet_size = (1 << 30) + 1),
                "mp.core.max-packet-size",
                "between 1k and 1g",
            ),
            (
                Box::new(|c| c.core.compress_threshold = 0),
                "mp.core.compress-threshold",
                "greater than 0",
            ),
            (
                Box::new(|c| {
                    c.core.min_heartbeat = Duration::from_secs(10);
                    c.core.max_heartbeat = Duration::from_secs(5);
                }),
                "mp.core.min-heartbeat",
                "must not exceed mp.core.max-heartbeat (10s > 5s)",
            ),
            (
                Box::new(|c| c.core.min_heartbeat = Duration::from_millis(50)),
                "mp.core.min-heartbeat",
                "at least 100ms, got 50ms",
            ),
            (
                Box::new(|c| c.core.max_heartbeat = Duration::from_secs(30 * 86_400)),
                "mp.core.max-heartbeat",
                "at most 2147483647ms",
            ),
            (
                Box::new(|c| c.core.session_expired_time = Duration::ZERO),
                "mp.core.session-expired-time",
                "at least 1s",
            ),
            (
                Box::new(|c| c.core.session_expired_time = Duration::from_secs(u64::MAX)),
                "mp.core.session-expired-time",
                "at most 2147483647s",
            ),
            (
                Box::new(|c| c.net.connect_server_low_water_mark = 128 * 1024),
                "mp.net.write-buffer-water-mark.connect-server-low",
                "must not exceed mp.net.write-buffer-water-mark.connect-server-high (131072 > 65536 bytes)",
            ),
            (
                Box::new(|c| c.net.gateway_server_high_water_mark = 1),
                "mp.net.write-buffer-water-mark.gateway-server-low",
                "must not exceed mp.net.write-buffer-water-mark.gateway-server-high",
            ),
            (
                Box::new(|c| c.net.gateway_server_net = "sctp".into()),
                "mp.net.gateway-server-net",
                "not supported by mpush-rs",
            ),
            (
                Box::new(|c| c.net.gateway_server_net = "quic".into()),
                "mp.net.gateway-server-net",
                "must be tcp or udp, got \"quic\"",
            ),
            (
                Box::new(|c| c.net.gateway_client_num = 0),
                "mp.net.gateway-client-num",
                "at least 1",
            ),
            (
                Box::new(|c| c.net.gateway_max_packet_size = 10),
                "mp.net.gateway-max-packet-size",
                "between 1k and 1g",
            ),
            (
                Box::new(|c| c.net.connect_server_max_connections = 0),
                "mp.net.connect-server-max-connections",
                "must be 1..=10000000, got 0",
            ),
            (
                Box::new(|c| c.net.connect_server_max_pending_handshakes = 0),
                "mp.net.connect-server-max-pending-handshakes",
                "must be 1..=1000000, got 0",
            ),
            (
                Box::new(|c| c.net.gateway_max_in_flight = 0),
                "mp.net.gateway-max-in-flight",
                "must be 1..=1000000, got 0",
            ),
            (
                Box::new(|c| c.push.max_ack_timeout = Duration::ZERO),
                "mp.push.max-ack-timeout",
                "greater than 0",
            ),
            (
                Box::new(|c| c.push.max_ack_timeout = Duration::from_secs(30 * 86_400)),
                "mp.push.max-ack-timeout",
                "at most",
            ),
            (
                Box::new(|c| c.zk.session_timeout = Duration::ZERO),
                "mp.zk.sessionTimeoutMs",
                "greater than 0",
            ),
            (
                Box::new(|c| c.push.global_flow_control.limit = 0),
                "mp.push.flow-control.global.limit",
                "at least 1",
            ),
            (
                Box::new(|c| c.push.broadcast_flow_control.duration = Duration::ZERO),
                "mp.push.flow-control.broadcast.duration",
                "greater than 0",
            ),
            (
                Box::new(|c| c.redis.cluster_model = "sentinel".into()),
                "mp.redis.cluster-model",
                "sentinel is not supported by mpush-rs",
            ),
            (
                Box::new(|c| c.redis.cluster_model = "ring".into()),
                "mp.redis.cluster-model",
                "must be single or cluster",
            ),
            (
                Box::new(|c| c.redis.nodes.clear()),
                "mp.redis.nodes",
                "must not be empty",
            ),
            (
                Box::new(|c| c.redis.nodes = vec!["localhost".into()]),
                "mp.redis.nodes",
                "entry \"localhost\" is not \"ip:port\"",
            ),
            (
                Box::new(|c| c.redis.nodes = vec!["h:0".into()]),
                "mp.redis.nodes",
                "is not \"ip:port\"",
            ),
            (
                Box::new(|c| c.security.private_key = "not base64!".into()),
                "mp.security.private-key",
                "not valid base64",
            ),
            (
                Box::new(|c| c.security.public_key = String::new()),
                "mp.security.public-key",
                "must not be empty",
            ),
        ];
        for (mutate, want_key, want_msg) in cases {
            let (key, message) = invalid_key(mutate);
            assert_eq!(key, want_key, "{message}");
            assert!(message.contains(want_msg), "{key}: {message}");
        }
        // Display format.
        let e = MPushConfig::from_hocon_str("mp.core { min-heartbeat=10s, max-heartbeat=5s }")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid config value mp.core.min-heartbeat: must not exceed mp.core.max-heartbeat (10s > 5s)"
        );
        // Boundaries that are fine.
        let mut c = MPushConfig::default();
        c.core.min_heartbeat = one_sec;
        c.core.max_packet_size = 1024;
        c.net.gateway_server_net = "udp".into();
        c.redis.nodes.clear();
        c.spi.cache_manager = "memory".into();
        c.spi.mq_client = "memory".into();
        c.redis.nodes = vec!["h:1:pass:with:colons".into()];
        c.validate().unwrap();
    }

    #[test]
    fn fmt_duration_units() {
        assert_eq!(fmt_duration(Duration::from_secs(180)), "3m");
        assert_eq!(fmt_duration(Duration::from_secs(86_400)), "1d");
        assert_eq!(fmt_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(fmt_duration(Duration::from_secs(10)), "10s");
        assert_eq!(fmt_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(fmt_duration(Duration::ZERO), "0s");
    }

    fn iface(name: &str, ip: [u8; 4], bridge: bool) -> InterfaceAddr {
        InterfaceAddr {
            name: name.into(),
            ip: Ipv4Addr::from(ip),
            bridge,
        }
    }

    #[test]
    fn address_choice_prefers_the_default_route_and_avoids_bridges() {
        // docker0 sorts first by address (what the old fib_trie scan took); eth0 carries the
        // default route.
        let addrs = [
            iface("lo", [127, 0, 0, 1], false),
            iface("docker0", [172, 17, 0, 1], true),
            iface("eth1", [10, 9, 0, 5], false),
            iface("eth0", [192, 168, 1, 7], false),
            iface("eth0", [8, 8, 4, 4], false),
            iface("eth1", [169, 254, 3, 3], false),
        ];
        let m = choose_addresses(&addrs, Some("eth0"));
        assert_eq!(
            m.site_local,
            [
                Ipv4Addr::new(192, 168, 1, 7),
                Ipv4Addr::new(10, 9, 0, 5),
                Ipv4Addr::new(172, 17, 0, 1)
            ]
        );
        assert_eq!(m.public, [Ipv4Addr::new(8, 8, 4, 4)]);
        // No default route: listing order, bridges still last.
        let m = choose_addresses(&addrs, None);
        assert_eq!(m.site_local[0], Ipv4Addr::new(10, 9, 0, 5));
        assert_eq!(m.site_local[2], Ipv4Addr::new(172, 17, 0, 1));
        // Only a bridge and loopback: the bridge, flagged for a warning.
        let m = choose_addresses(&addrs[..2], None);
        assert_eq!(m.site_local, [Ipv4Addr::new(172, 17, 0, 1)]);
        assert!(describe_address(&m, "172.17.0.1").1);
        assert!(describe_address(&m, "127.0.0.1").1);
        assert!(choose_addresses(&[], None).site_local.is_empty());
        let m = choose_addresses(&addrs, Some("eth0"));
        assert_eq!(
            describe_address(&m, "192.168.1.7"),
            ("on eth0".into(), false)
        );
    }

    #[test]
    fn tuning_keys_without_effect_are_listed_once_each() {
        let c = MPushConfig::from_hocon_str(
            r#"mp.net.snd_buf.connect-server = 64k
               mp.net.rcv_buf { gateway-server = 1m }
               mp.net.traffic-shaping.connect-server.enabled = true
               mp.thread.pool.push-center = 4
               mp.thread.pool.push-client = 2
               mp.http.proxy-enabled = true
               mp.http.dns-mapping {}
               mp.net.write-buffer-water-mark.gateway-server-high = 30m
               mp.net.write-buffer-water-mark.connect-server-high = 30m
               mp.net.admin-server-port = 3002
               mp.log-level = debug"#,
        )
        .unwrap();
        assert_eq!(
            c.accepted_without_effect,
            // push-client = 2 and an empty dns-mapping are MPush's defaults: not reported.
            [
                "mp.net.snd_buf.connect-server",
                "mp.net.rcv_buf.gateway-server",
                "mp.net.traffic-shaping.connect-server.enabled",
                "mp.thread.pool.push-center",
                "mp.http.proxy-enabled",
            ]
        );
        let notes = c.settings_without_effect();
        assert_eq!(notes.len(), 6, "{notes:?}");
        // Used (connect-server water mark, admin port since the console exists): no note.
        assert!(
            notes[5].starts_with("mp.net.write-buffer-water-mark.gateway-server-high is set"),
            "{notes:?}"
        );
        assert!(MPushConfig::default().settings_without_effect().is_empty());
        let mut c = MPushConfig::default();
        c.net.admin_server_port = 9999;
        assert!(c.settings_without_effect().is_empty());
        c.net.gateway_server_low_water_mark = 1;
        assert_eq!(c.settings_without_effect().len(), 1);
    }

    #[test]
    fn default_route_interface_takes_the_lowest_metric_up_route() {
        let route =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0
eth0\t00000000\t0102A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0
down0\t00000000\t0103A8C0\t0002\t0\t0\t1\t00000000\t0\t0\t0
";
        assert_eq!(default_route_interface(route).as_deref(), Some("eth0"));
        assert_eq!(default_route_interface(""), None);
        assert_eq!(
            default_route_interface("Iface Destination\ngarbage line"),
            None
        );
    }

    #[test]
    fn address_helpers() {
        let mut n = NetConfig::default();
        // Auto values are well-formed IPv4 addresses; register ips follow §11.
        let local = n.resolved_local_ip();
        local.parse::<Ipv4Addr>().unwrap();
        let public = n.resolved_public_ip();
        public.parse::<Ipv4Addr>().unwrap();
        assert_eq!(n.connect_register_ip(), public);
        assert_eq!(n.gateway_register_ip(), local);
        // public-host-mapping applies to the resolved local ip.
        n.local_ip = "10.1.2.3".into();
        n.public_host_mapping
            .insert("10.1.2.3".into(), "203.0.113.9".into());
        assert_eq!(n.resolved_local_ip(), "10.1.2.3");
        assert_eq!(n.resolved_public_ip(), "203.0.113.9");
        assert_eq!(n.connect_register_ip(), "203.0.113.9");
        assert_eq!(n.gateway_register_ip(), "10.1.2.3");
        // Configured values win.
        n.public_ip = "198.51.100.1".into();
        assert_eq!(n.resolved_public_ip(), "198.51.100.1");
        n.connect_server_register_ip = "cs.example".into();
        n.gateway_server_register_ip = "gs.internal".into();
        assert_eq!(n.connect_register_ip(), "cs.example");
        assert_eq!(n.gateway_register_ip(), "gs.internal");
    }
}
