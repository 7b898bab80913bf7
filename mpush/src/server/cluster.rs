//! Keeping this node's share of the cluster routes true: route repair after the cache lost
//! them, displacement found by checking, the dead-server cleanup, and the kick subscription
//! that is retried until it exists (issue "cluster routing you can trust").
//!
//! Every write here is the router's compare-and-set, so a repair never overwrites a newer
//! route another node wrote, and a cleanup only marks offline the exact connection of the
//! dead server.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;

use super::connection::Connection;
use super::context::ServerContext;
use super::{gateway_udp, handler};
use crate::protocol::keys::{CLEANUP_CLAIMS, USER_ROUTE_PREFIX, alive_marker_key};
use crate::router::remote::Reassert;
use crate::router::{KickRequest, kick, node_users_key};
use crate::spi::{ClientType, KeyWatch, ServiceDiscovery, ServiceListener, ServiceNode, services};

/// How often the route guard checks that the cache still holds this node's marker.
const GUARD_TICK: Duration = Duration::from_secs(5);
/// Every this many ticks the audit checks one part of the local routes against the cache
/// even without a loss (a kick that was lost shows there as a route naming another
/// connection).
const AUDIT_EVERY: u32 = 6;
/// ... and a part holds at most about this many users: about 100 route reads a second on
/// average, in one burst every 30 s. A node with many users sweeps its table more slowly
/// instead of reading all of it every 30 s: at 1 M users that was 33,000 reads a second
/// per node, forever. What the audit finds is rare: a lost kick (the old connection stays
/// here, gets no unicast once a push for the user reaches this node, since the gateway
/// checks the route it serves, but gets this node's broadcasts until found), or route
/// writes lost without the marker showing it (see [`route_guard`]).
/// Cutting a part scans the whole table (≈ 50 ns a user), so parts are large and rare
/// rather than small and every tick.
const AUDIT_PART_USERS: usize = 3_000;
/// After the cache went unanswered, every route is checked again (it may have restarted from
/// an older snapshot, or failed over, and lost recent writes) at most this many users a
/// tick: 2,000 reads a second. Every node of a cluster sees the same outage, so checking
/// every route at once would aim 1 M reads per node at a cache that has just come back; a
/// slow answer is the common cause, and a lost route is also repaired by the next push
/// through this node.
const RECHECK_PART_USERS: usize = 10_000;
/// Route checks of one pass in flight at once: a pipelined cache (Redis) answers them in a
/// few round trips, where one at a time cost the node a wakeup and a context switch each.
const CHECKS_IN_FLIGHT: usize = 32;
/// How long a server must stay out of the registry before its routes are marked offline (a
/// ZooKeeper session blip re-registers within this).
const DEAD_SERVER_GRACE: Duration = Duration::from_secs(3);
/// Users read per page when cleaning a dead server's or this server's stale routes.
const PAGE: i64 = 500;
/// Upper bound on pages per cleanup (500 × 2000 = one million users).
const MAX_PAGES: i64 = 2000;
/// Concurrent on-demand route repairs (from the push path) per node; more are left to the
/// guard's next pass.
pub(crate) const REPAIR_PERMITS: usize = 64;
/// Removed gateways waiting for their cleanup.
const CLEANUP_QUEUE: usize = 1024;

/// The key whose absence tells this node that the cache lost its data (see
/// [`alive_marker_key`]).
fn marker_key(ctx: &ServerContext) -> String {
    alive_marker_key(&ctx.router.gateway_host, ctx.router.gateway_port)
}

/// Writes one route of a live connection back (and its online-set and index entries), or
/// displaces the connection if the route names another one. Runs in the background, at most
/// [`REPAIR_PERMITS`] at once.
pub(crate) fn repair_route(
    ctx: &Arc<ServerContext>,
    user_id: &str,
    client_type: ClientType,
    conn: &Arc<Connection>,
) {
    let Ok(permit) = ctx.route_repairs.clone().try_acquire_owned() else {
        return;
    };
    let (ctx, conn, user_id) = (ctx.clone(), conn.clone(), user_id.to_string());
    tokio::spawn(async move {
        let _permit = permit;
        reassert_one(&ctx, &user_id, client_type, &conn, false).await;
    });
}

/// Checks one route (see [`repair_route`]); `reindex` also writes the user's index entry
/// back when the route is intact (a recovery pass: the cache may have lost the index, or a
/// cleaner that took this server for dead deleted it). Returns `false` if the cache failed.
async fn reassert_one(
    ctx: &Arc<ServerContext>,
    user_id: &str,
    client_type: ClientType,
    conn: &Arc<Connection>,
    reindex: bool,
) -> bool {
    {
        let s = conn.lock_state();
        if conn.is_closed() || s.binding || s.user_id.as_deref() != Some(user_id) {
            // Closed, unbound, or its bind is writing the route itself.
            return true;
        }
    }
    let info = conn.info();
    let loc = ctx
        .router
        .location(conn.id(), info.device_id, info.os_name, info.client_version);
    let registrant = ctx
        .router
        .local
        .lookup(user_id, client_type)
        .is_some_and(|c| Arc::ptr_eq(&c, conn));
    match ctx
        .router
        .remote
        .reassert(user_id, client_type, &loc, registrant)
        .await
    {
        Ok(Reassert::Intact) => {
            if reindex {
                ctx.router.index_user(user_id).await;
            }
            true
        }
        Ok(Reassert::Restored) => {
            tracing::info!(user = user_id, conn = %conn.id(), "route restored");
            ctx.router.online.user_online(user_id).await;
            ctx.router.index_user(user_id).await;
            true
        }
        Ok(Reassert::Displaced(_)) => {
            tracing::info!(user = user_id, conn = %conn.id(), "route names another connection: displaced");
            handler::displace(ctx, conn, user_id);
            true
        }
        Err(e) => {
            tracing::debug!(user = user_id, error = %e, "cannot check route");
            false
        }
    }
}

/// Checks every local route against the cache, and writes the index back. Returns `false`
/// if the cache failed.
async fn reassert_all(ctx: &Arc<ServerContext>) -> bool {
    reassert_routes(ctx, &ctx.router.local.snapshot(), true).await
}

/// Checks `routes` against the cache, [`CHECKS_IN_FLIGHT`] at a time (`reindex` as for
/// [`reassert_one`]). Returns `false` if the cache failed.
async fn reassert_routes(
    ctx: &Arc<ServerContext>,
    routes: &[(String, ClientType, Arc<Connection>)],
    reindex: bool,
) -> bool {
    for chunk in routes.chunks(CHECKS_IN_FLIGHT) {
        if ctx.shutdown.is_cancelled() {
            return true;
        }
        let checks = chunk
            .iter()
            .map(|(user, client_type, conn)| reassert_one(ctx, user, *client_type, conn, reindex));
        if futures::future::join_all(checks).await.contains(&false) {
            return false;
        }
        // A cache that answers at once (memory) never makes this task wait.
        tokio::task::yield_now().await;
    }
    true
}

/// Where the paced audit is: part `next` of `parts` (see [`LocalRouter::part`]). The number
/// of parts is fixed for a sweep, so a sweep visits every user exactly once.
///
/// [`LocalRouter::part`]: crate::router::local::LocalRouter::part
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Audit {
    next: u64,
    parts: u64,
    part_users: usize,
}

impl Audit {
    /// A sweep in parts of at most about `part_users` users.
    fn new(part_users: usize) -> Self {
        Self {
            next: 0,
            parts: 1,
            part_users,
        }
    }

    /// The part to check now, for a node with `users` routed users; a new sweep is cut into
    /// as many parts as keep each under the part size. A table that has more than doubled
    /// since (users reconnecting after a restart) starts a new sweep, so no part grows far
    /// past the bound.
    fn part(&mut self, users: usize) -> (u64, u64) {
        let want = users.div_ceil(self.part_users).max(1) as u64;
        if self.next == 0 || want > 2 * self.parts {
            self.next = 0;
            self.parts = want;
        }
        (self.next, self.parts)
    }

    /// The part was checked: go on to the next one. `true` when that ended the sweep.
    fn done(&mut self) -> bool {
        self.next = (self.next + 1) % self.parts;
        self.next == 0
    }
}

/// The route guard: notices a cache that lost this node's data and writes its live routes
/// back within one tick of the cache answering again; audits all routes now and then, at a
/// bounded rate.
///
/// A loss shows as the marker gone: the cache restarted empty or was flushed, or another
/// node cleaned this node's routes while it was out of the registry (`dead_server_cleanup`
/// deletes the marker); every route is written back at once. A cache that did not answer
/// may have lost recent writes (a restart from an older snapshot, a failover) or only have
/// been slow, so once it answers with the marker in place every route is checked at a
/// bounded pace ([`RECHECK_PART_USERS`]). Route writes lost without either (a failover
/// between two checks) are found by the audit, or by the next push through this node.
pub(crate) async fn route_guard(ctx: Arc<ServerContext>) {
    let marker = marker_key(&ctx);
    let mut tick = 0u32;
    let mut pending_full = false;
    let mut audit = Audit::new(AUDIT_PART_USERS);
    let mut recheck: Option<Audit> = None;
    loop {
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(GUARD_TICK) => {}
        }
        tick = tick.wrapping_add(1);
        match ctx.cache.get(&marker).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::warn!("the cache lost this node's data; writing live routes back");
                pending_full = true;
            }
            Err(e) => {
                tracing::debug!(error = %e, "route guard: cache unavailable");
                // Once it answers, check every route: a sweep begun before this outage may
                // have checked routes it has lost since.
                recheck = Some(Audit::new(RECHECK_PART_USERS));
                continue;
            }
        }
        if pending_full {
            // The marker goes back first: a loss during the pass then shows at the next tick,
            // instead of being covered by a marker written after it.
            let marked = ctx
                .cache
                .set(&marker, &ServerContext::wall_ms().to_string(), None)
                .await
                .is_ok();
            if marked && reassert_all(&ctx).await {
                pending_full = false;
                recheck = None;
            }
            continue;
        }
        if let Some(sweep) = &mut recheck {
            let (part, parts) = sweep.part(ctx.router.local.user_count());
            if part == 0 {
                tracing::info!(
                    parts,
                    "the cache went unanswered: checking every route, one part a tick"
                );
            }
            let routes = ctx.router.local.part(part, parts);
            if reassert_routes(&ctx, &routes, true).await && sweep.done() {
                recheck = None;
            }
            continue;
        }
        if !tick.is_multiple_of(AUDIT_EVERY) {
            continue;
        }
        let (part, parts) = audit.part(ctx.router.local.user_count());
        if reassert_routes(&ctx, &ctx.router.local.part(part, parts), false).await {
            audit.done();
        }
    }
}

/// At start: every route still naming this node's gateway is a previous incarnation's (a
/// crash leaves them online), except those of clients that bound since the listeners
/// opened (devices reconnect at once to an address they cached): mark the others offline,
/// take those users out of this node's online set if they are online nowhere (quirk Q19),
/// and write the marker.
pub(crate) async fn reconcile_at_start(ctx: &Arc<ServerContext>) {
    let key = ctx.router.node_users_key();
    let users = read_index(ctx, &key).await;
    let mut cleaned = 0usize;
    for user in &users {
        // Clients are accepted while this runs: a route of a (user, type) bound here since
        // is this run's, not stale (the bind registers locally before it writes the route).
        cleaned += mark_server_offline(
            ctx,
            user,
            &ctx.router.gateway_host,
            i32::from(ctx.router.gateway_port),
            |t| ctx.router.local.lookup(user, t).is_some(),
        )
        .await;
        match ctx.router.remote.lookup_all(user).await {
            Ok(routes)
                if routes.values().all(|l| !l.is_online())
                    && ctx.router.local.lookup_all(user).is_empty() =>
            {
                let _ = ctx.cache.zrem(ctx.router.online.key(), user).await;
            }
            _ => {}
        }
    }
    let _ = ctx.cache.del(&key).await;
    // The delete also took the index entries of the binds made meanwhile: written back (a
    // bind from now on writes its own).
    for (user, _, _) in ctx.router.local.snapshot() {
        ctx.router.index_user(&user).await;
    }
    if cleaned > 0 {
        tracing::info!(cleaned, "marked a previous run's routes offline");
    }
    let _ = ctx
        .cache
        .set(
            &marker_key(ctx),
            &ServerContext::wall_ms().to_string(),
            None,
        )
        .await;
}

async fn read_index(ctx: &ServerContext, key: &str) -> Vec<String> {
    let mut users = Vec::new();
    for page in 0..MAX_PAGES {
        match ctx
            .cache
            .zrange(key, page * PAGE, page * PAGE + PAGE - 1)
            .await
        {
            Ok(v) if v.is_empty() => break,
            Ok(v) => {
                let done = (v.len() as i64) < PAGE;
                users.extend(v);
                if done {
                    break;
                }
            }
            Err(e) => {
                tracing::warn!(%key, error = %e, "cannot read route index");
                break;
            }
        }
    }
    users
}

/// Marks offline every online route of `user` that names gateway `host:port`. Returns how
/// many were marked.
async fn mark_server_offline(
    ctx: &ServerContext,
    user: &str,
    host: &str,
    port: i32,
    skip: impl Fn(ClientType) -> bool,
) -> usize {
    let Ok(routes) = ctx.router.remote.lookup_all(user).await else {
        return 0;
    };
    let mut n = 0;
    for (client_type, loc) in routes {
        if !loc.is_online() || loc.host != host || loc.port != port || skip(client_type) {
            continue;
        }
        let conn_id = loc.conn_id.clone();
        let marked = ctx
            .router
            .remote
            .mark_offline_if(user, client_type, |l| {
                l.conn_id == conn_id && l.host == host && l.port == port
            })
            .await;
        if matches!(marked, Ok(true)) {
            n += 1;
        }
    }
    n
}

/// A claim older than this is taken over (its cleaner died mid-way).
const CLAIM_EXPIRY_MS: i64 = 120_000;

/// One node cleans each dead server: the one whose compare-and-set on the claim wins (the
/// registry may hold Java nodes, or other clusters' nodes, so no node can be elected by
/// position).
async fn claim_cleanup(ctx: &ServerContext, host_port: &str) -> bool {
    let now = ServerContext::wall_ms();
    let me = format!(
        "{}:{}|{now}",
        ctx.router.gateway_host, ctx.router.gateway_port
    );
    let current = match ctx.cache.hget(CLEANUP_CLAIMS, host_port).await {
        Ok(c) => c,
        Err(_) => return false,
    };
    if let Some(c) = &current {
        let at = c.rsplit('|').next().and_then(|t| t.parse::<i64>().ok());
        if at.is_some_and(|at| now.saturating_sub(at) < CLAIM_EXPIRY_MS) {
            return false;
        }
    }
    matches!(
        ctx.cache
            .hcompare_and_set(crate::spi::HashCas {
                key: CLEANUP_CLAIMS,
                field: host_port,
                expected: current.as_deref(),
                value: &me,
            })
            .await,
        Ok(crate::spi::CasOutcome::Set)
    )
}

/// Cleans the routes of gateways that left the registry: after a grace period, if it is
/// still gone and this node wins the claim on it.
async fn dead_server_cleanup(ctx: Arc<ServerContext>, mut removed: mpsc::Receiver<String>) {
    loop {
        let host_port = tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            r = removed.recv() => match r { Some(h) => h, None => return },
        };
        if host_port == format!("{}:{}", ctx.router.gateway_host, ctx.router.gateway_port) {
            // This server's own entry (its registry session lapsed): it is alive, and its
            // registry backend registers it again. Cleaning itself would mark its live
            // routes offline for its guard to write back.
            tracing::warn!(server = %host_port, "this server's gateway left the registry");
            continue;
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(DEAD_SERVER_GRACE) => {}
        }
        if ctx.router.gateways.contains(&host_port) {
            continue;
        }
        if !claim_cleanup(&ctx, &host_port).await {
            continue;
        }
        let Some((host, port)) = host_port
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<i32>().ok()?)))
        else {
            continue;
        };
        let key = node_users_key(&host, port);
        let users = read_index(&ctx, &key).await;
        let mut cleaned = 0usize;
        let mut back = false;
        for (i, user) in users.iter().enumerate() {
            cleaned += mark_server_offline(&ctx, user, &host, port, |_| false).await;
            if i % 64 == 63 {
                tokio::task::yield_now().await;
                // Restarted on the same address (its start marked its previous run's
                // routes offline before it registered), or alive after all: from here on
                // the routes naming it are its live ones, and the index is its new one.
                if ctx.router.gateways.contains(&host_port) {
                    back = true;
                    break;
                }
            }
        }
        if !back {
            let _ = ctx.cache.del(&key).await;
        }
        // If that server is alive (a registry session lost for longer than the grace, or
        // back while this ran), its guard finds its marker gone and writes its live routes
        // back, with their index entries; deleted after the cleanup, so the write-back
        // cannot race it.
        if let (true, Ok(port)) = (!back || cleaned > 0, u16::try_from(port)) {
            let _ = ctx.cache.del(&alive_marker_key(&host, port)).await;
        }
        let _ = ctx.cache.hdel(CLEANUP_CLAIMS, &host_port).await;
        if back {
            tracing::info!(server = %host_port, users = users.len(), cleaned, "server came back during its cleanup; stopped");
        } else {
            tracing::info!(server = %host_port, users = users.len(), cleaned, "server left the registry; its routes are offline");
        }
    }
}

struct GatewayWatch {
    ctx: std::sync::Weak<ServerContext>,
    removed: mpsc::Sender<String>,
}

impl ServiceListener for GatewayWatch {
    fn on_added(&self, node: &ServiceNode) {
        if let Some(ctx) = self.ctx.upgrade() {
            ctx.router.gateways.added(node.host_and_port());
        }
    }

    fn on_removed(&self, node: &ServiceNode) {
        if let Some(ctx) = self.ctx.upgrade() {
            ctx.router.gateways.removed(&node.host_and_port());
            if self.removed.try_send(node.host_and_port()).is_err() {
                tracing::warn!(server = %node.host_and_port(), "dead-server cleanup queue full; its routes are cleaned lazily by pushes");
            }
        }
    }
}

/// Keeps [`crate::router::LiveGateways`] in step with discovery and starts the dead-server
/// cleanup. Retried until the subscription exists.
pub(crate) async fn watch_gateways(ctx: Arc<ServerContext>, discovery: Arc<dyn ServiceDiscovery>) {
    let (tx, rx) = mpsc::channel(CLEANUP_QUEUE);
    tokio::spawn(dead_server_cleanup(ctx.clone(), rx));
    let listener = Arc::new(GatewayWatch {
        ctx: Arc::downgrade(&ctx),
        removed: tx,
    });
    let mut backoff = Duration::from_millis(500);
    loop {
        let subscribed = discovery
            .subscribe(services::GATEWAY_SERVER, listener.clone())
            .await;
        match subscribed {
            Ok(id) => {
                if let Ok(nodes) = discovery.lookup(services::GATEWAY_SERVER).await {
                    ctx.router
                        .gateways
                        .reset(nodes.iter().map(ServiceNode::host_and_port));
                }
                ctx.shutdown.cancelled().await;
                let _ = discovery.unsubscribe(id).await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the gateway registry; retrying");
            }
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Turns the cache's change notices for route keys into [`crate::router::verified`] state,
/// and into route checks: a changed `mp:ur:<userId>` voids the verification of the user's
/// local connections and checks their routes at once, so a bind elsewhere whose kick was
/// lost displaces the old connection here within a cache round trip, instead of when a
/// unicast push or the audit's sweep (minutes on a large node) reaches it; until then it
/// would get this node's broadcasts.
struct RouteWatch(std::sync::Weak<ServerContext>);

impl KeyWatch for RouteWatch {
    fn changed(&self, key: &str) {
        let (Some(ctx), Some(user)) = (self.0.upgrade(), key.strip_prefix(USER_ROUTE_PREFIX))
        else {
            return;
        };
        // A backend may report from outside the runtime (nothing to spawn on): the
        // invalidation alone still makes the next push read the route.
        let runtime = tokio::runtime::Handle::try_current().is_ok();
        for (client_type, conn) in ctx.router.local.lookup_all(user) {
            conn.route_check.invalidate();
            // A connection whose bind is writing this route learns the outcome from its own
            // compare-and-set (the memory cache reports the write from inside it); checking
            // it would only read the route back. A backend reporting later (Redis) costs one
            // read per bind here, answered `Intact`. Without a permit the push and the
            // audit are left to find a displacement.
            if runtime && !conn.lock_state().binding {
                repair_route(&ctx, user, client_type, &conn);
            }
        }
    }

    fn lost(&self) {
        if let Some(ctx) = self.0.upgrade() {
            tracing::warn!(
                "the cache lost its watch of route changes: every push reads the route until it is back"
            );
            ctx.router.checks.lost();
        }
    }

    fn watching(&self) {
        if let Some(ctx) = self.0.upgrade() {
            ctx.router.checks.watching();
        }
    }
}

/// Asks the cache to report route changes (`mp:ur:*`), so that a unicast push to a verified
/// local connection need not read its route (`router::verified`); retries while the cache
/// is unreachable. Without support every push reads the route. Unwatches at shutdown.
pub(crate) async fn watch_routes(ctx: Arc<ServerContext>) {
    let watch: Arc<dyn KeyWatch> = Arc::new(RouteWatch(Arc::downgrade(&ctx)));
    let cache = ctx.router.remote.cache().clone();
    let mut backoff = Duration::from_millis(500);
    loop {
        match cache.watch_prefix(USER_ROUTE_PREFIX, watch.clone()).await {
            Ok(Some(id)) => {
                tracing::debug!(
                    "the cache reports route changes: verified routes are not read per push"
                );
                ctx.shutdown.cancelled().await;
                ctx.router.checks.lost();
                let _ = cache.unwatch(id).await;
                return;
            }
            Ok(None) => {
                tracing::debug!(
                    "the cache does not report route changes: every push reads the route"
                );
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch route changes; every push reads the route meanwhile, retrying");
            }
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// Subscribes to this server's kick channel (spec §8.4), retrying until it exists; its state
/// is visible as [`ServerContext::kicks_subscribed`]. Unsubscribes at shutdown.
pub(crate) async fn subscribe_kicks(ctx: Arc<ServerContext>) {
    let channel = kick::channel(&ctx.router.gateway_host, i32::from(ctx.router.gateway_port));
    let weak = Arc::downgrade(&ctx);
    let listener = Arc::new(move |_: &str, msg: &str| {
        let Some(ctx) = weak.upgrade() else { return };
        let Some(req) = KickRequest::from_json(msg) else {
            tracing::warn!(msg, "malformed kick request ignored");
            return;
        };
        gateway_udp::apply_kick(&ctx, &req);
    });
    let mut backoff = Duration::from_millis(500);
    loop {
        match ctx.mq.subscribe(&channel, listener.clone()).await {
            Ok(id) => {
                ctx.kicks_subscribed.store(true, Ordering::Release);
                tracing::info!(%channel, "subscribed to the kick channel");
                ctx.shutdown.cancelled().await;
                let _ = ctx.mq.unsubscribe(id).await;
                return;
            }
            Err(e) => {
                tracing::warn!(%channel, error = %e, "cannot subscribe to the kick channel; cluster kicks wait, retrying");
            }
        }
        tokio::select! {
            _ = ctx.shutdown.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_audit_reads_small_nodes_whole_and_large_ones_in_parts() {
        let mut a = Audit::new(AUDIT_PART_USERS);
        for _ in 0..3 {
            assert_eq!(a.part(2_999), (0, 1), "the whole table every time");
            a.done();
        }

        // 19,900 users: 7 parts, one each 30 s, so 95 reads a second, not 663.
        let mut a = Audit::new(AUDIT_PART_USERS);
        assert_eq!(a.part(19_900), (0, 7));
        a.done();
        // The part count holds for the sweep even as users come and go ...
        assert_eq!(a.part(50), (1, 7));
        for _ in 1..7 {
            a.done();
        }
        // ... and is cut anew for the next one.
        assert_eq!(a.part(50), (0, 1));
        a.done();
        // A table that more than doubles mid-sweep starts a new one: after a restart the
        // first sweep is cut while few users are back.
        let mut a = Audit::new(AUDIT_PART_USERS);
        assert_eq!(a.part(50_000), (0, 17));
        a.done();
        assert_eq!(a.part(100_000), (1, 17), "doubled: not yet");
        assert_eq!(a.part(1_000_000), (0, 334), "more than doubled: cut anew");
        assert_eq!(a.part(1_000_000).1, 334, "1 M users: a sweep of 2.8 h");
    }

    #[test]
    fn a_sweep_tells_when_it_ends() {
        let mut a = Audit::new(AUDIT_PART_USERS);
        assert_eq!(a.part(2_000), (0, 1));
        assert!(a.done(), "one part: the sweep ends with it");
        // The recheck after an outage: 1 M users in 100 parts of 10,000 (2,000 reads a
        // second at one part per 5 s tick).
        let mut r = Audit::new(RECHECK_PART_USERS);
        assert_eq!(r.part(1_000_000), (0, 100));
        for i in 1..100 {
            assert!(!r.done(), "part {i} of 100 is not the end");
            assert_eq!(r.part(1_000_000), (i, 100));
        }
        assert!(r.done(), "the 100th part ends the sweep");
        let per_second = RECHECK_PART_USERS as u64 / GUARD_TICK.as_secs();
        assert_eq!(per_second, 2_000);
    }

    #[test]
    fn a_failed_part_is_checked_again() {
        let mut a = Audit::new(AUDIT_PART_USERS);
        assert_eq!(a.part(7_000), (0, 3));
        a.done();
        assert_eq!(a.part(7_000), (1, 3));
        // No `done()`: the cache failed during the part.
        assert_eq!(a.part(7_000), (1, 3));
    }
}
