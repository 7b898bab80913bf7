//! [`MemoryServiceRegistry`]: service registration and discovery inside one [`MemoryHub`].

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use mpush::spi::{
    ServiceDiscovery, ServiceListener, ServiceNode, ServiceRegistry, SpiError, SpiResult,
    SubscriptionId,
};

use crate::BACKEND;
use crate::hub::MemoryHub;
use crate::outlets::{Outlets, Owned};
use mpush::spi::delivery::{Outlet, SubState};

/// A change of one service, as queued for a watcher.
#[derive(Debug)]
enum ServiceEvent {
    Added(ServiceNode),
    Removed(ServiceNode),
}

#[derive(Debug)]
struct Registered {
    node: ServiceNode,
    /// The handle that registered it: its node disappears with that handle (ephemeral).
    owner: u64,
}

/// The services of one hub.
#[derive(Debug, Default)]
pub(crate) struct Services {
    inner: Mutex<ServicesInner>,
}

#[derive(Debug, Default)]
struct ServicesInner {
    nodes: HashMap<String, BTreeMap<String, Registered>>,
    watchers: Outlets<ServiceEvent>,
}

impl ServicesInner {
    /// Queues a change for the watchers of `service`.
    ///
    /// Called under the lock that made the change, so every watcher sees the changes in the
    /// order they happened.
    fn notify(&self, service: &str, event: impl Fn() -> ServiceEvent) {
        for outlet in self.watchers.of(service) {
            outlet.offer(event());
        }
    }

    fn remove_node(&mut self, service: &str, node_id: &str, owner: Option<u64>) {
        let Some(nodes) = self.nodes.get_mut(service) else {
            return;
        };
        if owner.is_some_and(|o| nodes.get(node_id).is_some_and(|r| r.owner != o)) {
            return;
        }
        let Some(removed) = nodes.remove(node_id) else {
            return;
        };
        if nodes.is_empty() {
            self.nodes.remove(service);
        }
        self.notify(service, || ServiceEvent::Removed(removed.node.clone()));
    }
}

impl Services {
    fn lock(&self) -> std::sync::MutexGuard<'_, ServicesInner> {
        // Critical sections only move plain data, so a poisoned lock still holds valid state.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn register(&self, node: &ServiceNode, owner: u64) {
        let mut inner = self.lock();
        inner
            .nodes
            .entry(node.service_name.clone())
            .or_default()
            .insert(
                node.node_id.clone(),
                Registered {
                    node: node.clone(),
                    owner,
                },
            );
        inner.notify(&node.service_name, || ServiceEvent::Added(node.clone()));
    }

    fn deregister(&self, service: &str, node_id: &str) {
        self.lock().remove_node(service, node_id, None);
    }

    /// Removes every node registered by handle `owner`, as a ZooKeeper session end would.
    fn remove_owned(&self, owner: u64) {
        let mut inner = self.lock();
        let owned: Vec<(String, String)> = inner
            .nodes
            .iter()
            .flat_map(|(service, nodes)| {
                nodes
                    .iter()
                    .filter(|(_, r)| r.owner == owner)
                    .map(|(id, _)| (service.clone(), id.clone()))
            })
            .collect();
        for (service, node_id) in owned {
            inner.remove_node(&service, &node_id, Some(owner));
        }
    }

    fn lookup(&self, service: &str) -> Vec<ServiceNode> {
        let inner = self.lock();
        inner
            .nodes
            .get(service)
            .map(|nodes| nodes.values().rev().map(|r| r.node.clone()).collect())
            .unwrap_or_default()
    }

    fn watch(&self, service: &str, outlet: Outlet<ServiceEvent>) {
        self.lock().watchers.add(service, outlet);
    }

    fn unwatch(&self, id: u64) -> Option<Arc<SubState>> {
        self.lock().watchers.remove(id)
    }
}

/// A [`ServiceRegistry`] and [`ServiceDiscovery`] over a [`MemoryHub`]: one "node"'s session
/// with the in-process registry.
///
/// Guarantees: nodes are keyed by (service name, node id); `register` replaces the node at
/// that key and notifies `on_added` (also for a replacement, without `on_removed`);
/// `deregister` of an absent node is `Ok` and notifies nothing; `lookup` returns the current
/// nodes sorted by node id descending, as MPush sorts ZooKeeper children. Watchers get every
/// change made after `subscribe` returned, in order, through their own queue and task (a
/// full queue drops the event with a warning, as for [`crate::MemoryMQ`]); after
/// `unsubscribe` returns the listener is not called again. Nodes are ephemeral: dropping
/// the handle removes the nodes it registered (watchers see `on_removed`) and its watches,
/// as a ZooKeeper session end would. `subscribe` must run inside a tokio runtime.
pub struct MemoryServiceRegistry {
    hub: Arc<MemoryHub>,
    session: u64,
    watches: Owned,
}

impl MemoryServiceRegistry {
    /// A new session on `hub`'s registry.
    pub fn new(hub: Arc<MemoryHub>) -> Self {
        let session = hub.next_id();
        Self {
            hub,
            session,
            watches: Owned::default(),
        }
    }

    /// The hub this handle registers in.
    pub fn hub(&self) -> &Arc<MemoryHub> {
        &self.hub
    }
}

impl fmt::Debug for MemoryServiceRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryServiceRegistry")
            .field("session", &self.session)
            .field("watches", &self.watches.len())
            .finish()
    }
}

#[async_trait]
impl ServiceRegistry for MemoryServiceRegistry {
    async fn register(&self, node: &ServiceNode) -> SpiResult<()> {
        // ZooKeeper rejects empty path segments; failing here keeps tests honest.
        if node.service_name.is_empty() || node.node_id.is_empty() {
            return Err(SpiError::backend(
                BACKEND,
                format!("cannot register a node without service name or node id: {node:?}"),
            ));
        }
        self.hub.services.register(node, self.session);
        Ok(())
    }

    async fn deregister(&self, node: &ServiceNode) -> SpiResult<()> {
        self.hub
            .services
            .deregister(&node.service_name, &node.node_id);
        Ok(())
    }
}

#[async_trait]
impl ServiceDiscovery for MemoryServiceRegistry {
    async fn lookup(&self, service_name: &str) -> SpiResult<Vec<ServiceNode>> {
        Ok(self.hub.services.lookup(service_name))
    }

    async fn subscribe(
        &self,
        service_name: &str,
        listener: Arc<dyn ServiceListener>,
    ) -> SpiResult<SubscriptionId> {
        let outlet =
            self.hub
                .open_outlet(service_name, move |event: ServiceEvent| match event {
                    ServiceEvent::Added(node) => listener.on_added(&node),
                    ServiceEvent::Removed(node) => listener.on_removed(&node),
                })?;
        let id = outlet.id;
        self.watches.insert(id);
        self.hub.services.watch(service_name, outlet);
        Ok(SubscriptionId(id))
    }

    async fn unsubscribe(&self, id: SubscriptionId) -> SpiResult<()> {
        self.watches
            .end(id.0, |id| self.hub.services.unwatch(id))
            .await;
        Ok(())
    }
}

impl Drop for MemoryServiceRegistry {
    fn drop(&mut self) {
        self.watches.end_all(|id| self.hub.services.unwatch(id));
        self.hub.services.remove_owned(self.session);
    }
}
