//! `mp.push`: flow control of pushes and the cap on ACK waits.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::de;
use super::{ConfigError, invalid};

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

/// Default of `mp.push.max-ack-timeout`: 20 × the Java SDK's default push timeout (3 s).
pub const DEFAULT_MAX_ACK_TIMEOUT: Duration = Duration::from_secs(60);

/// `mp.push`.
///
/// The file nests the flow controls (`flow-control.global.limit`); the loader presents
/// `flow-control { global, broadcast }` as the keys `flow-control.global` and
/// `flow-control.broadcast`, so errors and unknown keys keep their full path.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct PushConfig {
    /// `flow-control.global` (5000, 0, 1s). Past `max` sends in the server's lifetime
    /// (when > 0) single-user pushes are refused with ERROR 2, as MPush's overflow.
    #[serde(rename = "flow-control.global", deserialize_with = "global_flow")]
    pub global_flow_control: FlowControlConfig,
    /// `flow-control.broadcast` (3000, 100000, 1s).
    #[serde(rename = "flow-control.broadcast", deserialize_with = "broadcast_flow")]
    pub broadcast_flow_control: FlowControlConfig,
    /// `max-ack-timeout` (mpush-rs extension, 60s): the longest a server waits for a
    /// client's ACK, whatever timeout a GATEWAY_PUSH asks for (the wire allows 24.8 days,
    /// each wait holds an ACK-table entry and a gateway in-flight slot).
    #[serde(deserialize_with = "de::duration")]
    pub max_ack_timeout: Duration,
}

/// The keys a file sets in one flow-control object; the others keep the default of that
/// flow control (global and broadcast defaults differ, so one `Default` cannot serve both).
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(super) struct FlowControlKeys {
    #[serde(default, deserialize_with = "some_int")]
    limit: Option<u32>,
    #[serde(default, deserialize_with = "some_int")]
    max: Option<u64>,
    #[serde(default, deserialize_with = "some_duration")]
    duration: Option<Duration>,
}

fn some_int<'de, D: Deserializer<'de>, T: de::Int>(d: D) -> Result<Option<T>, D::Error> {
    de::int(d).map(Some)
}

fn some_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    de::duration(d).map(Some)
}

impl FlowControlKeys {
    fn over(self, base: FlowControlConfig) -> FlowControlConfig {
        let FlowControlKeys {
            limit,
            max,
            duration,
        } = self;
        FlowControlConfig {
            limit: limit.unwrap_or(base.limit),
            max: max.unwrap_or(base.max),
            duration: duration.unwrap_or(base.duration),
        }
    }
}

fn global_flow<'de, D: Deserializer<'de>>(d: D) -> Result<FlowControlConfig, D::Error> {
    Ok(FlowControlKeys::deserialize(d)?.over(PushConfig::default().global_flow_control))
}

fn broadcast_flow<'de, D: Deserializer<'de>>(d: D) -> Result<FlowControlConfig, D::Error> {
    Ok(FlowControlKeys::deserialize(d)?.over(PushConfig::default().broadcast_flow_control))
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

/// The longest timeout a GATEWAY_PUSH can carry (`i32` milliseconds, about 24.8 days).
const MAX_WIRE_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

impl PushConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        use de::fmt_duration;
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
