//! Per-connection session state: who the device is, its cipher, its bound user.

use std::time::Duration;

use crate::protocol::crypto::Cipher;
use crate::spi::ClientType;

/// What the server knows about one client connection. Guarded by the connection's mutex;
/// critical sections are short and never await.
#[derive(Debug, Default)]
pub(crate) struct SessionState {
    /// Device id from the handshake; `Some` once handshaken.
    pub device_id: Option<String>,
    /// OS name from the handshake.
    pub os_name: Option<String>,
    /// OS version from the handshake.
    pub os_version: Option<String>,
    /// Client version from the handshake.
    pub client_version: Option<String>,
    /// The session cipher (AES with the session key) once handshaken.
    pub cipher: Option<Cipher>,
    /// Negotiated heartbeat; `None` before the handshake (the pre-handshake check interval
    /// applies then).
    pub heartbeat: Option<Duration>,
    /// Bound user.
    pub user_id: Option<String>,
    /// Tags of the bound user (free text, used by broadcast filters).
    pub tags: Option<String>,
    /// Client type derived from `os_name` at bind time.
    pub client_type: ClientType,
    /// `true` while a bind has registered the local route but its cluster route write has not
    /// completed: a cluster route naming another connection is then older, not newer, so it
    /// proves no displacement (and the route must not be "repaired" by anyone but the bind).
    pub binding: bool,
}

impl SessionState {
    /// `true` once a handshake or fast connect has completed.
    pub fn is_handshaken(&self) -> bool {
        self.device_id.is_some()
    }
}

/// A snapshot of a connection's identity, for filters, events and the host API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Connection id (unique per server).
    pub conn_id: String,
    /// Device id.
    pub device_id: Option<String>,
    /// OS name.
    pub os_name: Option<String>,
    /// OS version.
    pub os_version: Option<String>,
    /// Client version.
    pub client_version: Option<String>,
    /// Bound user.
    pub user_id: Option<String>,
    /// Tags.
    pub tags: Option<String>,
    /// Client type.
    pub client_type: ClientType,
}
