//! Fuzz target: arbitrary bytes through the frame decoder, every message decoder and the
//! body pipeline. Nothing may panic; errors are fine.
//!
//! `cargo +nightly fuzz run packet -- -max_total_time=60`
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mpush::protocol::crypto::{AesCipher, Cipher};
use mpush::protocol::message::*;
use mpush::protocol::packet::{decode_datagram, decode_frame, Frame};
use mpush::protocol::{body, Message};

fuzz_target!(|data: &[u8]| {
    let _ = decode_datagram(data, 10240);
    let cipher = Cipher::Aes(AesCipher::new([7; 16], [9; 16]));
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decode_frame(&mut buf, 10240) {
        let Frame::Packet(p) = frame else { continue };
        for c in [None, Some(&cipher)] {
            if let Ok(plain) = body::open(&p, c, 81920) {
                let _ = HandshakeRequest::decode(&plain);
                let _ = HandshakeOk::decode(&plain);
                let _ = FastConnectRequest::decode(&plain);
                let _ = BindUser::decode(&plain);
                let _ = OkMessage::decode(&plain);
                let _ = ErrorMessage::decode(&plain);
                let _ = Kick::decode(&plain);
                let _ = HttpRequest::decode(&plain);
                let _ = GatewayPush::decode(&plain);
                let _ = GatewayKick::decode(&plain);
            }
        }
    }
});
