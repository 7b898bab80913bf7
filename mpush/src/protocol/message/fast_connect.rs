//! FAST_CONNECT request and FastConnectOk (cmd 7, spec §3.3, §3.4), both sent raw.

use super::{FieldReader, FieldWriter, Message, ProtocolError};

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

impl Message for FastConnectRequest {
    fn write(&self, w: &mut FieldWriter) {
        w.put_string(self.session_id.as_deref())
            .put_string(self.device_id.as_deref())
            .put_i32(self.min_heartbeat)
            .put_i32(self.max_heartbeat);
    }

    fn read(r: &mut FieldReader<'_>) -> Result<Self, ProtocolError> {
        Ok(Self {
            session_id: r.get_string("sessionId")?,
            device_id: r.get_string("deviceId")?,
            min_heartbeat: r.get_i32("minHeartbeat")?,
            max_heartbeat: r.get_i32("maxHeartbeat")?,
        })
    }
}

/// The server's answer to an accepted fast reconnect.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FastConnectOk {
    /// Negotiated heartbeat, ms.
    pub heartbeat: i32,
}

impl Message for FastConnectOk {
    fn write(&self, w: &mut FieldWriter) {
        w.put_i32(self.heartbeat);
    }

    fn read(r: &mut FieldReader<'_>) -> Result<Self, ProtocolError> {
        Ok(Self {
            heartbeat: r.get_i32("heartbeat")?,
        })
    }
}
