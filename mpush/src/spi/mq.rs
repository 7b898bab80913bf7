//! `MQClient`: cluster-wide publish/subscribe (Redis pub/sub in production).

use std::sync::Arc;

use async_trait::async_trait;

use super::SpiResult;

/// Receives messages of a subscribed channel.
///
/// The contract a listener must keep:
/// * Calls for one subscription come one at a time, in order, from that subscription's own
///   delivery thread (see [`crate::spi::delivery`]), inside the subscribing tokio runtime's
///   context: `tokio::spawn` works; blocking on async work (`block_in_place`) does not.
/// * Return quickly; hand long or async work to a task. While a call runs, further messages
///   wait in the subscription's bounded queue and, once it is full, are dropped (logged).
///   A listener that blocks costs only its own messages, never the publisher, other
///   subscribers or the runtime's workers.
/// * `unsubscribe` waits for a call in progress, so a listener must not wait for its own
///   unsubscribe.
/// * A panic is caught and logged; delivery continues with the next message.
pub trait MQMessageListener: Send + Sync + 'static {
    /// One message published on `channel`.
    fn on_message(&self, channel: &str, message: &str);
}

impl<F> MQMessageListener for F
where
    F: Fn(&str, &str) + Send + Sync + 'static,
{
    fn on_message(&self, channel: &str, message: &str) {
        self(channel, message)
    }
}

/// Identifies one subscription, for [`MQClient::unsubscribe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubscriptionId(pub u64);

/// Publish/subscribe between server nodes: online/offline events and cluster kicks (§8.4, §10).
///
/// What an implementation must guarantee:
/// * **Fan-out**: every listener subscribed to a channel (on any node sharing the backend)
///   receives each message published after its `subscribe` returned, at most once.
/// * **Order**: messages from one publisher on one channel arrive in publish order.
/// * **Delivery is best effort** (as Redis pub/sub): a node that is disconnected misses
///   messages, but the backend must re-subscribe by itself after a reconnect and must log
///   (not silently drop) what it could not deliver.
/// * After `unsubscribe` returns, the listener is not called again.
#[async_trait]
pub trait MQClient: Send + Sync + 'static {
    /// Subscribes `listener` to `channel`.
    async fn subscribe(
        &self,
        channel: &str,
        listener: Arc<dyn MQMessageListener>,
    ) -> SpiResult<SubscriptionId>;
    /// Removes a subscription made by [`MQClient::subscribe`].
    async fn unsubscribe(&self, id: SubscriptionId) -> SpiResult<()>;
    /// Publishes `message` on `channel`.
    async fn publish(&self, channel: &str, message: &str) -> SpiResult<()>;
}
