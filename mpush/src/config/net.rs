//! `mp.net`: listeners, ports, addresses (raw; see [`crate::address`] for "auto"), gateway
//! transport and connection bounds.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Deserialize;

use super::de;
use super::{ConfigError, check_packet_size, invalid};

/// Default of `mp.net.gateway-max-in-flight`.
pub const DEFAULT_GATEWAY_MAX_IN_FLIGHT: usize = 4096;
/// Largest accepted `mp.net.gateway-max-in-flight`.
pub const MAX_GATEWAY_IN_FLIGHT: usize = 1_000_000;

/// Keys of MPush's `mp.net` that mpush-rs accepts without using (Netty socket options and
/// traffic shaping, the alloc server).
pub(super) const NET_UNUSED: &[&str] = &[
    "snd_buf",
    "rcv_buf",
    "traffic-shaping",
    "alloc-server-protocol",
];

/// `mp.net`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct NetConfig {
    /// `local-ip` ("" = auto).
    #[serde(deserialize_with = "de::string")]
    pub local_ip: String,
    /// `public-ip` ("" = auto).
    #[serde(deserialize_with = "de::string")]
    pub public_ip: String,
    /// `connect-server-bind-ip` ("" = all interfaces).
    #[serde(deserialize_with = "de::string")]
    pub connect_server_bind_ip: String,
    /// `connect-server-register-ip` ("" = public-ip).
    #[serde(deserialize_with = "de::string")]
    pub connect_server_register_ip: String,
    /// `connect-server-port` (3000; 0 = pick a free port).
    #[serde(deserialize_with = "de::int")]
    pub connect_server_port: u16,
    /// `connect-server-max-connections` (mpush-rs extension, 100000): client connections
    /// (TCP and WebSocket together) served at once; one accepted beyond it is closed at once.
    #[serde(deserialize_with = "de::int")]
    pub connect_server_max_connections: usize,
    /// `connect-server-ip-connect-rate` (mpush-rs extension, 0 = off): new client
    /// connections accepted per second from one source IP (bursts up to the same number);
    /// more are closed at once. Off by default because carrier NATs put many devices
    /// behind one address.
    #[serde(deserialize_with = "de::int")]
    pub connect_server_ip_connect_rate: u32,
    /// `connect-server-max-pending-handshakes` (mpush-rs extension, 1024): handshakes
    /// waiting for an RSA slot; beyond it a handshake is answered ERROR and closed.
    #[serde(deserialize_with = "de::int")]
    pub connect_server_max_pending_handshakes: usize,
    /// `connect-server-park-idle` (mpush-rs extension, 60s; 0 = off): a plain TCP
    /// connection that sent nothing but heartbeats for this long is parked at its next
    /// heartbeat: it leaves tokio's reactor and its task ends, and the server's parker answers
    /// its heartbeats (`server::park`). Any other packet, a write the socket does not take
    /// whole, a close or a kick gives it a task again. TLS and WebSocket connections are
    /// never parked.
    #[serde(deserialize_with = "de::duration")]
    pub connect_server_park_idle: std::time::Duration,
    /// `connect-server-park-poll` (mpush-rs extension, 10ms): how often the parker takes the
    /// heartbeats of parked connections, at most. A heartbeat echo and the first packet after
    /// an idle spell wait up to this long; pushes to a parked connection do not wait.
    #[serde(deserialize_with = "de::duration")]
    pub connect_server_park_poll: std::time::Duration,
    /// `connect-server-register-attr` ({weight:1}).
    #[serde(deserialize_with = "de::register_attr")]
    pub connect_server_register_attr: BTreeMap<String, serde_json::Value>,
    /// `gateway-server-bind-ip` ("" = all interfaces).
    #[serde(deserialize_with = "de::string")]
    pub gateway_server_bind_ip: String,
    /// `gateway-server-register-ip` ("" = local-ip).
    #[serde(deserialize_with = "de::string")]
    pub gateway_server_register_ip: String,
    /// `gateway-server-port` (3001; 0 = pick a free port).
    #[serde(deserialize_with = "de::int")]
    pub gateway_server_port: u16,
    /// `gateway-server-net`: "tcp" or "udp".
    #[serde(deserialize_with = "de::string")]
    pub gateway_server_net: String,
    /// `gateway-client-num`: SDK connections per gateway server (1).
    #[serde(deserialize_with = "de::int")]
    pub gateway_client_num: usize,
    /// `gateway-client-port`: UDP port of the push SDK in UDP gateway mode (4000; 0 = any).
    #[serde(deserialize_with = "de::int")]
    pub gateway_client_port: u16,
    /// `gateway-server-multicast`: group the UDP gateway joins and the SDK broadcasts to
    /// ("239.239.239.88"; "" = no multicast, broadcasts are unicast to every gateway).
    #[serde(deserialize_with = "de::string")]
    pub gateway_server_multicast: String,
    /// `gateway-client-multicast`: group the push SDK joins in UDP gateway mode
    /// ("239.239.239.99"; "" = none).
    #[serde(deserialize_with = "de::string")]
    pub gateway_client_multicast: String,
    /// `gateway-max-packet-size` (mpush-rs extension, Q7): largest gateway body (10k).
    #[serde(deserialize_with = "de::size")]
    pub gateway_max_packet_size: usize,
    /// `gateway-max-in-flight` (mpush-rs extension): GATEWAY_PUSH requests one TCP gateway
    /// connection may have running at once (4096). When full the server stops reading that
    /// connection until one finishes, so back-pressure reaches the sender through TCP.
    #[serde(deserialize_with = "de::int")]
    pub gateway_max_in_flight: usize,
    /// `admin-server-port`: the telnet admin console (3002; 0 = disabled).
    #[serde(deserialize_with = "de::int")]
    pub admin_server_port: u16,
    /// `admin-server-host` (mpush-rs extension): the console's bind address ("127.0.0.1";
    /// the console can shut the server down, so it is not reachable from outside by default).
    pub admin_server_host: String,
    /// `admin-http-port` (mpush-rs extension): the HTTP admin API (`/metrics`, `/health`,
    /// `/ready`, `/stats`, user routes, kick, push; docs/OPERATIONS.md) (3003; 0 = disabled).
    #[serde(deserialize_with = "de::int")]
    pub admin_http_port: u16,
    /// `admin-http-host` (mpush-rs extension): the admin API's bind address ("127.0.0.1": it
    /// can kick users and push, so it is not reachable from outside by default).
    pub admin_http_host: String,
    /// `admin-http-token` (mpush-rs extension): the bearer token the admin API's mutating
    /// calls require (`Authorization: Bearer <token>`); "" (the default) refuses them all.
    pub admin_http_token: String,
    /// `alloc-server-port`: the alloc service's HTTP port (9999; used by `mpush::alloc`).
    #[serde(deserialize_with = "de::int")]
    pub alloc_server_port: u16,
    /// `ws-server-port` (0 = disabled).
    #[serde(deserialize_with = "de::int")]
    pub ws_server_port: u16,
    /// `ws-path` ("/").
    #[serde(deserialize_with = "de::string")]
    pub ws_path: String,
    /// `ws-max-frame-size` (mpush-rs extension, 64k: the original's HTTP aggregator): the
    /// largest WebSocket frame and message accepted; a larger one closes the connection with
    /// close code 1009 (message too big).
    #[serde(deserialize_with = "de::size")]
    pub ws_max_frame_size: usize,
    /// `ws-handshake-timeout` (mpush-rs extension, 10s): how long a WebSocket client may take
    /// to complete the HTTP upgrade, and then again to send its HANDSHAKE; past either the
    /// connection is closed (the second with close code 1008).
    #[serde(deserialize_with = "de::duration")]
    pub ws_handshake_timeout: std::time::Duration,
    /// `write-buffer-water-mark.connect-server-low` (32k).
    #[serde(
        rename = "write-buffer-water-mark.connect-server-low",
        deserialize_with = "de::size"
    )]
    pub connect_server_low_water_mark: usize,
    /// `write-buffer-water-mark.connect-server-high` (64k).
    #[serde(
        rename = "write-buffer-water-mark.connect-server-high",
        deserialize_with = "de::size"
    )]
    pub connect_server_high_water_mark: usize,
    /// `write-buffer-water-mark.gateway-server-low` (10m).
    #[serde(
        rename = "write-buffer-water-mark.gateway-server-low",
        deserialize_with = "de::size"
    )]
    pub gateway_server_low_water_mark: usize,
    /// `write-buffer-water-mark.gateway-server-high` (20m).
    #[serde(
        rename = "write-buffer-water-mark.gateway-server-high",
        deserialize_with = "de::size"
    )]
    pub gateway_server_high_water_mark: usize,
    /// `public-host-mapping`: local-ip → public-ip ({}; deprecated in MPush, still honoured by
    /// `address::public_ip` as spec §11 describes).
    #[serde(deserialize_with = "de::string_map")]
    pub public_host_mapping: BTreeMap<String, String>,
    /// `connect-server-tls {cert, key, client-ca}` (mpush-rs extension): TLS on the
    /// connection server port. Off while `cert` is "" (the default: MPush's Java clients
    /// speak plain TCP).
    pub connect_server_tls: TlsListenerConfig,
    /// `ws-server-tls {cert, key, client-ca}` (mpush-rs extension): wss on the WebSocket port.
    pub ws_server_tls: TlsListenerConfig,
    /// `gateway-server-tls {cert, key, client-ca}` (mpush-rs extension): TLS on the TCP
    /// gateway; with `client-ca`, only push SDKs holding a certificate signed by it can push.
    pub gateway_server_tls: TlsListenerConfig,
    /// `admin-http-tls {cert, key, client-ca}` (mpush-rs extension): HTTPS on the admin API
    /// port; with `client-ca`, only callers holding a certificate signed by it get through.
    pub admin_http_tls: TlsListenerConfig,
    /// `alloc-server-tls {cert, key, client-ca}` (mpush-rs extension): HTTPS on the alloc
    /// service (`mpush::alloc`). Off by default: MPush's clients ask alloc over plain HTTP.
    pub alloc_server_tls: TlsListenerConfig,
    /// `gateway-client-tls {ca, cert, key, server-name}` (mpush-rs extension): how the push
    /// SDK connects to TLS gateways. Off while `ca` is "".
    pub gateway_client_tls: TlsClientConfig,
    /// `tls-reload-interval` (mpush-rs extension, 5s): how often the listeners' certificate
    /// files are checked for a change (SIGHUP reloads at once).
    #[serde(deserialize_with = "de::duration")]
    pub tls_reload_interval: std::time::Duration,
    /// `gateway-allowed-networks` (mpush-rs extension, [] = any source): CIDR networks the
    /// TCP gateway accepts connections from, e.g. `["127.0.0.0/8", "10.0.0.0/8"]`.
    #[serde(deserialize_with = "networks")]
    pub gateway_allowed_networks: Vec<ipnet::IpNet>,
}

/// PEM files of a TLS listener. `cert` = "" means TLS is off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct TlsListenerConfig {
    /// `cert`: the certificate chain (PEM), leaf first.
    #[serde(deserialize_with = "de::string")]
    pub cert: String,
    /// `key`: the private key (PEM: PKCS#8, PKCS#1 or SEC1).
    #[serde(deserialize_with = "de::string")]
    pub key: String,
    /// `client-ca`: CA certificates (PEM) client certificates must chain to ("" = no
    /// client certificate asked).
    #[serde(deserialize_with = "de::string")]
    pub client_ca: String,
}

impl TlsListenerConfig {
    /// `true` when TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.cert.is_empty()
    }

    fn validate(&self, key: &'static str) -> Result<(), ConfigError> {
        if self.enabled() == self.key.is_empty() {
            return Err(invalid(key, "set both cert and key, or neither"));
        }
        if !self.enabled() && !self.client_ca.is_empty() {
            return Err(invalid(key, "client-ca needs cert and key"));
        }
        Ok(())
    }
}

/// PEM files of a TLS client (the push SDK). `ca` = "" means TLS is off.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct TlsClientConfig {
    /// `ca`: CA certificates (PEM) the server certificate must chain to.
    #[serde(deserialize_with = "de::string")]
    pub ca: String,
    /// `cert`: the client certificate chain (PEM), for gateways that ask for one.
    #[serde(deserialize_with = "de::string")]
    pub cert: String,
    /// `key`: the client private key (PEM).
    #[serde(deserialize_with = "de::string")]
    pub key: String,
    /// `server-name`: the name checked in the server certificate ("" = the host of the
    /// address connected to, often an IP).
    #[serde(deserialize_with = "de::string")]
    pub server_name: String,
}

impl TlsClientConfig {
    /// `true` when TLS is configured.
    pub fn enabled(&self) -> bool {
        !self.ca.is_empty()
    }
}

fn networks<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<ipnet::IpNet>, D::Error> {
    de::string_list(d)?
        .iter()
        .map(|n| {
            // A bare address is a one-address network.
            n.parse::<ipnet::IpNet>()
                .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!("{n:?} is not a CIDR network (a.b.c.d/n)"))
                })
        })
        .collect()
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
            connect_server_park_idle: std::time::Duration::from_secs(60),
            connect_server_park_poll: std::time::Duration::from_millis(10),
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
            admin_http_port: 3003,
            admin_http_host: "127.0.0.1".to_string(),
            admin_http_token: String::new(),
            alloc_server_port: 9999,
            ws_server_port: 0,
            ws_path: "/".to_string(),
            ws_max_frame_size: 64 * 1024,
            ws_handshake_timeout: std::time::Duration::from_secs(10),
            connect_server_low_water_mark: 32 * 1024,
            connect_server_high_water_mark: 64 * 1024,
            gateway_server_low_water_mark: 10 * 1024 * 1024,
            gateway_server_high_water_mark: 20 * 1024 * 1024,
            public_host_mapping: BTreeMap::new(),
            connect_server_tls: TlsListenerConfig::default(),
            ws_server_tls: TlsListenerConfig::default(),
            gateway_server_tls: TlsListenerConfig::default(),
            admin_http_tls: TlsListenerConfig::default(),
            alloc_server_tls: TlsListenerConfig::default(),
            gateway_client_tls: TlsClientConfig::default(),
            tls_reload_interval: std::time::Duration::from_secs(5),
            gateway_allowed_networks: Vec::new(),
        }
    }
}

impl NetConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
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
        if self
            .admin_http_token
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
        {
            // It travels in an HTTP header: such a token could never be presented.
            return Err(invalid(
                "mp.net.admin-http-token",
                "must not contain whitespace or control characters",
            ));
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
        check_packet_size("mp.net.ws-max-frame-size", self.ws_max_frame_size)?;
        self.connect_server_tls
            .validate("mp.net.connect-server-tls")?;
        self.ws_server_tls.validate("mp.net.ws-server-tls")?;
        self.gateway_server_tls
            .validate("mp.net.gateway-server-tls")?;
        self.admin_http_tls.validate("mp.net.admin-http-tls")?;
        self.alloc_server_tls.validate("mp.net.alloc-server-tls")?;
        let c = &self.gateway_client_tls;
        if c.cert.is_empty() != c.key.is_empty() || (!c.enabled() && !c.cert.is_empty()) {
            return Err(invalid(
                "mp.net.gateway-client-tls",
                "cert and key go together, and need ca",
            ));
        }
        if !(std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(3600))
            .contains(&self.tls_reload_interval)
        {
            return Err(invalid(
                "mp.net.tls-reload-interval",
                "must be between 100ms and 1h",
            ));
        }
        if !(std::time::Duration::from_millis(1)..=std::time::Duration::from_secs(1))
            .contains(&self.connect_server_park_poll)
        {
            return Err(invalid(
                "mp.net.connect-server-park-poll",
                "must be between 1ms and 1s",
            ));
        }
        let hs = self.ws_handshake_timeout;
        if !(std::time::Duration::from_millis(100)..=std::time::Duration::from_secs(600))
            .contains(&hs)
        {
            return Err(invalid(
                "mp.net.ws-handshake-timeout",
                format!(
                    "must be between 100ms and 10m, got {}",
                    de::fmt_duration(hs)
                ),
            ));
        }
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
}
