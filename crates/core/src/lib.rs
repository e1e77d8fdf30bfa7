//! `pagewire-core`: the vocabulary every other Pagewire crate speaks.
//!
//! It owns the prefixed ids, the normalized [`Event`] that customer apps consume, endpoint filters,
//! the pure retry policy, Standard Webhooks signing of outbound requests, the sealing of secrets at
//! rest and the [`Clock`] that lets tests move time.
//!
//! It must not depend on tokio, axum, sqlx, reqwest or anything else that does I/O, so that everything
//! here is tested with plain values.

pub mod clock;
pub mod crypto;
pub mod endpoint;
pub mod event;
pub mod id;
pub mod retry;
pub mod secret;
pub mod signing;

pub use clock::{Clock, ManualClock, SystemClock};
pub use crypto::{CryptoError, MasterKey};
pub use endpoint::{DeliveryControls, EndpointFilter, EventFacts, HealthPolicy, PayloadFormat, RESERVED_HEADERS};
pub use event::{Direction, Event, EventSource, NestedSource, OperationalEvent, Platform, EVENT_VERSION};
pub use id::*;
pub use retry::{DeliveryOutcome, NextStep, RetryPolicy};
pub use secret::Secret;
pub use signing::{Ed25519Key, EndpointSecret, SigningError};
