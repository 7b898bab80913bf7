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

use crate::protocol::message::{GatewayKick, Message};
use crate::protocol::{Command, Packet};
use crate::spi::{CacheManager, MQClient};

/// How kick requests reach the server holding a displaced connection (spec §8.4).
#[derive(Debug, Clone, Default)]
pub enum KickTransport {
    /// JSON published on the target's MQ channel (TCP gateway mode).
    #[default]
    Mq,
    /// A GATEWAY_KICK datagram unicast to the target's gateway host:port, sent from this
    /// server's UDP gateway socket (UDP gateway mode).
    Udp(Arc<tokio::net::UdpSocket>),
}

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
    kick_transport: KickTransport,
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
            kick_transport: KickTransport::Mq,
        }
    }

    /// Sends kick requests over `transport` instead of the MQ.
    pub fn with_kick_transport(mut self, transport: KickTransport) -> Self {
        self.kick_transport = transport;
        self
    }

    /// `true` if `loc` points at this server's gateway.
    pub fn is_this_server(&self, loc: &ClientLocation) -> bool {
        loc.host == self.gateway_host && loc.port == i32::from(self.gateway_port)
    }

    /// Publishes a kick request to the server that holds `loc` (spec §8.4).
    pub async fn publish_kick(&self, user_id: &str, client_type: i32, loc: &ClientLocation) {
        if let KickTransport::Udp(socket) = &self.kick_transport {
            return send_gateway_kick(socket, user_id, client_type, loc).await;
        }
        let req = KickRequest::for_location(user_id, client_type, loc);
        let channel = kick::channel(&loc.host, loc.port);
        if let Err(e) = self.mq.publish(&channel, &req.to_json()).await {
            tracing::warn!(user = user_id, %channel, error = %e, "cannot publish kick request");
        }
    }
}

/// UDP gateway mode: one GATEWAY_KICK datagram to the target gateway. No reply is expected,
/// so the sessionId is 0 (as for KICK); a lost datagram leaves the old device connected
/// until it disconnects, as a lost MQ message would.
async fn send_gateway_kick(
    socket: &tokio::net::UdpSocket,
    user_id: &str,
    client_type: i32,
    loc: &ClientLocation,
) {
    let Ok(port) = u16::try_from(loc.port) else {
        tracing::warn!(
            user = user_id,
            port = loc.port,
            "kick: invalid gateway port in route"
        );
        return;
    };
    let msg = GatewayKick {
        user_id: Some(user_id.to_string()),
        device_id: loc.device_id.clone(),
        conn_id: loc.conn_id.clone(),
        client_type,
        target_server: Some(loc.host.clone()),
        target_port: loc.port,
    };
    let packet = Packet::with_body(Command::GatewayKick, 0, msg.encode()).to_bytes();
    if let Err(e) = socket.send_to(&packet, (loc.host.as_str(), port)).await {
        tracing::warn!(user = user_id, target = %loc.host_and_port(), error = %e, "cannot send GATEWAY_KICK");
    }
}
