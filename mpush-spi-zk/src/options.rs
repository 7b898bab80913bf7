//! [`ZkOptions`]: how to reach ZooKeeper, built from `mp.zk` or by hand.

use std::fmt;
use std::time::Duration;

use mpush::config::ZkConfig;
use mpush::spi::{SpiError, SpiResult};

use crate::BACKEND;

/// Connection settings of a [`crate::ZkServiceRegistry`].
///
/// [`ZkOptions::from_config`] maps MPush's `mp.zk` section; the extra
/// [`operation_timeout`](ZkOptions::operation_timeout) bounds every ZooKeeper call.
#[derive(Clone, PartialEq)]
pub struct ZkOptions {
    /// Connect string, e.g. `"127.0.0.1:2181"` or `"zk1:2181,zk2:2181"`.
    pub server_address: String,
    /// Chroot of every path (`"mpush"` → `/mpush`); created if missing. Empty = no chroot.
    pub namespace: String,
    /// Raw bytes of the `digest` auth (MPush default `"mpush"`). Empty = no auth and
    /// world-writable nodes, as Curator does without an ACL provider.
    pub digest: String,
    /// Session timeout asked of the server (it clamps it to `[2, 20] × tickTime`).
    pub session_timeout: Duration,
    /// Longest wait for a session when connecting (the first time and after an expiry).
    pub connection_timeout: Duration,
    /// Longest wait for any single ZooKeeper operation before [`SpiError::Unavailable`].
    pub operation_timeout: Duration,
}

impl ZkOptions {
    /// Options from `mp.zk`; the operation timeout is the connection timeout.
    pub fn from_config(config: &ZkConfig) -> Self {
        Self {
            server_address: config.server_address.clone(),
            namespace: config.namespace.clone(),
            digest: config.digest.clone(),
            session_timeout: config.session_timeout,
            connection_timeout: config.connection_timeout,
            operation_timeout: config.connection_timeout,
        }
    }

    /// Options for `server_address` with MPush's defaults (namespace and digest `mpush`, 5 s
    /// timeouts).
    pub fn new(server_address: impl Into<String>) -> Self {
        let mut options = Self::from_config(&ZkConfig::default());
        options.server_address = server_address.into();
        options
    }

    /// The chroot path (`/mpush`), or `None` without a namespace.
    pub(crate) fn chroot(&self) -> SpiResult<Option<String>> {
        let trimmed = self.namespace.trim_matches('/');
        if trimmed.is_empty() {
            return Ok(None);
        }
        // ZooKeeper rejects empty segments and the reserved names; say so before connecting.
        if trimmed
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
        {
            return Err(SpiError::Config {
                backend: BACKEND,
                message: format!("invalid mp.zk.namespace {:?}", self.namespace),
            });
        }
        Ok(Some(format!("/{trimmed}")))
    }

    pub(crate) fn validate(&self) -> SpiResult<()> {
        let invalid = |message: &str| {
            Err(SpiError::Config {
                backend: BACKEND,
                message: message.to_string(),
            })
        };
        if self.server_address.trim().is_empty() {
            return invalid("mp.zk.server-address is empty");
        }
        if self.session_timeout.is_zero()
            || self.connection_timeout.is_zero()
            || self.operation_timeout.is_zero()
        {
            return invalid("zk timeouts must be greater than 0");
        }
        self.chroot().map(|_| ())
    }
}

impl fmt::Debug for ZkOptions {
    // The digest is a password: keep it out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkOptions")
            .field("server_address", &self.server_address)
            .field("namespace", &self.namespace)
            .field("digest", &if self.digest.is_empty() { "" } else { "***" })
            .field("session_timeout", &self.session_timeout)
            .field("connection_timeout", &self.connection_timeout)
            .field("operation_timeout", &self.operation_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroot_from_namespace() {
        let mut o = ZkOptions::new("127.0.0.1:2181");
        assert_eq!(o.chroot().ok().flatten().as_deref(), Some("/mpush"));
        o.namespace = "/a/b/".into();
        assert_eq!(o.chroot().ok().flatten().as_deref(), Some("/a/b"));
        o.namespace = String::new();
        assert_eq!(o.chroot().ok().flatten(), None);
        o.namespace = "a//b".into();
        assert!(o.chroot().is_err());
        assert!(format!("{o:?}").contains("***"));
        assert!(!format!("{o:?}").contains("\"mpush\""));
    }
}
