//! The event contract v1, checked against every fixture: each item becomes an event (through
//! `Item::into_event` and `Event::to_json`, as the ingress stores it) whose `data` has exactly the
//! keys the contract lists for its type, and every listed type occurs in some fixture.
//!
//! The table is written once, from the contract (`data` keys per type); it guards the contract
//! until the JSON Schema in `openapi.yaml` is checked against the same events.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

use pagewire_core::{EventId, InboundId, TenantId};
use serde_json::Value;

use support::{fixtures, normalize};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// Keys every WhatsApp message type carries besides its own.
const WHATSAPP_MESSAGE: [&str; 4] = ["profile_name", "wa_id", "context", "referral"];

/// `<platform>.<field>` types: any other plain change field, with `data: {field, value}`.
const FIELD_TYPE_KEYS: [&str; 2] = ["field", "value"];

/// Every named type of the contract with its `data` keys.
fn contract() -> BTreeMap<&'static str, Vec<&'static str>> {
    let mut types: BTreeMap<&'static str, Vec<&'static str>> = BTreeMap::new();
    let messenger: [(&str, &[&str]); 21] = [
        (
            "messenger.message",
            &["mid", "text", "attachments", "reply_to", "referral", "commands"],
        ),
        ("messenger.quick_reply", &["mid", "text", "payload"]),
        (
            "messenger.message_echo",
            &["mid", "text", "attachments", "app_id", "metadata"],
        ),
        ("messenger.postback", &["mid", "title", "payload", "referral"]),
        (
            "messenger.referral",
            &[
                "payload",
                "ref",
                "source",
                "type",
                "ad_id",
                "ads_context_data",
                "referer_uri",
            ],
        ),
        ("messenger.reaction", &["mid", "action", "reaction", "emoji"]),
        ("messenger.read", &["watermark"]),
        ("messenger.delivery", &["mids", "watermark"]),
        ("messenger.message_edit", &["mid", "text", "num_edit"]),
        (
            "messenger.optin",
            &[
                "type",
                "payload",
                "ref",
                "user_ref",
                "title",
                "notification_messages_token",
                "notification_messages_status",
                "notification_messages_frequency",
                "notification_messages_timezone",
                "token_expiry_timestamp",
                "user_token_status",
            ],
        ),
        ("messenger.account_linking", &["status", "authorization_code"]),
        (
            "messenger.pass_thread_control",
            &["new_owner_app_id", "previous_owner_app_id", "metadata"],
        ),
        (
            "messenger.take_thread_control",
            &["new_owner_app_id", "previous_owner_app_id", "metadata"],
        ),
        (
            "messenger.request_thread_control",
            &["requested_owner_app_id", "metadata"],
        ),
        ("messenger.app_roles", &["roles"]),
        ("messenger.policy_enforcement", &["action", "reason"]),
        (
            "messenger.game_play",
            &["game_id", "player_id", "context_type", "context_id", "score", "payload"],
        ),
        ("messenger.messaging_feedback", &["feedback_screens"]),
        ("messenger.response_feedback", &["mid", "feedback"]),
        (
            "messenger.order",
            &["mid", "text", "products", "note", "currency", "order"],
        ),
        ("messenger.unknown", &["kind"]),
    ];
    let page: [(&str, &[&str]); 3] = [
        (
            "page.feed",
            &[
                "item",
                "verb",
                "post_id",
                "comment_id",
                "parent_id",
                "text",
                "from",
                "created_time",
                "value",
            ],
        ),
        (
            "page.leadgen",
            &["leadgen_id", "form_id", "ad_id", "adgroup_id", "created_time", "value"],
        ),
        ("page.unknown", &["kind"]),
    ];
    let instagram: [(&str, &[&str]); 12] = [
        (
            "instagram.message",
            &["mid", "text", "attachments", "reply_to", "referral", "is_unsupported"],
        ),
        ("instagram.quick_reply", &["mid", "text", "payload"]),
        (
            "instagram.message_echo",
            &["mid", "text", "attachments", "reply_to", "app_id"],
        ),
        ("instagram.message_deleted", &["mid"]),
        ("instagram.message_edit", &["mid", "text", "num_edit"]),
        ("instagram.reaction", &["mid", "action", "reaction", "emoji"]),
        ("instagram.postback", &["mid", "title", "payload", "referral"]),
        (
            "instagram.referral",
            &["payload", "ref", "source", "type", "ad_id", "ads_context_data"],
        ),
        ("instagram.read", &["mid", "watermark"]),
        (
            "instagram.comment",
            &["comment_id", "text", "from", "media", "parent_id", "value"],
        ),
        ("instagram.mention", &["media_id", "comment_id", "value"]),
        ("instagram.unknown", &["kind"]),
    ];
    let whatsapp_messages: [(&str, &[&str]); 8] = [
        (
            "whatsapp.message",
            &["mid", "message_type", "text", "media", "location", "contacts"],
        ),
        ("whatsapp.button_reply", &["mid", "payload", "title", "text"]),
        (
            "whatsapp.list_reply",
            &["mid", "payload", "title", "description", "text"],
        ),
        ("whatsapp.button", &["mid", "payload", "text"]),
        ("whatsapp.reaction", &["mid", "reacted_mid", "emoji", "action"]),
        ("whatsapp.order", &["mid", "catalog_id", "text", "product_items"]),
        (
            "whatsapp.system",
            &["mid", "system_type", "text", "new_wa_id", "customer"],
        ),
        ("whatsapp.unsupported", &["mid", "message_type", "errors"]),
    ];
    let whatsapp: [(&str, &[&str]); 2] = [
        (
            "whatsapp.status",
            &[
                "mid",
                "status",
                "recipient_id",
                "conversation",
                "pricing",
                "errors",
                "biz_opaque_callback_data",
            ],
        ),
        ("whatsapp.unknown", &["kind"]),
    ];
    for (name, keys) in messenger.into_iter().chain(page).chain(instagram).chain(whatsapp) {
        types.insert(name, keys.to_vec());
    }
    for (name, keys) in whatsapp_messages {
        types.insert(name, keys.iter().chain(&WHATSAPP_MESSAGE).copied().collect());
    }
    types
}

/// The keys the contract lists for `event_type`: a named type, or `<platform>.<field>`.
fn keys_of<'c>(contract: &'c BTreeMap<&'static str, Vec<&'static str>>, event_type: &str) -> Option<Vec<&'c str>> {
    if let Some(keys) = contract.get(event_type) {
        return Some(keys.clone());
    }
    let (platform, field) = event_type.split_once('.')?;
    let plain = !field.is_empty()
        && field
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    (["page", "instagram", "whatsapp"].contains(&platform) && plain).then(|| FIELD_TYPE_KEYS.to_vec())
}

/// Data keys whose value is an id: always a string (or null), never a number.
const ID_KEYS: [&str; 12] = [
    "mid",
    "app_id",
    "ad_id",
    "comment_id",
    "post_id",
    "parent_id",
    "media_id",
    "leadgen_id",
    "form_id",
    "reacted_mid",
    "game_id",
    "new_wa_id",
];

#[test]
fn every_fixture_event_has_exactly_the_contracted_data_keys() -> TestResult {
    let contract = contract();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut field_types: BTreeSet<String> = BTreeSet::new();
    for (name, path) in fixtures()? {
        let body = fs::read(&path)?;
        for item in normalize(&body)? {
            let event_type = item.event_type.clone();
            let event = item.into_event(EventId::new(), TenantId::new(), InboundId::new(), 1_747_231_900_000);
            let json: Value = serde_json::from_str(&event.to_json())?;
            let data = json["data"]
                .as_object()
                .ok_or_else(|| format!("{name}: data is no object"))?;
            let keys = keys_of(&contract, &event_type)
                .ok_or_else(|| format!("{name}: type {event_type} is not in the contract"))?;
            let expected: BTreeSet<&str> = keys.iter().copied().collect();
            let actual: BTreeSet<&str> = data.keys().map(String::as_str).collect();
            assert_eq!(actual, expected, "{name}: {event_type}");
            for key in ID_KEYS {
                if let Some(value) = data.get(key) {
                    assert!(
                        value.is_string() || value.is_null(),
                        "{name}: {event_type}.{key} = {value}"
                    );
                }
            }
            let nested = &json["source"]["nested"];
            assert!(
                nested.is_null() || (nested["array"].is_string() && nested["index"].is_u64()),
                "{name}: source.nested = {nested}"
            );
            assert_eq!(json["type"], event_type.as_str());
            if !contract.contains_key(event_type.as_str()) {
                field_types.insert(event_type.clone());
            }
            seen.insert(event_type);
        }
    }
    let missing: Vec<_> = contract.keys().filter(|name| !seen.contains(**name)).collect();
    assert!(missing.is_empty(), "types without a fixture: {missing:?}");
    for platform in ["page.", "instagram.", "whatsapp."] {
        assert!(
            field_types.iter().any(|name| name.starts_with(platform)),
            "no {platform}<field> fixture: {field_types:?}"
        );
    }
    Ok(())
}

#[test]
fn every_whatsapp_message_type_and_media_kind_has_a_fixture() -> TestResult {
    let mut message_types = BTreeSet::new();
    for (_, path) in fixtures()? {
        let body = fs::read(&path)?;
        for item in normalize(&body)? {
            if item.event_type == "whatsapp.message" {
                if let Some(kind) = item.data["message_type"].as_str() {
                    message_types.insert(kind.to_owned());
                }
            }
        }
    }
    let expected = [
        "text", "image", "audio", "video", "document", "sticker", "location", "contacts",
    ];
    assert_eq!(message_types, expected.into_iter().map(str::to_owned).collect());
    Ok(())
}

#[test]
fn every_fixture_event_validates_against_the_schema_in_openapi_yaml() -> TestResult {
    let schema = pagewire_testkit::contract::EventContract::load().map_err(|e| e.to_string())?;
    let mut checked = 0;
    for (name, path) in fixtures()? {
        let body = fs::read(&path)?;
        for item in normalize(&body)? {
            // An item without a Page id cannot be routed to a tenant: it is kept for the operator,
            // never delivered as an event.
            if item.page_id.is_empty() {
                continue;
            }
            let event = item.into_event(EventId::new(), TenantId::new(), InboundId::new(), 1_747_231_900_000);
            let json: Value = serde_json::from_str(&event.to_json())?;
            schema
                .validate(&json)
                .map_err(|errors| format!("{name}: {errors}\n{json}"))?;
            checked += 1;
        }
    }
    assert!(checked > 200, "only {checked} events checked");
    Ok(())
}
