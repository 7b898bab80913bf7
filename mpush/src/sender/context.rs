//! What to push and how it ended.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use crate::protocol::AckModel;
use crate::router::ClientLocation;
use crate::spi::ClientType;

/// The payload convention of MPush's SDK (spec §9.3): serialised as
/// `{"content":…,"msgId":…,"msgType":1|2|3}` with null keys omitted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PushMsg {
    /// Message content (often a JSON string of a notification).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Message id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// 1 NOTIFICATION, 2 MESSAGE, 3 NOTIFICATION_AND_MESSAGE.
    pub msg_type: i32,
}

impl PushMsg {
    /// The JSON bytes sent as PUSH content.
    pub fn to_bytes(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }
}

/// The longest timeout a push can have: the wire carries milliseconds in an `i32` (about
/// 24.8 days). Longer timeouts are cut to this instead of overflowing a deadline.
pub const MAX_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// `now + timeout`, saturated at [`MAX_TIMEOUT`] so no timeout can overflow the clock.
pub(crate) fn deadline(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    // Only a monotonic clock within 25 days of its end could fail the add.
    now.checked_add(timeout.min(MAX_TIMEOUT)).unwrap_or(now)
}

/// Called once per [`PushResult`].
pub type PushCallback = Arc<dyn Fn(&PushResult) + Send + Sync>;

/// One push request.
#[derive(Clone)]
pub struct PushContext {
    /// The PUSH body.
    pub content: Bytes,
    /// A single target user.
    pub user_id: Option<String>,
    /// More target users (each sent separately).
    pub user_ids: Option<Vec<String>>,
    /// Push to every connected client instead (filtered by `tags` / `condition`).
    pub broadcast: bool,
    /// How clients acknowledge.
    pub ack_model: AckModel,
    /// Overall timeout (default 3 s).
    pub timeout: Duration,
    /// Broadcast tag filter (substring match against each session's tags).
    pub tags: Option<Vec<String>>,
    /// Broadcast condition expression (JavaScript subset, see `push::condition`).
    pub condition: Option<String>,
    /// Broadcast task id: progress and flow control in the cache.
    pub task_id: Option<String>,
    /// Called once per result.
    pub callback: Option<PushCallback>,
}

impl std::fmt::Debug for PushContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushContext")
            .field("user_id", &self.user_id)
            .field("broadcast", &self.broadcast)
            .field("ack_model", &self.ack_model)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Default for PushContext {
    fn default() -> Self {
        Self {
            content: Bytes::new(),
            user_id: None,
            user_ids: None,
            broadcast: false,
            ack_model: AckModel::NoAck,
            timeout: Duration::from_millis(3000),
            tags: None,
            condition: None,
            task_id: None,
            callback: None,
        }
    }
}

impl PushContext {
    /// A push of `content` to one user.
    pub fn to_user(user_id: impl Into<String>, content: impl Into<Bytes>) -> Self {
        Self {
            user_id: Some(user_id.into()),
            content: content.into(),
            ..Self::default()
        }
    }

    /// A push of `content` to several users.
    pub fn to_users(user_ids: Vec<String>, content: impl Into<Bytes>) -> Self {
        Self {
            user_ids: Some(user_ids),
            content: content.into(),
            ..Self::default()
        }
    }

    /// A broadcast of `content`.
    pub fn broadcast(content: impl Into<Bytes>) -> Self {
        Self {
            broadcast: true,
            content: content.into(),
            ..Self::default()
        }
    }

    /// Sets the ACK model.
    pub fn ack(mut self, model: AckModel) -> Self {
        self.ack_model = model;
        self
    }

    /// Sets the timeout, saturated at [`MAX_TIMEOUT`] (so `Duration::MAX` means "as long
    /// as the wire allows").
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t.min(MAX_TIMEOUT);
        self
    }

    /// Sets the broadcast tag filter.
    pub fn tags(mut self, tags: Vec<String>) -> Self {
        self.tags = Some(tags);
        self
    }

    /// Sets the broadcast condition.
    pub fn condition(mut self, c: impl Into<String>) -> Self {
        self.condition = Some(c.into());
        self
    }

    /// Sets the broadcast task id.
    pub fn task_id(mut self, id: impl Into<String>) -> Self {
        self.task_id = Some(id.into());
        self
    }

    /// Sets the callback.
    pub fn callback(mut self, cb: impl Fn(&PushResult) + Send + Sync + 'static) -> Self {
        self.callback = Some(Arc::new(cb));
        self
    }
}

/// Result codes of the Java SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultCode {
    /// 1: delivered (and acknowledged when asked).
    Success = 1,
    /// 2: delivery failed (write error, gateway unreachable, client not reading).
    Failure = 2,
    /// 3: the user is not connected.
    Offline = 3,
    /// 4: no answer in time (e.g. no ACK).
    Timeout = 4,
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResult {
    /// Outcome.
    pub code: ResultCode,
    /// Target user (`None` for broadcast).
    pub user_id: Option<String>,
    /// Client type of the route.
    pub client_type: Option<ClientType>,
    /// The route (or, for a broadcast, the gateway).
    pub location: Option<ClientLocation>,
    /// The gateway's error reason, if any.
    pub error: Option<String>,
}

impl PushResult {
    pub(crate) fn new(
        code: ResultCode,
        user_id: Option<&str>,
        location: Option<ClientLocation>,
    ) -> Self {
        Self {
            code,
            user_id: user_id.map(str::to_string),
            client_type: None,
            location,
            error: None,
        }
    }

    pub(crate) fn with_client_type(mut self, t: ClientType) -> Self {
        self.client_type = Some(t);
        self
    }

    pub(crate) fn with_error(mut self, reason: String) -> Self {
        self.error = Some(reason);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_msg_json() {
        let m = PushMsg {
            content: Some("hi".into()),
            msg_id: None,
            msg_type: 2,
        };
        assert_eq!(&m.to_bytes()[..], br#"{"content":"hi","msgType":2}"#);
    }

    #[test]
    fn huge_timeouts_saturate_instead_of_overflowing() {
        let ctx = PushContext::to_user("u", &b"x"[..]).timeout(Duration::MAX);
        assert_eq!(ctx.timeout, MAX_TIMEOUT);
        // The field is public: a deadline from an unclamped value must not panic either.
        let before = tokio::time::Instant::now();
        let d = deadline(Duration::MAX);
        assert!(d >= before + MAX_TIMEOUT);
    }
}
