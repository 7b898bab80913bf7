//! End-to-end tests of the HTTP proxy (cmd 12, spec §12) and its DNS mapping: a real axum
//! upstream on a loopback port, a real server in-process, and the Rust client SDK's
//! `send_http` (the wire-level client where the exact packets matter).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use common::*;
use mpush::MPushConfig;
use mpush::client::{Client, ClientConfig, ClientError, HttpRequest, HttpResponse};
use mpush::protocol::message::Message;
use mpush::protocol::{Command, Packet, flags};
use mpush_spi_memory::MemoryHub;

/// What the upstream saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    /// The request target as written on the request line.
    target: String,
    method: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// The proxy's side of the upstream connection (one per kept connection).
    peer: SocketAddr,
}

#[derive(Clone, Default)]
struct Upstream {
    name: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn handle(
    State(up): State<Upstream>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().to_string();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    up.seen.lock().unwrap().push(Seen {
        target: parts.uri.to_string(),
        method: parts.method.to_string(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
            .collect(),
        body: body.to_vec(),
        peer,
    });
    match path.as_str() {
        "/hang" => std::future::pending::<Response>().await,
        "/huge" => {
            // Endless, undeclared length: the proxy must stop at its limit.
            let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
            let stream =
                futures::stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
            Response::new(Body::from_stream(stream))
        }
        // Declared length over the test's 64 KiB limit: refused before reading the body.
        "/declared" => vec![b'y'; 100 * 1024].into_response(),
        "/redirect" => (StatusCode::FOUND, [("location", "/echo?from=redirect")]).into_response(),
        _ => (
            StatusCode::OK,
            [("x-upstream", up.name)],
            format!("{}:{}", up.name, String::from_utf8_lossy(&body)),
        )
            .into_response(),
    }
}

/// Starts an upstream named `name` on a free loopback port.
async fn upstream(name: &'static str) -> (Upstream, SocketAddr) {
    let up = Upstream {
        name,
        ..Upstream::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .fallback(any(handle))
        .with_state(up.clone())
        .into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (up, addr)
}

/// One test's setup: upstream "a", a server (proxy on unless `configure` turns it off) and
/// an SDK client on it.
struct Proxy {
    up: Upstream,
    up_addr: SocketAddr,
    server: mpush::RunningServer,
    addr: SocketAddr,
    c: Client,
}

impl Proxy {
    /// Starts it all; `configure` adjusts the config knowing the upstream's address.
    async fn start(device: &str, configure: impl FnOnce(&mut MPushConfig, SocketAddr)) -> Self {
        let (up, up_addr) = upstream("a").await;
        let cfg = proxy_config_with(|c| configure(c, up_addr));
        let (server, addr) = start_server(&MemoryHub::new(), cfg).await;
        let c = client(addr, device).await;
        Self {
            up,
            up_addr,
            server,
            addr,
            c,
        }
    }

    /// `GET http://<upstream><path>` through the proxy.
    async fn get(&self, path: &str) -> HttpResponse {
        fetch(&self.c, &format!("http://{}{path}", self.up_addr)).await
    }

    async fn stop(self) {
        self.c.close().await;
        self.server.shutdown().await;
    }
}

fn proxy_config() -> MPushConfig {
    let mut c = test_config();
    c.http.proxy_enabled = true;
    c
}

/// [`proxy_config`] changed by `change`.
fn proxy_config_with(change: impl FnOnce(&mut MPushConfig)) -> MPushConfig {
    let mut c = proxy_config();
    change(&mut c);
    c
}

async fn client(addr: SocketAddr, device: &str) -> Client {
    Client::connect(ClientConfig::new(addr.to_string(), device))
        .await
        .unwrap()
        .0
}

fn get(uri: &str) -> HttpRequest {
    HttpRequest {
        method: 0,
        uri: Some(uri.into()),
        headers: Vec::new(),
        body: None,
    }
}

/// `GET uri` through the proxy on the SDK client.
async fn fetch(c: &Client, uri: &str) -> HttpResponse {
    c.send_http(get(uri), T).await.unwrap()
}

/// Sends `GET uri` as a sealed HTTP_PROXY request with session id `sid`.
async fn send_get(raw: &mut RawClient, sid: i32, uri: &str) {
    raw.send_secure(Command::HttpProxy, sid, get(uri).encode())
        .await;
}

/// The HTTP response a proxy reply packet carries.
fn reply(raw: &RawClient, p: &Packet) -> HttpResponse {
    HttpResponse::decode(&raw.open(p)).unwrap()
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn body_text(r: &HttpResponse) -> String {
    String::from_utf8_lossy(r.body.as_deref().unwrap_or_default()).into_owned()
}

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn get_and_post_round_trip_with_forwarded_headers_origin_form_and_one_kept_connection() {
    let t = Proxy::start("dev-http-1", |_, _| {}).await;
    let (c, up_addr) = (&t.c, t.up_addr);

    let mut req = get(&format!("http://{up_addr}/echo?a=1"));
    req.headers.push(("X-Custom".into(), "v1".into()));
    let r = c.send_http(req, T).await.unwrap();
    assert_eq!(r.status_code, 200);
    assert_eq!(r.reason_phrase.as_deref(), Some("OK"));
    assert_eq!(body_text(&r), "a:");
    assert_eq!(header(&r.headers, "x-upstream"), Some("a"));

    let post = HttpRequest {
        method: 1,
        uri: Some(format!("http://{up_addr}/submit")),
        headers: vec![("content-type".into(), "text/plain".into())],
        body: Some(b"hello body".to_vec()),
    };
    let r = c.send_http(post, T).await.unwrap();
    assert_eq!(
        (r.status_code, body_text(&r).as_str()),
        (200, "a:hello body")
    );
    assert_eq!(header(&r.headers, "content-length"), Some("12"));

    let seen = t.up.seen();
    assert_eq!(seen.len(), 2);
    let (g, p) = (&seen[0], &seen[1]);
    // Q29 fixed: origin-form request line.
    assert_eq!((g.method.as_str(), g.target.as_str()), ("GET", "/echo?a=1"));
    assert_eq!((p.method.as_str(), p.target.as_str()), ("POST", "/submit"));
    assert_eq!(p.body, b"hello body");
    assert_eq!(header(&p.headers, "content-length"), Some("10"));
    assert_eq!(header(&p.headers, "content-type"), Some("text/plain"));
    assert_eq!(header(&g.headers, "x-custom"), Some("v1"));
    assert_eq!(header(&g.headers, "host"), Some("127.0.0.1"));
    assert_eq!(header(&g.headers, "x-forwarded-for"), Some("127.0.0.1"));
    let port: u16 = header(&g.headers, "x-forwarded-port")
        .unwrap()
        .parse()
        .unwrap();
    assert_ne!(port, 0);
    assert_eq!(
        header(&g.headers, "readTimeout"),
        None,
        "readTimeout is not forwarded"
    );
    assert_eq!(header(&g.headers, "connection"), Some("keep-alive"));
    // Keep-alive: both requests came down one pooled connection.
    assert_eq!(g.peer, p.peer);
    t.stop().await;
}

#[tokio::test]
async fn replies_are_sealed_for_upstream_answers_raw_for_the_proxys_own_and_an_empty_uri_gets_one_400()
 {
    let (_up, up_addr) = upstream("a").await;
    let (server, addr) = start_alone(proxy_config()).await;
    let mut c = RawClient::handshaken(addr, "dev-http-raw", "Android").await;

    // Q11 fixed: an empty uri is answered once, 400, and the connection serves on.
    let empty = HttpRequest::default();
    c.send_secure(Command::HttpProxy, 41, empty.encode()).await;
    let p = c.recv_packet().await.unwrap();
    assert_eq!((p.cmd, p.session_id), (Command::HttpProxy, 41));
    assert_eq!(
        p.flags & flags::CRYPTO,
        0,
        "the proxy's own answers are raw"
    );
    let r = reply(&c, &p);
    assert_eq!(r.status_code, 400);
    assert_eq!(r.reason_phrase.as_deref(), Some("Bad Request"));

    send_get(&mut c, 42, &format!("http://{up_addr}/x")).await;
    let p = c.recv_packet().await.unwrap();
    assert_eq!(p.session_id, 42, "no second reply for the empty uri");
    assert_ne!(p.flags & flags::CRYPTO, 0, "upstream answers are sealed");
    assert_eq!(reply(&c, &p).status_code, 200);

    // Malformed uris and an unknown method.
    for (sid, req, status) in [
        (43, get("not a uri"), 400),
        (44, get("/relative/only"), 400),
        (45, get("ftp://127.0.0.1/x"), 400),
        (
            46,
            HttpRequest {
                method: 9,
                ..get(&format!("http://{up_addr}/x"))
            },
            405,
        ),
    ] {
        c.send_secure(Command::HttpProxy, sid, req.encode()).await;
        let p = c.recv_packet().await.unwrap();
        assert_eq!(p.session_id, sid);
        assert_eq!(reply(&c, &p).status_code, status, "sid {sid}");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn redirects_are_followed_and_a_closed_port_is_504_not_another_pooled_upstream() {
    let (a, a_addr) = upstream("a").await;
    let (_b, b_addr) = upstream("b").await;
    let (server, addr) = start_alone(proxy_config()).await;
    let c = client(addr, "dev-http-redirect").await;

    let r = fetch(&c, &format!("http://{a_addr}/redirect")).await;
    assert_eq!((r.status_code, body_text(&r).as_str()), (200, "a:"));
    let targets: Vec<String> = a.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/redirect", "/echo?from=redirect"]);

    // Q30 fixed: the pool is per host *and* port.
    let r = fetch(&c, &format!("http://{b_addr}/")).await;
    assert_eq!(body_text(&r), "b:");
    let r = fetch(&c, &format!("http://127.0.0.1:{}/", free_port())).await;
    assert_eq!(r.status_code, 504);
    assert_eq!(r.reason_phrase.as_deref(), Some("Gateway Timeout"));
    c.close().await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_hanging_upstream_gets_408_and_delays_neither_this_connection_nor_others() {
    let (_up, up_addr) = upstream("a").await;
    let cfg = proxy_config_with(|c| c.http.max_in_flight_per_connection = 2);
    let cluster = start_cluster(1, cfg).await;
    let addr = cluster.addr(0);
    let c = Arc::new(client(addr, "dev-http-hang").await);
    let mut other = spawn_receiver(
        bound_client(addr, "dev-other", "Android", "other-user", None).await,
        AckPolicy::All,
    );

    let hanging = {
        let c = c.clone();
        tokio::spawn(async move {
            c.send_http(
                get(&format!("http://{up_addr}/hang")),
                Duration::from_millis(1500),
            )
            .await
        })
    };
    // While it hangs, this connection's other requests and other connections are served.
    let r = fetch(&c, &format!("http://{up_addr}/echo")).await;
    assert_eq!(r.status_code, 200);
    let codes = push(
        &cluster.sender,
        "other-user",
        mpush::AckModel::AutoAck,
        3000,
    )
    .await;
    assert_eq!(codes, [mpush::sender::ResultCode::Success]);
    assert!(
        tokio::time::timeout(WAIT, other.recv())
            .await
            .unwrap()
            .is_some()
    );

    let r = tokio::time::timeout(WAIT, hanging)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.status_code, 408);
    assert_eq!(r.reason_phrase.as_deref(), Some("Request Timeout"));

    // Over the per-connection cap (2): a connection's packets are dispatched in order, so
    // the third request finds both hanging ones holding their slots, and is refused at once.
    let mut raw = RawClient::handshaken(addr, "dev-http-cap", "Android").await;
    let mut hang = get(&format!("http://{up_addr}/hang"));
    hang.headers.push(("readTimeout".into(), "500".into()));
    raw.send_secure(Command::HttpProxy, 51, hang.encode()).await;
    raw.send_secure(Command::HttpProxy, 52, hang.encode()).await;
    send_get(&mut raw, 53, &format!("http://{up_addr}/echo")).await;
    let mut replies = BTreeMap::new();
    for _ in 0..3 {
        let p = raw.recv_packet().await.unwrap();
        let r = reply(&raw, &p);
        if replies.is_empty() {
            assert_eq!(p.session_id, 53, "the refused request is answered first");
        }
        replies.insert(p.session_id, (r.status_code, r.reason_phrase));
    }
    let unavailable = (503, Some("Service Unavailable".to_string()));
    let timeout = (408, Some("Request Timeout".to_string()));
    assert_eq!(replies[&53], unavailable);
    assert_eq!((&replies[&51], &replies[&52]), (&timeout, &timeout));
    c.close().await;
    cluster.shutdown().await;
}

#[tokio::test]
async fn an_oversized_body_is_502_without_reading_it_all() {
    let t = Proxy::start("dev-http-huge", |cfg, _| {
        cfg.http.max_content_length = 64 * 1024
    })
    .await;
    // The upstream body never ends: only a proxy that stops at the limit answers at all.
    let r = t.get("/huge").await;
    assert_eq!(r.status_code, 502);
    assert_eq!(r.reason_phrase.as_deref(), Some("Bad Gateway"));
    assert_eq!(body_text(&r), "response body too large");
    let r = t.get("/declared").await;
    assert_eq!(
        (r.status_code, body_text(&r).as_str()),
        (502, "response body too large")
    );
    // The connection is fine afterwards.
    assert_eq!(t.get("/echo").await.status_code, 200);
    t.stop().await;
}

#[tokio::test]
async fn dns_mapping_redirects_a_domain_and_skips_an_unhealthy_target() {
    let t = Proxy::start("dev-http-dns", |cfg, up_addr| {
        let mut map = BTreeMap::new();
        map.insert("api.example.test".to_string(), vec![up_addr.to_string()]);
        map.insert(
            "flaky.example.test".to_string(),
            vec![format!("127.0.0.1:{}", free_port()), up_addr.to_string()],
        );
        cfg.http.dns_mapping = map;
    })
    .await;

    let r = fetch(&t.c, "http://api.example.test/v1/x?y=1").await;
    assert_eq!((r.status_code, body_text(&r).as_str()), (200, "a:"));
    let seen = t.up.seen();
    assert_eq!(seen[0].target, "/v1/x?y=1");
    assert_eq!(
        header(&seen[0].headers, "host"),
        Some("127.0.0.1"),
        "the mapped host"
    );

    // The first health check runs at start: once it has marked the dead target, every
    // request reaches the live one.
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut ok_in_a_row = 0;
    while ok_in_a_row < 10 {
        let r = fetch(&t.c, "http://flaky.example.test/").await;
        if r.status_code == 200 {
            ok_in_a_row += 1;
        } else {
            assert_eq!(r.status_code, 504, "only the dead target may fail");
            ok_in_a_row = 0;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "dead target still picked"
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn the_allowlist_refuses_other_hosts_but_allows_listed_and_mapped_ones() {
    let t = Proxy::start("dev-http-allow", |cfg, up_addr| {
        cfg.http.allowed_hosts = vec![format!("localhost:{}", up_addr.port())];
        cfg.http
            .dns_mapping
            .insert("mapped.example.test".into(), vec![up_addr.to_string()]);
    })
    .await;

    let r = t.get("/").await;
    assert_eq!(r.status_code, 403);
    assert_eq!(r.reason_phrase.as_deref(), Some("Forbidden"));
    // A listed host:port is allowed; the same host on another port is not; a mapped one is.
    for (uri, status) in [
        (format!("http://localhost:{}/", t.up_addr.port()), 200),
        (format!("http://localhost:{}/", free_port()), 403),
        ("http://mapped.example.test/".to_string(), 200),
    ] {
        assert_eq!(fetch(&t.c, &uri).await.status_code, status, "{uri}");
    }
    t.stop().await;
}

#[tokio::test]
async fn disabled_proxy_answers_error_101_and_closes_as_mpush() {
    let t = Proxy::start("dev-http-off", |cfg, _| cfg.http.proxy_enabled = false).await;
    let up_addr = t.up_addr;
    let err =
        t.c.send_http(get(&format!("http://{up_addr}/")), T)
            .await
            .unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Rejected {
                cmd: 12,
                code: 101,
                ..
            }
        ),
        "{err:?}"
    );
    t.c.close().await;

    let mut raw = RawClient::handshaken(t.addr, "dev-http-off-raw", "Android").await;
    send_get(&mut raw, 7, &format!("http://{up_addr}/")).await;
    let (p, e) = raw.expect_error().await;
    assert_eq!((p.session_id, e.cmd, e.code), (7, 12, 101));
    assert!(raw.closed_by_server().await);
    assert!(t.up.seen().is_empty());
    t.stop().await;
}

#[tokio::test]
async fn http_proxy_before_the_handshake_is_refused() {
    let (server, addr) = start_alone(proxy_config()).await;
    let mut raw = RawClient::connect(addr).await;
    raw.send(&Packet::with_body(
        Command::HttpProxy,
        3,
        get("http://127.0.0.1/").encode(),
    ))
    .await;
    let (p, e) = raw.expect_error().await;
    assert_eq!((p.session_id, e.cmd), (3, 12));
    assert_eq!(e.reason.as_deref(), Some("not handshake"));
    assert!(raw.closed_by_server().await);
    server.shutdown().await;
}

#[tokio::test]
async fn registry_dns_mappings_come_first_and_follow_changes() {
    use mpush::spi::{DiscoveryDnsMapping, ServiceNode, ServiceRegistry, services};
    use mpush_spi_memory::MemoryServiceRegistry;

    let (_a, a_addr) = upstream("a").await;
    let (_b, b_addr) = upstream("b").await;
    let hub = MemoryHub::new();
    let registry = Arc::new(MemoryServiceRegistry::new(hub.clone()));
    let node = |addr: SocketAddr| {
        let mut n = ServiceNode::new(services::DNS_MAPPING, "127.0.0.1", addr.port());
        n.attrs.insert("origin".into(), "svc.example.test".into());
        n
    };
    let first = node(a_addr);
    registry.register(&first).await.unwrap();
    let mapping = Arc::new(DiscoveryDnsMapping::start(registry.clone()).await.unwrap());
    // The config maps the same domain elsewhere: the registry's mapping wins (§12 step 2).
    let mut cfg = proxy_config();
    cfg.http.dns_mapping.insert(
        "svc.example.test".into(),
        vec![format!("127.0.0.1:{}", free_port())],
    );
    let builder = mpush::MPushServer::builder()
        .config(cfg)
        .dns_mapping_manager(mapping.clone());
    let (server, addr) = start_with(&hub, builder).await;
    let c = client(addr, "dev-http-zkmap").await;

    let r = fetch(&c, "http://svc.example.test/").await;
    assert_eq!(body_text(&r), "a:");
    registry.register(&node(b_addr)).await.unwrap();
    registry.deregister(&first).await.unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let r = fetch(&c, "http://svc.example.test/").await;
        if body_text(&r) == "b:" {
            break;
        }
        assert_eq!(body_text(&r), "a:");
        assert!(
            tokio::time::Instant::now() < deadline,
            "mapping change not followed"
        );
        tokio::task::yield_now().await;
    }
    c.close().await;
    server.shutdown().await;
    mapping.close().await;
}

#[tokio::test]
async fn without_a_read_timeout_header_the_configured_default_applies() {
    let (_up, up_addr) = upstream("a").await;
    let cfg = proxy_config_with(|c| c.http.default_read_timeout = Duration::from_millis(300));
    let (server, addr) = start_alone(cfg).await;
    let mut raw = RawClient::handshaken(addr, "dev-http-default-timeout", "Android").await;
    send_get(&mut raw, 61, &format!("http://{up_addr}/hang")).await;
    let p = raw.recv_packet().await.unwrap();
    assert_eq!(p.session_id, 61);
    assert_eq!(reply(&raw, &p).status_code, 408);
    server.shutdown().await;
}
