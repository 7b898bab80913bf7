//! Body ciphers: chunked RSA PKCS#1 v1.5 for the handshake and AES-128-CBC for everything after
//! it (spec §4.1, quirk Q2).
//!
//! Both are wire-compatible with MPush's Java `RSAUtils` / `AESUtils`, including their weaknesses:
//! 1024-bit RSA with PKCS#1 v1.5 padding, and one fixed IV reused for every packet of a session.
//! Neither authenticates the data, so callers must validate the structure of every decrypted body.

use std::fmt;
use std::sync::Arc;

use aes::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use base64::Engine as _;
use rsa::pkcs8::der::Decode as _;
use rsa::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
use rsa::traits::PublicKeyParts as _;
use rsa::{BoxedUint, PrivateKey, PublicKey};

use super::ProtocolError;

/// MPush's default public key (spec §4.6).
pub const DEFAULT_PUBLIC_KEY: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCghPCWCobG8nTD24juwSVataW7iViRxcTkey/B792VZEhuHjQvA3cAJgx2Lv8GnX8NIoShZtoCg3Cx6ecs+VEPD2fBcg2L4JK7xldGpOJ3ONEAyVsLOttXZtNXvyDZRijiErQALMTorcgi79M5uVX9/jMv2Ggb2XAeZhlLD28fHwIDAQAB";
/// MPush's default private key (spec §4.6; non-CRT, zeroed fields).
pub const DEFAULT_PRIVATE_KEY: &str = "MIIBNgIBADANBgkqhkiG9w0BAQEFAASCASAwggEcAgEAAoGBAKCE8JYKhsbydMPbiO7BJVq1pbuJWJHFxOR7L8Hv3ZVkSG4eNC8DdwAmDHYu/wadfw0ihKFm2gKDcLHp5yz5UQ8PZ8FyDYvgkrvGV0ak4nc40QDJWws621dm01e/INlGKOIStAAsxOityCLv0zm5Vf3+My/YaBvZcB5mGUsPbx8fAgEAAoGAAy0+WanRqwRHXUzt89OsupPXuNNqBlCEqgTqGAt4Nimq6Ur9u2R1KXKXUotxjp71Ubw6JbuUWvJg+5Rmd9RjT0HOUEQF3rvzEepKtaraPhV5ejEIrB+nJWNfGye4yzLdfEXJBGUQzrG+wNe13izfRNXI4dN/6Q5npzqaqv0E1CkCAQACAQACAQACAQACAQA=";

/// Length of the AES key, the IV, the client key and the server key (`mp.security.aes-key-length`).
pub const AES_KEY_LEN: usize = 16;

/// PKCS#1 v1.5 type-2 padding overhead: each RSA block carries at most `k - 11` plaintext bytes.
const PKCS1_OVERHEAD: usize = 11;

type Aes128CbcEnc = cbc::Encryptor<aes::Aes128>;
type Aes128CbcDec = cbc::Decryptor<aes::Aes128>;

/// An RSA key pair as configured by `mp.security.private-key` / `public-key`.
///
/// Servers hold both keys; clients hold only the public key.
pub struct RsaKeys {
    private: Option<PrivateKey>,
    public: PublicKey,
}

impl fmt::Debug for RsaKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only non-secret facts: key material must never reach logs.
        f.debug_struct("RsaKeys")
            .field("bits", &(self.public.size() * 8))
            .field("has_private", &self.private.is_some())
            .finish()
    }
}

impl RsaKeys {
    /// Loads a key pair from base64 DER: PKCS#8 private key and X.509 SubjectPublicKeyInfo
    /// public key (whitespace inside the base64 is ignored).
    ///
    /// Keys from `openssl genrsa` + `pkcs8 -topk8` decode strictly. MPush's default private key
    /// (spec §4.6) holds only `n` and `d` with every other field zeroed, which strict decoding
    /// rejects; it is then rebuilt from `n`, `d` and the public exponent of `public_b64`.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidKey`] if either key does not decode or the two keys do not belong
    /// together.
    pub fn from_base64(private_b64: &str, public_b64: &str) -> Result<Self, ProtocolError> {
        let public = decode_public(public_b64)?;
        let private_der = decode_b64(private_b64, "private")?;
        let private = match PrivateKey::from_pkcs8_der(&private_der) {
            Ok(key) => key,
            Err(strict) => rebuild_private(&private_der, &public).map_err(|fallback| {
                ProtocolError::InvalidKey(format!(
                    "private key is not a usable PKCS#8 RSA key ({strict}; {fallback})"
                ))
            })?,
        };
        let keys = Self {
            private: Some(private),
            public,
        };
        keys.check_pair()?;
        Ok(keys)
    }

    /// Loads only a public key (base64 X.509 SubjectPublicKeyInfo), as clients do.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidKey`] if the key does not decode.
    pub fn public_only(public_b64: &str) -> Result<Self, ProtocolError> {
        Ok(Self {
            private: None,
            public: decode_public(public_b64)?,
        })
    }

    /// Checks that the private key (if any) belongs to the public key, so that a wrong
    /// configuration fails at startup instead of at the first handshake.
    ///
    /// # Errors
    /// [`ProtocolError::InvalidKey`] if modulus or public exponent differ.
    pub fn check_pair(&self) -> Result<(), ProtocolError> {
        match &self.private {
            Some(private) if private.n() != self.public.n() || private.e() != self.public.e() => {
                Err(ProtocolError::InvalidKey(
                    "private key does not match the public key (different modulus or exponent)"
                        .to_string(),
                ))
            }
            _ => Ok(()),
        }
    }

    /// Whether the private key is present (server side).
    pub fn has_private(&self) -> bool {
        self.private.is_some()
    }

    /// The modulus size in bytes (`k`; 128 for 1024-bit keys).
    pub fn modulus_len(&self) -> usize {
        self.public.size()
    }
}

fn decode_b64(b64: &str, which: &str) -> Result<Vec<u8>, ProtocolError> {
    // Operators paste keys from PEM files; tolerate line breaks and stray spaces.
    let compact: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    base64::engine::general_purpose::STANDARD
        .decode(compact)
        .map_err(|e| ProtocolError::InvalidKey(format!("{which} key is not valid base64: {e}")))
}

fn decode_public(public_b64: &str) -> Result<PublicKey, ProtocolError> {
    let der = decode_b64(public_b64, "public")?;
    PublicKey::from_public_key_der(&der).map_err(|e| {
        ProtocolError::InvalidKey(format!("public key is not an X.509 RSA public key: {e}"))
    })
}

/// Rebuilds a Java-style non-CRT private key (only `n` and `d` set) using `e` from the public key.
fn rebuild_private(der: &[u8], public: &PublicKey) -> Result<PrivateKey, String> {
    let info = rsa::pkcs8::PrivateKeyInfoRef::from_der(der).map_err(|e| e.to_string())?;
    if info.algorithm.oid != rsa::pkcs1::ALGORITHM_OID {
        return Err("not an rsaEncryption key".to_string());
    }
    let inner =
        rsa::pkcs1::RsaPrivateKeyRef::try_from(info.private_key).map_err(|e| e.to_string())?;
    let n_bytes = inner.modulus.as_bytes();
    let bits = u32::try_from(n_bytes.len() * 8).map_err(|_| "modulus too large".to_string())?;
    let n = BoxedUint::from_be_slice(n_bytes, bits).map_err(|e| e.to_string())?;
    let d = BoxedUint::from_be_slice(inner.private_exponent.as_bytes(), bits)
        .map_err(|e| e.to_string())?;
    // Empty primes make rsa recover p and q from (n, e, d) (NIST SP 800-56B, ~0.6 ms).
    PrivateKey::from_components(n, public.e().clone(), d, vec![]).map_err(|e| e.to_string())
}

/// Chunked RSA/ECB/PKCS1Padding, exactly as MPush's `RSAUtils` (spec §4.1).
///
/// Private-key decryption costs about 0.7 ms per 128-byte block (constant-time big integers);
/// async callers should run [`RsaCipher::decrypt`] on a blocking pool (`spawn_blocking`) rather
/// than on a runtime worker.
#[derive(Debug, Clone)]
pub struct RsaCipher {
    keys: Arc<RsaKeys>,
}

impl RsaCipher {
    /// A cipher over shared keys.
    pub fn new(keys: Arc<RsaKeys>) -> Self {
        Self { keys }
    }

    /// The underlying keys.
    pub fn keys(&self) -> &Arc<RsaKeys> {
        &self.keys
    }

    /// Encrypts with the public key: `k - 11`-byte chunks (117 for 1024-bit), each padded to one
    /// `k`-byte block, blocks concatenated. Empty input gives empty output (as in Java).
    ///
    /// # Errors
    /// [`ProtocolError::Encrypt`] if the RSA operation fails (e.g. the OS RNG fails).
    pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let k = self.keys.modulus_len();
        let chunk = k.saturating_sub(PKCS1_OVERHEAD).max(1);
        let mut out = Vec::with_capacity(plain.len().div_ceil(chunk) * k);
        for block in plain.chunks(chunk) {
            let enc = self
                .keys
                .public
                .pkcs1v15_encrypt(block)
                .map_err(|e| ProtocolError::Encrypt(e.to_string()))?;
            out.extend_from_slice(&enc);
        }
        Ok(out)
    }

    /// Decrypts `k`-byte blocks with the private key and concatenates the results.
    ///
    /// rsa 0.10 uses implicit rejection: a tampered block usually yields `Ok` with synthetic
    /// junk rather than an error, so the caller must validate the decoded body.
    ///
    /// # Errors
    /// [`ProtocolError::Decrypt`] if there is no private key, the length is not a multiple of
    /// `k`, or a block is rejected.
    pub fn decrypt(&self, cipher: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        let private = self.keys.private.as_ref().ok_or(ProtocolError::Decrypt)?;
        let k = self.keys.modulus_len();
        if k == 0 || !cipher.len().is_multiple_of(k) {
            return Err(ProtocolError::Decrypt);
        }
        let mut out = Vec::with_capacity(cipher.len());
        for block in cipher.chunks(k) {
            let plain = private
                .pkcs1v15_decrypt(block)
                .map_err(|_| ProtocolError::Decrypt)?;
            out.extend_from_slice(&plain);
        }
        Ok(out)
    }
}

/// AES-128-CBC with PKCS#7 padding (Java `AES/CBC/PKCS5Padding`).
///
/// Every call starts a fresh CBC chain from the same IV (quirk Q2: the IV is fixed for the
/// whole session and both directions), so equal plaintexts give equal ciphertexts.
#[derive(Clone, PartialEq, Eq)]
pub struct AesCipher {
    key: [u8; AES_KEY_LEN],
    iv: [u8; AES_KEY_LEN],
}

impl fmt::Debug for AesCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AesCipher")
            .field("key", &"<redacted>")
            .field("iv", &hex::encode(self.iv))
            .finish()
    }
}

impl AesCipher {
    /// A cipher with the given key and IV.
    pub fn new(key: [u8; AES_KEY_LEN], iv: [u8; AES_KEY_LEN]) -> Self {
        Self { key, iv }
    }

    /// Encrypts one packet body (output length: next multiple of 16 above `plain.len()`).
    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        Aes128CbcEnc::new(&self.key.into(), &self.iv.into()).encrypt_padded_vec::<Pkcs7>(plain)
    }

    /// The ciphertext length of a `plain_len`-byte body (PKCS#7 always adds 1–16 bytes).
    pub fn encrypted_len(plain_len: usize) -> usize {
        (plain_len / 16 + 1) * 16
    }

    /// Encrypts `plain` and appends the ciphertext ([`AesCipher::encrypted_len`] bytes) to
    /// `dst`, in place: no intermediate buffer (the push path writes straight into a
    /// connection's outbound buffer).
    ///
    /// # Errors
    /// [`ProtocolError::Encrypt`] if padding fails (it cannot: the room is reserved here);
    /// `dst` is then left as it was.
    pub fn encrypt_append(
        &self,
        plain: &[u8],
        dst: &mut bytes::BytesMut,
    ) -> Result<(), ProtocolError> {
        let start = dst.len();
        let len = Self::encrypted_len(plain.len());
        dst.reserve(len);
        dst.extend_from_slice(plain);
        dst.resize(start + len, 0);
        match Aes128CbcEnc::new(&self.key.into(), &self.iv.into())
            .encrypt_padded::<Pkcs7>(&mut dst[start..], plain.len())
        {
            Ok(_) => Ok(()),
            Err(e) => {
                dst.truncate(start);
                Err(ProtocolError::Encrypt(e.to_string()))
            }
        }
    }

    /// Decrypts one packet body.
    ///
    /// # Errors
    /// [`ProtocolError::Decrypt`] for a wrong length or bad padding, without any detail (no
    /// padding oracle).
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        Aes128CbcDec::new(&self.key.into(), &self.iv.into())
            .decrypt_padded_vec::<Pkcs7>(data)
            .map_err(|_| ProtocolError::Decrypt)
    }

    /// The AES key.
    pub fn key(&self) -> &[u8; AES_KEY_LEN] {
        &self.key
    }

    /// The IV.
    pub fn iv(&self) -> &[u8; AES_KEY_LEN] {
        &self.iv
    }
}

/// The cipher a connection currently uses for CRYPTO-flagged bodies (spec §4.2).
#[derive(Debug, Clone)]
pub enum Cipher {
    /// Before the handshake: RSA (server decrypts, client encrypts).
    Rsa(Arc<RsaCipher>),
    /// After the handshake: AES with the client key (HandshakeOk only) or the session key.
    Aes(AesCipher),
}

impl Cipher {
    /// Encrypts a body.
    ///
    /// # Errors
    /// [`ProtocolError::Encrypt`] if RSA encryption fails; AES cannot fail.
    pub fn encrypt(&self, plain: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        match self {
            Cipher::Rsa(rsa) => rsa.encrypt(plain),
            Cipher::Aes(aes) => Ok(aes.encrypt(plain)),
        }
    }

    /// Decrypts a body.
    ///
    /// # Errors
    /// [`ProtocolError::Decrypt`] on any failure.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, ProtocolError> {
        match self {
            Cipher::Rsa(rsa) => rsa.decrypt(data),
            Cipher::Aes(aes) => aes.decrypt(data),
        }
    }
}

/// Derives the session key: byte-wise XOR of client and server keys (spec §4.1; the Java
/// "mixing" with its parity test reduces to XOR in both branches).
pub fn mix_keys(
    client_key: &[u8; AES_KEY_LEN],
    server_key: &[u8; AES_KEY_LEN],
) -> [u8; AES_KEY_LEN] {
    std::array::from_fn(|i| client_key[i] ^ server_key[i])
}

/// 16 bytes from a CSPRNG (rand's thread RNG, a ChaCha generator seeded from the OS), for
/// clientKey, iv and serverKey.
pub fn random_key() -> [u8; AES_KEY_LEN] {
    rand::random()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};

    fn h(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        hex::decode(s).unwrap()
    }

    fn arr(s: &str) -> [u8; 16] {
        h(s).try_into().unwrap()
    }

    const CLIENT_KEY: &str = "17e3177c3402423f6d49f5fa58ffdfbd";
    const SERVER_KEY: &str = "101112131415161718191a1b1c1d1e1f";
    const SESSION_KEY: &str = "07f2056f201754287550efe144e2c1a2";
    const IV: &str = "1d2e319497a4574d55aea22153933714";

    /// Encrypting into a buffer gives the same bytes as the `Vec` path, after what the
    /// buffer already held, for every length around the block size.
    #[test]
    fn aes_encrypt_append_matches_encrypt() {
        let c = AesCipher::new(
            arr("000102030405060708090a0b0c0d0e0f"),
            arr("0f0e0d0c0b0a09080706050403020100"),
        );
        for n in [0usize, 1, 15, 16, 17, 100, 1000] {
            let plain: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut dst = bytes::BytesMut::from(&b"head"[..]);
            c.encrypt_append(&plain, &mut dst).expect("encrypt");
            assert_eq!(&dst[..4], b"head");
            assert_eq!(dst[4..], c.encrypt(&plain)[..], "length {n}");
            assert_eq!(dst.len() - 4, AesCipher::encrypted_len(n));
        }
    }

    fn default_cipher() -> RsaCipher {
        let keys = RsaKeys::from_base64(DEFAULT_PRIVATE_KEY, DEFAULT_PUBLIC_KEY).unwrap();
        RsaCipher::new(Arc::new(keys))
    }

    /// rand 0.9's thread RNG speaks rand_core 0.9; rsa 0.10 wants rand_core 0.10's `TryCryptoRng`.
    struct BridgeRng;

    impl rsa::rand_core::TryRng for BridgeRng {
        type Error = std::convert::Infallible;
        fn try_next_u32(&mut self) -> Result<u32, Self::Error> {
            Ok(rand::random())
        }
        fn try_next_u64(&mut self) -> Result<u64, Self::Error> {
            Ok(rand::random())
        }
        fn try_fill_bytes(&mut self, dst: &mut [u8]) -> Result<(), Self::Error> {
            rand::Rng::fill(&mut rand::rng(), dst);
            Ok(())
        }
    }

    impl rsa::rand_core::TryCryptoRng for BridgeRng {}

    fn fresh_pair_b64() -> (String, String) {
        let key = PrivateKey::new(&mut BridgeRng, 1024).unwrap();
        let b64 = base64::engine::general_purpose::STANDARD;
        let private = b64.encode(key.to_pkcs8_der().unwrap().as_bytes());
        let public = b64.encode(key.to_public_key().to_public_key_der().unwrap().as_bytes());
        (private, public)
    }

    #[test]
    fn vector_18_1_rsa_handshake_decrypts() {
        let cipher = h(
            "1d8ee852a08ced40a55889a81d2109095478c236b82fb382b702dac2b5278e5c
            8df7af2bae49029b2043702e77f0faab87d4191c8c0638fefa93b55b9809ace4
            48185eca7f8483a366260bc946aa65b4caf55068b02c358b75a8a0ed7400c267
            f196fbc999aa48eead8b275087e197e40917e86a8c7fb3864790b1965009aaea",
        );
        let expected = h(
            "000f383630383830303230373039393634 0007416e64726f6964 0005342e312e32
            0005312e382e31 00101d2e319497a4574d55aea22153933714
            001017e3177c3402423f6d49f5fa58ffdfbd 0003a980 0003a980 0000000000000000",
        );
        assert_eq!(expected.len(), 92);
        let plain = default_cipher().decrypt(&cipher).unwrap();
        assert_eq!(plain, expected);
        let via_enum = Cipher::Rsa(Arc::new(default_cipher()));
        assert_eq!(via_enum.decrypt(&cipher).unwrap(), expected);
    }

    #[test]
    fn vector_18_2_key_mixing() {
        assert_eq!(
            mix_keys(&arr(CLIENT_KEY), &arr(SERVER_KEY)),
            arr(SESSION_KEY)
        );
    }

    #[test]
    fn vector_18_3_handshake_ok_encrypts() {
        let plain = h("0010101112131415161718191a1b1c1d1e1f 0002bf20 0020
            3235373339326461636334336264306238663538366438363636646164326262 0000015d441df400");
        assert_eq!(plain.len(), 64);
        let expected = h(
            "37002484d0bc0561c480a8074cd020caf326f52f78d7feda78ceca25cf1c5555
            f94fe90e39fd9265a05f7c6310e8154b6fa9433c92de1ac3fc277337401b6185
            e3af51af119997165fdee1f875042fdd",
        );
        let aes = AesCipher::new(arr(CLIENT_KEY), arr(IV));
        assert_eq!(aes.encrypt(&plain), expected);
        // Fresh chain per call: encrypting twice gives the same bytes.
        assert_eq!(aes.encrypt(&plain), expected);
        assert_eq!(aes.decrypt(&expected).unwrap(), plain);
        assert_eq!(Cipher::Aes(aes.clone()).encrypt(&plain).unwrap(), expected);
    }

    #[test]
    fn vector_18_4_bind_and_push_decrypt() {
        let aes = AesCipher::new(arr(SESSION_KEY), arr(IV));
        let bind = h("e29964e532fa9f553e8e20e140faf33fd09442bb78957c1ee88971c56ba8eb89");
        assert_eq!(
            aes.decrypt(&bind).unwrap(),
            h("0006757365722d310000000474616731")
        );
        let push = h("55fccd112d30e2ae63712ec67a077f5c8edc8e6cc83bb8190cbe329b86b5ccd3");
        assert_eq!(aes.decrypt(&push).unwrap(), br#"{"content":"hi"}"#);
        assert_eq!(aes.encrypt(br#"{"content":"hi"}"#), push);
    }

    #[test]
    fn rsa_round_trip_single_and_multi_block() {
        let cipher = default_cipher();
        let short = b"hello mpush".to_vec();
        let enc = cipher.encrypt(&short).unwrap();
        assert_eq!(enc.len(), 128);
        assert_eq!(cipher.decrypt(&enc).unwrap(), short);

        let long: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let enc = cipher.encrypt(&long).unwrap();
        // 300 bytes = 117 + 117 + 66 → three blocks.
        assert_eq!(enc.len(), 3 * 128);
        assert_eq!(cipher.decrypt(&enc).unwrap(), long);

        let exact: Vec<u8> = vec![0xAB; 117];
        assert_eq!(cipher.encrypt(&exact).unwrap().len(), 128);
        assert!(cipher.encrypt(&[]).unwrap().is_empty());
    }

    #[test]
    fn client_encrypts_server_decrypts() {
        let client = RsaCipher::new(Arc::new(RsaKeys::public_only(DEFAULT_PUBLIC_KEY).unwrap()));
        assert!(!client.keys().has_private());
        let enc = client.encrypt(b"handshake").unwrap();
        assert_eq!(default_cipher().decrypt(&enc).unwrap(), b"handshake");
        // A client has no private key.
        assert!(matches!(client.decrypt(&enc), Err(ProtocolError::Decrypt)));
    }

    #[test]
    fn rsa_wrong_key_or_tampered_never_yields_plaintext() {
        let (private, public) = fresh_pair_b64();
        let other = RsaCipher::new(Arc::new(RsaKeys::from_base64(&private, &public).unwrap()));
        let plain = b"secret handshake body".to_vec();
        let enc = default_cipher().encrypt(&plain).unwrap();
        // Implicit rejection: Ok(junk) is allowed, the plaintext is not.
        if let Ok(junk) = other.decrypt(&enc) {
            assert_ne!(junk, plain);
        }
        let mut tampered = enc.clone();
        tampered[5] ^= 0x40;
        if let Ok(junk) = default_cipher().decrypt(&tampered) {
            assert_ne!(junk, plain);
        }
    }

    #[test]
    fn rsa_bad_length_is_decrypt_error() {
        let cipher = default_cipher();
        assert!(matches!(
            cipher.decrypt(&[0u8; 127]),
            Err(ProtocolError::Decrypt)
        ));
        assert!(matches!(
            cipher.decrypt(&[0u8; 129]),
            Err(ProtocolError::Decrypt)
        ));
        // A block numerically ≥ n is rejected outright.
        assert!(matches!(
            cipher.decrypt(&[0xFFu8; 128]),
            Err(ProtocolError::Decrypt)
        ));
    }

    #[test]
    fn aes_garbage_and_wrong_length_fail() {
        let aes = AesCipher::new(arr(SESSION_KEY), arr(IV));
        for len in [0usize, 1, 15, 17, 31] {
            assert!(
                matches!(aes.decrypt(&vec![0x5A; len]), Err(ProtocolError::Decrypt)),
                "len {len}"
            );
        }
        // Valid length, but the padding of the last block is wrong.
        let mut ct = aes.encrypt(b"0123456789abcdef");
        let last = ct.len() - 1;
        ct[last] ^= 0xFF;
        assert!(matches!(aes.decrypt(&ct), Err(ProtocolError::Decrypt)));
    }

    #[test]
    fn aes_debug_hides_key() {
        let aes = AesCipher::new([0xAB; 16], [0x01; 16]);
        let dbg = format!("{aes:?}");
        assert!(!dbg.contains("abab"), "{dbg}");
        assert!(!dbg.contains("171"), "{dbg}");
        assert_eq!(aes.key(), &[0xAB; 16]);
        assert_eq!(aes.iv(), &[0x01; 16]);
        let keys = RsaKeys::from_base64(DEFAULT_PRIVATE_KEY, DEFAULT_PUBLIC_KEY).unwrap();
        let dbg = format!("{keys:?}");
        assert_eq!(dbg, "RsaKeys { bits: 1024, has_private: true }");
    }

    #[test]
    fn fresh_openssl_style_key_loads_strictly() {
        let (private, public) = fresh_pair_b64();
        let der = base64::engine::general_purpose::STANDARD
            .decode(&private)
            .unwrap();
        assert!(PrivateKey::from_pkcs8_der(&der).is_ok());
        let keys = RsaKeys::from_base64(&private, &public).unwrap();
        let cipher = RsaCipher::new(Arc::new(keys));
        let enc = cipher.encrypt(b"abc").unwrap();
        assert_eq!(cipher.decrypt(&enc).unwrap(), b"abc");
    }

    #[test]
    fn default_private_key_needs_the_fallback() {
        let der = base64::engine::general_purpose::STANDARD
            .decode(DEFAULT_PRIVATE_KEY)
            .unwrap();
        assert!(PrivateKey::from_pkcs8_der(&der).is_err());
        assert!(RsaKeys::from_base64(DEFAULT_PRIVATE_KEY, DEFAULT_PUBLIC_KEY).is_ok());
    }

    #[test]
    fn mismatched_pair_is_rejected() {
        let (private, public) = fresh_pair_b64();
        assert!(matches!(
            RsaKeys::from_base64(&private, DEFAULT_PUBLIC_KEY),
            Err(ProtocolError::InvalidKey(_))
        ));
        assert!(matches!(
            RsaKeys::from_base64(DEFAULT_PRIVATE_KEY, &public),
            Err(ProtocolError::InvalidKey(_))
        ));
    }

    #[test]
    fn invalid_keys_are_rejected() {
        for (private, public) in [
            ("not base64!!", DEFAULT_PUBLIC_KEY),
            (DEFAULT_PRIVATE_KEY, "%%%"),
            ("AAAA", DEFAULT_PUBLIC_KEY),
            (DEFAULT_PUBLIC_KEY, DEFAULT_PUBLIC_KEY),
            (DEFAULT_PRIVATE_KEY, DEFAULT_PRIVATE_KEY),
        ] {
            assert!(matches!(
                RsaKeys::from_base64(private, public),
                Err(ProtocolError::InvalidKey(_))
            ));
        }
        assert!(matches!(
            RsaKeys::public_only("@@"),
            Err(ProtocolError::InvalidKey(_))
        ));
    }

    #[test]
    fn key_with_line_breaks_loads() {
        let wrapped: String = DEFAULT_PUBLIC_KEY
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        assert!(RsaKeys::from_base64(DEFAULT_PRIVATE_KEY, &wrapped).is_ok());
    }

    #[test]
    fn random_keys_differ() {
        assert_ne!(random_key(), random_key());
    }

    proptest! {
        #[test]
        fn aes_round_trip(key: [u8; 16], iv: [u8; 16], data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let aes = AesCipher::new(key, iv);
            let enc = aes.encrypt(&data);
            prop_assert_eq!(enc.len(), (data.len() / 16 + 1) * 16);
            prop_assert_eq!(aes.decrypt(&enc).unwrap(), data);
        }

        #[test]
        fn aes_decrypt_never_panics(key: [u8; 16], iv: [u8; 16], data in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = AesCipher::new(key, iv).decrypt(&data);
        }
    }
}
