//! KICK (cmd 13, spec §3.10): tells a device it was displaced.

use super::{FieldReader, FieldWriter, Message, ProtocolError, WireField};

/// "KickUserMessage": the kicked connection's device and the user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kick {
    /// Device of the connection being kicked.
    pub device_id: Option<String>,
    /// The user.
    pub user_id: Option<String>,
}

wire_fields!(Kick {
    device_id: "deviceId",
    user_id: "userId"
});
