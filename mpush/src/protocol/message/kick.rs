//! KICK (cmd 13, spec §3.10): tells a device it was displaced.

use super::{FieldReader, FieldWriter, Message, ProtocolError};

/// "KickUserMessage": the kicked connection's device and the user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kick {
    /// Device of the connection being kicked.
    pub device_id: Option<String>,
    /// The user.
    pub user_id: Option<String>,
}

impl Message for Kick {
    fn write(&self, w: &mut FieldWriter) {
        w.put_string(self.device_id.as_deref())
            .put_string(self.user_id.as_deref());
    }

    fn read(r: &mut FieldReader<'_>) -> Result<Self, ProtocolError> {
        Ok(Self {
            device_id: r.get_string("deviceId")?,
            user_id: r.get_string("userId")?,
        })
    }
}
