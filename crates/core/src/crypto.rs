//! Secrets at rest: app secrets, Page tokens and endpoint secrets are sealed with AES-256-GCM under
//! the master key before they reach the database.
//!
//! A sealed value is `v1:` followed by base64 of a 96-bit random nonce and the ciphertext. The
//! associated data names what the value is (`app_secret`, `page_token`, …), so a sealed value copied
//! into another column does not open.

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;

const VERSION: &str = "v1:";
const NONCE_LEN: usize = 12;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    #[error("the master key must be 32 bytes, given as 64 hex digits or base64")]
    InvalidKey,
    #[error("a sealed value is malformed or was sealed with another master key")]
    Unseal,
}

/// The 256-bit key that seals every secret at rest.
#[derive(Clone)]
pub struct MasterKey(Key<Aes256Gcm>);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

impl MasterKey {
    pub fn generate() -> Self {
        Self(Aes256Gcm::generate_key(OsRng))
    }

    /// Reads 64 hex digits or base64 of 32 bytes (surrounding whitespace ignored).
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        let s = s.trim();
        let bytes = if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| CryptoError::InvalidKey)?
        } else {
            STANDARD.decode(s).map_err(|_| CryptoError::InvalidKey)?
        };
        if bytes.len() != 32 {
            return Err(CryptoError::InvalidKey);
        }
        Ok(Self(*Key::<Aes256Gcm>::from_slice(&bytes)))
    }

    /// The key as base64, for writing the generated key file.
    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0.as_slice())
    }

    /// Seals `plaintext`; `purpose` must be given again to open it.
    pub fn seal(&self, purpose: &str, plaintext: &str) -> String {
        let cipher = Aes256Gcm::new(&self.0);
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: purpose.as_bytes(),
        };
        // AES-GCM encryption fails only for inputs beyond 64 GiB.
        let ciphertext = cipher.encrypt(&nonce, payload).unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ciphertext);
        format!("{VERSION}{}", STANDARD.encode(out))
    }

    pub fn open(&self, purpose: &str, sealed: &str) -> Result<String, CryptoError> {
        let body = sealed.strip_prefix(VERSION).ok_or(CryptoError::Unseal)?;
        let bytes = STANDARD.decode(body).map_err(|_| CryptoError::Unseal)?;
        if bytes.len() < NONCE_LEN {
            return Err(CryptoError::Unseal);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let cipher = Aes256Gcm::new(&self.0);
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: purpose.as_bytes(),
                },
            )
            .map_err(|_| CryptoError::Unseal)?;
        String::from_utf8(plain).map_err(|_| CryptoError::Unseal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_purpose() {
        let key = MasterKey::generate();
        let sealed = key.seal("app_secret", "s3cr3t");
        assert!(!sealed.contains("s3cr3t"));
        assert_eq!(key.open("app_secret", &sealed).as_deref(), Ok("s3cr3t"));
        assert_eq!(key.open("page_token", &sealed), Err(CryptoError::Unseal));
        assert_eq!(
            MasterKey::generate().open("app_secret", &sealed),
            Err(CryptoError::Unseal)
        );
    }

    #[test]
    fn keys_parse_from_hex_and_base64() {
        let key = MasterKey::generate();
        let again = MasterKey::parse(&key.to_base64()).unwrap_or_else(|_| MasterKey::generate());
        assert_eq!(again.open("x", &key.seal("x", "v")).as_deref(), Ok("v"));
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert_eq!(MasterKey::parse("short").err(), Some(CryptoError::InvalidKey));
    }
}
