//! `pagewire-delivery`: carries stored events to customer endpoints.
//!
//! The [`Dispatcher`] leases due deliveries from the store (the lease is committed before any request
//! leaves), sends each through one pooled [`Sender`] with bounded concurrency, classifies what came
//! back into a [`DeliveryOutcome`](pagewire_core::DeliveryOutcome), lets the pure
//! [`RetryPolicy`](pagewire_core::RetryPolicy) decide the next step, and records the attempts in one
//! write per batch.
//!
//! The [`Sender`] refuses loopback, private and link-local destinations unless told otherwise, checked
//! on every connection (at DNS resolution), so a customer URL cannot reach the operator's network.
//!
//! This crate must not depend on the HTTP server or on a particular storage backend.

mod dispatcher;
mod meta_format;
mod sender;
mod ssrf;

pub use dispatcher::{DeliveryConfig, Dispatcher};
pub use meta_format::{hub_signature, meta_body};
pub use reqwest::Error as ClientError;
pub use sender::{SendReport, Sender};
pub use ssrf::{check_destination, is_public_ip, DestinationError, DestinationPolicy};
