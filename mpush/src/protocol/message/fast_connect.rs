//! FAST_CONNECT request and FastConnectOk (cmd 7, spec §3.3, §3.4), both sent raw.

use super::{FieldReader, FieldWriter, Message, ProtocolError, WireField};

/// Fast reconnect with a ticket from an earlier HandshakeOk.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FastConnectRequest {
    /// The ticket.
    pub session_id: Option<String>,
    /// Must equal the device id stored with the ticket.
    pub device_id: Option<String>,
    /// Ignored by the server.
    pub min_heartbeat: i32,
    /// Heartbeat the client wants, ms.
    pub max_heartbeat: i32,
}

wire_fields!(FastConnectRequest {
    session_id: "sessionId",
    device_id: "deviceId",
    min_heartbeat: "minHeartbeat",
    max_heartbeat: "maxHeartbeat"
});

/// The server's answer to an accepted fast reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FastConnectOk {
    /// Negotiated heartbeat, ms.
    pub heartbeat: i32,
}

wire_fields!(FastConnectOk {
    heartbeat: "heartbeat"
});
