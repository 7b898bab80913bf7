//! TLS end to end (issue 11 §5): the client SDK over TLS, wss, the gateway with mutual TLS
//! for PushSender, the gateway source allowlist, and certificate reload. Certificates are
//! made per test with rcgen in a per-test temporary directory.

#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::routing::eventually;
use common::{WAIT, config_with, free_port, start_server, test_config, ws_upgrade_refused};
use mpush::AckModel;
use mpush::MPushConfig;
use mpush::client::{Client, ClientConfig, Event, ReconnectPolicy};
use mpush::config::{TlsClientConfig, TlsListenerConfig};
use mpush::sender::{PushSender, ResultCode};
use mpush_spi_memory::MemoryHub;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tokio::io::AsyncReadExt;

/// A CA and the PEM files it signed, in a directory removed on drop.
struct Pki {
    dir: PathBuf,
    ca_params: CertificateParams,
    ca_key: KeyPair,
}

impl Pki {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mpush-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, format!("mpush test CA {tag}"));
        let ca_key = KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Self {
            dir,
            ca_params,
            ca_key,
        }
    }

    fn ca(&self) -> String {
        self.path("ca.pem")
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// Issues a leaf for `127.0.0.1` as `<name>.crt` / `<name>.key`, returns (cert, key).
    fn issue(&self, name: &str, usage: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let issuer = Issuer::from_params(&self.ca_params, &self.ca_key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        let (c, k) = (
            self.path(&format!("{name}.crt")),
            self.path(&format!("{name}.key")),
        );
        write_atomically(Path::new(&k), &key.serialize_pem());
        write_atomically(Path::new(&c), &cert.pem());
        (c, k)
    }

    fn listener(&self, name: &str, client_ca: bool) -> TlsListenerConfig {
        let (cert, key) = self.issue(name, ExtendedKeyUsagePurpose::ServerAuth);
        TlsListenerConfig {
            cert,
            key,
            client_ca: if client_ca { self.ca() } else { String::new() },
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Replaces a file in one rename, so a reload never sees it half-written.
fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

type Events = Arc<Mutex<Vec<Event>>>;

fn client_config(addr: SocketAddr, device: &str, user: &str) -> (ClientConfig, Events) {
    let events: Events = Arc::default();
    let sink = events.clone();
    let config = ClientConfig::new(addr.to_string(), device)
        .with_reconnect(ReconnectPolicy::disabled())
        .with_user(user, None)
        .on_event(move |e| sink.lock().unwrap().push(e));
    (config, events)
}

fn got_push(events: &Events, content: &[u8]) -> bool {
    events
        .lock()
        .unwrap()
        .iter()
        .any(|e| matches!(e, Event::Push { content: c, .. } if &c[..] == content))
}

fn sender_tls(pki: &Pki, client_cert: bool) -> TlsClientConfig {
    let (cert, key) = if client_cert {
        pki.issue("sender", ExtendedKeyUsagePurpose::ClientAuth)
    } else {
        (String::new(), String::new())
    };
    TlsClientConfig {
        ca: pki.ca(),
        cert,
        key,
        server_name: String::new(),
    }
}

/// A sender on `hub` with `config`, reaching the gateways with `tls` when given.
async fn start_sender(
    hub: &Arc<MemoryHub>,
    mut config: MPushConfig,
    tls: Option<TlsClientConfig>,
) -> PushSender {
    if let Some(tls) = tls {
        config.net.gateway_client_tls = tls;
    }
    mpush_spi_memory::testing::sender_on(hub, config)
        .await
        .unwrap()
}

/// Stops what a test started: the client, then the sender, then the server.
async fn stop(client: Client, sender: PushSender, server: mpush::RunningServer) {
    client.close().await;
    sender.stop().await;
    server.shutdown().await;
}

async fn push(
    sender: &mpush::sender::PushSender,
    user: &str,
    body: &'static [u8],
) -> Vec<ResultCode> {
    let ctx = mpush::sender::PushContext::to_user(user, body)
        .ack(AckModel::NoAck)
        .timeout(Duration::from_secs(3));
    sender.send(ctx).await.into_iter().map(|r| r.code).collect()
}

/// TLS on the connection server and mutual TLS on the gateway: the client SDK handshakes
/// and binds over TLS, a PushSender holding a CA-signed client certificate pushes to it.
#[tokio::test]
async fn tls_client_and_mutual_tls_gateway_end_to_end() {
    let pki = Pki::new("e2e");
    let hub = MemoryHub::new();
    let mut config: MPushConfig = test_config();
    config.net.connect_server_tls = pki.listener("server", false);
    config.net.gateway_server_tls = pki.listener("gateway", true);
    let (server, addr) = start_server(&hub, config.clone()).await;

    let (client_cfg, events) = client_config(addr, "dev-tls", "u-tls");
    let client_cfg = client_cfg.with_tls(pki.ca(), "").unwrap();
    let (client, _stream) = Client::connect(client_cfg).await.unwrap();

    let sender = start_sender(&hub, config.clone(), Some(sender_tls(&pki, true))).await;
    assert_eq!(
        push(&sender, "u-tls", b"over tls").await,
        [ResultCode::Success]
    );
    assert!(eventually(WAIT, || async { got_push(&events, b"over tls") }).await);

    // A plain-TCP client cannot talk to the TLS port.
    let (plain_cfg, _) = client_config(addr, "dev-plain", "u-plain");
    let mut plain_cfg = plain_cfg;
    plain_cfg.connect_timeout = Duration::from_secs(2);
    plain_cfg.request_timeout = Duration::from_secs(2);
    assert!(Client::connect(plain_cfg).await.is_err());

    // A client that does not trust the server's CA fails the TLS handshake, clearly.
    let other = Pki::new("e2e-other");
    let (untrusting, _) = client_config(addr, "dev-untrusting", "u-x");
    let Err(err) = Client::connect(untrusting.with_tls(other.ca(), "").unwrap()).await else {
        panic!("an untrusted server certificate must be refused");
    };
    assert!(err.to_string().contains("TLS"), "{err}");

    stop(client, sender, server).await;
}

/// A PushSender without a client certificate cannot push through a mutual-TLS gateway.
#[tokio::test]
async fn gateway_refuses_a_sender_without_a_client_certificate() {
    let pki = Pki::new("nocert");
    let hub = MemoryHub::new();
    let config = config_with(|c| c.net.gateway_server_tls = pki.listener("gateway", true));
    let (server, addr) = start_server(&hub, config.clone()).await;
    let (client_cfg, events) = client_config(addr, "dev-nocert", "u-nocert");
    let (client, _stream) = Client::connect(client_cfg).await.unwrap();

    let sender = start_sender(&hub, config.clone(), Some(sender_tls(&pki, false))).await;
    let codes = push(&sender, "u-nocert", b"refused").await;
    assert!(
        !codes.is_empty() && codes.iter().all(|c| *c != ResultCode::Success),
        "{codes:?}"
    );
    assert!(!got_push(&events, b"refused"));

    stop(client, sender, server).await;
}

/// wss: the WebSocket upgrade completes over TLS.
#[tokio::test]
async fn websocket_over_tls() {
    let pki = Pki::new("wss");
    let hub = MemoryHub::new();
    let mut config = test_config();
    config.net.ws_server_port = free_port();
    config.net.ws_path = "/ws".into();
    config.net.ws_server_tls = pki.listener("ws", false);
    let (server, _) = start_server(&hub, config).await;
    let ws = server.ws_addr().unwrap();

    let stream = tls_to(&pki, ws).await;
    let (mut socket, response) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::client_async(format!("wss://{ws}/ws"), stream),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(response.status().as_u16(), 101);
    socket.close(None).await.unwrap();

    // Plain ws on the wss port gets no upgrade.
    assert!(ws_upgrade_refused(&format!("ws://{ws}/ws")).await);
    server.shutdown().await;
}

/// `mp.net.gateway-allowed-networks`: a source outside the list is closed at accept, one
/// inside is served.
#[tokio::test]
async fn gateway_allowlist_refuses_unlisted_sources() {
    let hub = MemoryHub::new();
    let config =
        config_with(|c| c.net.gateway_allowed_networks = vec!["127.0.0.1/32".parse().unwrap()]);
    let (server, addr) = start_server(&hub, config.clone()).await;
    let gateway = server.gateway_addr();

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut refused = socket.connect(gateway).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(WAIT, refused.read(&mut byte))
        .await
        .unwrap();
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    let (client_cfg, events) = client_config(addr, "dev-allow", "u-allow");
    let (client, _stream) = Client::connect(client_cfg).await.unwrap();
    let sender = start_sender(&hub, config, None).await;
    assert_eq!(
        push(&sender, "u-allow", b"allowed").await,
        [ResultCode::Success]
    );
    assert!(eventually(WAIT, || async { got_push(&events, b"allowed") }).await);

    stop(client, sender, server).await;
}

/// Replacing the certificate files is picked up without a restart: new connections see
/// the new certificate (signed by a new CA), the old CA no longer verifies.
#[tokio::test]
async fn certificate_reload_on_file_change() {
    let old = Pki::new("reload-old");
    let new = Pki::new("reload-new");
    let hub = MemoryHub::new();
    let mut config = test_config();
    config.net.connect_server_tls = old.listener("server", false);
    config.net.tls_reload_interval = Duration::from_millis(100);
    let files = config.net.connect_server_tls.clone();
    let (server, addr) = start_server(&hub, config).await;

    let connects = |ca: String| async move {
        let (cfg, _) = client_config(addr, "dev-reload", "u-reload");
        let mut cfg = cfg.with_tls(ca, "").unwrap();
        cfg.connect_timeout = Duration::from_secs(2);
        match Client::connect(cfg).await {
            Ok((c, _)) => {
                c.close().await;
                true
            }
            Err(_) => false,
        }
    };
    assert!(connects(old.ca()).await);
    assert!(!connects(new.ca()).await);

    // The new CA's leaf replaces the files the server was started with.
    let (cert, key) = new.issue("server", ExtendedKeyUsagePurpose::ServerAuth);
    write_atomically(
        Path::new(&files.key),
        &std::fs::read_to_string(&key).unwrap(),
    );
    write_atomically(
        Path::new(&files.cert),
        &std::fs::read_to_string(&cert).unwrap(),
    );
    let ca = new.ca();
    assert!(
        eventually(WAIT * 2, || connects(ca.clone())).await,
        "the new certificate was not picked up"
    );
    assert!(!connects(old.ca()).await);
    server.shutdown().await;
}

/// A TLS connection to `addr`, its certificate verified against `pki`'s CA.
async fn tls_to(
    pki: &Pki,
    addr: SocketAddr,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tls = mpush::tls::ClientTls::from_config(&TlsClientConfig {
        ca: pki.ca(),
        ..Default::default()
    })
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tls.connect(&addr.to_string(), tcp).await.unwrap()
}

/// One HTTPS exchange with `addr`, verifying its certificate against `pki`'s CA.
async fn https(pki: &Pki, addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    let stream = tls_to(pki, addr).await;
    common::http::exchange_over(stream, &addr.to_string(), method, path, &[], b"").await
}

/// A plain-HTTP request to a TLS port gets no HTTP answer: the connection is closed.
async fn plain_http_is_refused(addr: SocketAddr) {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, tcp.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the TLS port neither answered nor closed");
    assert!(
        !buf.starts_with(b"HTTP/"),
        "a plain request got an HTTP answer: {:?}",
        String::from_utf8_lossy(&buf)
    );
}

/// HTTPS on the admin API (`mp.net.admin-http-tls`) and on the alloc service
/// (`mp.net.alloc-server-tls`): served over TLS, refused in plain HTTP.
#[tokio::test]
async fn admin_api_and_alloc_over_https() {
    let pki = Pki::new("https");
    let hub = MemoryHub::new();
    let mut config = test_config();
    config.net.admin_http_tls = pki.listener("admin", false);
    let (server, _) = common::start_with(
        &hub,
        mpush::MPushServer::builder()
            .config(config)
            .admin_http_port(0),
    )
    .await;
    let admin = server.admin_http_addr().unwrap();
    assert_eq!(
        https(&pki, admin, "GET", "/health").await,
        (200, "ok".into())
    );
    let (status, body) = https(&pki, admin, "GET", "/metrics").await;
    assert_eq!(status, 200, "{body}");
    plain_http_is_refused(admin).await;

    let mut alloc_config = test_config();
    alloc_config.net.alloc_server_tls = pki.listener("alloc", false);
    let alloc = mpush::alloc::AllocServer::builder()
        .config(alloc_config)
        .cache_manager(Arc::new(mpush_spi_memory::MemoryCache::new(hub.clone())))
        .discovery(Arc::new(mpush_spi_memory::MemoryServiceRegistry::new(
            hub.clone(),
        )))
        .bind_ip("127.0.0.1")
        .port(0)
        .start()
        .await
        .unwrap();
    let (status, list) = https(&pki, alloc.local_addr(), "GET", "/").await;
    assert_eq!(status, 200);
    assert_eq!(list, server.connect_addr().to_string());
    plain_http_is_refused(alloc.local_addr()).await;

    // A certificate file that does not exist fails the start with the key named.
    let mut bad = test_config();
    bad.net.alloc_server_tls = TlsListenerConfig {
        cert: pki.path("missing.crt"),
        key: pki.path("missing.key"),
        client_ca: String::new(),
    };
    let err = mpush::alloc::AllocServer::builder()
        .config(bad)
        .cache_manager(Arc::new(mpush_spi_memory::MemoryCache::new(hub.clone())))
        .discovery(Arc::new(mpush_spi_memory::MemoryServiceRegistry::new(
            hub.clone(),
        )))
        .port(0)
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("mp.net.alloc-server-tls"), "{err}");

    alloc.shutdown().await;
    server.shutdown().await;
}
