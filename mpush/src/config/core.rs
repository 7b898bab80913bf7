//! `mp.core`: packet sizes, heartbeats and the fast-reconnect session TTL.

use std::time::Duration;

use serde::Deserialize;

use super::de;
use super::{ConfigError, check_packet_size, invalid};

/// `mp.core`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct CoreConfig {
    /// `max-packet-size`: largest encoded body the connection server accepts (10k).
    #[serde(deserialize_with = "de::size")]
    pub max_packet_size: usize,
    /// `compress-threshold`: bodies strictly larger are zlib-compressed (10k).
    #[serde(deserialize_with = "de::size")]
    pub compress_threshold: usize,
    /// `min-heartbeat` (3m).
    #[serde(deserialize_with = "de::duration")]
    pub min_heartbeat: Duration,
    /// `max-heartbeat` (3m).
    #[serde(deserialize_with = "de::duration")]
    pub max_heartbeat: Duration,
    /// `max-hb-timeout-times`: close after more than this many consecutive misses (2).
    #[serde(deserialize_with = "de::int")]
    pub max_hb_timeout_times: u32,
    /// `session-expired-time`: fast-reconnect ticket TTL (1d).
    #[serde(deserialize_with = "de::duration")]
    pub session_expired_time: Duration,
    /// `drain-window` (mpush-rs): how long a draining server keeps delivering to its open
    /// connections, after deregistering and closing its client listeners, before it starts
    /// closing them (30s).
    #[serde(deserialize_with = "de::duration")]
    pub drain_window: Duration,
    /// `drain-close-rate` (mpush-rs): connections a draining server closes per second once
    /// the window is over, so clients reconnect elsewhere without a thundering herd (100).
    #[serde(deserialize_with = "de::int")]
    pub drain_close_rate: u32,
}

/// Keys of MPush's `mp.core` that mpush-rs accepts without using.
pub(super) const CORE_UNUSED: &[&str] = &["epoll-provider"];

impl Default for CoreConfig {
    fn default() -> Self {
        Self {
            max_packet_size: 10 * 1024,
            compress_threshold: 10 * 1024,
            min_heartbeat: Duration::from_secs(180),
            max_heartbeat: Duration::from_secs(180),
            max_hb_timeout_times: 2,
            session_expired_time: Duration::from_secs(86_400),
            drain_window: Duration::from_secs(30),
            drain_close_rate: 100,
        }
    }
}

impl CoreConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        use de::fmt_duration;
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
        if self.drain_close_rate == 0 {
            return Err(invalid(
                "mp.core.drain-close-rate",
                "must be at least 1 (connections per second)",
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
