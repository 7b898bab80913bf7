//! `ClientLocation`: one route value in `mp:ur:<userId>` (spec §10).

use serde::{Deserialize, Serialize};

/// Where a user's device is connected: the gateway of its server and the connection id.
/// A route without `conn_id` is *offline* (the device disconnected or unbound).
///
/// Serialised in field order, null fields omitted: the key order of the Java server's
/// hand-built JSON (spec §10), so the bytes in the cache are the same whoever wrote them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ClientLocation {
    /// Gateway port of the server.
    #[serde(default)]
    pub port: i32,
    /// Gateway host of the server.
    #[serde(default)]
    pub host: String,
    /// Device id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// OS name (readers derive the client type from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    /// Client version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// Connection id; `None` = offline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_id: Option<String>,
}

impl ClientLocation {
    /// `true` when the route points at a live connection.
    pub fn is_online(&self) -> bool {
        self.conn_id.is_some()
    }

    /// The same route marked offline.
    pub fn offline(&self) -> Self {
        Self {
            conn_id: None,
            ..self.clone()
        }
    }

    /// `host:port` of the gateway.
    pub fn host_and_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    /// The JSON the Java server writes: keys in the order port, host, deviceId, osName,
    /// clientVersion, connId; null keys omitted. Unlike the original, strings are escaped
    /// (quirk Q13), which Java's lenient parser reads the same for ordinary values.
    pub fn to_json(&self) -> String {
        // Serialising plain strings and integers cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses route JSON written by a Java or Rust server; unknown keys are ignored.
    pub fn from_json(s: &str) -> Option<Self> {
        serde_json::from_str(s).ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The example bytes of spec §10, as the Java server writes them.
    const SPEC: &str = r#"{"port":3001,"host":"10.0.0.5","deviceId":"dev-1","osName":"android","clientVersion":"2.0","connId":"a1b2c3d4"}"#;

    /// The route of [`SPEC`], built field by field.
    fn spec_location() -> ClientLocation {
        ClientLocation {
            port: 3001,
            host: "10.0.0.5".into(),
            device_id: Some("dev-1".into()),
            os_name: Some("android".into()),
            client_version: Some("2.0".into()),
            conn_id: Some("a1b2c3d4".into()),
        }
    }

    #[test]
    fn json_matches_the_java_layout() {
        let loc = spec_location();
        let json = loc.to_json();
        assert_eq!(json, SPEC);
        assert_eq!(ClientLocation::from_json(&json).unwrap(), loc);
        assert_eq!(
            loc.offline().to_json(),
            r#"{"port":3001,"host":"10.0.0.5","deviceId":"dev-1","osName":"android","clientVersion":"2.0"}"#
        );
        // escaping (Q13 fixed) and lenient parsing of other key orders and unknown keys
        let odd = ClientLocation {
            device_id: Some("a\"b".into()),
            ..loc.clone()
        };
        assert_eq!(ClientLocation::from_json(&odd.to_json()).unwrap(), odd);
        let java = r#"{"host":"h","port":1,"extra":true,"connId":"c"}"#;
        let parsed = ClientLocation::from_json(java).unwrap();
        assert_eq!(
            (parsed.host.as_str(), parsed.port, parsed.conn_id.as_deref()),
            ("h", 1, Some("c"))
        );
    }

    /// The exact example bytes of spec §10, both ways.
    #[test]
    fn spec_example_bytes() {
        let loc = ClientLocation::from_json(SPEC).unwrap();
        assert_eq!(loc, spec_location());
        assert_eq!(loc.to_json(), SPEC);
        // Null keys are omitted wherever they are, and the order of the rest is kept.
        let sparse = ClientLocation {
            device_id: None,
            client_version: None,
            ..loc
        };
        assert_eq!(
            sparse.to_json(),
            r#"{"port":3001,"host":"10.0.0.5","osName":"android","connId":"a1b2c3d4"}"#
        );
        assert_eq!(
            ClientLocation::default().to_json(),
            r#"{"port":0,"host":""}"#
        );
    }

    /// Strings are escaped as JSON strings (quirk Q13 fixed), non-ASCII kept as UTF-8 as the
    /// Java writer does; nulls inside the JSON read as absent, as before.
    #[test]
    fn escaping_and_lenient_nulls() {
        let loc = ClientLocation {
            port: 1,
            host: "h".into(),
            device_id: Some("q\"\\\n\u{1}é".into()),
            ..Default::default()
        };
        assert_eq!(
            loc.to_json(),
            "{\"port\":1,\"host\":\"h\",\"deviceId\":\"q\\\"\\\\\\n\\u0001é\"}"
        );
        let parsed =
            ClientLocation::from_json(r#"{"port":1,"host":"h","deviceId":null,"connId":null}"#)
                .unwrap();
        assert_eq!((parsed.device_id, parsed.conn_id), (None, None));
        assert_eq!(ClientLocation::from_json("not json"), None);
    }
}
