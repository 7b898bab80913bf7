//! Per-subscriber delivery for backends: a bounded queue drained by a thread that calls the
//! listener.
//!
//! Publishers only `try_send`, so a slow or stuck listener costs its own queue, never the
//! publisher or the other subscribers. A full queue drops the message and logs it: best
//! effort, like Redis pub/sub dropping a slow client's output. Shared by the memory and
//! Redis backends (MQ listeners, discovery listeners).
//!
//! Listeners are synchronous callbacks, so each subscription gets its own OS thread rather
//! than a tokio task: a listener that blocks (a lock, a slow log sink, a bug) then blocks its
//! own thread only. As a task it blocked a runtime worker, and tokio does not move every task
//! off a blocked worker (its LIFO slot is never stolen, and a parked sibling is not always
//! woken), so other subscribers' deliveries could starve. Subscriptions are few (a server's
//! kick channel, a sender's discovery watch), one thread each; the thread enters the
//! subscribing runtime around each call, so listeners may `tokio::spawn`.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{SpiError, SpiResult};
use tokio::sync::{Mutex as AsyncMutex, mpsc};

/// How often a persistently full queue is reported: the first drop, then every N-th.
const DROP_LOG_EVERY: u64 = 1000;

/// Shared between a subscription's owner and its delivery thread.
#[derive(Debug)]
pub struct SubState {
    backend: &'static str,
    active: AtomicBool,
    /// Held by the delivery thread around each listener call, so `close` can wait one out.
    in_call: AsyncMutex<()>,
    dropped: AtomicU64,
}

impl SubState {
    /// Stops deliveries and returns once no listener call is in progress: afterwards the
    /// listener is never called again, even for messages still queued.
    pub async fn close(&self) {
        self.active.store(false, Ordering::SeqCst);
        drop(self.in_call.lock().await);
    }

    /// Stops deliveries without waiting for a call in progress (for `Drop`, which cannot await).
    pub fn close_now(&self) {
        self.active.store(false, Ordering::SeqCst);
    }
}

/// The publishing side of one subscription.
#[derive(Debug)]
pub struct Outlet<M> {
    /// The subscription id.
    pub id: u64,
    /// Shared with the delivery thread; close it to stop deliveries.
    pub state: Arc<SubState>,
    tx: mpsc::Sender<M>,
    label: Arc<str>,
}

impl<M> Outlet<M> {
    /// Queues `msg` without waiting; drops it (and logs) when the queue is full.
    pub fn offer(&self, msg: M) {
        match self.tx.try_send(msg) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.state.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped == 1 || dropped.is_multiple_of(DROP_LOG_EVERY) {
                    tracing::warn!(
                        subscription = self.id,
                        target_name = %self.label,
                        dropped_total = dropped,
                        backend = self.state.backend,
                        "subscriber queue full, message dropped (slow listener)"
                    );
                }
            }
            // The delivery thread ended (subscription closing): nothing left to deliver to.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Opens a subscription whose messages are passed to `handler` by a dedicated thread (named
/// `mpush-sub-<id>`), inside the current tokio runtime's context; `backend` and `label`
/// (channel or service name) only serve the logs. The thread ends when the returned
/// [`Outlet`] is dropped (after the message in hand) or the subscription is closed.
pub fn open<M, F>(
    backend: &'static str,
    id: u64,
    capacity: usize,
    label: &str,
    handler: F,
) -> SpiResult<Outlet<M>>
where
    M: Send + 'static,
    F: Fn(M) + Send + 'static,
{
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|e| SpiError::backend_from(backend, "subscribing needs a tokio runtime", e))?;
    let (tx, mut rx) = mpsc::channel::<M>(capacity.max(1));
    let state = Arc::new(SubState {
        backend,
        active: AtomicBool::new(true),
        in_call: AsyncMutex::new(()),
        dropped: AtomicU64::new(0),
    });
    let label: Arc<str> = Arc::from(label);
    let task_state = state.clone();
    let task_label = label.clone();
    std::thread::Builder::new()
        .name(format!("mpush-sub-{id}"))
        .spawn(move || {
            // Neither blocking call below may run inside a runtime context: the runtime is
            // entered only around the listener call.
            while let Some(msg) = rx.blocking_recv() {
                let _in_call = task_state.in_call.blocking_lock();
                if !task_state.active.load(Ordering::SeqCst) {
                    break;
                }
                let _runtime = runtime.enter();
                // A panicking listener must not silently end the subscription for later
                // messages.
                if catch_unwind(AssertUnwindSafe(|| handler(msg))).is_err() {
                    tracing::error!(
                        subscription = id,
                        target_name = %task_label,
                        backend = task_state.backend,
                        "listener panicked; delivery continues"
                    );
                }
            }
        })
        .map_err(|e| SpiError::backend_from(backend, "cannot start a delivery thread", e))?;
    Ok(Outlet {
        id,
        state,
        tx,
        label,
    })
}
