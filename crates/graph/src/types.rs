//! What the Graph API answers, and what the client sends it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Page as `GET /{page-id}?fields=id,name` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageInfo {
    pub id: String,
    /// Absent when the token may not read it.
    #[serde(default)]
    pub name: Option<String>,
}

/// One app subscribed to a Page's webhooks, from `GET /{page-id}/subscribed_apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribedApp {
    /// The app id.
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// The Page's webhook fields this app receives: `messages`, `messaging_postbacks`, `feed`, …
    #[serde(default)]
    pub subscribed_fields: Vec<String>,
}

/// The app's webhook configuration for one object, from `GET /{app-id}/subscriptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AppSubscription {
    /// `page`, `instagram`, `whatsapp_business_account`, `user`, `permissions`, …
    pub object: String,
    pub callback_url: String,
    pub active: bool,
    /// The field names (Meta also sends each field's version, which this drops).
    pub fields: Vec<String>,
}

/// `{"object", "callback_url", "active", "fields": [{"name", "version"}]}` as Meta sends it.
#[derive(Deserialize)]
pub(crate) struct WireAppSubscription {
    object: String,
    #[serde(default)]
    callback_url: String,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    fields: Vec<WireField>,
}

/// A field of an app subscription: Meta sends `{"name": "messages", "version": "v21.0"}`; a bare
/// string is accepted too.
#[derive(Deserialize)]
#[serde(untagged)]
enum WireField {
    Named { name: String },
    Bare(String),
}

impl From<WireAppSubscription> for AppSubscription {
    fn from(wire: WireAppSubscription) -> Self {
        Self {
            object: wire.object,
            callback_url: wire.callback_url,
            active: wire.active,
            fields: wire
                .fields
                .into_iter()
                .map(|field| match field {
                    WireField::Named { name } | WireField::Bare(name) => name,
                })
                .collect(),
        }
    }
}

/// The app webhook to set with [`GraphClient::set_app_subscription`](crate::GraphClient::set_app_subscription).
///
/// Before accepting it, Meta calls `callback_url` with `hub.mode=subscribe`, `hub.verify_token` and a
/// `hub.challenge`, and expects the challenge back: the gateway must already know `verify_token`.
#[derive(Clone, Copy)]
pub struct NewAppSubscription<'a> {
    /// `page` for Messenger and Page changes, `instagram`, `whatsapp_business_account`.
    pub object: &'a str,
    pub callback_url: &'a str,
    pub fields: &'a [String],
    /// The shared secret Meta echoes in the handshake. Redacted in `Debug`.
    pub verify_token: &'a str,
}

impl fmt::Debug for NewAppSubscription<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewAppSubscription")
            .field("object", &self.object)
            .field("callback_url", &self.callback_url)
            .field("fields", &self.fields)
            .field("verify_token", &"[redacted]")
            .finish()
    }
}

/// `{"data": [...]}`, the envelope of Graph API lists. Paging is ignored: these lists hold one
/// entry per app, far below a page.
#[derive(Deserialize)]
pub(crate) struct List<T> {
    pub(crate) data: Vec<T>,
}

/// `{"success": true}`, the answer to writes.
#[derive(Deserialize)]
pub(crate) struct Success {
    pub(crate) success: bool,
}
