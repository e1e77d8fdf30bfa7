//! `pagewire-graph`: the gateway's client for Meta's Graph API.
//!
//! Pagewire calls the Graph API for a few control-plane tasks, never on the ingress or delivery hot
//! paths:
//!
//! - check a Page and its access token when a tenant onboards it ([`GraphClient::page`]);
//! - read, set and remove the webhook fields a Page has subscribed for the app
//!   ([`GraphClient::page_subscribed_apps`], [`GraphClient::subscribe_page`],
//!   [`GraphClient::unsubscribe_page`]);
//! - read, set and remove the app's own webhook subscription: callback URL, fields, verify token
//!   ([`GraphClient::app_subscriptions`], [`GraphClient::set_app_subscription`],
//!   [`GraphClient::delete_app_subscription`]).
//!
//! Every call made with a Page token carries its [`appsecret_proof`]. Meta's error bodies are mapped
//! to a [`GraphError`] whose [`code`](GraphError::code) is stable enough for the API layer to put in
//! `application/problem+json`. Transient failures and short rate limits are retried with exponential
//! backoff ([`GraphConfig::max_retries`]); client errors never are.
//!
//! Access tokens and app secrets travel in the query string or in the form body, so this crate never
//! logs a URL, and network errors are turned into strings only after their URL has been stripped.
//!
//! This crate must not depend on the HTTP server, the store or the delivery crates. `pagewire-testkit`
//! (feature `fake-graph`) has a faithful fake of the endpoints used here for tests.

mod client;
mod config;
mod error;
mod proof;
mod types;

pub use client::GraphClient;
pub use config::GraphConfig;
pub use error::GraphError;
pub use proof::appsecret_proof;
pub use types::{AppSubscription, NewAppSubscription, PageInfo, SubscribedApp};
