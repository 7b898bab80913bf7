//! Per-connection session state: who the device is, its cipher, its bound user (the state
//! machine itself lives in `protocol::session`).

use crate::spi::ClientType;

/// What the server knows about one client connection: the sans-I/O session state machine
/// (`protocol::session`), guarded by the connection's mutex; critical sections are short and
/// never await.
pub(crate) type SessionState = crate::protocol::session::Session;

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
