//! Local routes: (userId, clientType) → this server's live connection.

use std::sync::Arc;

use dashmap::DashMap;
use smallvec::SmallVec;

use crate::spi::ClientType;

/// What the local router needs of a connection. The server's connection type implements it;
/// the router never sees sockets.
pub(crate) trait RoutedConnection {
    /// The connection's sequence number: unique on this server for the process lifetime, so
    /// it tells a reconnected device's new connection from its old one.
    fn seq(&self) -> u64;
    /// Called as the connection enters the router (again): what was verified about its
    /// cluster route while it was out, when no change notice could reach it, is void.
    fn registered(&self) {}
}

/// A user's routes on this server, one per client type. Almost every user has one, kept
/// inline: a bound connection costs the router no allocation besides the key.
type Routes<C> = SmallVec<[(ClientType, Arc<C>); 1]>;

/// This server's routes. A user holds at most one connection per client type; a user
/// rarely has more than a few types, so a small vector beats a nested map.
pub(crate) struct LocalRouter<C> {
    routes: DashMap<Box<str>, Routes<C>>,
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
        conn.registered();
        let mut entry = self.routes.entry(user_id.into()).or_default();
        if let Some(slot) = entry.iter_mut().find(|(t, _)| *t == client_type) {
            let old = std::mem::replace(&mut slot.1, conn);
            return (old.seq() != slot.1.seq()).then_some(old);
        }
        entry.push((client_type, conn));
        None
    }

    /// Removes the route if it still points at connection `conn_seq`. Returns `true` if removed.
    pub(crate) fn unregister(&self, user_id: &str, client_type: ClientType, conn_seq: u64) -> bool {
        let mut removed = false;
        self.routes.remove_if_mut(user_id, |_, v| {
            let before = v.len();
            v.retain(|(t, c)| !(*t == client_type && c.seq() == conn_seq));
            v.shrink_to_fit();
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
            .map(|v| v.to_vec())
            .unwrap_or_default()
    }

    /// A snapshot of every route, for broadcast. Taken shard by shard; never held across
    /// an await.
    pub(crate) fn snapshot(&self) -> Vec<(String, ClientType, Arc<C>)> {
        self.routes_of(self.routes.len(), |_| true)
    }

    /// Every route of the users `keep` takes, taken shard by shard.
    fn routes_of(
        &self,
        capacity: usize,
        keep: impl Fn(&str) -> bool,
    ) -> Vec<(String, ClientType, Arc<C>)> {
        let mut out = Vec::with_capacity(capacity);
        for e in self.routes.iter() {
            if !keep(e.key()) {
                continue;
            }
            for (t, c) in e.value() {
                out.push((e.key().to_string(), *t, c.clone()));
            }
        }
        out
    }

    /// The routes of the users in part `part` of `parts`. For a fixed `parts`, going
    /// through `0..parts` visits every user routed here the whole time exactly once, and
    /// never holds more than one part: a background sweep can pace itself without a
    /// snapshot of the whole table.
    ///
    /// The part is cut by the address of the user's key, which stays put while the user is
    /// in the table: unlike a hash of the id it needs no read of the key's bytes, a cache
    /// miss per user that made a step over 19,900 users cost 7 ms. A user who leaves and
    /// comes back may land in another part, and so be visited twice or not at all in that
    /// sweep; its bind has just written its route anyway.
    pub(crate) fn part(&self, part: u64, parts: u64) -> Vec<(String, ClientType, Arc<C>)> {
        let parts = parts.max(1);
        self.routes_of(0, |key| spread(key.as_ptr() as usize) % parts == part)
    }

    /// Number of users with at least one route here.
    pub(crate) fn user_count(&self) -> usize {
        self.routes.len()
    }

    /// The user ids routed here.
    pub(crate) fn user_ids(&self) -> Vec<String> {
        self.routes.iter().map(|e| e.key().to_string()).collect()
    }
}

/// Fibonacci hashing of an address: heap keys sit at regular strides, which a plain modulo
/// would map onto a few parts.
fn spread(addr: usize) -> u64 {
    ((addr as u64) >> 4).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Debug)]
    struct Conn(u64);

    impl RoutedConnection for Conn {
        fn seq(&self) -> u64 {
            self.0
        }
    }

    #[test]
    fn one_route_per_client_type_and_displacement() {
        let r = LocalRouter::default();
        assert!(
            r.register("u", ClientType::MOBILE, Arc::new(Conn(1)))
                .is_none()
        );
        assert!(r.register("u", ClientType::PC, Arc::new(Conn(2))).is_none());
        let old = r.register("u", ClientType::MOBILE, Arc::new(Conn(3)));
        assert_eq!(
            old.map(|c| c.0),
            Some(1),
            "the newer mobile connection displaces"
        );
        // Registering the same connection again displaces nothing.
        let same = r.lookup("u", ClientType::MOBILE).unwrap();
        assert!(r.register("u", ClientType::MOBILE, same).is_none());
        let mut all: Vec<_> = r.lookup_all("u").iter().map(|(t, c)| (*t, c.0)).collect();
        all.sort_by_key(|(_, seq)| *seq);
        assert_eq!(all, [(ClientType::PC, 2), (ClientType::MOBILE, 3)]);
        assert_eq!((r.user_count(), r.user_ids()), (1, vec!["u".to_string()]));
        assert_eq!(r.snapshot().len(), 2);
    }

    #[test]
    fn unregister_only_removes_the_named_connection() {
        let r = LocalRouter::default();
        r.register("u", ClientType::MOBILE, Arc::new(Conn(1)));
        r.register("u", ClientType::PC, Arc::new(Conn(2)));
        assert!(
            !r.unregister("u", ClientType::MOBILE, 9),
            "another connection's seq"
        );
        assert!(!r.unregister("nobody", ClientType::MOBILE, 1));
        assert!(r.unregister("u", ClientType::MOBILE, 1));
        assert!(r.lookup("u", ClientType::MOBILE).is_none());
        // Back to one route: it is kept inline again, not in a heap buffer.
        assert!(!r.routes.get("u").unwrap().spilled());
        assert!(r.unregister("u", ClientType::PC, 2));
        assert_eq!(r.user_count(), 0, "a user with no routes leaves the map");
    }

    #[test]
    fn the_parts_visit_every_user_once() {
        let r = LocalRouter::default();
        for i in 0..300u64 {
            r.register(&format!("u{i}"), ClientType::MOBILE, Arc::new(Conn(i)));
        }
        r.register("u7", ClientType::PC, Arc::new(Conn(1000)));
        let parts = 7;
        let mut seen: Vec<u64> = (0..parts)
            .flat_map(|p| r.part(p, parts))
            .map(|(_, _, c)| c.0)
            .collect();
        seen.sort_unstable();
        let mut want: Vec<u64> = (0..300).chain([1000]).collect();
        want.sort_unstable();
        assert_eq!(seen, want, "every route exactly once");
        let sizes: Vec<usize> = (0..parts).map(|p| r.part(p, parts).len()).collect();
        assert!(
            sizes.iter().all(|&n| (5..=150).contains(&n)),
            "301 routes in 7 parts of about 43: {sizes:?}"
        );
        assert_eq!(r.part(0, 0).len(), 301, "zero parts is one");

        // A user keeps its part while others come and go and the table grows (rehashes):
        // a sweep that began before still visits it exactly once.
        let before: Vec<Vec<u64>> = (0..parts)
            .map(|p| r.part(p, parts).iter().map(|(_, _, c)| c.0).collect())
            .collect();
        for i in 0..10_000u64 {
            r.register(
                &format!("x{i}"),
                ClientType::MOBILE,
                Arc::new(Conn(10_000 + i)),
            );
        }
        for i in (0..10_000u64).step_by(3) {
            r.unregister(&format!("x{i}"), ClientType::MOBILE, 10_000 + i);
        }
        for (p, was) in before.iter().enumerate() {
            let now: Vec<u64> = r
                .part(p as u64, parts)
                .iter()
                .map(|(_, _, c)| c.0)
                .filter(|&seq| seq < 10_000)
                .collect();
            let (mut was, mut now) = (was.clone(), now);
            was.sort_unstable();
            now.sort_unstable();
            assert_eq!(now, was, "part {p} kept its users through the growth");
        }
    }

    #[test]
    fn a_user_with_one_route_costs_no_allocation_besides_the_key() {
        // `union`: a route list is as large as the `Vec` it replaced, and one route fits in it.
        assert_eq!(std::mem::size_of::<Routes<Conn>>(), 24);
        let r = LocalRouter::default();
        r.register("u", ClientType::MOBILE, Arc::new(Conn(1)));
        assert!(!r.routes.get("u").unwrap().spilled());
    }
}
