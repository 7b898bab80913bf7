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

/// Builder setters that only store their arguments, written once: each entry
/// `name(arg: Type) => field = value;` becomes `pub fn name(mut self, arg: Type) -> Self`
/// doing `self.field = value` (several `field = value` pairs may follow the arrow), and
/// `name(arg: Type) => field.method(arg);` calls `self.field.method(arg)` (a field that is
/// itself a builder); each keeps the doc comment written above its entry. Defined before
/// the modules so that every builder in the crate can use it.
macro_rules! setters {
    () => {};
    (
        $(#[$doc:meta])*
        $name:ident($($arg:ident: $ty:ty),+) => $($field:ident = $value:expr),+;
        $($rest:tt)*
    ) => {
        $(#[$doc])*
        pub fn $name(mut self, $($arg: $ty),+) -> Self {
            $(self.$field = $value;)+
            self
        }
        setters!($($rest)*);
    };
    (
        $(#[$doc:meta])*
        $name:ident($($arg:ident: $ty:ty),+) => $field:ident.$method:ident($($a:ident),*);
        $($rest:tt)*
    ) => {
        $(#[$doc])*
        pub fn $name(mut self, $($arg: $ty),+) -> Self {
            self.$field.$method($($a),*);
            self
        }
        setters!($($rest)*);
    };
}

/// `impl Debug` printing only the fields named, as `Name { a: .., b: .., .. }`: the others
/// are secrets, or trait objects without `Debug`. `field.method()` prints what that call
/// returns (`is_some()`, `len()`), for a field that cannot or should not be printed whole.
macro_rules! debug_fields {
    ($ty:ident { $($field:ident $(.$call:ident())?),+ $(,)? }) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($ty))
                    $(.field(stringify!($field), &self.$field$(.$call())?))+
                    .finish_non_exhaustive()
            }
        }
    };
}

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
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
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
