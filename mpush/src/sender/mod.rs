//! `PushSender`: the server-side SDK a business backend uses to push (spec §9.3).
//!
//! It finds the server holding each user's connection from the routes in the cache
//! (`mp:ur:<userId>`), and sends GATEWAY_PUSH over a pool of gateway connections kept in
//! step with service discovery (`/cluster/gs`). It speaks the same bytes as MPush's Java
//! `PushSender`, so it works against Java servers too.
//!
//! - [`context`]: what to push ([`PushContext`], [`PushMsg`]) and the outcome ([`PushResult`]).
//! - [`gateway`]: one gateway TCP connection with request/response correlation.
//! - [`progress`]: broadcast task progress and control.
//! - [`udp`]: the UDP transport used instead when `mp.net.gateway-server-net = udp`.

pub mod context;
pub mod gateway;
pub mod progress;
pub mod udp;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

pub use context::{PushContext, PushMsg, PushResult, ResultCode};
use gateway::{GatewayClient, GatewayReply};

use crate::config::MPushConfig;
use crate::protocol::message::{ErrorCode, GatewayPush};
use crate::router::{ClientLocation, RemoteRouter};
use crate::spi::registry::{self, ServiceBackend};
use crate::spi::{
    CacheManager, ClientType, ServiceDiscovery, ServiceListener, ServiceNode, SpiError,
    SubscriptionId, services,
};

/// How long a user's routes stay cached in the sender (as the Java SDK: 5 min). Any OFFLINE
/// or ROUTER_CHANGE answer invalidates the entry at once.
const ROUTE_CACHE_TTL: Duration = Duration::from_secs(300);
/// Re-routes after ROUTER_CHANGE before giving up.
const MAX_REDIRECTS: usize = 3;

/// Errors creating a [`PushSender`].
#[derive(Debug, thiserror::Error)]
pub enum SenderError {
    /// A backend could not be created.
    #[error(transparent)]
    Spi(#[from] SpiError),
    /// The UDP socket of UDP gateway mode could not be bound.
    #[error("cannot bind the push SDK UDP socket (mp.net.gateway-client-port): {0}")]
    Io(#[from] std::io::Error),
}

/// Builds a [`PushSender`].
#[derive(Default)]
pub struct PushSenderBuilder {
    config: Option<MPushConfig>,
    cache: Option<Arc<dyn CacheManager>>,
    discovery: Option<Arc<dyn ServiceDiscovery>>,
}

impl std::fmt::Debug for PushSenderBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSenderBuilder").finish_non_exhaustive()
    }
}

impl PushSenderBuilder {
    /// Configuration (`mp.net.gateway-client-num`, backend names).
    pub fn config(mut self, config: MPushConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// The cache holding the routes (default: the registered backend).
    pub fn cache_manager(mut self, cache: Arc<dyn CacheManager>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The discovery listing gateway servers (default: the registered backend).
    pub fn discovery(mut self, discovery: Arc<dyn ServiceDiscovery>) -> Self {
        self.discovery = Some(discovery);
        self
    }

    /// Creates missing backends, discovers the gateways and connects to them.
    pub async fn start(self) -> Result<PushSender, SenderError> {
        let config = Arc::new(self.config.unwrap_or_default());
        let cache = match self.cache {
            Some(c) => c,
            None => registry::create_cache_manager(config.clone()).await?,
        };
        let discovery = match self.discovery {
            Some(d) => d,
            None => {
                let ServiceBackend { discovery, .. } =
                    registry::create_service_backend(config.clone()).await?;
                discovery
            }
        };
        // The transport follows the servers' gateway mode: one UDP socket in UDP mode.
        let udp = if config.net.gateway_server_net == "udp" {
            Some(udp::UdpGatewayClient::bind(&config.net).await?)
        } else {
            None
        };
        let multicast = udp::multicast_group(&config.net)
            .filter(|_| config.net.gateway_server_port != 0)
            .map(|g| std::net::SocketAddrV4::new(g, config.net.gateway_server_port));
        let inner = Arc::new(Inner {
            udp,
            multicast,
            per_node: config.net.gateway_client_num.max(1),
            remote: RemoteRouter::new(cache),
            discovery,
            pool: DashMap::new(),
            known: DashMap::new(),
            routes: DashMap::new(),
            subscription: std::sync::Mutex::new(None),
        });
        let listener = Arc::new(PoolListener(Arc::downgrade(&inner)));
        let sub = inner
            .discovery
            .subscribe(services::GATEWAY_SERVER, listener)
            .await?;
        *inner.subscription.lock().unwrap_or_else(|e| e.into_inner()) = Some(sub);
        inner.refresh_nodes().await;
        Ok(PushSender { inner })
    }
}

/// Sends pushes through the gateways of an MPush cluster. Cheap to clone.
#[derive(Clone)]
pub struct PushSender {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PushSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushSender")
            .field("gateways", &self.inner.known.len())
            .finish()
    }
}

struct Inner {
    /// UDP gateway mode: the SDK socket replacing the TCP pool.
    udp: Option<udp::UdpGatewayClient>,
    /// UDP gateway mode: where broadcasts go when multicast is enabled.
    multicast: Option<std::net::SocketAddrV4>,
    per_node: usize,
    remote: RemoteRouter,
    discovery: Arc<dyn ServiceDiscovery>,
    /// host:port → live gateway connections.
    pool: DashMap<String, Vec<Arc<GatewayClient>>>,
    /// host:port of every discovered gateway.
    known: DashMap<String, ServiceNode>,
    /// userId → (fetched at, routes).
    routes: DashMap<String, (Instant, Arc<HashMap<ClientType, ClientLocation>>)>,
    subscription: std::sync::Mutex<Option<SubscriptionId>>,
}

/// Keeps the known gateways in step with discovery.
struct PoolListener(std::sync::Weak<Inner>);

impl ServiceListener for PoolListener {
    fn on_added(&self, node: &ServiceNode) {
        if let Some(inner) = self.0.upgrade() {
            inner.known.insert(node.host_and_port(), node.clone());
        }
    }

    fn on_removed(&self, node: &ServiceNode) {
        if let Some(inner) = self.0.upgrade() {
            let key = node.host_and_port();
            inner.known.remove(&key);
            if let Some((_, conns)) = inner.pool.remove(&key) {
                for c in conns {
                    c.close();
                }
            }
        }
    }
}

impl PushSender {
    /// A builder.
    pub fn builder() -> PushSenderBuilder {
        PushSenderBuilder::default()
    }

    /// Gateway servers currently known (host:port).
    pub fn gateways(&self) -> Vec<String> {
        self.inner.known.iter().map(|e| e.key().clone()).collect()
    }

    /// Sends a push. Returns one result per request: per route (client type) of each target
    /// user, or per gateway server for a broadcast. The context's callback, if any, is called
    /// exactly once for each result.
    pub async fn send(&self, ctx: PushContext) -> Vec<PushResult> {
        let results = if ctx.broadcast {
            self.inner.broadcast(&ctx).await
        } else {
            let users: Vec<String> = ctx
                .user_id
                .iter()
                .chain(ctx.user_ids.iter().flatten())
                .cloned()
                .collect();
            let all =
                futures::future::join_all(users.iter().map(|u| self.inner.send_user(&ctx, u)))
                    .await;
            all.into_iter().flatten().collect()
        };
        if let Some(cb) = &ctx.callback {
            for r in &results {
                cb(r);
            }
        }
        results
    }

    /// Stops watching discovery and closes every gateway connection.
    pub async fn stop(&self) {
        let sub = self
            .inner
            .subscription
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(id) = sub {
            let _ = self.inner.discovery.unsubscribe(id).await;
        }
        for e in self.inner.pool.iter() {
            for c in e.value() {
                c.close();
            }
        }
        self.inner.pool.clear();
        if let Some(udp) = &self.inner.udp {
            udp.close();
        }
    }
}

impl Inner {
    async fn refresh_nodes(&self) {
        match self.discovery.lookup(services::GATEWAY_SERVER).await {
            Ok(nodes) => {
                for n in nodes {
                    self.known.insert(n.host_and_port(), n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list gateway servers"),
        }
    }

    /// A live connection to the gateway at `addr` (one of `per_node`, at random),
    /// connecting if needed. `None` when the gateway is unknown or unreachable.
    async fn connection(&self, addr: &str) -> Option<Arc<GatewayClient>> {
        if !self.is_known(addr).await {
            return None;
        }
        if let Some(mut conns) = self.pool.get_mut(addr) {
            conns.retain(|c| !c.is_closed());
            if conns.len() >= self.per_node {
                let i = rand::random_range(0..conns.len());
                return Some(conns[i].clone());
            }
        }
        match GatewayClient::connect(addr).await {
            Ok(c) => {
                let c = Arc::new(c);
                self.pool
                    .entry(addr.to_string())
                    .or_default()
                    .push(c.clone());
                Some(c)
            }
            Err(e) => {
                tracing::warn!(gateway = addr, error = %e, "cannot connect to gateway");
                None
            }
        }
    }

    /// `true` if discovery lists the gateway at `addr`; an unknown one is looked up once
    /// before giving up (as the Java SDK).
    async fn is_known(&self, addr: &str) -> bool {
        if !self.known.contains_key(addr) {
            self.refresh_nodes().await;
        }
        self.known.contains_key(addr)
    }

    /// Sends a GATEWAY_PUSH to the gateway at `addr` over the configured transport and waits
    /// for its answer until `deadline`. `None` when the gateway is unknown or unreachable.
    async fn request(
        &self,
        addr: &str,
        flags: u8,
        msg: &GatewayPush,
        deadline: tokio::time::Instant,
    ) -> Option<GatewayReply> {
        if let Some(udp) = &self.udp {
            if !self.is_known(addr).await {
                return None;
            }
            return Some(udp.request(addr, flags, msg, deadline).await);
        }
        let conn = self.connection(addr).await?;
        Some(conn.request(flags, msg, deadline).await)
    }

    /// Sends a GATEWAY_PUSH without waiting; `None` when the gateway is unknown or
    /// unreachable, `Some(false)` when the send failed.
    async fn send_only(&self, addr: &str, flags: u8, msg: &GatewayPush) -> Option<bool> {
        if let Some(udp) = &self.udp {
            if !self.is_known(addr).await {
                return None;
            }
            return Some(udp.send_only(addr, flags, msg).await);
        }
        let conn = self.connection(addr).await?;
        Some(conn.send_only(flags, msg).await)
    }

    async fn user_routes(
        &self,
        user_id: &str,
        fresh: bool,
    ) -> Arc<HashMap<ClientType, ClientLocation>> {
        if !fresh {
            if let Some(e) = self.routes.get(user_id) {
                if e.0.elapsed() < ROUTE_CACHE_TTL {
                    return e.1.clone();
                }
            }
        }
        match self.remote.lookup_all(user_id).await {
            Ok(r) => {
                let r = Arc::new(r);
                self.routes
                    .insert(user_id.to_string(), (Instant::now(), r.clone()));
                r
            }
            Err(e) => {
                tracing::warn!(user = user_id, error = %e, "cannot read routes");
                Arc::new(HashMap::new())
            }
        }
    }

    async fn send_user(&self, ctx: &PushContext, user_id: &str) -> Vec<PushResult> {
        let routes = self.user_routes(user_id, false).await;
        if routes.is_empty() {
            return vec![PushResult::new(ResultCode::Offline, Some(user_id), None)];
        }
        let requests = routes
            .iter()
            .map(|(t, loc)| self.send_route(ctx, user_id, *t, loc.clone()));
        futures::future::join_all(requests).await
    }

    /// One request: a user's route of one client type, re-routed on ROUTER_CHANGE.
    async fn send_route(
        &self,
        ctx: &PushContext,
        user_id: &str,
        client_type: ClientType,
        mut loc: ClientLocation,
    ) -> PushResult {
        let deadline = tokio::time::Instant::now() + ctx.timeout;
        for _ in 0..=MAX_REDIRECTS {
            if !loc.is_online() {
                return PushResult::new(ResultCode::Offline, Some(user_id), Some(loc));
            }
            let msg = GatewayPush {
                user_id: Some(user_id.to_string()),
                client_type,
                // The gateway answers before the sender gives up.
                timeout: i32::try_from(ctx.timeout.as_millis().saturating_sub(500))
                    .unwrap_or(i32::MAX),
                content: Some(ctx.content.to_vec()),
                task_id: None,
                tags: ctx.tags.clone(),
                condition: None,
            };
            let addr = loc.host_and_port();
            let Some(reply) = self
                .request(&addr, ctx.ack_model.flags(), &msg, deadline)
                .await
            else {
                return PushResult::new(ResultCode::Failure, Some(user_id), Some(loc));
            };
            let code = match reply {
                GatewayReply::Ok(_) => ResultCode::Success,
                GatewayReply::Error(e) if e.code == ErrorCode::RouterChange.code() => {
                    self.routes.remove(user_id);
                    match self
                        .user_routes(user_id, true)
                        .await
                        .get(&client_type)
                        .cloned()
                    {
                        Some(next) => {
                            loc = next;
                            continue;
                        }
                        None => ResultCode::Offline,
                    }
                }
                GatewayReply::Error(e) if e.code == ErrorCode::Offline.code() => {
                    self.routes.remove(user_id);
                    ResultCode::Offline
                }
                GatewayReply::Error(_) | GatewayReply::Closed => ResultCode::Failure,
                GatewayReply::Timeout => ResultCode::Timeout,
            };
            return PushResult::new(code, Some(user_id), Some(loc)).with_client_type(client_type);
        }
        PushResult::new(ResultCode::Failure, Some(user_id), Some(loc)).with_client_type(client_type)
    }

    /// Broadcast: one GATEWAY_PUSH to every known gateway; one result per gateway, each
    /// reported once (quirk Q6 fixed). With a task id the result is SUCCESS once sent:
    /// progress is tracked in the cache (§9.6).
    async fn broadcast(&self, ctx: &PushContext) -> Vec<PushResult> {
        self.refresh_nodes().await;
        let addrs: Vec<String> = self.known.iter().map(|e| e.key().clone()).collect();
        let deadline = tokio::time::Instant::now() + ctx.timeout;
        let msg = GatewayPush {
            user_id: None,
            client_type: 0,
            timeout: 0,
            content: Some(ctx.content.to_vec()),
            task_id: ctx.task_id.clone(),
            tags: ctx.tags.clone(),
            condition: ctx.condition.clone(),
        };
        if let (Some(udp), Some(group)) = (&self.udp, self.multicast) {
            return udp.broadcast_multicast(ctx, &msg, group, &addrs).await;
        }
        let sends = addrs.into_iter().map(|addr| {
            let msg = &msg;
            async move {
                let loc = ClientLocation {
                    host: addr
                        .rsplit_once(':')
                        .map_or(addr.clone(), |(h, _)| h.to_string()),
                    port: addr
                        .rsplit_once(':')
                        .and_then(|(_, p)| p.parse().ok())
                        .unwrap_or(0),
                    ..Default::default()
                };
                if ctx.task_id.is_some() {
                    let sent = self.send_only(&addr, ctx.ack_model.flags(), msg).await;
                    let code = if sent == Some(true) {
                        ResultCode::Success
                    } else {
                        ResultCode::Failure
                    };
                    return PushResult::new(code, None, Some(loc));
                }
                let reply = self
                    .request(&addr, ctx.ack_model.flags(), msg, deadline)
                    .await;
                let code = match reply {
                    Some(GatewayReply::Ok(_)) => ResultCode::Success,
                    Some(GatewayReply::Error(e)) => {
                        let mut r = PushResult::new(ResultCode::Failure, None, Some(loc));
                        r.error = e.reason;
                        return r;
                    }
                    None | Some(GatewayReply::Closed) => ResultCode::Failure,
                    Some(GatewayReply::Timeout) => ResultCode::Timeout,
                };
                PushResult::new(code, None, Some(loc))
            }
        });
        futures::future::join_all(sends).await
    }
}
