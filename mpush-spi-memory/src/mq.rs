//! [`MemoryMQ`]: publish/subscribe between the server nodes sharing a [`MemoryHub`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use mpush::spi::{MQClient, MQMessageListener, SpiResult, SubscriptionId};

use crate::hub::MemoryHub;
use mpush::spi::delivery::{self, Outlet, SubState};

/// The channels of one hub.
#[derive(Debug, Default)]
pub(crate) struct PubSub {
    inner: Mutex<PubSubInner>,
}

#[derive(Debug, Default)]
struct PubSubInner {
    channels: HashMap<String, Vec<Outlet<Arc<str>>>>,
    channel_of: HashMap<u64, String>,
}

impl PubSub {
    fn lock(&self) -> std::sync::MutexGuard<'_, PubSubInner> {
        // Critical sections only move plain data, so a poisoned lock still holds valid state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn add(&self, channel: &str, outlet: Outlet<Arc<str>>) {
        let mut inner = self.lock();
        inner.channel_of.insert(outlet.id, channel.to_string());
        inner
            .channels
            .entry(channel.to_string())
            .or_default()
            .push(outlet);
    }

    /// Detaches subscription `id`; its queue closes once the returned state's owner is done.
    fn remove(&self, id: u64) -> Option<Arc<SubState>> {
        let mut inner = self.lock();
        let channel = inner.channel_of.remove(&id)?;
        let subs = inner.channels.get_mut(&channel)?;
        let pos = subs.iter().position(|o| o.id == id)?;
        let outlet = subs.swap_remove(pos);
        if subs.is_empty() {
            inner.channels.remove(&channel);
        }
        Some(outlet.state)
    }

    /// Queues `message` for every subscriber of `channel`.
    ///
    /// Queuing happens under the lock, so messages published one after another (from any
    /// publisher) are queued, and therefore delivered, in that order to every subscriber.
    fn publish(&self, channel: &str, message: &str) {
        let inner = self.lock();
        if let Some(subs) = inner.channels.get(channel) {
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
    owned: Mutex<HashSet<u64>>,
}

impl MemoryMQ {
    /// A handle on `hub`'s bus.
    pub fn new(hub: Arc<MemoryHub>) -> Self {
        Self {
            hub,
            owned: Mutex::new(HashSet::new()),
        }
    }

    /// The hub this handle publishes on.
    pub fn hub(&self) -> &Arc<MemoryHub> {
        &self.hub
    }

    fn owned(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.owned.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for MemoryMQ {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryMQ")
            .field("subscriptions", &self.owned().len())
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
        let id = self.hub.next_id();
        let name = channel.to_string();
        let outlet = delivery::open(
            crate::BACKEND,
            id,
            self.hub.queue_capacity(),
            channel,
            move |m: Arc<str>| listener.on_message(&name, &m),
        )?;
        self.owned().insert(id);
        self.hub.pubsub.add(channel, outlet);
        Ok(SubscriptionId(id))
    }

    async fn unsubscribe(&self, id: SubscriptionId) -> SpiResult<()> {
        self.owned().remove(&id.0);
        if let Some(state) = self.hub.pubsub.remove(id.0) {
            state.close().await;
        }
        Ok(())
    }

    async fn publish(&self, channel: &str, message: &str) -> SpiResult<()> {
        self.hub.pubsub.publish(channel, message);
        Ok(())
    }
}

impl Drop for MemoryMQ {
    fn drop(&mut self) {
        let owned = std::mem::take(&mut *self.owned());
        for id in owned {
            if let Some(state) = self.hub.pubsub.remove(id) {
                state.close_now();
            }
        }
    }
}
