//! The push center: delivering content to connected clients and waiting for ACKs (§9).
//!
//! - [`ack`]: the pending-ACK table, keyed per connection (quirk Q20 fixed).
//! - [`local`]: push to one user's connections on this server.
//! - [`broadcast`]: fan-out to every matching local session, with [`condition`] filters.
//! - [`flow`]: flow control.
//! - [`result`]: the GatewayPushResult JSON.

pub mod ack;
pub mod broadcast;
pub mod condition;
pub mod flow;
pub mod local;
pub mod result;

use std::time::Duration;

pub use ack::AckTable;

use crate::config::MPushConfig;
use crate::protocol::flags;

/// How the receiving client must acknowledge a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckModel {
    /// No acknowledgement.
    #[default]
    NoAck,
    /// The client SDK acknowledges on receipt.
    AutoAck,
    /// The application acknowledges explicitly.
    BizAck,
}

impl AckModel {
    /// The header flag bits.
    pub fn flags(self) -> u8 {
        match self {
            Self::NoAck => 0,
            Self::AutoAck => flags::AUTO_ACK,
            Self::BizAck => flags::BIZ_ACK,
        }
    }

    /// The model encoded in header flags.
    pub fn from_flags(f: u8) -> Self {
        if f & flags::BIZ_ACK != 0 {
            Self::BizAck
        } else if f & flags::AUTO_ACK != 0 {
            Self::AutoAck
        } else {
            Self::NoAck
        }
    }
}

/// The ACK wait used when a push's remaining time is not positive (as the original).
pub const DEFAULT_ACK_TIMEOUT: Duration = Duration::from_millis(3000);

/// Push-side state of one server.
#[derive(Debug)]
pub struct PushCenter {
    /// Pending ACKs.
    pub acks: AckTable,
    /// Global flow control of single-user pushes (`mp.push.flow-control.global`).
    pub global_flow: flow::FlowControl,
}

impl PushCenter {
    /// A push center for `config`.
    pub fn new(config: &MPushConfig) -> Self {
        Self {
            acks: AckTable::default(),
            global_flow: flow::FlowControl::new(config.push.global_flow_control),
        }
    }
}
