//! Normalization: every item of a verified envelope becomes one [`Item`], the pure half of an
//! [`Event`] (the ingress adds the ids, the tenant and the receive time with [`Item::into_event`]).
//!
//! Each Meta `object` has its module: `page` is read by [`crate::messenger`] (`messaging[]`,
//! `standby[]`) and [`crate::page`] (`changes[]`), `instagram` by [`crate::instagram`] (which
//! shares the Messenger reader), `whatsapp_business_account` by [`crate::whatsapp`]. Other objects
//! (`user`, `permissions`, …) become `page.unknown` items with everything in `raw`.

use std::borrow::Cow;

use pagewire_core::clock::rfc3339_ms;
use pagewire_core::{
    Direction, Event, EventId, EventSource, InboundId, NestedSource, Platform, TenantId, EVENT_VERSION,
};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::envelope::{Entry, VerifiedEnvelope};
use crate::messenger::MessagingItem;
use crate::wire;
use crate::{instagram, messenger, page, whatsapp};

/// One normalized Meta item, borrowing its raw bytes from the verified body.
///
/// `data` holds the type's fields, always all present (null when Meta did not send them); see the
/// crate documentation for the shape of each type.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    /// Position of the entry in `entry[]`.
    pub entry_index: u32,
    /// Position of the item in its array (0 for an item of field `entry`). For a WhatsApp message
    /// or status, the position of its change in `changes[]` (see [`Item::nested`]).
    pub item_index: u32,
    /// `messaging`, `standby`, `changes`, or `entry` for an entry without any item array.
    pub field: &'static str,
    /// For WhatsApp items, which array of the change's `value` (`messages` or `statuses`) holds the
    /// item, and where; `None` for every other item.
    pub nested: Option<NestedSource>,
    /// `entry[].id`: the routing key (Page, Instagram account or WhatsApp Business Account id) that
    /// finds the tenant.
    pub entry_id: Option<String>,
    /// `<platform>.<kind>`, e.g. `messenger.postback`.
    pub event_type: String,
    pub platform: Platform,
    /// The Page, Instagram account or WhatsApp phone number the item belongs to: the entry id (for
    /// WhatsApp the change's `metadata.phone_number_id`), else the Page side of the item, else empty.
    pub page_id: String,
    /// `{page_id}:{counterpart}`, where the counterpart is the person (or chat-plugin `user_ref`);
    /// `None` when either is unknown.
    pub conversation_id: Option<String>,
    /// `sender.id`, else `sender.user_ref` (WhatsApp: the user's `wa_id` for messages, the phone
    /// number id for statuses).
    pub sender_id: Option<String>,
    /// `recipient.id`, else `recipient.user_ref` (WhatsApp: the phone number id for messages, the
    /// user's `recipient_id` for statuses).
    pub recipient_id: Option<String>,
    /// `Outbound` for echoes of what the Page sent and for WhatsApp statuses.
    pub direction: Direction,
    /// True for items of `entry[].standby[]` (and dashboard test payloads of field `standby`).
    pub standby: bool,
    /// The item's time in Unix milliseconds: its `timestamp`, else the entry's `time` (seconds are
    /// converted), else `None`.
    pub timestamp_ms: Option<i64>,
    pub data: Value,
    /// The item exactly as sent: a slice of the verified body (for WhatsApp, the one message or
    /// status object).
    pub raw: &'a RawValue,
    /// The JSON string in the body that `data.text` was decoded from (the text of a message, an
    /// echo, a quick reply, an edit, or a WhatsApp text message): most of a chat event's bytes, so
    /// that a store can keep them once, in the body. `None` when `data.text` is not a string
    /// taken from the body.
    pub text: Option<&'a RawValue>,
    /// Same for every redelivery of this item, different for different items of one Page:
    /// `{type}:{mid}` for items a message id identifies (`message_edit` adds `:{num_edit}`),
    /// `whatsapp.status:{wamid}:{status}`, `{type}:{sender}:{watermark}` for reads and deliveries
    /// (`instagram.read:{sender}:{mid}` without a watermark), else `h:{sha256 of raw}`; `standby:`
    /// in front for standby items.
    pub dedup_key: String,
}

impl Item<'_> {
    /// The event customer apps receive. `timestamp_ms` falls back to `received_at_ms` when Meta sent
    /// no time at all.
    pub fn into_event(self, id: EventId, tenant_id: TenantId, inbound_id: InboundId, received_at_ms: i64) -> Event {
        Event {
            id,
            event_type: self.event_type,
            version: EVENT_VERSION,
            platform: self.platform,
            tenant_id,
            page_id: self.page_id,
            conversation_id: self.conversation_id,
            sender_id: self.sender_id,
            recipient_id: self.recipient_id,
            direction: self.direction,
            standby: self.standby,
            timestamp_ms: self.timestamp_ms.unwrap_or(received_at_ms),
            received_at: rfc3339_ms(received_at_ms),
            data: self.data,
            raw: self.raw.to_owned(),
            source: EventSource {
                inbound_id,
                entry: self.entry_index,
                item: self.item_index,
                field: self.field.to_owned(),
                nested: self.nested,
            },
        }
    }
}

impl<'a> VerifiedEnvelope<'a> {
    /// One [`Item`] per element of every entry's `messaging[]`, then `standby[]`, then `changes[]`,
    /// entries in order and items in order; an entry with none of these arrays yields one item of
    /// field `entry`. A WhatsApp change yields one item per element of its value's `messages[]`,
    /// then of its `statuses[]` (at least one item). Pure, and total: any JSON yields items, never
    /// a panic.
    pub fn normalize(&self) -> Vec<Item<'a>> {
        let envelope = self.envelope();
        let object = Object::parse(envelope.object());
        let mut items = Vec::with_capacity(envelope.item_count());
        for entry in envelope.entries() {
            if entry.has_no_item_arrays() {
                // Such entries come only through the tolerant parse, which keeps their bytes.
                if let Some(raw) = entry.raw() {
                    object.normalize(Slot::new(entry, Field::Entry, 0, raw), &mut items);
                }
                continue;
            }
            let arrays = [
                (Field::Messaging, entry.messaging()),
                (Field::Standby, entry.standby()),
                (Field::Changes, entry.changes()),
            ];
            for (field, list) in arrays {
                for (index, raw) in list.unwrap_or_default().iter().enumerate() {
                    // Meta sends at most 1000 items; saturating only keeps this total.
                    let slot = Slot::new(entry, field, u32::try_from(index).unwrap_or(u32::MAX), raw);
                    object.normalize(slot, &mut items);
                }
            }
        }
        items
    }
}

/// The Meta `object` of a POST, which decides how its entries are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object<'o> {
    Page,
    Instagram,
    WhatsappBusinessAccount,
    /// `user`, `permissions`, and whatever Meta adds.
    Other(&'o str),
}

impl<'o> Object<'o> {
    fn parse(object: &'o str) -> Self {
        match object {
            "page" => Self::Page,
            "instagram" => Self::Instagram,
            "whatsapp_business_account" => Self::WhatsappBusinessAccount,
            other => Self::Other(other),
        }
    }

    /// Normalizes one slot into one item (a WhatsApp change into one or more).
    fn normalize<'a>(self, slot: Slot<'_, 'a>, items: &mut Vec<Item<'a>>) {
        let item = match (self, slot.field) {
            (Self::Page, Field::Messaging | Field::Standby) => {
                messenger::normalize(messenger::Product::Messenger, slot)
            }
            (Self::Page, Field::Changes) => page::normalize_change(slot),
            (Self::Instagram, Field::Messaging | Field::Standby) => instagram::normalize_messaging(slot),
            (Self::Instagram, Field::Changes) => instagram::normalize_change(slot),
            (Self::WhatsappBusinessAccount, Field::Changes) => return whatsapp::normalize_change(slot, items),
            (Self::Page, Field::Entry) => unknown(Platform::Page, slot, None),
            (Self::Instagram, Field::Entry) => unknown(Platform::Instagram, slot, None),
            (Self::WhatsappBusinessAccount, Field::Entry | Field::Messaging | Field::Standby) => {
                unknown(Platform::Whatsapp, slot, None)
            }
            (Self::Other(name), _) => unknown(Platform::Page, slot, Some(name)),
        };
        items.push(item);
    }
}

/// Which array of an entry an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Messaging,
    Standby,
    Changes,
    /// The entry itself, when it has no item array.
    Entry,
}

impl Field {
    pub(crate) const fn as_str(self) -> &'static str {
        match self {
            Self::Messaging => "messaging",
            Self::Standby => "standby",
            Self::Changes => "changes",
            Self::Entry => "entry",
        }
    }
}

/// The array inside a WhatsApp change's `value` that an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NestedArray {
    Messages,
    Statuses,
}

impl NestedArray {
    const fn as_str(self) -> &'static str {
        match self {
            Self::Messages => "messages",
            Self::Statuses => "statuses",
        }
    }
}

/// Where an item sits in the envelope: what a platform module needs besides the item itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot<'e, 'a> {
    pub(crate) entry: &'e Entry<'a>,
    pub(crate) field: Field,
    pub(crate) item_index: u32,
    /// What the item's `raw` is: the array element, or for WhatsApp the nested message or status.
    pub(crate) raw: &'a RawValue,
    /// Set for the messages and statuses inside a WhatsApp change.
    pub(crate) nested: Option<(NestedArray, u32)>,
    /// Whether the item belongs to a thread another app owns.
    pub(crate) standby: bool,
}

/// How an item is recognized again when Meta redelivers it.
#[derive(Debug)]
pub(crate) enum Dedup {
    /// A key from the item's natural identity (`mid`, watermark).
    Natural(String),
    /// The SHA-256 of the item's raw bytes, which a redelivery repeats.
    Hash,
}

/// The parts of an [`Item`] that its platform module decides.
#[derive(Debug)]
pub(crate) struct Parts<'a> {
    pub(crate) event_type: String,
    pub(crate) platform: Platform,
    pub(crate) page_id: String,
    pub(crate) conversation_id: Option<String>,
    pub(crate) sender_id: Option<String>,
    pub(crate) recipient_id: Option<String>,
    pub(crate) direction: Direction,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) data: Value,
    /// The body's JSON string behind `data.text`, if `data.text` is decoded from one.
    pub(crate) text: Option<&'a RawValue>,
    pub(crate) dedup: Dedup,
}

impl<'e, 'a> Slot<'e, 'a> {
    fn new(entry: &'e Entry<'a>, field: Field, item_index: u32, raw: &'a RawValue) -> Self {
        Self {
            entry,
            field,
            item_index,
            raw,
            nested: None,
            standby: field == Field::Standby,
        }
    }

    /// The entry's `time` in milliseconds.
    pub(crate) fn entry_time_ms(&self) -> Option<i64> {
        self.entry.time().map(wire::millis)
    }

    /// The entry id, else `fallback`, else empty.
    pub(crate) fn page_id_or(&self, fallback: Option<&str>) -> String {
        self.entry.id().or(fallback).map(str::to_owned).unwrap_or_default()
    }

    /// The item of a change that carries nothing but its fields: no parties, inbound, timed by the
    /// entry, deduplicated by its bytes.
    pub(crate) fn change_item(self, platform: Platform, page_id: String, event_type: String, data: Value) -> Item<'a> {
        self.into_item(Parts {
            event_type,
            platform,
            page_id,
            conversation_id: None,
            sender_id: None,
            recipient_id: None,
            direction: Direction::Inbound,
            timestamp_ms: self.entry_time_ms(),
            data,
            text: None,
            dedup: Dedup::Hash,
        })
    }

    pub(crate) fn into_item(self, parts: Parts<'a>) -> Item<'a> {
        let key = match parts.dedup {
            Dedup::Natural(key) => key,
            Dedup::Hash => hash_key(self.raw),
        };
        Item {
            entry_index: self.entry.index(),
            item_index: self.item_index,
            field: self.field.as_str(),
            nested: self.nested.map(|(array, index)| NestedSource {
                array: array.as_str().to_owned(),
                index,
            }),
            entry_id: self.entry.id().map(str::to_owned),
            event_type: parts.event_type,
            platform: parts.platform,
            page_id: parts.page_id,
            conversation_id: parts.conversation_id,
            sender_id: parts.sender_id,
            recipient_id: parts.recipient_id,
            direction: parts.direction,
            standby: self.standby,
            timestamp_ms: parts.timestamp_ms,
            text: parts
                .text
                .filter(|_| parts.data.get("text").is_some_and(Value::is_string)),
            data: parts.data,
            raw: self.raw,
            // Another app owns a standby thread: its items must not collide with the copies the
            // owning app's subscription delivers.
            dedup_key: if self.standby { ["standby:", &key].concat() } else { key },
        }
    }
}

fn hash_key(raw: &RawValue) -> String {
    ["h:", &hex::encode(Sha256::digest(raw.get().as_bytes()))].concat()
}

/// `<platform>.<field>` with `data: {field, value}` (value as sent) for a change that no reader
/// knows more about; `<platform>.unknown` with `data: {kind}` (the field as sent, or null) when the
/// field is missing or not a plain name. Returns the event type and `data`.
pub(crate) fn other_change(
    platform: Platform,
    field: Option<Cow<'_, str>>,
    value: Option<&RawValue>,
) -> (String, Value) {
    match field {
        Some(field) if wire::is_field_name(&field) => (
            [platform.as_str(), ".", &field].concat(),
            wire::record([
                ("field", Value::String(field.into_owned())),
                ("value", wire::as_sent(value)),
            ]),
        ),
        field => (
            [platform.as_str(), ".unknown"].concat(),
            wire::record([("kind", wire::opt_string(field.map(Cow::into_owned)))]),
        ),
    }
}

/// `<platform>.unknown`, for what has no reader: entries without item arrays, messaging items of
/// WhatsApp entries, and everything of objects other than `page`, `instagram` and
/// `whatsapp_business_account`. `data.kind` names what the item is, as far as that is visible: the
/// object's name for other objects (`object`); else the entry's first key other than `id` and `time`,
/// or a messaging item's first key other than `sender`, `recipient` and `timestamp`.
fn unknown<'a>(platform: Platform, slot: Slot<'_, 'a>, object: Option<&str>) -> Item<'a> {
    let (kind, sender_id, recipient_id, timestamp_ms) = match (object, slot.field) {
        (Some(object), _) => (Some(object.to_owned()), None, None, None),
        (None, Field::Messaging | Field::Standby) => {
            let item = MessagingItem::parse(slot.raw);
            (
                item.first_key.as_deref().map(str::to_owned),
                item.sender_id(),
                item.recipient_id(),
                item.timestamp_ms(),
            )
        }
        (None, Field::Changes) => {
            let change = wire::object::<wire::ChangeWire<'_>>(Some(slot.raw)).unwrap_or_default();
            (wire::string(change.field).map(Cow::into_owned), None, None, None)
        }
        (None, Field::Entry) => (
            wire::first_key(slot.raw, &["id", "time"]).map(Cow::into_owned),
            None,
            None,
            None,
        ),
    };
    slot.into_item(Parts {
        event_type: [platform.as_str(), ".unknown"].concat(),
        platform,
        page_id: slot.page_id_or(None),
        conversation_id: None,
        sender_id,
        recipient_id,
        direction: Direction::Inbound,
        timestamp_ms: timestamp_ms.or_else(|| slot.entry_time_ms()),
        data: wire::record([("kind", wire::opt_string(kind))]),
        text: None,
        dedup: Dedup::Hash,
    })
}
