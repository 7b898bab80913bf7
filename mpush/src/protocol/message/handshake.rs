//! HANDSHAKE request and HandshakeOk (cmd 2, spec §3.1, §3.2).

use super::{FieldReader, FieldWriter, Message, ProtocolError};

/// The client's handshake, sent RSA-encrypted.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct HandshakeRequest {
    /// Device id; required.
    pub device_id: Option<String>,
    /// OS name ("android", "ios", ...); drives the client type.
    pub os_name: Option<String>,
    /// OS version.
    pub os_version: Option<String>,
    /// Client version.
    pub client_version: Option<String>,
    /// AES IV, 16 bytes.
    pub iv: Option<Vec<u8>>,
    /// Client random key, 16 bytes.
    pub client_key: Option<Vec<u8>>,
    /// Ignored by the server (quirk Q10).
    pub min_heartbeat: i32,
    /// Heartbeat the client wants, ms.
    pub max_heartbeat: i32,
    /// Never set by the Java client; ignored.
    pub timestamp: i64,
}

impl std::fmt::Debug for HandshakeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Key material stays out of logs.
        f.debug_struct("HandshakeRequest")
            .field("device_id", &self.device_id)
            .field("os_name", &self.os_name)
            .field("os_version", &self.os_version)
            .field("client_version", &self.client_version)
            .field("max_heartbeat", &self.max_heartbeat)
            .finish_non_exhaustive()
    }
}

impl Message for HandshakeRequest {
    fn write(&self, w: &mut FieldWriter) {
        w.put_string(self.device_id.as_deref())
            .put_string(self.os_name.as_deref())
            .put_string(self.os_version.as_deref())
            .put_string(self.client_version.as_deref())
            .put_bytes(self.iv.as_deref())
            .put_bytes(self.client_key.as_deref())
            .put_i32(self.min_heartbeat)
            .put_i32(self.max_heartbeat)
            .put_i64(self.timestamp);
    }

    fn read(r: &mut FieldReader<'_>) -> Result<Self, ProtocolError> {
        Ok(Self {
            device_id: r.get_string("deviceId")?,
            os_name: r.get_string("osName")?,
            os_version: r.get_string("osVersion")?,
            client_version: r.get_string("clientVersion")?,
            iv: r.get_bytes("iv")?,
            client_key: r.get_bytes("clientKey")?,
            min_heartbeat: r.get_i32("minHeartbeat")?,
            max_heartbeat: r.get_i32("maxHeartbeat")?,
            timestamp: r.get_i64("timestamp")?,
        })
    }
}

/// The server's handshake answer, AES-encrypted with the client key.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct HandshakeOk {
    /// Server random key, 16 bytes.
    pub server_key: Option<Vec<u8>>,
    /// Negotiated heartbeat, ms.
    pub heartbeat: i32,
    /// Fast-reconnect ticket (32 hex chars).
    pub session_id: Option<String>,
    /// Ticket expiry, epoch ms.
    pub expire_time: i64,
}

impl std::fmt::Debug for HandshakeOk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandshakeOk")
            .field("heartbeat", &self.heartbeat)
            .field("expire_time", &self.expire_time)
            .finish_non_exhaustive()
    }
}

impl Message for HandshakeOk {
    fn write(&self, w: &mut FieldWriter) {
        w.put_bytes(self.server_key.as_deref())
            .put_i32(self.heartbeat)
            .put_string(self.session_id.as_deref())
            .put_i64(self.expire_time);
    }

    fn read(r: &mut FieldReader<'_>) -> Result<Self, ProtocolError> {
        Ok(Self {
            server_key: r.get_bytes("serverKey")?,
            heartbeat: r.get_i32("heartbeat")?,
            session_id: r.get_string("sessionId")?,
            expire_time: r.get_i64("expireTime")?,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::hex_dump as hex;

    #[test]
    fn decodes_the_android_handshake_vector() {
        let plain = hex(
            "000f383630383830303230373039393634 0007416e64726f6964 0005342e312e32
             0005312e382e31 00101d2e319497a4574d55aea22153933714
             001017e3177c3402423f6d49f5fa58ffdfbd 0003a980 0003a980 0000000000000000"
                .replace('\n', "")
                .as_str(),
        );
        let m = HandshakeRequest::decode(&plain).unwrap();
        assert_eq!(m.device_id.as_deref(), Some("860880020709964"));
        assert_eq!(m.os_name.as_deref(), Some("Android"));
        assert_eq!(m.os_version.as_deref(), Some("4.1.2"));
        assert_eq!(m.client_version.as_deref(), Some("1.8.1"));
        assert_eq!(m.iv, Some(hex("1d2e319497a4574d55aea22153933714")));
        assert_eq!(m.client_key, Some(hex("17e3177c3402423f6d49f5fa58ffdfbd")));
        assert_eq!(
            (m.min_heartbeat, m.max_heartbeat, m.timestamp),
            (240_000, 240_000, 0)
        );
        assert_eq!(m.encode(), plain);
    }

    #[test]
    fn encodes_the_handshake_ok_vector() {
        let m = HandshakeOk {
            server_key: Some(hex("101112131415161718191a1b1c1d1e1f")),
            heartbeat: 180_000,
            session_id: Some("257392dacc43bd0b8f586d8666dad2bb".into()),
            expire_time: 1_500_000_000_000 + 86_400_000,
        };
        assert_eq!(
            m.encode(),
            hex(
                "0010101112131415161718191a1b1c1d1e1f 0002bf20 0020 3235373339326461636334336264306238663538366438363636646164326262 0000015d441df400"
            )
        );
    }
}
