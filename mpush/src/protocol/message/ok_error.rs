//! OK (cmd 11) and ERROR (cmd 10) replies (spec §3.6, §3.7, §6).

use super::{FieldReader, FieldWriter, Message, ProtocolError, WireField};

/// Error codes carried by ERROR (spec §6), as signed bytes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    /// 0: only a reason is given.
    None,
    /// 1: gateway push: user offline.
    Offline,
    /// 2: gateway push: write to the client failed.
    PushClientFailure,
    /// 3: gateway push: the user is on another server.
    RouterChange,
    /// 4: defined, never sent.
    AckTimeout,
    /// 100: exception while handling a packet.
    DispatchError,
    /// 101: no handler for the command.
    UnsupportedCmd,
    /// 102: handshake with the same device on the same connection.
    RepeatHandshake,
    /// 103: fast connect: ticket unknown.
    SessionExpired,
    /// 104: fast connect: device mismatch.
    InvalidDevice,
    /// −1: unknown.
    Unknown,
}

impl ErrorCode {
    /// The wire value.
    pub fn code(self) -> i8 {
        match self {
            Self::None => 0,
            Self::Offline => 1,
            Self::PushClientFailure => 2,
            Self::RouterChange => 3,
            Self::AckTimeout => 4,
            Self::DispatchError => 100,
            Self::UnsupportedCmd => 101,
            Self::RepeatHandshake => 102,
            Self::SessionExpired => 103,
            Self::InvalidDevice => 104,
            Self::Unknown => -1,
        }
    }

    /// The reason text MPush sends with this code.
    pub fn reason(self) -> &'static str {
        match self {
            Self::None => "",
            Self::Offline => "user offline",
            Self::PushClientFailure => "push to client failure",
            Self::RouterChange => "router change",
            Self::AckTimeout => "ack timeout",
            Self::DispatchError => "handle message error",
            Self::UnsupportedCmd => "unsupported command",
            Self::RepeatHandshake => "repeat handshake",
            Self::SessionExpired => "session expired",
            Self::InvalidDevice => "invalid device",
            Self::Unknown => "unknown",
        }
    }

    /// The code for a wire value (unknown values map to [`ErrorCode::Unknown`]).
    pub fn from_code(code: i8) -> Self {
        match code {
            0 => Self::None,
            1 => Self::Offline,
            2 => Self::PushClientFailure,
            3 => Self::RouterChange,
            4 => Self::AckTimeout,
            100 => Self::DispatchError,
            101 => Self::UnsupportedCmd,
            102 => Self::RepeatHandshake,
            103 => Self::SessionExpired,
            104 => Self::InvalidDevice,
            _ => Self::Unknown,
        }
    }
}

/// OK: answers `cmd` (bind, unbind, gateway push).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OkMessage {
    /// The command being answered.
    pub cmd: u8,
    /// Always 0 in practice.
    pub code: i8,
    /// "bind success", a GatewayPushResult JSON, or none.
    pub data: Option<String>,
}

wire_fields!(OkMessage {
    cmd: "cmd",
    code: "code",
    data: "data"
});

/// ERROR: `cmd` failed with `code` and a human `reason`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ErrorMessage {
    /// The command that failed.
    pub cmd: u8,
    /// [`ErrorCode`] value, 0 when only a reason is given.
    pub code: i8,
    /// Human text.
    pub reason: Option<String>,
    /// Optional data (GatewayPushResult JSON on gateway errors).
    pub data: Option<String>,
}

impl ErrorMessage {
    /// An error with a code and its standard reason.
    pub fn from_code(cmd: u8, code: ErrorCode) -> Self {
        Self {
            cmd,
            code: code.code(),
            reason: Some(code.reason().to_string()),
            data: None,
        }
    }

    /// An error with code 0 and a reason.
    pub fn with_reason(cmd: u8, reason: &str) -> Self {
        Self {
            cmd,
            code: 0,
            reason: Some(reason.to_string()),
            data: None,
        }
    }
}

wire_fields!(ErrorMessage {
    cmd: "cmd",
    code: "code",
    reason: "reason",
    data: "data"
});

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn spec_vectors() {
        let ok = OkMessage {
            cmd: 5,
            code: 0,
            data: Some("bind success".into()),
        };
        assert_eq!(
            ok.encode(),
            hex::decode("0500000c62696e642073756363657373").unwrap()
        );
        let err = ErrorMessage::from_code(7, ErrorCode::SessionExpired);
        assert_eq!(
            err.encode(),
            hex::decode("0767000f73657373696f6e20657870697265640000").unwrap()
        );
        for c in [1i8, 2, 3, 4, 100, 101, 102, 103, 104, -1, 0] {
            assert_eq!(ErrorCode::from_code(c).code(), c);
        }
    }
}
