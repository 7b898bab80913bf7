//! Remote routes: `mp:ur:<userId>` hashes in the shared cache (spec §10).

use std::collections::HashMap;
use std::sync::Arc;

use super::ClientLocation;
use crate::spi::{CacheManager, ClientType, SpiResult};

/// The cache key of a user's routes.
pub fn user_route_key(user_id: &str) -> String {
    format!("mp:ur:{user_id}")
}

/// Reads and writes cluster-wide routes. Field = client type in decimal, value =
/// [`ClientLocation`] JSON, so Java and Rust servers share routes.
#[derive(Clone)]
pub struct RemoteRouter {
    cache: Arc<dyn CacheManager>,
}

impl std::fmt::Debug for RemoteRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteRouter")
    }
}

impl RemoteRouter {
    /// Routes stored in `cache`.
    pub fn new(cache: Arc<dyn CacheManager>) -> Self {
        Self { cache }
    }

    /// The cache the routes live in.
    pub fn cache(&self) -> &Arc<dyn CacheManager> {
        &self.cache
    }

    /// Writes the route and returns the one it replaced.
    pub async fn register(
        &self,
        user_id: &str,
        client_type: ClientType,
        loc: &ClientLocation,
    ) -> SpiResult<Option<ClientLocation>> {
        let key = user_route_key(user_id);
        let field = client_type.to_string();
        let old = self.cache.hget(&key, &field).await?;
        self.cache.hset(&key, &field, &loc.to_json()).await?;
        Ok(old.as_deref().and_then(ClientLocation::from_json))
    }

    /// Marks the route offline if it still points at `conn_id` (disconnect, §8.5) or, when
    /// `device_id` is given, at that device (unbind, §8.3). Returns `true` if it changed.
    pub async fn mark_offline(
        &self,
        user_id: &str,
        client_type: ClientType,
        conn_id: Option<&str>,
        device_id: Option<&str>,
    ) -> SpiResult<bool> {
        let key = user_route_key(user_id);
        let field = client_type.to_string();
        let Some(cur) = self.cache.hget(&key, &field).await? else {
            return Ok(false);
        };
        let Some(loc) = ClientLocation::from_json(&cur) else {
            return Ok(false);
        };
        let matches = match (conn_id, device_id) {
            (Some(c), _) => loc.conn_id.as_deref() == Some(c),
            (None, Some(d)) => loc.device_id.as_deref() == Some(d),
            (None, None) => true,
        };
        if !matches || !loc.is_online() {
            return Ok(false);
        }
        self.cache
            .hset(&key, &field, &loc.offline().to_json())
            .await?;
        Ok(true)
    }

    /// The route of one client type.
    pub async fn lookup(
        &self,
        user_id: &str,
        client_type: ClientType,
    ) -> SpiResult<Option<ClientLocation>> {
        let v = self
            .cache
            .hget(&user_route_key(user_id), &client_type.to_string())
            .await?;
        Ok(v.as_deref().and_then(ClientLocation::from_json))
    }

    /// Every route of the user, by client type. Unparsable entries are skipped.
    pub async fn lookup_all(
        &self,
        user_id: &str,
    ) -> SpiResult<HashMap<ClientType, ClientLocation>> {
        let all = self.cache.hgetall(&user_route_key(user_id)).await?;
        Ok(all
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, ClientLocation::from_json(&v)?)))
            .collect())
    }
}
