//! The client type: the device class a route is keyed by (spec §8.1), a wire value.

use std::fmt;
use std::num::ParseIntError;
use std::str::FromStr;

/// A client type: the code of a device class as it travels on the wire (an `int` in
/// GATEWAY_PUSH, GATEWAY_KICK and kick requests) and in Redis (the `mp:ur:` hash field,
/// `"1"`, `"2"`, `"3"`, `"-1"`).
///
/// Routing is keyed by (userId, clientType): one connection per user and type. Any code is
/// representable (a custom `ClientClassifier` (spi) may use its own); the default classifier's
/// codes are the named constants. Converted from and to `i32` at the wire edges only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct ClientType(pub i32);

impl ClientType {
    /// Phones: android, ios.
    pub const MOBILE: ClientType = ClientType(1);
    /// Desktops: windows, mac, linux.
    pub const PC: ClientType = ClientType(2);
    /// Browsers: web, h5.
    pub const WEB: ClientType = ClientType(3);
    /// Anything else (all unknown OSes share this slot).
    pub const UNKNOWN: ClientType = ClientType(-1);
    /// No type: a connection that has not bound yet, or "every type" in a GATEWAY_PUSH.
    pub const NONE: ClientType = ClientType(0);

    /// The wire code.
    pub const fn code(self) -> i32 {
        self.0
    }
}

impl From<i32> for ClientType {
    fn from(code: i32) -> Self {
        Self(code)
    }
}

impl From<ClientType> for i32 {
    fn from(t: ClientType) -> Self {
        t.0
    }
}

/// The decimal code, as the Redis route field is written.
impl fmt::Display for ClientType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Parses the decimal code of a Redis route field.
impl FromStr for ClientType {
    type Err = ParseIntError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(Self)
    }
}
