//! TLS for the TCP listeners and both SDKs (issue 11 §5): rustls configs from PEM files, a
//! server config that is swapped when its files change, and the relay that puts TLS in front
//! of the readiness-driven connection tasks.
//!
//! A leaf above `config`: it knows file names and rustls, nothing about sessions.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

pub use tokio_rustls::rustls::{
    ClientConfig as RustlsClientConfig, ServerConfig as RustlsServerConfig,
};
pub use tokio_rustls::{TlsAcceptor, TlsConnector};

use crate::config::{TlsClientConfig, TlsListenerConfig};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("cannot read {what} from {path}: {why}")]
    Pem {
        /// What the file should hold ("certificate", "private key", "CA certificate").
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The reason.
        why: String,
    },
    /// The file holds no certificate.
    #[error("{path} holds no PEM certificate")]
    NoCertificate {
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the certificate, key or CA.
    #[error("TLS configuration refused: {0}")]
    Rustls(String),
    /// The server name to verify is not a DNS name or IP address.
    #[error("invalid TLS server name {0:?}")]
    ServerName(String),
}

fn pem_error(what: &'static str, path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Pem {
        what,
        path: path.to_owned(),
        why: e.to_string(),
    }
}

/// Reads every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error("certificate", path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error("certificate", path, e))?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Reads the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_error("private key", path, e))
}

fn roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in load_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| pem_error("CA certificate", path, e))?;
    }
    Ok(roots)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds a listener's rustls config; with `client-ca` set, only clients holding a
/// certificate signed by that CA complete the handshake.
pub fn server_config(tls: &TlsListenerConfig) -> Result<Arc<RustlsServerConfig>, TlsError> {
    let certs = load_certs(Path::new(&tls.cert))?;
    let key = load_key(Path::new(&tls.key))?;
    let builder = RustlsServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    let builder = if tls.client_ca.is_empty() {
        builder.with_no_client_auth()
    } else {
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots(Path::new(&tls.client_ca))?),
            provider(),
        )
        .build()
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
        builder.with_client_cert_verifier(verifier)
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Rustls(e.to_string()))?;
    Ok(Arc::new(config))
}

/// Builds a client rustls config trusting `ca` (PEM file), presenting `cert`/`key` when set.
pub fn client_config(tls: &TlsClientConfig) -> Result<Arc<RustlsClientConfig>, TlsError> {
    let builder = RustlsClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Rustls(e.to_string()))?
        .with_root_certificates(roots(Path::new(&tls.ca))?);
    let config = if tls.cert.is_empty() {
        builder.with_no_client_auth()
    } else {
        builder
            .with_client_auth_cert(
                load_certs(Path::new(&tls.cert))?,
                load_key(Path::new(&tls.key))?,
            )
            .map_err(|e| TlsError::Rustls(e.to_string()))?
    };
    Ok(Arc::new(config))
}

/// The name to verify the server's certificate against: `override_name` when set, else the
/// host part of `addr` (host:port, IPv6 in brackets).
pub fn server_name(addr: &str, override_name: &str) -> Result<ServerName<'static>, TlsError> {
    let host = if override_name.is_empty() {
        let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
        host.trim_start_matches('[').trim_end_matches(']')
    } else {
        override_name
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    ServerName::try_from(host.to_owned()).map_err(|_| TlsError::ServerName(host.to_owned()))
}

/// A client-side TLS setup: the connector and the name checked in the server certificate.
#[derive(Clone)]
pub struct ClientTls {
    /// The connector (one rustls config shared by all connections).
    pub connector: TlsConnector,
    /// Overrides the host of the address as the name to verify ("" = use the host).
    pub server_name: String,
}

debug_fields!(ClientTls { server_name });

impl ClientTls {
    /// From PEM files named in config.
    pub fn from_config(tls: &TlsClientConfig) -> Result<Self, TlsError> {
        Ok(Self {
            connector: TlsConnector::from(client_config(tls)?),
            server_name: tls.server_name.clone(),
        })
    }

    /// Connects TLS over `stream` to `addr`.
    pub async fn connect<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        addr: &str,
        stream: S,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<S>> {
        let name = server_name(addr, &self.server_name)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        self.connector.connect(name, stream).await
    }
}

fn mtime(path: &str) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// A listener's TLS config that can be replaced while the listener runs: each accepted
/// connection takes the current one, so a reload affects new connections only.
#[derive(Debug)]
pub struct ReloadableTls {
    files: TlsListenerConfig,
    current: ArcSwap<RustlsServerConfig>,
    stamps: std::sync::Mutex<[Option<SystemTime>; 3]>,
}

impl ReloadableTls {
    /// Loads the files once; an error here fails the server start.
    pub fn load(files: &TlsListenerConfig) -> Result<Self, TlsError> {
        let stamps = Self::stamps_of(files);
        Ok(Self {
            current: ArcSwap::new(server_config(files)?),
            files: files.clone(),
            stamps: std::sync::Mutex::new(stamps),
        })
    }

    fn stamps_of(files: &TlsListenerConfig) -> [Option<SystemTime>; 3] {
        [
            mtime(&files.cert),
            mtime(&files.key),
            mtime(&files.client_ca),
        ]
    }

    /// An acceptor for the next connection.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.load_full())
    }

    /// Reloads the files when one's modification time changed (or when `force`). A file
    /// that does not parse (caught half-written, say) keeps the old config, and is tried
    /// again on the next call because its stamp is only recorded on success.
    pub fn reload_if_changed(&self, force: bool) -> Result<bool, TlsError> {
        let now = Self::stamps_of(&self.files);
        let mut stamps = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if !force && *stamps == now {
            return Ok(false);
        }
        self.current.store(server_config(&self.files)?);
        *stamps = now;
        Ok(true)
    }
}

/// Terminates TLS in front of a connection task that drives a plain, readiness-based socket:
/// returns one end of a socket pair for the task and the relay future copying between the
/// other end and `tls` (bounded: tokio's two fixed copy buffers; it ends when either side
/// closes). This keeps the plain-TCP connection task unchanged and allocation-free while
/// idle; TLS connections pay the relay's buffers and two more descriptors.
pub fn relay<S>(mut tls: S) -> std::io::Result<(UnixStream, impl Future<Output = ()> + Send)>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let (inner, mut outer) = UnixStream::pair()?;
    let run = async move {
        if let Err(e) = tokio::io::copy_bidirectional(&mut tls, &mut outer).await {
            tracing::debug!(error = %e, "TLS relay ended");
        }
    };
    Ok((inner, run))
}

/// Reloads `listeners`' certificates when their files change (checked every `interval`) or
/// at once on SIGHUP, until `stop`. A failed reload keeps the old certificate and is logged;
/// it is retried on the next check.
pub(crate) async fn watch(
    listeners: Vec<(&'static str, Arc<ReloadableTls>)>,
    interval: Duration,
    stop: CancellationToken,
) {
    if listeners.is_empty() {
        return;
    }
    #[cfg(unix)]
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        #[cfg(unix)]
        let signalled = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        #[cfg(not(unix))]
        let signalled = std::future::pending::<Option<()>>();
        let force = tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => false,
            _ = signalled => true,
        };
        for (what, tls) in &listeners {
            match tls.reload_if_changed(force) {
                Ok(true) => tracing::info!(listener = what, "TLS certificate reloaded"),
                Ok(false) => {}
                Err(e) => tracing::warn!(listener = what, error = %e, "TLS reload failed"),
            }
        }
    }
}

/// How long a client may take to finish the TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the server side of the TLS handshake within [`HANDSHAKE_TIMEOUT`]; `None` (logged)
/// when it fails, e.g. a client without an accepted certificate, or when `stop` fires.
pub(crate) async fn accept(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    stop: &CancellationToken,
) -> Option<TlsStream<TcpStream>> {
    let done = tokio::select! {
        _ = stop.cancelled() => return None,
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
    };
    match done {
        Ok(Ok(s)) => Some(s),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

#[cfg(test)]
mod tests;
