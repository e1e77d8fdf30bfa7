//! The light parse of a webhook POST: `object`, and each `entry[]` with its id and item arrays,
//! all borrowed from the body.
//!
//! It serves two moments of the ingress. Before verification, [`Envelope::entry_ids`] names the
//! Pages (or accounts) whose app secret verifies the body. After it, a [`VerifiedEnvelope`] (only
//! obtainable with a [`Verified`] proof over the very same bytes) is what normalization accepts.
//! Nothing is re-serialized: entries and items stay slices of the body.
//!
//! A body that repeats a key within any one object is refused (see [`crate::duplicate_key`]):
//! parsers disagree on which of the values counts, and the entry id routes the body to a tenant.

use std::borrow::Cow;
use std::fmt;

use serde::de::IgnoredAny;
use serde::Deserialize;
use serde_json::error::Category;
use serde_json::value::RawValue;

use crate::duplicate_key;
use crate::signature::Verified;
use crate::wire::{self, RawList};

/// Why a body is not a Meta webhook envelope. The ingress answers 400.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the body is not UTF-8")]
    NotUtf8(#[source] std::str::Utf8Error),
    #[error("the body is not valid JSON")]
    NotJson(#[source] serde_json::Error),
    #[error("the body is JSON but not an object")]
    NotAnObject,
    /// An object of the body (the envelope, an entry, an item at any depth) has a key twice, `"a"`
    /// and `"\u0061"` counting as the same key. `key` is cut to its first 64 bytes; `at` is the path
    /// to the object (`$` for the envelope, `$.entry[0]` for the first entry), cut likewise.
    #[error("the body repeats the key {key:?} in the object at {at}")]
    DuplicateKey { key: String, at: String },
    /// Objects and arrays nested deeper than serde_json reads (128 levels); Meta nests a few.
    #[error("the body nests objects and arrays deeper than 128 levels")]
    TooDeep,
    /// Not expected: the envelope's fields take any JSON value, and a repeated field is refused as
    /// [`EnvelopeError::DuplicateKey`]. Kept so that the parse stays total.
    #[error("the body is not a valid webhook envelope")]
    Invalid(#[source] serde_json::Error),
    #[error("the envelope's `object` is missing or not a string")]
    MissingObject,
    #[error("the envelope has no `entry`")]
    MissingEntry,
    #[error("the envelope's `entry` is not an array")]
    EntryNotArray,
}

impl From<duplicate_key::Refusal> for EnvelopeError {
    fn from(refusal: duplicate_key::Refusal) -> Self {
        match refusal {
            duplicate_key::Refusal::DuplicateKey { key, at } => Self::DuplicateKey { key, at },
            duplicate_key::Refusal::TooDeep => Self::TooDeep,
        }
    }
}

/// A verification proof that covers other bytes than the envelope was parsed from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the signature proof covers other bytes than the envelope was parsed from")]
pub struct ProofMismatch;

/// `{"object": …, "entry": [ … ]}`, parsed once and borrowing the body. Not yet trusted: see
/// [`Envelope::into_verified`].
pub struct Envelope<'a> {
    body: &'a [u8],
    object: Cow<'a, str>,
    entries: Vec<Entry<'a>>,
}

/// One element of `entry[]`. Keys other than those read here are ignored by the parse and kept in
/// [`Entry::raw`].
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    index: u32,
    id: Option<String>,
    time: Option<i64>,
    messaging: Option<Vec<&'a RawValue>>,
    standby: Option<Vec<&'a RawValue>>,
    changes: Option<Vec<&'a RawValue>>,
    /// Kept for entries without item arrays, which normalization keeps whole.
    raw: Option<&'a RawValue>,
}

/// An envelope whose bytes carried a valid signature: the only input normalization accepts.
#[derive(Debug)]
pub struct VerifiedEnvelope<'a> {
    envelope: Envelope<'a>,
}

#[derive(Deserialize)]
struct EnvelopeWire<'a> {
    #[serde(borrow)]
    object: Option<&'a RawValue>,
    #[serde(borrow)]
    entry: Option<RawList<'a>>,
}

/// The one-pass form of the envelope: entries read in place, not first skipped as raw values. It
/// serves every well-formed body; anything odd falls back to the tolerant two-step parse.
#[derive(Deserialize)]
struct FastEnvelopeWire<'a> {
    #[serde(borrow)]
    object: Option<&'a RawValue>,
    #[serde(borrow)]
    entry: Option<Vec<EntryWire<'a>>>,
}

#[derive(Default, Deserialize)]
struct EntryWire<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    time: Option<&'a RawValue>,
    #[serde(borrow)]
    messaging: Option<RawList<'a>>,
    #[serde(borrow)]
    standby: Option<RawList<'a>>,
    #[serde(borrow)]
    changes: Option<RawList<'a>>,
}

const JSON_WHITESPACE: [char; 4] = [' ', '\t', '\n', '\r'];

impl<'a> Envelope<'a> {
    /// Parses the raw body. `object` must be a string and `entry` an array (`[]` is fine); an entry
    /// that is not an object, or whose item fields are not arrays, is kept with those fields absent
    /// rather than failing the whole POST. No object anywhere in the body may repeat a key.
    pub fn parse(body: &'a [u8]) -> Result<Self, EnvelopeError> {
        let text = std::str::from_utf8(body).map_err(EnvelopeError::NotUtf8)?;
        if !text.trim_start_matches(JSON_WHITESPACE).starts_with('{') {
            // Rare path: only tell "not JSON" from "JSON, but not an object".
            return Err(match serde_json::from_str::<IgnoredAny>(text) {
                Ok(_) => EnvelopeError::NotAnObject,
                Err(err) => EnvelopeError::NotJson(err),
            });
        }
        let envelope = match Self::parse_in_one_pass(body, text) {
            Some(envelope) => envelope,
            None => Self::parse_tolerantly(body, text)?,
        };
        // Either parse has read the whole body as JSON; one more pass refuses it if an object
        // repeats a key, which the parses would read as its first value or its last, or (serde's
        // derive refuses a repeated field) as an entry without fields.
        duplicate_key::check(text)?;
        Ok(envelope)
    }

    /// The parse of bodies the one-pass parse does not take: odd entries are kept whole.
    fn parse_tolerantly(body: &'a [u8], text: &'a str) -> Result<Self, EnvelopeError> {
        let wire: EnvelopeWire<'a> = serde_json::from_str(text).map_err(|err| match err.classify() {
            // The envelope repeats a field: refused mid-parse, before the rest was read.
            Category::Data => match serde_json::from_str::<IgnoredAny>(text) {
                Err(not_json) => EnvelopeError::NotJson(not_json),
                Ok(_) => duplicate_key::check(text).map_or_else(EnvelopeError::from, |()| EnvelopeError::Invalid(err)),
            },
            Category::Io | Category::Syntax | Category::Eof => EnvelopeError::NotJson(err),
        })?;
        let object = wire::string(wire.object).ok_or(EnvelopeError::MissingObject)?;
        let entries = wire
            .entry
            .ok_or(EnvelopeError::MissingEntry)?
            .0
            .ok_or(EnvelopeError::EntryNotArray)?
            .into_iter()
            .enumerate()
            .map(|(index, raw)| Entry::parse(index, raw))
            .collect();
        Ok(Self { body, object, entries })
    }

    /// The common case in one pass over the body: every entry an object with at least one item
    /// array. `None` sends the body to the tolerant parse, which also keeps odd entries whole.
    fn parse_in_one_pass(body: &'a [u8], text: &'a str) -> Option<Self> {
        let wire: FastEnvelopeWire<'a> = serde_json::from_str(text).ok()?;
        let object = wire::string(wire.object)?;
        let mut entries = Vec::new();
        for (index, entry) in wire.entry?.into_iter().enumerate() {
            let entry = Entry::from_wire(index, entry, None);
            if entry.has_no_item_arrays() {
                return None;
            }
            entries.push(entry);
        }
        Some(Self { body, object, entries })
    }

    /// The bytes this envelope was parsed from.
    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// `object`: `page`, `instagram`, `whatsapp_business_account`, or another Meta object.
    pub fn object(&self) -> &str {
        &self.object
    }

    pub fn entries(&self) -> &[Entry<'a>] {
        &self.entries
    }

    /// The `entry[].id`s in entry order, skipping entries without one: the Pages, Instagram
    /// accounts or WhatsApp Business Accounts whose app secret verifies this body. An id repeats
    /// when several entries share it.
    pub fn entry_ids(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().filter_map(Entry::id)
    }

    /// How many item slots the envelope has: every element of every item array, and one for each
    /// entry that has none of them. Normalization yields exactly this many items, except that a
    /// WhatsApp change yields one per message and status inside its value (and at least one), so
    /// for `whatsapp_business_account` this is a lower bound.
    pub fn item_count(&self) -> usize {
        self.entries.iter().map(Entry::item_count).sum()
    }

    /// Attaches the proof that this envelope's bytes are signed. The proof must cover exactly the
    /// bytes the envelope was parsed from (same address and length), not merely equal ones.
    pub fn into_verified(self, proof: Verified<'a>) -> Result<VerifiedEnvelope<'a>, ProofMismatch> {
        let signed = proof.body();
        if signed.as_ptr() == self.body.as_ptr() && signed.len() == self.body.len() {
            Ok(VerifiedEnvelope { envelope: self })
        } else {
            Err(ProofMismatch)
        }
    }
}

impl fmt::Debug for Envelope<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body can be megabytes: show what identifies it, not its content.
        f.debug_struct("Envelope")
            .field("object", &self.object)
            .field("body_len", &self.body.len())
            .field("entry_ids", &self.entry_ids().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> Entry<'a> {
    fn parse(index: usize, raw: &'a RawValue) -> Self {
        let wire: EntryWire<'a> = wire::object(Some(raw)).unwrap_or_default();
        Self::from_wire(index, wire, Some(raw))
    }

    fn from_wire(index: usize, wire: EntryWire<'a>, raw: Option<&'a RawValue>) -> Self {
        Self {
            // Meta sends at most 1000 entries; the saturation is only there to be total.
            index: u32::try_from(index).unwrap_or(u32::MAX),
            id: wire::id(wire.id),
            time: wire::integer(wire.time),
            messaging: wire.messaging.and_then(|list| list.0),
            standby: wire.standby.and_then(|list| list.0),
            changes: wire.changes.and_then(|list| list.0),
            raw,
        }
    }

    /// Position in `entry[]`.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// `entry[].id` (a JSON string, or a number kept digit for digit): the Page, Instagram account
    /// or WhatsApp Business Account the entry belongs to, and so the routing key to its tenant.
    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// `entry[].time` as sent (a number or numeric string; seconds or milliseconds).
    pub fn time(&self) -> Option<i64> {
        self.time
    }

    /// `entry[].messaging[]`, each item as sent; `None` when absent or not an array.
    pub fn messaging(&self) -> Option<&[&'a RawValue]> {
        self.messaging.as_deref()
    }

    /// `entry[].standby[]` (items of threads another app owns); `None` when absent or not an array.
    pub fn standby(&self) -> Option<&[&'a RawValue]> {
        self.standby.as_deref()
    }

    /// `entry[].changes[]`; `None` when absent or not an array.
    pub fn changes(&self) -> Option<&[&'a RawValue]> {
        self.changes.as_deref()
    }

    /// The entry exactly as sent, for entries that came through the tolerant parse (odd entries,
    /// and entries without item arrays, which normalization keeps whole). `None` for the rest,
    /// which are read in one pass without keeping the entry's own bytes.
    pub fn raw(&self) -> Option<&'a RawValue> {
        self.raw
    }

    /// Whether the entry has none of `messaging`, `standby` and `changes` as an array. Such an entry
    /// still yields one item (of field `entry`), so that nothing is dropped.
    pub fn has_no_item_arrays(&self) -> bool {
        self.messaging.is_none() && self.standby.is_none() && self.changes.is_none()
    }

    /// How many item slots this entry has (see [`Envelope::item_count`]).
    pub fn item_count(&self) -> usize {
        if self.has_no_item_arrays() {
            return 1;
        }
        [&self.messaging, &self.standby, &self.changes]
            .into_iter()
            .map(|list| list.as_ref().map_or(0, Vec::len))
            .sum()
    }
}

impl<'a> VerifiedEnvelope<'a> {
    /// Verify first, parse second: for the per-app route, where the app (and so its secret) is
    /// known before the body is read.
    pub fn parse(proof: Verified<'a>) -> Result<Self, EnvelopeError> {
        Envelope::parse(proof.body()).map(|envelope| Self { envelope })
    }

    pub fn envelope(&self) -> &Envelope<'a> {
        &self.envelope
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::{sign, SignatureHeader};

    const SECRET: &[u8] = b"test secret";

    fn verified(body: &[u8]) -> Verified<'_> {
        let signature = sign(SECRET, body);
        SignatureHeader::parse(Some(signature.as_bytes()), false)
            .and_then(|header| header.verify(SECRET, body))
            .expect("signed with the test secret")
    }

    #[test]
    fn reads_object_and_entries() {
        let body = br#"{"object":"page","entry":[
            {"id":"104881234567890","time":1458692752478,"messaging":[{"a":1},{"b":2}]},
            {"id":987654321012345678901,"time":"1527459824","standby":[{"c":3}],"changes":[],"extra":true}
        ]}"#;
        let envelope = Envelope::parse(body).expect("a valid envelope");
        assert_eq!(envelope.object(), "page");
        assert_eq!(
            envelope.entry_ids().collect::<Vec<_>>(),
            ["104881234567890", "987654321012345678901"]
        );
        let [first, second] = envelope.entries() else {
            panic!("two entries expected");
        };
        assert_eq!(first.index(), 0);
        assert_eq!(first.time(), Some(1_458_692_752_478));
        assert_eq!(first.messaging().map(<[_]>::len), Some(2));
        assert_eq!(second.index(), 1);
        assert_eq!(second.time(), Some(1_527_459_824));
        assert_eq!(second.standby().map(<[_]>::len), Some(1));
        assert_eq!(second.changes().map(<[_]>::len), Some(0));
        assert!(second.raw().is_none(), "well-formed entries are read in one pass");
        assert_eq!(envelope.item_count(), 3);
    }

    #[test]
    fn accepts_an_empty_entry_array() {
        let envelope = Envelope::parse(br#" {"object":"page","entry":[]} "#).expect("valid");
        assert!(envelope.entries().is_empty());
        assert_eq!(envelope.item_count(), 0);
    }

    #[test]
    fn keeps_odd_entries_with_their_fields_absent() {
        let body = br#"{"object":"page","entry":[1,{"id":{},"messaging":{"not":"a list"}}]}"#;
        let envelope = Envelope::parse(body).expect("valid");
        let [number, odd] = envelope.entries() else {
            panic!("two entries expected");
        };
        assert!(number.has_no_item_arrays());
        assert_eq!(number.raw().map(RawValue::get), Some("1"));
        assert_eq!(odd.id(), None);
        assert!(odd.has_no_item_arrays());
        assert_eq!(envelope.item_count(), 2);
    }

    /// The variant's name, so that cases read as a table.
    fn variant(err: &EnvelopeError) -> &'static str {
        match err {
            EnvelopeError::NotUtf8(_) => "NotUtf8",
            EnvelopeError::NotJson(_) => "NotJson",
            EnvelopeError::NotAnObject => "NotAnObject",
            EnvelopeError::DuplicateKey { .. } => "DuplicateKey",
            EnvelopeError::TooDeep => "TooDeep",
            EnvelopeError::Invalid(_) => "Invalid",
            EnvelopeError::MissingObject => "MissingObject",
            EnvelopeError::MissingEntry => "MissingEntry",
            EnvelopeError::EntryNotArray => "EntryNotArray",
        }
    }

    #[test]
    fn rejects_bodies_that_are_not_envelopes() {
        let cases: [(&[u8], &str); 13] = [
            (b"\xff\xfe", "NotUtf8"),
            (b"", "NotJson"),
            (br#"{"object":"#, "NotJson"),
            (b"{} trailing", "NotJson"),
            (b"[1,2]", "NotAnObject"),
            (br#"{"object":"page","object":"page","entry":[]}"#, "DuplicateKey"),
            (br#"[{"object":"page","object":"page"}]"#, "NotAnObject"),
            // A repeat before a syntax error is not JSON; one after it, neither.
            (br#"{"object":"page","object":"page","entry":[}"#, "NotJson"),
            (br#"{"object":"page","entry":[{"id":"1","id":"2"}],"x":}"#, "NotJson"),
            (br#"{"entry":[]}"#, "MissingObject"),
            (br#"{"object":1,"entry":[]}"#, "MissingObject"),
            (br#"{"object":"page"}"#, "MissingEntry"),
            (br#"{"object":"page","entry":{}}"#, "EntryNotArray"),
        ];
        for (body, expected) in cases {
            let err = Envelope::parse(body).expect_err("not an envelope");
            assert_eq!(variant(&err), expected, "{:?}", String::from_utf8_lossy(body));
        }
        let deep = format!(
            r#"{{"object":"page","entry":[],"x":{}{}}}"#,
            "[".repeat(129),
            "]".repeat(129)
        );
        assert_eq!(
            variant(&Envelope::parse(deep.as_bytes()).expect_err("too deep")),
            "TooDeep"
        );
        let deep_enough = format!(
            r#"{{"object":"page","entry":[],"x":{}{}}}"#,
            "[".repeat(127),
            "]".repeat(127)
        );
        assert!(Envelope::parse(deep_enough.as_bytes()).is_ok());
    }

    #[test]
    fn refuses_an_entry_that_names_two_page_ids() {
        // First another tenant's Page, last the sender's own: whichever a reader keeps, the body is
        // not taken in.
        let body = br#"{"object":"page","entry":[{"id":"208765432109876","time":1,"id":"104872345678901",
            "messaging":[{"sender":{"id":"1"},"recipient":{"id":"208765432109876"},"message":{"mid":"m","text":"x"}}]}]}"#;
        let err = Envelope::parse(body).expect_err("a repeated entry id");
        let EnvelopeError::DuplicateKey { key, at } = &err else {
            panic!("{err:?}");
        };
        assert_eq!((key.as_str(), at.as_str()), ("id", "$.entry[0]"));
        assert_eq!(
            err.to_string(),
            r#"the body repeats the key "id" in the object at $.entry[0]"#
        );
        let proof = verified(body);
        assert!(matches!(
            VerifiedEnvelope::parse(proof),
            Err(EnvelopeError::DuplicateKey { .. })
        ));
    }

    #[test]
    fn refuses_a_repeated_key_at_any_depth() {
        let cases: [(&[u8], &str, &str); 6] = [
            (br#"{"object":"page","entry":[],"entry":[]}"#, "entry", "$"),
            (
                br#"{"object":"page","entry":[{"id":"1","messaging":[],"messaging":[]}]}"#,
                "messaging",
                "$.entry[0]",
            ),
            (
                br#"{"object":"page","entry":[{"id":"1","messaging":[{"a":1},{"sender":{},"sender":{}}]}]}"#,
                "sender",
                "$.entry[0].messaging[1]",
            ),
            (
                br#"{"object":"page","entry":[{"id":"1","changes":[{"field":"feed","value":{"from":{"id":"1","id":"2"}}}]}]}"#,
                "id",
                "$.entry[0].changes[0].value.from",
            ),
            // Odd entries, read whole by the tolerant parse, are checked as well.
            (br#"{"object":"page","entry":[{"id":"1","id":"2"}]}"#, "id", "$.entry[0]"),
            (br#"{"object":"page","entry":[{"id":"1","\u0069d":"2","messaging":[]}]}"#, "id", "$.entry[0]"),
        ];
        for (body, key, at) in cases {
            match Envelope::parse(body) {
                Err(EnvelopeError::DuplicateKey {
                    key: found,
                    at: found_at,
                }) => {
                    assert_eq!((found.as_str(), found_at.as_str()), (key, at));
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
    }

    #[test]
    fn accepts_an_item_of_100_000_distinct_keys() {
        let keys: Vec<String> = (0..100_000).map(|n| format!("\"k{n}\":{n}")).collect();
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"1","messaging":[{{{}}}]}}]}}"#,
            keys.join(",")
        );
        let envelope = Envelope::parse(body.as_bytes()).expect("distinct keys");
        assert_eq!(envelope.item_count(), 1);
    }

    #[test]
    fn accepts_a_proof_over_the_same_bytes() {
        let body = br#"{"object":"page","entry":[]}"#.to_vec();
        let envelope = Envelope::parse(&body).expect("valid");
        assert!(envelope.into_verified(verified(&body)).is_ok());
    }

    #[test]
    fn refuses_a_proof_over_equal_but_other_bytes() {
        let body = br#"{"object":"page","entry":[]}"#.to_vec();
        let copy = body.clone();
        let envelope = Envelope::parse(&body).expect("valid");
        assert_eq!(envelope.into_verified(verified(&copy)).err(), Some(ProofMismatch));
    }

    #[test]
    fn refuses_a_proof_over_a_prefix_of_the_bytes() {
        let body = br#"{"object":"page","entry":[]}  "#.to_vec();
        let envelope = Envelope::parse(&body).expect("valid");
        let prefix = &body[..body.len() - 2];
        assert_eq!(envelope.into_verified(verified(prefix)).err(), Some(ProofMismatch));
    }

    #[test]
    fn parses_after_verifying_first() {
        let body = br#"{"object":"instagram","entry":[{"id":"17841400000000000"}]}"#;
        let envelope = VerifiedEnvelope::parse(verified(body)).expect("valid");
        assert_eq!(envelope.envelope().object(), "instagram");
        assert_eq!(envelope.envelope().body(), body);
    }
}
