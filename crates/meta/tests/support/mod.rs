//! What the integration tests share: bodies signed and verified the way the ingress does it, and
//! the fixtures (Meta's documented payloads with realistic fake ids).

// Each test crate includes this module and uses only part of it.
#![allow(dead_code)]

use std::fs;
use std::path::{Path, PathBuf};

use pagewire_meta::{sign, Envelope, Item, SignatureHeader};

/// The app secret of the tests' Meta app.
pub const APP_SECRET: &[u8] = b"3f1c0d9e8b7a6f5e4d3c2b1a09f8e7d6";

/// Where the fixtures live, one folder per Meta object (and `objects` for the odd ones).
pub const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

const FOLDERS: [&str; 5] = ["messenger", "instagram", "whatsapp", "page", "objects"];

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

/// Every fixture body, sorted, as (`{folder}__{stem}`, path).
pub fn fixtures() -> Result<Vec<(String, PathBuf)>, std::io::Error> {
    let mut fixtures = Vec::new();
    for folder in FOLDERS {
        for file in fs::read_dir(Path::new(FIXTURES).join(folder))? {
            let path = file?.path();
            if path.extension().is_some_and(|ext| ext == "json") {
                let stem = path
                    .file_stem()
                    .map(|stem| stem.to_string_lossy().into_owned())
                    .unwrap_or_default();
                fixtures.push((format!("{folder}__{stem}"), path));
            }
        }
    }
    fixtures.sort();
    Ok(fixtures)
}

/// One fixture body, by its path under the fixtures folder (`whatsapp/text.json`).
pub fn fixture(name: &str) -> Result<Vec<u8>, std::io::Error> {
    fs::read(Path::new(FIXTURES).join(name))
}
