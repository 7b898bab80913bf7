//! Errors of the client SDK.

use crate::protocol::ProtocolError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The configuration cannot work (empty device id, bad server address, ...).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// A socket operation failed (connect refused, reset, closed during the handshake, ...).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS handshake with the server failed (untrusted certificate, wrong name, ...).
    #[error("TLS handshake failed: {0}")]
    Tls(String),
    /// No answer within the configured time.
    #[error("timed out waiting for {what}")]
    Timeout {
        /// What was awaited ("tcp connect", "handshake", "bind", "ack", ...).
        what: &'static str,
    },
    /// The server answered with an ERROR packet.
    #[error("server rejected cmd {cmd}: code {code}, reason {reason:?}")]
    Rejected {
        /// The command the server refused (from the ERROR body).
        cmd: u8,
        /// The error code (spec §6; 0 when only a reason is given).
        code: i8,
        /// The server's reason text ("" when absent).
        reason: String,
    },
    /// The server sent bytes that do not decode.
    #[error("protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// HandshakeOk carried a server key that is not 16 bytes long (the Java client reconnects).
    #[error("server key has {len} bytes, expected 16")]
    InvalidServerKey {
        /// Length received (0 when absent).
        len: usize,
    },
    /// The client is between connections (reconnecting); retry later.
    #[error("not connected")]
    NotConnected,
    /// The connection dropped while the request was in flight; its outcome is unknown.
    #[error("connection lost before the answer arrived")]
    ConnectionLost,
    /// The client was closed (or every handle dropped); it will not reconnect.
    #[error("client closed")]
    Closed,
}
