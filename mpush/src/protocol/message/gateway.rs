//! GATEWAY_PUSH (cmd 16) and GATEWAY_KICK (cmd 14), spec §3.13, §3.14.

use super::{FieldReader, FieldWriter, Message, ProtocolError};

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

impl GatewayPush {
    /// `true` when this is a broadcast (no user).
    pub fn is_broadcast(&self) -> bool {
        self.user_id.is_none()
    }
}

impl Message for GatewayPush {
    fn write(&self, w: &mut FieldWriter) {
        let tags = self
            .tags
            .as_ref()
            .and_then(|t| serde_json::to_string(t).ok());
        w.put_string(self.user_id.as_deref())
            .put_i32(self.client_type)
            .put_i32(self.timeout)
            .put_bytes(self.content.as_deref())
            .put_string(self.task_id.as_deref())
            .put_string(tags.as_deref())
            .put_string(self.condition.as_deref());
    }

    fn read(r: &mut FieldReader<'_>) -> Result<Self, ProtocolError> {
        let user_id = r.get_string("userId")?;
        let client_type = r.get_i32("clientType")?;
        let timeout = r.get_i32("timeout")?;
        let content = r.get_bytes("content")?;
        let task_id = r.get_string("taskId")?;
        let tags = match r.get_string("tags")? {
            None => None,
            Some(s) => Some(serde_json::from_str::<Vec<String>>(&s).map_err(|e| {
                ProtocolError::InvalidField {
                    field: "tags",
                    reason: e.to_string(),
                }
            })?),
        };
        let condition = r.get_string("condition")?;
        Ok(Self {
            user_id,
            client_type,
            timeout,
            content,
            task_id,
            tags,
            condition,
        })
    }
}

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

impl Message for GatewayKick {
    fn write(&self, w: &mut FieldWriter) {
        w.put_string(self.user_id.as_deref())
            .put_string(self.device_id.as_deref())
            .put_string(self.conn_id.as_deref())
            .put_i32(self.client_type)
            .put_string(self.target_server.as_deref())
            .put_i32(self.target_port);
    }

    fn read(r: &mut FieldReader<'_>) -> Result<Self, ProtocolError> {
        Ok(Self {
            user_id: r.get_string("userId")?,
            device_id: r.get_string("deviceId")?,
            conn_id: r.get_string("connId")?,
            client_type: r.get_i32("clientType")?,
            target_server: r.get_string("targetServer")?,
            target_port: r.get_i32("targetPort")?,
        })
    }
}
