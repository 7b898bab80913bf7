//! Push to users connected to this server (spec §9.1 step 2 and 4).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::Instrument;

use super::{AckModel, DEFAULT_ACK_TIMEOUT, PushEnv, PushTarget};
use crate::protocol::Command;
use crate::protocol::body::Prepared;
use crate::router::RoutedConnection;
use crate::spi::{ClientType, PushOutcome};

/// Pushes `content` to one connection and, when the model asks for it, waits for the ACK
/// up to `ack_timeout`.
pub(crate) async fn push_to_connection<E: PushEnv>(
    ctx: &E,
    conn: &Arc<E::Conn>,
    content: &Bytes,
    flags: u8,
    ack_timeout: Duration,
) -> PushOutcome {
    // One block, so that every way out of it is counted.
    let outcome = async {
        if conn.is_closed() {
            return PushOutcome::Offline;
        }
        if !conn.is_writable() {
            return PushOutcome::Failure;
        }
        let push = ctx.push_center();
        let id = push.next_push_id();
        let model = AckModel::from_flags(flags);
        let needs_ack = model != AckModel::NoAck;
        // Registered before the write: a fast ACK must find its waiter (Q27).
        let waiter = needs_ack.then(|| push.acks.register(conn.seq(), id));
        // The push id on the connection ties this hop to the client's PUSH and ACK packets.
        let sent = tracing::debug_span!(
            "mpush.connection.write",
            conn = conn.seq(),
            push_id = id,
            flags
        )
        .in_scope(|| {
            let content = Prepared::new(content.clone(), ctx.compress_threshold());
            conn.send_prepared(Command::Push, id, flags, &content)
        });
        if sent.is_err() {
            return PushOutcome::Failure;
        }
        let Some(mut waiter) = waiter else {
            return PushOutcome::Success;
        };
        let wait = if ack_timeout.is_zero() {
            DEFAULT_ACK_TIMEOUT
        } else {
            ack_timeout
        };
        let written = std::time::Instant::now();
        let span = tracing::debug_span!(
            "mpush.push.ack",
            conn = conn.seq(),
            push_id = id,
            outcome = tracing::field::Empty,
        );
        // Boxed: only ACK pushes wait, and the wait's timer and close notice would
        // otherwise be part of every push's task (copied in at spawn, out at completion).
        let outcome = Box::pin(
            async {
                tokio::select! {
                    r = &mut waiter.rx => if r.is_ok() {
                        let key = if model == AckModel::BizAck {
                            &crate::metrics::ACK_LATENCY_BIZ
                        } else {
                            &crate::metrics::ACK_LATENCY_AUTO
                        };
                        crate::metrics::observe(key, written.elapsed());
                        PushOutcome::AckSuccess
                    } else { PushOutcome::Failure },
                    _ = conn.closed() => PushOutcome::Failure,
                    _ = tokio::time::sleep(wait) => PushOutcome::Timeout,
                }
            }
            .instrument(span.clone()),
        )
        .await;
        span.record("outcome", tracing::field::debug(outcome));
        outcome
    }
    .await;
    record_push(outcome, flags);
    outcome
}

/// Counts one unicast push in `mpush_pushes_total` (static keys: nothing is formatted).
pub(crate) fn record_push(outcome: PushOutcome, flags: u8) {
    let ack = match AckModel::from_flags(flags) {
        AckModel::NoAck => 0,
        AckModel::AutoAck => 1,
        AckModel::BizAck => 2,
    };
    let i = match outcome {
        PushOutcome::Success | PushOutcome::AckSuccess => 0,
        PushOutcome::Offline => 1,
        PushOutcome::Failure => 2,
        PushOutcome::Timeout => 3,
        PushOutcome::RouterChange => 4,
    };
    crate::metrics::incr(&crate::metrics::PUSH_KEYS[ack][i]);
}

/// Pushes to `user_id` on this server: to one client type, or to every connection of the
/// user when `client_type` is `None`. Returns one outcome per targeted connection; an empty
/// vector means the user has no connection here.
pub(crate) async fn push_to_local_user<E: PushEnv>(
    ctx: &E,
    user_id: &str,
    client_type: Option<ClientType>,
    content: Bytes,
    ack: AckModel,
    timeout: Duration,
) -> Vec<(ClientType, PushOutcome)> {
    let targets = match client_type {
        Some(t) => ctx
            .local_routes()
            .lookup(user_id, t)
            .map(|c| vec![(t, c)])
            .unwrap_or_default(),
        None => ctx.local_routes().lookup_all(user_id),
    };
    let pushes = targets.into_iter().map(|(t, conn)| {
        let content = &content;
        async move {
            let outcome = push_to_connection(ctx, &conn, content, ack.flags(), timeout).await;
            if outcome == PushOutcome::Offline {
                // A dead connection found on the way: drop its route (§9.1 step 2).
                ctx.local_routes().unregister(user_id, t, conn.seq());
            }
            ctx.push_listener().on_push(user_id, t, outcome);
            (t, outcome)
        }
    });
    futures::future::join_all(pushes).await
}
