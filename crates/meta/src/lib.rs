//! `pagewire-meta`: Meta's webhook wire format. It verifies the `X-Hub-Signature-256` of a POST,
//! reads the envelope, and normalizes every item into the event customer apps consume.
//!
//! It is pure: no I/O, no tokio, axum, sqlx or reqwest, no clock. It depends only on
//! `pagewire-core` (the event contract and ids) and on parsing and crypto crates, so that all of it
//! is tested with plain bytes and fuzzed.
//!
//! # Entry points
//!
//! The ingress holds the raw body and the signature headers:
//!
//! 1. [`Envelope::parse`] reads `object` and `entry[]` without copying (a malformed body answers
//!    400); [`Envelope::entry_ids`] names the Pages whose app secret should verify it.
//! 2. [`SignatureHeader::parse`] and [`SignatureHeader::verify`] check the signature over the raw
//!    bytes and return a [`Verified`] proof (401 otherwise).
//! 3. [`Envelope::into_verified`] joins the two into a [`VerifiedEnvelope`]; when the app secret is
//!    known up front, [`VerifiedEnvelope::parse`] verifies first instead.
//! 4. [`VerifiedEnvelope::normalize`] yields one [`Item`] per item; [`Item::into_event`] adds the
//!    ids, the tenant and the receive time.
//!
//! [`sign`] produces the header Meta would send, for the test simulator.
//!
//! # Event types
//!
//! Messenger (`object: "page"`, `messaging[]` and `standby[]`); every listed `data` key is always
//! present, null when Meta did not send it:
//!
//! | type | `data` |
//! |---|---|
//! | `messenger.message` | `mid`, `text`, `attachments` (`[{type, url, title, payload}]`, `[]` when none), `reply_to` (`{mid}`), `referral` (as sent; Click-to-Messenger ads), `commands` (as sent) |
//! | `messenger.quick_reply` | `mid`, `text`, `payload` |
//! | `messenger.message_echo` | `mid`, `text`, `attachments`, `app_id`, `metadata` (outbound) |
//! | `messenger.postback` | `mid`, `title`, `payload`, `referral` (as sent) |
//! | `messenger.referral` | `payload` (= `ref`), `ref`, `source`, `type`, `ad_id`, `ads_context_data` (as sent), `referer_uri` |
//! | `messenger.reaction` | `mid`, `action`, `reaction`, `emoji` |
//! | `messenger.read` | `watermark` |
//! | `messenger.delivery` | `mids`, `watermark` |
//! | `messenger.message_edit` | `mid`, `text`, `num_edit` |
//! | `messenger.optin` | `type`, `payload` (else `ref`), `ref`, `user_ref`, `title`, `notification_messages_token`, `notification_messages_status`, `notification_messages_frequency`, `notification_messages_timezone`, `token_expiry_timestamp`, `user_token_status` |
//! | `messenger.account_linking` | `status`, `authorization_code` |
//! | `messenger.pass_thread_control`, `messenger.take_thread_control` | `new_owner_app_id`, `previous_owner_app_id`, `metadata` |
//! | `messenger.request_thread_control` | `requested_owner_app_id`, `metadata` |
//! | `messenger.app_roles` | `roles` (as sent) |
//! | `messenger.policy_enforcement` | `action`, `reason` |
//! | `messenger.unknown` | `kind`: the item's first key other than `sender`, `recipient`, `timestamp` |
//!
//! Page changes (`object: "page"`, `changes[]`) are `page.<field>` with `data: {field, value}`.
//! Other objects (`instagram`, `whatsapp_business_account`, `user`, …) and entries without any item
//! array are `<platform>.unknown` with `data: {kind}`, everything kept in `raw`.
//!
//! Ids (`mid`, `app_id`, `ad_id`, sender and recipient) are always strings, digit for digit even
//! when Meta sends numbers beyond 2^53; texts are decoded while `raw` keeps the bytes as sent.

mod envelope;
mod messenger;
mod normalize;
mod page;
mod signature;
mod wire;

pub use envelope::{Entry, Envelope, EnvelopeError, ProofMismatch, VerifiedEnvelope};
pub use normalize::Item;
pub use signature::{sign, SignatureError, SignatureHeader, Verified, SHA1_SIGNATURE_HEADER, SIGNATURE_HEADER};
