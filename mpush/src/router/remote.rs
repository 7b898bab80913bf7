//! Remote routes: `mp:ur:<userId>` hashes in the shared cache (spec §10).
//!
//! Every write is a compare-and-set on the one field of the (user, client type), retried on a
//! concurrent change, so that after any interleaving of binds and disconnects on any nodes
//! the route names exactly the last bound connection and a disconnect never overwrites a
//! newer route. Keys and values stay byte-identical to MPush's, so Java nodes share them.

use std::collections::HashMap;
use std::sync::Arc;

use super::ClientLocation;
use crate::spi::{CacheManager, CasOutcome, ClientType, HashCas, SpiError, SpiResult};

/// How often one route write is retried when other writers keep changing the field. Two
/// devices of one (user, type) binding at once need at most a few rounds.
const MAX_CAS_ROUNDS: usize = 16;

pub(crate) use crate::protocol::keys::user_route_key;

/// What [`RemoteRouter::reassert`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reassert {
    /// The route already named this connection, online.
    Intact,
    /// The route was missing (or named this connection offline) and was written again.
    Restored,
    /// The route names another connection: this one was displaced.
    Displaced(Option<ClientLocation>),
}

/// Reads and writes cluster-wide routes. Field = client type in decimal, value =
/// [`ClientLocation`] JSON, so Java and Rust servers share routes.
#[derive(Clone)]
pub(crate) struct RemoteRouter {
    cache: Arc<dyn CacheManager>,
}

impl std::fmt::Debug for RemoteRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteRouter")
    }
}

fn contention(user_id: &str) -> SpiError {
    SpiError::backend(
        "router",
        format!("route of {user_id:?} kept changing; gave up after {MAX_CAS_ROUNDS} tries"),
    )
}

impl RemoteRouter {
    /// Routes stored in `cache`.
    pub(crate) fn new(cache: Arc<dyn CacheManager>) -> Self {
        Self { cache }
    }

    /// The cache the routes live in.
    pub(crate) fn cache(&self) -> &Arc<dyn CacheManager> {
        &self.cache
    }

    /// Replaces the field's value by `next(current)` atomically; `next` returning `None`
    /// leaves it as it is. Returns the value seen when the write happened (or when `next`
    /// declined) and whether it wrote.
    async fn update(
        &self,
        user_id: &str,
        client_type: ClientType,
        mut next: impl FnMut(Option<&str>) -> Option<String>,
    ) -> SpiResult<(Option<String>, bool)> {
        let key = user_route_key(user_id);
        let field = client_type.to_string();
        let mut current = self.cache.hget(&key, &field).await?;
        for _ in 0..MAX_CAS_ROUNDS {
            let Some(value) = next(current.as_deref()) else {
                return Ok((current, false));
            };
            match self
                .cache
                .hcompare_and_set(HashCas {
                    key: &key,
                    field: &field,
                    expected: current.as_deref(),
                    value: &value,
                })
                .await?
            {
                CasOutcome::Set => return Ok((current, true)),
                CasOutcome::Mismatch(now) => current = now,
            }
        }
        Err(contention(user_id))
    }

    /// Writes the route and returns the one it replaced (atomically: of two binds racing on
    /// the same (user, type), the later write sees the earlier one and kicks it).
    pub(crate) async fn register(
        &self,
        user_id: &str,
        client_type: ClientType,
        loc: &ClientLocation,
    ) -> SpiResult<Option<ClientLocation>> {
        let json = loc.to_json();
        let (old, _) = self
            .update(user_id, client_type, |_| Some(json.clone()))
            .await?;
        Ok(old.as_deref().and_then(ClientLocation::from_json))
    }

    /// Marks the route offline if it is online and `matches` it, re-checking after every
    /// concurrent change. Returns `true` if it changed.
    pub(crate) async fn mark_offline_if(
        &self,
        user_id: &str,
        client_type: ClientType,
        matches: impl Fn(&ClientLocation) -> bool,
    ) -> SpiResult<bool> {
        let (_, written) = self
            .update(user_id, client_type, |cur| {
                let loc = ClientLocation::from_json(cur?)?;
                (loc.is_online() && matches(&loc)).then(|| loc.offline().to_json())
            })
            .await?;
        Ok(written)
    }

    /// Puts this connection's route back if the cache lost it (or it was marked offline
    /// while the connection lives), never overwriting a route to another connection.
    ///
    /// Marking a route offline drops its connection id (as the original does), so an
    /// offline route is taken as this connection's when it names this server and this
    /// device and `registrant` says the connection is still the one this server routes the
    /// (user, type) to: then no other connection bound since (a newer bind here would have
    /// replaced the registrant, a bind elsewhere names its own server). That is the route of
    /// a live server that another node took for dead and cleaned.
    pub(crate) async fn reassert(
        &self,
        user_id: &str,
        client_type: ClientType,
        loc: &ClientLocation,
        registrant: bool,
    ) -> SpiResult<Reassert> {
        let json = loc.to_json();
        let is_ours = |l: &ClientLocation| {
            let same_conn = l.conn_id == loc.conn_id
                || (registrant && !l.is_online() && l.device_id == loc.device_id);
            same_conn && l.host == loc.host && l.port == loc.port
        };
        let mut other = None;
        let mut intact = false;
        let (_, written) = self
            .update(user_id, client_type, |cur| {
                other = None;
                intact = false;
                match cur.map(|c| (c, ClientLocation::from_json(c))) {
                    None => Some(json.clone()),
                    Some((_, Some(l))) if is_ours(&l) => {
                        intact = l.is_online();
                        (!intact).then(|| json.clone())
                    }
                    Some((_, l)) => {
                        other = Some(l);
                        None
                    }
                }
            })
            .await?;
        Ok(match (written, intact) {
            (true, _) => Reassert::Restored,
            (false, true) => Reassert::Intact,
            (false, false) => Reassert::Displaced(other.flatten()),
        })
    }

    /// The route of one client type.
    pub(crate) async fn lookup(
        &self,
        user_id: &str,
        client_type: ClientType,
    ) -> SpiResult<Option<ClientLocation>> {
        let v = self
            .cache
            .hget(&user_route_key(user_id), &client_type.to_string())
            .await?;
        Ok(v.as_deref().and_then(ClientLocation::from_json))
    }

    /// Every route of the user, by client type. Unparsable entries are skipped.
    pub(crate) async fn lookup_all(
        &self,
        user_id: &str,
    ) -> SpiResult<HashMap<ClientType, ClientLocation>> {
        let all = self.cache.hgetall(&user_route_key(user_id)).await?;
        Ok(all
            .into_iter()
            .filter_map(|(k, v)| Some((k.parse().ok()?, ClientLocation::from_json(&v)?)))
            .collect())
    }
}
