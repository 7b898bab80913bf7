//! `ExecutorFactory`: where the server's work runs, mapped onto tokio.
//!
//! MPush sizes Netty event loops and Java thread pools (`mp.thread.pool.*`). In tokio:
//! - [`ExecutorRole::Io`]: listeners and per-connection tasks (Netty's `conn-work`,
//!   `gateway-server-work`);
//! - [`ExecutorRole::Push`]: push tasks started by gateway requests, unicast and broadcast
//!   (`push-task`);
//! - [`ExecutorRole::Blocking`]: the runtime whose blocking pool runs the RSA private-key
//!   operation of each handshake (≈0.7 ms of CPU) so it never stalls an I/O worker.
//!
//! By default all three are the runtime that called `start`. An embedding application can
//! isolate push fan-out or handshakes on runtimes of their own.

use tokio::runtime::Handle;

/// The kinds of work the server schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutorRole {
    /// Per-connection read/write tasks and listeners (`conn-work`, `gateway-server-work`).
    Io,
    /// Push tasks: unicast, batch and broadcast fan-out (`push-task`).
    Push,
    /// CPU-heavy blocking work (RSA decryption) on this runtime's blocking pool.
    Blocking,
}

/// Supplies the runtime handles and the blocking executor the server uses.
///
/// An implementation must return handles of a multi-threaded runtime that outlives the server.
pub trait ExecutorFactory: Send + Sync + 'static {
    /// The runtime on which work of `role` is spawned.
    fn handle(&self, role: ExecutorRole) -> Handle;
}

/// The default: everything on the runtime that started the server; blocking work on its
/// blocking pool.
#[derive(Debug, Clone)]
pub struct TokioExecutorFactory {
    handle: Handle,
}

impl TokioExecutorFactory {
    /// Uses the current runtime. Panics outside a tokio runtime (a programming error).
    pub fn current() -> Self {
        Self {
            handle: Handle::current(),
        }
    }

    /// Uses the given runtime for every role.
    pub fn new(handle: Handle) -> Self {
        Self { handle }
    }
}

impl ExecutorFactory for TokioExecutorFactory {
    fn handle(&self, _role: ExecutorRole) -> Handle {
        self.handle.clone()
    }
}
