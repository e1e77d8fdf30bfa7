//! Page changes: the elements of `entry[].changes[]` under `object: "page"` (`feed`, `leadgen`, …).
//!
//! Each change is `{field, value}` and becomes `page.<field>` with `data: {field, value}`, the value
//! kept as sent. Changes carry no time of their own; the entry's `time` (in seconds) is used.

use pagewire_core::{Direction, Platform};
use serde_json::Value;

use crate::normalize::{Dedup, Item, Parts, Slot};
use crate::wire::{self, wire_object};

wire_object!(ChangeWire { field, value });

/// Longest `field` taken into an event type; Meta's field names are far shorter.
const MAX_FIELD_LEN: usize = 64;

/// Normalizes one `changes[]` element of a Page entry.
pub(crate) fn normalize_change<'a>(slot: Slot<'_, 'a>) -> Item<'a> {
    let change: ChangeWire<'_> = wire::object(Some(slot.raw)).unwrap_or_default();
    let field = wire::string(change.field);
    // The type names metrics and endpoint filters, so only a plain field name makes it in.
    let event_type = match field.as_deref() {
        Some(name) if is_field_name(name) => ["page.", name].concat(),
        _ => String::from("page.unknown"),
    };
    let data = wire::record([
        ("field", field.map_or(Value::Null, |f| Value::String(f.into_owned()))),
        ("value", wire::as_sent(change.value)),
    ]);
    slot.into_item(Parts {
        event_type,
        platform: Platform::Page,
        page_id: slot.page_id_or(None),
        conversation_id: None,
        sender_id: None,
        recipient_id: None,
        direction: Direction::Inbound,
        timestamp_ms: slot.entry_time_ms(),
        data,
        dedup: Dedup::Hash,
    })
}

fn is_field_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FIELD_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}
