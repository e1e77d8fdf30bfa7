//! The event contract: the one JSON object per Meta item that customer apps consume.
//!
//! Its fields, their meaning and the `data` of every type are documented in `docs/events.md` and as a
//! JSON Schema in `openapi.yaml`. A change that breaks the shape needs a new [`EVENT_VERSION`].

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::id::{EventId, InboundId, TenantId};

/// The version of the event contract that this build emits.
pub const EVENT_VERSION: u32 = 1;

/// The Meta product an event came from; the first part of its `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    Messenger,
    Instagram,
    Whatsapp,
    Page,
}

impl Platform {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Messenger => "messenger",
            Self::Instagram => "instagram",
            Self::Whatsapp => "whatsapp",
            Self::Page => "page",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "messenger" => Some(Self::Messenger),
            "instagram" => Some(Self::Instagram),
            "whatsapp" => Some(Self::Whatsapp),
            "page" => Some(Self::Page),
            _ => None,
        }
    }
}

/// Whether the Page received the item (`inbound`) or sent it (`outbound`, as echoes are).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// Where in Meta's POST an event came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventSource {
    /// The raw delivery (`/v1/inbound`) that carried the item.
    pub inbound_id: InboundId,
    /// Index in `entry[]`.
    pub entry: u32,
    /// Index in the entry's `messaging[]`, `standby[]` or `changes[]`.
    pub item: u32,
    /// `messaging`, `standby`, `changes`, or `entry` for an entry without any item array.
    pub field: String,
    /// For items nested inside a change's value (WhatsApp's `value.messages[]` and
    /// `value.statuses[]`): which array, and the index in it. `None` otherwise.
    pub nested: Option<NestedSource>,
}

/// Where in a change's `value` a nested item sits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NestedSource {
    /// The array inside `value`: `messages` or `statuses`.
    pub array: String,
    pub index: u32,
}

/// One normalized event: what every endpoint of the owning tenant receives as the request body.
#[derive(Debug, Serialize, Deserialize)]
pub struct Event {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    pub platform: Platform,
    pub tenant_id: TenantId,
    /// The Page, Instagram account or WhatsApp phone-number id the event belongs to.
    pub page_id: String,
    /// Stable per thread (the Page and its counterpart), for ordering and routing.
    pub conversation_id: Option<String>,
    pub sender_id: Option<String>,
    pub recipient_id: Option<String>,
    pub direction: Direction,
    /// True when the item came in `entry[].standby[]` (another app owns the thread).
    pub standby: bool,
    /// When Meta says it happened, in Unix milliseconds.
    pub timestamp_ms: i64,
    /// When Pagewire received it, RFC 3339 UTC.
    pub received_at: String,
    /// The type's fields, flat and predictable (see `docs/events.md`).
    pub data: serde_json::Value,
    /// The item exactly as Meta sent it, byte for byte.
    pub raw: Box<RawValue>,
    pub source: EventSource,
}

impl Event {
    /// The event's JSON, as stored and as sent to endpoints.
    pub fn to_json(&self) -> String {
        // Serializing plain strings, numbers, a `Value` and a `RawValue` cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// An event about a tenant's own setup rather than from Meta: `endpoint.disabled`,
/// `endpoint.recovered`, `delivery.exhausted`, `subscription.lost`. It reaches only the endpoints
/// whose `event_types` name it (or `endpoint.*`, `delivery.*`, `subscription.*`), signed like every
/// event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperationalEvent {
    pub id: EventId,
    #[serde(rename = "type")]
    pub event_type: String,
    pub version: u32,
    pub tenant_id: TenantId,
    pub timestamp_ms: i64,
    /// When it happened, RFC 3339 UTC.
    pub created_at: String,
    pub data: serde_json::Value,
}

impl OperationalEvent {
    /// The operational event types.
    pub const TYPES: [&'static str; 4] = [
        "endpoint.disabled",
        "endpoint.recovered",
        "delivery.exhausted",
        "subscription.lost",
    ];

    pub fn new(event_type: &str, tenant_id: TenantId, now_ms: i64, data: serde_json::Value) -> Self {
        Self {
            id: EventId::at(now_ms),
            event_type: event_type.to_owned(),
            version: EVENT_VERSION,
            tenant_id,
            timestamp_ms: now_ms,
            created_at: crate::clock::rfc3339_ms(now_ms),
            data,
        }
    }

    /// Whether `event_type` is one of these, not a Meta event.
    pub fn is_operational(event_type: &str) -> bool {
        event_type.starts_with("endpoint.")
            || event_type.starts_with("delivery.")
            || event_type.starts_with("subscription.")
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}
