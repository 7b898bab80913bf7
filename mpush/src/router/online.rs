//! Online-user sets and online/offline events (spec §10).

use std::sync::Arc;

use crate::spi::{CacheManager, MQClient};

pub(crate) use crate::protocol::keys::{OFFLINE_CHANNEL, ONLINE_CHANNEL, online_set_key};

/// Maintains `mp:oul:<publicIp>` and publishes online/offline events.
///
/// Quirk Q19: the original deletes the whole set on every server start and stop, so servers
/// sharing a public IP clobber each other. mpush-rs keeps the key but removes only the users
/// it added, when they go offline or when the server stops.
pub(crate) struct UserEventBus {
    cache: Arc<dyn CacheManager>,
    mq: Arc<dyn MQClient>,
    key: String,
}

debug_fields!(UserEventBus { key });

impl UserEventBus {
    /// Events over `cache` and `mq` for the server(s) at `public_ip`.
    pub(crate) fn new(
        cache: Arc<dyn CacheManager>,
        mq: Arc<dyn MQClient>,
        public_ip: String,
    ) -> Self {
        Self {
            cache,
            mq,
            key: online_set_key(&public_ip),
        }
    }

    /// The online set key of this server.
    pub(crate) fn key(&self) -> &str {
        &self.key
    }

    /// `ZADD` + publish on [`ONLINE_CHANNEL`]. Failures are logged: the bind itself stands.
    pub(crate) async fn user_online(&self, user_id: &str) {
        if let Err(e) = self.cache.zadd(&self.key, user_id, 0.0).await {
            tracing::warn!(user = user_id, error = %e, "cannot add user to online set");
        }
        if let Err(e) = self.mq.publish(ONLINE_CHANNEL, user_id).await {
            tracing::warn!(user = user_id, error = %e, "cannot publish online event");
        }
    }

    /// `ZREM` + publish on [`OFFLINE_CHANNEL`].
    pub(crate) async fn user_offline(&self, user_id: &str) {
        if let Err(e) = self.cache.zrem(&self.key, user_id).await {
            tracing::warn!(user = user_id, error = %e, "cannot remove user from online set");
        }
        if let Err(e) = self.mq.publish(OFFLINE_CHANNEL, user_id).await {
            tracing::warn!(user = user_id, error = %e, "cannot publish offline event");
        }
    }

    /// Number of users in the online set (all servers sharing the public IP).
    pub(crate) async fn online_count(&self) -> crate::spi::SpiResult<u64> {
        self.cache.zcard(&self.key).await
    }
}
