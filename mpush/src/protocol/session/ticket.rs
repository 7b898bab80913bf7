//! Fast-reconnect ticket and the reusable-session cache value (spec §4.3 step 6, §5).
//!
//! The cache value format is shared with Java servers in the same cluster, so it is written
//! byte for byte as MPush writes it, including its comma-separated weakness (quirk Q12).

use std::fmt;

use md5::{Digest as _, Md5};

use crate::protocol::crypto::AES_KEY_LEN;

/// The literal MPush writes for a null field.
const NULL: &str = "null";

/// The fast-reconnect ticket (HandshakeOk `sessionId`): lowercase hex MD5 of
/// UTF-8(`device_id` + decimal `now_millis`).
pub fn make_ticket(device_id: &str, now_millis: i64) -> String {
    let mut md5 = Md5::new();
    md5.update(device_id.as_bytes());
    md5.update(now_millis.to_string().as_bytes());
    hex::encode(md5.finalize())
}

pub use crate::protocol::keys::session_cache_key;

/// Whether a handshake field can be stored in the cache value: a comma would split it into
/// extra parts and make the entry undecodable (quirk Q12), so the server can refuse it upfront.
pub fn is_wire_safe(field: &str) -> bool {
    !field.contains(',')
}

/// What a fast reconnect restores: the client description and the AES session parameters.
#[derive(Clone, PartialEq, Eq)]
pub struct ReusableSession {
    /// Client OS name (drives the client type).
    pub os_name: Option<String>,
    /// Client OS version.
    pub os_version: Option<String>,
    /// Client SDK version.
    pub client_version: Option<String>,
    /// Device id the ticket was issued to.
    pub device_id: String,
    /// AES session key (clientKey XOR serverKey).
    pub session_key: [u8; AES_KEY_LEN],
    /// AES IV of the session.
    pub iv: [u8; AES_KEY_LEN],
}

impl fmt::Debug for ReusableSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReusableSession")
            .field("os_name", &self.os_name)
            .field("os_version", &self.os_version)
            .field("client_version", &self.client_version)
            .field("device_id", &self.device_id)
            .field("session_key", &"<redacted>")
            .field("iv", &hex::encode(self.iv))
            .finish()
    }
}

impl ReusableSession {
    /// The cache value: `osName,osVersion,clientVersion,deviceId,<key>,<iv>`, key and iv as 16
    /// signed decimal bytes joined by `|`, a missing field as the literal `null`.
    pub fn encode(&self) -> String {
        let opt = |v: &Option<String>| v.as_deref().unwrap_or(NULL).to_owned();
        [
            opt(&self.os_name),
            opt(&self.os_version),
            opt(&self.client_version),
            self.device_id.clone(),
            encode_bytes(&self.session_key),
            encode_bytes(&self.iv),
        ]
        .join(",")
    }

    /// Parses a cache value; `None` (treated as "session expired") unless it has exactly six
    /// comma-separated parts and key and iv have exactly 16 `i8` values each.
    pub fn decode(s: &str) -> Option<Self> {
        let parts: Vec<&str> = s.split(',').collect();
        let [os_name, os_version, client_version, device_id, key, iv] = parts.as_slice() else {
            return None;
        };
        let opt = |v: &str| (v != NULL).then(|| v.to_owned());
        Some(Self {
            os_name: opt(os_name),
            os_version: opt(os_version),
            client_version: opt(client_version),
            device_id: (*device_id).to_owned(),
            session_key: decode_bytes(key)?,
            iv: decode_bytes(iv)?,
        })
    }
}

fn encode_bytes(bytes: &[u8; AES_KEY_LEN]) -> String {
    // Java bytes are signed: render 0xF2 as -14.
    bytes
        .iter()
        .map(|&b| i8::from_ne_bytes([b]).to_string())
        .collect::<Vec<_>>()
        .join("|")
}

fn decode_bytes(s: &str) -> Option<[u8; AES_KEY_LEN]> {
    let mut out = [0u8; AES_KEY_LEN];
    let mut parts = s.split('|');
    for slot in &mut out {
        let [b] = parts.next()?.parse::<i8>().ok()?.to_ne_bytes();
        *slot = b;
    }
    parts.next().is_none().then_some(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const VECTOR: &str = "android,6.0,2.0,860880020709964,7|-14|5|111|32|23|84|40|117|80|-17|-31|68|-30|-63|-94,29|46|49|-108|-105|-92|87|77|85|-82|-94|33|83|-109|55|20";

    fn arr(s: &str) -> [u8; 16] {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    fn vector_session() -> ReusableSession {
        ReusableSession {
            os_name: Some("android".into()),
            os_version: Some("6.0".into()),
            client_version: Some("2.0".into()),
            device_id: "860880020709964".into(),
            session_key: arr("07f2056f201754287550efe144e2c1a2"),
            iv: arr("1d2e319497a4574d55aea22153933714"),
        }
    }

    #[test]
    fn ticket_vector_18_3() {
        assert_eq!(
            make_ticket("860880020709964", 1_500_000_000_000),
            "257392dacc43bd0b8f586d8666dad2bb"
        );
    }

    #[test]
    fn cache_key() {
        assert_eq!(
            session_cache_key("257392dacc43bd0b8f586d8666dad2bb"),
            "mp:rs:257392dacc43bd0b8f586d8666dad2bb"
        );
    }

    #[test]
    fn vector_18_6_encode_and_decode() {
        assert_eq!(vector_session().encode(), VECTOR);
        assert_eq!(ReusableSession::decode(VECTOR), Some(vector_session()));
    }

    #[test]
    fn nulls_round_trip() {
        let s = ReusableSession {
            os_name: None,
            os_version: None,
            client_version: None,
            device_id: "d".into(),
            session_key: [0x80; 16],
            iv: [0x7F; 16],
        };
        let enc = s.encode();
        assert!(enc.starts_with("null,null,null,d,-128|"), "{enc}");
        assert_eq!(ReusableSession::decode(&enc), Some(s));
    }

    #[test]
    fn all_byte_values_round_trip() {
        for start in (0..=255u8).step_by(16) {
            let mut s = vector_session();
            s.session_key = std::array::from_fn(|i| start.wrapping_add(i as u8));
            s.iv = std::array::from_fn(|i| 255 - start.wrapping_add(i as u8));
            assert_eq!(ReusableSession::decode(&s.encode()), Some(s));
        }
    }

    #[test]
    fn malformed_values_are_expired() {
        let key = "1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|16";
        let key15 = "1|2|3|4|5|6|7|8|9|10|11|12|13|14|15";
        let key17 = format!("{key}|17");
        let key300 = "1|2|3|4|5|6|7|8|9|10|11|12|13|14|15|300";
        let cases = [
            String::new(),
            format!("a,b,c,{key},{key}"),
            format!("a,b,c,d,{key15},{key}"),
            format!("a,b,c,d,{key},{key15}"),
            format!("a,b,c,d,{key17},{key}"),
            format!("a,b,c,d,{key300},{key}"),
            format!("a,b,c,d,{key},x|2|3|4|5|6|7|8|9|10|11|12|13|14|15|16"),
            format!("a,b,c,d,e,{key},{key}"),
            format!("a,b,c,d,{key},"),
        ];
        for case in &cases {
            assert_eq!(ReusableSession::decode(case), None, "{case:?}");
        }
        assert!(ReusableSession::decode(&format!("a,b,c,d,{key},{key}")).is_some());
    }

    #[test]
    fn comma_fields_are_not_wire_safe() {
        assert!(is_wire_safe("android"));
        assert!(is_wire_safe(""));
        assert!(!is_wire_safe("Linux, x86"));
        // This is exactly why: a comma breaks decoding.
        let mut s = vector_session();
        s.os_version = Some("6,0".into());
        assert_eq!(ReusableSession::decode(&s.encode()), None);
    }

    #[test]
    fn debug_redacts_session_key() {
        let dbg = format!("{:?}", vector_session());
        assert!(dbg.contains("<redacted>"));
        assert!(!dbg.contains("07f2056f"), "{dbg}");
        assert!(!dbg.contains("[7, 242"), "{dbg}");
    }
}
