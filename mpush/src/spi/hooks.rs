//! Application hooks: bind validation, upstream push handling, push outcome listener.

use async_trait::async_trait;
use bytes::Bytes;

use super::ClientType;

/// Why a bind was not allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BindRejection {
    /// The user may not bind (bad credentials, banned, ...): the server answers ERROR
    /// "bind failed" and closes, as MPush does when its validator returns false. The reason
    /// is logged, never sent to the client.
    #[error("bind denied: {reason}")]
    Denied {
        /// Why, for the logs.
        reason: String,
    },
    /// The validator could not decide (its auth backend is down or too slow): the server
    /// answers ERROR `"bind failed: validator unavailable (<reason>)"` and keeps the
    /// connection, so the client may retry.
    #[error("bind validator unavailable: {reason}")]
    Unavailable {
        /// What is unavailable.
        reason: String,
    },
}

/// Decides whether a user may bind (spec §8.2 step 4).
///
/// Called once per BIND with the user id and the BIND's `data` field. A slow validator delays
/// only that client's bind.
#[async_trait]
pub trait BindValidator: Send + Sync + 'static {
    /// `Ok(())` to accept the bind, or why not.
    async fn validate(&self, user_id: &str, data: Option<&str>) -> Result<(), BindRejection>;
}

/// The default validator: accepts everyone (as MPush's default).
#[derive(Debug, Default, Clone, Copy)]
pub struct AllowAllBindValidator;

#[async_trait]
impl BindValidator for AllowAllBindValidator {
    async fn validate(&self, _user_id: &str, _data: Option<&str>) -> Result<(), BindRejection> {
        Ok(())
    }
}

/// An upstream PUSH a client sent to the server (spec §9.2).
#[derive(Debug, Clone)]
pub struct UpstreamPush {
    /// The sending connection.
    pub conn_id: String,
    /// Its device id.
    pub device_id: Option<String>,
    /// Its bound user, if any.
    pub user_id: Option<String>,
    /// The packet's sessionId.
    pub session_id: i32,
    /// The packet flags (ACK bits).
    pub flags: u8,
    /// The content (decrypted, inflated).
    pub content: Bytes,
}

/// Handles upstream pushes (MPush's `PushHandlerFactory`). The server replies ACK by itself
/// when the packet asked for AUTO_ACK, after the handler returns.
#[async_trait]
pub trait PushHandler: Send + Sync + 'static {
    /// One upstream push.
    async fn on_push(&self, push: UpstreamPush);
}

/// The default handler: logs the push at debug level.
#[derive(Debug, Default, Clone, Copy)]
pub struct DefaultPushHandler;

#[async_trait]
impl PushHandler for DefaultPushHandler {
    async fn on_push(&self, push: UpstreamPush) {
        tracing::debug!(conn = %push.conn_id, user = ?push.user_id, len = push.content.len(), "upstream push");
    }
}

/// How a server-side push ended (what the gateway reports, spec §9.1, §9.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// Written to the client (and acknowledged when an ACK was required).
    Success,
    /// Written, ACK required, ACK received.
    AckSuccess,
    /// The user has no connection here or anywhere.
    Offline,
    /// The write failed or the client could not take more data.
    Failure,
    /// The user is connected to another server.
    RouterChange,
    /// No ACK within the timeout.
    Timeout,
}

/// Observes push outcomes on this server (MPush's `PushListener`). Replies to the gateway
/// client are sent by the server itself; this hook is for statistics and business logic.
/// Called inline: must not block.
pub trait PushListener: Send + Sync + 'static {
    /// One single-user push ended.
    fn on_push(&self, user_id: &str, client_type: ClientType, outcome: PushOutcome) {
        let _ = (user_id, client_type, outcome);
    }
    /// A broadcast task finished on this server after `delivered` writes.
    fn on_broadcast_done(&self, task_id: Option<&str>, delivered: u64) {
        let _ = (task_id, delivered);
    }
}

/// The default listener: does nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoopPushListener;

impl PushListener for NoopPushListener {}
