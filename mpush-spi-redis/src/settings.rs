//! Where and how to connect: nodes parsed from `mp.redis`, topology, timeouts.

use std::fmt;
use std::time::Duration;

use mpush::config::RedisConfig;
use mpush::spi::{SpiError, SpiResult};

use crate::BACKEND;

/// One Redis node, as written in `mp.redis.nodes`: `"host:port"` or MPush's
/// `"host:port:password"` (an IPv6 host is written in brackets: `"[::1]:6379"`).
#[derive(Clone, PartialEq, Eq)]
pub struct RedisNode {
    /// Host name or IP address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// This node's password, overriding `mp.redis.password` (`None` = use the global one).
    pub password: Option<String>,
}

impl RedisNode {
    /// A node without its own password.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self {
            host: host.into(),
            port,
            password: None,
        }
    }

    /// Parses `"host:port"` or `"host:port:password"` (the password may itself contain `:`).
    pub fn parse(entry: &str) -> SpiResult<Self> {
        let bad = || SpiError::Config {
            backend: BACKEND,
            message: format!(
                "redis node {entry:?} is not \"host:port\" (or \"host:port:password\")"
            ),
        };
        let entry_trimmed = entry.trim();
        // `[v6-address]:port[:password]`, else `host:port[:password]` split on the first two `:`.
        let (host, rest) = if let Some(bracketed) = entry_trimmed.strip_prefix('[') {
            let (host, rest) = bracketed.split_once(']').ok_or_else(bad)?;
            (host, rest.strip_prefix(':').ok_or_else(bad)?)
        } else {
            entry_trimmed.split_once(':').ok_or_else(bad)?
        };
        let (port, password) = match rest.split_once(':') {
            Some((port, password)) => (port, Some(password)),
            None => (rest, None),
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_string(),
            port,
            password: password.filter(|p| !p.is_empty()).map(str::to_string),
        })
    }
}

// Hand-written so that passwords never reach logs.
impl fmt::Debug for RedisNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisNode")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

impl fmt::Display for RedisNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Parses every `mp.redis.nodes` entry with [`RedisNode::parse`].
pub fn parse_nodes<S: AsRef<str>>(nodes: &[S]) -> SpiResult<Vec<RedisNode>> {
    nodes.iter().map(|n| RedisNode::parse(n.as_ref())).collect()
}

/// Single server or Redis Cluster (`mp.redis.cluster-model`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// One server (`"single"`): the first node is used.
    Single,
    /// A Redis Cluster (`"cluster"`): the nodes are seeds, the topology is discovered.
    Cluster,
}

/// Timeouts and queue sizes. The defaults keep every call under the server's own
/// 5 s budget for a backend call, so a dead Redis is reported, never waited on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisOptions {
    /// One TCP connect + handshake attempt (default 2 s).
    pub connect_timeout: Duration,
    /// Waiting for Redis to answer one command (default 2 s).
    pub response_timeout: Duration,
    /// Upper bound on a whole call, including waiting for a reconnect in progress, and on the
    /// initial connect (default 4 s). Exceeding it returns [`SpiError::Unavailable`].
    pub operation_timeout: Duration,
    /// Messages queued per MQ listener before new ones are dropped (default 4096).
    pub queue_capacity: usize,
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(4),
            queue_capacity: 4096,
        }
    }
}

/// Everything needed to connect: topology, nodes, default password and [`RedisOptions`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedisSettings {
    /// Single server or cluster.
    pub topology: Topology,
    /// Nodes (single: the first is used; cluster: seeds). Never empty once validated.
    pub nodes: Vec<RedisNode>,
    /// Password for nodes without their own (`None` = no AUTH).
    pub password: Option<String>,
    /// Timeouts and queue sizes.
    pub options: RedisOptions,
}

impl RedisSettings {
    /// Settings for one server.
    pub fn single(node: RedisNode) -> Self {
        Self {
            topology: Topology::Single,
            nodes: vec![node],
            password: None,
            options: RedisOptions::default(),
        }
    }

    /// Settings for a Redis Cluster reached through `seeds`.
    pub fn cluster(seeds: Vec<RedisNode>) -> Self {
        Self {
            topology: Topology::Cluster,
            nodes: seeds,
            password: None,
            options: RedisOptions::default(),
        }
    }

    /// Reads `mp.redis` (`cluster-model`, `nodes`, `password`), with default options.
    pub fn from_config(config: &RedisConfig) -> SpiResult<Self> {
        let topology = match config.cluster_model.as_str() {
            "single" => Topology::Single,
            "cluster" => Topology::Cluster,
            other => {
                return Err(SpiError::Config {
                    backend: BACKEND,
                    message: format!(
                        "mp.redis.cluster-model must be single or cluster, got {other:?}"
                    ),
                });
            }
        };
        let settings = Self {
            topology,
            nodes: parse_nodes(&config.nodes)?,
            password: Some(config.password.clone()).filter(|p| !p.is_empty()),
            options: RedisOptions::default(),
        };
        settings.validate()?;
        Ok(settings)
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: RedisOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the default password.
    pub fn with_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into()).filter(|p: &String| !p.is_empty());
        self
    }

    /// Checks what a connect would trip over later, with a clearer message.
    pub(crate) fn validate(&self) -> SpiResult<()> {
        let config = |message: &str| SpiError::Config {
            backend: BACKEND,
            message: message.to_string(),
        };
        if self.nodes.is_empty() {
            return Err(config("mp.redis.nodes must not be empty"));
        }
        if self.options.queue_capacity == 0 {
            return Err(config("queue capacity must be at least 1"));
        }
        if self.topology == Topology::Single && self.nodes.len() > 1 {
            // MPush's single model with several nodes is not sharded by mpush-rs: say so.
            tracing::warn!(
                node = %self.nodes[0],
                ignored = self.nodes.len() - 1,
                "redis: cluster-model=single uses only the first of mp.redis.nodes"
            );
        }
        Ok(())
    }

    /// The password for `node`: its own, else the default one.
    pub(crate) fn password_for<'a>(&'a self, node: &'a RedisNode) -> Option<&'a str> {
        node.password.as_deref().or(self.password.as_deref())
    }
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("topology", &self.topology)
            .field("nodes", &self.nodes)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("options", &self.options)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn node_forms() {
        assert_eq!(
            RedisNode::parse("10.0.0.1:6379").unwrap(),
            RedisNode::new("10.0.0.1", 6379)
        );
        let n = RedisNode::parse("h:7000:se:cret").unwrap();
        assert_eq!((n.host.as_str(), n.port), ("h", 7000));
        assert_eq!(n.password.as_deref(), Some("se:cret"));
        assert_eq!(RedisNode::parse("h:1:").unwrap().password, None);
        let v6 = RedisNode::parse("[::1]:6380:pw").unwrap();
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 6380));
        assert_eq!(v6.to_string(), "[::1]:6380");
        assert!(!format!("{v6:?}").contains("pw"));
        for bad in [
            "",
            "host",
            "host:",
            ":6379",
            "h:0",
            "h:70000",
            "h:x",
            "[::1",
            "[::1]6379",
        ] {
            assert!(RedisNode::parse(bad).is_err(), "{bad:?} must be rejected");
        }
    }

    #[test]
    fn from_config() {
        let c = RedisConfig {
            cluster_model: "cluster".into(),
            nodes: vec!["a:1".into(), "b:2:own".into()],
            password: "global".into(),
        };
        let s = RedisSettings::from_config(&c).unwrap();
        assert_eq!(s.topology, Topology::Cluster);
        assert_eq!(s.password_for(&s.nodes[0]), Some("global"));
        assert_eq!(s.password_for(&s.nodes[1]), Some("own"));
        assert!(!format!("{s:?}").contains("global"));

        let single = RedisSettings::from_config(&RedisConfig::default()).unwrap();
        assert_eq!(single.topology, Topology::Single);
        assert_eq!(single.password, None);

        let sentinel = RedisConfig {
            cluster_model: "sentinel".into(),
            ..RedisConfig::default()
        };
        assert!(matches!(
            RedisSettings::from_config(&sentinel),
            Err(SpiError::Config { .. })
        ));
        let empty = RedisConfig {
            nodes: vec![],
            ..RedisConfig::default()
        };
        assert!(RedisSettings::from_config(&empty).is_err());
    }
}
