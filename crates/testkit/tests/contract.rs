//! The event contract, checked: `openapi.yaml` (`components.schemas.Event`) against the example
//! events in `docs/examples/events.json`, and `docs/events.md` against both.
//!
//! `docs/examples/events.json` holds one realistic event (or more) for every type. `docs/events.md`
//! mirrors it: every ```` ```json <type> ```` block there is the `data` of one of these examples, and
//! every plain ```` ```json ```` block is a whole event that must validate.

use std::collections::BTreeSet;
use std::path::PathBuf;

use pagewire_testkit::contract::{ContractError, EventContract};
use serde_json::{json, Value};

type TestResult = Result<(), ContractError>;

/// The types of the contract spec that have a `data` schema of their own.
const SPEC_TYPES: [&str; 42] = [
    "messenger.message",
    "messenger.quick_reply",
    "messenger.message_echo",
    "messenger.postback",
    "messenger.referral",
    "messenger.reaction",
    "messenger.read",
    "messenger.delivery",
    "messenger.message_edit",
    "messenger.optin",
    "messenger.account_linking",
    "messenger.pass_thread_control",
    "messenger.take_thread_control",
    "messenger.request_thread_control",
    "messenger.app_roles",
    "messenger.policy_enforcement",
    "messenger.game_play",
    "messenger.messaging_feedback",
    "messenger.response_feedback",
    "messenger.order",
    "page.feed",
    "page.leadgen",
    "instagram.message",
    "instagram.quick_reply",
    "instagram.message_echo",
    "instagram.message_deleted",
    "instagram.message_edit",
    "instagram.reaction",
    "instagram.postback",
    "instagram.referral",
    "instagram.read",
    "instagram.comment",
    "instagram.mention",
    "whatsapp.message",
    "whatsapp.button_reply",
    "whatsapp.list_reply",
    "whatsapp.button",
    "whatsapp.reaction",
    "whatsapp.order",
    "whatsapp.system",
    "whatsapp.unsupported",
    "whatsapp.status",
];

const UNKNOWN_TYPES: [&str; 4] = [
    "messenger.unknown",
    "page.unknown",
    "instagram.unknown",
    "whatsapp.unknown",
];

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn examples() -> Result<Vec<Value>, ContractError> {
    let text = std::fs::read_to_string(manifest_dir().join("../../docs/examples/events.json"))?;
    Ok(serde_json::from_str(&text)?)
}

fn example(event_type: &str) -> Result<Value, ContractError> {
    examples()?
        .into_iter()
        .find(|event| event["type"] == event_type)
        .ok_or_else(|| format!("no example of {event_type}").into())
}

fn type_of(event: &Value) -> &str {
    event["type"].as_str().unwrap_or_default()
}

/// A field change: `page.<field>`, `instagram.<field>`, `whatsapp.<field>` without a type of its own.
fn is_field_change(event_type: &str) -> bool {
    ["page.", "instagram.", "whatsapp."]
        .iter()
        .any(|platform| event_type.starts_with(platform))
        && !SPEC_TYPES.contains(&event_type)
        && !UNKNOWN_TYPES.contains(&event_type)
}

/// One fenced block of the docs: its info string after `json` (the type), its text, its line.
struct JsonBlock {
    event_type: Option<String>,
    text: String,
    line: usize,
}

/// Every ```` ```json ```` block of `docs/events.md`.
fn doc_blocks() -> Result<Vec<JsonBlock>, ContractError> {
    let docs = std::fs::read_to_string(manifest_dir().join("../../docs/events.md"))?;
    let mut blocks = Vec::new();
    let mut current: Option<JsonBlock> = None;
    for (index, line) in docs.lines().enumerate() {
        let trimmed = line.trim_start();
        match current.take() {
            Some(block) if trimmed.starts_with("```") => blocks.push(block),
            Some(mut block) => {
                block.text.push_str(line);
                block.text.push('\n');
                current = Some(block);
            }
            None => {
                if let Some(info) = trimmed.strip_prefix("```json") {
                    let event_type = Some(info.trim()).filter(|info| !info.is_empty()).map(str::to_owned);
                    current = Some(JsonBlock {
                        event_type,
                        text: String::new(),
                        line: index + 1,
                    });
                }
            }
        }
    }
    if current.is_some() {
        return Err("docs/events.md has an unterminated ```json block".into());
    }
    Ok(blocks)
}

fn assert_invalid(contract: &EventContract, event: &Value, expected: &str) {
    match contract.validate(event) {
        Ok(()) => panic!("expected the contract to refuse the event ({expected}):\n{event:#}"),
        Err(errors) => assert!(
            errors.contains(expected),
            "expected an error mentioning {expected:?}, got:\n{errors}"
        ),
    }
}

#[test]
fn the_schema_names_exactly_the_types_of_the_spec() -> TestResult {
    let contract = EventContract::load()?;
    let named: BTreeSet<&str> = contract.named_types().iter().map(String::as_str).collect();
    let spec: BTreeSet<&str> = SPEC_TYPES.into_iter().collect();
    assert_eq!(named, spec);
    assert_eq!(contract.named_types().len(), SPEC_TYPES.len(), "a type is wired twice");
    Ok(())
}

#[test]
fn every_type_has_a_realistic_example() -> TestResult {
    let examples = examples()?;
    let types: BTreeSet<&str> = examples.iter().map(type_of).collect();
    for event_type in SPEC_TYPES.iter().chain(&UNKNOWN_TYPES) {
        assert!(types.contains(event_type), "no example of {event_type}");
    }
    for platform in ["page.", "instagram.", "whatsapp."] {
        assert!(
            types.iter().any(|t| t.starts_with(platform) && is_field_change(t)),
            "no example of a {platform}<field> change"
        );
    }
    Ok(())
}

#[test]
fn every_example_event_keeps_the_contract() -> TestResult {
    let contract = EventContract::load()?;
    for event in examples()? {
        contract.assert_valid(&event);
    }
    Ok(())
}

#[test]
fn every_json_block_of_the_event_docs_is_an_example_that_keeps_the_contract() -> TestResult {
    let contract = EventContract::load()?;
    let examples = examples()?;
    let blocks = doc_blocks()?;
    assert!(!blocks.is_empty(), "docs/events.md has no ```json examples");
    for block in blocks {
        let value: Value = serde_json::from_str(&block.text)
            .map_err(|err| format!("docs/events.md:{}: not JSON: {err}", block.line))?;
        match &block.event_type {
            // A whole event.
            None => {
                if let Err(errors) = contract.validate(&value) {
                    panic!(
                        "docs/events.md:{}: the event breaks the contract:\n{errors}",
                        block.line
                    );
                }
            }
            // The `data` of an example of that type.
            Some(event_type) => {
                let mirrored = examples
                    .iter()
                    .find(|event| type_of(event) == event_type && event["data"] == value);
                let Some(event) = mirrored else {
                    panic!(
                        "docs/events.md:{}: this `{event_type}` data is not the data of any example in \
                         docs/examples/events.json; keep the two in step",
                        block.line
                    );
                };
                contract.assert_valid(event);
            }
        }
    }
    Ok(())
}

#[test]
fn the_event_docs_give_every_type_a_section_and_a_data_example() -> TestResult {
    let docs = std::fs::read_to_string(manifest_dir().join("../../docs/events.md"))?;
    let documented: BTreeSet<String> = doc_blocks()?.into_iter().filter_map(|block| block.event_type).collect();
    for event_type in SPEC_TYPES.iter().chain(&UNKNOWN_TYPES) {
        assert!(
            docs.contains(&format!("### `{event_type}`")),
            "docs/events.md has no section for {event_type}"
        );
        assert!(
            documented.contains(*event_type),
            "docs/events.md has no ```json {event_type} example"
        );
    }
    Ok(())
}

#[test]
fn a_missing_data_key_breaks_the_contract() -> TestResult {
    let contract = EventContract::load()?;
    let mut event = example("messenger.postback")?;
    event["data"]
        .as_object_mut()
        .ok_or("data is an object")?
        .remove("referral");
    assert_invalid(&contract, &event, "/data: \"referral\" is a required property");

    let mut event = example("whatsapp.button_reply")?;
    event["data"]
        .as_object_mut()
        .ok_or("data is an object")?
        .remove("profile_name");
    assert_invalid(&contract, &event, "\"profile_name\" is a required property");
    Ok(())
}

#[test]
fn an_extra_data_key_breaks_the_contract() -> TestResult {
    let contract = EventContract::load()?;
    let mut event = example("messenger.quick_reply")?;
    event["data"]["title"] = json!("Yes, please!");
    assert_invalid(&contract, &event, "/data");

    let mut event = example("page.ratings")?;
    event["data"]["verb"] = json!("add");
    assert_invalid(&contract, &event, "/data");
    Ok(())
}

#[test]
fn an_id_that_is_not_a_string_breaks_the_contract() -> TestResult {
    let contract = EventContract::load()?;
    let mut event = example("messenger.message_echo")?;
    event["data"]["app_id"] = json!(1_517_776_481_860_111_u64);
    assert_invalid(&contract, &event, "/data/app_id");

    let mut event = example("messenger.postback")?;
    event["data"]["mid"] = json!(42);
    assert_invalid(&contract, &event, "/data/mid");

    let mut event = example("messenger.postback")?;
    event["page_id"] = json!(104_872_345_678_901_u64);
    assert_invalid(&contract, &event, "/page_id");

    let mut event = example("messenger.postback")?;
    event["sender_id"] = json!(6_543_210_987_654_321_u64);
    assert_invalid(&contract, &event, "/sender_id");
    Ok(())
}

#[test]
fn a_type_outside_the_contract_is_refused() -> TestResult {
    let contract = EventContract::load()?;
    for bad in [
        "messenger.Postback",
        "telegram.message",
        "messenger.postback.v2",
        "messenger",
        "messenger.foo",
    ] {
        let mut event = example("messenger.postback")?;
        event["type"] = json!(bad);
        assert_invalid(&contract, &event, "/type");
    }
    Ok(())
}

#[test]
fn a_version_other_than_1_is_refused() -> TestResult {
    let contract = EventContract::load()?;
    for bad in [json!(2), json!("1"), json!(1.5)] {
        let mut event = example("messenger.postback")?;
        event["version"] = bad;
        assert_invalid(&contract, &event, "/version");
    }
    Ok(())
}

#[test]
fn ids_need_their_prefix_and_an_uppercase_ulid() -> TestResult {
    let contract = EventContract::load()?;
    let event = example("messenger.postback")?;
    for (pointer, bad) in [
        ("/id", "evt_123"),
        ("/id", "dlv_01M84FYBGSEP014SJAZDGHD9ZM"),
        ("/id", "evt_01m84fybgsep014sjazdghd9zm"),
        ("/tenant_id", "ten_01M84FYAMJ8TQGXF9TPN687K0"),
        ("/source/inbound_id", "inb_01M84FYBGSEP014SJAZDGHD9ZI"),
    ] {
        let mut broken = event.clone();
        *broken.pointer_mut(pointer).ok_or("the pointer exists")? = json!(bad);
        assert_invalid(&contract, &broken, pointer);
    }
    Ok(())
}

#[test]
fn the_platform_must_be_the_types_prefix() -> TestResult {
    let contract = EventContract::load()?;
    let mut event = example("instagram.reaction")?;
    event["platform"] = json!("messenger");
    assert_invalid(&contract, &event, "/platform");
    Ok(())
}

#[test]
fn echoes_and_statuses_are_outbound_and_messages_inbound() -> TestResult {
    let contract = EventContract::load()?;
    for (event_type, wrong) in [
        ("messenger.message_echo", "inbound"),
        ("instagram.message_echo", "inbound"),
        ("whatsapp.status", "inbound"),
        ("messenger.message", "outbound"),
        ("whatsapp.message", "outbound"),
        ("page.feed", "outbound"),
    ] {
        let mut event = example(event_type)?;
        event["direction"] = json!(wrong);
        assert_invalid(&contract, &event, "/direction");
    }
    Ok(())
}

#[test]
fn only_whatsapp_messages_and_statuses_have_a_nested_source() -> TestResult {
    let contract = EventContract::load()?;
    let mut event = example("whatsapp.message")?;
    event["source"]["nested"] = Value::Null;
    assert_invalid(&contract, &event, "/source/nested");

    let mut event = example("whatsapp.status")?;
    event["source"]["nested"]["array"] = json!("messages");
    assert_invalid(&contract, &event, "/source/nested/array");

    let mut event = example("messenger.message")?;
    event["source"]["nested"] = json!({"array": "messages", "index": 0});
    assert_invalid(&contract, &event, "/source/nested");

    let mut event = example("messenger.message")?;
    event["source"]
        .as_object_mut()
        .ok_or("source is an object")?
        .remove("nested");
    assert_invalid(&contract, &event, "\"nested\" is a required property");
    Ok(())
}

#[test]
fn page_changes_have_no_parties() -> TestResult {
    let contract = EventContract::load()?;
    let mut event = example("page.feed")?;
    event["sender_id"] = json!("5012345678901234");
    assert_invalid(&contract, &event, "/sender_id");
    Ok(())
}

#[test]
fn a_field_change_carries_its_field_and_value_and_nothing_else() -> TestResult {
    let contract = EventContract::load()?;
    let mut event = example("whatsapp.message_template_status_update")?;
    event["type"] = json!("whatsapp.account_update");
    assert_invalid(&contract, &event, "/data/field");

    let mut event = example("instagram.story_insights")?;
    event["data"] = json!({"kind": "story_insights"});
    assert_invalid(&contract, &event, "/data");

    let mut event = example("page.unknown")?;
    event["data"] = json!({"field": "changed_fields", "value": null});
    assert_invalid(&contract, &event, "/data");
    Ok(())
}

#[test]
fn received_at_is_an_rfc_3339_utc_time() -> TestResult {
    let contract = EventContract::load()?;
    for bad in ["yesterday", "2026-11-23T15:21:10.937+02:00", "2026-13-23T15:21:10.937Z"] {
        let mut event = example("messenger.postback")?;
        event["received_at"] = json!(bad);
        assert_invalid(&contract, &event, "/received_at");
    }
    Ok(())
}

#[test]
fn the_envelope_has_no_keys_beyond_the_contract() -> TestResult {
    let contract = EventContract::load()?;
    let mut event = example("messenger.postback")?;
    event["dedup_key"] = json!("messenger.postback:m_abc");
    assert_invalid(&contract, &event, "dedup_key");
    Ok(())
}

#[test]
fn every_error_is_listed_with_its_instance_path() -> TestResult {
    let contract = EventContract::load()?;
    let mut event = example("messenger.delivery")?;
    event["data"]["watermark"] = json!("1795447265000");
    event["data"]["mids"] = json!([42]);
    event["standby"] = json!("false");
    let errors = contract.validate(&event).err().ok_or("the event is invalid")?;
    for pointer in ["/data/watermark:", "/data/mids/0:", "/standby:"] {
        assert!(
            errors.lines().any(|line| line.starts_with(pointer)),
            "{pointer} missing from:\n{errors}"
        );
    }
    Ok(())
}

#[test]
#[should_panic(expected = "the event breaks the event contract")]
fn assert_valid_panics_with_the_errors_and_the_event() {
    let contract = EventContract::load().expect("openapi.yaml loads");
    contract.assert_valid(&json!({"type": "messenger.postback"}));
}

#[test]
fn a_document_is_compiled_from_a_string_without_fetching_anything() -> TestResult {
    let local = r##"
components:
  schemas:
    Event: {type: object, required: [id], properties: {id: {$ref: "#/components/schemas/Id"}}}
    Id: {type: string, pattern: "^evt_"}
"##;
    let contract: EventContract = local.parse()?;
    assert!(contract.is_valid(&json!({"id": "evt_x"})));
    assert!(!contract.is_valid(&json!({"id": 1})));

    let remote = r#"{"components": {"schemas": {"Event": {"$ref": "https://example.com/event.json"}}}}"#;
    assert!(
        remote.parse::<EventContract>().is_err(),
        "a remote $ref must fail, not be fetched"
    );
    assert!(
        "components: {}".parse::<EventContract>().is_err(),
        "a document without an Event schema"
    );
    Ok(())
}
