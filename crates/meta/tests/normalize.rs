//! Normalization of Meta's documented payloads (the fixtures), snapshotted, and the contracts that
//! hold across them.

mod support;

use std::fs;
use std::path::{Path, PathBuf};

use pagewire_core::{Direction, EventId, InboundId, Platform, TenantId, EVENT_VERSION};
use pagewire_meta::Item;
use serde::Serialize;
use serde_json::Value;

use support::normalize;

type TestResult = Result<(), Box<dyn std::error::Error>>;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// Every fixture, sorted, as (snapshot name, path).
fn fixtures() -> Result<Vec<(String, PathBuf)>, std::io::Error> {
    let mut fixtures = Vec::new();
    for folder in ["messenger", "objects"] {
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

fn fixture(name: &str) -> Result<Vec<u8>, std::io::Error> {
    fs::read(Path::new(FIXTURES).join(name))
}

/// Everything an item says, in the order a reviewer reads it; `raw` as the exact text sent.
#[derive(Serialize)]
struct ItemView<'i> {
    entry_index: u32,
    item_index: u32,
    field: &'i str,
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
    assert!(fixtures.len() >= 40, "fixtures went missing");
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
    assert_eq!(keys[1], "read:7012345678901234:1747231887100");
    assert_eq!(keys[2], "messenger.postback:m_Bat2aB2cD3eF4gH5iJ6kL7mN8oP9qR0sT");
    assert_eq!(keys[3], "delivery:6987654321098765:1747231892103");
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

    let body = fixture("messenger/page_changes_feed.json")?;
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
            ("messenger.unknown", Some("game_play")),
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
