//! `mp.spi`: which registered backend serves each SPI.

use serde::Deserialize;

use super::de;

/// `mp.spi`: backend names ("" = the highest-priority registered backend).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct SpiConfig {
    /// `cache-manager`, e.g. "memory" or "redis".
    #[serde(deserialize_with = "de::string")]
    pub cache_manager: String,
    /// `mq-client`, e.g. "memory" or "redis".
    #[serde(deserialize_with = "de::string")]
    pub mq_client: String,
    /// `service-registry` (also discovery), e.g. "memory" or "zk".
    #[serde(deserialize_with = "de::string")]
    pub service_registry: String,
}

/// Keys of MPush's `mp.spi` that mpush-rs accepts without using (Java class names).
pub(super) const SPI_UNUSED: &[&str] = &["thread-pool-factory", "dns-mapping-manager"];
