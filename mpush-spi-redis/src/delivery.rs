//! Per-listener delivery: a bounded queue drained by a task that calls the listener.
//!
//! The push dispatcher only `try_send`s, so a slow or stuck listener costs its own queue,
//! never the dispatcher or the other listeners. A full queue drops the message and logs it:
//! best effort, as Redis pub/sub itself. Same design as the memory backend's delivery.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mpush::spi::{MQMessageListener, SpiError, SpiResult};
use tokio::sync::{Mutex as AsyncMutex, mpsc};

use crate::BACKEND;

/// How often a persistently full queue is reported: the first drop, then every N-th.
const DROP_LOG_EVERY: u64 = 1000;

/// Shared between a subscription's owner and its delivery task.
#[derive(Debug)]
pub(crate) struct SubState {
    active: AtomicBool,
    /// Held by the delivery task around each listener call, so `close` can wait one out.
    in_call: AsyncMutex<()>,
    dropped: AtomicU64,
}

impl SubState {
    /// Stops deliveries and returns once no listener call is in progress: afterwards the
    /// listener is never called again, even for messages still queued.
    pub(crate) async fn close(&self) {
        self.active.store(false, Ordering::SeqCst);
        drop(self.in_call.lock().await);
    }

    /// Stops deliveries without waiting for a call in progress (for `Drop`, which cannot await).
    pub(crate) fn close_now(&self) {
        self.active.store(false, Ordering::SeqCst);
    }
}

/// The dispatcher's side of one subscription.
#[derive(Debug)]
pub(crate) struct Outlet {
    pub(crate) id: u64,
    pub(crate) state: Arc<SubState>,
    tx: mpsc::Sender<Arc<str>>,
    channel: Arc<str>,
}

impl Outlet {
    /// Queues `message` without waiting; drops it (and logs) when the queue is full.
    pub(crate) fn offer(&self, message: Arc<str>) {
        match self.tx.try_send(message) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.state.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                if dropped == 1 || dropped.is_multiple_of(DROP_LOG_EVERY) {
                    tracing::warn!(
                        subscription = self.id,
                        channel = %self.channel,
                        dropped_total = dropped,
                        "redis backend: listener queue full, message dropped (slow listener)"
                    );
                }
            }
            // The delivery task ended (subscription closing): nothing left to deliver to.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// Opens subscription `id` on `channel`: messages offered to the returned outlet are passed
/// to `listener` by a task on the current tokio runtime.
pub(crate) fn open(
    id: u64,
    capacity: usize,
    channel: &str,
    listener: Arc<dyn MQMessageListener>,
) -> SpiResult<Outlet> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|e| {
        SpiError::backend(BACKEND, format!("subscribing needs a tokio runtime: {e}"))
    })?;
    let (tx, mut rx) = mpsc::channel::<Arc<str>>(capacity.max(1));
    let state = Arc::new(SubState {
        active: AtomicBool::new(true),
        in_call: AsyncMutex::new(()),
        dropped: AtomicU64::new(0),
    });
    let channel: Arc<str> = Arc::from(channel);
    let task_state = state.clone();
    let task_channel = channel.clone();
    runtime.spawn(async move {
        while let Some(message) = rx.recv().await {
            let _in_call = task_state.in_call.lock().await;
            if !task_state.active.load(Ordering::SeqCst) {
                break;
            }
            // A panicking listener must not silently end the subscription for later messages.
            let call = AssertUnwindSafe(|| listener.on_message(&task_channel, &message));
            if catch_unwind(call).is_err() {
                tracing::error!(
                    subscription = id,
                    channel = %task_channel,
                    "redis backend: MQ listener panicked; delivery continues"
                );
            }
        }
    });
    Ok(Outlet {
        id,
        state,
        tx,
        channel,
    })
}
