//! HANDSHAKE request and HandshakeOk (cmd 2, spec §3.1, §3.2).

use super::{FieldReader, FieldWriter, Message, ProtocolError, WireField};

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

// Key material (iv, client_key) stays out of logs.
debug_fields!(HandshakeRequest {
    device_id,
    os_name,
    os_version,
    client_version,
    max_heartbeat
});

wire_fields!(HandshakeRequest {
    device_id: "deviceId",
    os_name: "osName",
    os_version: "osVersion",
    client_version: "clientVersion",
    iv: "iv",
    client_key: "clientKey",
    min_heartbeat: "minHeartbeat",
    max_heartbeat: "maxHeartbeat",
    timestamp: "timestamp"
});

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

// Key material (server_key) and the ticket stay out of logs.
debug_fields!(HandshakeOk {
    heartbeat,
    expire_time
});

wire_fields!(HandshakeOk {
    server_key: "serverKey",
    heartbeat: "heartbeat",
    session_id: "sessionId",
    expire_time: "expireTime"
});

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
