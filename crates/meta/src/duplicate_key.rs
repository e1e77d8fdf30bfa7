//! The refusal of bodies that repeat a key within one object.
//!
//! JSON parsers disagree on `{"id": "1", "id": "2"}`: some keep the first value, some the last, some
//! refuse. A signed body whose entry names one Page id first and another last could be routed by one
//! reading and stored by another, so no such body is taken in at all, wherever the repeat is (the
//! envelope, an entry, an item at any depth).
//!
//! The check is one pass over a body that serde_json has already read whole, so it only has to find
//! the structure, not to validate it: a scan for brackets and for the ends of strings (eight bytes
//! at a time), where a string followed by `:` is a key. Keys are compared as decoded strings, so
//! `"a"` and `"\u0061"` are the same key: a key is borrowed from the body unless it holds escapes,
//! which serde_json decodes. Small objects compare each key with the ones before it, on one key
//! stack shared by the whole pass (a body of many small objects allocates nothing per object); past
//! [`LINEAR_UP_TO`] keys an object moves to a hash set, so that a hostile object of 100,000 keys
//! costs linear time, not quadratic. Nesting is bounded as serde_json bounds it.
//!
//! Cost: about three quarters of the envelope parse itself, +3 to 9 % on verify and normalize of a
//! 1000-item body (`cargo bench -p pagewire-meta --bench normalize`). A walk with serde's
//! `Deserializer` and a visitor cost about twice the envelope parse (it tokenizes every value again
//! through `deserialize_any`); it is kept in the tests, as the oracle this scan is checked against.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write as _;

/// Objects up to this many keys are checked by comparing each new key with the ones before it
/// (at most this many comparisons a key); beyond it, through a hash set. Meta's objects mostly have
/// fewer than ten keys.
const LINEAR_UP_TO: usize = 16;

/// The deepest nesting of objects and arrays taken, as for serde_json's recursion limit: Meta nests
/// a few levels, and the scan keeps a frame per level.
pub(crate) const MAX_DEPTH: usize = 128;

/// How much of a repeated key, and of the path to its object, a refusal shows: it becomes a
/// response and a log line, and a key can be megabytes.
const MAX_KEY_SHOWN: usize = 64;
const MAX_PATH_SHOWN: usize = 256;

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A key found twice in one object, as shown to people: truncated, with the path to the object
    /// that holds it (`$` for the envelope, `$.entry[0]` for the first entry).
    DuplicateKey { key: String, at: String },
    /// Objects and arrays nested deeper than [`MAX_DEPTH`].
    TooDeep,
}

/// Checks that no object in `text` repeats a key, stopping at the first repeat in document order.
///
/// `text` must be JSON that serde_json has read whole (the envelope's parse has): on other text the
/// answer means nothing, though it is still an answer (no panic, linear time).
pub(crate) fn check(text: &str) -> Result<(), Refusal> {
    // The objects and arrays open around the scan, innermost last. Meta nests about six deep, with
    // a few keys a level: sized so that a common body grows neither.
    let mut frames: Vec<Frame<'_>> = Vec::with_capacity(16);
    // The keys of the open objects, each object's above its parent's.
    let mut keys: Vec<Cow<'_, str>> = Vec::with_capacity(32);
    for token in Tokens::new(text) {
        match token {
            Token::Open { at, .. } => {
                if frames.len() == MAX_DEPTH {
                    return Err(Refusal::TooDeep);
                }
                frames.push(Frame {
                    at,
                    base: keys.len(),
                    many: None,
                });
            }
            Token::Close => {
                if let Some(frame) = frames.pop() {
                    keys.truncate(frame.base);
                }
            }
            Token::Comma => {}
            Token::Key { quoted, escaped } => {
                let Some(frame) = frames.last_mut() else {
                    continue;
                };
                let key = decode(quoted, escaped);
                let repeated = match &frame.many {
                    Some(set) => set.contains(&key),
                    None => keys[frame.base..].contains(&key),
                };
                if repeated {
                    return Err(Refusal::DuplicateKey {
                        key: truncated(&key),
                        at: path_to(text, frame.at),
                    });
                }
                match &mut frame.many {
                    Some(set) => {
                        set.insert(key);
                    }
                    None => {
                        keys.push(key);
                        if keys.len() - frame.base > LINEAR_UP_TO {
                            frame.many = Some(keys.drain(frame.base..).collect());
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// An object or array open around the scan.
struct Frame<'a> {
    /// Where it opens in the text: what the path of a repeat is found from.
    at: usize,
    /// Where its keys start on the key stack.
    base: usize,
    /// Its keys, once there are more than [`LINEAR_UP_TO`].
    many: Option<HashSet<Cow<'a, str>>>,
}

/// What the scan stops at. Everything else (values other than objects and arrays, whitespace,
/// colons) is stepped over.
enum Token<'a> {
    Open {
        object: bool,
        at: usize,
    },
    Close,
    Comma,
    /// A string followed by `:`, with its quotes, and whether it holds escapes.
    Key {
        quoted: &'a str,
        escaped: bool,
    },
}

struct Tokens<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Tokens<'a> {
    fn new(text: &'a str) -> Self {
        Self { text, at: 0 }
    }
}

impl<'a> Iterator for Tokens<'a> {
    type Item = Token<'a>;

    // Inlined into the loops that drive it: a call per token was a third of the scan's time.
    #[inline(always)]
    fn next(&mut self) -> Option<Token<'a>> {
        let bytes = self.text.as_bytes();
        loop {
            let at = self.at;
            let byte = *bytes.get(at)?;
            self.at += 1;
            match byte {
                b'{' => return Some(Token::Open { object: true, at }),
                b'[' => return Some(Token::Open { object: false, at }),
                b'}' | b']' => return Some(Token::Close),
                b',' => return Some(Token::Comma),
                b'"' => {
                    let (end, escaped) = string_end(bytes, self.at);
                    self.at = end + 1;
                    let mut next = self.at;
                    while matches!(bytes.get(next), Some(b' ' | b'\t' | b'\n' | b'\r')) {
                        next += 1;
                    }
                    if bytes.get(next) == Some(&b':') {
                        self.at = next + 1;
                        // Quotes are ASCII, so both ends are character boundaries.
                        return Some(Token::Key {
                            quoted: self.text.get(at..=end)?,
                            escaped,
                        });
                    }
                }
                // Whitespace, `:`, numbers, `true`, `false`, `null`: none holds a quote or bracket.
                _ => {}
            }
        }
    }
}

/// Where the string whose content starts at `from` ends (its closing quote, or the end of the
/// text), and whether it holds escapes.
fn string_end(bytes: &[u8], mut from: usize) -> (usize, bool) {
    let mut escaped = false;
    loop {
        from = to_quote_or_backslash(bytes, from);
        match bytes.get(from) {
            Some(b'"') => return (from, escaped),
            // A backslash: whatever it escapes (`"`, `\`, or the `u` of `\uXXXX`) is not the end.
            Some(_) => {
                escaped = true;
                from += 2;
            }
            None => return (bytes.len(), escaped),
        }
    }
}

/// The first `"` or `\` at or after `at` (or a position past the end): eight bytes at a time, which
/// is most of the scan's speed, as string contents are most of a body.
fn to_quote_or_backslash(bytes: &[u8], mut at: usize) -> usize {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    while let Some(word) = bytes
        .get(at..at + 8)
        .and_then(|chunk| <[u8; 8]>::try_from(chunk).ok())
        .map(u64::from_le_bytes)
    {
        // A byte of `word ^ QUOTES` is zero where `word` has a quote. `(x - ONES) & !x & HIGHS`
        // marks the zero bytes of `x`: exactly for the lowest one, which is all that is read.
        let quotes = word ^ QUOTES;
        let backslashes = word ^ BACKSLASHES;
        let found = ((quotes.wrapping_sub(ONES) & !quotes) | (backslashes.wrapping_sub(ONES) & !backslashes)) & HIGHS;
        if found != 0 {
            return at + (found.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    while let Some(&byte) = bytes.get(at) {
        if byte == b'"' || byte == b'\\' {
            return at;
        }
        at += 1;
    }
    at
}

/// A key as its decoded string: borrowed when it holds no escapes, else decoded by serde_json (the
/// parser whose reading of the body counts).
fn decode(quoted: &str, escaped: bool) -> Cow<'_, str> {
    let inner = quoted
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
        .unwrap_or(quoted);
    if escaped {
        if let Ok(key) = serde_json::from_str::<String>(quoted) {
            return Cow::Owned(key);
        }
    }
    Cow::Borrowed(inner)
}

/// At most [`MAX_KEY_SHOWN`] bytes of a key, cut at a character boundary and marked when cut.
fn truncated(key: &str) -> String {
    if key.len() <= MAX_KEY_SHOWN {
        return key.to_owned();
    }
    let mut end = MAX_KEY_SHOWN;
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &key[..end])
}

/// The path to the object or array that opens at byte `target` of `text` (`$.entry[0]`), found by
/// scanning again: only a refusal needs it, so the scan above keeps no places.
fn path_to(text: &str, target: usize) -> String {
    struct Place<'a> {
        object: bool,
        index: usize,
        key: Option<(&'a str, bool)>,
    }
    let mut places: Vec<Place<'_>> = Vec::new();
    for token in Tokens::new(text) {
        match token {
            Token::Open { at, .. } if at == target => break,
            Token::Open { object, .. } => places.push(Place {
                object,
                index: 0,
                key: None,
            }),
            Token::Close => {
                places.pop();
            }
            Token::Comma => {
                if let Some(place) = places.last_mut() {
                    place.index += 1;
                }
            }
            Token::Key { quoted, escaped } => {
                if let Some(place) = places.last_mut() {
                    place.key = Some((quoted, escaped));
                }
            }
        }
    }
    let mut path = String::from("$");
    for place in &places {
        if path.len() > MAX_PATH_SHOWN {
            path.push('…');
            break;
        }
        // Writing to a String cannot fail.
        let _ = match (place.object, place.key) {
            (false, _) => write!(path, "[{}]", place.index),
            (true, Some((quoted, escaped))) => {
                let key = truncated(&decode(quoted, escaped));
                if is_plain(&key) {
                    write!(path, ".{key}")
                } else {
                    write!(path, "[{key:?}]")
                }
            }
            (true, None) => Ok(()),
        };
    }
    path
}

/// Whether a key reads unquoted in a path (`$.entry`), rather than as `$["a b"]`.
fn is_plain(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The repeat `check` finds, as (key, path).
    fn repeat(text: &str) -> Option<(String, String)> {
        serde_json::from_str::<serde::de::IgnoredAny>(text).expect("test JSON is valid");
        match check(text) {
            Ok(()) => None,
            Err(Refusal::DuplicateKey { key, at }) => Some((key, at)),
            Err(Refusal::TooDeep) => panic!("too deep: {text}"),
        }
    }

    fn expect_repeat(text: &str, key: &str, at: &str) {
        assert_eq!(repeat(text), Some((key.to_owned(), at.to_owned())), "{text}");
    }

    #[test]
    fn accepts_distinct_keys_at_every_depth() {
        for text in [
            "{}",
            r#"{"object":"page","entry":[]}"#,
            r#"{"a":{"a":{"a":[{"a":1},{"a":2}]}},"b":{"a":1,"b":2}}"#,
            // The same key in sibling objects, and in a parent and its child.
            r#"{"entry":[{"id":"1","messaging":[{"id":1},{"id":2}]},{"id":"2"}]}"#,
            // Keys equal up to case, or to a prefix, are distinct.
            r#"{"id":1,"ID":2,"i":3,"id ":4,"":5}"#,
            // Strings that look like keys are values; escaped quotes do not end a string.
            r#"{"a":"b:","b":["a",":"],"c":"\"a\":","d":"\\","e":{"x\"":1,"x\\":2,"x":3}}"#,
            " [ 1 , 2.5e-3 , -3 , true , false , null , \"x\\u00e4\" , [ ] , [ [ ] ] ] ",
        ] {
            assert_eq!(repeat(text), None, "{text}");
        }
    }

    #[test]
    fn finds_a_repeat_in_the_envelope() {
        expect_repeat(r#"{"object":"page","entry":[],"object":"user"}"#, "object", "$");
    }

    #[test]
    fn finds_a_repeat_in_an_entry() {
        expect_repeat(
            r#"{"object":"page","entry":[{"id":"1","messaging":[]},{"id":"2","time":1,"id":"3"}]}"#,
            "id",
            "$.entry[1]",
        );
    }

    #[test]
    fn finds_a_repeat_in_an_item() {
        expect_repeat(
            r#"{"object":"page","entry":[{"id":"1","messaging":[{"sender":{"id":"5"},"message":{},"sender":{"id":"6"}}]}]}"#,
            "sender",
            "$.entry[0].messaging[0]",
        );
    }

    #[test]
    fn finds_a_repeat_deep_inside_an_item() {
        expect_repeat(
            r#"{"entry":[{"changes":[{"value":{"messages":[{"text":{"body":"a"}},{"text":{"body":"b","body":"c"}}]}}]}]}"#,
            "body",
            "$.entry[0].changes[0].value.messages[1].text",
        );
    }

    #[test]
    fn finds_the_first_repeat_in_document_order() {
        expect_repeat(r#"{"a":{"x":1,"x":2},"a":3}"#, "x", "$.a");
    }

    #[test]
    fn takes_escaped_and_plain_spellings_of_a_key_as_the_same_key() {
        expect_repeat(r#"{"id":"1","\u0069d":"2"}"#, "id", "$");
        expect_repeat(r#"{"\u0069\u0064":"1","id":"2"}"#, "id", "$");
        expect_repeat(r#"{"\u00e4":1,"ä":2}"#, "ä", "$");
        expect_repeat(r#"{"a\/b":1,"a/b":2}"#, "a/b", "$");
        expect_repeat(r#"{"\ud83d\ude00":1,"😀":2}"#, "😀", "$");
        expect_repeat("{\"a\" : 1 ,\n \"\\u0061\"\t:\r2}", "a", "$");
    }

    #[test]
    fn finds_repeats_in_objects_past_the_linear_size() {
        let keys: Vec<String> = (0..LINEAR_UP_TO * 3).map(|n| format!("\"k{n}\":{n}")).collect();
        let distinct = format!("{{{}}}", keys.join(","));
        assert_eq!(repeat(&distinct), None);
        for repeated in [
            0,
            LINEAR_UP_TO - 1,
            LINEAR_UP_TO,
            LINEAR_UP_TO + 1,
            LINEAR_UP_TO * 3 - 1,
        ] {
            let text = format!("{{{},\"k{repeated}\":null}}", keys.join(","));
            expect_repeat(&text, &format!("k{repeated}"), "$");
        }
        // A nested object of many keys leaves its parent's keys as they were.
        let text = format!(r#"{{"a":1,"inner":{distinct},"b":2,"a":3}}"#);
        expect_repeat(&text, "a", "$");
        let text = format!(r#"{{"many":{distinct},"then":{{"b":2,"b":3}}}}"#);
        expect_repeat(&text, "b", "$.then");
    }

    #[test]
    fn checks_an_object_of_100_000_keys_in_linear_time() {
        let keys: Vec<String> = (0..100_000).map(|n| format!("\"key{n}\":{n}")).collect();
        let text = format!(r#"{{"entry":[{{"messaging":[{{{}}}]}}]}}"#, keys.join(","));
        assert_eq!(repeat(&text), None);
        let text = format!(r#"{{"entry":[{{"messaging":[{{{},"key99999":0}}]}}]}}"#, keys.join(","));
        expect_repeat(&text, "key99999", "$.entry[0].messaging[0]");
    }

    #[test]
    fn shows_at_most_the_start_of_a_huge_key() {
        let key = "é".repeat(1_000_000);
        let text = format!(r#"{{"{key}":{{"{key}":1,"{key}":2}}}}"#);
        let Some((shown, at)) = repeat(&text) else {
            panic!("a repeat expected");
        };
        assert!(shown.len() <= MAX_KEY_SHOWN + '…'.len_utf8(), "{}", shown.len());
        assert!(shown.starts_with("éé") && shown.ends_with('…'));
        assert!(at.len() <= MAX_KEY_SHOWN + 16, "{at}");
        assert!(at.starts_with("$[\"éé"), "{at}");
    }

    #[test]
    fn bounds_the_path_of_a_deep_repeat() {
        // Two levels of nesting each, within the depth taken.
        let depth = 60;
        let key = "k".repeat(100);
        let text = format!(
            "{}{{\"x\":1,\"x\":2}}{}",
            format!("{{\"{key}\":[").repeat(depth),
            "]}".repeat(depth)
        );
        let Some((shown, at)) = repeat(&text) else {
            panic!("a repeat expected");
        };
        assert_eq!(shown, "x");
        assert!(at.len() <= MAX_PATH_SHOWN + 2 * MAX_KEY_SHOWN, "{}", at.len());
        assert!(at.ends_with('…'));
    }

    #[test]
    fn refuses_nesting_deeper_than_serde_json_reads() {
        let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert_eq!(check(&nested(MAX_DEPTH)), Ok(()));
        assert_eq!(check(&nested(MAX_DEPTH + 1)), Err(Refusal::TooDeep));
        // Four million levels cost no more than one frame each up to the bound.
        assert_eq!(check(&nested(4_000_000)), Err(Refusal::TooDeep));
        let objects = format!("{}1{}", "{\"a\":".repeat(MAX_DEPTH), "}".repeat(MAX_DEPTH));
        assert_eq!(check(&objects), Ok(()));
    }

    #[test]
    fn finds_quotes_and_backslashes_at_every_offset_of_a_word() {
        for len in 0..24 {
            let filler = "x".repeat(len);
            for text in [
                format!(r#"{{"{filler}":1,"{filler}":2}}"#),
                format!(r#"{{"{filler}\"":1,"{filler}\u0022":2}}"#),
                format!(r#"{{"{filler}":"{filler}\\","{filler}":2}}"#),
            ] {
                assert!(matches!(check(&text), Err(Refusal::DuplicateKey { .. })), "{text}");
            }
            let text = format!(r#"{{"{filler}":"\"{filler}\":","{filler}\\":2}}"#);
            assert_eq!(check(&text), Ok(()), "{text}");
        }
    }

    /// The reference: a walk with serde_json's own deserializer, keys decoded by serde_json and
    /// compared in a plain set per object. Slower than the scan, and simple enough to trust.
    mod oracle {
        use std::collections::HashSet;
        use std::fmt;

        use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

        /// The first repeated key in document order, if any, with the path to its object.
        pub(super) fn first_repeat(text: &str) -> Option<(String, String)> {
            let mut found = None;
            let mut deserializer = serde_json::Deserializer::from_str(text);
            let _ = Node { found: &mut found }.deserialize(&mut deserializer);
            found.map(|(key, path): (String, Vec<String>)| {
                let path: String = path.into_iter().rev().collect();
                (key, format!("${path}"))
            })
        }

        struct Node<'f> {
            /// The key, and the path to its object, innermost segment first.
            found: &'f mut Option<(String, Vec<String>)>,
        }

        impl<'de> DeserializeSeed<'de> for Node<'_> {
            type Value = ();

            fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
                deserializer.deserialize_any(self)
            }
        }

        impl<'de> Visitor<'de> for Node<'_> {
            type Value = ();

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
                let mut seen = HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        *self.found = Some((key, Vec::new()));
                        return Err(A::Error::custom("repeat"));
                    }
                    if let Err(err) = map.next_value_seed(Node {
                        found: &mut *self.found,
                    }) {
                        if let Some((_, path)) = self.found {
                            let plain = key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                            path.push(if plain && !key.is_empty() {
                                format!(".{key}")
                            } else {
                                format!("[{key:?}]")
                            });
                        }
                        return Err(err);
                    }
                }
                Ok(())
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
                let mut index = 0;
                loop {
                    match seq.next_element_seed(Node {
                        found: &mut *self.found,
                    }) {
                        Ok(Some(())) => index += 1,
                        Ok(None) => return Ok(()),
                        Err(err) => {
                            if let Some((_, path)) = self.found {
                                path.push(format!("[{index}]"));
                            }
                            return Err(err);
                        }
                    }
                }
            }

            fn visit_bool<E>(self, _: bool) -> Result<(), E> {
                Ok(())
            }

            fn visit_i64<E>(self, _: i64) -> Result<(), E> {
                Ok(())
            }

            fn visit_u64<E>(self, _: u64) -> Result<(), E> {
                Ok(())
            }

            fn visit_f64<E>(self, _: f64) -> Result<(), E> {
                Ok(())
            }

            fn visit_str<E>(self, _: &str) -> Result<(), E> {
                Ok(())
            }

            fn visit_unit<E>(self) -> Result<(), E> {
                Ok(())
            }
        }
    }

    /// A key drawn from few names, spelled plainly or with escapes, so that repeats, and repeats
    /// spelled differently, are common; objects grow past the linear size.
    fn key() -> impl Strategy<Value = String> {
        (0..24_u8, 0..4_u8).prop_map(|(n, spelling)| match spelling {
            0 | 1 => format!("k{n}"),
            // `k` is U+006B.
            2 => format!("\\u006b{n}"),
            _ => format!("k\\/{n}\\\"é"),
        })
    }

    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("0".to_owned()),
            Just("-12.5e3".to_owned()),
            Just("true".to_owned()),
            Just("null".to_owned()),
            Just(r#""k0""#.to_owned()),
            Just(r#""a\"b\\""#.to_owned()),
            Just(r#""\u00e4:{}[],""#.to_owned()),
            "[a-z:,{}\\[\\] ]{0,12}".prop_map(|s| format!("\"{s}\"")),
        ]
    }

    /// Whitespace JSON allows around tokens.
    fn space() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just(""), Just(""), Just(" "), Just("\n\t "), Just("\r")]
    }

    fn json() -> impl Strategy<Value = String> {
        scalar().prop_recursive(5, 256, 40, |inner| {
            prop_oneof![
                proptest::collection::vec((inner.clone(), space()), 0..6)
                    .prop_map(|items| format!("[{}]", join(items.iter().map(|(v, s)| format!("{s}{v}{s}"))))),
                proptest::collection::vec((key(), inner, space()), 0..40).prop_map(|members| format!(
                    "{{{}}}",
                    join(members.iter().map(|(k, v, s)| format!("{s}\"{k}\"{s}:{s}{v}{s}")))
                )),
            ]
        })
    }

    fn join(parts: impl Iterator<Item = String>) -> String {
        parts.collect::<Vec<_>>().join(",")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn finds_the_repeat_serde_json_finds(text in json()) {
            prop_assume!(serde_json::from_str::<serde::de::IgnoredAny>(&text).is_ok());
            let found = match check(&text) {
                Ok(()) => None,
                Err(Refusal::DuplicateKey { key, at }) => Some((key, at)),
                Err(Refusal::TooDeep) => return Err(TestCaseError::fail("too deep")),
            };
            prop_assert_eq!(found, oracle::first_repeat(&text), "{}", text);
        }

        #[test]
        fn answers_any_text_without_panicking(text in any::<String>()) {
            let _ = check(&text);
        }

        #[test]
        fn answers_broken_json_without_panicking(text in json(), cut in any::<proptest::sample::Index>()) {
            let mut end = cut.index(text.len() + 1);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            let _ = check(&text[..end]);
        }
    }
}
