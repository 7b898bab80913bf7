//! What goes into a [`super::Session`] (requests, effect results) and what comes out (actions).

use std::time::Duration;

use bytes::Bytes;

use crate::protocol::crypto::AesCipher;
use crate::protocol::message::{
    BindUser, ErrorMessage, FastConnectRequest, HandshakeOk, HandshakeRequest, HttpRequest,
};
use crate::protocol::{ClientType, Command};

/// One inbound request: its sessionId (the request id echoed by replies) and what it asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    /// The packet's sessionId.
    pub sid: i32,
    /// The decoded request.
    pub req: Request,
}

/// A decoded client request. Transports decode bodies (TCP: with the session cipher; WebSocket:
/// from JSON) and report what they cannot decode as [`Request::Malformed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A framed HEARTBEAT packet: tolerated, the read itself counted as activity.
    Heartbeat,
    /// A TCP HANDSHAKE whose body still needs opening (RSA, on the blocking pool): the session
    /// asks for [`Action::Decrypt`] and waits for [`super::Session::on_decrypted`].
    SealedHandshake {
        /// The packet flags (CRYPTO, COMPRESS).
        flags: u8,
        /// The body as on the wire.
        body: Bytes,
    },
    /// A HANDSHAKE whose body is already plain (WebSocket JSON).
    Handshake(HandshakeRequest),
    /// FAST_CONNECT (§4.4).
    FastConnect(FastConnectRequest),
    /// BIND (§8.2).
    Bind(BindUser),
    /// UNBIND (§8.3).
    Unbind(BindUser),
    /// Upstream PUSH (§9.2).
    Push {
        /// The packet flags (ACK bits).
        flags: u8,
        /// The plain content.
        content: Bytes,
    },
    /// ACK of a downstream push; the sessionId is the push id.
    Ack,
    /// HTTP_PROXY (§12), already decrypted. Transports with the proxy disabled report the
    /// packet as [`Request::Unsupported`] instead, as MPush does.
    HttpProxy(Box<HttpRequest>),
    /// A known command whose body could not be opened or decoded: ERROR 100, close.
    Malformed(Command),
    /// A command this transport does not serve: ERROR 101, close.
    Unsupported(Command),
}

/// The result of opening a sealed handshake body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decrypted {
    /// The plain HandshakeRequest body.
    Plain(Bytes),
    /// The body could not be opened (bad RSA block, bad compression): ERROR 100, close.
    Failed(String),
    /// The handshake admission queue is full: ERROR "Server busy", close.
    Busy,
    /// The connection closed while waiting for an RSA slot: close without a reply.
    Abandoned,
}

/// What the bind validator said (§8.2 step 4), as the session needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindOutcome {
    /// The bind may proceed.
    Allowed,
    /// The validator refused this user: ERROR "bind failed", close.
    Denied(String),
    /// The validator could not decide (its backend is down): ERROR naming that, kept open
    /// so the client can retry.
    Unavailable(String),
}

/// A reply the session wants on the wire. All but HandshakeOk are raw (§6); the transport's
/// codec turns it into a binary frame or a JSON text frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Out {
    /// HandshakeOk; `body` is `None` on WebSocket (an empty HandshakeOk), else the message and
    /// the cipher it is sealed with (AES(clientKey, iv), §4.2).
    HandshakeOk {
        /// Request id.
        sid: i32,
        /// Message and hello cipher (TCP only).
        body: Option<(HandshakeOk, AesCipher)>,
    },
    /// FastConnectOk (raw).
    FastConnectOk {
        /// Request id.
        sid: i32,
        /// Negotiated heartbeat in ms.
        heartbeat_ms: i32,
    },
    /// OK {cmd, code 0, data}.
    Ok {
        /// Request id.
        sid: i32,
        /// The command answered.
        cmd: Command,
        /// The OK text.
        data: &'static str,
    },
    /// ERROR.
    Error {
        /// Request id.
        sid: i32,
        /// The error body.
        msg: ErrorMessage,
    },
    /// ACK of an upstream push (AUTO_ACK).
    Ack {
        /// The push's sessionId.
        sid: i32,
    },
}

/// Events the session reports; the driver adds the connection id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A handshake or fast connect completed for this device.
    HandshakeDone {
        /// The device.
        device_id: String,
    },
    /// The connection closed.
    ConnectionClosed,
}

/// One thing the driver must do, in queue order. Replies (`Send`) come before the effects
/// that follow them because the session queues them first. Effects marked *gating* are
/// answered by feeding their result back; the session does nothing else until then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write a reply.
    Send(Out),
    /// Gating: open a sealed handshake body (admission queue, RSA slot, blocking pool), then
    /// [`super::Session::on_decrypted`].
    Decrypt {
        /// The packet flags.
        flags: u8,
        /// The body as on the wire.
        body: Bytes,
    },
    /// Background: write the reusable session (§5) with a TTL. Failures are logged only.
    StoreSession {
        /// Cache key (`mp:rs:<ticket>`).
        key: String,
        /// Cache value (§5).
        value: String,
        /// Time to live.
        ttl: Duration,
    },
    /// Gating: read a reusable session (bounded wait; an error or timeout is `None`), then
    /// [`super::Session::on_session_loaded`].
    LoadSession {
        /// Cache key.
        key: String,
    },
    /// Gating: ask the bind validator, then [`super::Session::on_bind_checked`].
    CheckBind {
        /// The user.
        user_id: String,
        /// The BIND's data field.
        data: Option<String>,
    },
    /// Gating: register the local route, then write the cluster route, then
    /// [`super::Session::on_route_written`]. The driver remembers what the registration
    /// displaced for [`Action::UndoRoute`] / [`Action::BindDone`].
    WriteRoute {
        /// The user.
        user_id: String,
        /// Its client type.
        client_type: ClientType,
    },
    /// The cluster route write failed: drop the local route and put back what it displaced.
    UndoRoute {
        /// The user.
        user_id: String,
        /// Its client type.
        client_type: ClientType,
    },
    /// The bind succeeded and its OK is queued: kick the displaced connections (§8.2 step 7),
    /// then in the background publish the user online and emit UserOnline.
    BindDone {
        /// The user.
        user_id: String,
        /// Its client type.
        client_type: ClientType,
    },
    /// Remove the user's routes that still point at this connection (unbind, rebind to
    /// another user, disconnect). With `report`, answer [`super::Session::on_routes_removed`].
    RemoveRoutes {
        /// The user.
        user_id: String,
        /// Its client type.
        client_type: ClientType,
        /// Whether the session waits for the result (UNBIND).
        report: bool,
    },
    /// Hand an upstream push to the application's push handler (awaited, so an AUTO_ACK
    /// queued after it follows the handler, as the `PushHandler` contract says).
    Upstream {
        /// The packet's sessionId.
        sid: i32,
        /// The packet flags.
        flags: u8,
        /// The plain content.
        content: Bytes,
        /// The device, if handshaken.
        device_id: Option<String>,
        /// The bound user, if any.
        user_id: Option<String>,
    },
    /// Run an HTTP_PROXY request off the connection's task (not gating: the session reads
    /// on, and the reply, always exactly one, is written when the upstream answers).
    HttpProxy {
        /// The request's sessionId, echoed by the reply.
        sid: i32,
        /// The request.
        req: Box<HttpRequest>,
    },
    /// A downstream push was acknowledged.
    AckArrived {
        /// The push id.
        push_id: i32,
    },
    /// Report an event.
    Emit(Event),
    /// Flush what is queued, then close.
    Close,
}

impl Action {
    /// `true` for actions whose result the session waits for.
    pub fn is_gating(&self) -> bool {
        matches!(
            self,
            Action::Decrypt { .. }
                | Action::LoadSession { .. }
                | Action::CheckBind { .. }
                | Action::WriteRoute { .. }
                | Action::RemoveRoutes { report: true, .. }
        )
    }
}
