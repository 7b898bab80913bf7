//! Local routes: (userId, clientType) → this server's live connection.

use std::sync::Arc;

use dashmap::DashMap;

use crate::spi::ClientType;

/// What the local router needs of a connection. The server's connection type implements it;
/// the router never sees sockets.
pub(crate) trait RoutedConnection {
    /// The connection's sequence number: unique on this server for the process lifetime, so
    /// it tells a reconnected device's new connection from its old one.
    fn seq(&self) -> u64;
}

/// This server's routes. A user holds at most one connection per client type; a user
/// rarely has more than a few types, so a small vector beats a nested map.
pub(crate) struct LocalRouter<C> {
    routes: DashMap<String, Vec<(ClientType, Arc<C>)>>,
}

impl<C> Default for LocalRouter<C> {
    fn default() -> Self {
        Self {
            routes: DashMap::new(),
        }
    }
}

impl<C> std::fmt::Debug for LocalRouter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalRouter")
            .field("users", &self.routes.len())
            .finish()
    }
}

impl<C: RoutedConnection> LocalRouter<C> {
    /// Routes `user_id`/`client_type` to `conn`; returns the connection it displaced.
    pub(crate) fn register(
        &self,
        user_id: &str,
        client_type: ClientType,
        conn: Arc<C>,
    ) -> Option<Arc<C>> {
        let mut entry = self.routes.entry(user_id.to_string()).or_default();
        if let Some(slot) = entry.iter_mut().find(|(t, _)| *t == client_type) {
            let old = std::mem::replace(&mut slot.1, conn);
            return (old.seq() != slot.1.seq()).then_some(old);
        }
        // One slot more, not the vector's default of four: most users have one route.
        entry.reserve_exact(1);
        entry.push((client_type, conn));
        None
    }

    /// Removes the route if it still points at connection `conn_seq`. Returns `true` if removed.
    pub(crate) fn unregister(&self, user_id: &str, client_type: ClientType, conn_seq: u64) -> bool {
        let mut removed = false;
        self.routes.remove_if_mut(user_id, |_, v| {
            let before = v.len();
            v.retain(|(t, c)| !(*t == client_type && c.seq() == conn_seq));
            removed = v.len() != before;
            v.is_empty()
        });
        removed
    }

    /// The connection of `user_id`/`client_type`.
    pub(crate) fn lookup(&self, user_id: &str, client_type: ClientType) -> Option<Arc<C>> {
        let v = self.routes.get(user_id)?;
        v.iter()
            .find(|(t, _)| *t == client_type)
            .map(|(_, c)| c.clone())
    }

    /// All connections of `user_id`.
    pub(crate) fn lookup_all(&self, user_id: &str) -> Vec<(ClientType, Arc<C>)> {
        self.routes
            .get(user_id)
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// A snapshot of every route, for broadcast. Taken shard by shard; never held across
    /// an await.
    pub(crate) fn snapshot(&self) -> Vec<(String, ClientType, Arc<C>)> {
        let mut out = Vec::with_capacity(self.routes.len());
        for e in self.routes.iter() {
            for (t, c) in e.value() {
                out.push((e.key().clone(), *t, c.clone()));
            }
        }
        out
    }

    /// Number of users with at least one route here.
    pub(crate) fn user_count(&self) -> usize {
        self.routes.len()
    }

    /// The user ids routed here.
    pub(crate) fn user_ids(&self) -> Vec<String> {
        self.routes.iter().map(|e| e.key().clone()).collect()
    }
}
