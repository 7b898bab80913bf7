//! `ExecutorFactory`: where the server's work runs, mapped onto tokio.
//!
//! MPush sizes Netty event loops and Java thread pools (`mp.thread.pool.*`). In tokio the
//! I/O and push work share the runtime's workers; what must stay off them is the RSA private
//! key operation of the handshake (≈0.7 ms of CPU each), which goes to the blocking pool.

use std::future::Future;
use std::pin::Pin;

use tokio::runtime::Handle;

/// The kinds of work the server schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutorRole {
    /// Per-connection read/write tasks and listeners (`conn-work`, `gateway-server-work`).
    Io,
    /// Push tasks: unicast, batch and broadcast fan-out (`push-task`).
    Push,
    /// Callbacks into the host application and MQ deliveries (`event-bus`, `mq`).
    Callback,
}

/// Supplies the runtime handles and the blocking executor the server uses.
///
/// An implementation must return handles of a multi-threaded runtime that outlives the server.
pub trait ExecutorFactory: Send + Sync + 'static {
    /// The runtime on which work of `role` is spawned.
    fn handle(&self, role: ExecutorRole) -> Handle;

    /// Runs CPU-heavy, blocking work (RSA decryption) without stalling I/O workers.
    fn run_blocking(
        &self,
        job: Box<dyn FnOnce() + Send + 'static>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let task = self.handle(ExecutorRole::Io).spawn_blocking(job);
        Box::pin(async move {
            let _ = task.await;
        })
    }
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
