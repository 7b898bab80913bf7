//! [`ServiceCache`]: the local view of one service path, kept current by a persistent
//! recursive watch, and the task that follows that watch across reconnects and sessions.
//!
//! zookeeper-client has no PathChildrenCache (CRATES-AND-STYLE §2.2), so this is one: the
//! watch reports creations, deletions and data changes of the children; each event makes
//! the cache re-read the child it names, and any doubt (the service node itself changed, the
//! connection came back, a new session) re-reads all children. Reads always fetch the
//! current state and are serialised, so the cache only moves forward, whatever order events
//! and our own writes' refreshes interleave in.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mpush::spi::{ServiceListener, ServiceNode, SpiError, SpiResult};
use tokio::sync::watch;
use zookeeper_client::{AddWatchMode, Client, EventType, PersistentWatcher, SessionState};

use crate::BACKEND;
use crate::zk::{self, Backoff, Conn, ZkResult, bounded};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections only move plain data; a poisoned lock still holds a valid state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The id of a direct child of `service` named by `path`, if `path` is one.
fn child_id<'a>(service: &str, path: &'a str) -> Option<&'a str> {
    let id = path.strip_prefix(service)?.strip_prefix('/')?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

/// The cached nodes of one service and its listeners.
pub(crate) struct ServiceCache {
    service: String,
    /// Serialises every read-and-apply, so updates and notifications keep ZooKeeper's order.
    sync_lock: tokio::sync::Mutex<()>,
    /// The current nodes by id; read by `lookup` without waiting for a refresh in flight.
    nodes: Mutex<BTreeMap<String, ServiceNode>>,
    /// Held while notifying, so `remove_listener` returning means no call is in progress.
    listeners: Mutex<Vec<(u64, Arc<dyn ServiceListener>)>>,
    /// `true` once the cache has been filled from ZooKeeper at least once.
    synced: watch::Sender<bool>,
}

impl std::fmt::Debug for ServiceCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceCache")
            .field("service", &self.service)
            .field("nodes", &lock(&self.nodes).len())
            .field("listeners", &lock(&self.listeners).len())
            .field("synced", &*self.synced.borrow())
            .finish()
    }
}

impl ServiceCache {
    pub(crate) fn new(service: &str) -> Arc<Self> {
        Arc::new(Self {
            service: service.to_string(),
            sync_lock: tokio::sync::Mutex::new(()),
            nodes: Mutex::new(BTreeMap::new()),
            listeners: Mutex::new(Vec::new()),
            synced: watch::Sender::new(false),
        })
    }

    /// The cached nodes, sorted by node id descending (as MPush sorts ZooKeeper children).
    pub(crate) fn snapshot(&self) -> Vec<ServiceNode> {
        lock(&self.nodes).values().rev().cloned().collect()
    }

    /// Waits until the cache was filled once, for at most `limit`.
    pub(crate) async fn wait_synced(&self, limit: Duration) -> SpiResult<()> {
        let mut synced = self.synced.subscribe();
        let filled = tokio::time::timeout(limit, synced.wait_for(|s| *s))
            .await
            .is_ok_and(|r| r.is_ok());
        if filled {
            Ok(())
        } else {
            Err(SpiError::unavailable(
                BACKEND,
                format!("could not read {} within {limit:?}", self.service),
            ))
        }
    }

    pub(crate) fn add_listener(&self, id: u64, listener: Arc<dyn ServiceListener>) {
        lock(&self.listeners).push((id, listener));
    }

    pub(crate) fn remove_listener(&self, id: u64) {
        lock(&self.listeners).retain(|(i, _)| *i != id);
    }

    fn notify(&self, added: bool, node: &ServiceNode) {
        let listeners = lock(&self.listeners);
        for (id, listener) in listeners.iter() {
            // A panicking listener must not kill the watch task (and every later event).
            let call = std::panic::catch_unwind(AssertUnwindSafe(|| {
                if added {
                    listener.on_added(node)
                } else {
                    listener.on_removed(node)
                }
            }));
            if call.is_err() {
                tracing::error!(
                    subscription = id,
                    service = %self.service,
                    node_id = %node.node_id,
                    "service listener panicked"
                );
            }
        }
    }

    /// Sets one node (`None` = gone) and notifies the difference.
    fn apply(&self, id: &str, fresh: Option<ServiceNode>) {
        let old = {
            let mut nodes = lock(&self.nodes);
            match &fresh {
                Some(node) => nodes.insert(id.to_string(), node.clone()),
                None => nodes.remove(id),
            }
        };
        match (old, fresh) {
            (Some(old), None) => self.notify(false, &old),
            (old, Some(fresh)) if old.as_ref() != Some(&fresh) => self.notify(true, &fresh),
            _ => {}
        }
    }

    /// Replaces every node and notifies the differences (removals first).
    fn apply_all(&self, fresh: BTreeMap<String, ServiceNode>) {
        let old = std::mem::replace(&mut *lock(&self.nodes), fresh.clone());
        for (id, node) in &old {
            if !fresh.contains_key(id) {
                self.notify(false, node);
            }
        }
        for (id, node) in &fresh {
            if old.get(id) != Some(node) {
                self.notify(true, node);
            }
        }
    }

    /// Re-reads all children.
    pub(crate) async fn resync(&self, client: &Client, limit: Duration) -> ZkResult<()> {
        let _order = self.sync_lock.lock().await;
        let fresh = bounded(limit, zk::read_all(client, &self.service)).await?;
        self.apply_all(fresh);
        Ok(())
    }

    /// Re-reads one child, if the cache is in use (an unsynced cache reads it anyway when it
    /// fills). Called after our own writes so `lookup` reflects them at once.
    pub(crate) async fn refresh_child(
        &self,
        client: &Client,
        id: &str,
        limit: Duration,
    ) -> ZkResult<()> {
        if !*self.synced.borrow() {
            return Ok(());
        }
        let _order = self.sync_lock.lock().await;
        let fresh = bounded(limit, zk::read_child(client, &self.service, id)).await?;
        self.apply(id, fresh);
        Ok(())
    }

    /// Handles a node event of the recursive watch.
    async fn on_node_event(&self, client: &Client, path: &str, limit: Duration) -> ZkResult<()> {
        if path == self.service {
            // The service node itself was created or deleted: re-read everything.
            return self.resync(client, limit).await;
        }
        match child_id(&self.service, path) {
            Some(id) => {
                let _order = self.sync_lock.lock().await;
                let fresh = bounded(limit, zk::read_child(client, &self.service, id)).await?;
                self.apply(id, fresh);
                Ok(())
            }
            // Deeper descendants are not service nodes.
            None => Ok(()),
        }
    }

    /// Installs the watch on `client`'s session, then fills the cache. The watch comes
    /// first so that nothing changing during the read is missed.
    async fn attach(&self, client: &Client, limit: Duration) -> ZkResult<PersistentWatcher> {
        let watcher = bounded(
            limit,
            client.watch(&self.service, AddWatchMode::PersistentRecursive),
        )
        .await?;
        self.resync(client, limit).await?;
        self.synced.send_replace(true);
        Ok(watcher)
    }
}

/// Why [`follow`] stopped.
enum Followed {
    /// A new client was published: attach to it at once.
    NewClient,
    /// The session ended or a read failed: attach again after a pause.
    Failed,
    /// The registry is gone.
    Stop,
}

/// The watch task of one cache: attaches to the current client, follows its events, and
/// attaches again (after a back-off pause) whenever the session, the client or a read fails.
pub(crate) async fn watch_service(
    cache: Arc<ServiceCache>,
    mut clients: watch::Receiver<Option<Conn>>,
    limit: Duration,
) {
    let mut backoff = Backoff::new();
    loop {
        let conn = match clients.wait_for(Option::is_some).await {
            Ok(conn) => conn.clone(),
            Err(_) => return,
        };
        let Some(conn) = conn else { continue };
        match cache.attach(&conn.client, limit).await {
            Ok(mut watcher) => {
                tracing::debug!(service = %cache.service, generation = conn.generation, "watching service");
                backoff.reset();
                match follow(&cache, &conn.client, &mut watcher, &mut clients, limit).await {
                    Followed::NewClient => continue,
                    Followed::Stop => return,
                    Followed::Failed => {}
                }
            }
            Err(e) => {
                tracing::warn!(service = %cache.service, error = %e, "cannot watch service; retrying");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.next_delay()) => {}
            changed = clients.changed() => if changed.is_err() { return },
        }
    }
}

async fn follow(
    cache: &ServiceCache,
    client: &Client,
    watcher: &mut PersistentWatcher,
    clients: &mut watch::Receiver<Option<Conn>>,
    limit: Duration,
) -> Followed {
    loop {
        tokio::select! {
            event = watcher.changed() => {
                tracing::trace!(service = %cache.service, ?event, "watch event");
                let result = match event.event_type {
                    EventType::Session => match event.session_state {
                        SessionState::Disconnected => Ok(()),
                        // Events during a disconnection can be lost (ZOOKEEPER-4698).
                        SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                            cache.resync(client, limit).await
                        }
                        // Terminal: this watcher must not be polled again (it would panic).
                        _ => return Followed::Failed,
                    },
                    _ => cache.on_node_event(client, &event.path, limit).await,
                };
                if let Err(e) = result {
                    tracing::warn!(service = %cache.service, error = %e, "service cache refresh failed; re-watching");
                    return Followed::Failed;
                }
            }
            changed = clients.changed() => {
                return if changed.is_ok() { Followed::NewClient } else { Followed::Stop };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_ids() {
        assert_eq!(child_id("/cluster/cs", "/cluster/cs/abc"), Some("abc"));
        assert_eq!(child_id("/cluster/cs", "/cluster/cs"), None);
        assert_eq!(child_id("/cluster/cs", "/cluster/cs/a/b"), None);
        assert_eq!(child_id("/cluster/cs", "/cluster/csx/a"), None);
        assert_eq!(child_id("/cluster/cs", "/cluster/cs/"), None);
    }
}
