//! The identity a handshake declares (device id, OS name and version, client version), held
//! in one allocation.
//!
//! Every session keeps these four strings for its lifetime. As four `Option<String>` they
//! took 96 bytes of the connection and up to four heap chunks; here they are 32 bytes and one
//! chunk (docs/PERFORMANCE.md).

use std::fmt;

/// A handshake's device id and optional OS name, OS version and client version.
#[derive(Clone, PartialEq, Eq)]
pub struct Identity {
    /// The four fields one after the other (absent ones empty).
    text: Box<str>,
    /// Where the device id, the OS name and the OS version end in `text`.
    ends: [u32; 3],
    /// Which optional fields are present: bit 0 OS name, 1 OS version, 2 client version.
    present: u8,
}

impl Identity {
    /// Packs the four fields (packets are bounded far below the 4 GiB the offsets index).
    pub fn new(
        device_id: &str,
        os_name: Option<&str>,
        os_version: Option<&str>,
        client_version: Option<&str>,
    ) -> Self {
        let optional = [os_name, os_version, client_version];
        let mut text = String::with_capacity(
            device_id.len() + optional.iter().flatten().map(|s| s.len()).sum::<usize>(),
        );
        text.push_str(device_id);
        let mut ends = [0u32; 3];
        let mut present = 0u8;
        for (i, field) in optional.iter().enumerate() {
            // Field i + 1 starts where field i ended.
            if let Some(end) = ends.get_mut(i) {
                *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
            }
            if let Some(v) = field {
                present |= 1 << i;
                text.push_str(v);
            }
        }
        Self {
            text: text.into_boxed_str(),
            ends,
            present,
        }
    }

    /// Field `i`: 0 the device id, 1–3 the optional ones.
    fn field(&self, i: usize) -> &str {
        let at = |k: usize| self.ends.get(k).map_or(self.text.len(), |&e| e as usize);
        let start = if i == 0 { 0 } else { at(i - 1) };
        self.text.get(start..at(i)).unwrap_or_default()
    }

    fn optional(&self, i: usize) -> Option<&str> {
        (self.present & (1 << i) != 0).then(|| self.field(i + 1))
    }

    /// The device id.
    pub fn device_id(&self) -> &str {
        self.field(0)
    }

    /// The OS name, if the handshake gave one.
    pub fn os_name(&self) -> Option<&str> {
        self.optional(0)
    }

    /// The OS version, if the handshake gave one.
    pub fn os_version(&self) -> Option<&str> {
        self.optional(1)
    }

    /// The client version, if the handshake gave one.
    pub fn client_version(&self) -> Option<&str> {
        self.optional(2)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("device_id", &self.device_id())
            .field("os_name", &self.os_name())
            .field("os_version", &self.os_version())
            .field("client_version", &self.client_version())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_come_back_as_given() {
        type Case<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
        let cases: [Case<'_>; 6] = [
            ("dev-1", Some("Android"), Some("4.1.2"), Some("1.0.0")),
            ("dev-2", None, None, None),
            ("dev-3", Some(""), None, Some("2")),
            ("", Some("iOS"), Some(""), None),
            ("设备", Some("ホ"), Some("ü"), Some("✓")),
            ("d", None, Some("v"), None),
        ];
        for (d, n, v, c) in cases {
            let id = Identity::new(d, n, v, c);
            assert_eq!(
                (
                    id.device_id(),
                    id.os_name(),
                    id.os_version(),
                    id.client_version()
                ),
                (d, n, v, c),
                "{id:?}"
            );
        }
    }

    #[test]
    fn is_small() {
        assert!(std::mem::size_of::<Option<Identity>>() <= 32);
    }
}
