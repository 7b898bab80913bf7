//! `MQClient`: cluster-wide publish/subscribe (Redis pub/sub in production).

use std::sync::Arc;

use async_trait::async_trait;

use super::SpiResult;

/// Receives messages of a subscribed channel.
///
/// Called from the backend's delivery task: it must not block. Hand long work to a task.
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
