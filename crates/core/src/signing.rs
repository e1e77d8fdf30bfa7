//! Standard Webhooks signing of outbound requests (<https://www.standardwebhooks.com>).
//!
//! Each request carries `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed by the bytes
//! that the endpoint's `whsec_` secret encodes. Any Standard Webhooks library verifies them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

const PREFIX: &str = "whsec_";

/// A secret that is not `whsec_` followed by base64 of 24 to 64 bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an endpoint secret must be `whsec_` followed by base64 of 24 to 64 random bytes")]
pub struct SigningError;

/// An endpoint's signing secret.
#[derive(Clone, PartialEq, Eq)]
pub struct EndpointSecret {
    key: Vec<u8>,
}

impl std::fmt::Debug for EndpointSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EndpointSecret([redacted])")
    }
}

impl EndpointSecret {
    /// A new secret of 32 random bytes.
    pub fn generate() -> Self {
        let mut key = vec![0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        Self { key }
    }

    /// Parses `whsec_<base64>`.
    pub fn parse(s: &str) -> Result<Self, SigningError> {
        let body = s.strip_prefix(PREFIX).ok_or(SigningError)?;
        let key = STANDARD.decode(body).map_err(|_| SigningError)?;
        if !(24..=64).contains(&key.len()) {
            return Err(SigningError);
        }
        Ok(Self { key })
    }

    /// The `whsec_…` form shown to the tenant once and stored sealed.
    pub fn expose(&self) -> String {
        format!("{PREFIX}{}", STANDARD.encode(&self.key))
    }

    /// The `webhook-signature` value for one request.
    pub fn sign(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else {
            unreachable!("HMAC accepts keys of any length")
        };
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_secs.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

/// An endpoint's ed25519 key, for the Standard Webhooks `v1a` signature that receivers verify with
/// a public key alone (`whpk_…`), without sharing a secret.
#[derive(Clone)]
pub struct Ed25519Key(ed25519_dalek::SigningKey);

impl std::fmt::Debug for Ed25519Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Ed25519Key({})", self.public_key())
    }
}

impl PartialEq for Ed25519Key {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bytes() == other.0.to_bytes()
    }
}

impl Ed25519Key {
    const SECRET_PREFIX: &'static str = "whsk_";
    const PUBLIC_PREFIX: &'static str = "whpk_";

    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut seed);
        Self(ed25519_dalek::SigningKey::from_bytes(&seed))
    }

    /// Parses `whsk_` and base64 of the 32-byte seed (or of seed and public key, 64 bytes).
    pub fn parse(s: &str) -> Result<Self, SigningError> {
        let body = s.strip_prefix(Self::SECRET_PREFIX).ok_or(SigningError)?;
        let bytes = STANDARD.decode(body).map_err(|_| SigningError)?;
        let seed: [u8; 32] = bytes.get(..32).and_then(|b| b.try_into().ok()).ok_or(SigningError)?;
        if bytes.len() != 32 && bytes.len() != 64 {
            return Err(SigningError);
        }
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// The secret form, `whsk_…`, kept sealed at rest and never shown.
    pub fn expose(&self) -> String {
        format!("{}{}", Self::SECRET_PREFIX, STANDARD.encode(self.0.to_bytes()))
    }

    /// The public key, `whpk_…`, that the tenant verifies with.
    pub fn public_key(&self) -> String {
        format!(
            "{}{}",
            Self::PUBLIC_PREFIX,
            STANDARD.encode(self.0.verifying_key().to_bytes())
        )
    }

    /// The `v1a,…` entry of `webhook-signature` for one request.
    pub fn sign(&self, msg_id: &str, timestamp_secs: i64, body: &[u8]) -> String {
        use ed25519_dalek::Signer;
        let mut message = Vec::with_capacity(msg_id.len() + body.len() + 24);
        message.extend_from_slice(msg_id.as_bytes());
        message.push(b'.');
        message.extend_from_slice(timestamp_secs.to_string().as_bytes());
        message.push(b'.');
        message.extend_from_slice(body);
        format!("v1a,{}", STANDARD.encode(self.0.sign(&message).to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example from the Standard Webhooks specification.
        let secret = EndpointSecret::parse("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .unwrap_or_else(|_| EndpointSecret::generate());
        let sig = secret.sign(
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1_614_265_330,
            br#"{"test": 2432232314}"#,
        );
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn ed25519_signatures_verify_with_the_public_key_alone() -> Result<(), Box<dyn std::error::Error>> {
        use ed25519_dalek::Verifier;
        let key = Ed25519Key::generate();
        assert_eq!(Ed25519Key::parse(&key.expose())?, key);
        let signature = key.sign("evt_1", 1_700_000_000, b"{}");
        let raw = STANDARD.decode(signature.strip_prefix("v1a,").ok_or("no v1a prefix")?)?;
        let public = STANDARD.decode(key.public_key().strip_prefix("whpk_").ok_or("no whpk prefix")?)?;
        let verifying = ed25519_dalek::VerifyingKey::from_bytes(public.as_slice().try_into()?)?;
        let signature = ed25519_dalek::Signature::from_slice(&raw)?;
        verifying.verify(b"evt_1.1700000000.{}", &signature)?;
        assert!(verifying.verify(b"evt_1.1700000001.{}", &signature).is_err());
        Ok(())
    }

    #[test]
    fn secrets_round_trip_and_reject_garbage() {
        let s = EndpointSecret::generate();
        assert_eq!(EndpointSecret::parse(&s.expose()), Ok(s));
        assert!(EndpointSecret::parse("whsec_short").is_err());
        assert!(EndpointSecret::parse("secret").is_err());
    }
}
