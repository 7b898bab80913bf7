//! The push center: delivering content to connected clients and waiting for ACKs (§9).
//!
//! - [`ack`]: the pending-ACK table, keyed per connection (quirk Q20 fixed).
//! - [`local`]: push to one user's connections on this server.
//! - [`broadcast`]: fan-out to every matching local session, with [`condition`] filters.
//! - [`flow`]: flow control.
//! - [`result`]: the GatewayPushResult JSON.
//! - [`target`]: what pushing needs of the server (connection, session view, shared state).

pub(crate) mod ack;
pub(crate) mod broadcast;
pub mod condition;
pub(crate) mod flow;
pub(crate) mod local;
pub(crate) mod result;
pub(crate) mod target;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

pub(crate) use ack::AckTable;
pub(crate) use target::{PushEnv, PushTarget, SessionView};

use crate::config::MPushConfig;
/// The ACK model is a wire type (header flags); it lives in `protocol`.
pub(crate) use crate::protocol::AckModel;

/// The ACK wait used when a push's remaining time is not positive (as the original).
pub(crate) const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_millis(3000);

/// Server-originated push ids live in their own range, far above the client's request
/// counter which starts at 1, because the Java client matches *any* incoming packet to its
/// pending requests by sessionId (quirk Q14).
const PUSH_ID_BASE: u32 = 0x4000_0000;

/// Push-side state of one server.
#[derive(Debug)]
pub(crate) struct PushCenter {
    /// Pending ACKs.
    pub acks: AckTable,
    /// Global flow control of single-user pushes (`mp.push.flow-control.global`).
    pub global_flow: flow::FlowControl,
    push_id: AtomicU32,
}

impl PushCenter {
    /// A push center for `config`.
    pub(crate) fn new(config: &MPushConfig) -> Self {
        Self {
            acks: AckTable::default(),
            global_flow: flow::FlowControl::new(config.push.global_flow_control),
            push_id: AtomicU32::new(0),
        }
    }

    /// A fresh sessionId for a server-originated PUSH, in `[0x40000000, 0x7fffffff]`.
    pub(crate) fn next_push_id(&self) -> i32 {
        let n = self.push_id.fetch_add(1, Ordering::Relaxed) & 0x3FFF_FFFF;
        (PUSH_ID_BASE | n) as i32
    }
}
