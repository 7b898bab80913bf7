//! WebSocket listener (spec §1.9, `mp.net.ws-server-port`): JSON text frames for the JS client,
//! and the demo page at `/index.html`.
//!
//! A WebSocket client is an ordinary [`Connection`] whose transport is
//! [`Transport::Json`]: routes, kicks, pushes, broadcast and the gateway reach it through
//! the same connection table and bounded outbound buffer (same water marks) as a TCP
//! client. Inbound frames are parsed by [`crate::protocol::json`] into typed session requests
//! and fed to the same session state machine as TCP (`protocol::session`, driven by
//! `handler`); only its HANDSHAKE differs (no RSA, no keys, no ticket, §4.3 last paragraph).
//! Outbound frames are built by `protocol::json` from the replies and messages themselves.
//!
//! The listener is `tokio-tungstenite` on a plain `TcpListener` rather than axum: the
//! server needs one upgrade route and one static page, tungstenite is what axum's `ws`
//! feature wraps anyway (and what the tests use as a client), and it avoids bringing hyper
//! and the axum stack into the embeddable library. The request head is read here first
//! (bounded, parsed by `httparse`): an upgrade goes on to tungstenite (another path than
//! `mp.net.ws-path` is answered 404), a plain `GET /index.html` gets the demo page, anything
//! else 404.
//!
//! Liveness (the original has none, quirk Q8): the idle rule of the TCP server
//! (`protocol::session::idle`, §7.2) with, as heartbeat, what the server negotiates for a
//! client offering none (the JS client's HANDSHAKE has no heartbeat fields), i.e.
//! `mp.core.min-heartbeat`; 10 s before the handshake. At every check the server sends a
//! WebSocket ping, which browsers answer by themselves; the pong, like any frame, counts as
//! activity. Also bounded: the HTTP upgrade and the time from the upgrade to the HANDSHAKE
//! (`mp.net.ws-handshake-timeout`, each), and every frame and message
//! (`mp.net.ws-max-frame-size`; larger ones close with code 1009). A reaped connection's
//! routes are removed exactly as for TCP (`handler::on_close`).
//!
//! As in the original, cmd 1 is an unsupported command. Quirk Q8 is fixed: the AUTO_ACK
//! reply to an upstream push goes out as a JSON `{"cmd":23,...}` frame.

use std::io::Cursor;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, Join, ReadHalf, WriteHalf};
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use super::connection::{Connection, Flow, Transport};
use super::context::ServerContext;
use super::handler;
use crate::protocol::Command;
use crate::protocol::json;
use crate::protocol::session::{
    IdleCheck, IdleVerdict, Inbound, Request as SessionRequest, SessionConfig, negotiate_heartbeat,
};

/// The demo page (`GET /index.html`): handshakes, binds a user and shows pushes.
const DEMO_PAGE: &str = include_str!("websocket_demo.html");

/// Largest HTTP request head read before the upgrade (browsers send 1–2 KiB).
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// Most request headers accepted.
const MAX_HEADERS: usize = 64;

/// How long queued frames may take to leave when the connection is closing.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// The socket after the request head was read: the head is replayed to tungstenite.
type Io = Join<tokio::io::Chain<Cursor<Vec<u8>>, ReadHalf<Stream>>, WriteHalf<Stream>>;

/// A plain TCP or a TLS (wss) stream.
type Stream = Box<dyn Duplex>;

/// What the WebSocket task needs of its socket.
trait Duplex: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Duplex for T {}

type Ws = WebSocketStream<Io>;
type WsSink = futures::stream::SplitSink<Ws, WsMessage>;

/// Accepts WebSocket clients until shutdown.
pub(crate) async fn accept(at: super::Listening, listener: TcpListener) {
    let (io, ctx, tasks, tls) = (at.io(), &at.ctx, &at.tasks, &at.tls);
    // The same admission as TCP clients: one connection cap and IP rate for both.
    super::accept_admitted(ctx, listener, "websocket server", |stream, peer, slot| {
        let _ = stream.set_nodelay(true);
        let (ctx, acceptor) = (ctx.clone(), tls.as_ref().map(|t| t.acceptor()));
        io.spawn(tasks.track_future(async move {
            let stream: Stream = match acceptor {
                None => Box::new(stream),
                Some(acceptor) => match super::tls::handshake(&ctx, acceptor, stream, peer).await {
                    Some(s) => Box::new(s),
                    None => return,
                },
            };
            serve(ctx, stream, peer).await;
            drop(slot);
        }));
    })
    .await;
}

/// The heartbeat of a WebSocket connection: the JS client offers none (its HANDSHAKE has no
/// heartbeat fields), so §7.1 with the client's 0 gives `mp.core.min-heartbeat`.
fn ws_heartbeat(ctx: &ServerContext) -> Duration {
    let cfg = SessionConfig {
        min_heartbeat: ctx.config.core.min_heartbeat,
        max_heartbeat: ctx.config.core.max_heartbeat,
        session_expired_time: ctx.config.core.session_expired_time,
    };
    negotiate_heartbeat(&cfg, 0)
}

/// Answers the HTTP request or upgrades it, then runs the connection until it closes.
async fn serve(ctx: Arc<ServerContext>, stream: Stream, peer: SocketAddr) {
    let limit = ctx.config.net.ws_handshake_timeout;
    let ws = tokio::select! {
        _ = ctx.shutdown.cancelled() => return,
        r = tokio::time::timeout(limit, http(&ctx, stream)) => match r {
            Ok(Ok(Some(ws))) => ws,
            Ok(Ok(None)) => return,
            Ok(Err(why)) => {
                tracing::debug!(%peer, reason = %why, "websocket upgrade refused");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "websocket upgrade timed out");
                return;
            }
        },
    };
    let conn = Arc::new(Connection::accepted(&ctx, peer).with_transport(Transport::Json));
    conn.touch_read_now(&ctx);
    ctx.connections.insert(conn.seq(), conn.clone());
    let _open = crate::metrics::GaugeGuard::new(&crate::metrics::CONN_WS);
    let reason = drive(&ctx, &conn, ws).await;
    tracing::debug!(conn = %conn.id(), %peer, %reason, "websocket connection closed");
    conn.close();
    ctx.connections.remove(&conn.seq());
    Box::pin(handler::on_close(&ctx, &conn)).await;
}

/// What the request head asked for.
enum Head {
    /// A WebSocket upgrade (any path: tungstenite answers another path with 404).
    Upgrade,
    /// `GET` or `HEAD` of the demo page.
    Page { head_only: bool },
    /// Anything else.
    NotFound,
}

/// Reads the request head; serves the page or a 404 (`Ok(None)`), or completes the upgrade.
async fn http(ctx: &ServerContext, stream: Stream) -> Result<Option<Ws>, String> {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut head = Vec::with_capacity(1024);
    let what = loop {
        let mut chunk = [0u8; 1024];
        let room = (MAX_REQUEST_HEAD - head.len()).min(chunk.len());
        if room == 0 {
            let _ = wr
                .write_all(&plain_response("431 Request Header Fields Too Large"))
                .await;
            return Err(format!("request head over {MAX_REQUEST_HEAD} bytes"));
        }
        let n = rd
            .read(&mut chunk[..room])
            .await
            .map_err(|e| format!("read error: {e}"))?;
        if n == 0 {
            return Err("closed before a complete request".into());
        }
        head.extend_from_slice(&chunk[..n]);
        match classify(&head) {
            Ok(Some(what)) => break what,
            Ok(None) => continue,
            Err(e) => {
                let _ = wr.write_all(&plain_response("400 Bad Request")).await;
                return Err(format!("bad request: {e}"));
            }
        }
    };
    let response = match what {
        Head::Upgrade => return upgrade(ctx, head, rd, wr).await.map(Some),
        Head::Page { head_only } => page_response(&ctx.config.net.ws_path, head_only),
        Head::NotFound => plain_response("404 Not Found"),
    };
    wr.write_all(&response)
        .await
        .map_err(|e| format!("write error: {e}"))?;
    let _ = wr.shutdown().await;
    Ok(None)
}

/// `Ok(None)` while the head is incomplete.
fn classify(head: &[u8]) -> Result<Option<Head>, httparse::Error> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    if req.parse(head)?.is_partial() {
        return Ok(None);
    }
    let upgrade = req.headers.iter().any(|h| {
        h.name.eq_ignore_ascii_case("upgrade")
            && std::str::from_utf8(h.value)
                .is_ok_and(|v| v.trim().eq_ignore_ascii_case("websocket"))
    });
    if upgrade {
        return Ok(Some(Head::Upgrade));
    }
    let path = req.path.unwrap_or("");
    let path = path.split(['?', '#']).next().unwrap_or("");
    Ok(Some(match (req.method, path) {
        (Some("GET"), "/index.html") => Head::Page { head_only: false },
        (Some("HEAD"), "/index.html") => Head::Page { head_only: true },
        _ => Head::NotFound,
    }))
}

/// The demo page, told the upgrade path (as a JS string literal; `</` escaped so no value
/// can end the script).
fn demo_page(ws_path: &str) -> String {
    let literal = serde_json::Value::from(ws_path)
        .to_string()
        .replace("</", "<\\/");
    DEMO_PAGE.replacen("\"__MPUSH_WS_PATH__\"", &literal, 1)
}

fn page_response(ws_path: &str, head_only: bool) -> Vec<u8> {
    let page = demo_page(ws_path);
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
        page.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(page.as_bytes());
    }
    r
}

fn plain_response(status: &str) -> Vec<u8> {
    let text = status.split_once(' ').map_or(status, |(_, t)| t);
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{text}",
        text.len()
    )
    .into_bytes()
}

/// Completes the WebSocket handshake on `mp.net.ws-path`, the head read so far replayed.
async fn upgrade(
    ctx: &ServerContext,
    head: Vec<u8>,
    rd: ReadHalf<Stream>,
    wr: WriteHalf<Stream>,
) -> Result<Ws, String> {
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
    let max = ctx.config.net.ws_max_frame_size;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    let io = tokio::io::join(Cursor::new(head).chain(rd), wr);
    tokio_tungstenite::accept_hdr_async_with_config(io, check_path, Some(config))
        .await
        .map_err(|e| e.to_string())
}

/// Why the connection ends, and the close frame the client gets (if any beyond a plain close).
struct End {
    reason: String,
    frame: Option<CloseFrame>,
}

impl End {
    fn plain(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            frame: None,
        }
    }

    fn with_code(code: CloseCode, reason: impl Into<String>) -> Self {
        let reason = reason.into();
        // A close frame's reason must fit in a control frame (123 bytes).
        let mut text = reason.clone();
        while text.len() > 123 {
            text.pop();
        }
        Self {
            reason,
            frame: Some(CloseFrame {
                code,
                reason: text.into(),
            }),
        }
    }
}

/// The connection's event loop. Returns why it ended.
async fn drive(ctx: &Arc<ServerContext>, conn: &Arc<Connection>, ws: Ws) -> String {
    let (mut sink, mut stream) = ws.split();
    let shutdown = ctx.shutdown.clone();
    let heartbeat = ws_heartbeat(ctx);
    let mut idle = IdleCheck::new(ctx.config.core.max_hb_timeout_times);
    let handshaken = || conn.lock_state().is_handshaken();
    let interval = |handshaken: bool| IdleCheck::interval(handshaken.then_some(heartbeat));
    let mut check_every = interval(false);
    let mut next_check = Instant::now() + check_every;
    let handshake_deadline = Instant::now() + ctx.config.net.ws_handshake_timeout;
    let end = loop {
        let is_handshaken = handshaken();
        // A handshake replaces the pre-handshake interval: don't wait out the old one.
        if interval(is_handshaken) != check_every {
            check_every = interval(is_handshaken);
            next_check = next_check.min(Instant::now() + check_every);
        }
        tokio::select! {
            biased;
            _ = conn.closed() => break End::plain("closed by server"),
            _ = shutdown.cancelled() => break End::with_code(CloseCode::Away, "server stopping"),
            _ = tokio::time::sleep_until(handshake_deadline), if !is_handshaken => {
                break End::with_code(CloseCode::Policy, "no handshake in time");
            }
            _ = conn.woken() => match flush_unless_stopped(conn, &mut sink, &shutdown).await {
                Ok(()) => {}
                Err(Stop::Stopped(why)) => break End::plain(why),
                Err(Stop::Failed(why)) => return why,
            },
            _ = tokio::time::sleep_until(next_check) => {
                let last_read = conn.last_read_ms();
                if let IdleVerdict::TimedOut(misses) = idle.check(ctx.now_ms(), last_read, check_every) {
                    break End::with_code(
                        CloseCode::Away,
                        format!("heartbeat timeout ({misses} missed checks)"),
                    );
                }
                // Ask for a sign of life: browsers answer pings by themselves. A peer that
                // does not even take the ping within an interval is not reading at all.
                let ping = sink.send(WsMessage::Ping(Default::default()));
                match tokio::time::timeout(check_every, ping).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return format!("write error: {e}"),
                    Err(_) => return "peer not reading (ping not written)".into(),
                }
                next_check = Instant::now() + check_every;
            }
            msg = stream.next() => {
                // Any frame, a pong included, is a sign of life.
                conn.touch_read_now(ctx);
                match msg {
                    None => return "closed by peer".into(),
                    Some(Err(WsError::Capacity(e))) => {
                        break End::with_code(CloseCode::Size, format!("frame too large: {e}"));
                    }
                    Some(Err(e)) => return format!("read error: {e}"),
                    Some(Ok(WsMessage::Text(text))) => {
                        match handle_text(ctx, conn, text.as_str()).await {
                            Flow::Continue => {}
                            Flow::Close => break End::plain("closed after error reply"),
                            Flow::Then(effects) => {
                                // The reply goes out before the backend work it does not need.
                                match flush_unless_stopped(conn, &mut sink, &shutdown).await {
                                    Ok(()) => effects.await,
                                    Err(Stop::Stopped(why)) => break End::plain(why),
                                    Err(Stop::Failed(why)) => return why,
                                }
                            }
                        }
                    }
                    Some(Ok(WsMessage::Binary(_))) => {
                        break End::with_code(CloseCode::Unsupported, "binary frame");
                    }
                    Some(Ok(WsMessage::Close(_))) => return "closed by peer".into(),
                    // Pings are answered by tungstenite on the next flush.
                    Some(Ok(_)) => {
                        if let Err(e) = sink.flush().await {
                            return format!("write error: {e}");
                        }
                    }
                }
            }
        }
    };
    // Best effort: let queued replies (e.g. the ERROR before a close) reach the client, then
    // the close frame.
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, async {
        flush(conn, &mut sink).await?;
        if let Some(frame) = end.frame {
            sink.send(WsMessage::Close(Some(frame))).await?;
        }
        sink.close().await
    })
    .await;
    end.reason
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
async fn flush(conn: &Connection, sink: &mut WsSink) -> Result<(), WsError> {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn what(head: &str) -> Option<&'static str> {
        classify(head.as_bytes()).unwrap().map(|h| match h {
            Head::Upgrade => "upgrade",
            Head::Page { head_only: false } => "page",
            Head::Page { head_only: true } => "head",
            Head::NotFound => "404",
        })
    }

    #[test]
    fn request_heads() {
        assert_eq!(what("GET /index.html HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(
            what("GET /index.html?user=u1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some("page")
        );
        assert_eq!(what("HEAD /index.html HTTP/1.1\r\n\r\n"), Some("head"));
        assert_eq!(what("GET / HTTP/1.1\r\n\r\n"), Some("404"));
        assert_eq!(what("POST /index.html HTTP/1.1\r\n\r\n"), Some("404"));
        assert_eq!(
            what("GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: WebSocket\r\n\r\n"),
            Some("upgrade")
        );
        assert!(classify(b"\x00\x01 nonsense\r\n\r\n").is_err());
    }

    #[test]
    fn responses_are_complete() {
        let r = String::from_utf8(page_response("/w</script>", false)).unwrap();
        let (head, body) = r.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(head.contains(&format!("Content-Length: {}", body.len())));
        assert!(body.contains("<html"));
        assert!(body.contains(r#"|| "/w<\/script>";"#), "path not filled in");
        let r = String::from_utf8(plain_response("404 Not Found")).unwrap();
        assert!(r.ends_with("Content-Length: 9\r\nConnection: close\r\n\r\nNot Found"));
        let close = End::with_code(CloseCode::Size, "x".repeat(300));
        assert_eq!(close.frame.unwrap().reason.len(), 123);
    }
}
