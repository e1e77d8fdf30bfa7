//! Page changes: the elements of `entry[].changes[]` under `object: "page"` (`feed`, `leadgen`, …).
//!
//! Each change is `{field, value}`. `feed` and `leadgen` become `page.feed` and `page.leadgen` with
//! their fields read out, any other plain field `page.<field>` with `data: {field, value}`; the value
//! is always kept as sent. Changes carry no time of their own, so the entry's `time` (in seconds) is
//! used. The App Dashboard's test payloads also arrive here, as a change whose value is a messaging
//! item: those are Messenger items (see [`messenger::normalize_test_payload`]).

use pagewire_core::Platform;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::messenger::{self, Product};
use crate::normalize::{self, Item, Slot};
use crate::wire::{self, wire_object, ChangeWire};

wire_object!(FeedWire {
    item,
    verb,
    post_id,
    comment_id,
    parent_id,
    message,
    from,
    created_time,
});

wire_object!(LeadgenWire {
    leadgen_id,
    form_id,
    ad_id,
    adgroup_id,
    created_time,
});

/// Normalizes one `changes[]` element of a Page entry.
pub(crate) fn normalize_change<'a>(slot: Slot<'_, 'a>) -> Item<'a> {
    let change: ChangeWire<'a> = wire::object(Some(slot.raw)).unwrap_or_default();
    let field = wire::string(change.field);
    if let Some(item) = field
        .as_deref()
        .and_then(|field| messenger::normalize_test_payload(Product::Messenger, slot, field, change.value))
    {
        return item;
    }
    let (event_type, data) = match field.as_deref() {
        Some("feed") => ("page.feed".to_owned(), feed(change.value)),
        Some("leadgen") => ("page.leadgen".to_owned(), leadgen(change.value)),
        _ => normalize::other_change(Platform::Page, field, change.value),
    };
    slot.change_item(Platform::Page, slot.page_id_or(None), event_type, data)
}

/// `page.feed`: posts, comments, reactions and the like on the Page (`item` says which, `verb`
/// what happened to it).
fn feed(value: Option<&RawValue>) -> Value {
    let feed: FeedWire<'_> = wire::object(value).unwrap_or_default();
    wire::record([
        ("item", wire::string_value(feed.item)),
        ("verb", wire::string_value(feed.verb)),
        ("post_id", wire::id_value(feed.post_id)),
        ("comment_id", wire::id_value(feed.comment_id)),
        ("parent_id", wire::id_value(feed.parent_id)),
        ("text", wire::string_value(feed.message)),
        ("from", wire::as_sent(feed.from)),
        ("created_time", created_time_ms(feed.created_time)),
        ("value", wire::as_sent(value)),
    ])
}

/// `page.leadgen`: a lead ad form was submitted (the lead itself is fetched by `leadgen_id`).
fn leadgen(value: Option<&RawValue>) -> Value {
    let lead: LeadgenWire<'_> = wire::object(value).unwrap_or_default();
    wire::record([
        ("leadgen_id", wire::id_value(lead.leadgen_id)),
        ("form_id", wire::id_value(lead.form_id)),
        ("ad_id", wire::id_value(lead.ad_id)),
        ("adgroup_id", wire::id_value(lead.adgroup_id)),
        ("created_time", created_time_ms(lead.created_time)),
        ("value", wire::as_sent(value)),
    ])
}

/// `created_time` (Unix seconds, sometimes a numeric string) in milliseconds.
fn created_time_ms(raw: Option<&RawValue>) -> Value {
    wire::integer(raw).map_or(Value::Null, |time| Value::from(wire::millis(time)))
}
