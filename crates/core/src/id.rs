//! Prefixed ids. Each kind of record has its own newtype, so a delivery id can never be passed where
//! an event id is wanted, and a log line tells what an id names: `ten_`, `key_`, `app_`, `pg_`, `ep_`,
//! `evt_`, `dlv_`, `att_`, `inb_`, `rfs_`.
//!
//! The body after the prefix is a ULID: unique without coordination between nodes, and sorted by
//! creation time, which keeps cursors and indexes cheap.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};

/// ULIDs that increase within a millisecond too, so that ids made in order sort in order (events
/// of one webhook keep the order of its items).
fn next_ulid() -> ulid::Ulid {
    static GENERATOR: Mutex<ulid::Generator> = Mutex::new(ulid::Generator::new());
    let mut generator = GENERATOR.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    generator.generate().unwrap_or_else(|_| ulid::Ulid::new())
}

/// An id string that does not have the expected prefix or body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {kind} id (expected `{prefix}` followed by 26 characters)")]
pub struct InvalidId {
    pub kind: &'static str,
    pub prefix: &'static str,
    pub value: String,
}

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $kind:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new, unique id, greater than every id this process made before.
            pub fn new() -> Self {
                Self(format!("{}{}", $prefix, next_ulid()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s.strip_prefix($prefix) {
                    Some(body) if ulid::Ulid::from_string(body).is_ok() => Ok(Self(s.to_owned())),
                    _ => Err(InvalidId { kind: $kind, prefix: $prefix, value: s.chars().take(64).collect() }),
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;

            fn try_from(s: String) -> Result<Self, Self::Error> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

prefixed_id!(/// A tenant: a customer of the gateway (a bot developer or an agency).
    TenantId, "ten_", "tenant");
prefixed_id!(/// A tenant API key record (not the key itself).
    ApiKeyId, "key_", "API key");
prefixed_id!(/// Pagewire's record of a Meta app.
    AppRecordId, "app_", "app");
prefixed_id!(/// Pagewire's record of an onboarded Page, Instagram account or WhatsApp account.
    PageRecordId, "pg_", "page");
prefixed_id!(/// A customer endpoint: a URL that receives signed events.
    EndpointId, "ep_", "endpoint");
prefixed_id!(/// A normalized event; also the `webhook-id` of each of its deliveries.
    EventId, "evt_", "event");
impl EventId {
    /// An event id of the time `ms` (Unix ms), the event's arrival by the gateway's clock: ids and
    /// arrival times then sort alike, so one index on (tenant, id) serves listing and retention.
    /// Within a millisecond, ids made in order sort in order.
    pub fn at(ms: i64) -> Self {
        Self(format!("{}{}", Self::PREFIX, ulid_at(ms)))
    }

    /// The least id of the time `ms`: every event that arrived before `ms` has a smaller id.
    pub fn first_at(ms: i64) -> Self {
        Self(format!("{}{}", Self::PREFIX, first_ulid_at(ms)))
    }
}

/// A ULID of the time `ms` (Unix ms) whose 80 bits after the time are a random value per process,
/// counting up: within a millisecond, ULIDs made in order sort in order, and two nodes making them
/// in the same millisecond start from different random values.
fn ulid_at(ms: i64) -> ulid::Ulid {
    static SEQUENCE: LazyLock<(u128, AtomicU64)> = LazyLock::new(|| {
        let random = ulid::Ulid::new().random();
        (random & (0xFFFF << 64), AtomicU64::new(random as u64))
    });
    let random = SEQUENCE.0 | u128::from(SEQUENCE.1.fetch_add(1, Ordering::Relaxed));
    ulid::Ulid::from_parts(u64::try_from(ms).unwrap_or(0), random)
}

/// The least ULID of the time `ms`.
fn first_ulid_at(ms: i64) -> ulid::Ulid {
    ulid::Ulid::from_parts(u64::try_from(ms).unwrap_or(0), 0)
}

prefixed_id!(/// One event on its way to one endpoint.
    DeliveryId, "dlv_", "delivery");
prefixed_id!(/// One HTTP attempt of a delivery.
    AttemptId, "att_", "attempt");
prefixed_id!(/// One raw webhook POST received from Meta.
    InboundId, "inb_", "inbound");
impl InboundId {
    /// The id of a POST that arrived at `ms` (Unix ms, by the gateway's clock): ids and arrival
    /// times sort alike, so retention finds old POSTs by their ids (no index on the arrival time).
    pub fn at(ms: i64) -> Self {
        Self(format!("{}{}", Self::PREFIX, ulid_at(ms)))
    }

    /// The least id of the time `ms`: every POST that arrived before `ms` has a smaller id.
    pub fn first_at(ms: i64) -> Self {
        Self(format!("{}{}", Self::PREFIX, first_ulid_at(ms)))
    }
}

prefixed_id!(/// A webhook POST the ingress refused, kept as metadata (never its body).
    RefusalId, "rfs_", "refusal");
impl RefusalId {
    /// The id of a POST refused at `ms` (Unix ms, by the gateway's clock): ids and times sort
    /// alike, so retention finds old refusals by their ids.
    pub fn at(ms: i64) -> Self {
        Self(format!("{}{}", Self::PREFIX, ulid_at(ms)))
    }

    /// The least id of the time `ms`.
    pub fn first_at(ms: i64) -> Self {
        Self(format!("{}{}", Self::PREFIX, first_ulid_at(ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_prefix_and_round_trip() {
        let id = EventId::new();
        assert!(id.as_str().starts_with("evt_"));
        assert_eq!(id.as_str().len(), 30);
        assert_eq!(id.as_str().parse::<EventId>(), Ok(id.clone()));
        let json = serde_json::to_string(&id).unwrap_or_default();
        assert_eq!(serde_json::from_str::<EventId>(&json).ok(), Some(id));
    }

    #[test]
    fn ids_made_in_order_sort_in_order() {
        let ids: Vec<EventId> = (0..1000).map(|_| EventId::new()).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn event_ids_of_a_time_sort_by_it_and_then_by_making() {
        let ms = 1_700_000_000_000;
        let ids: Vec<EventId> = (0..1000).map(|_| EventId::at(ms)).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(EventId::first_at(ms) <= ids[0]);
        assert!(ids[999] < EventId::first_at(ms + 1));
        assert!(EventId::at(ms - 1) < EventId::first_at(ms));
        assert_eq!(ids[0].as_str().parse::<EventId>(), Ok(ids[0].clone()));
    }

    #[test]
    fn inbound_ids_of_a_time_sort_by_it() {
        let ms = 1_700_000_000_000;
        let (before, at, after) = (InboundId::at(ms - 1), InboundId::at(ms), InboundId::at(ms + 1));
        assert!(before < InboundId::first_at(ms) && InboundId::first_at(ms) <= at);
        assert!(at < InboundId::first_at(ms + 1) && InboundId::first_at(ms + 1) <= after);
        assert_eq!(at.as_str().parse::<InboundId>(), Ok(at.clone()));
    }

    #[test]
    fn rejects_an_id_of_another_kind() {
        let delivery = DeliveryId::new();
        let err = delivery.as_str().parse::<EventId>();
        assert!(err.is_err());
        assert!(serde_json::from_str::<TenantId>("\"ten_nope\"").is_err());
    }
}
