//! mpush-rs: an embeddable, wire-compatible MPush push server.
//!
//! # Layout
//! - [`protocol`]: the sans-I/O MPush wire protocol (packets, messages, crypto, zlib).
//! - [`spi`]: pluggable backends and hooks (cache, MQ, registry/discovery, validators, listeners).
//! - [`config`]: the `mp.*` configuration tree (addresses left "auto" are detected when a server starts).
//! - [`server`]: the connection server, gateway, and the [`MPushServer`] builder and its [`RunningServer`] handle.
//! - [`sender`]: the push SDK (`PushSender`) a business backend uses.
//! - [`alloc`]: the alloc service (HTTP load balancer clients ask for a server).
//! - [`client`]: a Rust client SDK (what a device embeds; also used by tests and benchmarks).

#![warn(unreachable_pub)]

// Internal layers: used by the server and the SDKs, not part of the public API.
mod address;
mod clock;
mod httpd;
#[cfg(test)]
mod layers;
mod net;
mod push;
mod router;

pub mod alloc;
pub mod client;
pub mod config;
pub mod metrics;
pub mod protocol;
pub mod sender;
pub mod server;
pub mod spi;
pub mod tls;

pub use protocol::{AckModel, ClientType};
/// The broadcast condition language (a JavaScript subset, spec §9.6; `docs/CONDITIONS.md`):
/// public for tooling that checks conditions before sending them (and for the fuzz target).
pub use push::condition;
pub use router::ClientLocation;

pub use config::{ConfigError, MPushConfig};
pub use server::{
    DrainOptions, DrainReport, MPushServer, MPushServerBuilder, RunningServer, ServerError,
};
