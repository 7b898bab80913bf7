//! How a push is acknowledged: the AUTO_ACK / BIZ_ACK header flags (spec §9.2, §9.3).

use super::flags;

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
