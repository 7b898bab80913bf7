//! What to push and how it ended.

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
pub(super) const MAX_TIMEOUT: Duration = Duration::from_millis(i32::MAX as u64);

/// `now + timeout`, saturated at [`MAX_TIMEOUT`] so no timeout can overflow the clock.
pub(crate) fn deadline(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    // Only a monotonic clock within 25 days of its end could fail the add.
    now.checked_add(timeout.min(MAX_TIMEOUT)).unwrap_or(now)
}

/// Who a push goes to. Broadcast-only settings live in the broadcast variant, so a tag
/// filter on a single-user push (which MPush ignores) cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushTarget {
    /// One user (every client type with a route).
    User(String),
    /// Several users, each sent separately.
    Users(Vec<String>),
    /// Every connected client, optionally filtered.
    Broadcast {
        /// Tag filter (substring match against each session's tags).
        tags: Option<Vec<String>>,
        /// Condition expression (JavaScript subset, see `push::condition`).
        condition: Option<String>,
        /// Task id: progress and flow control in the cache (spec §9.6).
        task_id: Option<String>,
    },
}

/// One push request: a [`PushTarget`], the content and how to deliver it.
///
/// Built with [`PushContext::to_user`], [`PushContext::to_users`] or
/// [`PushContext::broadcast`] (a [`BroadcastBuilder`] with the broadcast-only settings;
/// [`PushSender::send`](super::PushSender::send) takes either).
///
/// There is no result callback: the results are `send`'s return value. A callback called
/// after `send` returns added nothing to that, and was silently never called when the
/// caller dropped the future (a timeout around `send`), which made it look like a delivery
/// hook it never was.
#[derive(Debug, Clone)]
pub struct PushContext {
    /// The PUSH body.
    pub content: Bytes,
    /// Who receives it.
    pub target: PushTarget,
    /// How clients acknowledge.
    pub ack_model: AckModel,
    /// Overall timeout (default 3 s).
    pub timeout: Duration,
}

/// The timeout of a push that sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_millis(3000);

impl PushContext {
    fn new(target: PushTarget, content: Bytes) -> Self {
        Self {
            content,
            target,
            ack_model: AckModel::NoAck,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// A push of `content` to one user.
    pub fn to_user(user_id: impl Into<String>, content: impl Into<Bytes>) -> Self {
        Self::new(PushTarget::User(user_id.into()), content.into())
    }

    /// A push of `content` to several users.
    pub fn to_users(user_ids: Vec<String>, content: impl Into<Bytes>) -> Self {
        Self::new(PushTarget::Users(user_ids), content.into())
    }

    /// A broadcast of `content`; set its filters and task id on the returned builder.
    pub fn broadcast(content: impl Into<Bytes>) -> BroadcastBuilder {
        BroadcastBuilder {
            // Replaced by the broadcast target in `build`.
            base: Self::new(PushTarget::Users(Vec::new()), content.into()),
            tags: None,
            condition: None,
            task_id: None,
        }
    }

    setters! {
        /// Sets the ACK model.
        ack(model: AckModel) => ack_model = model;
        /// Sets the timeout, saturated at `MAX_TIMEOUT` (so `Duration::MAX` means "as long
        /// as the wire allows").
        timeout(t: Duration) => timeout = t.min(MAX_TIMEOUT);
    }

    /// The broadcast tag filter (`None` for a user push or an unfiltered broadcast).
    pub fn tags(&self) -> Option<&[String]> {
        match &self.target {
            PushTarget::Broadcast { tags, .. } => tags.as_deref(),
            _ => None,
        }
    }

    /// The broadcast condition, if any.
    pub fn condition(&self) -> Option<&str> {
        match &self.target {
            PushTarget::Broadcast { condition, .. } => condition.as_deref(),
            _ => None,
        }
    }

    /// The broadcast task id, if any.
    pub fn task_id(&self) -> Option<&str> {
        match &self.target {
            PushTarget::Broadcast { task_id, .. } => task_id.as_deref(),
            _ => None,
        }
    }
}

/// A broadcast [`PushContext`] being built: the settings only a broadcast has.
#[derive(Debug, Clone)]
pub struct BroadcastBuilder {
    /// Content, ACK model and timeout; its target is replaced by [`build`](Self::build).
    base: PushContext,
    tags: Option<Vec<String>>,
    condition: Option<String>,
    task_id: Option<String>,
}

impl BroadcastBuilder {
    setters! {
        /// Sets the tag filter (substring match against each session's tags).
        tags(tags: Vec<String>) => tags = Some(tags);
        /// Sets the condition expression.
        condition(c: impl Into<String>) => condition = Some(c.into());
        /// Sets the task id (progress and flow control in the cache).
        task_id(id: impl Into<String>) => task_id = Some(id.into());
    }

    /// Sets the ACK model.
    pub fn ack(mut self, model: AckModel) -> Self {
        self.base = self.base.ack(model);
        self
    }

    /// Sets the timeout (see [`PushContext::timeout`]).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.base = self.base.timeout(t);
        self
    }

    /// The finished context.
    pub fn build(self) -> PushContext {
        PushContext {
            target: PushTarget::Broadcast {
                tags: self.tags,
                condition: self.condition,
                task_id: self.task_id,
            },
            ..self.base
        }
    }
}

impl From<BroadcastBuilder> for PushContext {
    fn from(b: BroadcastBuilder) -> Self {
        b.build()
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
