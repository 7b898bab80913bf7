//! A test kit for applications' own test suites (cargo feature `testing`): an N-node
//! in-process cluster on one shared in-memory hub, a `PushSender` that has discovered every
//! gateway, and connected + bound clients, in a few lines.
//!
//! It lives here rather than in `mpush` because it needs the memory backends, and this crate
//! depends on `mpush` (the other way round would be a cycle).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), mpush_spi_memory::testing::TestingError> {
//! use mpush::client::Event;
//! use mpush::sender::{PushContext, ResultCode};
//! use mpush_spi_memory::testing::{TestCluster, WAIT, test_config};
//!
//! let cluster = TestCluster::start(2, test_config()).await?;
//! let (_client, mut events) = cluster.client(1, "device-1", "alice").await?;
//! let results = cluster.sender.send(PushContext::to_user("alice", &b"hi"[..])).await;
//! assert_eq!(results[0].code, ResultCode::Success);
//! let pushed = tokio::time::timeout(WAIT, async {
//!     while let Some(event) = events.recv().await {
//!         if let Event::Push { content, .. } = event {
//!             return Some(content);
//!         }
//!     }
//!     None
//! })
//! .await;
//! assert_eq!(pushed.ok().flatten().as_deref(), Some(&b"hi"[..]));
//! cluster.shutdown().await;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use mpush::client::{Client, ClientConfig, ClientError, EventStream};
use mpush::sender::{PushSender, SenderError};
use mpush::spi::{
    ServiceDiscovery, ServiceListener, ServiceNode, SpiError, SpiResult, SubscriptionId,
};
use mpush::{MPushConfig, MPushServer, MPushServerBuilder, RunningServer, ServerError};

use crate::{MemoryCache, MemoryHub, MemoryMQ, MemoryServiceRegistry};

/// A generous upper bound for any single wait in a test.
pub const WAIT: Duration = Duration::from_secs(10);

/// Errors of the kit: whatever failed to start.
#[derive(Debug, thiserror::Error)]
pub enum TestingError {
    /// A server did not start.
    #[error("test server: {0}")]
    Server(#[from] ServerError),
    /// The push sender did not start.
    #[error("test push sender: {0}")]
    Sender(#[from] SenderError),
    /// A client did not connect or bind.
    #[error("test client: {0}")]
    Client(#[from] ClientError),
    /// The sender did not discover every gateway within [`WAIT`].
    #[error("the push sender found {found} of {expected} gateways within {WAIT:?}")]
    Discovery {
        /// Gateways discovered.
        found: usize,
        /// Nodes started.
        expected: usize,
    },
}

/// MPush's defaults with every listener on an ephemeral loopback port, advertising
/// 127.0.0.1, and neither the console nor the admin HTTP API: a server that runs next to
/// others on one machine (tests, benchmarks).
pub fn loopback_config() -> MPushConfig {
    let mut c = MPushConfig::default();
    c.net.connect_server_bind_ip = "127.0.0.1".into();
    c.net.connect_server_port = 0;
    c.net.gateway_server_bind_ip = "127.0.0.1".into();
    c.net.gateway_server_port = 0;
    // Servers of parallel tests must not compete for the console's fixed port 3002.
    c.net.admin_server_port = 0;
    // Nor for the admin HTTP API's 3003 (tests that want it pick a free port).
    c.net.admin_http_port = 0;
    c.net.local_ip = "127.0.0.1".into();
    c.net.public_ip = "127.0.0.1".into();
    c
}

/// A config for tests: [`loopback_config`] with small heartbeats.
pub fn test_config() -> MPushConfig {
    let mut c = loopback_config();
    c.core.min_heartbeat = Duration::from_secs(1);
    c.core.max_heartbeat = Duration::from_secs(60);
    c
}

/// `builder` with the cache, MQ and registry of `hub`: servers built this way form one
/// cluster.
pub fn on_hub(hub: &Arc<MemoryHub>, builder: MPushServerBuilder) -> MPushServerBuilder {
    let registry = Arc::new(MemoryServiceRegistry::new(hub.clone()));
    builder
        .cache_manager(Arc::new(MemoryCache::new(hub.clone())))
        .mq_client(Arc::new(MemoryMQ::new(hub.clone())))
        .service_registry(registry.clone(), registry)
}

/// A started push sender on `hub`.
pub async fn sender_on(
    hub: &Arc<MemoryHub>,
    config: MPushConfig,
) -> Result<PushSender, SenderError> {
    PushSender::builder()
        .config(config)
        .cache_manager(Arc::new(MemoryCache::new(hub.clone())))
        .discovery(Arc::new(MemoryServiceRegistry::new(hub.clone())))
        .start()
        .await
}

/// An in-process cluster: servers on one memory hub plus a sender that knows them all.
#[derive(Debug)]
pub struct TestCluster {
    /// The shared backends.
    pub hub: Arc<MemoryHub>,
    /// The servers, in start order.
    pub nodes: Vec<RunningServer>,
    /// A sender that has discovered every node's gateway.
    pub sender: PushSender,
}

impl TestCluster {
    /// Starts `n` servers with `config` (see [`test_config`]).
    pub async fn start(n: usize, config: MPushConfig) -> Result<Self, TestingError> {
        Self::start_with(n, MPushServer::builder().config(config)).await
    }

    /// Starts `n` servers from `builder` (its hooks and config; the backends are the hub's).
    pub async fn start_with(n: usize, builder: MPushServerBuilder) -> Result<Self, TestingError> {
        let hub = MemoryHub::new();
        let builder = on_hub(&hub, builder);
        let mut nodes = Vec::with_capacity(n);
        for _ in 0..n {
            nodes.push(builder.start().await?);
        }
        let config = nodes
            .first()
            .map_or_else(MPushConfig::default, |s| s.config().clone());
        let sender = sender_on(&hub, config).await?;
        let found = sender.gateways().len();
        if found != n {
            return Err(TestingError::Discovery { found, expected: n });
        }
        Ok(Self { hub, nodes, sender })
    }

    /// Client address of node `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].connect_addr()
    }

    /// Gateway address of node `i`.
    pub fn gateway(&self, i: usize) -> SocketAddr {
        self.nodes[i].gateway_addr()
    }

    /// A client of the Rust SDK connected to node `i` with `device_id` and bound to `user`.
    pub async fn client(
        &self,
        i: usize,
        device_id: &str,
        user: &str,
    ) -> Result<(Client, EventStream), ClientError> {
        Client::connect(
            ClientConfig::new(self.addr(i).to_string(), device_id).with_user(user, None),
        )
        .await
    }

    /// Stops the sender and every node, waiting for each (named as `RunningServer::shutdown`).
    pub async fn shutdown(self) {
        self.sender.stop().await;
        for node in self.nodes {
            node.shutdown().await;
        }
    }
}

/// A [`ServiceDiscovery`] that answers every lookup from the nodes a test last gave it (or
/// fails as told), and whose watches never deliver: a sender's view of a registry the test
/// controls, e.g. a fixed gateway, or a registry that cannot be read and then can.
#[derive(Debug)]
pub struct FixedDiscovery {
    /// The nodes, or why lookups fail.
    answer: Mutex<Result<Vec<ServiceNode>, String>>,
}

impl FixedDiscovery {
    /// Lookups find the nodes of `nodes` whose service is the one looked up.
    pub fn new(nodes: Vec<ServiceNode>) -> Self {
        Self {
            answer: Mutex::new(Ok(nodes)),
        }
    }

    /// Lookups fail with a backend error saying `reason`.
    pub fn failing(reason: impl Into<String>) -> Self {
        Self {
            answer: Mutex::new(Err(reason.into())),
        }
    }

    /// From now on lookups find `nodes` (as [`FixedDiscovery::new`]).
    pub fn set(&self, nodes: Vec<ServiceNode>) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = Ok(nodes);
    }
}

#[async_trait]
impl ServiceDiscovery for FixedDiscovery {
    async fn lookup(&self, service_name: &str) -> SpiResult<Vec<ServiceNode>> {
        match &*self.answer.lock().unwrap_or_else(PoisonError::into_inner) {
            Ok(nodes) => Ok(nodes
                .iter()
                .filter(|n| n.service_name == service_name)
                .cloned()
                .collect()),
            Err(reason) => Err(SpiError::backend("fixed discovery", reason)),
        }
    }

    async fn subscribe(
        &self,
        _service_name: &str,
        _listener: Arc<dyn ServiceListener>,
    ) -> SpiResult<SubscriptionId> {
        // Nothing changes but through `set`, which a watcher need not hear of: a sender looks
        // up again when a route names a gateway it does not know.
        Ok(SubscriptionId(0))
    }

    async fn unsubscribe(&self, _id: SubscriptionId) -> SpiResult<()> {
        Ok(())
    }
}
