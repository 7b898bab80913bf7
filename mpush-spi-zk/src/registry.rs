//! [`ZkServiceRegistry`]: [`ServiceRegistry`] + [`ServiceDiscovery`] on ZooKeeper, with a
//! supervisor that survives session expiry.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use mpush::spi::{
    ServiceDiscovery, ServiceListener, ServiceNode, ServiceRegistry, SpiError, SpiResult,
    SubscriptionId,
};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use zookeeper_client::{Error as ZkError, SessionInfo, SessionState};

use crate::cache::{self, ServiceCache};
use crate::zk::{self, Backoff, Conn, bounded, to_spi};
use crate::{BACKEND, ZkOptions};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Critical sections only move plain data; a poisoned lock still holds a valid state.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Checks a service path as ZooKeeper will need it (`/a/b`: absolute, no empty segment).
fn check_service(service: &str) -> SpiResult<()> {
    let ok = service.len() > 1
        && service.starts_with('/')
        && service[1..]
            .split('/')
            .all(|s| !s.is_empty() && s != "." && s != "..");
    if ok {
        Ok(())
    } else {
        Err(SpiError::backend(
            BACKEND,
            format!(
                "invalid service path {service:?}: expected an absolute ZooKeeper path like \"/cluster/cs\""
            ),
        ))
    }
}

fn check_node(node: &ServiceNode) -> SpiResult<()> {
    check_service(&node.service_name)?;
    let id = &node.node_id;
    if id.is_empty() || id.contains('/') || id == "." || id == ".." {
        return Err(SpiError::backend(
            BACKEND,
            format!("invalid node id {id:?} (one path segment expected)"),
        ));
    }
    Ok(())
}

/// State shared by the handle, the supervisor and the watch tasks.
struct Inner {
    options: ZkOptions,
    /// The live client, `None` while a session is being rebuilt or after `close`.
    clients: watch::Sender<Option<Conn>>,
    /// Our registered nodes by path: re-created after a new session. The lock also
    /// serialises register / deregister / re-registration.
    registered: tokio::sync::Mutex<BTreeMap<String, ServiceNode>>,
    /// Caches by service path: created by the first lookup or subscribe, kept until close.
    caches: Mutex<HashMap<String, Arc<ServiceCache>>>,
    subscriptions: Mutex<HashMap<u64, Arc<ServiceCache>>>,
    next_id: AtomicU64,
    /// The supervisor and the watch tasks, aborted on close.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl Inner {
    fn current(&self) -> SpiResult<Conn> {
        if self.closed.load(Ordering::Acquire) {
            return Err(SpiError::unavailable(BACKEND, "the registry is closed"));
        }
        self.clients
            .borrow()
            .clone()
            .ok_or_else(|| SpiError::unavailable(BACKEND, "no ZooKeeper session (reconnecting)"))
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let handle = tokio::spawn(task);
        let mut tasks = lock(&self.tasks);
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }

    /// The cache of `service`, created (with its watch task) on first use.
    fn cache(&self, service: &str) -> SpiResult<Arc<ServiceCache>> {
        check_service(service)?;
        if self.closed.load(Ordering::Acquire) {
            return Err(SpiError::unavailable(BACKEND, "the registry is closed"));
        }
        let mut caches = lock(&self.caches);
        if let Some(cache) = caches.get(service) {
            return Ok(cache.clone());
        }
        let cache = ServiceCache::new(service);
        caches.insert(service.to_string(), cache.clone());
        drop(caches);
        self.spawn(cache::watch_service(
            cache.clone(),
            self.clients.subscribe(),
            self.options.operation_timeout,
        ));
        Ok(cache)
    }

    /// Makes sure every registered node exists and belongs to `conn`'s session; re-writes
    /// those that do not (after a new session, or if someone deleted them). `true` if all
    /// are in place.
    async fn reconcile(&self, conn: &Conn) -> bool {
        let limit = self.options.operation_timeout;
        let acls = zk::acls(&self.options);
        let session = conn.client.session_id().0;
        let registered = self.registered.lock().await;
        let mut all_ok = true;
        for (path, node) in registered.iter() {
            let present = bounded(limit, conn.client.check_stat(path)).await;
            if matches!(&present, Ok(Some(stat)) if stat.ephemeral_owner == session) {
                continue;
            }
            match bounded(limit, zk::write_node(&conn.client, acls, node)).await {
                Ok(()) => tracing::info!(path, "re-registered service node"),
                Err(e) => {
                    tracing::warn!(path, error = %e, "cannot re-register service node; will retry");
                    all_ok = false;
                }
            }
        }
        all_ok
    }

    /// Ends everything: no client, no tasks. The session closes once the last client clone
    /// (held by aborted tasks until they unwind) is dropped.
    fn shutdown(&self) -> Option<Conn> {
        self.closed.store(true, Ordering::Release);
        for task in lock(&self.tasks).drain(..) {
            task.abort();
        }
        self.clients.send_replace(None)
    }
}

/// Follows the session: reconciles registrations after reconnects, and on a terminal
/// state (expired, closed, auth failed) builds a new session with back-off, after which
/// the nodes are re-registered here and the watch tasks re-attach by themselves.
async fn supervise(inner: Arc<Inner>, mut conn: Conn) {
    loop {
        let mut states = conn.client.state_watcher();
        let mut pending = conn.generation > 0;
        let mut backoff = Backoff::new();
        let mut state = states.state();
        while !state.is_terminated() {
            if pending {
                pending = !inner.reconcile(&conn).await;
            }
            let next = if pending {
                tokio::select! {
                    s = states.changed() => Some(s),
                    _ = tokio::time::sleep(backoff.next_delay()) => None,
                }
            } else {
                Some(states.changed().await)
            };
            if let Some(next) = next {
                state = next;
                match state {
                    SessionState::Disconnected => {
                        tracing::warn!(session = %conn.client.session_id(), "ZooKeeper disconnected")
                    }
                    // Same session back: its ephemeral nodes normally survived; check anyway,
                    // as Curator re-creates them on RECONNECTED.
                    SessionState::SyncConnected | SessionState::ConnectedReadOnly => {
                        pending = true;
                        backoff.reset();
                    }
                    _ => {}
                }
            }
        }
        tracing::warn!(session = %conn.client.session_id(), ?state, "ZooKeeper session ended; building a new one");
        // Fail calls fast instead of queueing them on a dead session.
        inner.clients.send_replace(None);
        let generation = conn.generation + 1;
        drop(conn);
        let mut backoff = Backoff::new();
        let client = loop {
            match zk::connect(&inner.options).await {
                Ok(client) => break client,
                Err(e) => {
                    let delay = backoff.next_delay();
                    tracing::warn!(error = %e, ?delay, "ZooKeeper reconnect failed; retrying");
                    tokio::time::sleep(delay).await;
                }
            }
        };
        tracing::info!(session = %client.session_id(), generation, "new ZooKeeper session");
        conn = Conn { generation, client };
        inner.clients.send_replace(Some(conn.clone()));
    }
}

/// ZooKeeper [`ServiceRegistry`] and [`ServiceDiscovery`] (spec §11), wire-compatible with
/// Java MPush's Curator layout.
///
/// * `register` writes `<service>/<node id>` EPHEMERAL with the node JSON, creating parents
///   persistent and replacing an existing node; the node is re-created after a session
///   expiry (or if found missing after a reconnect) until `deregister`.
/// * `lookup` and `subscribe` serve a local cache per service, filled on first use and kept
///   current by a persistent recursive watch; `lookup` sorts by node id descending. Our own
///   register/deregister update the cache before returning; changes by other processes
///   arrive with the watch (milliseconds).
/// * Listeners are called on the watch task (or the registering task, for our own
///   changes), one event at a time in ZooKeeper order: `on_added` for a new or changed
///   node, `on_removed` when it is gone. No replay of existing nodes on `subscribe`.
/// * Every ZooKeeper call is bounded by [`ZkOptions::operation_timeout`]; without a session
///   calls fail at once with [`SpiError::Unavailable`]. During an outage `lookup` serves the
///   last known nodes.
///
/// Needs a tokio runtime (it spawns its supervisor and watch tasks). Dropping the handle (or
/// [`ZkServiceRegistry::close`]) ends the session, which removes its ephemeral nodes.
pub struct ZkServiceRegistry {
    inner: Arc<Inner>,
}

impl ZkServiceRegistry {
    /// Connects (bounded by [`ZkOptions::connection_timeout`]), creating the namespace node
    /// if missing, and starts the session supervisor.
    ///
    /// Fails with [`SpiError::Unavailable`] if no session could be established in time,
    /// [`SpiError::Config`] for invalid options.
    pub async fn connect(options: ZkOptions) -> SpiResult<Self> {
        options.validate()?;
        let client = zk::connect(&options).await?;
        tracing::info!(
            server = %options.server_address,
            namespace = %options.namespace,
            session = %client.session_id(),
            "connected to ZooKeeper"
        );
        let conn = Conn {
            generation: 0,
            client,
        };
        let inner = Arc::new(Inner {
            options,
            clients: watch::Sender::new(Some(conn.clone())),
            registered: tokio::sync::Mutex::new(BTreeMap::new()),
            caches: Mutex::new(HashMap::new()),
            subscriptions: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            tasks: Mutex::new(Vec::new()),
            closed: AtomicBool::new(false),
        });
        inner.spawn(supervise(inner.clone(), conn));
        Ok(Self { inner })
    }

    /// The options it was built with.
    pub fn options(&self) -> &ZkOptions {
        &self.inner.options
    }

    /// The current session, `None` while a new one is being built or after close. For
    /// diagnostics (and tests that expire it on purpose).
    pub fn session(&self) -> Option<SessionInfo> {
        self.inner
            .clients
            .borrow()
            .as_ref()
            .map(|c| c.client.session().clone())
    }

    /// Ends the session (its ephemeral nodes disappear at once) and stops every task;
    /// later calls fail with [`SpiError::Unavailable`]. Waits (at most the operation
    /// timeout) for the session close to be acknowledged.
    pub async fn close(&self) {
        let Some(conn) = self.inner.shutdown() else {
            return;
        };
        let mut states = conn.client.state_watcher();
        drop(conn);
        let closed = async {
            while !states.state().is_terminated() {
                states.changed().await;
            }
        };
        if tokio::time::timeout(self.inner.options.operation_timeout, closed)
            .await
            .is_err()
        {
            tracing::warn!("ZooKeeper session close not confirmed in time");
        }
    }

    /// Re-reads `node`'s child in its service cache (if used) after one of our writes.
    async fn refresh(&self, conn: &Conn, node: &ServiceNode) {
        let cache = lock(&self.inner.caches).get(&node.service_name).cloned();
        if let Some(cache) = cache {
            let limit = self.inner.options.operation_timeout;
            if let Err(e) = cache
                .refresh_child(&conn.client, &node.node_id, limit)
                .await
            {
                // The watch will bring the change; lookup lags until then.
                tracing::warn!(path = %node.node_path(), error = %e, "cannot refresh service cache");
            }
        }
    }
}

impl fmt::Debug for ZkServiceRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkServiceRegistry")
            .field("options", &self.inner.options)
            .field("session", &self.session().map(|s| s.id()))
            .field("services", &lock(&self.inner.caches).len())
            .finish()
    }
}

impl Drop for ZkServiceRegistry {
    fn drop(&mut self) {
        self.inner.shutdown();
    }
}

#[async_trait]
impl ServiceRegistry for ZkServiceRegistry {
    async fn register(&self, node: &ServiceNode) -> SpiResult<()> {
        check_node(node)?;
        let path = node.node_path();
        let limit = self.inner.options.operation_timeout;
        let acls = zk::acls(&self.inner.options);
        let conn = tokio::time::timeout(limit, async {
            let mut registered = self.inner.registered.lock().await;
            let conn = self.inner.current()?;
            zk::write_node(&conn.client, acls, node)
                .await
                .map_err(|e| to_spi(format_args!("register {path}"), e))?;
            registered.insert(path.clone(), node.clone());
            Ok::<_, SpiError>(conn)
        })
        .await
        .map_err(|_| to_spi(format_args!("register {path}"), ZkError::Timeout))??;
        self.refresh(&conn, node).await;
        Ok(())
    }

    async fn deregister(&self, node: &ServiceNode) -> SpiResult<()> {
        check_node(node)?;
        let path = node.node_path();
        let limit = self.inner.options.operation_timeout;
        let conn = tokio::time::timeout(limit, async {
            let mut registered = self.inner.registered.lock().await;
            // Forget it first: even if the delete fails, it must not come back.
            registered.remove(&path);
            let Ok(conn) = self.inner.current() else {
                // No session: our ephemeral node went with the last one.
                return Ok(None);
            };
            match conn.client.delete(&path, None).await {
                Ok(()) | Err(ZkError::NoNode) => Ok(Some(conn)),
                Err(e) => Err(to_spi(format_args!("deregister {path}"), e)),
            }
        })
        .await
        .map_err(|_| to_spi(format_args!("deregister {path}"), ZkError::Timeout))??;
        if let Some(conn) = conn {
            self.refresh(&conn, node).await;
        }
        Ok(())
    }
}

#[async_trait]
impl ServiceDiscovery for ZkServiceRegistry {
    async fn lookup(&self, service_name: &str) -> SpiResult<Vec<ServiceNode>> {
        let cache = self.inner.cache(service_name)?;
        cache
            .wait_synced(self.inner.options.operation_timeout)
            .await?;
        Ok(cache.snapshot())
    }

    async fn subscribe(
        &self,
        service_name: &str,
        listener: Arc<dyn ServiceListener>,
    ) -> SpiResult<SubscriptionId> {
        let cache = self.inner.cache(service_name)?;
        // Filled first, so every later change reaches the listener as an event.
        cache
            .wait_synced(self.inner.options.operation_timeout)
            .await?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        cache.add_listener(id, listener);
        lock(&self.inner.subscriptions).insert(id, cache);
        Ok(SubscriptionId(id))
    }

    async fn unsubscribe(&self, id: SubscriptionId) -> SpiResult<()> {
        let cache = lock(&self.inner.subscriptions).remove(&id.0);
        if let Some(cache) = cache {
            cache.remove_listener(id.0);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_paths() {
        assert!(check_service("/cluster/cs").is_ok());
        assert!(check_service("/a").is_ok());
        for bad in ["", "/", "cluster/cs", "/cluster/", "/a//b", "/a/./b"] {
            assert!(check_service(bad).is_err(), "{bad:?}");
        }
        let mut node = ServiceNode::new("/cluster/cs", "h", 1);
        assert!(check_node(&node).is_ok());
        node.node_id = "a/b".into();
        assert!(check_node(&node).is_err());
    }
}
