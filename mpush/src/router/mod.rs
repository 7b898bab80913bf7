//! The router center: where each (user, client type) is connected (spec §8, §10).
//!
//! - [`local`]: this server's routes to live connections.
//! - [`location`] / [`remote`]: the cluster-wide routes in the cache (`mp:ur:<userId>`).
//! - [`online`]: online-user sets and online/offline events.
//! - [`kick`]: cluster kick requests over the MQ.

pub mod kick;
pub mod local;
pub mod location;
pub mod online;
pub mod remote;

use std::sync::Arc;

pub use kick::KickRequest;
pub use local::LocalRouter;
pub use location::ClientLocation;
pub use online::UserEventBus;
pub use remote::RemoteRouter;

use crate::spi::{CacheManager, MQClient};

/// The routers of one server.
pub struct RouterCenter {
    /// Routes to this server's connections.
    pub local: LocalRouter,
    /// Routes in the shared cache.
    pub remote: RemoteRouter,
    /// Online sets and events.
    pub online: UserEventBus,
    /// This server's gateway address (`host`, `port`) as written into routes.
    pub gateway_host: String,
    /// This server's gateway port.
    pub gateway_port: u16,
    mq: Arc<dyn MQClient>,
}

impl std::fmt::Debug for RouterCenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterCenter")
            .field(
                "gateway",
                &format_args!("{}:{}", self.gateway_host, self.gateway_port),
            )
            .finish_non_exhaustive()
    }
}

impl RouterCenter {
    /// Routers over the given backends, for a server whose gateway is `host:port` and whose
    /// public IP names its online set.
    pub fn new(
        cache: Arc<dyn CacheManager>,
        mq: Arc<dyn MQClient>,
        gateway_host: String,
        gateway_port: u16,
        public_ip: String,
    ) -> Self {
        Self {
            local: LocalRouter::default(),
            remote: RemoteRouter::new(cache.clone()),
            online: UserEventBus::new(cache, mq.clone(), public_ip),
            gateway_host,
            gateway_port,
            mq,
        }
    }

    /// `true` if `loc` points at this server's gateway.
    pub fn is_this_server(&self, loc: &ClientLocation) -> bool {
        loc.host == self.gateway_host && loc.port == i32::from(self.gateway_port)
    }

    /// Publishes a kick request to the server that holds `loc` (spec §8.4).
    pub async fn publish_kick(&self, user_id: &str, client_type: i32, loc: &ClientLocation) {
        let req = KickRequest::for_location(user_id, client_type, loc);
        let channel = kick::channel(&loc.host, loc.port);
        if let Err(e) = self.mq.publish(&channel, &req.to_json()).await {
            tracing::warn!(user = user_id, %channel, error = %e, "cannot publish kick request");
        }
    }
}
