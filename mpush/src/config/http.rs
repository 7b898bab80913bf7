//! `mp.http`: the HTTP proxy a client reaches through its push connection (cmd 12, spec §12).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use super::de;
use super::{ConfigError, invalid};

/// `mp.http`. The first five keys are MPush's; the others are mpush-rs extensions that bound
/// what a proxied request may cost.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct HttpConfig {
    /// `proxy-enabled` (false): when off, an HTTP_PROXY packet gets ERROR 101 and the
    /// connection is closed, as in MPush.
    #[serde(deserialize_with = "de::boolean")]
    pub proxy_enabled: bool,
    /// `max-conn-per-host` (5): idle keep-alive connections kept per scheme+host+port.
    #[serde(deserialize_with = "de::int")]
    pub max_conn_per_host: usize,
    /// `default-read-timeout` (10s): the whole upstream exchange, unless the request's
    /// `readTimeout` header (ms) says otherwise.
    #[serde(deserialize_with = "de::duration")]
    pub default_read_timeout: Duration,
    /// `max-content-length` (5m): largest upstream response body; a larger one is 502.
    #[serde(deserialize_with = "de::size")]
    pub max_content_length: usize,
    /// `dns-mapping` ({}): domain → `["ip:port", ...]` (port defaults to 80), health-checked.
    #[serde(deserialize_with = "de::string_list_map")]
    pub dns_mapping: BTreeMap<String, Vec<String>>,
    /// `allowed-hosts` (mpush-rs, [] = any host, as MPush): when set, the proxy only reaches
    /// these hosts (exact, case-insensitive; `host:port` limits the port too) and the domains
    /// of a DNS mapping; anything else is answered 403.
    #[serde(deserialize_with = "de::string_list")]
    pub allowed_hosts: Vec<String>,
    /// `max-in-flight` (mpush-rs, 1024): proxied requests running at once on this server;
    /// more are answered 503.
    #[serde(deserialize_with = "de::int")]
    pub max_in_flight: usize,
    /// `max-in-flight-per-connection` (mpush-rs, 16): proxied requests one connection may
    /// have running; more are answered 503.
    #[serde(deserialize_with = "de::int")]
    pub max_in_flight_per_connection: usize,
}

/// Longest accepted `readTimeout` / `default-read-timeout` (10 minutes): a request holds an
/// in-flight slot for that long.
pub const MAX_READ_TIMEOUT: Duration = Duration::from_secs(600);

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            proxy_enabled: false,
            max_conn_per_host: 5,
            default_read_timeout: Duration::from_secs(10),
            max_content_length: 5 * 1024 * 1024,
            dns_mapping: BTreeMap::new(),
            allowed_hosts: Vec::new(),
            max_in_flight: 1024,
            max_in_flight_per_connection: 16,
        }
    }
}

impl HttpConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.default_read_timeout.is_zero() || self.default_read_timeout > MAX_READ_TIMEOUT {
            return Err(invalid(
                "mp.http.default-read-timeout",
                "must be between 1ms and 10m",
            ));
        }
        if self.max_content_length == 0 || self.max_content_length > 1 << 30 {
            return Err(invalid(
                "mp.http.max-content-length",
                "must be between 1 byte and 1g",
            ));
        }
        if self.max_in_flight == 0 {
            return Err(invalid("mp.http.max-in-flight", "must be greater than 0"));
        }
        if self.max_in_flight_per_connection == 0 {
            return Err(invalid(
                "mp.http.max-in-flight-per-connection",
                "must be greater than 0",
            ));
        }
        for (domain, targets) in &self.dns_mapping {
            for t in targets {
                if crate::protocol::DnsMapping::parse(t).is_none() {
                    return Err(invalid(
                        "mp.http.dns-mapping",
                        format!("{domain}: {t:?} is not ip[:port]"),
                    ));
                }
            }
        }
        Ok(())
    }
}
