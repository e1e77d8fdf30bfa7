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
//! 1. [`Envelope::parse`] reads `object` and `entry[]` without copying (a malformed body, or one
//!    that repeats a key within an object, answers 400); [`Envelope::entry_ids`] names the Pages
//!    whose app secret should verify it.
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
//! Event contract v1. Every listed `data` key is always present, null when Meta did not send it;
//! "as sent" means the JSON value copied verbatim. Ids (mids, wamids, app, user, ad, post and
//! comment ids) are always strings, digit for digit even when Meta sends numbers beyond 2^53. The
//! routing string of postbacks, quick replies, referrals and WhatsApp replies and buttons is
//! `payload`; human text (message text, caption, comment, reply title, system message) is `text`;
//! the message id (`mid`, WhatsApp `wamid`) is `mid`. Texts are decoded while `raw` keeps the bytes
//! as sent.
//!
//! Messenger (`object: "page"`, `messaging[]` and `standby[]`, and the App Dashboard's test payloads
//! of the Messenger fields in `changes[]`):
//!
//! | type | `data` |
//! |---|---|
//! | `messenger.message` | `mid`, `text`, `attachments` (`[{type, url, title, payload}]`, `[]` when none), `reply_to` (`{mid}`), `referral` (as sent; Click-to-Messenger ads), `commands` (as sent) |
//! | `messenger.quick_reply` | `mid`, `text`, `payload` |
//! | `messenger.message_echo` | `mid`, `text`, `attachments`, `app_id`, `metadata` (outbound) |
//! | `messenger.postback` | `mid`, `title`, `payload`, `referral` (as sent) |
//! | `messenger.referral` | `payload` (= `ref`), `ref`, `source`, `type`, `ad_id`, `ads_context_data` (as sent), `referer_uri` |
//! | `messenger.reaction` | `mid` (the message reacted to), `action`, `reaction`, `emoji` |
//! | `messenger.read` | `watermark` |
//! | `messenger.delivery` | `mids`, `watermark` |
//! | `messenger.message_edit` | `mid`, `text`, `num_edit` |
//! | `messenger.optin` | `type`, `payload` (else `ref`), `ref`, `user_ref`, `title`, `notification_messages_token`, `notification_messages_status`, `notification_messages_frequency`, `notification_messages_timezone`, `token_expiry_timestamp`, `user_token_status` |
//! | `messenger.account_linking` | `status`, `authorization_code` |
//! | `messenger.pass_thread_control`, `messenger.take_thread_control` | `new_owner_app_id`, `previous_owner_app_id`, `metadata` |
//! | `messenger.request_thread_control` | `requested_owner_app_id`, `metadata` |
//! | `messenger.app_roles` | `roles` (as sent) |
//! | `messenger.policy_enforcement` | `action`, `reason` |
//! | `messenger.game_play` | `game_id`, `player_id`, `context_type`, `context_id`, `score` (as sent), `payload` |
//! | `messenger.messaging_feedback` | `feedback_screens` (as sent) |
//! | `messenger.response_feedback` | `mid` (the message rated), `feedback` |
//! | `messenger.order` | `mid`, `text`, `products` (as sent), `note`, `currency` (the order's, else the one all products share), `order` (the whole `send_cart` order as sent) |
//! | `messenger.unknown` | `kind`: the item's first key other than `sender`, `recipient`, `timestamp` |
//!
//! Page changes (`object: "page"`, `changes[]`; no parties, timed by the entry):
//!
//! | type | `data` |
//! |---|---|
//! | `page.feed` | `item`, `verb`, `post_id`, `comment_id`, `parent_id`, `text` (`value.message`), `from` (as sent), `created_time` (ms), `value` (as sent) |
//! | `page.leadgen` | `leadgen_id`, `form_id`, `ad_id`, `adgroup_id`, `created_time` (ms), `value` (as sent) |
//! | `page.<field>` (any other field matching `[a-z0-9_]+`) | `field`, `value` (as sent) |
//! | `page.unknown` | `kind`: the change's field, an entry's first key, or the object's name for objects other than `page`, `instagram` and `whatsapp_business_account` (`user`, `permissions`, …) |
//!
//! Instagram (`object: "instagram"`; direct messages are read like Messenger's, comments and
//! mentions come in `changes[]`, as do the dashboard's test payloads of the messaging fields):
//!
//! | type | `data` |
//! |---|---|
//! | `instagram.message` | `mid`, `text`, `attachments`, `reply_to` (`{mid}`, or `{story: {url, id}}` as sent), `referral`, `is_unsupported` (bool) |
//! | `instagram.quick_reply` | `mid`, `text`, `payload` |
//! | `instagram.message_echo` | `mid`, `text`, `attachments`, `reply_to`, `app_id` (outbound) |
//! | `instagram.message_deleted` | `mid` |
//! | `instagram.message_edit` | `mid`, `text`, `num_edit` |
//! | `instagram.reaction` | `mid`, `action`, `reaction`, `emoji` |
//! | `instagram.postback` | `mid`, `title`, `payload`, `referral` |
//! | `instagram.referral` | `payload`, `ref`, `source`, `type`, `ad_id`, `ads_context_data` |
//! | `instagram.read` | `mid`, `watermark` |
//! | `instagram.comment` (fields `comments`, `live_comments`) | `comment_id`, `text`, `from` (as sent), `media` (as sent), `parent_id`, `value` (as sent) |
//! | `instagram.mention` | `media_id`, `comment_id`, `value` (as sent) |
//! | `instagram.<field>` (any other change field) | `field`, `value` |
//! | `instagram.unknown` | `kind` (event keys Instagram has no type for, such as handovers, land here too) |
//!
//! WhatsApp (`object: "whatsapp_business_account"`): one event per element of a `messages`
//! change's `value.messages[]`, then per element of its `value.statuses[]`, with `raw` that one
//! object, `source.nested` saying where it sits, and `page_id` the business phone number
//! (`metadata.phone_number_id`). Every message type's `data` also has `profile_name`, `wa_id`,
//! `context` (as sent) and `referral` (as sent):
//!
//! | type | `data` |
//! |---|---|
//! | `whatsapp.message` | `mid`, `message_type` (`text`, `image`, `audio`, `video`, `document`, `sticker`, `location`, `contacts`), `text` (body or caption), `media`, `location`, `contacts` (as sent) |
//! | `whatsapp.button_reply` | `mid`, `payload`, `title`, `text` |
//! | `whatsapp.list_reply` | `mid`, `payload`, `title`, `description`, `text` |
//! | `whatsapp.button` | `mid`, `payload`, `text` |
//! | `whatsapp.reaction` | `mid`, `reacted_mid`, `emoji` (null when removed), `action` (`react`, `unreact`) |
//! | `whatsapp.order` | `mid`, `catalog_id`, `text`, `product_items` (as sent) |
//! | `whatsapp.system` | `mid`, `system_type`, `text`, `new_wa_id`, `customer` |
//! | `whatsapp.unsupported` | `mid`, `message_type`, `errors` (as sent); any other message type |
//! | `whatsapp.status` | `mid`, `status`, `recipient_id`, `conversation`, `pricing`, `errors` (as sent), `biz_opaque_callback_data` |
//! | `whatsapp.<field>` (any other change field) | `field`, `value` |
//! | `whatsapp.unknown` | `kind` (`messages` for a change with neither messages nor statuses) |
//!
//! Dedup keys (see [`Item::dedup_key`]): `{type}:{mid}` for items a message id identifies
//! (`message_edit` adds `:{num_edit}`), `whatsapp.status:{wamid}:{status}`,
//! `{type}:{sender}:{watermark}` for reads and deliveries, else a hash of `raw`; `standby:` in
//! front for standby items.

mod duplicate_key;
mod envelope;
mod instagram;
mod messenger;
mod normalize;
mod page;
mod signature;
mod whatsapp;
mod wire;

pub use envelope::{Entry, Envelope, EnvelopeError, ProofMismatch, VerifiedEnvelope};
pub use normalize::Item;
pub use signature::{sign, SignatureError, SignatureHeader, Verified, SHA1_SIGNATURE_HEADER, SIGNATURE_HEADER};
