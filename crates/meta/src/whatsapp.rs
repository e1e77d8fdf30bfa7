//! WhatsApp items: the changes of `object: "whatsapp_business_account"`; `entry[].id` is the
//! WhatsApp Business Account.
//!
//! A change of field `messages` has `value: {metadata: {phone_number_id, …}, contacts, messages,
//! statuses, errors}` and becomes one item per element of `messages[]`, then one per element of
//! `statuses[]`, each with `raw` = that one object and [`Item::nested`] saying where it sits. The
//! phone number (`metadata.phone_number_id`) is the item's `page_id`. A `messages` change with
//! neither is one `whatsapp.unknown`; any other field is `whatsapp.<field>` with
//! `data: {field, value}`.
//!
//! The change is read in one pass that keeps `messages[]` and `statuses[]` as borrowed slices;
//! each message and status is then read once more into its own view.

use std::borrow::Cow;

use pagewire_core::{Direction, Platform};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use crate::normalize::{self, Dedup, Item, NestedArray, Parts, Slot};
use crate::wire::{self, wire_object, Lenient, RawList};

/// A change, with the value read only as far as its arrays.
#[derive(Debug, Default, Deserialize)]
struct ChangeWire<'a> {
    #[serde(borrow)]
    field: Option<&'a RawValue>,
    #[serde(borrow)]
    value: Option<Lenient<ValueWire<'a>>>,
}

#[derive(Debug, Default, Deserialize)]
struct ValueWire<'a> {
    #[serde(borrow)]
    metadata: Option<&'a RawValue>,
    #[serde(borrow)]
    contacts: Option<&'a RawValue>,
    #[serde(borrow)]
    messages: Option<RawList<'a>>,
    #[serde(borrow)]
    statuses: Option<RawList<'a>>,
}

wire_object!(MetadataWire { phone_number_id });

wire_object!(ContactWire { profile, wa_id });

wire_object!(ProfileWire { name });

wire_object!(MessageWire {
    from,
    id,
    timestamp,
    kind as "type",
    context,
    referral,
    text,
    image,
    audio,
    video,
    document,
    sticker,
    location,
    contacts,
    interactive,
    button,
    reaction,
    order,
    system,
    errors,
});

wire_object!(TextWire { body });

wire_object!(MediaWire { caption });

wire_object!(InteractiveWire {
    kind as "type",
    button_reply,
    list_reply,
});

wire_object!(ReplyWire { id, title, description });

wire_object!(ButtonWire { payload, text });

wire_object!(ReactionWire { message_id, emoji });

wire_object!(OrderWire {
    catalog_id,
    text,
    product_items,
});

wire_object!(SystemWire {
    body,
    kind as "type",
    new_wa_id,
    wa_id,
    customer,
});

wire_object!(StatusWire {
    id,
    status,
    timestamp,
    recipient_id,
    conversation,
    pricing,
    errors,
    biz_opaque_callback_data,
});

/// Normalizes one `changes[]` element of a WhatsApp entry into one or more items.
pub(crate) fn normalize_change<'a>(slot: Slot<'_, 'a>, items: &mut Vec<Item<'a>>) {
    let change: ChangeWire<'a> = wire::object(Some(slot.raw)).unwrap_or_default();
    let field = wire::string(change.field);
    let value = change.value.and_then(|value| value.0).unwrap_or_default();
    let phone_number_id =
        wire::object::<MetadataWire<'_>>(value.metadata).and_then(|metadata| wire::id(metadata.phone_number_id));
    let page_id = phone_number_id.clone().unwrap_or_else(|| slot.page_id_or(None));

    if field.as_deref() == Some("messages") {
        let messages = value.messages.and_then(|list| list.0).unwrap_or_default();
        let statuses = value.statuses.and_then(|list| list.0).unwrap_or_default();
        if messages.is_empty() && statuses.is_empty() {
            // Only `errors`, or nothing: kept whole.
            let data = wire::record([("kind", Value::String("messages".to_owned()))]);
            items.push(slot.change_item(Platform::Whatsapp, page_id, "whatsapp.unknown".to_owned(), data));
            return;
        }
        let phone = Phone {
            page_id,
            phone_number_id,
            contacts: if messages.is_empty() {
                Vec::new()
            } else {
                contacts(value.contacts)
            },
        };
        for (index, raw) in messages.into_iter().enumerate() {
            items.push(message(&phone, nested(slot, NestedArray::Messages, index, raw)));
        }
        for (index, raw) in statuses.into_iter().enumerate() {
            items.push(status(&phone, nested(slot, NestedArray::Statuses, index, raw)));
        }
        return;
    }

    // Other fields (template, quality and account updates, …) are rare: read the value as sent.
    let change: wire::ChangeWire<'_> = wire::object(Some(slot.raw)).unwrap_or_default();
    let (event_type, data) = normalize::other_change(Platform::Whatsapp, field, change.value);
    items.push(slot.change_item(Platform::Whatsapp, page_id, event_type, data));
}

/// The slot of one message or status inside the change at `slot`.
fn nested<'e, 'a>(slot: Slot<'e, 'a>, array: NestedArray, index: usize, raw: &'a RawValue) -> Slot<'e, 'a> {
    Slot {
        raw,
        // A change holds at most a few thousand; saturating only keeps this total.
        nested: Some((array, u32::try_from(index).unwrap_or(u32::MAX))),
        ..slot
    }
}

/// What the messages and statuses of one change share: the business phone number and the
/// profiles of the users who wrote.
#[derive(Debug)]
struct Phone {
    /// `metadata.phone_number_id`, else the entry id.
    page_id: String,
    phone_number_id: Option<String>,
    /// `contacts[]` as (`wa_id`, `profile.name`).
    contacts: Vec<(Option<String>, Option<String>)>,
}

impl Phone {
    /// The profile name of the contact whose `wa_id` is `wa_id`, else of the first contact.
    fn profile_name(&self, wa_id: Option<&str>) -> Option<String> {
        self.contacts
            .iter()
            .find(|(id, _)| wa_id.is_some() && id.as_deref() == wa_id)
            .or_else(|| self.contacts.first())
            .and_then(|(_, name)| name.clone())
    }

    /// `{page_id}:{person}`.
    fn conversation(&self, person: Option<&str>) -> Option<String> {
        person.map(|person| [self.page_id.as_str(), ":", person].concat())
    }
}

fn contacts(raw: Option<&RawValue>) -> Vec<(Option<String>, Option<String>)> {
    wire::objects::<ContactWire<'_>>(raw)
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .map(|contact| {
            let name = wire::object::<ProfileWire<'_>>(contact.profile)
                .and_then(|profile| wire::string(profile.name).map(Cow::into_owned));
            (wire::id(contact.wa_id), name)
        })
        .collect()
}

/// One element of `value.messages[]`: sent by a WhatsApp user to the business phone number.
fn message<'a>(phone: &Phone, slot: Slot<'_, 'a>) -> Item<'a> {
    let message: MessageWire<'a> = wire::object(Some(slot.raw)).unwrap_or_default();
    let wa_id = wire::id(message.from);
    let mid = wire::id(message.id);
    let message_type = wire::string(message.kind);
    // The body's JSON string behind `data.text`: a text message's body, a media caption.
    let mut text_in_body = None;
    let (name, mut data) = match message_type.as_deref() {
        Some("text") => {
            text_in_body = wire::object::<TextWire<'a>>(message.text).and_then(|text| text.body);
            content(&mid, "text", wire::string_value(text_in_body), None, None, None)
        }
        Some(kind @ ("image" | "audio" | "video" | "document" | "sticker")) => {
            let media = match kind {
                "image" => message.image,
                "audio" => message.audio,
                "video" => message.video,
                "document" => message.document,
                _ => message.sticker,
            };
            text_in_body = wire::object::<MediaWire<'a>>(media).and_then(|media| media.caption);
            content(&mid, kind, wire::string_value(text_in_body), media, None, None)
        }
        Some("location") => content(&mid, "location", Value::Null, None, message.location, None),
        Some("contacts") => content(&mid, "contacts", Value::Null, None, None, message.contacts),
        Some("interactive") => interactive(&mid, message.interactive)
            .unwrap_or_else(|| unsupported(&mid, Some("interactive"), message.errors)),
        Some("button") => button(&mid, message.button),
        Some("reaction") => reaction(&mid, message.reaction),
        Some("order") => order(&mid, message.order),
        Some("system") => system(&mid, message.system),
        other => unsupported(&mid, other, message.errors),
    };

    // Every message type carries who wrote and what it answers or came from.
    if let Value::Object(map) = &mut data {
        map.insert(
            "profile_name".to_owned(),
            wire::opt_string(phone.profile_name(wa_id.as_deref())),
        );
        map.insert("wa_id".to_owned(), wire::opt_string(wa_id.clone()));
        map.insert("context".to_owned(), wire::as_sent(message.context));
        map.insert("referral".to_owned(), wire::as_sent(message.referral));
    }
    let event_type = ["whatsapp.", name].concat();
    // A reaction's own id does not identify what it says (it can be taken back): hashed.
    let dedup = match (name, mid) {
        ("reaction", _) | (_, None) => Dedup::Hash,
        (_, Some(mid)) => Dedup::Natural([event_type.as_str(), ":", &mid].concat()),
    };
    slot.into_item(Parts {
        event_type,
        platform: Platform::Whatsapp,
        page_id: phone.page_id.clone(),
        conversation_id: phone.conversation(wa_id.as_deref()),
        sender_id: wa_id,
        recipient_id: phone.phone_number_id.clone(),
        direction: Direction::Inbound,
        timestamp_ms: wire::integer(message.timestamp)
            .map(wire::millis)
            .or_else(|| slot.entry_time_ms()),
        data,
        text: text_in_body,
        dedup,
    })
}

/// `whatsapp.message`: text, media, a location or contact cards.
fn content(
    mid: &Option<String>,
    message_type: &str,
    text: Value,
    media: Option<&RawValue>,
    location: Option<&RawValue>,
    contacts: Option<&RawValue>,
) -> (&'static str, Value) {
    let data = wire::record([
        ("mid", wire::opt_string(mid.clone())),
        ("message_type", Value::String(message_type.to_owned())),
        ("text", text),
        ("media", wire::as_sent(media)),
        ("location", wire::as_sent(location)),
        ("contacts", wire::as_sent(contacts)),
    ]);
    ("message", data)
}

/// `whatsapp.button_reply` and `whatsapp.list_reply`: a tap on a reply button or a list row of an
/// interactive message. `None` for other interactive types (Flows' `nfm_reply`, …).
fn interactive(mid: &Option<String>, raw: Option<&RawValue>) -> Option<(&'static str, Value)> {
    let interactive: InteractiveWire<'_> = wire::object(raw)?;
    let kind = wire::string(interactive.kind);
    let (name, reply) = match kind.as_deref()? {
        "button_reply" => ("button_reply", interactive.button_reply),
        "list_reply" => ("list_reply", interactive.list_reply),
        _ => return None,
    };
    let reply: ReplyWire<'_> = wire::object(reply).unwrap_or_default();
    let title = wire::string_value(reply.title);
    let (mid, payload) = (wire::opt_string(mid.clone()), wire::string_value(reply.id));
    let data = if name == "button_reply" {
        wire::record([
            ("mid", mid),
            ("payload", payload),
            ("title", title.clone()),
            ("text", title),
        ])
    } else {
        wire::record([
            ("mid", mid),
            ("payload", payload),
            ("title", title.clone()),
            ("description", wire::string_value(reply.description)),
            ("text", title),
        ])
    };
    Some((name, data))
}

/// `whatsapp.button`: a tap on a quick-reply button of a template message.
fn button(mid: &Option<String>, raw: Option<&RawValue>) -> (&'static str, Value) {
    let button: ButtonWire<'_> = wire::object(raw).unwrap_or_default();
    let data = wire::record([
        ("mid", wire::opt_string(mid.clone())),
        ("payload", wire::string_value(button.payload)),
        ("text", wire::string_value(button.text)),
    ]);
    ("button", data)
}

/// `whatsapp.reaction`: an emoji on a message the business sent; removing it omits `emoji`.
fn reaction(mid: &Option<String>, raw: Option<&RawValue>) -> (&'static str, Value) {
    let reaction: ReactionWire<'_> = wire::object(raw).unwrap_or_default();
    let emoji = wire::string(reaction.emoji).filter(|emoji| !emoji.is_empty());
    let action = if emoji.is_some() { "react" } else { "unreact" };
    let data = wire::record([
        ("mid", wire::opt_string(mid.clone())),
        ("reacted_mid", wire::id_value(reaction.message_id)),
        ("emoji", wire::opt_string(emoji.map(Cow::into_owned))),
        ("action", Value::String(action.to_owned())),
    ]);
    ("reaction", data)
}

/// `whatsapp.order`: a cart sent from a catalog.
fn order(mid: &Option<String>, raw: Option<&RawValue>) -> (&'static str, Value) {
    let order: OrderWire<'_> = wire::object(raw).unwrap_or_default();
    let data = wire::record([
        ("mid", wire::opt_string(mid.clone())),
        ("catalog_id", wire::id_value(order.catalog_id)),
        ("text", wire::string_value(order.text)),
        ("product_items", wire::as_sent(order.product_items)),
    ]);
    ("order", data)
}

/// `whatsapp.system`: e.g. the user changed their number. Current Meta versions put the new id in
/// `system.wa_id`, older ones in `system.new_wa_id`.
fn system(mid: &Option<String>, raw: Option<&RawValue>) -> (&'static str, Value) {
    let system: SystemWire<'_> = wire::object(raw).unwrap_or_default();
    let data = wire::record([
        ("mid", wire::opt_string(mid.clone())),
        ("system_type", wire::string_value(system.kind)),
        ("text", wire::string_value(system.body)),
        (
            "new_wa_id",
            wire::opt_string(wire::id(system.new_wa_id).or_else(|| wire::id(system.wa_id))),
        ),
        ("customer", wire::id_value(system.customer)),
    ]);
    ("system", data)
}

/// `whatsapp.unsupported`: types `unsupported` and `unknown`, and any type not read above.
fn unsupported(mid: &Option<String>, message_type: Option<&str>, errors: Option<&RawValue>) -> (&'static str, Value) {
    let data = wire::record([
        ("mid", wire::opt_string(mid.clone())),
        ("message_type", wire::opt_string(message_type.map(str::to_owned))),
        ("errors", wire::as_sent(errors)),
    ]);
    ("unsupported", data)
}

/// One element of `value.statuses[]`: what became of a message the business sent.
fn status<'a>(phone: &Phone, slot: Slot<'_, 'a>) -> Item<'a> {
    let status: StatusWire<'_> = wire::object(Some(slot.raw)).unwrap_or_default();
    let mid = wire::id(status.id);
    let state = wire::string(status.status);
    let recipient_id = wire::id(status.recipient_id);
    let dedup = match (&mid, &state) {
        (Some(mid), Some(state)) => Dedup::Natural(["whatsapp.status:", mid, ":", state].concat()),
        _ => Dedup::Hash,
    };
    let data = wire::record([
        ("mid", wire::opt_string(mid)),
        ("status", wire::opt_string(state.map(Cow::into_owned))),
        ("recipient_id", wire::opt_string(recipient_id.clone())),
        ("conversation", wire::as_sent(status.conversation)),
        ("pricing", wire::as_sent(status.pricing)),
        ("errors", wire::as_sent(status.errors)),
        (
            "biz_opaque_callback_data",
            wire::string_value(status.biz_opaque_callback_data),
        ),
    ]);
    slot.into_item(Parts {
        event_type: "whatsapp.status".to_owned(),
        platform: Platform::Whatsapp,
        page_id: phone.page_id.clone(),
        conversation_id: phone.conversation(recipient_id.as_deref()),
        sender_id: phone.phone_number_id.clone(),
        recipient_id,
        direction: Direction::Outbound,
        timestamp_ms: wire::integer(status.timestamp)
            .map(wire::millis)
            .or_else(|| slot.entry_time_ms()),
        data,
        text: None,
        dedup,
    })
}
