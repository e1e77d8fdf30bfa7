//! Messenger items: the elements of `entry[].messaging[]` and `entry[].standby[]` under
//! `object: "page"`, and the reader Instagram's direct messages share (they are Messenger-shaped).
//!
//! Each item is `{sender, recipient, timestamp}` plus one event key (`message`, `postback`, …). The
//! item is read in one pass into a [`MessagingItem`]: the parties and the event key's object land in
//! small views whose values stay slices of the body, and only the fields of `data` are decoded. The
//! [`Product`] decides the type prefix, which event keys it knows, and the few keys that differ
//! (Messenger's `commands` and echo `metadata`, Instagram's `is_deleted` and `is_unsupported`).

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use pagewire_core::{Direction, Platform};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::normalize::{Dedup, Item, Parts, Slot};
use crate::wire::{self, wire_object, Key, Lenient};

/// The product a Messenger-shaped item belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Product {
    Messenger,
    Instagram,
}

impl Product {
    const fn platform(self) -> Platform {
        match self {
            Self::Messenger => Platform::Messenger,
            Self::Instagram => Platform::Instagram,
        }
    }

    /// The webhook fields whose dashboard test payloads put a messaging item in `changes[].value`.
    const fn messaging_fields(self) -> &'static [&'static str] {
        match self {
            Self::Messenger => &[
                "messages",
                "messaging_postbacks",
                "messaging_optins",
                "message_reactions",
                "message_reads",
                "message_deliveries",
                "messaging_referrals",
                "message_echoes",
                "message_edits",
                "messaging_handovers",
                "messaging_account_linking",
                "messaging_game_plays",
                "messaging_feedback",
                "response_feedback",
                "send_cart",
                "standby",
                "messaging_policy_enforcement",
            ],
            Self::Instagram => &[
                "messages",
                "messaging_postbacks",
                "message_reactions",
                "messaging_seen",
                "messaging_referral",
                "messaging_referrals",
                "message_edit",
                "message_edits",
                "messaging_optins",
                "messaging_handover",
                "messaging_handovers",
                "standby",
            ],
        }
    }
}

/// A messaging item, read in one pass: `sender` and `recipient` into their views, the first event
/// key with an object value into its view, everything else skipped.
#[derive(Debug, Default)]
pub(crate) struct MessagingItem<'a> {
    sender: Option<Party<'a>>,
    recipient: Option<Party<'a>>,
    timestamp: Option<&'a RawValue>,
    event: Option<Event<'a>>,
    /// The first key other than `sender`, `recipient` and `timestamp`: what an item we cannot read
    /// says it is.
    pub(crate) first_key: Option<Cow<'a, str>>,
}

/// The event key of an item with its object. Meta sends one per item; should an item carry
/// several, the first (in document order) whose value is an object decides its type.
#[derive(Debug)]
enum Event<'a> {
    Message(MessageWire<'a>),
    Postback(PostbackWire<'a>),
    Referral(ReferralWire<'a>),
    Reaction(ReactionWire<'a>),
    Read(WatermarkWire<'a>),
    Delivery(WatermarkWire<'a>),
    MessageEdit(MessageEditWire<'a>),
    Optin(OptinWire<'a>),
    AccountLinking(AccountLinkingWire<'a>),
    PassThreadControl(ThreadControlWire<'a>),
    TakeThreadControl(ThreadControlWire<'a>),
    RequestThreadControl(ThreadControlWire<'a>),
    /// `{"<app id>": ["primary_receiver"], …}`: no fixed keys, so kept as sent.
    AppRoles(&'a RawValue),
    PolicyEnforcement(PolicyEnforcementWire<'a>),
    GamePlay(GamePlayWire<'a>),
    MessagingFeedback(MessagingFeedbackWire<'a>),
    ResponseFeedback(ResponseFeedbackWire<'a>),
    /// `send_cart`: kept as sent (it is `data.order`) and read from there.
    Order(&'a RawValue),
}

impl<'a> Event<'a> {
    /// Reads the value of `key` from `map` as an event when `key` is an event key and the value
    /// an object; skips the value otherwise.
    fn next_value<'de: 'a, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Option<Self>, A::Error> {
        fn view<'de, T: Deserialize<'de>, A: MapAccess<'de>>(map: &mut A) -> Result<Option<T>, A::Error> {
            map.next_value::<Lenient<T>>().map(|view| view.0)
        }

        fn raw_object<'de, A: MapAccess<'de>>(map: &mut A) -> Result<Option<&'de RawValue>, A::Error> {
            Ok(map
                .next_value::<Option<&'de RawValue>>()?
                .filter(|value| value.get().starts_with('{')))
        }

        Ok(match key {
            "message" => view(map)?.map(Self::Message),
            "postback" => view(map)?.map(Self::Postback),
            "referral" => view(map)?.map(Self::Referral),
            "reaction" => view(map)?.map(Self::Reaction),
            "read" => view(map)?.map(Self::Read),
            "delivery" => view(map)?.map(Self::Delivery),
            "message_edit" => view(map)?.map(Self::MessageEdit),
            "optin" => view(map)?.map(Self::Optin),
            "account_linking" => view(map)?.map(Self::AccountLinking),
            "pass_thread_control" => view(map)?.map(Self::PassThreadControl),
            "take_thread_control" => view(map)?.map(Self::TakeThreadControl),
            "request_thread_control" => view(map)?.map(Self::RequestThreadControl),
            "app_roles" => raw_object(map)?.map(Self::AppRoles),
            // Older versions of Meta's reference spell it with a hyphen.
            "policy_enforcement" | "policy-enforcement" => view(map)?.map(Self::PolicyEnforcement),
            "game_play" => view(map)?.map(Self::GamePlay),
            "messaging_feedback" => view(map)?.map(Self::MessagingFeedback),
            "response_feedback" => view(map)?.map(Self::ResponseFeedback),
            "order" => raw_object(map)?.map(Self::Order),
            _ => {
                map.next_value::<IgnoredAny>()?;
                None
            }
        })
    }
}

impl<'a> MessagingItem<'a> {
    /// Reads an item; anything that is not an object reads as an empty item.
    pub(crate) fn parse(raw: &'a RawValue) -> Self {
        if !raw.get().starts_with('{') {
            return Self::default();
        }
        serde_json::from_str(raw.get()).unwrap_or_default()
    }

    /// `sender.id`, else `sender.user_ref` (chat-plugin users).
    pub(crate) fn sender_id(&self) -> Option<String> {
        self.sender.as_ref().and_then(Party::id)
    }

    /// `recipient.id`, else `recipient.user_ref`.
    pub(crate) fn recipient_id(&self) -> Option<String> {
        self.recipient.as_ref().and_then(Party::id)
    }

    pub(crate) fn timestamp_ms(&self) -> Option<i64> {
        wire::integer(self.timestamp).map(wire::millis)
    }

    /// Whether this is a messaging item at all: it names a party or carries an event key we read.
    fn is_messaging(&self) -> bool {
        self.sender.is_some() || self.recipient.is_some() || self.event.is_some()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for MessagingItem<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemVisitor<'a>(PhantomData<&'a ()>);

        impl<'de: 'a, 'a> Visitor<'de> for ItemVisitor<'a> {
            type Value = MessagingItem<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a Messenger item object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut item = MessagingItem::default();
                while let Some(Key(key)) = map.next_key::<Key<'a>>()? {
                    // A repeated key replaces the earlier one instead of failing the item.
                    match key.as_ref() {
                        "sender" => item.sender = map.next_value::<Lenient<Party<'a>>>()?.0,
                        "recipient" => item.recipient = map.next_value::<Lenient<Party<'a>>>()?.0,
                        "timestamp" => item.timestamp = map.next_value()?,
                        other => {
                            if item.event.is_none() {
                                item.event = Event::next_value(other, &mut map)?;
                            } else {
                                map.next_value::<IgnoredAny>()?;
                            }
                            if item.first_key.is_none() {
                                item.first_key = Some(key);
                            }
                        }
                    }
                }
                Ok(item)
            }
        }

        deserializer.deserialize_map(ItemVisitor(PhantomData))
    }
}

wire_object!(Party { id, user_ref });

wire_object!(MessageWire {
    mid,
    text,
    attachments,
    quick_reply,
    reply_to,
    referral,
    commands,
    is_echo,
    app_id,
    metadata,
    is_deleted,
    is_unsupported,
});

wire_object!(AttachmentWire {
    kind as "type",
    title,
    url,
    payload,
});

wire_object!(QuickReplyWire { payload });

wire_object!(ReplyToWire { mid, story });

wire_object!(PostbackWire {
    mid,
    title,
    payload,
    referral,
});

wire_object!(ReferralWire {
    reference as "ref",
    source,
    kind as "type",
    ad_id,
    ads_context_data,
    referer_uri,
});

wire_object!(ReactionWire {
    mid,
    action,
    reaction,
    emoji,
});

wire_object!(WatermarkWire { mid, mids, watermark });

wire_object!(MessageEditWire { mid, text, num_edit });

wire_object!(OptinWire {
    kind as "type",
    payload,
    reference as "ref",
    user_ref,
    title,
    notification_messages_token,
    notification_messages_status,
    notification_messages_frequency,
    notification_messages_timezone,
    token_expiry_timestamp,
    user_token_status,
});

wire_object!(AccountLinkingWire {
    status,
    authorization_code,
});

wire_object!(ThreadControlWire {
    new_owner_app_id,
    previous_owner_app_id,
    requested_owner_app_id,
    metadata,
});

wire_object!(PolicyEnforcementWire { action, reason });

wire_object!(GamePlayWire {
    game_id,
    player_id,
    context_type,
    context_id,
    score,
    payload,
});

wire_object!(MessagingFeedbackWire { feedback_screens });

wire_object!(ResponseFeedbackWire { mid, feedback });

wire_object!(OrderWire {
    mid,
    text,
    products,
    note,
    currency,
});

wire_object!(ProductWire { currency });

impl Party<'_> {
    fn id(&self) -> Option<String> {
        wire::id(self.id).or_else(|| wire::id(self.user_ref))
    }
}

/// Normalizes one `messaging[]` or `standby[]` item of `product`.
pub(crate) fn normalize<'a>(product: Product, slot: Slot<'_, 'a>) -> Item<'a> {
    normalize_item(product, slot, MessagingItem::parse(slot.raw))
}

/// A dashboard test payload: a `changes[]` element whose `field` is a messaging webhook field of
/// `product` and whose `value` is a messaging item is normalized as that item (`raw` stays the
/// change; a `standby` test payload counts as a standby item). `None` for any other change.
pub(crate) fn normalize_test_payload<'a>(
    product: Product,
    mut slot: Slot<'_, 'a>,
    field: &str,
    value: Option<&'a RawValue>,
) -> Option<Item<'a>> {
    if !product.messaging_fields().contains(&field) {
        return None;
    }
    let item = MessagingItem::parse(value?);
    if !item.is_messaging() {
        return None;
    }
    slot.standby |= field == "standby";
    Some(normalize_item(product, slot, item))
}

fn normalize_item<'a>(product: Product, slot: Slot<'_, 'a>, item: MessagingItem<'a>) -> Item<'a> {
    let sender_id = item.sender_id();
    let recipient_id = item.recipient_id();
    let timestamp_ms = item.timestamp_ms().or_else(|| slot.entry_time_ms());
    let first_key = item.first_key.as_deref();
    // Every kind with a `data.text` decodes it from `message.text` (or the edit's `text`).
    let text = match &item.event {
        Some(Event::Message(message)) => message.text,
        Some(Event::MessageEdit(edit)) => edit.text,
        _ => None,
    };
    let kind = match item.event {
        Some(event) => Kind::from_event(product, event, first_key),
        None => Kind::unknown(first_key),
    };

    // An echo is sent by the Page, so its counterpart is the recipient.
    let (page_side, person) = match kind.direction {
        Direction::Outbound => (&sender_id, &recipient_id),
        Direction::Inbound => (&recipient_id, &sender_id),
    };
    let page_id = slot.page_id_or(page_side.as_deref());
    let conversation_id = person
        .as_deref()
        .filter(|_| !page_id.is_empty())
        .map(|person| [page_id.as_str(), ":", person].concat());
    let platform = product.platform();
    let event_type = [platform.as_str(), ".", kind.name].concat();
    let dedup = kind.dedup.resolve(&event_type, sender_id.as_deref());

    slot.into_item(Parts {
        event_type,
        platform,
        page_id,
        conversation_id,
        sender_id,
        recipient_id,
        direction: kind.direction,
        timestamp_ms,
        data: kind.data,
        text,
        dedup,
    })
}

/// What an item's event key makes of it.
#[derive(Debug)]
struct Kind {
    /// The type without its platform prefix, e.g. `postback`.
    name: &'static str,
    direction: Direction,
    data: Value,
    dedup: NaturalKey,
}

/// The natural identity an item type has, if any.
#[derive(Debug)]
enum NaturalKey {
    /// `{type}:{id}`: the id of the item itself (a mid, for edits `{mid}:{num_edit}`).
    Own(Option<String>),
    /// `{type}:{sender}:{mark}`: reads and deliveries have no id of their own; the watermark (or
    /// for Instagram reads without one, the mid read) marks them.
    Mark(Option<String>),
    None,
}

impl NaturalKey {
    fn resolve(self, event_type: &str, sender: Option<&str>) -> Dedup {
        match (self, sender) {
            (Self::Own(Some(id)), _) => Dedup::Natural([event_type, ":", &id].concat()),
            (Self::Mark(Some(mark)), Some(sender)) => Dedup::Natural([event_type, ":", sender, ":", &mark].concat()),
            _ => Dedup::Hash,
        }
    }
}

impl Kind {
    fn inbound(name: &'static str, data: Value, dedup: NaturalKey) -> Self {
        Self {
            name,
            direction: Direction::Inbound,
            data,
            dedup,
        }
    }

    fn from_event(product: Product, event: Event<'_>, first_key: Option<&str>) -> Self {
        match (product, event) {
            (_, Event::Message(wire)) => message(product, wire),
            (_, Event::Postback(wire)) => postback(wire),
            (_, Event::Referral(wire)) => referral(product, wire),
            (_, Event::Reaction(wire)) => reaction(wire),
            (_, Event::Read(wire)) => read(product, wire),
            (_, Event::MessageEdit(wire)) => message_edit(wire),
            (Product::Messenger, Event::Delivery(wire)) => delivery(wire),
            (Product::Messenger, Event::Optin(wire)) => optin(wire),
            (Product::Messenger, Event::AccountLinking(wire)) => account_linking(wire),
            (Product::Messenger, Event::PassThreadControl(wire)) => thread_control("pass_thread_control", wire),
            (Product::Messenger, Event::TakeThreadControl(wire)) => thread_control("take_thread_control", wire),
            (Product::Messenger, Event::RequestThreadControl(wire)) => request_thread_control(wire),
            (Product::Messenger, Event::AppRoles(roles)) => app_roles(roles),
            (Product::Messenger, Event::PolicyEnforcement(wire)) => policy_enforcement(wire),
            (Product::Messenger, Event::GamePlay(wire)) => game_play(wire),
            (Product::Messenger, Event::MessagingFeedback(wire)) => messaging_feedback(wire),
            (Product::Messenger, Event::ResponseFeedback(wire)) => response_feedback(wire),
            (Product::Messenger, Event::Order(order)) => send_cart(order),
            // The contract gives Instagram no types for the rest (yet): kept whole as unknown.
            (Product::Instagram, _) => Self::unknown(first_key),
        }
    }

    /// `<platform>.unknown`: an event key we do not read (yet), or one whose value is not an object.
    fn unknown(first_key: Option<&str>) -> Self {
        Self::inbound(
            "unknown",
            wire::record([("kind", wire::opt_string(first_key.map(str::to_owned)))]),
            NaturalKey::None,
        )
    }
}

/// `message`, `quick_reply`, `message_echo`, or on Instagram `message_deleted`.
fn message(product: Product, message: MessageWire<'_>) -> Kind {
    let mid = wire::id(message.mid);

    if product == Product::Instagram && wire::is_true(message.is_deleted) {
        let dedup = NaturalKey::Own(mid.clone());
        return Kind::inbound("message_deleted", wire::record([("mid", wire::opt_string(mid))]), dedup);
    }

    let text = wire::string_value(message.text);
    if wire::is_true(message.is_echo) {
        let dedup = NaturalKey::Own(mid.clone());
        let (mid, attachments, app_id) = (
            wire::opt_string(mid),
            attachments(message.attachments),
            wire::id_value(message.app_id),
        );
        let data = match product {
            Product::Messenger => wire::record([
                ("mid", mid),
                ("text", text),
                ("attachments", attachments),
                ("app_id", app_id),
                ("metadata", wire::string_value(message.metadata)),
            ]),
            Product::Instagram => wire::record([
                ("mid", mid),
                ("text", text),
                ("attachments", attachments),
                ("reply_to", reply_to(message.reply_to)),
                ("app_id", app_id),
            ]),
        };
        return Kind {
            name: "message_echo",
            direction: Direction::Outbound,
            data,
            dedup,
        };
    }

    // Quick replies arrive as messages, not postbacks; their routing string goes to `payload`.
    if let Some(quick_reply) = wire::object::<QuickReplyWire<'_>>(message.quick_reply) {
        let dedup = NaturalKey::Own(mid.clone());
        let data = wire::record([
            ("mid", wire::opt_string(mid)),
            ("text", text),
            ("payload", wire::string_value(quick_reply.payload)),
        ]);
        return Kind::inbound("quick_reply", data, dedup);
    }

    let dedup = NaturalKey::Own(mid.clone());
    let (mid, attachments, reply_to) = (
        wire::opt_string(mid),
        attachments(message.attachments),
        reply_to(message.reply_to),
    );
    // Click-to-Messenger (and Instagram) ads: `source: ADS`, `ad_id`, `ads_context_data`, as sent.
    let referral = wire::as_sent(message.referral);
    let data = match product {
        Product::Messenger => wire::record([
            ("mid", mid),
            ("text", text),
            ("attachments", attachments),
            ("reply_to", reply_to),
            ("referral", referral),
            ("commands", wire::as_sent(message.commands)),
        ]),
        Product::Instagram => wire::record([
            ("mid", mid),
            ("text", text),
            ("attachments", attachments),
            ("reply_to", reply_to),
            ("referral", referral),
            ("is_unsupported", Value::Bool(wire::is_true(message.is_unsupported))),
        ]),
    };
    Kind::inbound("message", data, dedup)
}

/// `{mid}`, or for a reply to an Instagram story `{story: {url, id}}` (as sent); null without one.
fn reply_to(raw: Option<&RawValue>) -> Value {
    match wire::object::<ReplyToWire<'_>>(raw) {
        Some(ReplyToWire { story: Some(story), .. }) => wire::record([("story", wire::as_sent(Some(story)))]),
        Some(reply_to) => wire::record([("mid", wire::id_value(reply_to.mid))]),
        None => Value::Null,
    }
}

/// `[{type, url, title, payload}]`, one per attachment as sent (an empty array when there are none).
fn attachments(raw: Option<&RawValue>) -> Value {
    let list = wire::objects::<AttachmentWire<'_>>(raw).unwrap_or_default();
    Value::Array(
        list.into_iter()
            .map(|attachment| self::attachment(attachment.unwrap_or_default()))
            .collect(),
    )
}

/// `{type, url, title, payload}`. Media carry `payload.url`, fallback (shared link) and location
/// their own `url`; fallbacks and templates carry their own `title`, Instagram shares and reels
/// `payload.title`: each is taken from wherever it is.
fn attachment(attachment: AttachmentWire<'_>) -> Value {
    let payload = wire::as_sent(attachment.payload);
    let from_payload = |key: &str| payload.get(key).and_then(Value::as_str).map(str::to_owned);
    let url = from_payload("url").or_else(|| wire::string(attachment.url).map(Cow::into_owned));
    let title = wire::string(attachment.title)
        .map(Cow::into_owned)
        .or_else(|| from_payload("title"));
    wire::record([
        ("type", wire::string_value(attachment.kind)),
        ("url", wire::opt_string(url)),
        ("title", wire::opt_string(title)),
        ("payload", payload),
    ])
}

fn postback(postback: PostbackWire<'_>) -> Kind {
    let mid = wire::id(postback.mid);
    let dedup = NaturalKey::Own(mid.clone());
    let data = wire::record([
        ("mid", wire::opt_string(mid)),
        ("title", wire::string_value(postback.title)),
        // Absent in the standby copy another app receives.
        ("payload", wire::string_value(postback.payload)),
        ("referral", wire::as_sent(postback.referral)),
    ]);
    Kind::inbound("postback", data, dedup)
}

fn referral(product: Product, referral: ReferralWire<'_>) -> Kind {
    let reference = wire::string_value(referral.reference);
    // `ref` is the referral's routing string, so it is also `payload`.
    let (payload, source, kind) = (
        reference.clone(),
        wire::string_value(referral.source),
        wire::string_value(referral.kind),
    );
    let (ad_id, ads_context_data) = (wire::id_value(referral.ad_id), wire::as_sent(referral.ads_context_data));
    let data = match product {
        Product::Messenger => wire::record([
            ("payload", payload),
            ("ref", reference),
            ("source", source),
            ("type", kind),
            ("ad_id", ad_id),
            ("ads_context_data", ads_context_data),
            ("referer_uri", wire::string_value(referral.referer_uri)),
        ]),
        Product::Instagram => wire::record([
            ("payload", payload),
            ("ref", reference),
            ("source", source),
            ("type", kind),
            ("ad_id", ad_id),
            ("ads_context_data", ads_context_data),
        ]),
    };
    Kind::inbound("referral", data, NaturalKey::None)
}

fn reaction(reaction: ReactionWire<'_>) -> Kind {
    let data = wire::record([
        ("mid", wire::id_value(reaction.mid)),
        ("action", wire::string_value(reaction.action)),
        ("reaction", wire::string_value(reaction.reaction)),
        ("emoji", wire::string_value(reaction.emoji)),
    ]);
    Kind::inbound("reaction", data, NaturalKey::None)
}

/// `read` (Messenger `message_reads`, Instagram `messaging_seen`, which names the `mid` read).
fn read(product: Product, read: WatermarkWire<'_>) -> Kind {
    let watermark = wire::integer(read.watermark);
    match product {
        Product::Messenger => Kind::inbound(
            "read",
            wire::record([("watermark", watermark.map_or(Value::Null, Value::from))]),
            NaturalKey::Mark(watermark.map(|watermark| watermark.to_string())),
        ),
        Product::Instagram => {
            let mid = wire::id(read.mid);
            let mark = watermark.map(|watermark| watermark.to_string()).or_else(|| mid.clone());
            let data = wire::record([
                ("mid", wire::opt_string(mid)),
                ("watermark", watermark.map_or(Value::Null, Value::from)),
            ]);
            Kind::inbound("read", data, NaturalKey::Mark(mark))
        }
    }
}

fn delivery(delivery: WatermarkWire<'_>) -> Kind {
    let mids = wire::array(delivery.mids).map_or(Value::Null, |mids| {
        mids.into_iter()
            .filter_map(|mid| wire::id(Some(mid)))
            .map(Value::String)
            .collect()
    });
    let watermark = wire::integer(delivery.watermark);
    let data = wire::record([
        ("mids", mids),
        ("watermark", watermark.map_or(Value::Null, Value::from)),
    ]);
    Kind::inbound(
        "delivery",
        data,
        NaturalKey::Mark(watermark.map(|watermark| watermark.to_string())),
    )
}

fn message_edit(edit: MessageEditWire<'_>) -> Kind {
    let mid = wire::id(edit.mid);
    let num_edit = wire::integer(edit.num_edit);
    // Every edit of one message shares its mid; `num_edit` counts them.
    let dedup = NaturalKey::Own(
        mid.as_deref()
            .zip(num_edit)
            .map(|(mid, num_edit)| format!("{mid}:{num_edit}")),
    );
    let data = wire::record([
        ("mid", wire::opt_string(mid)),
        ("text", wire::string_value(edit.text)),
        ("num_edit", num_edit.map_or(Value::Null, Value::from)),
    ]);
    Kind::inbound("message_edit", data, dedup)
}

fn optin(optin: OptinWire<'_>) -> Kind {
    let reference = wire::string(optin.reference).map(Cow::into_owned);
    // Notification-message opt-ins carry a `payload`; plugin opt-ins only a `ref`.
    let payload = wire::string(optin.payload)
        .map(Cow::into_owned)
        .or_else(|| reference.clone());
    let data = wire::record([
        ("type", wire::string_value(optin.kind)),
        ("payload", wire::opt_string(payload)),
        ("ref", wire::opt_string(reference)),
        ("user_ref", wire::id_value(optin.user_ref)),
        ("title", wire::string_value(optin.title)),
        (
            "notification_messages_token",
            wire::string_value(optin.notification_messages_token),
        ),
        (
            "notification_messages_status",
            wire::string_value(optin.notification_messages_status),
        ),
        (
            "notification_messages_frequency",
            wire::string_value(optin.notification_messages_frequency),
        ),
        (
            "notification_messages_timezone",
            wire::string_value(optin.notification_messages_timezone),
        ),
        (
            "token_expiry_timestamp",
            wire::integer_value(optin.token_expiry_timestamp),
        ),
        ("user_token_status", wire::string_value(optin.user_token_status)),
    ]);
    Kind::inbound("optin", data, NaturalKey::None)
}

fn account_linking(linking: AccountLinkingWire<'_>) -> Kind {
    let data = wire::record([
        ("status", wire::string_value(linking.status)),
        ("authorization_code", wire::string_value(linking.authorization_code)),
    ]);
    Kind::inbound("account_linking", data, NaturalKey::None)
}

/// `pass_thread_control` and `take_thread_control` (handover protocol).
fn thread_control(name: &'static str, control: ThreadControlWire<'_>) -> Kind {
    let data = wire::record([
        ("new_owner_app_id", wire::id_value(control.new_owner_app_id)),
        ("previous_owner_app_id", wire::id_value(control.previous_owner_app_id)),
        ("metadata", wire::string_value(control.metadata)),
    ]);
    Kind::inbound(name, data, NaturalKey::None)
}

fn request_thread_control(control: ThreadControlWire<'_>) -> Kind {
    let data = wire::record([
        ("requested_owner_app_id", wire::id_value(control.requested_owner_app_id)),
        ("metadata", wire::string_value(control.metadata)),
    ]);
    Kind::inbound("request_thread_control", data, NaturalKey::None)
}

fn app_roles(roles: &RawValue) -> Kind {
    let data = wire::record([("roles", wire::as_sent(Some(roles)))]);
    Kind::inbound("app_roles", data, NaturalKey::None)
}

fn policy_enforcement(policy: PolicyEnforcementWire<'_>) -> Kind {
    let data = wire::record([
        ("action", wire::string_value(policy.action)),
        ("reason", wire::string_value(policy.reason)),
    ]);
    Kind::inbound("policy_enforcement", data, NaturalKey::None)
}

/// `messaging_game_plays`: a round of an Instant Game.
fn game_play(game: GamePlayWire<'_>) -> Kind {
    let data = wire::record([
        ("game_id", wire::id_value(game.game_id)),
        ("player_id", wire::id_value(game.player_id)),
        ("context_type", wire::string_value(game.context_type)),
        ("context_id", wire::id_value(game.context_id)),
        // Classic games send a score, rich games a payload (`FBInstant.setSessionData`).
        ("score", wire::as_sent(game.score)),
        ("payload", wire::routing_string(game.payload)),
    ]);
    Kind::inbound("game_play", data, NaturalKey::None)
}

/// `messaging_feedback`: the answers to a customer feedback template.
fn messaging_feedback(feedback: MessagingFeedbackWire<'_>) -> Kind {
    let data = wire::record([("feedback_screens", wire::as_sent(feedback.feedback_screens))]);
    Kind::inbound("messaging_feedback", data, NaturalKey::None)
}

/// `response_feedback`: a thumbs up or down on a message the Page sent (`mid` is that message).
fn response_feedback(feedback: ResponseFeedbackWire<'_>) -> Kind {
    let data = wire::record([
        ("mid", wire::id_value(feedback.mid)),
        ("feedback", wire::string_value(feedback.feedback)),
    ]);
    Kind::inbound("response_feedback", data, NaturalKey::None)
}

/// `send_cart`: `order: {products: [{id, retailer_id, name, unit_price, currency, quantity}], note}`.
/// The order is kept whole; `currency` is the order's own, else the one all products share.
fn send_cart(raw: &RawValue) -> Kind {
    let order: OrderWire<'_> = wire::object(Some(raw)).unwrap_or_default();
    let mid = wire::id(order.mid);
    let currency = wire::string(order.currency)
        .map(Cow::into_owned)
        .or_else(|| shared_currency(order.products));
    let dedup = NaturalKey::Own(mid.clone());
    let data = wire::record([
        ("mid", wire::opt_string(mid)),
        ("text", wire::string_value(order.text)),
        ("products", wire::as_sent(order.products)),
        ("note", wire::string_value(order.note)),
        ("currency", wire::opt_string(currency)),
        ("order", wire::as_sent(Some(raw))),
    ]);
    Kind::inbound("order", data, dedup)
}

/// The `currency` of every product, when they all name the same one.
fn shared_currency(products: Option<&RawValue>) -> Option<String> {
    let products = wire::objects::<ProductWire<'_>>(products)?;
    let mut currencies = products
        .into_iter()
        .map(|product| product.and_then(|product| wire::string(product.currency)));
    let first = currencies.next()??;
    currencies
        .all(|currency| currency.as_deref() == Some(&*first))
        .then(|| first.into_owned())
}
