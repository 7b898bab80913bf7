//! `mp.security`: the RSA key pair of the handshake and the AES session key length.

use base64::Engine as _;
use serde::Deserialize;

use super::de;
use super::{ConfigError, invalid};

/// `mp.security`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
pub struct SecurityConfig {
    /// `private-key`: base64 PKCS#8 (spec §4.6 default).
    #[serde(deserialize_with = "de::string")]
    pub private_key: String,
    /// `public-key`: base64 X.509 SubjectPublicKeyInfo.
    #[serde(deserialize_with = "de::string")]
    pub public_key: String,
    /// `aes-key-length`: must be 16.
    #[serde(deserialize_with = "de::int")]
    pub aes_key_length: usize,
}

/// Keys of MPush's `mp.security` that mpush-rs accepts without using.
pub(super) const SECURITY_UNUSED: &[&str] = &["ras-key-length"];

/// MPush's default public key (spec §4.6).
pub const DEFAULT_PUBLIC_KEY: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCghPCWCobG8nTD24juwSVataW7iViRxcTkey/B792VZEhuHjQvA3cAJgx2Lv8GnX8NIoShZtoCg3Cx6ecs+VEPD2fBcg2L4JK7xldGpOJ3ONEAyVsLOttXZtNXvyDZRijiErQALMTorcgi79M5uVX9/jMv2Ggb2XAeZhlLD28fHwIDAQAB";
/// MPush's default private key (spec §4.6; non-CRT, zeroed fields).
pub const DEFAULT_PRIVATE_KEY: &str = "MIIBNgIBADANBgkqhkiG9w0BAQEFAASCASAwggEcAgEAAoGBAKCE8JYKhsbydMPbiO7BJVq1pbuJWJHFxOR7L8Hv3ZVkSG4eNC8DdwAmDHYu/wadfw0ihKFm2gKDcLHp5yz5UQ8PZ8FyDYvgkrvGV0ak4nc40QDJWws621dm01e/INlGKOIStAAsxOityCLv0zm5Vf3+My/YaBvZcB5mGUsPbx8fAgEAAoGAAy0+WanRqwRHXUzt89OsupPXuNNqBlCEqgTqGAt4Nimq6Ur9u2R1KXKXUotxjp71Ubw6JbuUWvJg+5Rmd9RjT0HOUEQF3rvzEepKtaraPhV5ejEIrB+nJWNfGye4yzLdfEXJBGUQzrG+wNe13izfRNXI4dN/6Q5npzqaqv0E1CkCAQACAQACAQACAQACAQA=";

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            private_key: DEFAULT_PRIVATE_KEY.to_string(),
            public_key: DEFAULT_PUBLIC_KEY.to_string(),
            aes_key_length: 16,
        }
    }
}

impl SecurityConfig {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.aes_key_length != 16 {
            return Err(invalid(
                "mp.security.aes-key-length",
                format!(
                    "must be 16 (AES-128, the only length MPush clients use), got {}",
                    self.aes_key_length
                ),
            ));
        }
        for (key, value) in [
            ("mp.security.private-key", &self.private_key),
            ("mp.security.public-key", &self.public_key),
        ] {
            if value.is_empty() {
                return Err(invalid(key, "must not be empty"));
            }
            if let Err(e) = base64::engine::general_purpose::STANDARD.decode(value) {
                return Err(invalid(key, format!("is not valid base64: {e}")));
            }
        }
        Ok(())
    }
}
