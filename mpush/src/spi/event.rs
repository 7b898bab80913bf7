//! `ServerEventListener`: what the host application can observe.

use super::ClientType;

/// Events the server reports to [`ServerEventListener`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerEvent {
    /// A user bound on this server.
    UserOnline {
        /// The user.
        user_id: String,
        /// Its client type.
        client_type: ClientType,
        /// The connection id.
        conn_id: String,
    },
    /// A user unbound, or its connection closed, on this server.
    UserOffline {
        /// The user.
        user_id: String,
        /// Its client type.
        client_type: ClientType,
        /// The connection id.
        conn_id: String,
    },
    /// A bound device was displaced by a newer one (KICK sent to the old connection).
    Kicked {
        /// The user.
        user_id: String,
        /// The kicked device.
        device_id: String,
        /// The kicked connection.
        conn_id: String,
    },
    /// A client connection completed its handshake (or fast connect).
    HandshakeDone {
        /// The connection id.
        conn_id: String,
        /// The device.
        device_id: String,
    },
    /// A client connection closed.
    ConnectionClosed {
        /// The connection id.
        conn_id: String,
    },
}

/// Observes server events. Called inline on the connection's task: must not block.
pub trait ServerEventListener: Send + Sync + 'static {
    /// One event.
    fn on_event(&self, event: &ServerEvent);
}

/// The default listener: ignores everything.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopServerEventListener;

impl ServerEventListener for NoopServerEventListener {
    fn on_event(&self, _event: &ServerEvent) {}
}
