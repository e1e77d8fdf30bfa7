//! `pagewire-delivery`: carries stored events to customer endpoints.
//!
//! The [`Dispatcher`] leases due deliveries from the store (the lease is committed before any request
//! leaves), sends each through one pooled [`Sender`] with bounded concurrency, classifies what came
//! back into a [`DeliveryOutcome`](pagewire_core::DeliveryOutcome), lets the pure
//! [`RetryPolicy`](pagewire_core::RetryPolicy) decide the next step, and records the attempts in one
//! write per batch.
//!
//! The [`Sender`] refuses every destination that is not a global unicast address unless told
//! otherwise, checked on every connection (at DNS resolution), so a customer URL cannot reach the
//! operator's network. It never uses a proxy from the environment; through the operator's own
//! [`DeliveryProxy`], a target's addresses are checked before the request is handed over.
//!
//! This crate must not depend on the HTTP server or on a particular storage backend.

mod dispatcher;
mod meta_format;
mod proxy;
mod sender;
mod ssrf;

pub use dispatcher::{DeliveryConfig, Dispatcher};
pub use meta_format::{hub_signature, meta_body};
pub use proxy::{DeliveryProxy, ProxyError};
pub use reqwest::Error as ClientError;
pub use sender::{SendReport, Sender};
pub use ssrf::{check_destination, is_public_ip, DestinationError, DestinationPolicy};
