//! The server: connection server (TCP), gateway server, and the [`MPushServer`] builder.

mod admin_http;
mod admission;
mod bind_locks;
mod bridge;
mod checks;
mod cluster;
mod connection;
mod console;
pub(crate) mod context;
mod drain;
mod gateway;
mod gateway_udp;
pub(crate) mod handler;
mod http_proxy;
mod metered;
mod park;
mod session;
mod tls;
mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpListener;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admin_http::MAX_BODY as ADMIN_HTTP_MAX_BODY;
pub(crate) use connection::Connection;
pub use console::{MAX_CONNECTIONS as CONSOLE_MAX_CONNECTIONS, MAX_LINE as CONSOLE_MAX_LINE};
use context::ServerContext;
use drain::Registration;
pub use drain::{DrainOptions, DrainReport};
pub use gateway::GatewayLoad;
pub use session::SessionInfo;

use crate::config::{ConfigError, MPushConfig};
use crate::protocol::ProtocolError;
use crate::protocol::crypto::{RsaCipher, RsaKeys};
use crate::push::AckModel;
use crate::router::{KickTransport, RouterCenter};
use crate::spi::registry::Backends;
use crate::spi::{
    AllowAllBindValidator, BindValidator, CacheManager, ClientClassifier, ClientType,
    DefaultClientClassifier, DefaultPushHandler, DnsMappingManager, ExecutorFactory, MQClient,
    NoopPushListener, NoopServerEventListener, PushHandler, PushListener, PushOutcome,
    ServerEventListener, ServiceDiscovery, ServiceNode, ServiceRegistry, SpiError,
    TokioExecutorFactory, services,
};

/// Errors starting, running or stopping a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The RSA keys could not be loaded. Built only where the keys are loaded: other
    /// protocol errors are not key problems.
    #[error("cannot load RSA keys (mp.security): {source}")]
    Keys {
        /// Why the keys were refused.
        source: ProtocolError,
    },
    /// A backend could not be created or failed.
    #[error(transparent)]
    Spi(#[from] SpiError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} for the {what}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A listener's TLS certificate, key or CA could not be loaded.
    #[error("cannot set up TLS for the {what}: {source}")]
    Tls {
        /// Which listener.
        what: &'static str,
        /// Why.
        source: crate::tls::TlsError,
    },
}

/// The application hooks, defaulted to MPush's behaviour.
pub(crate) struct Hooks {
    pub bind_validator: Arc<dyn BindValidator>,
    pub classifier: Arc<dyn ClientClassifier>,
    pub push_handler: Arc<dyn PushHandler>,
    pub push_listener: Arc<dyn PushListener>,
    pub event_listener: Arc<dyn ServerEventListener>,
    pub executor: Arc<dyn ExecutorFactory>,
    /// DNS mappings consulted before `mp.http.dns-mapping` (HTTP proxy, §12).
    pub dns_mapping: Option<Arc<dyn DnsMappingManager>>,
}

/// Builds and starts an MPush server ([`MPushServer::builder`]). Backends not given here
/// are created from the `inventory` registry by the names in `mp.spi.*` (or the
/// highest-priority one linked in) at [`start`](Self::start).
///
/// `start` takes `&self`: a start that failed (a port in use, a backend down) can simply be
/// called again, and one builder can start the same server again after a shutdown.
#[derive(Default, Clone)]
pub struct MPushServerBuilder {
    backends: Backends,
    bind_validator: Option<Arc<dyn BindValidator>>,
    classifier: Option<Arc<dyn ClientClassifier>>,
    push_handler: Option<Arc<dyn PushHandler>>,
    push_listener: Option<Arc<dyn PushListener>>,
    event_listener: Option<Arc<dyn ServerEventListener>>,
    executor: Option<Arc<dyn ExecutorFactory>>,
    dns_mapping: Option<Arc<dyn DnsMappingManager>>,
    admin_http_port: Option<u16>,
}

debug_fields!(MPushServerBuilder { backends });

impl MPushServerBuilder {
    setters! {
        /// The configuration (default: MPush's reference defaults).
        config(config: MPushConfig) => backends.set_config(config);
        /// Uses this cache instead of a registered backend.
        cache_manager(cache: Arc<dyn CacheManager>) => backends.set_cache_manager(cache);
        /// Uses this MQ client instead of a registered backend.
        mq_client(mq: Arc<dyn MQClient>) => backends.set_mq_client(mq);
        /// Uses this registry and discovery instead of a registered backend.
        service_registry(registry: Arc<dyn ServiceRegistry>, discovery: Arc<dyn ServiceDiscovery>)
            => backends.set_service_registry(registry, discovery);
        /// Decides who may bind (default: everyone).
        bind_validator(v: Arc<dyn BindValidator>) => bind_validator = Some(v);
        /// Maps osName to client type (default: MPush's table).
        client_classifier(c: Arc<dyn ClientClassifier>) => classifier = Some(c);
        /// Handles upstream pushes (default: log).
        push_handler(h: Arc<dyn PushHandler>) => push_handler = Some(h);
        /// Observes push outcomes (default: none).
        push_listener(l: Arc<dyn PushListener>) => push_listener = Some(l);
        /// Observes server events (default: none).
        event_listener(l: Arc<dyn ServerEventListener>) => event_listener = Some(l);
        /// Where work runs (default: the runtime that calls `start`).
        executor(e: Arc<dyn ExecutorFactory>) => executor = Some(e);
        /// DNS mappings for the HTTP proxy, consulted before `mp.http.dns-mapping` (default:
        /// the backend named by `mp.spi.dns-mapping-manager`, e.g. `zk`, or none).
        dns_mapping_manager(d: Arc<dyn DnsMappingManager>) => dns_mapping = Some(d);
        /// Serves the HTTP admin API on this port instead of `mp.net.admin-http-port`; 0 here
        /// means any free port (read it back with [`RunningServer::admin_http_addr`]), which
        /// is what tests use, while 0 in the config disables the API.
        admin_http_port(port: u16) => admin_http_port = Some(port);
    }

    fn hooks(&self) -> Hooks {
        // The hook given to the builder, or MPush's default.
        fn or<T: ?Sized>(given: &Option<Arc<T>>, default: impl FnOnce() -> Arc<T>) -> Arc<T> {
            given.clone().unwrap_or_else(default)
        }
        Hooks {
            bind_validator: or(&self.bind_validator, || Arc::new(AllowAllBindValidator)),
            classifier: or(&self.classifier, || Arc::new(DefaultClientClassifier)),
            push_handler: or(&self.push_handler, || Arc::new(DefaultPushHandler)),
            push_listener: or(&self.push_listener, || Arc::new(NoopPushListener)),
            event_listener: or(&self.event_listener, || Arc::new(NoopServerEventListener)),
            executor: or(&self.executor, || Arc::new(TokioExecutorFactory::current())),
            dns_mapping: self.dns_mapping.clone(),
        }
    }

    /// Validates the configuration, loads the RSA keys, creates missing backends, binds the
    /// listeners, registers the nodes and starts serving. On error nothing is left running
    /// or registered, and `start` can be called again.
    pub async fn start(&self) -> Result<RunningServer, ServerError> {
        let config = self.backends.config();
        config.validate()?;
        let keys = RsaKeys::from_base64(&config.security.private_key, &config.security.public_key)
            .and_then(|k| k.check_pair().map(|()| k))
            .map_err(|source| ServerError::Keys { source })?;
        let rsa = Arc::new(RsaCipher::new(Arc::new(keys)));
        // Before any backend or listener: a missing certificate fails the start at once.
        let tls_set = tls::TlsSet::load(&config.net)?;
        crate::address::log_addresses(&config.net);
        config.log_startup_notes();
        // Wrapped once here, so every backend call of this server is counted and timed.
        let cache: Arc<dyn CacheManager> = Arc::new(metered::MeteredCache(
            self.backends.cache_manager(&config).await?,
        ));
        let mq: Arc<dyn MQClient> =
            Arc::new(metered::MeteredMq(self.backends.mq_client(&config).await?));
        let service = self.backends.service_backend(&config).await?;
        let mut hooks = self.hooks();
        if hooks.dns_mapping.is_none() && config.http.proxy_enabled {
            hooks.dns_mapping =
                crate::spi::registry::create_dns_mapping_manager(config.clone()).await?;
        }

        let net = &config.net;
        let (connect_listener, connect_addr) = bind_listener(
            "connection server",
            &net.connect_server_bind_ip,
            net.connect_server_port,
        )
        .await?;
        // UDP gateway mode replaces the TCP gateway listener with one UDP socket (§9.7).
        let udp_mode = net.gateway_server_net == "udp";
        let (gateway_listener, gateway_udp, gateway_addr) = if udp_mode {
            let (socket, addr) = gateway_udp::bind(net).await?;
            (None, Some(socket), addr)
        } else {
            let ip = &net.gateway_server_bind_ip;
            let (l, addr) = bind_listener("gateway server", ip, net.gateway_server_port).await?;
            (Some(l), None, addr)
        };
        // The WebSocket listener (§1.9) shares the client bind IP; port 0 means disabled.
        let ws_port = (net.ws_server_port > 0).then_some(net.ws_server_port);
        let ws_listener =
            bind_if_enabled("websocket server", &net.connect_server_bind_ip, ws_port).await?;
        let ws_addr = ws_listener.as_ref().map(|(_, a)| *a);
        // The admin console (§13): on its own bind host, loopback unless configured.
        let admin_port = (net.admin_server_port > 0).then_some(net.admin_server_port);
        let admin_listener =
            bind_if_enabled("admin console", &net.admin_server_host, admin_port).await?;
        let admin_addr = admin_listener.as_ref().map(|(_, a)| *a);
        // The HTTP admin API: config port 0 disables it; the builder's port 0 is any port.
        let admin_http_port = match self.admin_http_port {
            Some(port) => Some(port),
            None => (net.admin_http_port > 0).then_some(net.admin_http_port),
        };
        let admin_http_listener =
            bind_if_enabled("admin HTTP API", &net.admin_http_host, admin_http_port).await?;
        let admin_http_addr = admin_http_listener.as_ref().map(|(_, a)| *a);
        let gateway_host = crate::address::gateway_register_ip(net);
        let router = RouterCenter::new(
            cache.clone(),
            mq.clone(),
            gateway_host.clone(),
            gateway_addr.port(),
            crate::address::public_ip(net),
        );
        // In UDP mode cross-server kicks travel as GATEWAY_KICK datagrams (§8.4).
        let router = match &gateway_udp {
            Some(s) => router.with_kick_transport(KickTransport::Udp(s.clone())),
            None => router,
        };
        let ctx = Arc::new(ServerContext::new(
            config.clone(),
            rsa,
            cache,
            mq,
            hooks,
            router,
        ));

        let tasks = TaskTracker::new();
        let io = ctx.hooks.executor.handle(crate::spi::ExecutorRole::Io);
        io.spawn(tasks.track_future(tls::watch(ctx.clone(), tls_set.clone())));
        io.spawn(tasks.track_future(connection::close_all_on_shutdown(ctx.clone())));
        io.spawn(tasks.track_future(checks::run(ctx.clone())));
        io.spawn(tasks.track_future(park::run(ctx.clone(), io.clone(), tasks.clone())));
        let listening = |tls: &Option<Arc<crate::tls::ReloadableTls>>| Listening {
            ctx: ctx.clone(),
            tasks: tasks.clone(),
            tls: tls.clone(),
        };
        let clients = listening(&tls_set.connect);
        io.spawn(tasks.track_future(accept_clients(clients, connect_listener)));
        if let Some(listener) = gateway_listener {
            let gateway = listening(&tls_set.gateway);
            io.spawn(tasks.track_future(gateway::accept(gateway, listener)));
        }
        if let Some((listener, _)) = ws_listener {
            let ws = listening(&tls_set.ws);
            io.spawn(tasks.track_future(websocket::accept(ws, listener)));
        }
        if let Some(socket) = gateway_udp {
            io.spawn(tasks.track_future(gateway_udp::serve(ctx.clone(), socket, tasks.clone())));
        }
        // The console's `shutdown` cancels this; the host waits on it as on SIGTERM.
        let shutdown_request = CancellationToken::new();
        if let Some((listener, _)) = admin_listener {
            io.spawn(tasks.track_future(console::accept(
                ctx.clone(),
                listener,
                tasks.clone(),
                shutdown_request.clone(),
            )));
        }

        // UDP mode receives kicks on the gateway socket, not on the MQ (as the original).
        if udp_mode {
            ctx.kicks_subscribed
                .store(true, std::sync::atomic::Ordering::Release);
        } else {
            io.spawn(tasks.track_future(cluster::subscribe_kicks(ctx.clone())));
        }
        io.spawn(tasks.track_future(cluster::watch_routes(ctx.clone())));
        // Routes a previous run of this server left online are stale: clean them before
        // serving; then keep this node's routes true while it runs.
        cluster::reconcile_at_start(&ctx).await;
        io.spawn(tasks.track_future(cluster::route_guard(ctx.clone())));
        io.spawn(tasks.track_future(cluster::watch_gateways(
            ctx.clone(),
            service.discovery.clone(),
        )));
        let mut nodes = Vec::new();
        let mut cs = ServiceNode::new(
            services::CONNECT_SERVER,
            crate::address::connect_register_ip(net),
            connect_addr.port(),
        );
        cs.attrs = net.connect_server_register_attr.clone();
        nodes.push(cs);
        nodes.push(ServiceNode::new(
            services::GATEWAY_SERVER,
            gateway_host,
            gateway_addr.port(),
        ));
        if let Some(addr) = ws_addr {
            // §11: `/cluster/ws/<uuid>` = {host: connect-server-register-ip, port: ws-port}.
            nodes.push(ServiceNode::new(
                services::WS_SERVER,
                crate::address::connect_register_ip(net),
                addr.port(),
            ));
        }
        for (i, node) in nodes.iter().enumerate() {
            if let Err(e) = service.registry.register(node).await {
                // Undo what this attempt did, so that it can be retried.
                for done in &nodes[..i] {
                    let _ = service.registry.deregister(done).await;
                }
                ctx.shutdown.cancel();
                tasks.close();
                let _ = tokio::time::timeout(STOP_WAIT, tasks.wait()).await;
                return Err(e.into());
            }
        }
        if let Some((listener, _)) = admin_http_listener {
            io.spawn(tasks.track_future(admin_http::serve(
                ctx.clone(),
                listener,
                service.discovery.clone(),
                nodes.clone(),
                tasks.clone(),
                shutdown_request.clone(),
                tls_set.admin_http.clone(),
            )));
        }
        let registration = Arc::new(Registration::new(service.registry.clone(), nodes));
        ctx.drain.set_registration(registration.clone());
        tracing::info!(%connect_addr, %gateway_addr, "mpush server started");
        Ok(RunningServer {
            config,
            ctx,
            tasks,
            connect_addr,
            gateway_addr,
            ws_addr,
            admin_addr,
            admin_http_addr,
            shutdown_request,
            registration,
            stopped: false,
        })
    }
}

/// How long [`RunningServer::shutdown`] waits for the connection tasks to end.
const STOP_WAIT: Duration = Duration::from_secs(10);

/// An MPush server: connection server + gateway server over shared backends. The entry
/// point: [`MPushServer::builder`] configures, [`MPushServerBuilder::start`] returns the
/// [`RunningServer`] handle (as `PushSender::builder().start()` returns the sender).
///
/// ```no_run
/// # async fn run() -> Result<(), mpush::server::ServerError> {
/// // The application links a backend crate (`use mpush_spi_memory as _;`) or passes its own.
/// let server = mpush::MPushServer::builder()
///     .config(mpush::MPushConfig::default())
///     .start()
///     .await?;
/// println!("clients connect to {}", server.connect_addr());
/// // ... serve until asked to stop ...
/// server.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub struct MPushServer;

impl MPushServer {
    /// A builder with defaults.
    pub fn builder() -> MPushServerBuilder {
        MPushServerBuilder::default()
    }
}

/// A started server. Getters are plain reads; operations that talk to the backends are
/// async. [`shutdown`](Self::shutdown) stops it and waits; dropping it stops it too.
pub struct RunningServer {
    config: Arc<MPushConfig>,
    ctx: Arc<ServerContext>,
    tasks: TaskTracker,
    connect_addr: SocketAddr,
    gateway_addr: SocketAddr,
    ws_addr: Option<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    admin_http_addr: Option<SocketAddr>,
    /// Cancelled when the admin console's `shutdown` asks the host to stop the server.
    shutdown_request: CancellationToken,
    /// The nodes still registered (a drain deregisters them in two steps).
    registration: Arc<Registration>,
    /// Set by `shutdown`, so that the `Drop` that follows it does nothing more.
    stopped: bool,
}

debug_fields!(RunningServer {
    connect_addr,
    gateway_addr,
    ws_addr
});

/// Dropping a running server stops it: connections close and their routes are cleaned by
/// the tasks as they end, and the nodes are deregistered in the background when a runtime is
/// there to do it. Call [`RunningServer::shutdown`] to wait for all of that.
impl Drop for RunningServer {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.ctx.shutdown.cancel();
        self.tasks.close();
        self.registration.deregister_detached();
    }
}

/// Binds the listener `what` on `ip:port` ("" = all interfaces) and reads back the address
/// it got (port 0 picks a free one).
async fn bind_listener(
    what: &'static str,
    ip: &str,
    port: u16,
) -> Result<(TcpListener, SocketAddr), ServerError> {
    let ip = if ip.is_empty() { "0.0.0.0" } else { ip };
    let addr = format!("{ip}:{port}");
    let bound = TcpListener::bind(&addr).await.and_then(|l| {
        let local = l.local_addr()?;
        Ok((l, local))
    });
    bound.map_err(|source| ServerError::Bind { what, addr, source })
}

/// [`bind_listener`] for a listener that is disabled when `port` is `None`.
async fn bind_if_enabled(
    what: &'static str,
    ip: &str,
    port: Option<u16>,
) -> Result<Option<(TcpListener, SocketAddr)>, ServerError> {
    match port {
        Some(port) => bind_listener(what, ip, port).await.map(Some),
        None => Ok(None),
    }
}

impl RunningServer {
    /// The configuration in force.
    pub fn config(&self) -> &MPushConfig {
        &self.config
    }

    /// Stops accepting, deregisters the nodes, closes every connection (cleaning their routes)
    /// and waits for the tasks to end (at most a few seconds).
    pub async fn shutdown(mut self) {
        self.stopped = true;
        self.registration.deregister(|_| true).await;
        self.ctx.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(STOP_WAIT, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connection tasks did not stop within {STOP_WAIT:?}");
        }
        tracing::info!(connect_addr = %self.connect_addr, "mpush server stopped");
    }

    /// Drains the server gracefully and stops it (issue 11 §4): deregisters the client-facing
    /// nodes and stops accepting clients, keeps serving the open connections for
    /// `options.window` (pushes still arrive through the gateway), closes them at
    /// `options.close_rate` per second (their routes are removed only while they still name
    /// them), then deregisters the gateway and stops. Call [`shutdown`](Self::shutdown)
    /// afterwards to wait for the tasks; `shutdown` alone stays the immediate path.
    pub async fn drain(&self, options: DrainOptions) -> DrainReport {
        drain::drain(&self.ctx, options).await
    }

    /// `true` from the start of a drain until the server stops.
    pub fn is_draining(&self) -> bool {
        self.ctx.drain.is_draining()
    }

    /// `true` until the server stops serving (its shutdown began).
    pub fn is_running(&self) -> bool {
        !self.ctx.shutdown.is_cancelled()
    }

    /// The connection server's bound address.
    pub fn connect_addr(&self) -> SocketAddr {
        self.connect_addr
    }

    /// The gateway server's bound address (TCP, or the UDP socket in UDP gateway mode).
    pub fn gateway_addr(&self) -> SocketAddr {
        self.gateway_addr
    }

    /// The WebSocket listener's bound address; `None` when disabled (`ws-server-port` 0).
    pub fn ws_addr(&self) -> Option<SocketAddr> {
        self.ws_addr
    }

    /// The admin console's bound address; `None` when disabled (`admin-server-port` 0).
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The HTTP admin API's bound address; `None` when disabled (`admin-http-port` 0).
    pub fn admin_http_addr(&self) -> Option<SocketAddr> {
        self.admin_http_addr
    }

    /// Resolves when the admin console's `shutdown` command asks for the server to stop.
    /// The host (the launcher) waits on this as on SIGTERM and then calls
    /// [`shutdown`](Self::shutdown), so both take the same graceful path.
    pub async fn shutdown_requested(&self) {
        self.shutdown_request.cancelled().await;
    }

    /// Number of open client connections.
    pub fn connection_count(&self) -> usize {
        self.ctx.connections.len()
    }

    /// How many of the open client connections are parked: idle, held by the server's
    /// parker instead of a task of their own (`mp.net.connect-server-park-idle`).
    pub fn parked_count(&self) -> usize {
        self.ctx.parker.parked()
    }

    /// The TCP gateway's load: open connections, requests in flight, pending ACKs.
    pub fn gateway_load(&self) -> GatewayLoad {
        self.ctx.gateway_load()
    }

    /// Users bound on this server.
    pub fn local_users(&self) -> Vec<String> {
        self.ctx.router.local.user_ids()
    }

    /// Sessions of a user bound on this server (local state only: no backend is read).
    pub fn local_sessions(&self, user_id: &str) -> Vec<SessionInfo> {
        self.ctx
            .router
            .local
            .lookup_all(user_id)
            .into_iter()
            .map(|(_, c)| c.info())
            .collect()
    }

    /// `true` once this server's cluster kick subscription exists (it is retried until it
    /// does; while it does not, kicks from other servers are found by the route checks).
    pub fn kicks_subscribed(&self) -> bool {
        self.ctx
            .kicks_subscribed
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// `true` while the cache reports route changes to this server
    /// ([`crate::spi::CacheManager::watch_prefix`]): a unicast push to a local connection
    /// whose route was read and found naming it does not read it again until it changes.
    /// `false` with a backend that cannot watch, and while a watch is lost: every such push
    /// then reads the route.
    pub fn route_changes_watched(&self) -> bool {
        self.ctx.router.checks.is_watching()
    }

    /// Users online on the servers sharing this server's public IP (`ZCARD mp:oul:<ip>`).
    pub async fn online_user_count(&self) -> Result<u64, ServerError> {
        Ok(self.ctx.router.online.online_count().await?)
    }

    /// Kicks a user's devices anywhere in the cluster (every client type, or one): publishes
    /// a kick request to each server holding an online route (spec §8.4).
    pub async fn kick_user(
        &self,
        user_id: &str,
        client_type: Option<ClientType>,
    ) -> Result<usize, ServerError> {
        kick_user(&self.ctx, user_id, client_type).await
    }

    /// Pushes to a user connected to *this* server (every client type, or one). Returns one
    /// outcome per connection; empty when the user has no connection here.
    pub async fn push_to_local_user(
        &self,
        user_id: &str,
        client_type: Option<ClientType>,
        content: impl Into<Bytes>,
        ack: AckModel,
        timeout: Duration,
    ) -> Vec<(ClientType, PushOutcome)> {
        crate::push::local::push_to_local_user(
            &self.ctx,
            user_id,
            client_type,
            content.into(),
            ack,
            timeout,
        )
        .await
    }
}

/// [`RunningServer::kick_user`], shared with the admin API.
pub(crate) async fn kick_user(
    ctx: &ServerContext,
    user_id: &str,
    client_type: Option<ClientType>,
) -> Result<usize, ServerError> {
    let routes = ctx.router.remote.lookup_all(user_id).await?;
    let mut n = 0;
    for (t, loc) in routes {
        if loc.is_online() && client_type.is_none_or(|c| c == t) {
            crate::metrics::incr(&crate::metrics::KICK_REMOTE);
            ctx.router.publish_kick(user_id, t, &loc).await;
            // The kicked connection no longer holds the user: its route is offline now,
            // not when (or if) the device disconnects.
            ctx.router
                .remote
                .mark_offline_if(user_id, t, |l| {
                    l.conn_id == loc.conn_id && l.host == loc.host && l.port == loc.port
                })
                .await?;
            n += 1;
        }
    }
    Ok(n)
}

/// What the accept task of a TCP listener (connection, gateway or WebSocket server) is
/// given besides its listener.
pub(crate) struct Listening {
    /// The server.
    pub(crate) ctx: Arc<ServerContext>,
    /// The tracker every connection task joins, so that shutdown can wait for them.
    pub(crate) tasks: TaskTracker,
    /// The listener's TLS; `None` for plain TCP.
    pub(crate) tls: Option<Arc<crate::tls::ReloadableTls>>,
}

impl Listening {
    /// The runtime connection tasks are spawned on.
    pub(crate) fn io(&self) -> tokio::runtime::Handle {
        self.ctx.hooks.executor.handle(crate::spi::ExecutorRole::Io)
    }
}

/// [`accept_loop`] for the client listeners (TCP and WebSocket): it stops when a drain stops
/// accepting clients (the listener closes while the gateway still serves), and every peer
/// passes the one connection cap and IP rate both listeners share before `on_admitted` sees
/// it with its slot; a refused one is dropped (closed) before any work is spent on it.
pub(crate) async fn accept_admitted(
    ctx: &ServerContext,
    listener: TcpListener,
    what: &'static str,
    mut on_admitted: impl FnMut(tokio::net::TcpStream, SocketAddr, OwnedSemaphorePermit),
) {
    accept_loop(&ctx.drain.stop_accepting, listener, what, |stream, peer| {
        if let Some(slot) = ctx.admission.admit_peer(peer, what) {
            on_admitted(stream, peer, slot);
        }
    })
    .await;
}

/// Accepts TCP connections on `listener` until `stop`, handing each to `on_accept`.
/// Shared by the connection, gateway and WebSocket listeners.
pub(crate) async fn accept_loop(
    stop: &CancellationToken,
    listener: TcpListener,
    what: &'static str,
    mut on_accept: impl FnMut(tokio::net::TcpStream, SocketAddr),
) {
    loop {
        let accepted = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => on_accept(stream, peer),
            Err(e) => {
                // Usually EMFILE: back off instead of spinning, keep serving the others.
                tracing::warn!(listener = what, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts client connections until shutdown.
async fn accept_clients(at: Listening, listener: TcpListener) {
    let (io, ctx, tasks, tls) = (at.io(), &at.ctx, &at.tasks, &at.tls);
    accept_admitted(ctx, listener, "connection server", |stream, peer, slot| {
        let conn = Arc::new(Connection::accepted(ctx, peer));
        if let Some(tls) = tls {
            // The TLS handshake runs in the connection's own task, holding its slot.
            let (ctx, acceptor, io2) = (ctx.clone(), tls.acceptor(), io.clone());
            io.spawn(tasks.track_future(async move {
                let _ = stream.set_nodelay(true);
                let Some(tls_stream) = tls::handshake(&ctx, acceptor, stream, peer).await else {
                    return;
                };
                let (inner, relay) = match crate::tls::relay(tls_stream) {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::warn!(%peer, error = %e, "cannot open the TLS relay");
                        return;
                    }
                };
                let relay = io2.spawn(relay);
                connection::run(ctx, conn, Arc::new(inner)).await;
                // The relay ends when the inner end closes; wait so the slot covers it.
                let _ = relay.await;
                drop(slot);
            }));
            return;
        }
        let _ = stream.set_nodelay(true);
        io.spawn(tasks.track_future(connection::task(ctx.clone(), conn, stream, slot)));
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn start_without_backends_names_the_missing_spi() {
        // No backend crate is linked into mpush's own unit tests.
        let mut config = MPushConfig::default();
        config.net.connect_server_port = 0;
        config.net.gateway_server_port = 0;
        let builder = MPushServer::builder().config(config);
        let err = builder
            .start()
            .await
            .expect_err("no cache backend is registered");
        let msg = err.to_string();
        assert!(msg.contains("CacheManager"), "{msg}");
        assert!(msg.contains("registered: []"), "{msg}");
        // The builder is still there: the same start can be tried again.
        let again = builder.start().await.expect_err("still no backend");
        assert!(matches!(again, ServerError::Spi(_)), "{again}");
    }

    #[tokio::test]
    async fn bad_keys_fail_at_start_as_a_key_error() {
        let mut config = MPushConfig::default();
        // Valid base64 (the config check passes), not a DER RSA key.
        config.security.private_key = "aGVsbG8gd29ybGQ=".into();
        let err = MPushServer::builder()
            .config(config)
            .start()
            .await
            .expect_err("bad key");
        assert!(matches!(err, ServerError::Keys { .. }), "{err:?}");
        assert!(err.to_string().contains("mp.security"), "{err}");
    }
}
