//! zlib body compression (spec §1.6), bounded on inflate (quirk Q28).
//!
//! MPush uses Java's `DeflaterOutputStream` / `InflaterInputStream`: the zlib container
//! (RFC 1950, header `78 9c`), not raw deflate and not gzip.

use std::io::{Read as _, Write as _};

use flate2::Compression;
use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;

use super::ProtocolError;

/// Compresses `data` into a zlib stream at the default level (what Java's `Deflater` produces).
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut encoder = ZlibEncoder::new(
        Vec::with_capacity(data.len() / 2 + 16),
        Compression::default(),
    );
    // Writing into a Vec cannot fail, so neither can the encoder.
    encoder
        .write_all(data)
        .expect("zlib into a Vec is infallible");
    encoder.finish().expect("zlib into a Vec is infallible")
}

/// Inflates a zlib stream, producing at most `max_len` bytes.
///
/// Output is read through a `max_len + 1` limit, so a zip bomb costs at most about `max_len`
/// bytes of memory before it is rejected. Trailing bytes after the end of the stream are
/// ignored, as Java's `InflaterInputStream` does.
///
/// # Errors
/// [`ProtocolError::InflateTooLarge`] if the stream inflates beyond `max_len` bytes;
/// [`ProtocolError::Inflate`] if it is corrupt or truncated.
pub fn decompress(data: &[u8], max_len: usize) -> Result<Vec<u8>, ProtocolError> {
    let limit = u64::try_from(max_len).unwrap_or(u64::MAX).saturating_add(1);
    // Typical bodies inflate a few times; never pre-allocate beyond the limit.
    let mut out = Vec::with_capacity(data.len().saturating_mul(4).min(max_len.saturating_add(1)));
    ZlibDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| ProtocolError::Inflate)?;
    if out.len() > max_len {
        return Err(ProtocolError::InflateTooLarge(max_len));
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vector_18_5_zlib() {
        let stream = hex::decode("789c4b4ca43d00007a4725e5").unwrap();
        assert_eq!(decompress(&stream, 1024).unwrap(), vec![b'a'; 100]);
        let ours = compress(&[b'a'; 100]);
        assert_eq!(&ours[..2], &[0x78, 0x9c]);
        assert_eq!(decompress(&ours, 100).unwrap(), vec![b'a'; 100]);
    }

    #[test]
    fn exact_limit_is_accepted_one_more_is_not() {
        let stream = compress(&[7u8; 1000]);
        assert_eq!(decompress(&stream, 1000).unwrap().len(), 1000);
        assert!(matches!(
            decompress(&stream, 999),
            Err(ProtocolError::InflateTooLarge(999))
        ));
    }

    #[test]
    fn zip_bomb_is_rejected() {
        let bomb = compress(&vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 64 * 1024);
        assert!(matches!(
            decompress(&bomb, 64 * 1024),
            Err(ProtocolError::InflateTooLarge(65536))
        ));
    }

    #[test]
    fn garbage_and_truncation_are_inflate_errors() {
        assert!(matches!(
            decompress(b"definitely not zlib", 1024),
            Err(ProtocolError::Inflate)
        ));
        assert!(matches!(decompress(&[], 1024), Err(ProtocolError::Inflate)));
        let stream = compress(b"some body that is long enough to matter, some body");
        for cut in [1, 2, 5, stream.len() - 1] {
            assert!(
                matches!(
                    decompress(&stream[..cut], 1024),
                    Err(ProtocolError::Inflate)
                ),
                "cut at {cut}"
            );
        }
        // Raw deflate (no zlib header) is not accepted.
        assert!(matches!(
            decompress(&stream[2..], 1024),
            Err(ProtocolError::Inflate)
        ));
    }

    #[test]
    fn empty_input_round_trips() {
        assert_eq!(decompress(&compress(&[]), 0).unwrap(), Vec::<u8>::new());
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let stream = compress(&data);
            prop_assert_eq!(decompress(&stream, data.len()).unwrap(), data);
        }

        #[test]
        fn arbitrary_input_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decompress(&data, 4096);
        }
    }
}
