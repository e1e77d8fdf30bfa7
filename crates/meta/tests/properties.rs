//! Properties of normalization over generated input: every item is kept, in order, byte for byte
//! (and a text it points at decodes to its `data.text`), and nothing (no body, no JSON value anywhere in it) makes parsing, verification or normalization
//! panic.
//!
//! Envelopes are generated per Meta object: Messenger-shaped items and changes for `page`,
//! `instagram` and other objects, and for `whatsapp_business_account` changes whose values hold
//! `messages[]` and `statuses[]`, each of which must come out as one item.

mod support;

use std::fs;
use std::sync::OnceLock;

use pagewire_meta::{Envelope, SignatureHeader};
use proptest::prelude::*;
use serde_json::{json, Value};

use support::{fixtures, normalize};

/// What one generated item is expected to come out as.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Expected {
    entry_index: u32,
    entry_id: Option<String>,
    field: &'static str,
    item_index: u32,
    /// For WhatsApp messages and statuses: the array in the change's value, and the index in it.
    nested: Option<(String, u32)>,
    raw: String,
}

/// One element of a generated item array.
#[derive(Debug, Clone)]
enum Element {
    /// One item, exactly this text.
    Plain(String),
    /// A WhatsApp `messages` change: one item per message, then per status (each exactly its
    /// text), or one item for the whole change when it has neither.
    Whatsapp(WhatsappChange),
}

#[derive(Debug, Clone)]
struct WhatsappChange {
    field_first: bool,
    contacts: String,
    messages: Vec<String>,
    statuses: Vec<String>,
}

/// One generated entry: its id as JSON text with the id it must read as, and its item arrays.
#[derive(Debug, Clone)]
struct GeneratedEntry {
    id: Option<(String, String)>,
    arrays: Vec<(&'static str, Vec<Element>)>,
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

/// A JSON value as text, compact or pretty, so that raw bytes vary.
fn serialize(value: &Value, pretty: bool) -> String {
    if pretty {
        serde_json::to_string_pretty(value).unwrap_or_default()
    } else {
        value.to_string()
    }
}

/// The event of a Messenger or Instagram item, of any kind either product sends.
fn messaging_event() -> impl Strategy<Value = Value> {
    prop_oneof![
        (text(), text()).prop_map(|(mid, text)| json!({"message": {"mid": mid, "text": text}})),
        (text(), text()).prop_map(|(mid, payload)| {
            json!({"message": {"mid": mid, "text": "ok", "quick_reply": {"payload": payload}}})
        }),
        (text(), any::<u64>())
            .prop_map(|(mid, app_id)| json!({"message": {"mid": mid, "is_echo": true, "app_id": app_id}})),
        text().prop_map(|url| json!({"message": {"mid": "m_1", "attachments": [
            {"type": "image", "payload": {"url": url}},
            {"type": "fallback", "url": "https://x", "payload": null},
        ]}})),
        text().prop_map(|mid| json!({"message": {"mid": mid, "is_deleted": true}})),
        any::<bool>().prop_map(|flag| json!({"message": {"mid": "m_5", "is_unsupported": flag}})),
        text().prop_map(|url| json!({"message": {"mid": "m_6", "reply_to": {"story": {"url": url, "id": "1"}}}})),
        (text(), proptest::option::of(text()))
            .prop_map(|(title, payload)| json!({"postback": {"mid": "m_2", "title": title, "payload": payload}})),
        text().prop_map(|reference| {
            json!({"referral": {"ref": reference, "source": "SHORTLINK", "type": "OPEN_THREAD"}})
        }),
        any::<i64>().prop_map(|watermark| json!({"read": {"watermark": watermark}})),
        text().prop_map(|mid| json!({"read": {"mid": mid}})),
        any::<i64>().prop_map(|watermark| json!({"delivery": {"mids": ["m_3"], "watermark": watermark}})),
        Just(json!({"reaction": {"reaction": "love", "emoji": "❤️", "action": "react", "mid": "m_4"}})),
        (text(), any::<i64>()).prop_map(|(text, n)| json!({"message_edit": {"mid": "m_7", "text": text, "num_edit": n}})),
        (any::<i64>(), text()).prop_map(|(score, payload)| json!({"game_play": {"game_id": "1", "score": score, "payload": payload}})),
        text().prop_map(|answer| json!({"messaging_feedback": {"feedback_screens": [{"screen_id": 0, "questions": {"q": {"type": "csat", "payload": answer}}}]}})),
        text().prop_map(|feedback| json!({"response_feedback": {"mid": "m_8", "feedback": feedback}})),
        (text(), any::<u64>()).prop_map(|(note, id)| json!({"order": {"products": [{"id": id, "currency": "EUR"}], "note": note}})),
        Just(json!({"pass_thread_control": {"new_owner_app_id": "1"}})),
        Just(json!({"message": "TEST_MESSAGE"})),
    ]
}

/// A Messenger-shaped item of a random kind.
fn messaging_value() -> impl Strategy<Value = Value> {
    (party(), party(), proptest::option::of(any::<i64>()), messaging_event()).prop_map(
        |(sender, recipient, timestamp, event)| {
            let mut item = json!({ "sender": sender, "recipient": recipient });
            if let (Some(timestamp), Some(object)) = (timestamp, item.as_object_mut()) {
                object.insert("timestamp".to_owned(), Value::from(timestamp));
            }
            if let (Some(object), Value::Object(event)) = (item.as_object_mut(), event) {
                object.extend(event);
            }
            item
        },
    )
}

fn messaging_item() -> impl Strategy<Value = Element> {
    (messaging_value(), any::<bool>()).prop_map(|(item, pretty)| Element::Plain(serialize(&item, pretty)))
}

/// A change of `page` or `instagram`: feed, leadgen, comments, mentions, dashboard test payloads
/// (a messaging item as the value) and any other field.
fn change_item() -> impl Strategy<Value = Element> {
    let field = prop_oneof![
        Just("feed".to_owned()),
        Just("leadgen".to_owned()),
        Just("comments".to_owned()),
        Just("live_comments".to_owned()),
        Just("mentions".to_owned()),
        Just("messages".to_owned()),
        Just("messaging_postbacks".to_owned()),
        Just("messaging_seen".to_owned()),
        Just("standby".to_owned()),
        "[a-z_]{1,12}",
        any::<String>(),
    ];
    let value = prop_oneof![
        text().prop_map(|message| json!({"message": message, "verb": "add", "item": "comment", "created_time": 1})),
        (text(), id_value())
            .prop_map(|(text, id)| json!({"id": id, "text": text, "from": {"id": id}, "media": {"id": "1"}})),
        id_value().prop_map(|id| json!({"media_id": id, "comment_id": id})),
        id_value().prop_map(|id| json!({"leadgen_id": id, "form_id": id, "created_time": "1747231892"})),
        messaging_value(),
        Just(Value::Null),
    ];
    (field, value, any::<bool>())
        .prop_map(|(field, value, pretty)| Element::Plain(serialize(&json!({"field": field, "value": value}), pretty)))
}

/// One element of a WhatsApp change's `value.messages[]`, of any type.
fn whatsapp_message() -> impl Strategy<Value = String> {
    let body = prop_oneof![
        text().prop_map(|body| json!({"type": "text", "text": {"body": body}})),
        (prop::sample::select(vec!["image", "audio", "video", "document", "sticker"]), text()).prop_map(|(kind, caption)| {
            json!({"type": kind, kind: {"id": "1234567890", "mime_type": "image/jpeg", "sha256": "x/y+z=", "caption": caption}})
        }),
        Just(json!({"type": "location", "location": {"latitude": 60.17, "longitude": 24.94}})),
        text().prop_map(|name| json!({"type": "contacts", "contacts": [{"name": {"formatted_name": name}}]})),
        (text(), text()).prop_map(|(id, title)| {
            json!({"type": "interactive", "interactive": {"type": "button_reply", "button_reply": {"id": id, "title": title}}})
        }),
        (text(), text()).prop_map(|(id, title)| {
            json!({"type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": id, "title": title, "description": "d"}}})
        }),
        (text(), text()).prop_map(|(payload, text)| json!({"type": "button", "button": {"payload": payload, "text": text}})),
        proptest::option::of(text()).prop_map(|emoji| json!({"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": emoji}})),
        text().prop_map(|text| json!({"type": "order", "order": {"catalog_id": 1, "text": text, "product_items": []}})),
        text().prop_map(|body| json!({"type": "system", "system": {"body": body, "wa_id": "1", "type": "user_changed_number"}})),
        Just(json!({"type": "unsupported", "errors": [{"code": 131051, "title": "Message type unknown"}]})),
        Just(json!({"type": "interactive", "interactive": {"type": "nfm_reply"}})),
        Just(json!({"text": {"body": "no type"}})),
    ];
    (
        id_value(),
        text(),
        prop_oneof![id_value(), Just(json!("1747231892"))],
        body,
        any::<bool>(),
    )
        .prop_map(|(from, id, timestamp, body, pretty)| {
            let mut message = json!({"from": from, "id": id, "timestamp": timestamp});
            if let (Some(object), Value::Object(body)) = (message.as_object_mut(), body) {
                object.extend(body);
            }
            serialize(&message, pretty)
        })
}

/// One element of a WhatsApp change's `value.statuses[]`.
fn whatsapp_status() -> impl Strategy<Value = String> {
    (
        text(),
        prop::sample::select(vec!["sent", "delivered", "read", "failed", "deleted"]),
        id_value(),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(id, status, recipient, with_errors, pretty)| {
            let mut value = json!({"id": id, "status": status, "timestamp": "1747231892", "recipient_id": recipient});
            if let (true, Some(object)) = (with_errors, value.as_object_mut()) {
                object.insert(
                    "errors".to_owned(),
                    json!([{"code": 131026, "title": "Message undeliverable"}]),
                );
            }
            serialize(&value, pretty)
        })
}

/// A change of a WhatsApp entry: `messages` with messages and statuses (possibly neither), or
/// another field.
fn whatsapp_change() -> impl Strategy<Value = Element> {
    let messages = (
        any::<bool>(),
        proptest::collection::vec((text(), id_value()), 0..3),
        proptest::collection::vec(whatsapp_message(), 0..5),
        proptest::collection::vec(whatsapp_status(), 0..5),
    )
        .prop_map(|(field_first, contacts, messages, statuses)| {
            let contacts: Vec<Value> = contacts
                .into_iter()
                .map(|(name, wa_id)| json!({"profile": {"name": name}, "wa_id": wa_id}))
                .collect();
            Element::Whatsapp(WhatsappChange {
                field_first,
                contacts: Value::Array(contacts).to_string(),
                messages,
                statuses,
            })
        });
    let other = (
        prop::sample::select(vec!["message_template_status_update", "account_update", "Weird-Field"]),
        text(),
    )
        .prop_map(|(field, event)| Element::Plain(json!({"field": field, "value": {"event": event}}).to_string()));
    prop_oneof![4 => messages, 1 => other]
}

fn entry(whatsapp: bool) -> impl Strategy<Value = GeneratedEntry> {
    let array = |items: BoxedStrategy<Element>| proptest::option::of(proptest::collection::vec(items, 0..6));
    let changes = if whatsapp {
        whatsapp_change().boxed()
    } else {
        change_item().boxed()
    };
    (
        proptest::option::of(entry_id()),
        array(messaging_item().boxed()),
        array(messaging_item().boxed()),
        array(changes),
    )
        .prop_map(|(id, messaging, standby, changes)| {
            let arrays = [("messaging", messaging), ("standby", standby), ("changes", changes)]
                .into_iter()
                .filter_map(|(field, items)| items.map(|items| (field, items)))
                .collect();
            GeneratedEntry { id, arrays }
        })
}

/// An object and entries generated for it.
fn object_and_entries() -> impl Strategy<Value = (&'static str, Vec<GeneratedEntry>)> {
    prop::sample::select(vec!["page", "instagram", "whatsapp_business_account", "user"]).prop_flat_map(|object| {
        let whatsapp = object == "whatsapp_business_account";
        (Just(object), proptest::collection::vec(entry(whatsapp), 0..5))
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
                let slot = Expected {
                    entry_index,
                    entry_id: entry_id.clone(),
                    field,
                    item_index: u32::try_from(item_index).unwrap_or(u32::MAX),
                    nested: None,
                    raw: String::new(),
                };
                write_element(&mut body, item, slot, spacing, &mut expected);
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
                nested: None,
                raw: body[entry_start..].to_owned(),
            });
        }
    }
    body.push_str("]}");
    (body, expected)
}

/// Appends one array element to `body` and what it must yield to `expected`.
fn write_element(body: &mut String, element: &Element, slot: Expected, spacing: &str, expected: &mut Vec<Expected>) {
    let change = match element {
        Element::Plain(text) => {
            body.push_str(text);
            expected.push(Expected {
                raw: text.clone(),
                ..slot
            });
            return;
        }
        Element::Whatsapp(change) => change,
    };
    let start = body.len();
    let mut nested = Vec::new();
    body.push('{');
    if change.field_first {
        body.push_str(&format!("\"field\":{spacing}\"messages\","));
    }
    body.push_str(&format!(
        "\"value\":{{\"messaging_product\":\"whatsapp\",\"metadata\":{{\"display_phone_number\":\"15550783881\",\"phone_number_id\":\"106540352242922\"}},\"contacts\":{}",
        change.contacts
    ));
    for (array, list) in [("messages", &change.messages), ("statuses", &change.statuses)] {
        body.push_str(&format!(",{spacing}\"{array}\":["));
        for (index, text) in list.iter().enumerate() {
            if index > 0 {
                body.push(',');
            }
            body.push_str(spacing);
            body.push_str(text);
            nested.push((array.to_owned(), u32::try_from(index).unwrap_or(u32::MAX), text.clone()));
        }
        body.push(']');
    }
    body.push('}');
    if !change.field_first {
        body.push_str(",\"field\":\"messages\"");
    }
    body.push('}');
    if nested.is_empty() {
        expected.push(Expected {
            raw: body[start..].to_owned(),
            ..slot.clone()
        });
    }
    for (array, index, raw) in nested {
        expected.push(Expected {
            nested: Some((array, index)),
            raw,
            ..slot.clone()
        });
    }
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
            "game_play",
            "messaging_feedback",
            "response_feedback",
            "order",
            "mid",
            "text",
            "attachments",
            "type",
            "url",
            "title",
            "payload",
            "quick_reply",
            "reply_to",
            "story",
            "commands",
            "is_echo",
            "is_deleted",
            "is_unsupported",
            "app_id",
            "metadata",
            "ref",
            "source",
            "ad_id",
            "ads_context_data",
            "watermark",
            "mids",
            "products",
            "currency",
            "messages",
            "statuses",
            "contacts",
            "profile",
            "name",
            "wa_id",
            "phone_number_id",
            "from",
            "interactive",
            "button_reply",
            "list_reply",
            "button",
            "system",
            "errors",
            "status",
            "recipient_id",
            "media",
            "media_id",
            "comment_id",
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

/// Every fixture body, read once.
fn fixture_bodies() -> &'static [Vec<u8>] {
    static BODIES: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    BODIES.get_or_init(|| {
        fixtures()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, path)| fs::read(path).ok())
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn keeps_every_item_in_order_byte_for_byte(
        (object, entries) in object_and_entries(),
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
                nested: item.nested.as_ref().map(|nested| (nested.array.clone(), nested.index)),
                raw: item.raw.get().to_owned(),
            })
            .collect();
        prop_assert_eq!(actual, expected);
        // A text pointed at lies in its item's bytes and decodes to `data.text` (the store puts
        // it back from there).
        for item in &items {
            if let Some(text) = item.text {
                let (raw, text_bytes) = (item.raw.get().as_bytes().as_ptr_range(), text.get().as_bytes().as_ptr_range());
                prop_assert!(raw.start <= text_bytes.start && text_bytes.end <= raw.end);
                let decoded: String = serde_json::from_str(text.get()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(&item.data["text"], &Value::String(decoded));
            }
        }
        let slots = Envelope::parse(body.as_bytes()).map(|envelope| envelope.item_count()).ok();
        if object == "whatsapp_business_account" {
            prop_assert!(slots.is_some_and(|slots| slots <= items.len()));
        } else {
            prop_assert_eq!(slots, Some(items.len()));
        }
    }

    #[test]
    fn never_panics_on_arbitrary_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        parse_and_normalize(&body);
    }

    #[test]
    fn never_panics_verifying_arbitrary_bytes(
        header in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
        sha256 in proptest::option::of("[0-9a-fA-F]{0,70}"),
        body in proptest::collection::vec(any::<u8>(), 0..256),
        secret in proptest::collection::vec(any::<u8>(), 0..40),
        allow_sha1 in any::<bool>(),
    ) {
        let header = match sha256 {
            Some(hex) => Some(format!("sha256={hex}").into_bytes()),
            None => header,
        };
        if let Ok(parsed) = SignatureHeader::parse(header.as_deref(), allow_sha1) {
            let _ = parsed.verify(&secret, &body);
        }
    }

    #[test]
    fn never_panics_on_arbitrary_json_bodies(body in json_value()) {
        parse_and_normalize(body.to_string().as_bytes());
    }

    #[test]
    fn never_panics_on_arbitrary_json_in_entries_items_and_events(
        object in prop::sample::select(vec!["page", "instagram", "whatsapp_business_account", "other"]),
        entry in json_value(),
        item in json_value(),
        event_key in prop::sample::select(vec![
            "message", "postback", "referral", "reaction", "read", "delivery", "message_edit",
            "optin", "account_linking", "pass_thread_control", "take_thread_control",
            "request_thread_control", "app_roles", "policy_enforcement", "game_play",
            "messaging_feedback", "response_feedback", "order",
        ]),
        field in prop::sample::select(vec![
            "messages", "feed", "leadgen", "comments", "mentions", "messaging_postbacks", "standby", "x",
        ]),
        event in json_value(),
        party in json_value(),
        timestamp in json_value(),
        message in json_value(),
        status in json_value(),
    ) {
        let body = json!({
            "object": object,
            "entry": [
                entry,
                {"id": "1", "time": timestamp.clone(), "messaging": [item.clone()], "standby": [item.clone()], "changes": [event.clone()]},
                {"id": 2, "messaging": [{"sender": party.clone(), "recipient": party, "timestamp": timestamp, event_key: event.clone()}]},
                {"id": "3", "changes": [
                    {"field": field, "value": item},
                    {"field": field, "value": {"metadata": message.clone(), "contacts": status.clone(), "messages": [message.clone(), event], "statuses": [status.clone()]}},
                    {"field": "messages", "value": {"messages": message, "statuses": status}},
                ]},
            ],
        });
        parse_and_normalize(body.to_string().as_bytes());
    }

    #[test]
    fn never_panics_on_a_damaged_real_body(
        pick in any::<prop::sample::Index>(),
        cut in 0usize..4000,
        position in 0usize..4000,
        byte in any::<u8>(),
    ) {
        let bodies = fixture_bodies();
        prop_assume!(!bodies.is_empty());
        let mut damaged = bodies[pick.index(bodies.len())].clone();
        damaged.truncate(cut.max(1));
        let position = position % damaged.len();
        damaged[position] = byte;
        parse_and_normalize(&damaged);
    }
}
