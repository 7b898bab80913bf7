//! Field encodings inside binary bodies (spec §1.7): big-endian integers, length-prefixed
//! byte arrays with the 0x7FFF escape, and UTF-8 strings where null and "" are the same.

use bytes::BufMut;

use super::ProtocolError;

/// Lengths at or above this use the escape: `7F FF` then an i32 of the remainder.
const LEN_ESCAPE: usize = 0x7FFF;

/// Writes fields in wire order.
#[derive(Debug, Default)]
pub struct FieldWriter {
    // A `Vec`, not a `BytesMut`: `finish` hands it over without a copy.
    buf: Vec<u8>,
}

impl FieldWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A signed byte.
    pub fn put_i8(&mut self, v: i8) -> &mut Self {
        self.buf.put_i8(v);
        self
    }

    /// A big-endian i32.
    pub fn put_i32(&mut self, v: i32) -> &mut Self {
        self.buf.put_i32(v);
        self
    }

    /// A big-endian i64.
    pub fn put_i64(&mut self, v: i64) -> &mut Self {
        self.buf.put_i64(v);
        self
    }

    /// A byte array; `None` and empty are both written as `00 00`.
    pub fn put_bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        let v = v.unwrap_or_default();
        if v.len() < LEN_ESCAPE {
            // < 0x7FFF fits in i16.
            self.buf.put_i16(v.len() as i16);
        } else {
            self.buf.put_i16(LEN_ESCAPE as i16);
            self.buf
                .put_i32(i32::try_from(v.len() - LEN_ESCAPE).unwrap_or(i32::MAX));
        }
        self.buf.put_slice(v);
        self
    }

    /// A UTF-8 string; `None` and "" are both written as `00 00`.
    pub fn put_string(&mut self, v: Option<&str>) -> &mut Self {
        self.put_bytes(v.map(str::as_bytes))
    }

    /// The encoded body.
    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields in wire order from a body; every read is bounds-checked.
#[derive(Debug)]
pub struct FieldReader<'a> {
    data: &'a [u8],
}

impl<'a> FieldReader<'a> {
    /// Reads from `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], ProtocolError> {
        if self.data.len() < n {
            return Err(ProtocolError::Truncated(field));
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Ok(head)
    }

    /// A signed byte.
    pub fn get_i8(&mut self, field: &'static str) -> Result<i8, ProtocolError> {
        Ok(self.take(1, field)?[0] as i8)
    }

    /// A big-endian i16.
    pub fn get_i16(&mut self, field: &'static str) -> Result<i16, ProtocolError> {
        let b = self.take(2, field)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian i32.
    pub fn get_i32(&mut self, field: &'static str) -> Result<i32, ProtocolError> {
        let b = self.take(4, field)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A big-endian i64.
    pub fn get_i64(&mut self, field: &'static str) -> Result<i64, ProtocolError> {
        let b = self.take(8, field)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(i64::from_be_bytes(a))
    }

    /// A byte array; a zero length decodes to `None` (as in Java).
    pub fn get_bytes(&mut self, field: &'static str) -> Result<Option<Vec<u8>>, ProtocolError> {
        let short = self.get_i16(field)?;
        let mut len = usize::try_from(short).map_err(|_| ProtocolError::InvalidField {
            field,
            reason: format!("negative length {short}"),
        })?;
        if len == LEN_ESCAPE {
            let extra = self.get_i32(field)?;
            let extra = usize::try_from(extra).map_err(|_| ProtocolError::InvalidField {
                field,
                reason: format!("negative extended length {extra}"),
            })?;
            len += extra;
        }
        if len == 0 {
            return Ok(None);
        }
        Ok(Some(self.take(len, field)?.to_vec()))
    }

    /// A UTF-8 string; empty decodes to `None`. Invalid UTF-8 is replaced with U+FFFD,
    /// as Java's `new String(bytes, UTF_8)` does.
    pub fn get_string(&mut self, field: &'static str) -> Result<Option<String>, ProtocolError> {
        Ok(self.get_bytes(field)?.map(|b| match String::from_utf8(b) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }))
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.data.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn length_escape_at_and_above_0x7fff() {
        for len in [0usize, 1, 0x7FFE, 0x7FFF, 0x8000, 70_000] {
            let data = vec![7u8; len];
            let mut w = FieldWriter::new();
            w.put_bytes(Some(&data));
            let enc = w.finish();
            if len >= 0x7FFF {
                assert_eq!(&enc[..2], &[0x7F, 0xFF]);
                assert_eq!(enc.len(), 6 + len);
                assert_eq!(
                    i32::from_be_bytes([enc[2], enc[3], enc[4], enc[5]]) as usize,
                    len - 0x7FFF
                );
            } else {
                assert_eq!(enc.len(), 2 + len);
            }
            let got = FieldReader::new(&enc).get_bytes("x").unwrap();
            assert_eq!(got, if len == 0 { None } else { Some(data) });
        }
    }

    #[test]
    fn null_and_empty_strings_are_the_same() {
        let mut w = FieldWriter::new();
        w.put_string(None)
            .put_string(Some(""))
            .put_string(Some("é"));
        let enc = w.finish();
        assert_eq!(enc, vec![0, 0, 0, 0, 0, 2, 0xC3, 0xA9]);
        let mut r = FieldReader::new(&enc);
        assert_eq!(r.get_string("a").unwrap(), None);
        assert_eq!(r.get_string("b").unwrap(), None);
        assert_eq!(r.get_string("c").unwrap().as_deref(), Some("é"));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn rejects_negative_and_truncated_lengths() {
        assert!(FieldReader::new(&[0x80, 0x00]).get_bytes("x").is_err());
        assert!(
            FieldReader::new(&[0x7F, 0xFF, 0xFF, 0, 0, 0])
                .get_bytes("x")
                .is_err()
        );
        assert!(matches!(
            FieldReader::new(&[0x00, 0x05, 1, 2]).get_bytes("x"),
            Err(ProtocolError::Truncated("x"))
        ));
        assert!(FieldReader::new(&[0x00]).get_i32("x").is_err());
    }
}
