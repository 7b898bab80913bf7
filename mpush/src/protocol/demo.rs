//! The JSON body of MPush's demo `/push` endpoint (spec §9.8), shared by the alloc service
//! and the server's admin API, and the notification it sends.

use serde::{Deserialize, Serialize};

/// The body of `POST /push`: `{"userId", "hello", "broadcast", "condition"}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DemoPushRequest {
    /// The user to push to (ignored when `broadcast` is true).
    #[serde(default)]
    pub user_id: Option<String>,
    /// Text appended to the notification.
    #[serde(default)]
    pub hello: Option<String>,
    /// Push to everyone instead of one user.
    #[serde(default)]
    pub broadcast: Option<bool>,
    /// A broadcast's condition (ignored for a user push, as the original).
    #[serde(default)]
    pub condition: Option<String>,
}

impl DemoPushRequest {
    /// Parses and checks a body: malformed JSON, and a request naming neither a user nor a
    /// broadcast, are errors with a message for the caller.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let mut req: Self =
            serde_json::from_slice(body).map_err(|e| format!("invalid JSON body: {e}"))?;
        req.user_id = req.user_id.filter(|u| !u.trim().is_empty());
        req.condition = req.condition.filter(|c| !c.trim().is_empty());
        // The original sends such a request to nobody and still says it did.
        if req.user_id.is_none() && !req.broadcast.unwrap_or(false) {
            return Err("give a userId or \"broadcast\": true".into());
        }
        Ok(req)
    }

    /// The user of a unicast; `None` for a broadcast.
    pub fn unicast_user(&self) -> Option<String> {
        if self.broadcast.unwrap_or(false) {
            None
        } else {
            self.user_id.clone()
        }
    }
}

/// MPush's `NotificationDO`, the keys the demo sets (spec §9.8).
#[derive(Debug, Serialize)]
struct Notification<'a> {
    content: String,
    title: &'a str,
    nid: i32,
    ticker: &'a str,
}

/// The notification JSON the demo pushes (the push content of a `PushMsg` is this text).
pub fn demo_notification(hello: Option<&str>) -> String {
    let n = Notification {
        content: format!("MPush开源推送，{}", hello.unwrap_or_default()),
        title: "MPUSH推送",
        nid: 1,
        ticker: "你有一条新的消息,请注意查收",
    };
    serde_json::to_string(&n).unwrap_or_default()
}

/// The PUSH content of a demo push: MPush's `PushMsg` JSON
/// (`{"content": <notification>, "msgId", "msgType": 3}`).
pub fn demo_push_content(hello: Option<&str>, msg_id: &str) -> Vec<u8> {
    let msg = serde_json::json!({
        "content": demo_notification(hello),
        "msgId": msg_id,
        "msgType": 3,
    });
    serde_json::to_vec(&msg).unwrap_or_default()
}
