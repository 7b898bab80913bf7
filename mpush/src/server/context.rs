//! Shared server state: configuration, backends, hooks, and the live connection table.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::connection::{Connection, PRE_HANDSHAKE_CHECK};
use crate::config::MPushConfig;
use crate::protocol::crypto::RsaCipher;
use crate::push::PushCenter;
use crate::router::RouterCenter;
use crate::spi::{CacheManager, MQClient, ServerEvent};

/// Everything a connection or handler needs, shared by `Arc`.
pub(crate) struct ServerContext {
    pub config: Arc<MPushConfig>,
    pub rsa: Arc<RsaCipher>,
    pub cache: Arc<dyn CacheManager>,
    pub mq: Arc<dyn MQClient>,
    /// The application's hooks (validator, classifier, handlers, listeners, executor).
    pub hooks: super::Hooks,
    /// Live client connections by sequence number.
    pub connections: DashMap<u64, Arc<Connection>>,
    pub router: RouterCenter<Connection>,
    pub push: PushCenter,
    /// Cancelled when the server stops.
    pub shutdown: CancellationToken,
    /// Bounds concurrent RSA decryptions on the blocking pool (connect storms).
    pub rsa_permits: Semaphore,
    /// Bounds backend writes left to run in the background (reusable sessions).
    pub background_writes: Arc<Semaphore>,
    /// Bounds on-demand route repairs started from the push path.
    pub route_repairs: Arc<Semaphore>,
    /// Serialises this node's route writes of one (user, client type) (`server::bind_locks`).
    pub bind_locks: super::bind_locks::BindLocks,
    /// `true` once this server's kick channel subscription exists.
    pub kicks_subscribed: std::sync::atomic::AtomicBool,
    /// Client connection admission: connection cap, per-IP rate, handshake queue.
    pub admission: super::admission::Admission,
    /// Gauges of the TCP gateway (open connections, requests in flight).
    pub gateway_stats: super::gateway::GatewayStats,
    /// The HTTP proxy (cmd 12), when `mp.http.proxy-enabled`.
    pub http_proxy: Option<Arc<super::http_proxy::HttpProxy>>,
    /// Graceful drain: the `draining` flag, the client listeners' stop, the registration.
    pub drain: super::drain::DrainState,
    /// The heartbeat checks of every TCP connection (`server::checks`).
    pub checks: super::checks::CheckWheel,
    /// Idle TCP connections off tokio's reactor (`server::park`).
    pub parker: super::park::Parker,
    conn_seq: AtomicU64,
    conn_id_base: u32,
    epoch: Instant,
}

debug_fields!(ServerContext { connections.len() });

/// Backend writes that may run detached from their connection at once; past this they run on
/// the connection's own task (back-pressure instead of an unbounded task count).
const BACKGROUND_WRITES: usize = 4096;

impl ServerContext {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        config: Arc<MPushConfig>,
        rsa: Arc<RsaCipher>,
        cache: Arc<dyn CacheManager>,
        mq: Arc<dyn MQClient>,
        hooks: super::Hooks,
        router: RouterCenter<Connection>,
    ) -> Self {
        let permits = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
        let push = PushCenter::new(&config);
        let admission = super::admission::Admission::new(&config.net);
        let shutdown = CancellationToken::new();
        let drain = super::drain::DrainState::new(&shutdown);
        let checks = super::checks::CheckWheel::new(config.core.max_hb_timeout_times);
        let parker = super::park::Parker::new(&config.net);
        let http_proxy = config.http.proxy_enabled.then(|| {
            super::http_proxy::HttpProxy::new(&config.http, hooks.dns_mapping.clone(), &shutdown)
        });
        Self {
            config,
            rsa,
            cache,
            mq,
            hooks,
            connections: DashMap::new(),
            router,
            push,
            shutdown,
            rsa_permits: Semaphore::new(permits),
            background_writes: Arc::new(Semaphore::new(BACKGROUND_WRITES)),
            route_repairs: Arc::new(Semaphore::new(super::cluster::REPAIR_PERMITS)),
            bind_locks: Default::default(),
            kicks_subscribed: std::sync::atomic::AtomicBool::new(false),
            admission,
            gateway_stats: Default::default(),
            http_proxy,
            drain,
            checks,
            parker,
            conn_seq: AtomicU64::new(0),
            conn_id_base: rand::random(),
            epoch: Instant::now(),
        }
    }

    /// Milliseconds since the server started (monotonic), for idle checks.
    pub(crate) fn now_ms(&self) -> i64 {
        self.epoch.elapsed().as_millis() as i64
    }

    /// Wall-clock epoch milliseconds, for tickets and time points.
    pub(crate) fn wall_ms() -> i64 {
        crate::clock::wall_ms()
    }

    /// A new connection number and its 8-hex-char id. The id is a bijective scramble of the
    /// sequence over a random per-process base, so it is unique per server and unlikely to
    /// collide with another server's ids (routes compare connIds across the cluster).
    pub(crate) fn next_conn_id(&self) -> (u64, super::connection::ConnId) {
        let seq = self.conn_seq.fetch_add(1, Ordering::Relaxed) + 1;
        let scrambled = self
            .conn_id_base
            .wrapping_add(seq as u32)
            .wrapping_mul(0x9E37_79B1);
        (seq, super::connection::ConnId::from_u32(scrambled))
    }

    /// How often the idle check runs for `conn`: its heartbeat, or 10 s before a handshake.
    pub(crate) fn heartbeat_check_interval(&self, conn: &Connection) -> Duration {
        conn.lock_state().heartbeat().unwrap_or(PRE_HANDSHAKE_CHECK)
    }

    /// A snapshot of the TCP gateway's load.
    pub(crate) fn gateway_load(&self) -> super::GatewayLoad {
        let g = &self.gateway_stats;
        super::GatewayLoad {
            connections: g.connections.load(Ordering::Relaxed),
            in_flight: g.in_flight.load(Ordering::Relaxed),
            peak_in_flight: g.peak_in_flight.load(Ordering::Relaxed),
            pending_acks: self.push.acks.len(),
        }
    }

    /// Reports an event to the host application.
    pub(crate) fn emit(&self, event: ServerEvent) {
        self.hooks.event_listener.on_event(&event);
    }
}
