//! Properties of normalization over generated input: every item is kept, in order, byte for byte,
//! and nothing (no body, no JSON value anywhere in it) makes parsing or normalization panic.

mod support;

use pagewire_meta::Envelope;
use proptest::prelude::*;
use serde_json::{json, Value};

use support::normalize;

/// What one generated item is expected to come out as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    entry_index: u32,
    entry_id: Option<String>,
    field: &'static str,
    item_index: u32,
    raw: String,
}

/// One generated entry: its id as JSON text with the id it must read as, and its item arrays.
#[derive(Debug, Clone)]
struct GeneratedEntry {
    id: Option<(String, String)>,
    arrays: Vec<(&'static str, Vec<String>)>,
}

/// An entry id as JSON text (a string, or a number of up to 26 digits, beyond 2^64) and the id it
/// must read as.
fn entry_id() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        "[0-9]{1,20}".prop_map(|digits| (format!("\"{digits}\""), digits)),
        "[1-9][0-9]{0,25}".prop_map(|digits| (digits.clone(), digits)),
    ]
}

fn id_value() -> impl Strategy<Value = Value> {
    prop_oneof!["[0-9]{1,20}".prop_map(Value::from), any::<u64>().prop_map(Value::from),]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-zA-Z0-9 ]{0,20}", "[äöåÄÖÅ😀€/\"\\\\\n]{0,10}", any::<String>(),]
}

fn party() -> impl Strategy<Value = Value> {
    prop_oneof![
        id_value().prop_map(|id| json!({ "id": id })),
        "[a-z0-9_]{1,20}".prop_map(|user_ref| json!({ "user_ref": user_ref })),
    ]
}

/// A Messenger item of a random kind, serialized compactly or pretty (so raw bytes vary).
fn messaging_item() -> impl Strategy<Value = String> {
    let event = prop_oneof![
        (text(), text()).prop_map(|(mid, text)| json!({"message": {"mid": mid, "text": text}})),
        (text(), text()).prop_map(|(mid, payload)| {
            json!({"message": {"mid": mid, "text": "ok", "quick_reply": {"payload": payload}}})
        }),
        (text(), any::<u64>())
            .prop_map(|(mid, app_id)| { json!({"message": {"mid": mid, "is_echo": true, "app_id": app_id}}) }),
        text().prop_map(|url| json!({"message": {"mid": "m_1", "attachments": [
            {"type": "image", "payload": {"url": url}},
            {"type": "fallback", "url": "https://x", "payload": null},
        ]}})),
        (text(), proptest::option::of(text()))
            .prop_map(|(title, payload)| { json!({"postback": {"mid": "m_2", "title": title, "payload": payload}}) }),
        text().prop_map(|reference| {
            json!({"referral": {"ref": reference, "source": "SHORTLINK", "type": "OPEN_THREAD"}})
        }),
        any::<i64>().prop_map(|watermark| json!({"read": {"watermark": watermark}})),
        any::<i64>().prop_map(|watermark| json!({"delivery": {"mids": ["m_3"], "watermark": watermark}})),
        Just(json!({"reaction": {"reaction": "love", "emoji": "❤️", "action": "react", "mid": "m_4"}})),
        Just(json!({"game_play": {"score": 1}})),
        Just(json!({"message": "TEST_MESSAGE"})),
    ];
    (
        party(),
        party(),
        proptest::option::of(any::<i64>()),
        event,
        any::<bool>(),
    )
        .prop_map(|(sender, recipient, timestamp, event, pretty)| {
            let mut item = json!({ "sender": sender, "recipient": recipient });
            if let (Some(timestamp), Some(object)) = (timestamp, item.as_object_mut()) {
                object.insert("timestamp".to_owned(), Value::from(timestamp));
            }
            if let (Some(object), Value::Object(event)) = (item.as_object_mut(), event) {
                object.extend(event);
            }
            if pretty {
                serde_json::to_string_pretty(&item).unwrap_or_default()
            } else {
                item.to_string()
            }
        })
}

fn change_item() -> impl Strategy<Value = String> {
    ("[a-z_]{1,12}", text())
        .prop_map(|(field, message)| json!({"field": field, "value": {"message": message, "verb": "add"}}).to_string())
}

fn entry() -> impl Strategy<Value = GeneratedEntry> {
    let array = |items: BoxedStrategy<String>| proptest::option::of(proptest::collection::vec(items, 0..6));
    (
        proptest::option::of(entry_id()),
        array(messaging_item().boxed()),
        array(messaging_item().boxed()),
        array(change_item().boxed()),
    )
        .prop_map(|(id, messaging, standby, changes)| {
            let arrays = [("messaging", messaging), ("standby", standby), ("changes", changes)]
                .into_iter()
                .filter_map(|(field, items)| items.map(|items| (field, items)))
                .collect();
            GeneratedEntry { id, arrays }
        })
}

/// Writes the envelope by hand, with varying whitespace, and records where every item must land.
fn envelope(object: &str, entries: &[GeneratedEntry], spacing: &str) -> (String, Vec<Expected>) {
    let mut body = format!("{{{spacing}\"object\":{spacing}\"{object}\",\"entry\":[");
    let mut expected = Vec::new();
    for (entry_index, entry) in entries.iter().enumerate() {
        let entry_index = u32::try_from(entry_index).unwrap_or(u32::MAX);
        if entry_index > 0 {
            body.push(',');
        }
        body.push_str(spacing);
        let entry_start = body.len();
        body.push('{');
        let mut first = true;
        let entry_id = entry.id.as_ref().map(|(_, id)| id.clone());
        if let Some((json, _)) = &entry.id {
            body.push_str(&format!("\"id\":{json}"));
            first = false;
        }
        for (field, items) in &entry.arrays {
            if !first {
                body.push(',');
            }
            first = false;
            body.push_str(&format!("\"{field}\":["));
            for (item_index, item) in items.iter().enumerate() {
                if item_index > 0 {
                    body.push(',');
                }
                body.push_str(spacing);
                body.push_str(item);
                expected.push(Expected {
                    entry_index,
                    entry_id: entry_id.clone(),
                    field,
                    item_index: u32::try_from(item_index).unwrap_or(u32::MAX),
                    raw: item.clone(),
                });
            }
            body.push_str(spacing);
            body.push(']');
        }
        body.push('}');
        if entry.arrays.is_empty() {
            expected.push(Expected {
                entry_index,
                entry_id,
                field: "entry",
                item_index: 0,
                raw: body[entry_start..].to_owned(),
            });
        }
    }
    body.push_str("]}");
    (body, expected)
}

/// Any JSON value, with keys Meta uses so that generated objects reach the readers.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::from),
        "[0-9]{1,30}".prop_map(Value::from),
    ];
    let key = prop_oneof![
        prop::sample::select(vec![
            "object",
            "entry",
            "id",
            "time",
            "messaging",
            "standby",
            "changes",
            "field",
            "value",
            "sender",
            "recipient",
            "timestamp",
            "user_ref",
            "message",
            "postback",
            "referral",
            "reaction",
            "read",
            "delivery",
            "message_edit",
            "optin",
            "account_linking",
            "pass_thread_control",
            "take_thread_control",
            "request_thread_control",
            "app_roles",
            "policy_enforcement",
            "policy-enforcement",
            "mid",
            "text",
            "attachments",
            "type",
            "url",
            "title",
            "payload",
            "quick_reply",
            "reply_to",
            "commands",
            "is_echo",
            "app_id",
            "metadata",
            "ref",
            "source",
            "ad_id",
            "ads_context_data",
            "watermark",
            "mids",
        ])
        .prop_map(str::to_owned),
        any::<String>(),
    ];
    leaf.prop_recursive(5, 96, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((key.clone(), inner), 0..8)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

/// Parses and, if the body is an envelope, normalizes it; the point is only to not panic.
fn parse_and_normalize(body: &[u8]) {
    if Envelope::parse(body).is_ok() {
        let items = normalize(body).unwrap_or_default();
        for item in items {
            assert!(!item.dedup_key.is_empty());
            assert!(item.event_type.contains('.'));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn keeps_every_item_in_order_byte_for_byte(
        object in prop::sample::select(vec!["page", "instagram", "whatsapp_business_account", "user"]),
        entries in proptest::collection::vec(entry(), 0..5),
        spacing in prop::sample::select(vec!["", " ", "\n  ", "\t"]),
    ) {
        let (body, expected) = envelope(object, &entries, spacing);
        let items = normalize(body.as_bytes()).map_err(TestCaseError::fail)?;
        let actual: Vec<Expected> = items
            .iter()
            .map(|item| Expected {
                entry_index: item.entry_index,
                entry_id: item.entry_id.clone(),
                field: item.field,
                item_index: item.item_index,
                raw: item.raw.get().to_owned(),
            })
            .collect();
        prop_assert_eq!(actual, expected);
        prop_assert_eq!(Envelope::parse(body.as_bytes()).map(|e| e.item_count()).ok(), Some(items.len()));
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_and_normalize(&body);
    }

    #[test]
    fn never_panics_on_arbitrary_json_bodies(body in json_value()) {
        parse_and_normalize(body.to_string().as_bytes());
    }

    #[test]
    fn never_panics_on_arbitrary_json_in_entries_items_and_events(
        object in prop::sample::select(vec!["page", "instagram", "other"]),
        entry in json_value(),
        item in json_value(),
        event_key in prop::sample::select(vec![
            "message", "postback", "referral", "reaction", "read", "delivery", "message_edit",
            "optin", "account_linking", "pass_thread_control", "take_thread_control",
            "request_thread_control", "app_roles", "policy_enforcement",
        ]),
        event in json_value(),
        party in json_value(),
        timestamp in json_value(),
    ) {
        let body = json!({
            "object": object,
            "entry": [
                entry,
                {"id": "1", "time": timestamp.clone(), "messaging": [item.clone()], "standby": [item], "changes": [event.clone()]},
                {"id": 2, "messaging": [{"sender": party.clone(), "recipient": party, "timestamp": timestamp, event_key: event}]},
            ],
        });
        parse_and_normalize(body.to_string().as_bytes());
    }

    #[test]
    fn never_panics_on_a_damaged_real_body(
        cut in 0usize..2000,
        position in 0usize..2000,
        byte in any::<u8>(),
    ) {
        let body = include_bytes!("fixtures/messenger/batch_three_entries_two_pages.json");
        let mut damaged = body.to_vec();
        damaged.truncate(cut.max(1));
        let position = position % damaged.len();
        damaged[position] = byte;
        parse_and_normalize(&damaged);
    }
}
