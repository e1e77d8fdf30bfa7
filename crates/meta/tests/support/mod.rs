//! What the integration tests share: bodies signed and verified the way the ingress does it.

use pagewire_meta::{sign, Envelope, Item, SignatureHeader};

/// The app secret of the tests' Meta app.
pub const APP_SECRET: &[u8] = b"3f1c0d9e8b7a6f5e4d3c2b1a09f8e7d6";

/// Signs `body` as Meta would, verifies it, parses it and normalizes every item.
pub fn normalize(body: &[u8]) -> Result<Vec<Item<'_>>, String> {
    let signature = sign(APP_SECRET, body);
    let proof = SignatureHeader::parse(Some(signature.as_bytes()), false)
        .and_then(|header| header.verify(APP_SECRET, body))
        .map_err(|err| err.to_string())?;
    let envelope = Envelope::parse(body).map_err(|err| err.to_string())?;
    let verified = envelope.into_verified(proof).map_err(|err| err.to_string())?;
    Ok(verified.normalize())
}
