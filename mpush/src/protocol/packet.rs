//! The MPush packet: 13-byte header + body, and the bare heartbeat byte (spec §1.1–§1.5).

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::ProtocolError;

/// Header length: length(4) cmd(1) cc(2) flags(1) sessionId(4) lrc(1).
pub const HEADER_LEN: usize = 13;
/// The heartbeat: one bare byte at a packet boundary (Java byte −33).
pub const HEARTBEAT_BYTE: u8 = 0xDF;

/// Header flag bits (spec §1.3).
pub mod flags {
    /// Body is encrypted with the connection's cipher.
    pub const CRYPTO: u8 = 0x01;
    /// Body (before encryption) is a zlib stream.
    pub const COMPRESS: u8 = 0x02;
    /// PUSH: the application acknowledges explicitly.
    pub const BIZ_ACK: u8 = 0x04;
    /// PUSH: the SDK acknowledges on receipt.
    pub const AUTO_ACK: u8 = 0x08;
    /// WebSocket JSON packets (never on a binary frame).
    pub const JSON_BODY: u8 = 0x10;
    /// Both ACK bits: a push "needs ACK" when either is set.
    pub const ACK_MASK: u8 = BIZ_ACK | AUTO_ACK;
}

/// MPush command codes (spec §2). Unknown codes are kept, so the server can answer
/// "unsupported command" with the code it received.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// 1: heartbeat (never framed on TCP; the bare byte is used).
    Heartbeat,
    /// 2: handshake request and HandshakeOk.
    Handshake,
    /// 3: reserved.
    Login,
    /// 4: reserved.
    Logout,
    /// 5: bind a user.
    Bind,
    /// 6: unbind the user.
    Unbind,
    /// 7: fast reconnect with a ticket.
    FastConnect,
    /// 8: reserved.
    Pause,
    /// 9: reserved.
    Resume,
    /// 10: error reply.
    Error,
    /// 11: OK reply.
    Ok,
    /// 12: HTTP proxy request/response.
    HttpProxy,
    /// 13: kick a device.
    Kick,
    /// 14: gateway kick (UDP gateway mode).
    GatewayKick,
    /// 15: push, both directions.
    Push,
    /// 16: push request from the push SDK to a gateway.
    GatewayPush,
    /// 17: reserved.
    Notification,
    /// 18: reserved.
    GatewayNotification,
    /// 19: reserved.
    Chat,
    /// 20: reserved.
    GatewayChat,
    /// 21: reserved.
    Group,
    /// 22: reserved.
    GatewayGroup,
    /// 23: acknowledgement of a push.
    Ack,
    /// 24: reserved.
    Nack,
    /// Any other code.
    Unknown(u8),
}

impl Command {
    const TABLE: [Command; 24] = [
        Command::Heartbeat,
        Command::Handshake,
        Command::Login,
        Command::Logout,
        Command::Bind,
        Command::Unbind,
        Command::FastConnect,
        Command::Pause,
        Command::Resume,
        Command::Error,
        Command::Ok,
        Command::HttpProxy,
        Command::Kick,
        Command::GatewayKick,
        Command::Push,
        Command::GatewayPush,
        Command::Notification,
        Command::GatewayNotification,
        Command::Chat,
        Command::GatewayChat,
        Command::Group,
        Command::GatewayGroup,
        Command::Ack,
        Command::Nack,
    ];

    /// The command for a wire code.
    pub fn from_code(code: u8) -> Self {
        match code {
            1..=24 => Self::TABLE[usize::from(code) - 1],
            other => Self::Unknown(other),
        }
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        match self {
            Self::Unknown(c) => c,
            known => {
                // TABLE holds every known variant exactly once, in code order.
                let idx = Self::TABLE.iter().position(|c| *c == known).unwrap_or(0);
                idx as u8 + 1
            }
        }
    }
}

/// One framed packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    /// Command.
    pub cmd: Command,
    /// Check code: written as 0, never verified (quirk Q1).
    pub cc: i16,
    /// Flag bits ([`flags`]).
    pub flags: u8,
    /// Request/response correlation id.
    pub session_id: i32,
    /// LRC byte: written as 0, never verified (quirk Q1).
    pub lrc: u8,
    /// The body as on the wire (possibly compressed and encrypted).
    pub body: Bytes,
}

impl Packet {
    /// A packet with empty body and no flags.
    pub fn new(cmd: Command, session_id: i32) -> Self {
        Self {
            cmd,
            cc: 0,
            flags: 0,
            session_id,
            lrc: 0,
            body: Bytes::new(),
        }
    }

    /// A packet with a body (raw: no flags).
    pub fn with_body(cmd: Command, session_id: i32, body: impl Into<Bytes>) -> Self {
        Self {
            body: body.into(),
            ..Self::new(cmd, session_id)
        }
    }

    /// `true` if a flag bit is set.
    pub fn has_flag(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Appends the framed packet to `dst`.
    pub fn encode_to(&self, dst: &mut BytesMut) {
        dst.reserve(HEADER_LEN + self.body.len());
        put_header(
            dst,
            self.cmd,
            self.cc,
            self.flags,
            self.session_id,
            self.lrc,
            self.body.len(),
        );
        dst.put_slice(&self.body);
    }

    /// The framed packet as bytes.
    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(HEADER_LEN + self.body.len());
        self.encode_to(&mut b);
        b.freeze()
    }
}

/// Appends a packet header announcing a `body_len`-byte body, for writers that append the
/// body themselves (encrypting straight into an outbound buffer, see `body::encode_sealed`).
pub fn put_header(
    dst: &mut BytesMut,
    cmd: Command,
    cc: i16,
    flags: u8,
    session_id: i32,
    lrc: u8,
    body_len: usize,
) {
    // Bodies are bounded by the sender's own limits; a body above i32::MAX cannot exist
    // in practice, saturate rather than wrap.
    dst.put_i32(i32::try_from(body_len).unwrap_or(i32::MAX));
    dst.put_u8(cmd.code());
    dst.put_i16(cc);
    dst.put_u8(flags);
    dst.put_i32(session_id);
    dst.put_u8(lrc);
}

/// What the decoder yields: a heartbeat byte or a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// The bare `0xDF` byte.
    Heartbeat,
    /// A framed packet.
    Packet(Packet),
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed (nothing is consumed). A body length above
/// `max_body` or below zero is rejected as soon as the header is buffered, before the body
/// is (quirk Q3 fixed), so a peer cannot make the server buffer an oversized frame.
pub fn decode_frame(buf: &mut BytesMut, max_body: usize) -> Result<Option<Frame>, ProtocolError> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first == HEARTBEAT_BYTE {
        buf.advance(1);
        return Ok(Some(Frame::Heartbeat));
    }
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let length = usize::try_from(length).map_err(|_| ProtocolError::NegativeLength(length))?;
    if length > max_body {
        return Err(ProtocolError::TooLarge {
            length,
            limit: max_body,
        });
    }
    if buf.len() < HEADER_LEN + length {
        buf.reserve(HEADER_LEN + length - buf.len());
        return Ok(None);
    }
    let mut header = buf.split_to(HEADER_LEN);
    header.advance(4);
    let cmd = Command::from_code(header.get_u8());
    let cc = header.get_i16();
    let flags = header.get_u8();
    let session_id = header.get_i32();
    let lrc = header.get_u8();
    let body = buf.split_to(length).freeze();
    Ok(Some(Frame::Packet(Packet {
        cmd,
        cc,
        flags,
        session_id,
        lrc,
        body,
    })))
}

/// Decodes exactly one packet from a datagram (UDP gateway, spec §1.8): no heartbeats, and
/// the datagram must hold the whole packet.
pub fn decode_datagram(data: &[u8], max_body: usize) -> Result<Packet, ProtocolError> {
    let mut buf = BytesMut::from(data);
    match decode_frame(&mut buf, max_body)? {
        Some(Frame::Packet(p)) => Ok(p),
        Some(Frame::Heartbeat) => Err(ProtocolError::InvalidField {
            field: "datagram",
            reason: "heartbeat byte in a datagram".to_string(),
        }),
        None => Err(ProtocolError::Truncated("datagram")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::hex_dump as hex;

    #[test]
    fn command_codes_round_trip() {
        for code in 0..=255u8 {
            assert_eq!(Command::from_code(code).code(), code);
        }
        assert_eq!(Command::from_code(15), Command::Push);
        assert_eq!(Command::Ack.code(), 23);
    }

    #[test]
    fn decodes_the_spec_ack_frame_and_heartbeats() {
        let mut buf = BytesMut::from(&hex("df df 00000000 17 0000 00 00000007 00 df")[..]);
        assert_eq!(
            decode_frame(&mut buf, 10240).unwrap(),
            Some(Frame::Heartbeat)
        );
        assert_eq!(
            decode_frame(&mut buf, 10240).unwrap(),
            Some(Frame::Heartbeat)
        );
        let f = decode_frame(&mut buf, 10240).unwrap().unwrap();
        assert_eq!(f, Frame::Packet(Packet::new(Command::Ack, 7)));
        assert_eq!(
            decode_frame(&mut buf, 10240).unwrap(),
            Some(Frame::Heartbeat)
        );
        assert_eq!(decode_frame(&mut buf, 10240).unwrap(), None);
    }

    #[test]
    fn encodes_the_spec_ok_frame() {
        let p = Packet::with_body(Command::Ok, 2, hex("05 00 000c 62696e642073756363657373"));
        assert_eq!(
            p.to_bytes().to_vec(),
            hex("00000010 0b 0000 00 00000002 00 05 00 000c 62696e642073756363657373")
        );
    }

    #[test]
    fn partial_input_needs_more_and_consumes_nothing() {
        let full = Packet::with_body(Command::Push, 9, vec![1u8, 2, 3]).to_bytes();
        for cut in 1..full.len() {
            let mut buf = BytesMut::from(&full[..cut]);
            assert_eq!(decode_frame(&mut buf, 10240).unwrap(), None);
            assert_eq!(buf.len(), cut);
        }
    }

    #[test]
    fn rejects_oversized_and_negative_lengths_from_the_header() {
        let mut buf = BytesMut::from(&hex("00002801")[..]);
        assert!(matches!(
            decode_frame(&mut buf, 10240),
            Err(ProtocolError::TooLarge {
                length: 10241,
                limit: 10240
            })
        ));
        let mut buf = BytesMut::from(&hex("80000000 0f")[..]);
        assert!(matches!(
            decode_frame(&mut buf, 10240),
            Err(ProtocolError::NegativeLength(_))
        ));
    }

    #[test]
    fn datagram_must_be_whole() {
        let full = Packet::with_body(Command::GatewayPush, 1, vec![0u8; 4]).to_bytes();
        assert!(decode_datagram(&full, 10240).is_ok());
        assert!(decode_datagram(&full[..10], 10240).is_err());
        assert!(decode_datagram(&[0xDF], 10240).is_err());
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn decoder_never_panics_and_never_over_consumes(data in prop::collection::vec(any::<u8>(), 0..512), limit in 0usize..2048) {
                let mut buf = BytesMut::from(&data[..]);
                loop {
                    let before = buf.len();
                    match decode_frame(&mut buf, limit) {
                        Ok(Some(_)) => prop_assert!(buf.len() < before),
                        Ok(None) | Err(_) => break,
                    }
                }
                let _ = decode_datagram(&data, limit);
            }

            #[test]
            fn encode_decode_round_trip(cmd in any::<u8>(), flags in any::<u8>(), sid in any::<i32>(), cc in any::<i16>(), lrc in any::<u8>(),
                                        body in prop::collection::vec(any::<u8>(), 0..300)) {
                let p = Packet { cmd: Command::from_code(cmd), cc, flags, session_id: sid, lrc, body: Bytes::from(body) };
                let mut buf = BytesMut::new();
                p.encode_to(&mut buf);
                let got = decode_frame(&mut buf, 1024).unwrap();
                prop_assert_eq!(got, Some(Frame::Packet(p)));
                prop_assert!(buf.is_empty());
            }
        }
    }
}
