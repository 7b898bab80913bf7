//! `mp.redis`: the Redis deployment the `redis` cache and MQ backends use.

use serde::Deserialize;

use super::de;
use super::spi::SpiConfig;
use super::{ConfigError, invalid};

/// `mp.redis`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct RedisConfig {
    /// `cluster-model`: "single" or "cluster".
    #[serde(deserialize_with = "de::string")]
    pub cluster_model: String,
    /// `nodes`: "host:port" strings.
    #[serde(deserialize_with = "de::redis_nodes")]
    pub nodes: Vec<String>,
    /// `password` ("" = none).
    #[serde(deserialize_with = "de::string")]
    pub password: String,
}

/// Keys of MPush's `mp.redis` that mpush-rs accepts without using (Jedis pool settings,
/// sentinel, the 0.0.x `cluster-group`).
pub(super) const REDIS_UNUSED: &[&str] = &[
    "sentinel-master",
    "config",
    "write-to-zk",
    "cluster-group",
    "maxAttempts",
    "soTimeout",
    "connectionTimeout",
];

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            cluster_model: "single".to_string(),
            nodes: vec!["127.0.0.1:6379".to_string()],
            password: String::new(),
        }
    }
}

impl RedisConfig {
    pub(super) fn validate(&self, spi: &SpiConfig) -> Result<(), ConfigError> {
        match self.cluster_model.as_str() {
            "single" | "cluster" => {}
            "sentinel" => {
                return Err(invalid(
                    "mp.redis.cluster-model",
                    "sentinel is not supported by mpush-rs (use single or cluster)",
                ));
            }
            other => {
                return Err(invalid(
                    "mp.redis.cluster-model",
                    format!("must be single or cluster, got {other:?}"),
                ));
            }
        }
        // Nodes are only required when a Redis backend may be selected ("" = highest priority
        // linked, which can be Redis); a memory/zk-only setup may leave MPush's `nodes:[]`.
        let may_use_redis = [&spi.cache_manager, &spi.mq_client]
            .iter()
            .any(|name| name.is_empty() || name.as_str() == "redis");
        if self.nodes.is_empty() && may_use_redis {
            return Err(invalid(
                "mp.redis.nodes",
                "must not be empty (e.g. nodes:[\"127.0.0.1:6379\"])",
            ));
        }
        for node in &self.nodes {
            let mut parts = node.splitn(3, ':');
            let host = parts.next().unwrap_or_default();
            let port = parts.next().and_then(|p| p.parse::<u16>().ok());
            if host.is_empty() || !matches!(port, Some(p) if p != 0) {
                return Err(invalid(
                    "mp.redis.nodes",
                    format!("entry {node:?} is not \"ip:port\" (or \"ip:port:password\")"),
                ));
            }
        }
        Ok(())
    }
}
