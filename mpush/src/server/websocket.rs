//! WebSocket listener (spec §1.9, `mp.net.ws-server-port`): JSON text frames for the JS client.
//!
//! A WebSocket client is an ordinary [`Connection`] whose transport is
//! [`Transport::Json`]: routes, kicks, pushes, broadcast and the gateway reach it through
//! the same `send_secure`/`send_raw` calls as a TCP client, which encode JSON text instead
//! of encrypted binary frames, into the same bounded outbound buffer (same water marks).
//! Inbound frames are parsed by [`crate::protocol::json`] into typed session requests and fed
//! to the same session state machine as TCP (`protocol::session`, driven by `handler`);
//! only its HANDSHAKE differs (no RSA, no keys, no ticket, §4.3 last paragraph).
//!
//! The listener is `tokio-tungstenite` on a plain `TcpListener` rather than axum: the
//! server needs exactly one upgrade route and no other HTTP, tungstenite is what axum's
//! `ws` feature wraps anyway (and what the tests use as a client), and it avoids bringing
//! hyper and the axum stack into the embeddable library. A request for another path is
//! answered 404; a plain (non-upgrade) HTTP request is refused and closed (the demo page
//! of the original is not served).
//!
//! As in the original, WebSocket connections have no heartbeat and no idle timeout, and
//! cmd 1 is an unsupported command. Quirk Q8 is fixed: the AUTO_ACK reply to an upstream
//! push goes out as a JSON `{"cmd":23,...}` frame.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::task::TaskTracker;

use super::connection::{Connection, Flow, Transport};
use super::context::ServerContext;
use super::handler;
use crate::protocol::Command;
use crate::protocol::json;
use crate::protocol::session::{Inbound, Request as SessionRequest};

/// Largest accepted message, as the original's 64 KiB HTTP aggregator.
const MAX_MESSAGE: usize = 64 * 1024;

/// How long a client may take to complete the HTTP upgrade.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long queued frames may take to leave when the connection is closing.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// Accepts WebSocket clients until shutdown.
pub(crate) async fn accept(ctx: Arc<ServerContext>, listener: TcpListener, tasks: TaskTracker) {
    let io = ctx.executor.handle(crate::spi::ExecutorRole::Io);
    super::accept_loop(&ctx, listener, "websocket server", |stream, peer| {
        // The same admission as TCP clients: one connection cap and IP rate for both.
        let slot = match ctx.admission.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(%peer, reason = %why, "websocket connection refused");
                return;
            }
        };
        let run = serve(ctx.clone(), stream, peer);
        io.spawn(tasks.track_future(async move {
            run.await;
            drop(slot);
        }));
    })
    .await;
}

/// Upgrades one TCP stream, then runs the connection until it closes.
async fn serve(ctx: Arc<ServerContext>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let path = ctx.config.net.ws_path.clone();
    // The error type is fixed by tungstenite's `Callback` trait.
    #[allow(clippy::result_large_err)]
    let check_path = move |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
        if req.uri().path() == path {
            Ok(resp)
        } else {
            let mut not_found = ErrorResponse::new(Some("not found".into()));
            *not_found.status_mut() = StatusCode::NOT_FOUND;
            Err(not_found)
        }
    };
    let config = WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE));
    let upgrade = tokio_tungstenite::accept_hdr_async_with_config(stream, check_path, Some(config));
    let ws = tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        r = tokio::time::timeout(UPGRADE_TIMEOUT, upgrade) => match r {
            Ok(Ok(ws)) => ws,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "websocket upgrade refused");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "websocket upgrade timed out");
                return;
            }
        },
    };
    let (seq, id) = ctx.next_conn_id();
    let net = &ctx.config.net;
    let conn = Arc::new(
        Connection::new(
            seq,
            id,
            peer,
            net.connect_server_low_water_mark,
            net.connect_server_high_water_mark,
        )
        .with_transport(Transport::Json),
    );
    ctx.connections.insert(seq, conn.clone());
    let reason = drive(&ctx, &conn, ws).await;
    tracing::debug!(conn = %conn.id(), %peer, %reason, "websocket connection closed");
    conn.close();
    ctx.connections.remove(&seq);
    Box::pin(handler::on_close(&ctx, &conn)).await;
}

type WsSink = futures::stream::SplitSink<WebSocketStream<TcpStream>, WsMessage>;

/// The connection's event loop. Returns why it ended.
async fn drive(
    ctx: &Arc<ServerContext>,
    conn: &Arc<Connection>,
    ws: WebSocketStream<TcpStream>,
) -> String {
    let (mut sink, mut stream) = ws.split();
    let shutdown = ctx.shutdown.clone();
    let reason = loop {
        tokio::select! {
            biased;
            _ = conn.closed() => break "closed by server".to_string(),
            _ = shutdown.cancelled() => break "server stopping".to_string(),
            _ = conn.woken() => match flush_unless_stopped(conn, &mut sink, &shutdown).await {
                Ok(()) => {}
                Err(Stop::Stopped(why)) => break why,
                Err(Stop::Failed(why)) => return why,
            },
            msg = stream.next() => match msg {
                None => return "closed by peer".into(),
                Some(Err(e)) => return format!("read error: {e}"),
                Some(Ok(WsMessage::Text(text))) => {
                    match handle_text(ctx, conn, text.as_str()).await {
                        Flow::Continue => {}
                        Flow::Close => break "closed after error reply".to_string(),
                        Flow::Then(effects) => {
                            // The reply goes out before the backend work it does not need.
                            match flush_unless_stopped(conn, &mut sink, &shutdown).await {
                                Ok(()) => effects.await,
                                Err(Stop::Stopped(why)) => break why,
                                Err(Stop::Failed(why)) => return why,
                            }
                        }
                    }
                }
                Some(Ok(WsMessage::Binary(_))) => break "binary frame".to_string(),
                Some(Ok(WsMessage::Close(_))) => return "closed by peer".into(),
                // Pings are answered by tungstenite on the next flush.
                Some(Ok(_)) => {
                    if let Err(e) = sink.flush().await {
                        return format!("write error: {e}");
                    }
                }
            },
        }
    };
    // Best effort: let queued replies (e.g. the ERROR before a close) reach the client.
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
        flush(conn, &mut sink).await?;
        sink.close().await
    })
    .await;
    reason
}

/// Why a flush did not complete.
enum Stop {
    /// Closed by the server or shutting down: a last best-effort flush may still follow.
    Stopped(String),
    /// The socket failed.
    Failed(String),
}

/// Flushes, unless a close or a shutdown comes first: a client that never reads must not pin
/// the task (a close comes e.g. when its buffer passes twice the high mark).
async fn flush_unless_stopped(
    conn: &Connection,
    sink: &mut WsSink,
    shutdown: &tokio_util::sync::CancellationToken,
) -> Result<(), Stop> {
    tokio::select! {
        r = flush(conn, sink) => r.map_err(|e| Stop::Failed(format!("write error: {e}"))),
        _ = conn.closed() => Err(Stop::Stopped("closed by server".into())),
        _ = shutdown.cancelled() => Err(Stop::Stopped("server stopping".into())),
    }
}

/// Writes every queued JSON frame to the socket.
async fn flush(
    conn: &Connection,
    sink: &mut WsSink,
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let buf = conn.take_outbound();
    if buf.is_empty() {
        return Ok(());
    }
    for frame in buf[..].split(|b| *b == b'\n').filter(|f| !f.is_empty()) {
        // Frames were queued from `String`s, so they are valid UTF-8.
        let text = String::from_utf8_lossy(frame).into_owned();
        sink.feed(WsMessage::text(text)).await?;
    }
    sink.flush().await
}

/// Handles one inbound text frame: parsed straight into a session request (no binary round
/// trip) and fed to the same session state machine as TCP.
async fn handle_text(ctx: &Arc<ServerContext>, conn: &Arc<Connection>, text: &str) -> Flow {
    let inbound = match json::decode(text) {
        Ok(p) => json::to_inbound(&p),
        Err(e) => {
            // As the original's decode exception: ERROR 100 (cmd 0, sessionId 0), then close
            // (spec §2).
            tracing::debug!(conn = %conn.id(), error = %e, "bad websocket frame");
            Inbound {
                sid: 0,
                req: SessionRequest::Malformed(Command::from_code(0)),
            }
        }
    };
    // Boxed as in the TCP task: the driver's futures are large and short-lived.
    Box::pin(handler::dispatch(ctx, conn, inbound)).await
}
