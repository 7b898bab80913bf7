//! mpush-rs: an embeddable, wire-compatible MPush push server.
//!
//! # Layout
//! - [`protocol`]: the sans-I/O MPush wire protocol (packets, messages, crypto, zlib).
//! - [`spi`]: pluggable backends and hooks (cache, MQ, registry/discovery, validators, listeners).
//! - [`config`]: the `mp.*` configuration tree; [`address`]: "auto" address detection for it.
//! - [`server`]: the connection server, gateway, and the [`MPushServer`] builder and its [`RunningServer`] handle.
//! - [`sender`]: the push SDK (`PushSender`) a business backend uses.
//! - [`alloc`]: the alloc service (HTTP load balancer clients ask for a server).
//! - [`client`]: a Rust client SDK (what a device embeds; also used by tests and benchmarks).

pub mod address;
pub mod alloc;
pub mod client;
pub mod clock;
pub mod config;
#[cfg(test)]
mod layers;
pub mod net;
pub mod protocol;
pub mod push;
pub mod router;
pub mod sender;
pub mod server;
pub mod spi;

pub use config::{ConfigError, MPushConfig};
pub use server::{
    DrainOptions, DrainReport, MPushServer, MPushServerBuilder, RunningServer, ServerError,
};
