//! The router center: where each (user, client type) is connected (spec §8, §10).
//!
//! - [`local`]: this server's routes to live connections.
//! - [`location`] / [`remote`]: the cluster-wide routes in the cache (`mp:ur:<userId>`).
//! - [`online`]: online-user sets and online/offline events.
//! - [`kick`]: cluster kick requests over the MQ.
//! - [`gateways`]: the gateways the registry lists (dead routes are told from live ones).
//! - [`verified`]: route checks a push can skip while the cache reports route changes.

pub(crate) mod gateways;
pub(crate) mod kick;
pub(crate) mod local;
pub(crate) mod location;
pub(crate) mod online;
pub(crate) mod remote;
pub(crate) mod verified;

use std::sync::Arc;

pub(crate) use gateways::LiveGateways;
pub(crate) use kick::KickRequest;
pub(crate) use local::{LocalRouter, RoutedConnection};
pub use location::ClientLocation;
pub(crate) use online::UserEventBus;
pub(crate) use remote::RemoteRouter;
pub(crate) use verified::{RouteCheck, RouteWatchState};

use crate::protocol::message::{GatewayKick, Message};
use crate::protocol::{Command, Packet};
use crate::spi::{CacheManager, ClientType, MQClient};

pub(crate) use crate::protocol::keys::node_users_key;

/// How kick requests reach the server holding a displaced connection (spec §8.4).
#[derive(Debug, Clone, Default)]
pub(crate) enum KickTransport {
    /// JSON published on the target's MQ channel (TCP gateway mode).
    #[default]
    Mq,
    /// A GATEWAY_KICK datagram unicast to the target's gateway host:port, sent from this
    /// server's UDP gateway socket (UDP gateway mode).
    Udp(Arc<tokio::net::UdpSocket>),
}

/// The routers of one server, whose connections are of type `C`.
pub(crate) struct RouterCenter<C> {
    /// Routes to this server's connections.
    pub local: LocalRouter<C>,
    /// Routes in the shared cache.
    pub remote: RemoteRouter,
    /// Online sets and events.
    pub online: UserEventBus,
    /// This server's gateway address (`host`, `port`) as written into routes.
    pub gateway_host: String,
    /// This server's gateway port.
    pub gateway_port: u16,
    /// The gateways the registry lists (kept in step with discovery by the server).
    pub gateways: LiveGateways,
    /// Whether the cache reports route changes, so a verified route need not be read again.
    pub checks: RouteWatchState,
    mq: Arc<dyn MQClient>,
    kick_transport: KickTransport,
}

impl<C> std::fmt::Debug for RouterCenter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterCenter")
            .field(
                "gateway",
                &format_args!("{}:{}", self.gateway_host, self.gateway_port),
            )
            .finish_non_exhaustive()
    }
}

impl<C> RouterCenter<C> {
    /// Routers over the given backends, for a server whose gateway is `host:port` and whose
    /// public IP names its online set.
    pub(crate) fn new(
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
            gateways: LiveGateways::default(),
            checks: RouteWatchState::default(),
            mq,
            kick_transport: KickTransport::Mq,
        }
    }

    /// Sends kick requests over `transport` instead of the MQ.
    pub(crate) fn with_kick_transport(mut self, transport: KickTransport) -> Self {
        self.kick_transport = transport;
        self
    }

    /// The route of a connection of this server.
    pub(crate) fn location(
        &self,
        conn_id: &str,
        device_id: Option<String>,
        os_name: Option<String>,
        client_version: Option<String>,
    ) -> ClientLocation {
        ClientLocation {
            port: i32::from(self.gateway_port),
            host: self.gateway_host.clone(),
            device_id,
            os_name,
            client_version,
            conn_id: Some(conn_id.to_string()),
        }
    }

    /// `true` if `loc` names connection `conn_id` of this server.
    pub(crate) fn names_connection(&self, loc: &ClientLocation, conn_id: &str) -> bool {
        loc.conn_id.as_deref() == Some(conn_id) && self.is_this_server(loc)
    }

    /// `true` if `loc` is an offline route to this server for `device_id`: the route of
    /// this server's connection of that device once it was marked offline (which drops the
    /// connection id), e.g. by a node that took this server for dead. Only meaningful for
    /// the connection this server routes the (user, type) to.
    pub(crate) fn names_device_offline(
        &self,
        loc: &ClientLocation,
        device_id: Option<&str>,
    ) -> bool {
        !loc.is_online() && loc.device_id.as_deref() == device_id && self.is_this_server(loc)
    }

    /// The key of this server's user index (see [`node_users_key`]).
    pub(crate) fn node_users_key(&self) -> String {
        node_users_key(&self.gateway_host, i32::from(self.gateway_port))
    }

    /// Notes that `user_id` has a route to this server, so that the routes can be marked
    /// offline by a surviving node if this one dies. Failures are logged: the next
    /// route check writes it again.
    pub(crate) async fn index_user(&self, user_id: &str) {
        if let Err(e) = self
            .online_cache()
            .zadd(&self.node_users_key(), user_id, 0.0)
            .await
        {
            tracing::debug!(user = user_id, error = %e, "cannot index user route");
        }
    }

    /// Removes `user_id` from this server's user index (no route here any more).
    pub(crate) async fn unindex_user(&self, user_id: &str) {
        if let Err(e) = self
            .online_cache()
            .zrem(&self.node_users_key(), user_id)
            .await
        {
            tracing::debug!(user = user_id, error = %e, "cannot unindex user route");
        }
    }

    fn online_cache(&self) -> &Arc<dyn CacheManager> {
        self.remote.cache()
    }

    /// `true` if `loc` points at this server's gateway.
    pub(crate) fn is_this_server(&self, loc: &ClientLocation) -> bool {
        loc.host == self.gateway_host && loc.port == i32::from(self.gateway_port)
    }

    /// Publishes a kick request to the server that holds `loc` (spec §8.4).
    pub(crate) async fn publish_kick(
        &self,
        user_id: &str,
        client_type: ClientType,
        loc: &ClientLocation,
    ) {
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
    client_type: ClientType,
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
        client_type: client_type.code(),
        target_server: Some(loc.host.clone()),
        target_port: loc.port,
    };
    let packet = Packet::with_body(Command::GatewayKick, 0, msg.encode()).to_bytes();
    if let Err(e) = socket.send_to(&packet, (loc.host.as_str(), port)).await {
        tracing::warn!(user = user_id, target = %loc.host_and_port(), error = %e, "cannot send GATEWAY_KICK");
    }
}
