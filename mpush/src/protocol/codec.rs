//! tokio-util codec adapter over [`super::packet::decode_frame`].

use bytes::BytesMut;
use tokio_util::codec::{Decoder, Encoder};

use super::ProtocolError;
use super::packet::{Frame, HEARTBEAT_BYTE, decode_frame};

/// Frames MPush packets and heartbeat bytes on a byte stream.
#[derive(Debug, Clone, Copy)]
pub struct PacketCodec {
    max_body: usize,
}

impl PacketCodec {
    /// A codec that rejects bodies longer than `max_body` bytes.
    pub fn new(max_body: usize) -> Self {
        Self { max_body }
    }
}

impl Decoder for PacketCodec {
    type Item = Frame;
    type Error = ProtocolError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, ProtocolError> {
        decode_frame(src, self.max_body)
    }
}

impl Encoder<Frame> for PacketCodec {
    type Error = ProtocolError;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), ProtocolError> {
        match item {
            Frame::Heartbeat => dst.extend_from_slice(&[HEARTBEAT_BYTE]),
            Frame::Packet(p) => p.encode_to(dst),
        }
        Ok(())
    }
}
