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
//! Keys MPush knows but mpush-rs does not use (`mp.log-*`, `mp.thread.*`,
//! `mp.monitor.*`, `mp.net.snd_buf`/`rcv_buf`/`traffic-shaping`, `mp.core.epoll-provider`,
//! `mp.redis.config.*`, `mp.zk.retry.*`, …) are accepted and ignored. Those an operator sets to
//! tune the server (socket buffers, traffic shaping, thread pools, the gateway
//! water marks) are warned about once each at server start when their
//! value differs from MPush's default ([`MPushConfig::settings_without_effect`]). An unknown key *inside* a
//! section mpush-rs implements (`mp.core`, `mp.security`, `mp.net`, `mp.zk`, `mp.redis`, `mp.push`,
//! `mp.spi`, `mp.http`) is an error, with a "did you mean" hint, so typos do not silently fall back to a
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
//! The config keeps addresses as written; an empty one means "auto" and is resolved by
//! `crate::address` (spec §11) where it is used.
//!
//! # Layout
//!
//! One file per section (`core`, `security`, `net`, `zk`, `redis`, `push`, `spi`, `http`): the
//! section struct derives `Deserialize` with its defaults in `Default`, so each key is named once, by its
//! field. `de` holds the value readers (durations, sizes, integers, …), `keys` the policy for
//! keys no field reads (collected with `serde_ignored`), and errors name the full key
//! (`serde_path_to_error`).

use std::path::Path;

use hocon::HoconValue;
use hocon::serde::HoconDeserializer;
use serde::Deserialize;

mod core;
mod de;
mod http;
mod keys;
mod net;
mod push;
mod redis;
mod security;
mod spi;
#[cfg(test)]
mod tests;
mod zk;

pub use self::core::CoreConfig;
pub use self::http::{HttpConfig, MAX_READ_TIMEOUT};
pub use self::net::{
    DEFAULT_GATEWAY_MAX_IN_FLIGHT, MAX_GATEWAY_IN_FLIGHT, NetConfig, TlsClientConfig,
    TlsListenerConfig,
};
pub use self::push::{DEFAULT_MAX_ACK_TIMEOUT, FlowControlConfig, PushConfig};
pub use self::redis::RedisConfig;
pub use self::security::{DEFAULT_PRIVATE_KEY, DEFAULT_PUBLIC_KEY, SecurityConfig};
pub use self::spi::SpiConfig;
pub use self::zk::ZkConfig;

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
    /// The file is not valid HOCON/JSON, a value has the wrong type (the message starts with
    /// the full `mp.*` key), or a key is unknown.
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
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default)]
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
    /// `mp.http`: the HTTP proxy (cmd 12).
    pub http: HttpConfig,
    /// Keys of the loaded file that MPush uses for tuning (socket buffers, traffic shaping,
    /// thread pools) and mpush-rs accepts without effect; filled by
    /// [`from_file`](Self::from_file) / [`from_hocon_str`](Self::from_hocon_str) and reported
    /// by [`settings_without_effect`](Self::settings_without_effect).
    #[serde(skip)]
    pub accepted_without_effect: Vec<String>,
}

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
        Self::from_tree(&tree)
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
        Self::from_tree(&tree)
    }

    /// Deserializes the `mp` object of a parsed tree over the defaults, applies the unknown-key
    /// policy ([`keys`]), then validates.
    fn from_tree(root: &hocon::Config) -> Result<MPushConfig, ConfigError> {
        let Some(mp) = root.get("mp") else {
            let config = MPushConfig::default();
            config.validate()?;
            return Ok(config);
        };
        let mut mp = mp.clone();
        keys::prepare(&mut mp)?;
        let mut ignored: Vec<Vec<String>> = Vec::new();
        let mut on_ignored = |path: serde_ignored::Path<'_>| {
            let mut segments = Vec::new();
            keys::segments(&path, &mut segments);
            ignored.push(segments);
        };
        let de = serde_ignored::Deserializer::new(HoconDeserializer::new(&mp), &mut on_ignored);
        let mut config: MPushConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." {
                "mp".to_string()
            } else {
                format!("mp.{path}")
            };
            let message = &e.inner().message;
            match message.strip_prefix(de::OUT_OF_RANGE) {
                Some(message) => match keys::static_key(&key) {
                    Some(key) => invalid(key, message),
                    None => ConfigError::Parse(format!("{key}: {message}")),
                },
                None => ConfigError::Parse(format!("{key}: {message}")),
            }
        })?;
        config.accepted_without_effect = keys::apply_policy(&mp, &ignored)?;
        config.validate()?;
        Ok(config)
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
fn substitution_env() -> std::collections::HashMap<String, String> {
    let mut env: std::collections::HashMap<String, String> = std::env::vars_os()
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
        self.http.validate()?;
        self.push.validate()
    }

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

    /// Logs a warning for each of [`settings_without_effect`](Self::settings_without_effect)
    /// (the server calls it at start, beside the addresses it will register).
    pub fn log_startup_notes(&self) {
        for message in self.settings_without_effect() {
            tracing::warn!("{message}");
        }
    }
}

/// [`ConfigError::Invalid`] for `key`.
fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        message: message.into(),
    }
}

/// [`ConfigError::Parse`] for a value of the wrong type or format at `key`.
fn wrong_type(key: &str, expected: &str, got: &HoconValue) -> ConfigError {
    ConfigError::Parse(format!(
        "{key}: expected {expected}, got {}",
        de::describe(got)
    ))
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
