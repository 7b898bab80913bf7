//! The body pipeline (spec §1.6): zlib above a threshold, then the connection's cipher.

use bytes::{BufMut, Bytes, BytesMut};

use super::ProtocolError;
use super::compress;
use super::crypto::{AesCipher, Cipher};
use super::packet::{Command, HEADER_LEN, Packet, flags, put_header};

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

/// A body after the compression step of [`seal`], before encryption: what a broadcast
/// prepares once for all its connections (only the per-session AES is left per connection).
/// Keeps the plain content too, for connections without a body pipeline (WebSocket JSON).
#[derive(Debug, Clone)]
pub struct Prepared {
    plain: Bytes,
    /// The zlib form, when the body is above the threshold and compression made it smaller.
    packed: Option<Bytes>,
}

impl Prepared {
    /// Compresses `plain` when it is strictly larger than `compress_threshold` and
    /// compression makes it smaller, as [`seal`] does.
    pub fn new(plain: Bytes, compress_threshold: usize) -> Self {
        let packed = (!plain.is_empty() && plain.len() > compress_threshold)
            .then(|| compress::compress(&plain))
            .filter(|p| p.len() < plain.len())
            .map(Bytes::from);
        Self { plain, packed }
    }

    /// The content as given.
    pub fn plain(&self) -> &Bytes {
        &self.plain
    }

    /// The body to encrypt and the flag bits so far (COMPRESS when compressed).
    fn body(&self) -> (&[u8], u8) {
        match &self.packed {
            Some(p) => (p, flags::COMPRESS),
            None => (&self.plain, 0),
        }
    }
}

/// Appends one framed packet carrying `content` to `dst`, encrypted with `cipher` (when given
/// and the body is not empty) straight into `dst`: the same bytes as [`seal`] then
/// [`Packet::encode_to`], without the intermediate body buffers. `flags` are the packet's own
/// bits; COMPRESS and CRYPTO are added as they apply.
///
/// # Errors
/// [`ProtocolError::Encrypt`] if encryption fails; `dst` is then left as it was.
pub fn encode_sealed(
    dst: &mut BytesMut,
    cmd: Command,
    session_id: i32,
    flags: u8,
    content: &Prepared,
    cipher: Option<&Cipher>,
) -> Result<(), ProtocolError> {
    let (body, mut flag_bits) = content.body();
    flag_bits |= flags;
    match cipher {
        Some(Cipher::Aes(aes)) if !body.is_empty() => {
            let len = AesCipher::encrypted_len(body.len());
            let start = dst.len();
            dst.reserve(HEADER_LEN + len);
            put_header(dst, cmd, 0, flag_bits | flags::CRYPTO, session_id, 0, len);
            if let Err(e) = aes.encrypt_append(body, dst) {
                dst.truncate(start);
                return Err(e);
            }
        }
        Some(c @ Cipher::Rsa(_)) if !body.is_empty() => {
            // Only before a handshake completes; not a hot path.
            let sealed = c.encrypt(body)?;
            dst.reserve(HEADER_LEN + sealed.len());
            put_header(
                dst,
                cmd,
                0,
                flag_bits | flags::CRYPTO,
                session_id,
                0,
                sealed.len(),
            );
            dst.put_slice(&sealed);
        }
        _ => {
            dst.reserve(HEADER_LEN + body.len());
            put_header(dst, cmd, 0, flag_bits, session_id, 0, body.len());
            dst.put_slice(body);
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `encode_sealed` writes the same frame as `seal` + `Packet::encode_to`, for plain and
    /// AES connections, below and above the compression threshold, and for empty bodies.
    #[test]
    fn encode_sealed_matches_seal_then_encode() {
        let aes = Cipher::Aes(AesCipher::new([7; 16], [9; 16]));
        let compressible = Bytes::from(vec![b'a'; 4000]);
        let small = Bytes::from_static(b"hello, push");
        for cipher in [None, Some(&aes)] {
            for (content, threshold) in [
                (small.clone(), 1024),
                (compressible.clone(), 1024),
                (compressible.clone(), 10_000),
                (Bytes::new(), 0),
            ] {
                let (body, extra) = seal(content.to_vec(), cipher, threshold).expect("seal");
                let want = Packet {
                    flags: flags::BIZ_ACK | extra,
                    body,
                    ..Packet::new(Command::Push, 42)
                }
                .to_bytes();
                let mut got = BytesMut::from(&b"queued"[..]);
                let prepared = Prepared::new(content.clone(), threshold);
                encode_sealed(
                    &mut got,
                    Command::Push,
                    42,
                    flags::BIZ_ACK,
                    &prepared,
                    cipher,
                )
                .expect("encode");
                assert_eq!(&got[..6], b"queued");
                assert_eq!(
                    got[6..],
                    want[..],
                    "cipher {} content {} threshold {threshold}",
                    cipher.is_some(),
                    content.len()
                );
                assert_eq!(prepared.plain(), &content);
            }
        }
    }
}
