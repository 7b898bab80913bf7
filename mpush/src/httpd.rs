//! Bounded HTTP/1 serving of an axum router, optionally over TLS: the one accept loop of the
//! alloc service and the admin API.
//!
//! A leaf above `tls`: it knows sockets, hyper and rustls, nothing about pushes. The bounds
//! are the caller's: a connection slot is taken *before* accepting (at the limit, new clients
//! wait in the listen backlog), the request head must arrive within `header_timeout`, a TLS
//! handshake within [`crate::tls::HANDSHAKE_TIMEOUT`], and at `stop` every open connection
//! gets `shutdown_grace` to finish its request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::tls::ReloadableTls;

/// The bounds of one HTTP listener.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Time allowed for a request head.
    pub header_timeout: Duration,
    /// Time an open connection gets to finish at `stop`.
    pub shutdown_grace: Duration,
}

/// Accepts HTTP/1 connections (what MPush's clients and `curl` speak) on `listener` until
/// `stop`, serving `app` on each in a task of `tasks`; with `tls`, each connection first
/// completes a TLS handshake with the listener's current certificate. `what` names the
/// listener in logs.
pub(crate) async fn serve(
    what: &'static str,
    listener: TcpListener,
    app: Router,
    limits: Limits,
    tls: Option<Arc<ReloadableTls>>,
    stop: CancellationToken,
    tasks: TaskTracker,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => return,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    // Usually EMFILE: back off instead of spinning.
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (app, stop, acceptor) = (
            app.clone(),
            stop.clone(),
            tls.as_ref().map(|t| t.acceptor()),
        );
        tasks.spawn(async move {
            match acceptor {
                None => serve_connection(what, stream, peer, app, limits, &stop).await,
                Some(acceptor) => {
                    if let Some(s) = crate::tls::accept(acceptor, stream, peer, &stop).await {
                        serve_connection(what, s, peer, app, limits, &stop).await;
                    }
                }
            }
            drop(slot);
        });
    }
}

async fn serve_connection<S>(
    what: &'static str,
    stream: S,
    peer: SocketAddr,
    app: Router,
    limits: Limits,
    stop: &CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(limits.shutdown_grace, conn.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = what, %peer, error = %e, "HTTP connection ended with an error");
    }
}
