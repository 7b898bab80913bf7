//! `PushSender`: the server-side SDK a business backend uses to push (spec §9.3).
//!
//! It finds the server holding each user's connection from the routes in the cache
//! (`mp:ur:<userId>`), and sends GATEWAY_PUSH over a pool of gateway connections kept in
//! step with service discovery (`/cluster/gs`). It speaks the same bytes as MPush's Java
//! `PushSender`, so it works against Java servers too.
//!
//! - `context`: what to push ([`PushContext`], [`PushMsg`]) and the outcome ([`PushResult`]).
//! - `gateway`: one gateway TCP connection with request/response correlation.
//! - `progress`: broadcast task progress and control.
//! - `udp`: the UDP transport used instead when `mp.net.gateway-server-net = udp`.

mod context;
mod gateway;
mod progress;
mod udp;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use futures::StreamExt;
use tracing::Instrument;

pub use context::{BroadcastBuilder, PushContext, PushMsg, PushResult, PushTarget, ResultCode};
/// One raw TCP gateway connection (GATEWAY_PUSH in, OK/ERROR out): what `PushSender` pools;
/// public for tools and tests that speak the gateway protocol directly.
pub use gateway::{GatewayClient, GatewayReply};
pub use progress::TaskProgress;

use crate::config::MPushConfig;
use crate::protocol::message::{ErrorCode, GatewayPush};
use crate::router::{ClientLocation, RemoteRouter};
use crate::spi::registry::Backends;
use crate::spi::{
    CacheManager, ClientType, ServiceDiscovery, ServiceListener, ServiceNode, SpiError,
    SubscriptionId, services,
};

/// How long a user's routes stay cached in the sender by default (as the Java SDK: 5 min).
/// Any offline outcome or ROUTER_CHANGE answer invalidates the entry at once.
pub const DEFAULT_ROUTE_CACHE_TTL: Duration = Duration::from_secs(300);
/// Users whose routes the sender caches by default; the least recently used go first.
pub const DEFAULT_ROUTE_CACHE_CAPACITY: u64 = 100_000;
/// Users of one multi-user [`PushSender::send`] handled at once by default (route lookup
/// plus pushes); the rest wait, so one big send cannot open unbounded work.
pub const DEFAULT_MAX_CONCURRENT_USERS: usize = 256;
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
    /// The TLS files of `mp.net.gateway-client-tls` could not be loaded.
    #[error("cannot set up TLS to the gateways (mp.net.gateway-client-tls): {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// Builds a [`PushSender`].
pub struct PushSenderBuilder {
    backends: Backends,
    tls: Option<crate::tls::ClientTls>,
    route_cache_capacity: u64,
    route_cache_ttl: Duration,
    max_concurrent_users: usize,
}

impl Default for PushSenderBuilder {
    fn default() -> Self {
        Self {
            backends: Backends::default(),
            tls: None,
            route_cache_capacity: DEFAULT_ROUTE_CACHE_CAPACITY,
            route_cache_ttl: DEFAULT_ROUTE_CACHE_TTL,
            max_concurrent_users: DEFAULT_MAX_CONCURRENT_USERS,
        }
    }
}

debug_fields!(PushSenderBuilder {
    route_cache_capacity,
    route_cache_ttl,
    max_concurrent_users
});

impl PushSenderBuilder {
    setters! {
        /// Configuration (`mp.net.gateway-client-num`, backend names).
        config(config: MPushConfig) => backends.set_config(config);
        /// TLS to the gateways (overrides `mp.net.gateway-client-tls`): the CA to trust and,
        /// for gateways with `client-ca`, the client certificate.
        tls(tls: crate::tls::ClientTls) => tls = Some(tls);
        /// The cache holding the routes (default: the registered backend).
        cache_manager(cache: Arc<dyn CacheManager>) => backends.set_cache_manager(cache);
        /// The discovery listing gateway servers (default: the registered backend).
        discovery(discovery: Arc<dyn ServiceDiscovery>) => backends.set_discovery(discovery);
        /// How many users' routes are cached at most (default
        /// [`DEFAULT_ROUTE_CACHE_CAPACITY`]); 0 disables the cache (every push reads the
        /// routes).
        route_cache_capacity(users: u64) => route_cache_capacity = users;
        /// How long a user's routes are cached at most (default
        /// [`DEFAULT_ROUTE_CACHE_TTL`]); zero disables the cache.
        route_cache_ttl(ttl: Duration) => route_cache_ttl = ttl;
        /// How many users of one multi-user send are handled at once (default
        /// [`DEFAULT_MAX_CONCURRENT_USERS`]; at least 1).
        max_concurrent_users(n: usize) => max_concurrent_users = n.max(1);
    }

    /// Creates missing backends, discovers the gateways and connects to them.
    pub async fn start(self) -> Result<PushSender, SenderError> {
        let config = self.backends.config();
        let tls = match self.tls {
            Some(tls) => Some(tls),
            None if config.net.gateway_client_tls.enabled() => Some(
                crate::tls::ClientTls::from_config(&config.net.gateway_client_tls)?,
            ),
            None => None,
        };
        let cache = self.backends.cache_manager(&config).await?;
        let discovery = self.backends.discovery(&config).await?;
        // The transport follows the servers' gateway mode: one UDP socket in UDP mode.
        let udp = if config.net.gateway_server_net == "udp" {
            Some(udp::UdpGatewayClient::bind(&config.net).await?)
        } else {
            None
        };
        let multicast = udp::multicast_group(&config.net)
            .filter(|_| config.net.gateway_server_port != 0)
            .map(|g| std::net::SocketAddrV4::new(g, config.net.gateway_server_port));
        // Capacity 0 means no cache at all (moka would still serve an entry until its
        // eviction runs).
        let routes =
            (self.route_cache_capacity > 0 && !self.route_cache_ttl.is_zero()).then(|| {
                moka::sync::Cache::builder()
                    .max_capacity(self.route_cache_capacity)
                    .time_to_live(self.route_cache_ttl)
                    .build()
            });
        let inner = Arc::new(Inner {
            tls,
            udp,
            multicast,
            per_node: config.net.gateway_client_num.max(1),
            max_concurrent_users: self.max_concurrent_users,
            remote: RemoteRouter::new(cache),
            discovery,
            pool: DashMap::new(),
            known: DashMap::new(),
            refresh: tokio::sync::Mutex::new(None),
            refresh_gen: AtomicU64::new(0),
            routes,
            subscription: std::sync::Mutex::new(None),
        });
        let listener = Arc::new(PoolListener(Arc::downgrade(&inner)));
        let sub = inner
            .discovery
            .subscribe(services::GATEWAY_SERVER, listener)
            .await?;
        *inner.subscription.lock().unwrap_or_else(|e| e.into_inner()) = Some(sub);
        if let Err(e) = inner.refresh_nodes().await {
            tracing::warn!(error = %e, "cannot list gateway servers");
        }
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

/// The live connections to one gateway server, and the lock that lets only one task at a
/// time open a new one (single-flight: concurrent first requests share the connection one
/// of them opens instead of each opening its own).
#[derive(Debug, Default)]
struct NodePool {
    conns: std::sync::Mutex<Vec<Arc<GatewayClient>>>,
    connecting: tokio::sync::Mutex<()>,
    /// Bumped on every failed connect, with the reason kept beside it: tasks that queued
    /// behind a failed attempt fail with it instead of each waiting out its own timeout.
    failures: AtomicU64,
    last_error: std::sync::Mutex<String>,
}

impl NodePool {
    fn conns(&self) -> std::sync::MutexGuard<'_, Vec<Arc<GatewayClient>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One of the open connections at random, once there are `per_node` of them.
    fn pick(&self, per_node: usize) -> Option<Arc<GatewayClient>> {
        let mut conns = self.conns();
        conns.retain(|c| !c.is_closed());
        if conns.len() >= per_node {
            let i = rand::random_range(0..conns.len());
            return Some(conns[i].clone());
        }
        None
    }

    fn close(&self) {
        for c in self.conns().drain(..) {
            c.close();
        }
    }
}

/// Why a request could not be sent to a route's gateway.
#[derive(Debug)]
enum Unsent {
    /// Discovery answered and does not list the gateway: its node left the registry (a
    /// stopped or dead server), so the route is stale and the user is offline.
    Gone,
    /// The gateway could not be reached, or discovery could not be read.
    Failed(String),
}

struct Inner {
    /// TLS to the gateways (`mp.net.gateway-client-tls` or the builder's).
    tls: Option<crate::tls::ClientTls>,
    /// UDP gateway mode: the SDK socket replacing the TCP pool.
    udp: Option<udp::UdpGatewayClient>,
    /// UDP gateway mode: where broadcasts go when multicast is enabled.
    multicast: Option<std::net::SocketAddrV4>,
    per_node: usize,
    max_concurrent_users: usize,
    remote: RemoteRouter,
    discovery: Arc<dyn ServiceDiscovery>,
    /// host:port → live gateway connections.
    pool: DashMap<String, Arc<NodePool>>,
    /// host:port of every discovered gateway.
    known: DashMap<String, ServiceNode>,
    /// Single-flight discovery lookups, holding the last one's error (if it failed).
    refresh: tokio::sync::Mutex<Option<String>>,
    /// Completed discovery lookups, so a task that waited for one reuses its answer.
    refresh_gen: AtomicU64,
    /// userId → routes with at least one online route (bounded by size and TTL); `None`
    /// when caching is off.
    routes: Option<moka::sync::Cache<String, Arc<HashMap<ClientType, ClientLocation>>>>,
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
            inner.forget(&node.host_and_port());
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

    /// Open TCP connections to the gateway at `addr` (host:port). At most
    /// `mp.net.gateway-client-num` per gateway.
    pub fn gateway_connections(&self, addr: &str) -> usize {
        self.inner.pool.get(addr).map_or(0, |n| {
            let mut conns = n.conns();
            conns.retain(|c| !c.is_closed());
            conns.len()
        })
    }

    /// Sends a push (a [`PushContext`], or a broadcast's builder). Returns one result per
    /// request: per route (client type) of each target user, or per gateway server for a
    /// broadcast. Users of a multi-user send are handled a bounded number at a time (see
    /// [`PushSenderBuilder::max_concurrent_users`]), results in user order.
    ///
    /// Traced as a `mpush.push.send` span (level DEBUG) with one `mpush.push.request` child
    /// per GATEWAY_PUSH, which carries the push's `trace_id` (see
    /// [`GatewayTraceId`](crate::protocol::message::GatewayTraceId)) and a
    /// `mpush.push.result` child per answer.
    pub async fn send(&self, ctx: impl Into<PushContext>) -> Vec<PushResult> {
        let ctx = ctx.into();
        let target = match &ctx.target {
            PushTarget::User(_) => "user",
            PushTarget::Users(_) => "users",
            PushTarget::Broadcast { .. } => "broadcast",
        };
        let span = tracing::debug_span!(
            "mpush.push.send",
            target,
            ack = ?ctx.ack_model,
            results = tracing::field::Empty,
        );
        let results = self.send_traced(&ctx).instrument(span.clone()).await;
        span.record("results", results.len());
        results
    }

    async fn send_traced(&self, ctx: &PushContext) -> Vec<PushResult> {
        let users: &[String] = match &ctx.target {
            PushTarget::Broadcast { .. } => return self.inner.broadcast(ctx).await,
            PushTarget::User(u) => std::slice::from_ref(u),
            PushTarget::Users(us) => us,
        };
        // Owned ids: a closure over borrowed ones makes the future lose `Send`.
        let inner = &self.inner;
        let all: Vec<Vec<PushResult>> = futures::stream::iter(users.to_vec())
            .map(|u| async move { inner.send_user(ctx, &u).await })
            .buffered(self.inner.max_concurrent_users)
            .collect()
            .await;
        all.into_iter().flatten().collect()
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
            e.value().close();
        }
        self.inner.pool.clear();
        if let Some(udp) = &self.inner.udp {
            udp.close();
        }
    }
}

impl Inner {
    /// Forgets the cached routes of `user_id`.
    fn invalidate(&self, user_id: &str) {
        if let Some(c) = &self.routes {
            c.invalidate(user_id);
        }
    }

    /// Drops a gateway that left the registry, closing its connections.
    fn forget(&self, addr: &str) {
        self.known.remove(addr);
        if let Some((_, node)) = self.pool.remove(addr) {
            node.close();
        }
    }

    /// Replaces the known gateways with a fresh discovery snapshot. Lookups are
    /// single-flight: a task that waited while another looked up takes that answer.
    async fn refresh_nodes(&self) -> Result<(), String> {
        let seen = self.refresh_gen.load(Ordering::Acquire);
        let mut last = self.refresh.lock().await;
        if self.refresh_gen.load(Ordering::Acquire) != seen {
            return last.clone().map_or(Ok(()), Err);
        }
        let result = match self.discovery.lookup(services::GATEWAY_SERVER).await {
            Ok(nodes) => {
                let fresh: HashSet<String> = nodes.iter().map(ServiceNode::host_and_port).collect();
                let stale: Vec<String> = self
                    .known
                    .iter()
                    .filter(|e| !fresh.contains(e.key()))
                    .map(|e| e.key().clone())
                    .collect();
                for addr in stale {
                    self.forget(&addr);
                }
                for n in nodes {
                    self.known.insert(n.host_and_port(), n);
                }
                Ok(())
            }
            Err(e) => Err(format!("cannot list gateway servers: {e}")),
        };
        *last = result.clone().err();
        self.refresh_gen.fetch_add(1, Ordering::AcqRel);
        result
    }

    /// Whether discovery lists the gateway at `addr`; an unknown one is looked up once
    /// before giving up (as the Java SDK). Only an answer from discovery makes it
    /// [`Unsent::Gone`]; a discovery error is [`Unsent::Failed`].
    async fn check_known(&self, addr: &str) -> Result<(), Unsent> {
        if self.known.contains_key(addr) {
            return Ok(());
        }
        self.refresh_nodes().await.map_err(Unsent::Failed)?;
        if self.known.contains_key(addr) {
            Ok(())
        } else {
            Err(Unsent::Gone)
        }
    }

    /// After a failed connect: [`Unsent::Gone`] if a fresh discovery lookup no longer lists
    /// the gateway (it died and its node expired), else the failure.
    async fn classify_unreachable(&self, addr: &str, reason: String) -> Unsent {
        self.known.remove(addr);
        match self.check_known(addr).await {
            Err(Unsent::Gone) => Unsent::Gone,
            _ => Unsent::Failed(reason),
        }
    }

    /// A live connection to the gateway at `addr` (one of `per_node`, at random),
    /// connecting if needed; one connect at a time per gateway.
    async fn connection(&self, addr: &str) -> Result<Arc<GatewayClient>, Unsent> {
        self.check_known(addr).await?;
        let node = self.pool.entry(addr.to_string()).or_default().clone();
        if let Some(c) = node.pick(self.per_node) {
            return Ok(c);
        }
        let failures = node.failures.load(Ordering::Acquire);
        let reason = {
            let _one_at_a_time = node.connecting.lock().await;
            if let Some(c) = node.pick(self.per_node) {
                return Ok(c);
            }
            if node.failures.load(Ordering::Acquire) != failures {
                node.last_error
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            } else {
                match GatewayClient::connect(addr, self.tls.as_ref()).await {
                    Ok(c) => {
                        let c = Arc::new(c);
                        node.conns().push(c.clone());
                        return Ok(c);
                    }
                    Err(e) => {
                        tracing::warn!(gateway = addr, error = %e, "cannot connect to gateway");
                        let reason = format!("cannot connect to gateway {addr}: {e}");
                        reason.clone_into(
                            &mut node.last_error.lock().unwrap_or_else(|e| e.into_inner()),
                        );
                        node.failures.fetch_add(1, Ordering::AcqRel);
                        reason
                    }
                }
            }
        };
        Err(self.classify_unreachable(addr, reason).await)
    }

    /// Sends a GATEWAY_PUSH to the gateway at `addr` over the configured transport and waits
    /// for its answer until `deadline`.
    async fn request(
        &self,
        addr: &str,
        flags: u8,
        msg: &GatewayPush,
        deadline: tokio::time::Instant,
    ) -> Result<GatewayReply, Unsent> {
        if let Some(udp) = &self.udp {
            self.check_known(addr).await?;
            return Ok(udp.request(addr, flags, msg, deadline).await);
        }
        let conn = self.connection(addr).await?;
        Ok(conn.request(flags, msg, deadline).await)
    }

    /// Sends a GATEWAY_PUSH without waiting; `Ok(false)` when the send failed.
    async fn send_only(&self, addr: &str, flags: u8, msg: &GatewayPush) -> Result<bool, Unsent> {
        if let Some(udp) = &self.udp {
            self.check_known(addr).await?;
            return Ok(udp.send_only(addr, flags, msg).await);
        }
        let conn = self.connection(addr).await?;
        Ok(conn.send_only(flags, msg).await)
    }

    /// The user's routes, from the cache unless `fresh`. Only sets with an online route are
    /// cached: an offline answer must never outlive the user's next bind (spec §9.3).
    async fn user_routes(
        &self,
        user_id: &str,
        fresh: bool,
    ) -> Result<Arc<HashMap<ClientType, ClientLocation>>, SpiError> {
        let Some(cache) = &self.routes else {
            return Ok(Arc::new(self.remote.lookup_all(user_id).await?));
        };
        if !fresh {
            if let Some(r) = cache.get(user_id) {
                return Ok(r);
            }
        }
        let r = Arc::new(self.remote.lookup_all(user_id).await?);
        if r.values().any(ClientLocation::is_online) {
            cache.insert(user_id.to_string(), r.clone());
        } else {
            cache.invalidate(user_id);
        }
        Ok(r)
    }

    async fn send_user(&self, ctx: &PushContext, user_id: &str) -> Vec<PushResult> {
        let routes = match self.user_routes(user_id, false).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(user = user_id, error = %e, "cannot read routes");
                return vec![
                    PushResult::new(ResultCode::Failure, Some(user_id), None)
                        .with_error(format!("cannot read routes: {e}")),
                ];
            }
        };
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
        let deadline = context::deadline(ctx.timeout);
        let result = |code, loc| {
            PushResult::new(code, Some(user_id), Some(loc)).with_client_type(client_type)
        };
        for _ in 0..=MAX_REDIRECTS {
            if !loc.is_online() {
                self.invalidate(user_id);
                return result(ResultCode::Offline, loc);
            }
            let msg = GatewayPush {
                user_id: Some(user_id.to_string()),
                client_type: client_type.code(),
                // The gateway answers before the sender gives up.
                timeout: i32::try_from(ctx.timeout.as_millis().saturating_sub(500))
                    .unwrap_or(i32::MAX),
                content: Some(ctx.content.to_vec()),
                task_id: None,
                // Tags filter broadcasts only; a user push carries none.
                tags: None,
                condition: None,
            };
            let addr = loc.host_and_port();
            // One span per GATEWAY_PUSH (a redirect is another request, with its own ids).
            let span = tracing::debug_span!(
                "mpush.push.request",
                user_id,
                client_type = client_type.code(),
                gateway = %addr,
                session_id = tracing::field::Empty,
                trace_id = tracing::field::Empty,
            );
            let reply = match self
                .request(&addr, ctx.ack_model.flags(), &msg, deadline)
                .instrument(span.clone())
                .await
            {
                Ok(reply) => reply,
                Err(Unsent::Gone) => {
                    self.invalidate(user_id);
                    return result(ResultCode::Offline, loc);
                }
                Err(Unsent::Failed(reason)) => {
                    return result(ResultCode::Failure, loc).with_error(reason);
                }
            };
            let code = match reply {
                GatewayReply::Ok(_) => ResultCode::Success,
                GatewayReply::Error(e) if e.code == ErrorCode::RouterChange.code() => {
                    self.invalidate(user_id);
                    match self.user_routes(user_id, true).await {
                        Ok(routes) => match routes.get(&client_type) {
                            Some(next) => {
                                loc = next.clone();
                                continue;
                            }
                            None => ResultCode::Offline,
                        },
                        Err(e) => {
                            return result(ResultCode::Failure, loc)
                                .with_error(format!("cannot read routes: {e}"));
                        }
                    }
                }
                GatewayReply::Error(e) if e.code == ErrorCode::Offline.code() => {
                    self.invalidate(user_id);
                    ResultCode::Offline
                }
                GatewayReply::Error(e) => {
                    return result(ResultCode::Failure, loc).with_error(
                        e.reason
                            .unwrap_or_else(|| format!("gateway error {}", e.code)),
                    );
                }
                GatewayReply::Closed => {
                    // A gateway that died takes its connections with it: if its node has
                    // also left the registry, the route is stale (as for a failed connect).
                    let reason = format!("gateway connection to {addr} closed");
                    return match self.classify_unreachable(&addr, reason).await {
                        Unsent::Gone => {
                            self.invalidate(user_id);
                            result(ResultCode::Offline, loc)
                        }
                        Unsent::Failed(reason) => {
                            result(ResultCode::Failure, loc).with_error(reason)
                        }
                    };
                }
                GatewayReply::Timeout => ResultCode::Timeout,
            };
            span.in_scope(|| {
                tracing::debug_span!("mpush.push.result", code = ?code).in_scope(|| {
                    tracing::debug!("push answered");
                })
            });
            return result(code, loc);
        }
        result(ResultCode::Failure, loc).with_error("too many ROUTER_CHANGE redirects".into())
    }

    /// Broadcast: one GATEWAY_PUSH to every known gateway; one result per gateway, each
    /// reported once (quirk Q6 fixed). With a task id the result is SUCCESS once sent:
    /// progress is tracked in the cache (§9.6).
    async fn broadcast(&self, ctx: &PushContext) -> Vec<PushResult> {
        if let Err(e) = self.refresh_nodes().await {
            tracing::warn!(error = %e, "broadcast goes to the gateways known before");
        }
        let addrs: Vec<String> = self.known.iter().map(|e| e.key().clone()).collect();
        let deadline = context::deadline(ctx.timeout);
        let msg = GatewayPush {
            user_id: None,
            client_type: 0,
            timeout: 0,
            content: Some(ctx.content.to_vec()),
            task_id: ctx.task_id().map(str::to_string),
            tags: ctx.tags().map(<[String]>::to_vec),
            condition: ctx.condition().map(str::to_string),
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
                let failure = |reason: String| {
                    PushResult::new(ResultCode::Failure, None, Some(loc.clone())).with_error(reason)
                };
                let unsent = |u: Unsent| match u {
                    Unsent::Gone => failure(format!("gateway {addr} left the registry")),
                    Unsent::Failed(reason) => failure(reason),
                };
                if ctx.task_id().is_some() {
                    return match self.send_only(&addr, ctx.ack_model.flags(), msg).await {
                        Ok(true) => PushResult::new(ResultCode::Success, None, Some(loc)),
                        Ok(false) => failure(format!("cannot send to gateway {addr}")),
                        Err(u) => unsent(u),
                    };
                }
                match self
                    .request(&addr, ctx.ack_model.flags(), msg, deadline)
                    .await
                {
                    Ok(GatewayReply::Ok(_)) => {
                        PushResult::new(ResultCode::Success, None, Some(loc))
                    }
                    Ok(GatewayReply::Error(e)) => {
                        let mut r = PushResult::new(ResultCode::Failure, None, Some(loc));
                        r.error = e.reason;
                        r
                    }
                    Ok(GatewayReply::Closed) => {
                        failure(format!("gateway connection to {addr} closed"))
                    }
                    Ok(GatewayReply::Timeout) => {
                        PushResult::new(ResultCode::Timeout, None, Some(loc))
                    }
                    Err(u) => unsent(u),
                }
            }
        });
        futures::future::join_all(sends).await
    }
}
