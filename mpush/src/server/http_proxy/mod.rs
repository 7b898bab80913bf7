//! The HTTP proxy (cmd 12, spec §12): a client's HttpRequestMessage becomes an upstream HTTP
//! request on a kept, pooled client; exactly one HttpResponseMessage answers it.
//!
//! Each request runs on its own task, bounded by a global and a per-connection in-flight cap
//! (503 beyond), so a slow upstream delays neither this connection's other packets nor other
//! connections. The reply goes out through the connection's outbound buffer: upstream answers
//! sealed with the session cipher, the proxy's own errors raw, as MPush does.
//!
//! Fixed against MPush: one reply for an empty uri (Q11), origin-form request lines (Q29), a
//! pool keyed by scheme + host + port (Q30, hyper-util's pool key is the URI authority).

pub(super) mod dns;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{self, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use crate::config::{HttpConfig, MAX_READ_TIMEOUT};
use crate::protocol::message::{HttpRequest, HttpResponse, Message as _};
use crate::protocol::{Command, Packet};
use crate::spi::{DnsMapping, DnsMappingManager};

/// Connect timeout of the upstream client (spec §12 step 4).
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);

/// Redirects followed per request (spec §12 step 4).
pub(super) const MAX_REDIRECTS: usize = 5;

/// How long an idle pooled upstream connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The request header that carries the client's timeout in ms; it is not forwarded.
const READ_TIMEOUT_HEADER: &str = "readTimeout";

/// Request headers the proxy sets itself (or hyper frames), never copied from the message.
const OWN_HEADERS: [&str; 6] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "x-forwarded-for",
    "x-forwarded-port",
];

/// The answer to one proxied request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// The upstream's response: sent sealed with the session cipher.
    Upstream(HttpResponse),
    /// The proxy's own answer (400, 403, 405, 408, 502, 503, 504): sent raw, with the
    /// standard reason phrase and, when useful, a plain-text body saying why.
    Raw {
        /// HTTP status.
        status: StatusCode,
        /// Why, for the body ("" for none).
        detail: String,
    },
}

impl Reply {
    fn raw(status: StatusCode, detail: impl Into<String>) -> Self {
        Reply::Raw {
            status,
            detail: detail.into(),
        }
    }
}

/// The proxy of one server: its upstream client, DNS mappings and in-flight bounds.
pub(crate) struct HttpProxy {
    cfg: HttpConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    /// Consulted in order: the configured backend (ZooKeeper `/dns/mapping`), then the
    /// health-checked `mp.http.dns-mapping`.
    dns: Vec<Arc<dyn DnsMappingManager>>,
    /// `allowed-hosts`, lower-cased (empty: any host).
    allowed: Vec<String>,
    global: Arc<Semaphore>,
    per_conn: DashMap<u64, usize>,
}

impl std::fmt::Debug for HttpProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpProxy")
            .field("dns", &self.dns)
            .field(
                "in_flight",
                &(self.cfg.max_in_flight - self.global.available_permits()),
            )
            .finish_non_exhaustive()
    }
}

/// Releases a request's in-flight slots (global permit and the connection's count).
struct Slot {
    proxy: Arc<HttpProxy>,
    conn: u64,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.proxy.per_conn.remove_if_mut(&self.conn, |_, n| {
            *n = n.saturating_sub(1);
            *n == 0
        });
    }
}

impl HttpProxy {
    /// A proxy for `cfg`; `extra` is a DNS mapping backend consulted before the configured
    /// mappings. The configured mappings are health-checked until `stop` is cancelled.
    pub(crate) fn new(
        cfg: &HttpConfig,
        extra: Option<Arc<dyn DnsMappingManager>>,
        stop: &CancellationToken,
    ) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(cfg.max_conn_per_host)
            .pool_timer(TokioTimer::new())
            .build(connector);
        let configured = Arc::new(dns::ConfigDnsMapping::new(&cfg.dns_mapping));
        if !configured.is_empty() {
            tokio::spawn(configured.clone().health_check_loop(stop.clone()));
        }
        let mut dns: Vec<Arc<dyn DnsMappingManager>> = extra.into_iter().collect();
        dns.push(configured);
        Arc::new(Self {
            allowed: cfg
                .allowed_hosts
                .iter()
                .map(|h| h.trim().to_ascii_lowercase())
                .collect(),
            global: Arc::new(Semaphore::new(cfg.max_in_flight)),
            per_conn: DashMap::new(),
            cfg: cfg.clone(),
            client,
            dns,
        })
    }

    /// Starts one request off the connection's task; its reply (exactly one) is written to
    /// `conn` when ready, or at once (503) when a cap is reached. Abandoned when the
    /// connection closes or the server stops.
    pub(crate) fn spawn(
        self: &Arc<Self>,
        conn: &Arc<Connection>,
        sid: i32,
        req: Box<HttpRequest>,
        compress_threshold: usize,
        stop: &CancellationToken,
    ) {
        let Some(slot) = self.slot(conn.seq()) else {
            tracing::debug!(conn = %conn.id(), "http proxy busy");
            send_reply(
                conn,
                sid,
                Reply::raw(StatusCode::SERVICE_UNAVAILABLE, "too many proxied requests"),
                compress_threshold,
            );
            return;
        };
        let (proxy, conn, stop) = (self.clone(), conn.clone(), stop.clone());
        tokio::spawn(async move {
            let peer = conn.peer_addr();
            let reply = tokio::select! {
                r = proxy.execute(&req, peer) => r,
                _ = conn.closed() => return,
                _ = stop.cancelled() => return,
            };
            drop(slot);
            send_reply(&conn, sid, reply, compress_threshold);
        });
    }

    fn slot(self: &Arc<Self>, conn: u64) -> Option<Slot> {
        let permit = self.global.clone().try_acquire_owned().ok()?;
        let mut n = self.per_conn.entry(conn).or_insert(0);
        if *n >= self.cfg.max_in_flight_per_connection {
            return None;
        }
        *n += 1;
        drop(n);
        Some(Slot {
            proxy: self.clone(),
            conn,
            _permit: permit,
        })
    }

    /// Runs one request to its reply: validation, mapping, allowlist, redirects, body limit,
    /// all within the request's read timeout.
    pub(crate) async fn execute(&self, req: &HttpRequest, peer: std::net::SocketAddr) -> Reply {
        let Some(uri) = req.uri.as_deref().map(str::trim).filter(|u| !u.is_empty()) else {
            return Reply::raw(StatusCode::BAD_REQUEST, "empty uri");
        };
        let mut method = match req.method {
            0 => Method::GET,
            1 => Method::POST,
            2 => Method::PUT,
            3 => Method::DELETE,
            m => {
                return Reply::raw(StatusCode::METHOD_NOT_ALLOWED, format!("method code {m}"));
            }
        };
        let mut url = match parse_url(uri) {
            Ok(u) => u,
            Err(reply) => return reply,
        };
        let deadline = Instant::now() + self.read_timeout(req);
        let mut body = req.body.clone().filter(|b| !b.is_empty()).map(Bytes::from);
        for hop in 0..=MAX_REDIRECTS {
            let target = match self.route(&url) {
                Ok(t) => t,
                Err(reply) => return reply,
            };
            let upstream = match self.build(&method, &url, &target, req, body.clone(), peer) {
                Ok(r) => r,
                Err(reply) => return reply,
            };
            let response = match tokio::time::timeout_at(deadline, self.client.request(upstream))
                .await
            {
                Err(_) => return Reply::raw(StatusCode::REQUEST_TIMEOUT, ""),
                Ok(Err(e)) if e.is_connect() => {
                    tracing::debug!(target = %target.authority(), error = %e, "upstream connect failed");
                    return Reply::raw(StatusCode::GATEWAY_TIMEOUT, "");
                }
                Ok(Err(e)) => {
                    tracing::debug!(target = %target.authority(), error = %e, "upstream failed");
                    return Reply::raw(StatusCode::BAD_GATEWAY, e.to_string());
                }
                Ok(Ok(r)) => r,
            };
            let status = response.status();
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if is_redirect(status) && hop < MAX_REDIRECTS {
                if let Some(next) = location.and_then(|l| resolve(&url, &l)) {
                    if status == StatusCode::SEE_OTHER {
                        method = Method::GET;
                        body = None;
                    }
                    url = next;
                    continue;
                }
            }
            return self.read_response(response, deadline).await;
        }
        Reply::raw(StatusCode::BAD_GATEWAY, "too many redirects")
    }

    fn read_timeout(&self, req: &HttpRequest) -> Duration {
        req.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(READ_TIMEOUT_HEADER))
            .and_then(|(_, v)| v.trim().parse::<u64>().ok())
            .filter(|ms| *ms > 0)
            .map_or(self.cfg.default_read_timeout, Duration::from_millis)
            .min(MAX_READ_TIMEOUT)
    }

    /// Where `url` goes: its DNS mapping, else its own host and port; refused (403) when an
    /// allowlist is set and neither the mapping nor the list allows it.
    fn route(&self, url: &Url) -> Result<DnsMapping, Reply> {
        if let Some(m) = self.dns.iter().find_map(|d| d.lookup(&url.host)) {
            return Ok(m);
        }
        let allowed = self.allowed.is_empty()
            || self
                .allowed
                .iter()
                .any(|a| *a == url.host || *a == format!("{}:{}", url.host, url.port));
        if !allowed {
            return Err(Reply::raw(
                StatusCode::FORBIDDEN,
                format!("host {} is not allowed", url.host),
            ));
        }
        Ok(DnsMapping {
            ip: url.host.clone(),
            port: url.port,
        })
    }

    fn build(
        &self,
        method: &Method,
        url: &Url,
        target: &DnsMapping,
        req: &HttpRequest,
        body: Option<Bytes>,
        peer: std::net::SocketAddr,
    ) -> Result<Request<Full<Bytes>>, Reply> {
        let uri: Uri = format!("http://{}{}", target.authority(), url.path_and_query)
            .parse()
            .map_err(|_| Reply::raw(StatusCode::BAD_REQUEST, "malformed uri"))?;
        let mut builder = Request::builder().method(method.clone()).uri(uri);
        let headers = builder
            .headers_mut()
            .ok_or_else(|| Reply::raw(StatusCode::BAD_REQUEST, "malformed uri"))?;
        for (k, v) in &req.headers {
            if k.eq_ignore_ascii_case(READ_TIMEOUT_HEADER)
                || OWN_HEADERS.iter().any(|o| k.eq_ignore_ascii_case(o))
            {
                continue;
            }
            // A header that is not valid HTTP is dropped rather than failing the request.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(k.trim().as_bytes()),
                HeaderValue::from_str(v.trim()),
            ) {
                headers.append(name, value);
            }
        }
        let host = HeaderValue::from_str(&target.ip)
            .map_err(|_| Reply::raw(StatusCode::BAD_REQUEST, "malformed host"))?;
        headers.insert(header::HOST, host);
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        if let Ok(ip) = HeaderValue::from_str(&peer.ip().to_string()) {
            headers.insert("x-forwarded-for", ip);
        }
        headers.insert("x-forwarded-port", HeaderValue::from(peer.port()));
        let body = body.unwrap_or_default();
        if !body.is_empty() {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        builder
            .body(Full::new(body))
            .map_err(|e| Reply::raw(StatusCode::BAD_REQUEST, e.to_string()))
    }

    /// Reads the body up to `max-content-length` (a larger one is 502, and nothing past the
    /// limit is kept), then converts the response.
    async fn read_response(
        &self,
        response: hyper::Response<hyper::body::Incoming>,
        deadline: Instant,
    ) -> Reply {
        let limit = self.cfg.max_content_length;
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Reply::raw(StatusCode::BAD_GATEWAY, "response body too large");
        }
        let (parts, mut incoming) = response.into_parts();
        let mut body: Vec<u8> = Vec::new();
        loop {
            let frame = match tokio::time::timeout_at(deadline, incoming.frame()).await {
                Err(_) => return Reply::raw(StatusCode::REQUEST_TIMEOUT, ""),
                Ok(None) => break,
                Ok(Some(Err(e))) => return Reply::raw(StatusCode::BAD_GATEWAY, e.to_string()),
                Ok(Some(Ok(frame))) => frame,
            };
            if let Ok(data) = frame.into_data() {
                if body.len() + data.len() > limit {
                    return Reply::raw(StatusCode::BAD_GATEWAY, "response body too large");
                }
                body.extend_from_slice(&data);
            }
        }
        let mut headers: Vec<(String, String)> = parts
            .headers
            .iter()
            .filter(|(k, _)| {
                // The body arrives whole: its framing headers are replaced by Content-Length.
                *k != header::TRANSFER_ENCODING && *k != header::CONTENT_LENGTH
            })
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect();
        if !body.is_empty() {
            headers.push(("content-length".to_string(), body.len().to_string()));
        }
        Reply::Upstream(HttpResponse {
            status_code: i32::from(parts.status.as_u16()),
            reason_phrase: Some(parts.status.canonical_reason().unwrap_or("").to_string()),
            headers,
            body: (!body.is_empty()).then_some(body),
        })
    }
}

/// Writes the reply to one request: upstream responses sealed, the proxy's own raw.
fn send_reply(conn: &Connection, sid: i32, reply: Reply, compress_threshold: usize) {
    let sent = match reply {
        Reply::Upstream(resp) => conn.send_secure(
            Command::HttpProxy,
            sid,
            0,
            resp.encode(),
            compress_threshold,
        ),
        Reply::Raw { status, detail } => {
            let msg = HttpResponse {
                status_code: i32::from(status.as_u16()),
                reason_phrase: Some(status.canonical_reason().unwrap_or("").to_string()),
                headers: Vec::new(),
                body: (!detail.is_empty()).then(|| detail.into_bytes()),
            };
            conn.send_raw(&Packet::with_body(Command::HttpProxy, sid, msg.encode()))
        }
    };
    if let Err(e) = sent {
        tracing::debug!(conn = %conn.id(), error = %e, "http proxy reply not sent");
    }
}

/// An `http://` URL taken apart: what the proxy maps, checks and forwards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Url {
    /// Lower-case host, without brackets for IPv6.
    host: String,
    port: u16,
    /// Origin-form target: path (at least `/`) and `?query`.
    path_and_query: String,
}

/// Parses an absolute `http://` URL; anything else is 400 (`https` is 502: this proxy has no
/// TLS, as MPush's Netty client had none).
fn parse_url(s: &str) -> Result<Url, Reply> {
    let bad = || Reply::raw(StatusCode::BAD_REQUEST, format!("malformed uri {s:?}"));
    let uri: Uri = s.parse().map_err(|_| bad())?;
    match uri.scheme_str() {
        Some(sc) if sc.eq_ignore_ascii_case("http") => {}
        Some(sc) if sc.eq_ignore_ascii_case("https") => {
            return Err(Reply::raw(
                StatusCode::BAD_GATEWAY,
                "https is not supported",
            ));
        }
        _ => return Err(bad()),
    }
    let authority = uri.authority().ok_or_else(bad)?;
    if authority.as_str().contains('@') {
        // Credentials in the URL would be sent nowhere by hyper; refuse rather than drop.
        return Err(bad());
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if host.is_empty() {
        return Err(bad());
    }
    let path_and_query = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let path_and_query = if path_and_query.starts_with('/') {
        path_and_query
    } else {
        format!("/{path_and_query}")
    };
    Ok(Url {
        host,
        port: authority.port_u16().unwrap_or(80),
        path_and_query,
    })
}

fn is_redirect(s: StatusCode) -> bool {
    matches!(s.as_u16(), 300 | 301 | 302 | 303 | 305 | 307)
}

/// The URL a `Location` names, relative to `base`; `None` when it cannot be used (then the
/// redirect response itself is the answer).
fn resolve(base: &Url, location: &str) -> Option<Url> {
    if location.contains("://") {
        return parse_url(location).ok();
    }
    let authority = if base.host.contains(':') {
        format!("[{}]:{}", base.host, base.port)
    } else {
        format!("{}:{}", base.host, base.port)
    };
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let path = base.path_and_query.split('?').next().unwrap_or("/");
        let dir = path.rsplit_once('/').map_or("", |(d, _)| d);
        format!("{dir}/{location}")
    };
    parse_url(&format!("http://{authority}{path}")).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls_parse_to_origin_form() {
        let u = parse_url("http://API.Example.com:8080/v1/x?y=1").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path_and_query.as_str()),
            ("api.example.com", 8080, "/v1/x?y=1")
        );
        let u = parse_url("http://h").unwrap();
        assert_eq!((u.port, u.path_and_query.as_str()), (80, "/"));
        let u = parse_url("http://[::1]:81/a").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("::1", 81));
        for bad in [
            "",
            "not a uri",
            "/relative",
            "ftp://h/x",
            "http://",
            "http://u:p@h/",
        ] {
            assert!(
                matches!(parse_url(bad), Err(Reply::Raw { status, .. }) if status == StatusCode::BAD_REQUEST),
                "{bad:?}"
            );
        }
        assert!(matches!(
            parse_url("https://h/"),
            Err(Reply::Raw { status, .. }) if status == StatusCode::BAD_GATEWAY
        ));
    }

    #[test]
    fn locations_resolve_against_the_request() {
        let base = parse_url("http://h:81/a/b?q=1").unwrap();
        let r = |l| resolve(&base, l).map(|u| format!("{}:{}{}", u.host, u.port, u.path_and_query));
        assert_eq!(r("/c").as_deref(), Some("h:81/c"));
        assert_eq!(r("c?d=2").as_deref(), Some("h:81/a/c?d=2"));
        assert_eq!(r("http://o:82/z").as_deref(), Some("o:82/z"));
        assert_eq!(r("https://o/z"), None);
    }
}
