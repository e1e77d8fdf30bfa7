//! Verification of Meta's `X-Hub-Signature-256` header.
//!
//! Meta signs every webhook POST with HMAC-SHA256 over the exact bytes it sends, keyed by the app
//! secret. Those bytes escape non-ASCII (`äöå` as `\u00e4\u00f6\u00e5`, sometimes `/` as `\/`), so
//! the signature only holds for the raw body: never for JSON that was parsed and written again.
//!
//! The one way to obtain a [`Verified`] proof is [`SignatureHeader::verify`] (or
//! [`SignatureHeader::verify_any`] during a secret rotation); normalization accepts nothing else.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header that carries the SHA-256 signature (HTTP header names are case-insensitive).
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// The legacy header that carries a SHA-1 signature; never enough on its own.
pub const SHA1_SIGNATURE_HEADER: &str = "x-hub-signature";

const SHA256_PREFIX: &[u8] = b"sha256=";

/// Why a webhook POST is not accepted as signed by Meta. Each of them answers 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// No `X-Hub-Signature-256` header. An unsigned POST is rejected, never just logged.
    #[error("the request has no X-Hub-Signature-256 header")]
    Missing,
    /// Only the legacy `X-Hub-Signature: sha1=…` header is present; SHA-1 alone is not accepted.
    #[error("the request is signed only with SHA-1 (X-Hub-Signature), which is not accepted")]
    Sha1Only,
    /// The header is not `sha256=` followed by 64 hex digits.
    #[error("the X-Hub-Signature-256 header is not `sha256=` followed by 64 hex digits")]
    Malformed,
    /// The signature is well formed but does not match the body under any of the app's secrets.
    #[error("the X-Hub-Signature-256 signature does not match the body")]
    Mismatch,
}

/// A parsed `X-Hub-Signature-256` header: the 32-byte HMAC-SHA256 digest Meta claims for the body.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignatureHeader {
    digest: [u8; 32],
}

impl SignatureHeader {
    /// Parses the request's signature headers.
    ///
    /// `sha256_header` is the value of `X-Hub-Signature-256` if the request has one (surrounding
    /// whitespace is ignored; hex digits may be upper or lower case); `sha1_present` tells whether
    /// the legacy `X-Hub-Signature` header is present, only to report [`SignatureError::Sha1Only`]
    /// instead of [`SignatureError::Missing`].
    pub fn parse(sha256_header: Option<&[u8]>, sha1_present: bool) -> Result<Self, SignatureError> {
        let Some(value) = sha256_header else {
            return Err(if sha1_present {
                SignatureError::Sha1Only
            } else {
                SignatureError::Missing
            });
        };
        let hex_digits = value
            .trim_ascii()
            .strip_prefix(SHA256_PREFIX)
            .ok_or(SignatureError::Malformed)?;
        let mut digest = [0u8; 32];
        // Rejects any length but 64 digits, and any non-hex digit.
        hex::decode_to_slice(hex_digits, &mut digest).map_err(|_| SignatureError::Malformed)?;
        Ok(Self { digest })
    }

    /// Checks the signature against `body`, the raw bytes exactly as received, with HMAC-SHA256
    /// keyed by `app_secret` and a constant-time comparison.
    ///
    /// An empty `app_secret` never verifies: it can only be a misconfiguration, and accepting it
    /// would let anyone sign.
    pub fn verify<'a>(&self, app_secret: &[u8], body: &'a [u8]) -> Result<Verified<'a>, SignatureError> {
        if app_secret.is_empty() {
            return Err(SignatureError::Mismatch);
        }
        let mut mac = keyed(app_secret).ok_or(SignatureError::Mismatch)?;
        mac.update(body);
        // `verify_slice` compares in constant time.
        mac.verify_slice(&self.digest).map_err(|_| SignatureError::Mismatch)?;
        Ok(Verified { body })
    }

    /// Like [`verify`](Self::verify), accepting any of `app_secrets`: during a rotation an app has
    /// two valid secrets. Fails with [`SignatureError::Mismatch`] when none matches (or none is
    /// given).
    pub fn verify_any<'a, 's>(
        &self,
        app_secrets: impl IntoIterator<Item = &'s [u8]>,
        body: &'a [u8],
    ) -> Result<Verified<'a>, SignatureError> {
        app_secrets
            .into_iter()
            .find_map(|secret| self.verify(secret, body).ok())
            .ok_or(SignatureError::Mismatch)
    }
}

impl fmt::Debug for SignatureHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignatureHeader(sha256={})", hex::encode(self.digest))
    }
}

/// Proof that `body` carried a valid signature. Only [`SignatureHeader::verify`] creates one, and it
/// borrows the very bytes that were verified, so that only those can be normalized.
pub struct Verified<'a> {
    body: &'a [u8],
}

impl<'a> Verified<'a> {
    /// The verified bytes.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }
}

impl fmt::Debug for Verified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verified").field("len", &self.body.len()).finish()
    }
}

/// The `X-Hub-Signature-256` value Meta would send for `body`: `sha256=` and the lowercase hex
/// HMAC-SHA256 keyed by `app_secret`. Used by the Meta simulator in tests.
pub fn sign(app_secret: &[u8], body: &[u8]) -> String {
    match keyed(app_secret) {
        Some(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        // Unreachable (see `keyed`); a value that can never verify keeps this branch fail-closed.
        None => String::from("sha256="),
    }
}

/// HMAC accepts keys of any length (long keys are hashed), so this is always `Some`; the `Option`
/// only spares a panic path.
fn keyed(secret: &[u8]) -> Option<HmacSha256> {
    HmacSha256::new_from_slice(secret).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn header(value: &str) -> Result<SignatureHeader, SignatureError> {
        SignatureHeader::parse(Some(value.as_bytes()), false)
    }

    #[test]
    fn verifies_the_right_signature() {
        let body = br#"{"object":"page","entry":[]}"#;
        let proof = header(&sign(SECRET, body))
            .and_then(|h| h.verify(SECRET, body))
            .expect("a body signed with the secret verifies");
        assert_eq!(proof.body(), body);
    }

    #[test]
    fn rejects_a_signature_made_with_another_secret() {
        let body = br#"{"object":"page","entry":[]}"#;
        let parsed = header(&sign(b"another secret", body)).expect("well formed");
        assert_eq!(parsed.verify(SECRET, body).err(), Some(SignatureError::Mismatch));
    }

    #[test]
    fn rejects_a_body_changed_after_signing() {
        let parsed = header(&sign(SECRET, b"{\"a\":1}")).expect("well formed");
        assert_eq!(
            parsed.verify(SECRET, b"{\"a\":2}").err(),
            Some(SignatureError::Mismatch)
        );
    }

    #[test]
    fn rejects_a_request_without_signature() {
        assert_eq!(SignatureHeader::parse(None, false), Err(SignatureError::Missing));
    }

    #[test]
    fn rejects_a_request_signed_only_with_sha1() {
        assert_eq!(SignatureHeader::parse(None, true), Err(SignatureError::Sha1Only));
    }

    #[test]
    fn rejects_malformed_headers() {
        let digits = "a".repeat(64);
        for value in [
            String::new(),
            "sha256=".to_owned(),
            format!("sha1={digits}"),
            format!("SHA256={digits}"),
            format!("sha256={}", "a".repeat(63)),
            format!("sha256={}", "a".repeat(65)),
            format!("sha256={}g", "a".repeat(63)),
            format!("sha256 = {digits}"),
            digits.clone(),
        ] {
            assert_eq!(header(&value), Err(SignatureError::Malformed), "{value:?}");
        }
    }

    #[test]
    fn accepts_uppercase_hex_and_surrounding_whitespace() {
        let body = b"{}";
        let signature = sign(SECRET, body);
        let upper = format!(" sha256={} ", signature["sha256=".len()..].to_uppercase());
        assert!(header(&upper).and_then(|h| h.verify(SECRET, body)).is_ok());
    }

    #[test]
    fn signs_with_lowercase_hex() {
        let signature = sign(SECRET, b"{}");
        let digits = signature.strip_prefix("sha256=").expect("prefixed");
        assert_eq!(digits.len(), 64);
        assert!(digits.chars().all(|c| c.is_ascii_digit() || matches!(c, 'a'..='f')));
    }

    #[test]
    fn never_verifies_with_an_empty_secret() {
        let body = b"{}";
        let parsed = header(&sign(b"", body)).expect("well formed");
        assert_eq!(parsed.verify(b"", body).err(), Some(SignatureError::Mismatch));
    }

    #[test]
    fn verifies_escaped_non_ascii_only_as_sent() {
        // Meta signs the escaped form; the same JSON with literal characters is other bytes.
        let escaped = br#"{"text":"\u00e4\u00f6\u00e5"}"#;
        let literal = r#"{"text":"äöå"}"#.as_bytes();
        let parsed = header(&sign(SECRET, escaped)).expect("well formed");
        assert!(parsed.verify(SECRET, escaped).is_ok());
        assert_eq!(parsed.verify(SECRET, literal).err(), Some(SignatureError::Mismatch));
    }

    #[test]
    fn accepts_either_secret_during_a_rotation() {
        let body = b"{}";
        let parsed = header(&sign(b"new secret", body)).expect("well formed");
        let secrets: [&[u8]; 2] = [b"old secret", b"new secret"];
        assert!(parsed.verify_any(secrets, body).is_ok());
        assert_eq!(
            parsed.verify_any([b"old secret".as_slice()], body).err(),
            Some(SignatureError::Mismatch)
        );
        assert_eq!(
            parsed.verify_any(std::iter::empty(), body).err(),
            Some(SignatureError::Mismatch)
        );
    }

    proptest! {
        #[test]
        fn verification_never_panics_on_arbitrary_input(
            header_bytes in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..100)),
            sha1_present in any::<bool>(),
            secret in proptest::collection::vec(any::<u8>(), 0..100),
            body in proptest::collection::vec(any::<u8>(), 0..500),
        ) {
            let parsed = SignatureHeader::parse(header_bytes.as_deref(), sha1_present);
            if let Ok(parsed) = parsed {
                let _ = parsed.verify(&secret, &body);
            }
        }

        #[test]
        fn a_signed_body_always_verifies(
            secret in proptest::collection::vec(any::<u8>(), 1..100),
            body in proptest::collection::vec(any::<u8>(), 0..500),
        ) {
            let signature = sign(&secret, &body);
            let parsed = SignatureHeader::parse(Some(signature.as_bytes()), false);
            prop_assert!(parsed.and_then(|h| h.verify(&secret, &body)).is_ok());
        }
    }
}
