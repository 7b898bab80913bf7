//! Cluster kick requests (spec §8.4): published to the MQ channel of the server holding the
//! displaced connection.

use serde::{Deserialize, Serialize};

use super::ClientLocation;
use crate::spi::ClientType;

/// The MQ channel of the server whose gateway is `host:port`.
pub(crate) use crate::protocol::keys::kick_channel as channel;

/// A kick request. Serialised as the Java server does (keys in any order on read).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KickRequest {
    /// Client type of the route.
    #[serde(default)]
    pub client_type: i32,
    /// Connection to kick; ignored by the target unless its local route has this id.
    #[serde(default)]
    pub conn_id: Option<String>,
    /// Device to kick.
    #[serde(default)]
    pub device_id: Option<String>,
    /// Target gateway port.
    #[serde(default)]
    pub target_port: i32,
    /// Target gateway host.
    #[serde(default)]
    pub target_server: String,
    /// The user.
    #[serde(default)]
    pub user_id: String,
}

impl KickRequest {
    /// The request that kicks the connection of `loc`.
    pub(crate) fn for_location(
        user_id: &str,
        client_type: ClientType,
        loc: &ClientLocation,
    ) -> Self {
        Self {
            client_type: client_type.code(),
            conn_id: loc.conn_id.clone(),
            device_id: loc.device_id.clone(),
            target_port: loc.port,
            target_server: loc.host.clone(),
            user_id: user_id.to_string(),
        }
    }

    /// JSON text.
    pub(crate) fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Parses JSON text; `None` if malformed.
    pub(crate) fn from_json(s: &str) -> Option<Self> {
        serde_json::from_str(s).ok()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn java_shape() {
        let java = r#"{"clientType":1,"connId":"c1","deviceId":"d","targetPort":3001,"targetServer":"10.0.0.5","userId":"u"}"#;
        let r = KickRequest::from_json(java).unwrap();
        assert_eq!(r.to_json(), java);
        assert_eq!(channel("10.0.0.5", 3001), "/mpush/kick/10.0.0.5:3001");
        assert!(KickRequest::from_json("not json").is_none());
    }
}
