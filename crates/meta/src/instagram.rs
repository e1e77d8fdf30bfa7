//! Instagram items: everything under `object: "instagram"`; `entry[].id` is the Instagram
//! professional account.
//!
//! Direct messages (`messaging[]`, `standby[]`) are Messenger-shaped and read by the Messenger
//! reader as [`Product::Instagram`]: same parties and conversations, the `instagram.` prefix, and
//! Instagram's own flags (`is_deleted`, `is_unsupported`, story replies). Changes (`changes[]`) are
//! comments (`comments`, `live_comments`), @mentions (`mentions`), the App Dashboard's test payloads
//! of the messaging fields (a messaging item in the value), or `instagram.<field>` with
//! `data: {field, value}`.

use pagewire_core::{Direction, Platform};
use serde_json::value::RawValue;

use crate::messenger::{self, Product};
use crate::normalize::{self, Dedup, Item, Parts, Slot};
use crate::wire::{self, wire_object, ChangeWire};

wire_object!(CommentWire {
    id,
    text,
    from,
    media,
    parent_id,
});

wire_object!(FromWire { id });

wire_object!(MentionWire { media_id, comment_id });

/// Normalizes one `messaging[]` or `standby[]` item of an Instagram entry.
pub(crate) fn normalize_messaging<'a>(slot: Slot<'_, 'a>) -> Item<'a> {
    messenger::normalize(Product::Instagram, slot)
}

/// Normalizes one `changes[]` element of an Instagram entry.
pub(crate) fn normalize_change<'a>(slot: Slot<'_, 'a>) -> Item<'a> {
    let change: ChangeWire<'a> = wire::object(Some(slot.raw)).unwrap_or_default();
    let field = wire::string(change.field);
    if let Some(item) = field
        .as_deref()
        .and_then(|field| messenger::normalize_test_payload(Product::Instagram, slot, field, change.value))
    {
        return item;
    }
    match field.as_deref() {
        Some("comments" | "live_comments") => comment(slot, change.value),
        Some("mentions") => mention(slot, change.value),
        _ => {
            let (event_type, data) = normalize::other_change(Platform::Instagram, field, change.value);
            slot.change_item(Platform::Instagram, slot.page_id_or(None), event_type, data)
        }
    }
}

/// `instagram.comment`: a comment (or live comment) on the account's media. The commenter
/// (`from.id`, Instagram-scoped) is the sender.
fn comment<'a>(slot: Slot<'_, 'a>, value: Option<&'a RawValue>) -> Item<'a> {
    let comment: CommentWire<'a> = wire::object(value).unwrap_or_default();
    let sender_id = wire::object::<FromWire<'_>>(comment.from).and_then(|from| wire::id(from.id));
    let data = wire::record([
        ("comment_id", wire::id_value(comment.id)),
        ("text", wire::string_value(comment.text)),
        ("from", wire::as_sent(comment.from)),
        ("media", wire::as_sent(comment.media)),
        ("parent_id", wire::id_value(comment.parent_id)),
        ("value", wire::as_sent(value)),
    ]);
    slot.into_item(Parts {
        event_type: "instagram.comment".to_owned(),
        platform: Platform::Instagram,
        page_id: slot.page_id_or(None),
        conversation_id: None,
        sender_id,
        recipient_id: None,
        direction: Direction::Inbound,
        timestamp_ms: slot.entry_time_ms(),
        data,
        text: comment.text,
        dedup: Dedup::Hash,
    })
}

/// `instagram.mention`: the account was @mentioned in a comment or caption.
fn mention<'a>(slot: Slot<'_, 'a>, value: Option<&RawValue>) -> Item<'a> {
    let mention: MentionWire<'_> = wire::object(value).unwrap_or_default();
    let data = wire::record([
        ("media_id", wire::id_value(mention.media_id)),
        ("comment_id", wire::id_value(mention.comment_id)),
        ("value", wire::as_sent(value)),
    ]);
    slot.change_item(
        Platform::Instagram,
        slot.page_id_or(None),
        "instagram.mention".to_owned(),
        data,
    )
}
