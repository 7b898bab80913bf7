//! [`MemoryMQ`]: publish/subscribe between the server nodes sharing a [`MemoryHub`].

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use mpush::spi::{MQClient, MQMessageListener, SpiResult, SubscriptionId};

use crate::hub::MemoryHub;
use crate::outlets::{Outlets, Owned};
use mpush::spi::delivery::{Outlet, SubState};

/// The channels of one hub.
#[derive(Debug, Default)]
pub(crate) struct PubSub {
    inner: Mutex<Outlets<Arc<str>>>,
}

impl PubSub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Outlets<Arc<str>>> {
        // Critical sections only move plain data, so a poisoned lock still holds valid state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, channel: &str, outlet: Outlet<Arc<str>>) {
        self.lock().add(channel, outlet);
    }

    /// Detaches subscription `id`; its queue closes once the returned state's owner is done.
    fn remove(&self, id: u64) -> Option<Arc<SubState>> {
        self.lock().remove(id)
    }

    /// Queues `message` for every subscriber of `channel`.
    ///
    /// Queuing happens under the lock, so messages published one after another (from any
    /// publisher) are queued, and therefore delivered, in that order to every subscriber.
    fn publish(&self, channel: &str, message: &str) {
        let inner = self.lock();
        let subs = inner.of(channel);
        if !subs.is_empty() {
            let message: Arc<str> = Arc::from(message);
            for outlet in subs {
                outlet.offer(message.clone());
            }
        }
    }
}

/// An [`MQClient`] over a [`MemoryHub`]: one "node"'s connection to the in-process bus.
///
/// Guarantees: a message published on the hub reaches every subscription that existed when
/// `publish` was called, from any handle on the same hub, at most once; messages published
/// one after another arrive in that order; `publish` never waits for listeners. Each
/// subscription has its own queue of [`MemoryHub::queue_capacity`] messages and a task that
/// calls the listener; when the queue is full the message is dropped for that subscriber
/// and a `tracing` warning is logged (best effort, as Redis pub/sub). After `unsubscribe`
/// returns the listener is not called again, even for messages still queued (it waits for
/// a call in progress). Dropping the handle ends its subscriptions, as a disconnecting
/// Redis client would (a call in progress may still finish).
/// `subscribe` must run inside a tokio runtime, whose context the delivery thread enters.
pub struct MemoryMQ {
    hub: Arc<MemoryHub>,
    owned: Owned,
}

impl MemoryMQ {
    /// A handle on `hub`'s bus.
    pub fn new(hub: Arc<MemoryHub>) -> Self {
        Self {
            hub,
            owned: Owned::default(),
        }
    }

    /// The hub this handle publishes on.
    pub fn hub(&self) -> &Arc<MemoryHub> {
        &self.hub
    }
}

impl fmt::Debug for MemoryMQ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryMQ")
            .field("subscriptions", &self.owned.len())
            .finish()
    }
}

#[async_trait]
impl MQClient for MemoryMQ {
    async fn subscribe(
        &self,
        channel: &str,
        listener: Arc<dyn MQMessageListener>,
    ) -> SpiResult<SubscriptionId> {
        let name = channel.to_string();
        let outlet = self
            .hub
            .open_outlet(channel, move |m: Arc<str>| listener.on_message(&name, &m))?;
        let id = outlet.id;
        self.owned.insert(id);
        self.hub.pubsub.add(channel, outlet);
        Ok(SubscriptionId(id))
    }

    async fn unsubscribe(&self, id: SubscriptionId) -> SpiResult<()> {
        self.owned.end(id.0, |id| self.hub.pubsub.remove(id)).await;
        Ok(())
    }

    async fn publish(&self, channel: &str, message: &str) -> SpiResult<()> {
        self.hub.pubsub.publish(channel, message);
        Ok(())
    }
}

impl Drop for MemoryMQ {
    fn drop(&mut self) {
        self.owned.end_all(|id| self.hub.pubsub.remove(id));
    }
}
