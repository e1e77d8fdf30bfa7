//! Normalization: every item of a verified envelope becomes one [`Item`], the pure half of an
//! [`Event`] (the ingress adds the ids, the tenant and the receive time with [`Item::into_event`]).
//!
//! Each Meta `object` has its own module: `page` is read by [`crate::messenger`] (`messaging[]`,
//! `standby[]`) and [`crate::page`] (`changes[]`). Objects without a module yet (`instagram`,
//! `whatsapp_business_account`, `user`, …) become `<platform>.unknown` items with everything in
//! `raw`; supporting one is a new module and a new arm in [`Object::normalize`].

use pagewire_core::clock::rfc3339_ms;
use pagewire_core::{Direction, Event, EventId, EventSource, InboundId, Platform, TenantId, EVENT_VERSION};
use serde_json::value::RawValue;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::envelope::{Entry, VerifiedEnvelope};
use crate::messenger::MessagingItem;
use crate::wire;
use crate::{messenger, page};

/// One normalized Meta item, borrowing its raw bytes from the verified body.
///
/// `data` holds the type's fields, always all present (null when Meta did not send them); see the
/// crate documentation for the shape of each type.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    /// Position of the entry in `entry[]`.
    pub entry_index: u32,
    /// Position of the item in its array (0 for an item of field `entry`).
    pub item_index: u32,
    /// `messaging`, `standby`, `changes`, or `entry` for an entry without any item array.
    pub field: &'static str,
    /// `entry[].id`: the routing key (Page, Instagram account or WhatsApp Business Account id) that
    /// finds the tenant.
    pub entry_id: Option<String>,
    /// `<platform>.<kind>`, e.g. `messenger.postback`.
    pub event_type: String,
    pub platform: Platform,
    /// The Page (account) the item belongs to: the entry id, else the Page side of the item, else
    /// empty.
    pub page_id: String,
    /// `{page_id}:{counterpart}`, where the counterpart is the person (or chat-plugin `user_ref`);
    /// `None` when either is unknown.
    pub conversation_id: Option<String>,
    /// `sender.id`, else `sender.user_ref`.
    pub sender_id: Option<String>,
    /// `recipient.id`, else `recipient.user_ref`.
    pub recipient_id: Option<String>,
    /// `Outbound` for echoes of what the Page sent.
    pub direction: Direction,
    /// True for items of `entry[].standby[]`.
    pub standby: bool,
    /// The item's time in Unix milliseconds: its `timestamp`, else the entry's `time` (seconds are
    /// converted), else `None`.
    pub timestamp_ms: Option<i64>,
    pub data: Value,
    /// The item exactly as sent: a slice of the verified body.
    pub raw: &'a RawValue,
    /// Same for every redelivery of this item, different for different items of one Page:
    /// `{type}:{mid}` for messages, quick replies, echoes and postbacks, `read:{sender}:{watermark}`,
    /// `delivery:{sender}:{watermark}`, else `h:{sha256 of raw}`; `standby:` in front for standby
    /// items.
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
                nested: None,
            },
        }
    }
}

impl<'a> VerifiedEnvelope<'a> {
    /// One [`Item`] per element of every entry's `messaging[]`, then `standby[]`, then `changes[]`,
    /// entries in order and items in order; an entry with none of these arrays yields one item of
    /// field `entry`. Pure, and total: any JSON yields items, never a panic.
    pub fn normalize(&self) -> Vec<Item<'a>> {
        let envelope = self.envelope();
        let object = Object::parse(envelope.object());
        let mut items = Vec::with_capacity(envelope.item_count());
        for entry in envelope.entries() {
            if entry.has_no_item_arrays() {
                items.push(object.normalize(Slot {
                    entry,
                    field: Field::Entry,
                    item_index: 0,
                    raw: entry.raw(),
                }));
                continue;
            }
            let arrays = [
                (Field::Messaging, entry.messaging()),
                (Field::Standby, entry.standby()),
                (Field::Changes, entry.changes()),
            ];
            for (field, list) in arrays {
                for (index, raw) in list.unwrap_or_default().iter().enumerate() {
                    items.push(object.normalize(Slot {
                        entry,
                        field,
                        // Meta sends at most 1000 items; saturating only keeps this total.
                        item_index: u32::try_from(index).unwrap_or(u32::MAX),
                        raw,
                    }));
                }
            }
        }
        items
    }
}

/// The Meta `object` of a POST, which decides how its entries are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Object {
    Page,
    Instagram,
    WhatsappBusinessAccount,
    /// `user`, `permissions`, and whatever Meta adds.
    Other,
}

impl Object {
    fn parse(object: &str) -> Self {
        match object {
            "page" => Self::Page,
            "instagram" => Self::Instagram,
            "whatsapp_business_account" => Self::WhatsappBusinessAccount,
            _ => Self::Other,
        }
    }

    fn normalize<'a>(self, slot: Slot<'_, 'a>) -> Item<'a> {
        match (self, slot.field) {
            (Self::Page, Field::Messaging | Field::Standby) => messenger::normalize(slot),
            (Self::Page, Field::Changes) => page::normalize_change(slot),
            (Self::Page, Field::Entry) => unrecognized(Platform::Page, slot),
            (Self::Instagram, _) => unrecognized(Platform::Instagram, slot),
            (Self::WhatsappBusinessAccount, _) => unrecognized(Platform::Whatsapp, slot),
            (Self::Other, _) => unrecognized(Platform::Page, slot),
        }
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

/// Where an item sits in the envelope: what a platform module needs besides the item itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot<'e, 'a> {
    pub(crate) entry: &'e Entry<'a>,
    pub(crate) field: Field,
    pub(crate) item_index: u32,
    pub(crate) raw: &'a RawValue,
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
pub(crate) struct Parts {
    pub(crate) event_type: String,
    pub(crate) platform: Platform,
    pub(crate) page_id: String,
    pub(crate) conversation_id: Option<String>,
    pub(crate) sender_id: Option<String>,
    pub(crate) recipient_id: Option<String>,
    pub(crate) direction: Direction,
    pub(crate) timestamp_ms: Option<i64>,
    pub(crate) data: Value,
    pub(crate) dedup: Dedup,
}

impl<'a> Slot<'_, 'a> {
    /// The entry's `time` in milliseconds.
    pub(crate) fn entry_time_ms(&self) -> Option<i64> {
        self.entry.time().map(wire::millis)
    }

    /// The entry id, else `fallback`, else empty.
    pub(crate) fn page_id_or(&self, fallback: Option<&str>) -> String {
        self.entry.id().or(fallback).map(str::to_owned).unwrap_or_default()
    }

    pub(crate) fn into_item(self, parts: Parts) -> Item<'a> {
        let standby = self.field == Field::Standby;
        let key = match parts.dedup {
            Dedup::Natural(key) => key,
            Dedup::Hash => hash_key(self.raw),
        };
        Item {
            entry_index: self.entry.index(),
            item_index: self.item_index,
            field: self.field.as_str(),
            entry_id: self.entry.id().map(str::to_owned),
            event_type: parts.event_type,
            platform: parts.platform,
            page_id: parts.page_id,
            conversation_id: parts.conversation_id,
            sender_id: parts.sender_id,
            recipient_id: parts.recipient_id,
            direction: parts.direction,
            standby,
            timestamp_ms: parts.timestamp_ms,
            data: parts.data,
            raw: self.raw,
            // Another app owns a standby thread: its items must not collide with the copies the
            // owning app's subscription delivers.
            dedup_key: if standby { format!("standby:{key}") } else { key },
        }
    }
}

fn hash_key(raw: &RawValue) -> String {
    ["h:", &hex::encode(Sha256::digest(raw.get().as_bytes()))].concat()
}

/// `<platform>.unknown`, for items of objects (or shapes) that have no reader yet. `data.kind` names
/// what the item is, as far as that is visible: the first key of a messaging item other than
/// `sender`, `recipient` and `timestamp`; a change's `field`; an entry's first key other than `id`
/// and `time`.
fn unrecognized<'a>(platform: Platform, slot: Slot<'_, 'a>) -> Item<'a> {
    let (kind, sender_id, recipient_id, timestamp_ms) = match slot.field {
        Field::Messaging | Field::Standby => {
            let item = MessagingItem::parse(slot.raw);
            (
                item.first_key.as_deref().map(str::to_owned),
                item.sender_id(),
                item.recipient_id(),
                item.timestamp_ms(),
            )
        }
        Field::Changes => {
            let change = wire::object::<page::ChangeWire<'_>>(Some(slot.raw)).unwrap_or_default();
            (
                wire::string(change.field).map(|field| field.into_owned()),
                None,
                None,
                None,
            )
        }
        Field::Entry => (
            wire::first_key(slot.raw, &["id", "time"]).map(|key| key.into_owned()),
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
        dedup: Dedup::Hash,
    })
}
