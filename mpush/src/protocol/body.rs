//! The body pipeline (spec §1.6): zlib above a threshold, then the connection's cipher.

use bytes::Bytes;

use super::ProtocolError;
use super::compress;
use super::crypto::Cipher;
use super::packet::{Packet, flags};

/// Applies compression (bodies strictly larger than `compress_threshold`) and encryption
/// (when a cipher is given) to a plain body. Returns the wire body and the flags to OR into
/// the packet.
pub fn seal(
    plain: Vec<u8>,
    cipher: Option<&Cipher>,
    compress_threshold: usize,
) -> Result<(Bytes, u8), ProtocolError> {
    let mut flag_bits = 0;
    let mut body = plain;
    if !body.is_empty() && body.len() > compress_threshold {
        let packed = compress::compress(&body);
        // Incompressible content would only grow; the flag tells the peer either way.
        if packed.len() < body.len() {
            body = packed;
            flag_bits |= flags::COMPRESS;
        }
    }
    if let Some(c) = cipher {
        if !body.is_empty() {
            body = c.encrypt(&body)?;
            flag_bits |= flags::CRYPTO;
        }
    }
    Ok((Bytes::from(body), flag_bits))
}

/// Reverses [`seal`] according to the packet's flags: decrypt when CRYPTO is set and a cipher
/// is present, then inflate (at most `max_inflated` bytes) when COMPRESS is set. An empty body
/// is returned as is; a non-empty body that decodes to nothing is an error.
pub fn open(
    packet: &Packet,
    cipher: Option<&Cipher>,
    max_inflated: usize,
) -> Result<Bytes, ProtocolError> {
    if packet.body.is_empty() {
        return Ok(Bytes::new());
    }
    let mut body = packet.body.clone();
    if packet.has_flag(flags::CRYPTO) {
        if let Some(c) = cipher {
            body = Bytes::from(c.decrypt(&body)?);
        }
    }
    if packet.has_flag(flags::COMPRESS) {
        body = Bytes::from(compress::decompress(&body, max_inflated)?);
    }
    if body.is_empty() {
        return Err(ProtocolError::EmptyBody);
    }
    Ok(body)
}
