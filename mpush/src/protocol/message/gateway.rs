//! GATEWAY_PUSH (cmd 16) and GATEWAY_KICK (cmd 14), spec §3.13, §3.14.

use super::{FieldReader, FieldWriter, Message, ProtocolError, WireField};

/// "GatewayPushMessage": a push request from the push SDK to a gateway server.
/// The header flags carry the ACK model.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayPush {
    /// Target user; `None` means broadcast.
    pub user_id: Option<String>,
    /// Target client type; 0 for broadcast.
    pub client_type: i32,
    /// Timeout in ms (the SDK sends its timeout − 500; 0 for broadcast).
    pub timeout: i32,
    /// Delivered as the PUSH body.
    pub content: Option<Vec<u8>>,
    /// Broadcast task id (enables Redis flow control).
    pub task_id: Option<String>,
    /// Broadcast tag filter (a JSON array string on the wire).
    pub tags: Option<Vec<String>>,
    /// Broadcast condition expression.
    pub condition: Option<String>,
}

/// The correlation id of one GATEWAY_PUSH, for tracing (issue 11 §3). The wire format has
/// no room for a trace id (a field would break MPush's Java gateways and SDKs), so both ends
/// derive it from what they both know: the sender's socket address as the gateway sees it
/// (the SDK's local address of its gateway connection) and the request's sessionId, which
/// is unique per gateway connection. Displayed as `ip:port/sessionId`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GatewayTraceId {
    /// The sender's end of the gateway connection.
    pub sender: std::net::SocketAddr,
    /// The GATEWAY_PUSH packet's sessionId.
    pub session_id: i32,
}

impl std::fmt::Display for GatewayTraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.sender, self.session_id)
    }
}

/// The broadcast tag filter: a JSON array string on the wire, absent for no filter. A tag
/// list that cannot be serialized (it always can: strings) would be written as absent.
impl WireField for Option<Vec<String>> {
    fn put(&self, w: &mut FieldWriter) {
        let json = self.as_ref().and_then(|t| serde_json::to_string(t).ok());
        w.put_string(json.as_deref());
    }

    fn get(r: &mut FieldReader<'_>, field: &'static str) -> Result<Self, ProtocolError> {
        match r.get_string(field)? {
            None => Ok(None),
            Some(s) => serde_json::from_str::<Vec<String>>(&s)
                .map(Some)
                .map_err(|e| ProtocolError::InvalidField {
                    field,
                    reason: e.to_string(),
                }),
        }
    }
}

impl GatewayPush {
    /// `true` when this is a broadcast (no user).
    pub fn is_broadcast(&self) -> bool {
        self.user_id.is_none()
    }
}

wire_fields!(GatewayPush {
    user_id: "userId",
    client_type: "clientType",
    timeout: "timeout",
    content: "content",
    task_id: "taskId",
    tags: "tags",
    condition: "condition"
});

/// "GatewayKickUserMessage": a kick request between servers (UDP gateway mode).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GatewayKick {
    /// The user.
    pub user_id: Option<String>,
    /// The device to kick.
    pub device_id: Option<String>,
    /// The connection to kick (must match the target's local route).
    pub conn_id: Option<String>,
    /// The client type.
    pub client_type: i32,
    /// Target gateway host.
    pub target_server: Option<String>,
    /// Target gateway port.
    pub target_port: i32,
}

wire_fields!(GatewayKick {
    user_id: "userId",
    device_id: "deviceId",
    conn_id: "connId",
    client_type: "clientType",
    target_server: "targetServer",
    target_port: "targetPort"
});
