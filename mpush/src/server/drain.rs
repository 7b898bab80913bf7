//! Graceful drain (issue 11 §4): leave the cluster without dropping users or pushes.
//!
//! The order matters. The client-facing nodes (connect server, WebSocket) are deregistered
//! first, so alloc and the clients' server lists stop naming this node, and the client
//! listeners close. Pushes keep arriving through the gateway for the users still here: the
//! gateway node stays registered until its connections are gone, because senders only reach
//! a gateway that discovery lists and peers treat a vanished gateway as a dead server (they
//! would clean the routes of users still connected here). After the window the connections
//! are closed at a paced rate; each close runs the normal cleanup, which removes a route only
//! while it still names that connection (compare-and-set by connId), so a user who already
//! reconnected elsewhere keeps the new route. Then the gateway is deregistered and the server
//! stops.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::context::ServerContext;
use crate::config::CoreConfig;
use crate::spi::{ServiceNode, ServiceRegistry, services};

/// How long a drain waits, after the last close, for the connection tasks to clean up.
const CLEANUP_WAIT: Duration = Duration::from_secs(10);

/// How a drain proceeds; [`DrainOptions::from_config`] reads `mp.core.drain-*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainOptions {
    /// How long open connections keep being served after the node left the registry.
    pub window: Duration,
    /// Connections closed per second after the window (at least 1).
    pub close_rate: u32,
}

impl DrainOptions {
    /// `mp.core.drain-window` and `mp.core.drain-close-rate`.
    pub fn from_config(core: &CoreConfig) -> Self {
        Self {
            window: core.drain_window,
            close_rate: core.drain_close_rate,
        }
    }

    /// The pause between two closes; never zero (`tokio::time::interval` panics on a zero
    /// period, which a rate above 10⁹ per second would give).
    fn close_interval(&self) -> Duration {
        (Duration::from_secs(1) / self.close_rate.max(1)).max(Duration::from_nanos(1))
    }
}

/// What a drain did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DrainReport {
    /// Connections the drain closed (those that left by themselves are not counted).
    pub closed: usize,
    /// Connections still open when the drain gave up waiting for their cleanup.
    pub left_open: usize,
    /// From the start of the drain to the stop.
    pub elapsed: Duration,
}

/// The drain state in the server context: the `draining` flag the admin API's `/ready`
/// reads, the client listeners' stop, and the registration a drain undoes.
pub(crate) struct DrainState {
    draining: AtomicBool,
    /// Cancelled when the client listeners must stop accepting: a child of the server's
    /// shutdown, so a plain shutdown stops them as well.
    pub(crate) stop_accepting: CancellationToken,
    registration: OnceLock<Arc<Registration>>,
}

/// What the server registered, shared by the drain and the shutdown so that each node is
/// deregistered once.
pub(crate) struct Registration {
    registry: Arc<dyn ServiceRegistry>,
    nodes: Mutex<Vec<ServiceNode>>,
}

impl Registration {
    pub(crate) fn new(registry: Arc<dyn ServiceRegistry>, nodes: Vec<ServiceNode>) -> Self {
        Self {
            registry,
            nodes: Mutex::new(nodes),
        }
    }

    /// Takes the nodes `which` selects out of the registered set.
    fn take(&self, which: impl Fn(&ServiceNode) -> bool) -> Vec<ServiceNode> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let (taken, kept) = std::mem::take(&mut *nodes).into_iter().partition(which);
        *nodes = kept;
        taken
    }

    /// Deregisters the nodes `which` selects; a failure is logged (the node's session or TTL
    /// in the registry ends it anyway).
    pub(crate) async fn deregister(&self, which: impl Fn(&ServiceNode) -> bool) {
        for node in self.take(which) {
            if let Err(e) = self.registry.deregister(&node).await {
                tracing::warn!(node = %node.node_path(), error = %e, "cannot deregister node");
            }
        }
    }

    /// Deregisters what is left in the background (for `Drop`, which cannot wait).
    pub(crate) fn deregister_detached(self: &Arc<Self>) {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let me = self.clone();
            handle.spawn(async move { me.deregister(|_| true).await });
        }
    }
}

impl DrainState {
    pub(crate) fn new(shutdown: &CancellationToken) -> Self {
        Self {
            draining: AtomicBool::new(false),
            stop_accepting: shutdown.child_token(),
            registration: OnceLock::new(),
        }
    }

    /// `true` from the start of a drain (the admin API's `/ready` answers false).
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Records what the server registered, once, after registration succeeded.
    pub(crate) fn set_registration(&self, r: Arc<Registration>) {
        let _ = self.registration.set(r);
    }

    fn registration(&self) -> Option<&Arc<Registration>> {
        self.registration.get()
    }
}

/// Client-facing nodes: deregistered at the start of a drain.
fn client_facing(node: &ServiceNode) -> bool {
    node.service_name != services::GATEWAY_SERVER
}

/// Drains the server behind `ctx` and stops it; see the module doc for the order. A second
/// call while one runs waits for the first to stop the server and reports nothing closed
/// (the launcher's drain on the stop request that `POST /drain` fires is such a call). The
/// admin API starts it in a spawned task and answers at once.
pub(crate) async fn drain(ctx: &Arc<ServerContext>, options: DrainOptions) -> DrainReport {
    let start = Instant::now();
    if ctx.drain.draining.swap(true, Ordering::AcqRel) {
        ctx.shutdown.cancelled().await;
        return DrainReport {
            closed: 0,
            left_open: ctx.connections.len(),
            elapsed: start.elapsed(),
        };
    }
    let open = ctx.connections.len();
    tracing::info!(
        connections = open,
        window_ms = options.window.as_millis() as u64,
        close_rate = options.close_rate,
        "drain started"
    );
    if let Some(r) = ctx.drain.registration() {
        r.deregister(client_facing).await;
    }
    ctx.drain.stop_accepting.cancel();

    // The window: existing connections keep receiving pushes; those that leave by
    // themselves leave. It ends early once none is left (nothing to deliver to), and a
    // shutdown meanwhile ends it too (that closes everything anyway).
    tokio::select! {
        _ = tokio::time::sleep(options.window) => {}
        _ = ctx.shutdown.cancelled() => {}
        _ = all_gone(ctx) => {}
    }

    let mut closed = 0;
    let mut pace = tokio::time::interval(options.close_interval());
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut snapshot: Vec<_> = ctx.connections.iter().map(|e| e.value().clone()).collect();
    // Oldest first: a stable order, and the longest-lived sessions have had the most time to
    // learn about other nodes.
    snapshot.sort_by_key(|c| c.seq());
    for conn in snapshot {
        if conn.is_closed() {
            continue;
        }
        tokio::select! {
            _ = pace.tick() => {}
            _ = ctx.shutdown.cancelled() => break,
        }
        if !conn.is_closed() {
            tracing::debug!(conn = %conn.id(), "drain: closing connection");
            conn.close();
            closed += 1;
        }
    }

    // The tasks clean the routes as they end; wait for that before leaving the registry, so
    // that no peer's dead-server cleanup races this node's own.
    tokio::select! {
        _ = tokio::time::sleep(CLEANUP_WAIT) => {}
        _ = ctx.shutdown.cancelled() => {}
        _ = all_gone(ctx) => {}
    }
    let left_open = ctx.connections.len();
    if let Some(r) = ctx.drain.registration() {
        r.deregister(|_| true).await;
    }
    ctx.shutdown.cancel();
    let report = DrainReport {
        closed,
        left_open,
        elapsed: start.elapsed(),
    };
    tracing::info!(
        closed,
        left_open,
        elapsed_ms = report.elapsed.as_millis() as u64,
        "drain finished"
    );
    report
}

/// Resolves once no client connection is open.
async fn all_gone(ctx: &ServerContext) {
    while !ctx.connections.is_empty() {
        tokio::time::sleep(GONE_POLL).await;
    }
}

/// How often a drain looks at the connection table while it waits for it to empty.
const GONE_POLL: Duration = Duration::from_millis(20);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_interval_follows_the_rate() {
        let o = |close_rate| DrainOptions {
            window: Duration::ZERO,
            close_rate,
        };
        assert_eq!(o(1).close_interval(), Duration::from_secs(1));
        assert_eq!(o(100).close_interval(), Duration::from_millis(10));
        // Guarded against a zero rate built by hand (config validation refuses it).
        assert_eq!(o(0).close_interval(), Duration::from_secs(1));
        // A rate above 10⁹ per second would give a zero period, which `interval` refuses.
        assert_eq!(o(u32::MAX).close_interval(), Duration::from_nanos(1));
    }

    #[test]
    fn options_read_the_config_defaults() {
        let o = DrainOptions::from_config(&CoreConfig::default());
        assert_eq!(o.window, Duration::from_secs(30));
        assert_eq!(o.close_rate, 100);
    }
}
