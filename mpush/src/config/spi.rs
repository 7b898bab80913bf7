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
    /// `dns-mapping-manager`: "zk" reads ZooKeeper's `/dns/mapping` for the HTTP proxy; ""
    /// or a Java class name (MPush's default manager) means `mp.http.dns-mapping` only.
    #[serde(deserialize_with = "dns_manager_name")]
    pub dns_mapping_manager: String,
}

/// Keys of MPush's `mp.spi` that mpush-rs accepts without using (Java class names).
pub(super) const SPI_UNUSED: &[&str] = &["thread-pool-factory"];

/// MPush files name its default manager by Java class (`com.mpush....`): that is "" here.
fn dns_manager_name<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = de::string(d)?;
    Ok(if name.contains('.') {
        String::new()
    } else {
        name
    })
}
