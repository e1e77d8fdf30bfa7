//! How Meta's values look on the wire, read leniently from slices of the verified body.
//!
//! Meta documents ids as strings but has sent them as numbers, some beyond 2^53; timestamps come as
//! milliseconds, as seconds, or as numeric strings. Every reader here takes borrowed
//! [`RawValue`]s and answers `None` (or JSON null) for a value it does not recognise, so that one odd
//! value costs one field, never the item, and nothing here can fail or panic.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use serde::de::value::MapAccessDeserializer;
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Timestamps below this are Unix seconds, at or above it milliseconds. As milliseconds it is
/// 1973-03-03; as seconds, the year 5138: no timestamp Meta sends is ambiguous.
pub(crate) const SECONDS_BELOW: i64 = 100_000_000_000;

/// Declares a borrowed view of one JSON object that Meta sends: each named key is kept as an
/// optional raw slice, unknown keys are skipped, and nothing is decoded until a reader asks for it.
/// `name as "json"` renames a key that is a Rust keyword (`type`, `ref`).
macro_rules! wire_object {
    ($(#[$meta:meta])* $name:ident { $($field:ident $(as $json:literal)?),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Default, serde::Deserialize)]
        pub(crate) struct $name<'a> {
            $(
                #[serde(borrow $(, rename = $json)?)]
                pub(crate) $field: Option<&'a serde_json::value::RawValue>,
            )*
        }
    };
}
pub(crate) use wire_object;

/// A JSON string, decoded; borrowed from the body when it holds no escapes. Anything else is `None`.
pub(crate) fn string(raw: Option<&RawValue>) -> Option<Cow<'_, str>> {
    let text = raw?.get();
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        // Escapes (`\u00e4`, `\/`, surrogate pairs) need the real decoder.
        serde_json::from_str::<String>(text).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// An id: a JSON string, or a JSON number taken digit for digit from the body, so that ids beyond
/// 2^53 (or 2^64) never pass through a float. Empty strings and other values are `None`.
pub(crate) fn id(raw: Option<&RawValue>) -> Option<String> {
    let raw = raw?;
    let text = raw.get();
    let id = if text.starts_with('"') {
        string(Some(raw))?.into_owned()
    } else if text.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        text.to_owned()
    } else {
        return None;
    };
    (!id.is_empty()).then_some(id)
}

/// An integer sent as a JSON number or as a numeric string (`"1527459824"`).
pub(crate) fn integer(raw: Option<&RawValue>) -> Option<i64> {
    let raw = raw?;
    let text = raw.get();
    if text.starts_with('"') {
        parse_integer(string(Some(raw))?.trim())
    } else {
        parse_integer(text)
    }
}

fn parse_integer(text: &str) -> Option<i64> {
    if let Ok(value) = text.parse::<i64>() {
        return Some(value);
    }
    // JSON also spells integers as `1.5e12`; anything that is not a finite number in range is not
    // an integer we can use.
    let float = text.parse::<f64>().ok()?;
    (float.is_finite() && float.abs() < 9.0e18).then(|| float.trunc() as i64)
}

/// Normalizes a Meta timestamp to Unix milliseconds (see [`SECONDS_BELOW`]).
pub(crate) fn millis(timestamp: i64) -> i64 {
    if timestamp < SECONDS_BELOW {
        timestamp.saturating_mul(1000)
    } else {
        timestamp
    }
}

/// The value as sent, or null when absent.
///
/// serde_json keeps integers up to 2^64 exact in a [`Value`]; only integers beyond that become
/// floats here, which is why ids are never read through this function.
pub(crate) fn as_sent(raw: Option<&RawValue>) -> Value {
    raw.and_then(|raw| serde_json::from_str(raw.get()).ok())
        .unwrap_or(Value::Null)
}

/// [`string`] as a JSON value: the decoded string, or null.
pub(crate) fn string_value(raw: Option<&RawValue>) -> Value {
    string(raw).map_or(Value::Null, |s| Value::String(s.into_owned()))
}

/// [`id`] as a JSON value: always a string, or null.
pub(crate) fn id_value(raw: Option<&RawValue>) -> Value {
    opt_string(id(raw))
}

/// [`integer`] as a JSON value: a number, or null.
pub(crate) fn integer_value(raw: Option<&RawValue>) -> Value {
    integer(raw).map_or(Value::Null, Value::from)
}

/// An optional string as a JSON value.
pub(crate) fn opt_string(value: Option<String>) -> Value {
    value.map_or(Value::Null, Value::String)
}

/// Whether the value is the JSON literal `true`.
pub(crate) fn is_true(raw: Option<&RawValue>) -> bool {
    raw.is_some_and(|raw| raw.get() == "true")
}

/// Reads a JSON object into a [`wire_object!`] view; `None` for anything that is not an object
/// (a derived struct would also accept an array, which Meta never means).
pub(crate) fn object<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Option<T> {
    let raw = raw?;
    if !raw.get().starts_with('{') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// The elements of a JSON array as borrowed slices; `None` for anything that is not an array.
pub(crate) fn array(raw: Option<&RawValue>) -> Option<Vec<&RawValue>> {
    let raw = raw?;
    if !raw.get().starts_with('[') {
        return None;
    }
    serde_json::from_str(raw.get()).ok()
}

/// The elements of a JSON array read in one pass, each into a [`wire_object!`] view (`None` for an
/// element that is not an object); `None` for anything that is not an array.
pub(crate) fn objects<'a, T: Deserialize<'a>>(raw: Option<&'a RawValue>) -> Option<Vec<Option<T>>> {
    let raw = raw?;
    if !raw.get().starts_with('[') {
        return None;
    }
    let list: Vec<Lenient<T>> = serde_json::from_str(raw.get()).ok()?;
    Some(list.into_iter().map(|element| element.0).collect())
}

/// Builds a `data` object from its fields. Every field is always present (null when absent), so
/// consumers see one stable shape per event type.
pub(crate) fn record<const N: usize>(fields: [(&str, Value); N]) -> Value {
    // Inserting one by one beats `collect`, which sorts through a scratch buffer first.
    let mut map = Map::new();
    for (key, value) in fields {
        map.insert(key.to_owned(), value);
    }
    Value::Object(map)
}

/// A routing string (`payload`): a JSON string decoded, any other non-null value as its JSON text,
/// so that `data.payload` is always a string or null whatever Meta put there.
pub(crate) fn routing_string(raw: Option<&RawValue>) -> Value {
    match raw {
        Some(raw) if raw.get().starts_with('"') => string_value(Some(raw)),
        Some(raw) if raw.get() != "null" => Value::String(raw.get().to_owned()),
        _ => Value::Null,
    }
}

wire_object!(
    /// `{field, value}`: one element of `entry[].changes[]`, the value kept as a raw slice.
    ChangeWire { field, value }
);

/// Longest change `field` taken into an event type; Meta's field names are far shorter.
const MAX_FIELD_LEN: usize = 64;

/// Whether a change `field` may become part of an event type (`page.<field>`): the type names
/// metrics and endpoint filters, so only a plain name (`[a-z0-9_]+`, at most 64 bytes) makes it in.
pub(crate) fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FIELD_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The first key of a JSON object that is not in `skip`, in document order.
pub(crate) fn first_key<'a>(raw: &'a RawValue, skip: &[&str]) -> Option<Cow<'a, str>> {
    if !raw.get().starts_with('{') {
        return None;
    }
    let keys: Keys<'a> = serde_json::from_str(raw.get()).ok()?;
    keys.0
        .into_iter()
        .map(|key| key.0)
        .find(|key| !skip.contains(&key.as_ref()))
}

/// An object key, borrowed from the body unless it contains escapes.
#[derive(Debug)]
pub(crate) struct Key<'a>(pub(crate) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for KeyVisitor<'a> {
            type Value = Key<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }

            fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }

            fn visit_str<E>(self, key: &str) -> Result<Key<'a>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }

        deserializer.deserialize_str(KeyVisitor(PhantomData))
    }
}

/// The keys of an object in document order (values skipped).
struct Keys<'a>(Vec<Key<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Keys<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeysVisitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for KeysVisitor<'a> {
            type Value = Keys<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Keys<'a>, A::Error> {
                let mut keys = Vec::new();
                while let Some(key) = map.next_key::<Key<'a>>()? {
                    map.next_value::<IgnoredAny>()?;
                    keys.push(key);
                }
                Ok(Keys(keys))
            }
        }

        deserializer.deserialize_map(KeysVisitor(PhantomData))
    }
}

/// A value read as `T` when it is a JSON object, and as `Lenient(None)` when it is anything else,
/// without failing the enclosing parse: one odd value must not cost the whole item.
#[derive(Debug)]
pub(crate) struct Lenient<T>(pub(crate) Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct LenientVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for LenientVisitor<T> {
            type Value = Lenient<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Lenient<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(|value| Lenient(Some(value)))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Lenient<T>, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Lenient(None))
            }

            fn visit_bool<E>(self, _: bool) -> Result<Lenient<T>, E> {
                Ok(Lenient(None))
            }

            fn visit_i64<E>(self, _: i64) -> Result<Lenient<T>, E> {
                Ok(Lenient(None))
            }

            fn visit_u64<E>(self, _: u64) -> Result<Lenient<T>, E> {
                Ok(Lenient(None))
            }

            fn visit_f64<E>(self, _: f64) -> Result<Lenient<T>, E> {
                Ok(Lenient(None))
            }

            fn visit_str<E>(self, _: &str) -> Result<Lenient<T>, E> {
                Ok(Lenient(None))
            }

            fn visit_unit<E>(self) -> Result<Lenient<T>, E> {
                Ok(Lenient(None))
            }
        }

        deserializer.deserialize_any(LenientVisitor(PhantomData))
    }
}

/// A field that should hold an array, captured element by element as borrowed slices in one pass.
/// Any other JSON value reads as `RawList(None)` instead of failing the whole parse, so that one
/// odd field does not cost the rest of the envelope.
#[derive(Debug)]
pub(crate) struct RawList<'a>(pub(crate) Option<Vec<&'a RawValue>>);

impl<'de: 'a, 'a> Deserialize<'de> for RawList<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for ListVisitor<'a> {
            type Value = RawList<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawList<'a>, A::Error> {
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
                while let Some(item) = seq.next_element::<&'a RawValue>()? {
                    items.push(item);
                }
                Ok(RawList(Some(items)))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawList<'a>, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RawList(None))
            }

            fn visit_bool<E>(self, _: bool) -> Result<RawList<'a>, E> {
                Ok(RawList(None))
            }

            fn visit_i64<E>(self, _: i64) -> Result<RawList<'a>, E> {
                Ok(RawList(None))
            }

            fn visit_u64<E>(self, _: u64) -> Result<RawList<'a>, E> {
                Ok(RawList(None))
            }

            fn visit_f64<E>(self, _: f64) -> Result<RawList<'a>, E> {
                Ok(RawList(None))
            }

            fn visit_str<E>(self, _: &str) -> Result<RawList<'a>, E> {
                Ok(RawList(None))
            }

            fn visit_unit<E>(self) -> Result<RawList<'a>, E> {
                Ok(RawList(None))
            }
        }

        deserializer.deserialize_any(ListVisitor(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> &RawValue {
        serde_json::from_str(json).expect("test JSON is valid")
    }

    #[test]
    fn decodes_escaped_strings_and_borrows_plain_ones() {
        assert_eq!(
            string(Some(raw(r#""\u00e4\u00f6\u00e5 \ud83d\ude00 https:\/\/x""#))).as_deref(),
            Some("äöå 😀 https://x")
        );
        assert!(matches!(string(Some(raw(r#""plain""#))), Some(Cow::Borrowed("plain"))));
        assert_eq!(string(Some(raw("12"))), None);
        assert_eq!(string(None), None);
    }

    #[test]
    fn keeps_number_ids_digit_for_digit() {
        assert_eq!(
            id(Some(raw("123456789012345678901234"))).as_deref(),
            Some("123456789012345678901234")
        );
        assert_eq!(
            id(Some(raw(r#""9007199254740993""#))).as_deref(),
            Some("9007199254740993")
        );
        assert_eq!(id(Some(raw(r#""""#))), None);
        assert_eq!(id(Some(raw("{}"))), None);
        assert_eq!(id(Some(raw("null"))), None);
    }

    #[test]
    fn reads_integers_from_numbers_and_numeric_strings() {
        assert_eq!(integer(Some(raw("1458692752478"))), Some(1_458_692_752_478));
        assert_eq!(integer(Some(raw(r#""1527459824""#))), Some(1_527_459_824));
        assert_eq!(integer(Some(raw("1.5e3"))), Some(1500));
        assert_eq!(integer(Some(raw(r#""soon""#))), None);
        assert_eq!(integer(Some(raw(r#""inf""#))), None);
        assert_eq!(integer(Some(raw("1e300"))), None);
        assert_eq!(integer(Some(raw("true"))), None);
    }

    #[test]
    fn takes_small_timestamps_as_seconds() {
        assert_eq!(millis(1_527_459_824), 1_527_459_824_000);
        assert_eq!(millis(1_458_692_752_478), 1_458_692_752_478);
        assert_eq!(millis(i64::MIN), i64::MIN);
    }

    #[test]
    fn finds_the_first_key_in_document_order() {
        let item = raw(r#"{"sender":{},"zeta":1,"alpha":2}"#);
        assert_eq!(first_key(item, &["sender"]).as_deref(), Some("zeta"));
        assert_eq!(first_key(raw("[1]"), &[]), None);
    }

    #[test]
    fn reads_any_payload_as_a_routing_string() {
        assert_eq!(routing_string(Some(raw(r#""P\u00e4iv\u00e4""#))), Value::from("Päivä"));
        assert_eq!(
            routing_string(Some(raw(r#"{"level": 3}"#))),
            Value::from(r#"{"level": 3}"#)
        );
        assert_eq!(routing_string(Some(raw("42"))), Value::from("42"));
        assert_eq!(routing_string(Some(raw("null"))), Value::Null);
        assert_eq!(routing_string(None), Value::Null);
    }

    #[test]
    fn takes_only_plain_change_fields_into_types() {
        for name in ["feed", "leadgen", "message_template_status_update", "v2_field"] {
            assert!(is_field_name(name), "{name}");
        }
        for name in ["", "Feed", "feed-ext", "feed.x", "ä", &"x".repeat(65)] {
            assert!(!is_field_name(name), "{name}");
        }
    }

    #[test]
    fn reads_a_non_array_list_as_absent() {
        let list: RawList<'_> = serde_json::from_str(r#"[1, {"a": 2}]"#).expect("valid");
        assert_eq!(list.0.map(|items| items.len()), Some(2));
        for other in [r#"{"a": [1]}"#, "1", "-1", "1.5", r#""x""#, "true", "null"] {
            let list: RawList<'_> = serde_json::from_str(other).expect("valid");
            assert!(list.0.is_none(), "{other}");
        }
    }
}
