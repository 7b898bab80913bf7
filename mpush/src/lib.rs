//! mpush-rs: an embeddable, wire-compatible MPush push server.
//!
//! # Layout
//! - [`protocol`]: the sans-I/O MPush wire protocol (packets, messages, crypto, zlib).
//! - [`spi`]: pluggable backends and hooks (cache, MQ, registry/discovery, validators, listeners).
//! - [`config`]: the `mp.*` configuration tree; [`address`]: "auto" address detection for it.
//! - [`server`]: the connection server, gateway, and the [`MPushServer`] builder.
//! - [`sender`]: the push SDK (`PushSender`) a business backend uses.
//! - [`client`]: a Rust client SDK (what a device embeds; also used by tests and benchmarks).

pub mod address;
pub mod client;
pub mod config;
pub mod protocol;
pub mod push;
pub mod router;
pub mod sender;
pub mod server;
pub mod spi;

pub use config::{ConfigError, MPushConfig};
pub use server::{MPushServer, MPushServerBuilder, ServerError};
