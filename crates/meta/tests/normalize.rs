//! Normalization of Meta's documented payloads (the fixtures), snapshotted, and the contracts that
//! hold across them.

mod support;

use std::collections::BTreeMap;
use std::fs;

use pagewire_core::{Direction, EventId, InboundId, NestedSource, Platform, TenantId, EVENT_VERSION};
use pagewire_meta::Item;
use serde::Serialize;
use serde_json::{json, Value};

use support::{fixture, fixtures, normalize};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Everything an item says, in the order a reviewer reads it; `raw` as the exact text sent.
#[derive(Serialize)]
struct ItemView<'i> {
    entry_index: u32,
    item_index: u32,
    field: &'i str,
    nested: Option<&'i NestedSource>,
    entry_id: Option<&'i str>,
    event_type: &'i str,
    platform: Platform,
    page_id: &'i str,
    conversation_id: Option<&'i str>,
    sender_id: Option<&'i str>,
    recipient_id: Option<&'i str>,
    direction: Direction,
    standby: bool,
    timestamp_ms: Option<i64>,
    dedup_key: &'i str,
    data: &'i Value,
    raw: &'i str,
}

impl<'i> From<&'i Item<'_>> for ItemView<'i> {
    fn from(item: &'i Item<'_>) -> Self {
        Self {
            entry_index: item.entry_index,
            item_index: item.item_index,
            field: item.field,
            nested: item.nested.as_ref(),
            entry_id: item.entry_id.as_deref(),
            event_type: &item.event_type,
            platform: item.platform,
            page_id: &item.page_id,
            conversation_id: item.conversation_id.as_deref(),
            sender_id: item.sender_id.as_deref(),
            recipient_id: item.recipient_id.as_deref(),
            direction: item.direction,
            standby: item.standby,
            timestamp_ms: item.timestamp_ms,
            dedup_key: &item.dedup_key,
            data: &item.data,
            raw: item.raw.get(),
        }
    }
}

#[test]
fn normalizes_every_fixture_as_snapshotted() -> TestResult {
    let fixtures = fixtures()?;
    assert!(fixtures.len() >= 70, "fixtures went missing");
    for (name, path) in fixtures {
        let body = fs::read(&path)?;
        let items = normalize(&body)?;
        let views: Vec<ItemView<'_>> = items.iter().map(ItemView::from).collect();
        insta::assert_json_snapshot!(name, views);
    }
    Ok(())
}

#[test]
fn yields_every_item_of_every_entry_in_order() -> TestResult {
    let body = fixture("messenger/batch_three_entries_two_pages.json")?;
    let items = normalize(&body)?;
    let positions: Vec<_> = items
        .iter()
        .map(|item| (item.entry_index, item.field, item.item_index))
        .collect();
    assert_eq!(
        positions,
        [
            (0, "messaging", 0),
            (0, "messaging", 1),
            (1, "messaging", 0),
            (1, "messaging", 1),
            (1, "standby", 0),
            (2, "messaging", 0),
            (2, "messaging", 1),
            (2, "messaging", 2),
        ]
    );
    let types: Vec<_> = items.iter().map(|item| item.event_type.as_str()).collect();
    assert_eq!(
        types,
        [
            "messenger.message",
            "messenger.read",
            "messenger.postback",
            "messenger.delivery",
            "messenger.message",
            "messenger.quick_reply",
            "messenger.reaction",
            "messenger.message_echo",
        ]
    );
    let pages: Vec<_> = items.iter().map(|item| item.page_id.as_str()).collect();
    assert_eq!(pages[..2], ["104881234567890"; 2]);
    assert_eq!(pages[2..5], ["109876543210987"; 3]);
    assert_eq!(pages[5..], ["104881234567890"; 3]);
    Ok(())
}

#[test]
fn keeps_ids_beyond_2_pow_53_exact() -> TestResult {
    let body = fixture("messenger/numeric_ids_beyond_2_pow_53.json")?;
    let items = normalize(&body)?;
    let [message, echo, delivery] = items.as_slice() else {
        return Err(format!("three items expected, got {}", items.len()).into());
    };
    assert_eq!(message.entry_id.as_deref(), Some("104881234567890"));
    assert_eq!(message.sender_id.as_deref(), Some("9007199254740993"));
    assert_eq!(
        message.conversation_id.as_deref(),
        Some("104881234567890:9007199254740993")
    );
    assert_eq!(echo.recipient_id.as_deref(), Some("18446744073709551617"));
    assert_eq!(echo.data["app_id"], "12345678901234567891");
    assert_eq!(delivery.entry_id.as_deref(), Some("9007199254740995"));
    assert_eq!(delivery.page_id, "9007199254740995");
    assert_eq!(delivery.sender_id.as_deref(), Some("123456789012345678901234"));
    assert_eq!(
        delivery.data["mids"],
        serde_json::json!(["9007199254740997", "m_Big3aB2cD3eF4gH5iJ6kL7mN8oP9qR0sT"])
    );
    Ok(())
}

#[test]
fn decodes_text_while_raw_keeps_the_escaped_bytes() -> TestResult {
    let body = fixture("messenger/text_with_emoji_and_escapes.json")?;
    let items = normalize(&body)?;
    let [item] = items.as_slice() else {
        return Err("one item expected".into());
    };
    assert_eq!(
        item.data["text"],
        "Hyvää päivää! Åsa ja Örjan äöå 😀 katso https://example.com/tilaus/123"
    );
    let raw = item.raw.get();
    assert!(raw.contains(r"\u00e4\u00f6\u00e5 \ud83d\ude00"));
    assert!(raw.contains(r"https:\/\/example.com\/tilaus\/123"));
    Ok(())
}

#[test]
fn raw_items_are_slices_of_the_body() -> TestResult {
    for (name, path) in fixtures()? {
        let body = fs::read(&path)?;
        let body_range = body.as_ptr_range();
        for item in normalize(&body)? {
            let raw = item.raw.get().as_bytes().as_ptr_range();
            assert!(
                body_range.start <= raw.start && raw.end <= body_range.end,
                "{name}: item {} is not borrowed from the body",
                item.item_index
            );
        }
    }
    Ok(())
}

#[test]
fn points_at_the_json_string_in_the_body_that_data_text_was_decoded_from() -> TestResult {
    let mut texts = BTreeMap::new();
    for (name, path) in fixtures()? {
        let body = fs::read(&path)?;
        for item in normalize(&body)? {
            let Some(text) = item.text else {
                // Every kind whose text is the person's own words points at it.
                let kinds = ["message", "message_echo", "quick_reply", "message_edit", "comment"];
                let kind = item.event_type.split_once('.').map_or("", |(_, kind)| kind);
                assert!(
                    !item.data["text"].is_string() || !(kinds.contains(&kind) || item.event_type == "whatsapp.message"),
                    "{name}: the text of a {} is not pointed at",
                    item.event_type
                );
                continue;
            };
            let (raw, text_bytes) = (
                item.raw.get().as_bytes().as_ptr_range(),
                text.get().as_bytes().as_ptr_range(),
            );
            assert!(
                raw.start <= text_bytes.start && text_bytes.end <= raw.end,
                "{name}: the text of item {} is not inside its raw bytes",
                item.item_index
            );
            let decoded: String = serde_json::from_str(text.get())?;
            assert_eq!(item.data["text"], decoded, "{name}");
            *texts.entry(item.event_type.clone()).or_insert(0) += 1;
        }
    }
    // The escaped fixture, and each kind at least once.
    for kind in [
        "messenger.message",
        "messenger.message_echo",
        "messenger.quick_reply",
        "messenger.message_edit",
        "instagram.message",
        "instagram.comment",
        "whatsapp.message",
    ] {
        assert!(
            texts.contains_key(kind),
            "no fixture's {kind} has its text pointed at: {texts:?}"
        );
    }
    Ok(())
}

#[test]
fn gives_redeliveries_the_same_dedup_keys_and_distinct_items_distinct_ones() -> TestResult {
    for (name, path) in fixtures()? {
        let first = fs::read(&path)?;
        let again = first.clone();
        let keys: Vec<_> = normalize(&first)?
            .into_iter()
            .map(|item| (item.page_id, item.dedup_key))
            .collect();
        let redelivered: Vec<_> = normalize(&again)?
            .into_iter()
            .map(|item| (item.page_id, item.dedup_key))
            .collect();
        assert_eq!(keys, redelivered, "{name}");
        let mut unique = keys.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), keys.len(), "{name}: {keys:?}");
    }
    Ok(())
}

#[test]
fn builds_dedup_keys_from_mids_and_watermarks() -> TestResult {
    let body = fixture("messenger/batch_three_entries_two_pages.json")?;
    let keys: Vec<_> = normalize(&body)?.into_iter().map(|item| item.dedup_key).collect();
    assert_eq!(keys[0], "messenger.message:m_Bat1aB2cD3eF4gH5iJ6kL7mN8oP9qR0sT");
    assert_eq!(keys[1], "messenger.read:7012345678901234:1747231887100");
    assert_eq!(keys[2], "messenger.postback:m_Bat2aB2cD3eF4gH5iJ6kL7mN8oP9qR0sT");
    assert_eq!(keys[3], "messenger.delivery:6987654321098765:1747231892103");
    assert_eq!(keys[4], "standby:messenger.message:m_Bat4aB2cD3eF4gH5iJ6kL7mN8oP9qR0sT");
    assert_eq!(keys[5], "messenger.quick_reply:m_Bat5aB2cD3eF4gH5iJ6kL7mN8oP9qR0sT");
    assert!(keys[6].starts_with("h:") && keys[6].len() == 2 + 64);
    assert_eq!(keys[7], "messenger.message_echo:m_Bat7aB2cD3eF4gH5iJ6kL7mN8oP9qR0sT");
    Ok(())
}

#[test]
fn reads_a_string_timestamp_in_seconds_as_milliseconds() -> TestResult {
    let body = fixture("messenger/string_timestamp_seconds.json")?;
    let items = normalize(&body)?;
    assert_eq!(items[0].timestamp_ms, Some(1_527_459_824_000));
    assert_eq!(items[0].sender_id.as_deref(), Some("USER_REF_ID_5f2a"));
    Ok(())
}

#[test]
fn falls_back_to_the_entry_time_when_an_item_has_none() -> TestResult {
    let body = fixture("messenger/delivery_without_timestamp.json")?;
    let items = normalize(&body)?;
    assert_eq!(items[0].timestamp_ms, Some(1_747_231_892_600));

    let body = fixture("page/feed_comment_and_reaction.json")?;
    let items = normalize(&body)?;
    assert_eq!(items[0].event_type, "page.feed");
    assert_eq!(items[0].timestamp_ms, Some(1_747_231_892_000));
    Ok(())
}

#[test]
fn treats_echoes_as_outbound_with_the_person_as_counterpart() -> TestResult {
    let body = fixture("messenger/echo_numeric_app_id.json")?;
    let items = normalize(&body)?;
    let echo = &items[0];
    assert_eq!(echo.event_type, "messenger.message_echo");
    assert_eq!(echo.direction, Direction::Outbound);
    assert_eq!(echo.sender_id.as_deref(), Some("104881234567890"));
    assert_eq!(
        echo.conversation_id.as_deref(),
        Some("104881234567890:7012345678901234")
    );
    assert_eq!(echo.data["app_id"], "1517776481860111");
    Ok(())
}

#[test]
fn marks_standby_items_and_keeps_their_missing_payload_null() -> TestResult {
    let body = fixture("messenger/standby_postback_without_payload.json")?;
    let items = normalize(&body)?;
    let item = &items[0];
    assert!(item.standby);
    assert_eq!(item.field, "standby");
    assert_eq!(item.event_type, "messenger.postback");
    assert_eq!(item.data.get("payload"), Some(&Value::Null));
    assert!(item.dedup_key.starts_with("standby:messenger.postback:"));
    Ok(())
}

#[test]
fn keeps_unknown_event_keys_as_unknown_items() -> TestResult {
    let body = fixture("messenger/unknown_key.json")?;
    let items = normalize(&body)?;
    let kinds: Vec<_> = items
        .iter()
        .map(|item| (item.event_type.as_str(), item.data["kind"].as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            ("messenger.unknown", Some("checkout_update")),
            ("messenger.unknown", Some("message")),
        ]
    );
    Ok(())
}

#[test]
fn keeps_an_entry_without_items_as_one_unknown_item() -> TestResult {
    let body = fixture("objects/page_entry_without_items.json")?;
    let items = normalize(&body)?;
    let [item] = items.as_slice() else {
        return Err("one item expected".into());
    };
    assert_eq!(item.field, "entry");
    assert_eq!(item.event_type, "page.unknown");
    assert_eq!(item.data["kind"], "hop_context");
    assert!(item.raw.get().starts_with(r#"{"id":"104881234567890""#));
    Ok(())
}

#[test]
fn turns_an_item_into_the_event_contract() -> TestResult {
    let body = fixture("messenger/postback_with_referral.json")?;
    let item = normalize(&body)?.into_iter().next().ok_or("one item expected")?;
    let raw = item.raw.get().to_owned();
    let (id, tenant, inbound) = (EventId::new(), TenantId::new(), InboundId::new());
    let event = item.into_event(id.clone(), tenant.clone(), inbound.clone(), 1_747_231_900_123);
    assert_eq!(event.id, id);
    assert_eq!(event.tenant_id, tenant);
    assert_eq!(event.version, EVENT_VERSION);
    assert_eq!(event.event_type, "messenger.postback");
    assert_eq!(event.platform, Platform::Messenger);
    assert_eq!(event.timestamp_ms, 1_747_231_892_100);
    assert_eq!(event.received_at, "2025-05-14T14:11:40.123Z");
    assert_eq!(event.data["payload"], "GET_STARTED");
    assert_eq!(event.data["referral"]["source"], "ADS");
    assert_eq!(event.raw.get(), raw);
    assert_eq!(event.source.inbound_id, inbound);
    assert_eq!((event.source.entry, event.source.item), (0, 0));
    assert_eq!(event.source.field, "messaging");
    assert_eq!(event.source.nested, None);
    Ok(())
}

#[test]
fn stamps_an_event_without_any_time_with_its_receive_time() -> TestResult {
    let body = fixture("messenger/sample_app_test_message.json")?;
    let item = normalize(&body)?.into_iter().next().ok_or("one item expected")?;
    assert_eq!(item.timestamp_ms, None);
    assert_eq!(item.page_id, "");
    let event = item.into_event(EventId::new(), TenantId::new(), InboundId::new(), 42_000);
    assert_eq!(event.timestamp_ms, 42_000);
    Ok(())
}

#[test]
fn normalizes_dashboard_test_payloads_as_the_messaging_items_they_carry() -> TestResult {
    let body = fixture("messenger/dashboard_test_postback_change.json")?;
    let items = normalize(&body)?;
    let [item] = items.as_slice() else {
        return Err("one item expected".into());
    };
    assert_eq!(item.event_type, "messenger.postback");
    assert_eq!(item.field, "changes");
    assert_eq!(item.sender_id.as_deref(), Some("USER_REF_ID"));
    assert_eq!(item.timestamp_ms, Some(1_527_459_824_000));
    assert_eq!(item.data["payload"], "USER_DEFINED_PAYLOAD");
    assert!(item.raw.get().starts_with(r#"{"field":"messaging_postbacks""#));

    let body = fixture("messenger/dashboard_test_payloads_mixed.json")?;
    let items = normalize(&body)?;
    let kinds: Vec<_> = items
        .iter()
        .map(|item| (item.event_type.as_str(), item.standby))
        .collect();
    assert_eq!(
        kinds,
        [
            ("messenger.reaction", false),
            ("messenger.read", false),
            ("messenger.delivery", false),
            ("messenger.optin", false),
            ("messenger.message", true),
            ("messenger.game_play", false),
            ("messenger.order", false),
            // A `messages` change whose value is no messaging item stays a change.
            ("page.messages", false),
            ("page.feed", false),
        ]
    );
    assert!(items[4].dedup_key.starts_with("standby:messenger.message:"));
    Ok(())
}

#[test]
fn keys_edits_by_mid_and_edit_number() -> TestResult {
    let body = fixture("messenger/message_edit_twice.json")?;
    let keys: Vec<_> = normalize(&body)?.into_iter().map(|item| item.dedup_key).collect();
    let mid = "m_Ed1AbC1dEf2GhI3jKl4MnO5pQr6StU7vWx8YzA9bCd0EfG1hIj2KlM3nOp4QrS5tUv6WxY7zAb";
    assert_eq!(
        keys,
        [
            format!("messenger.message_edit:{mid}:1"),
            format!("messenger.message_edit:{mid}:2")
        ]
    );
    Ok(())
}

#[test]
fn reads_instagram_flags_and_story_replies() -> TestResult {
    let body = fixture("instagram/message_deleted.json")?;
    let deleted = normalize(&body)?.into_iter().next().ok_or("one item expected")?;
    assert_eq!(deleted.event_type, "instagram.message_deleted");
    assert_eq!(deleted.platform, Platform::Instagram);
    assert!(deleted.dedup_key.starts_with("instagram.message_deleted:aWdf"));

    let body = fixture("instagram/story_reply.json")?;
    let items = normalize(&body)?;
    assert_eq!(items[0].data["reply_to"]["story"]["id"], json!("17912345678901235"));
    assert!(items[1].data["reply_to"]["mid"].is_string());

    let body = fixture("instagram/read_seen.json")?;
    let keys: Vec<_> = normalize(&body)?.into_iter().map(|item| item.dedup_key).collect();
    assert!(keys[0].starts_with("instagram.read:1234567890123456:aWdf"));
    assert_eq!(keys[1], "instagram.read:6543210987654321:1747231892000");
    Ok(())
}

#[test]
fn yields_one_whatsapp_item_per_message_then_per_status() -> TestResult {
    let body = fixture("whatsapp/several_messages_and_statuses.json")?;
    let items = normalize(&body)?;
    let shape: Vec<_> = items
        .iter()
        .map(|item| {
            let nested = item.nested.as_ref().map(|nested| (nested.array.as_str(), nested.index));
            (item.event_type.as_str(), item.item_index, nested)
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("whatsapp.message", 0, Some(("messages", 0))),
            ("whatsapp.message", 0, Some(("messages", 1))),
            ("whatsapp.message", 0, Some(("messages", 2))),
            ("whatsapp.message", 0, Some(("messages", 3))),
            ("whatsapp.status", 0, Some(("statuses", 0))),
            ("whatsapp.status", 0, Some(("statuses", 1))),
            ("whatsapp.status", 0, Some(("statuses", 2))),
        ]
    );
    let names: Vec<_> = items[..4]
        .iter()
        .map(|item| item.data["profile_name"].clone())
        .collect();
    // Matched by wa_id; a sender without a contact gets the first contact's name.
    assert_eq!(
        names,
        [
            json!("Jürgen Müller"),
            json!("Maija Meikäläinen"),
            json!("张伟 🐉"),
            json!("Maija Meikäläinen")
        ]
    );
    for item in &items {
        assert_eq!(item.page_id, "106540352242922");
        assert_eq!(item.entry_id.as_deref(), Some("102290129340398"));
        assert!(item.raw.get().starts_with(r#"{"from""#) || item.raw.get().starts_with(r#"{"id""#));
    }
    let status = &items[4];
    assert_eq!(status.direction, Direction::Outbound);
    assert_eq!(status.sender_id.as_deref(), Some("106540352242922"));
    assert_eq!(status.conversation_id.as_deref(), Some("106540352242922:358401234567"));
    assert!(status.dedup_key.ends_with(":delivered"));

    let event = items[0]
        .clone()
        .into_event(EventId::new(), TenantId::new(), InboundId::new(), 0);
    let json: Value = serde_json::from_str(&event.to_json())?;
    assert_eq!(json["source"]["nested"], json!({"array": "messages", "index": 0}));
    assert_eq!(json["source"]["item"], 0);
    Ok(())
}

#[test]
fn reads_reaction_removals_and_failed_statuses() -> TestResult {
    let body = fixture("whatsapp/reaction_and_removal.json")?;
    let items = normalize(&body)?;
    let reactions: Vec<_> = items
        .iter()
        .map(|item| (item.data["action"].clone(), item.data["emoji"].clone()))
        .collect();
    assert_eq!(
        reactions,
        [
            (json!("react"), json!("👍🏼")),
            (json!("unreact"), Value::Null),
            (json!("unreact"), Value::Null)
        ]
    );

    let body = fixture("whatsapp/status_failed_errors.json")?;
    let items = normalize(&body)?;
    assert_eq!(items[0].data["status"], "failed");
    assert_eq!(items[0].data["errors"][0]["code"], 131_026);
    Ok(())
}

/// Writes one POST the way Meta batches: `entries` entries over five Pages, mixed kinds in
/// `messaging[]`, `standby[]` and `changes[]`, `total` items in all. Returns the body and every
/// item's text in order.
fn large_body(total: usize, entries: usize) -> (String, Vec<String>) {
    let pages = [
        "104881234567890",
        "109876543210987",
        "111222333444555",
        "122333444555666",
        "133444555666777",
    ];
    let per_entry = total / entries;
    let mut body = String::from(r#"{"object":"page","entry":["#);
    let mut expected = Vec::with_capacity(total);
    for entry in 0..entries {
        let page = pages[entry % pages.len()];
        if entry > 0 {
            body.push(',');
        }
        body.push_str(&format!(r#"{{"id":"{page}","time":1747231900000"#));
        // A tenth of each entry in standby, a tenth in changes, the rest in messaging.
        let arrays = [("messaging", per_entry * 8 / 10), ("standby", per_entry / 10)];
        let changes = per_entry - arrays.iter().map(|(_, n)| n).sum::<usize>();
        for (field, count) in arrays.into_iter().chain([("changes", changes)]) {
            body.push_str(&format!(r#","{field}":["#));
            for index in 0..count {
                let n = entry * per_entry + expected.len() % per_entry;
                let item = large_item(field, page, n, index);
                if index > 0 {
                    body.push(',');
                }
                body.push_str(&item);
                expected.push(item);
            }
            body.push(']');
        }
        body.push('}');
    }
    body.push_str("]}");
    (body, expected)
}

fn large_item(field: &str, page: &str, n: usize, index: usize) -> String {
    let psid = 7_012_345_678_900_000_u64 + (n % 97) as u64;
    let ts = 1_747_231_892_000_u64 + n as u64;
    let head = format!(r#"{{"sender":{{"id":"{psid}"}},"recipient":{{"id":"{page}"}},"timestamp":{ts}"#);
    if field == "changes" {
        return match index % 2 {
            0 => format!(
                r#"{{"field":"feed","value":{{"item":"comment","verb":"add","post_id":"{page}_{n}","comment_id":"{n}_1","message":"Kommentti {n} \u00e4\u00f6","created_time":1747231890}}}}"#
            ),
            _ => format!(
                r#"{{"field":"message_reactions","value":{head},"reaction":{{"mid":"m_r{n}","action":"react","reaction":"love","emoji":"\u2764\ufe0f"}}}}}}"#
            ),
        };
    }
    match n % 8 {
        0 => format!(
            r#"{head},"message":{{"mid":"m_{n}","text":"Viesti {n} \u00e4\u00f6\u00e5 \ud83d\ude00 https:\/\/x.fi\/{n}"}}}}"#
        ),
        1 => {
            format!(r#"{head},"message":{{"mid":"m_{n}","text":"Kyll\u00e4","quick_reply":{{"payload":"YES_{n}"}}}}}}"#)
        }
        2 => format!(r#"{head},"postback":{{"mid":"m_{n}","title":"Valikko","payload":"MENU_{n}"}}}}"#),
        3 => format!(r#"{head},"read":{{"watermark":{ts}}}}}"#),
        4 => format!(r#"{head},"delivery":{{"mids":["m_{n}"],"watermark":{ts}}}}}"#),
        5 => format!(
            r#"{head},"message":{{"mid":"m_{n}","attachments":[{{"type":"image","payload":{{"url":"https:\/\/cdn.x\/{n}.jpg"}}}}]}}}}"#
        ),
        6 => format!(
            r#"{head},"game_play":{{"game_id":"1234567890123456","player_id":"{psid}","context_type":"SOLO","score":{n}}}}}"#
        ),
        _ => format!(
            r#"{{"sender":{{"id":"{page}"}},"recipient":{{"id":"{psid}"}},"timestamp":{ts},"message":{{"is_echo":true,"app_id":1517776481860111,"mid":"m_{n}","text":"Kiitos {n}"}}}}"#
        ),
    }
}

#[derive(Serialize)]
struct Summary<'i> {
    items: usize,
    entries: usize,
    per_field: BTreeMap<&'i str, usize>,
    per_type: BTreeMap<&'i str, usize>,
    first: ItemView<'i>,
    last: ItemView<'i>,
}

#[test]
fn normalizes_a_post_of_1000_items_in_order_byte_for_byte() -> TestResult {
    let (body, expected) = large_body(1000, 10);
    assert_eq!(expected.len(), 1000);
    let items = normalize(body.as_bytes())?;
    assert_eq!(items.len(), 1000);
    let raws: Vec<_> = items.iter().map(|item| item.raw.get()).collect();
    assert_eq!(raws, expected);
    // Entry by entry, messaging then standby then changes, each array in order.
    let positions: Vec<_> = items
        .iter()
        .map(|item| (item.entry_index, item.field, item.item_index))
        .collect();
    let mut sorted = positions.clone();
    let rank = |field: &str| ["messaging", "standby", "changes"].iter().position(|f| *f == field);
    sorted.sort_by_key(|(entry, field, index)| (*entry, rank(field), *index));
    assert_eq!(positions, sorted);
    let mut keys: Vec<_> = items.iter().map(|item| (&item.page_id, &item.dedup_key)).collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 1000, "dedup keys collide");

    let mut per_field = BTreeMap::new();
    let mut per_type = BTreeMap::new();
    for item in &items {
        *per_field.entry(item.field).or_insert(0) += 1;
        *per_type.entry(item.event_type.as_str()).or_insert(0) += 1;
    }
    let (first, last) = (items.first().ok_or("items")?, items.last().ok_or("items")?);
    let summary = Summary {
        items: items.len(),
        entries: 10,
        per_field,
        per_type,
        first: ItemView::from(first),
        last: ItemView::from(last),
    };
    insta::assert_json_snapshot!("large_post_1000_items", summary);
    Ok(())
}
