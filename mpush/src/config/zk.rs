//! `mp.zk`: the ZooKeeper ensemble the `zk` service registry uses.

use std::time::Duration;

use serde::Deserialize;

use super::de;
use super::{ConfigError, invalid};

/// `mp.zk`. MPush's camelCase keys (`sessionTimeoutMs`) are kept.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct ZkConfig {
    /// `server-address` ("127.0.0.1:2181").
    #[serde(deserialize_with = "de::string")]
    pub server_address: String,
    /// `namespace` ("mpush").
    #[serde(deserialize_with = "de::string")]
    pub namespace: String,
    /// `digest` ("mpush").
    #[serde(deserialize_with = "de::string")]
    pub digest: String,
    /// `sessionTimeoutMs` (5s).
    #[serde(rename = "sessionTimeoutMs", deserialize_with = "de::duration")]
    pub session_timeout: Duration,
    /// `connectionTimeoutMs` (5s).
    #[serde(rename = "connectionTimeoutMs", deserialize_with = "de::duration")]
    pub connection_timeout: Duration,
}

/// Keys of MPush's `mp.zk` that mpush-rs accepts without using.
pub(super) const ZK_UNUSED: &[&str] = &["watch-path", "retry", "local-cache-path"];

impl Default for ZkConfig {
    fn default() -> Self {
        Self {
            server_address: "127.0.0.1:2181".to_string(),
            namespace: "mpush".to_string(),
            digest: "mpush".to_string(),
            session_timeout: Duration::from_secs(5),
            connection_timeout: Duration::from_secs(5),
        }
    }
}

impl ZkConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.session_timeout.is_zero() {
            return Err(invalid("mp.zk.sessionTimeoutMs", "must be greater than 0"));
        }
        if self.connection_timeout.is_zero() {
            return Err(invalid(
                "mp.zk.connectionTimeoutMs",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}
