//! Broadcast to every local route that passes a filter (spec §9.5, §9.6).

use std::time::Duration;

use bytes::Bytes;

use super::condition::{BroadcastCondition, BudgetExceeded, Condition, SessionVars};
use super::flow::FlowControl;
use super::{PushEnv, PushTarget, SessionView};
use crate::protocol::body::Prepared;
use crate::protocol::message::{ErrorMessage, GatewayPush, Message, OkMessage};
use crate::protocol::{Command, Packet};
use crate::router::RoutedConnection;

pub(crate) use crate::protocol::keys::{task_key, task_success_key};

/// Default QPS of a Redis-controlled task when `q` is absent.
const DEFAULT_TASK_QPS: u64 = 1000;

/// Routes visited between yields to the scheduler. Counted per route visited, not per send:
/// a selective broadcast that matches nobody must not hold the worker either.
const YIELD_EVERY: u32 = 256;

/// One copied session field; the buffer is kept across sessions, `present` tells null.
#[derive(Debug, Default)]
struct Field {
    buf: String,
    present: bool,
}

impl Field {
    fn set(&mut self, v: Option<&str>) {
        self.buf.clear();
        self.present = v.is_some();
        if let Some(v) = v {
            self.buf.push_str(v);
        }
    }

    fn get(&self) -> Option<&str> {
        self.present.then_some(self.buf.as_str())
    }
}

/// The filter variables of one session, copied out of its state under the lock into
/// buffers reused across sessions (no allocation once warm), so the filter runs unlocked.
#[derive(Debug, Default)]
struct VarsBuf {
    tags: Field,
    client_version: Field,
    os_name: Field,
    os_version: Field,
}

impl VarsBuf {
    /// Loads what `filter` reads from the session (only the tags for a tag filter).
    fn load(&mut self, state: &dyn SessionView, filter: &Filter) {
        self.tags.set(state.tags());
        if matches!(filter, Filter::Condition(_)) {
            self.client_version.set(state.client_version());
            self.os_name.set(state.os_name());
            self.os_version.set(state.os_version());
        }
    }
}

/// Paces a long iteration: yields to the scheduler every [`YIELD_EVERY`] steps and reports
/// shutdown at those points (checking every step would take the token's lock per route).
#[derive(Debug, Default)]
struct Pacer {
    since_yield: u32,
}

impl Pacer {
    /// Called once per step; `false` when the iteration must stop for shutdown.
    async fn step(&mut self, shutdown: &tokio_util::sync::CancellationToken) -> bool {
        self.since_yield += 1;
        if self.since_yield < YIELD_EVERY {
            return true;
        }
        self.since_yield = 0;
        tokio::task::yield_now().await;
        !shutdown.is_cancelled()
    }
}

/// How a broadcast's iteration ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Every route was visited, or the flow-control total or a cancelled task stopped it.
    Finished,
    /// The server is stopping.
    Shutdown,
}

/// Which sessions a broadcast reaches: `condition` if present, else `tags`, else all.
#[derive(Debug)]
pub(crate) enum Filter {
    /// Everyone.
    All,
    /// Sessions whose tags string contains any of these as a substring (quirk Q16, kept).
    Tags(Vec<String>),
    /// A compiled condition expression, with this broadcast's evaluation budget.
    Condition(BroadcastCondition),
}

impl Filter {
    /// Builds the filter of a GATEWAY_PUSH; a bad condition is an error for the sender.
    pub(crate) fn from_push(msg: &GatewayPush) -> Result<Self, String> {
        if let Some(c) = msg.condition.as_deref().filter(|c| !c.trim().is_empty()) {
            return Condition::compile(c)
                .map(|c| Filter::Condition(BroadcastCondition::new(c)))
                .map_err(|e| e.to_string());
        }
        match &msg.tags {
            Some(t) if !t.is_empty() => Ok(Filter::Tags(t.clone())),
            _ => Ok(Filter::All),
        }
    }

    /// `true` if the session passes.
    pub(crate) fn matches(&self, vars: &SessionVars<'_>) -> bool {
        match self {
            Filter::All => true,
            Filter::Tags(wanted) => vars
                .tags
                .is_some_and(|have| wanted.iter().any(|w| have.contains(w.as_str()))),
            Filter::Condition(c) => c.matches(vars),
        }
    }

    /// Whether the condition exceeded its budget: it then matched no further session.
    pub(crate) fn budget_exceeded(&self) -> Option<BudgetExceeded> {
        match self {
            Filter::Condition(c) => c.exceeded(),
            _ => None,
        }
    }
}

/// Runs a broadcast on this server and returns the reply for the gateway client: OK (cmd 16,
/// no data) once every matching connection has been written, or ERROR for a bad filter or for a
/// condition that exceeded its budget (which stops the broadcast: see docs/CONDITIONS.md).
pub(crate) async fn run<E: PushEnv>(ctx: &E, session_id: i32, msg: GatewayPush) -> Packet {
    let filter = match Filter::from_push(&msg) {
        Ok(f) => f,
        Err(e) => {
            let mut err = ErrorMessage::with_reason(
                Command::GatewayPush.code(),
                &format!("invalid condition: {e}"),
            );
            err.data = None;
            return Packet::with_body(Command::Error, session_id, err.encode());
        }
    };
    crate::metrics::incr(&crate::metrics::BROADCAST_TASKS_KEY);
    let (delivered, ended) = deliver(ctx, &msg, &filter).await;
    ctx.push_listener()
        .on_broadcast_done(msg.task_id.as_deref(), delivered);
    if let Some(e) = filter.budget_exceeded() {
        tracing::warn!(delivered, error = %e, "broadcast stopped: its condition exceeded its budget");
        let mut err = ErrorMessage::with_reason(
            Command::GatewayPush.code(),
            &format!("condition exceeded its budget ({e}) after {delivered} deliveries"),
        );
        err.data = None;
        return Packet::with_body(Command::Error, session_id, err.encode());
    }
    if ended == Ended::Shutdown {
        let err = ErrorMessage::with_reason(
            Command::GatewayPush.code(),
            "server stopping: broadcast interrupted",
        );
        return Packet::with_body(Command::Error, session_id, err.encode());
    }
    let ok = OkMessage {
        cmd: Command::GatewayPush.code(),
        code: 0,
        data: None,
    };
    Packet::with_body(Command::Ok, session_id, ok.encode())
}

/// Sends the content to every matching, writable local connection under flow control.
/// Returns the number of writes and whether it ran to the end or stopped for shutdown.
pub(crate) async fn deliver<E: PushEnv>(
    ctx: &E,
    msg: &GatewayPush,
    filter: &Filter,
) -> (u64, Ended) {
    let cfg = ctx.broadcast_flow_control();
    let mut flow = FlowControl::new(cfg);
    let task_id = msg.task_id.clone();
    if let Some(t) = &task_id {
        flow.set_limit(task_qps(ctx, t).await.unwrap_or(DEFAULT_TASK_QPS));
    }
    let content = Bytes::from(msg.content.clone().unwrap_or_default());
    // Compressed once here; only the per-session AES is left for each connection.
    let prepared = Prepared::new(content, ctx.compress_threshold());
    let mut sent_users: Vec<String> = Vec::new();
    let mut delivered = 0u64;
    let mut pacer = Pacer::default();
    let mut vars = VarsBuf::default();
    let mut ended = Ended::Finished;
    'routes: for (user_id, client_type, conn) in ctx.local_routes().snapshot() {
        // Every route visited counts, sent or not: fan-out over many connections must not
        // starve unicast pushes and heartbeats even when the filter matches nobody.
        if !pacer.step(ctx.shutdown()).await {
            ended = Ended::Shutdown;
            break;
        }
        if conn.is_closed() {
            ctx.local_routes()
                .unregister(&user_id, client_type, conn.seq());
            continue;
        }
        // The fields are copied into reused buffers under the lock and the filter runs
        // after it is released: a slow condition must not block the connection's handlers.
        let passes = matches!(filter, Filter::All) || {
            conn.with_session(|s| vars.load(s, filter));
            filter.matches(&SessionVars {
                user_id: Some(&user_id),
                tags: vars.tags.get(),
                client_version: vars.client_version.get(),
                os_name: vars.os_name.get(),
                os_version: vars.os_version.get(),
            })
        };
        if !passes || !conn.is_writable() {
            continue;
        }
        loop {
            match flow.try_acquire() {
                Ok(()) => break,
                Err(None) => break 'routes,
                Err(Some(wait)) => {
                    crate::metrics::incr(&crate::metrics::FLOW_WAITS);
                    if let Some(t) = &task_id {
                        flush_progress(ctx, t, &mut sent_users).await;
                        if task_cancelled(ctx, t).await {
                            break 'routes;
                        }
                        if let Some(q) = task_qps(ctx, t).await {
                            flow.set_limit(q);
                        }
                    }
                    tokio::select! {
                        _ = ctx.shutdown().cancelled() => {
                            ended = Ended::Shutdown;
                            break 'routes;
                        }
                        _ = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {}
                    }
                }
            }
        }
        // Broadcast never asks for ACKs, whatever the sender asked (§9.5).
        let id = ctx.push_center().next_push_id();
        if conn.send_broadcast(id, &prepared).is_ok() {
            delivered += 1;
            crate::metrics::incr(&crate::metrics::BROADCAST_DELIVERIES_KEY);
            if task_id.is_some() {
                sent_users.push(user_id);
            }
        }
    }
    if let Some(t) = &task_id {
        flush_progress(ctx, t, &mut sent_users).await;
    }
    (delivered, ended)
}

async fn task_qps<E: PushEnv>(ctx: &E, task_id: &str) -> Option<u64> {
    let v = ctx
        .cache()
        .hget(&task_key(task_id), "q")
        .await
        .ok()
        .flatten()?;
    v.trim().parse::<u64>().ok().filter(|q| *q > 0)
}

async fn task_cancelled<E: PushEnv>(ctx: &E, task_id: &str) -> bool {
    matches!(ctx.cache().hget(&task_key(task_id), "c").await, Ok(Some(v)) if v.trim() == "1")
}

/// `HINCRBY mp:pt<id> sc n` and `LPUSH <id>:sui users…`, de-duplicated per batch (Q21).
async fn flush_progress<E: PushEnv>(ctx: &E, task_id: &str, users: &mut Vec<String>) {
    if users.is_empty() {
        return;
    }
    let n = users.len() as i64;
    users.sort_unstable();
    users.dedup();
    if let Err(e) = ctx.cache().hincr_by(&task_key(task_id), "sc", n).await {
        tracing::warn!(task = task_id, error = %e, "cannot record broadcast progress");
    }
    if let Err(e) = ctx.cache().lpush(&task_success_key(task_id), users).await {
        tracing::warn!(task = task_id, error = %e, "cannot record broadcast users");
    }
    users.clear();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A long iteration that never sends still lets other tasks run between its steps.
    #[tokio::test]
    async fn pacer_yields_by_steps_on_one_thread() {
        let runs = Arc::new(AtomicUsize::new(0));
        let probe = {
            let runs = runs.clone();
            tokio::spawn(async move {
                loop {
                    runs.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                }
            })
        };
        // Let the probe start, then count its runs during the iteration alone.
        while runs.load(Ordering::SeqCst) == 0 {
            tokio::task::yield_now().await;
        }
        let token = tokio_util::sync::CancellationToken::new();
        let steps = 100 * YIELD_EVERY as usize;
        let before = runs.load(Ordering::SeqCst);
        let mut pacer = Pacer::default();
        for _ in 0..steps {
            assert!(pacer.step(&token).await);
        }
        let during = runs.load(Ordering::SeqCst) - before;
        probe.abort();
        assert!(
            during >= 99,
            "the probe ran {during} times in {steps} steps"
        );
    }

    #[tokio::test]
    async fn pacer_stops_on_shutdown() {
        let token = tokio_util::sync::CancellationToken::new();
        token.cancel();
        let mut pacer = Pacer::default();
        let mut steps = 0;
        while pacer.step(&token).await {
            steps += 1;
            assert!(steps < 10 * YIELD_EVERY, "never stopped");
        }
        assert_eq!(steps, YIELD_EVERY - 1);
    }

    #[test]
    fn copied_fields_keep_null_apart_from_empty() {
        let mut f = Field::default();
        f.set(Some("android"));
        assert_eq!(f.get(), Some("android"));
        f.set(None);
        assert_eq!(f.get(), None);
        f.set(Some(""));
        assert_eq!(f.get(), Some(""));
        f.set(Some("ios"));
        assert_eq!(f.get(), Some("ios"));
    }
}
