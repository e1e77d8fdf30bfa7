//! Messenger items: the elements of `entry[].messaging[]` and `entry[].standby[]` under
//! `object: "page"`.
//!
//! Each item is `{sender, recipient, timestamp}` plus one event key (`message`, `postback`, …). The
//! item is read in one pass into a [`MessagingItem`]: the parties and the event key's object land in
//! small views whose values stay slices of the body, and only the fields of `data` are decoded.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use pagewire_core::{Direction, Platform};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::normalize::{Dedup, Item, Parts, Slot};
use crate::wire::{self, wire_object, Key, Lenient};

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
}

impl<'a> Event<'a> {
    /// Reads the value of `key` from `map` as an event when `key` is an event key and the value
    /// an object; skips the value otherwise.
    fn next_value<'de: 'a, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Option<Self>, A::Error> {
        fn view<'de, T: Deserialize<'de>, A: MapAccess<'de>>(map: &mut A) -> Result<Option<T>, A::Error> {
            map.next_value::<Lenient<T>>().map(|view| view.0)
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
            "app_roles" => map
                .next_value::<Option<&'a RawValue>>()?
                .filter(|roles| roles.get().starts_with('{'))
                .map(Self::AppRoles),
            // Older versions of Meta's reference spell it with a hyphen.
            "policy_enforcement" | "policy-enforcement" => view(map)?.map(Self::PolicyEnforcement),
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
});

wire_object!(AttachmentWire {
    kind as "type",
    title,
    url,
    payload,
});

wire_object!(QuickReplyWire { payload });

wire_object!(ReplyToWire { mid });

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

wire_object!(WatermarkWire { mids, watermark });

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

impl Party<'_> {
    fn id(&self) -> Option<String> {
        wire::id(self.id).or_else(|| wire::id(self.user_ref))
    }
}

/// Normalizes one messaging or standby item.
pub(crate) fn normalize<'a>(slot: Slot<'_, 'a>) -> Item<'a> {
    let item = MessagingItem::parse(slot.raw);
    let sender_id = item.sender_id();
    let recipient_id = item.recipient_id();
    let timestamp_ms = item.timestamp_ms().or_else(|| slot.entry_time_ms());
    let first_key = item.first_key.as_deref();
    let kind = item.event.map_or_else(|| Kind::unknown(first_key), Kind::from_event);

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
    let dedup = kind.dedup.resolve(sender_id.as_deref());

    slot.into_item(Parts {
        event_type: kind.event_type.to_owned(),
        platform: Platform::Messenger,
        page_id,
        conversation_id,
        sender_id,
        recipient_id,
        direction: kind.direction,
        timestamp_ms,
        data: kind.data,
        dedup,
    })
}

/// What an item's event key makes of it.
#[derive(Debug)]
struct Kind {
    event_type: &'static str,
    direction: Direction,
    data: Value,
    dedup: NaturalKey,
}

/// The natural identity an item type has, if any.
#[derive(Debug)]
enum NaturalKey {
    /// `{type}:{mid}`, built by [`NaturalKey::mid`].
    Mid(Option<String>),
    /// `{prefix}:{sender}:{watermark}`: reads and deliveries have no mid of their own.
    Watermark(&'static str, Option<i64>),
    None,
}

impl NaturalKey {
    fn mid(event_type: &str, mid: Option<&str>) -> Self {
        Self::Mid(mid.map(|mid| [event_type, ":", mid].concat()))
    }

    fn resolve(self, sender: Option<&str>) -> Dedup {
        match (self, sender) {
            (Self::Mid(Some(key)), _) => Dedup::Natural(key),
            (Self::Watermark(prefix, Some(watermark)), Some(sender)) => {
                let mut key = String::with_capacity(prefix.len() + sender.len() + 22);
                key.push_str(prefix);
                key.push(':');
                key.push_str(sender);
                key.push(':');
                key.push_str(&watermark.to_string());
                Dedup::Natural(key)
            }
            _ => Dedup::Hash,
        }
    }
}

impl Kind {
    fn inbound(event_type: &'static str, data: Value, dedup: NaturalKey) -> Self {
        Self {
            event_type,
            direction: Direction::Inbound,
            data,
            dedup,
        }
    }

    fn from_event(event: Event<'_>) -> Self {
        match event {
            Event::Message(wire) => message(wire),
            Event::Postback(wire) => postback(wire),
            Event::Referral(wire) => referral(wire),
            Event::Reaction(wire) => reaction(wire),
            Event::Read(wire) => read(wire),
            Event::Delivery(wire) => delivery(wire),
            Event::MessageEdit(wire) => message_edit(wire),
            Event::Optin(wire) => optin(wire),
            Event::AccountLinking(wire) => account_linking(wire),
            Event::PassThreadControl(wire) => thread_control("messenger.pass_thread_control", wire),
            Event::TakeThreadControl(wire) => thread_control("messenger.take_thread_control", wire),
            Event::RequestThreadControl(wire) => request_thread_control(wire),
            Event::AppRoles(roles) => app_roles(roles),
            Event::PolicyEnforcement(wire) => policy_enforcement(wire),
        }
    }

    /// `messenger.unknown`: an event key we do not read (yet), or one whose value is not an object.
    fn unknown(first_key: Option<&str>) -> Self {
        Self::inbound(
            "messenger.unknown",
            wire::record([("kind", wire::opt_string(first_key.map(str::to_owned)))]),
            NaturalKey::None,
        )
    }
}

/// `messenger.message`, `messenger.quick_reply` or `messenger.message_echo`.
fn message(message: MessageWire<'_>) -> Kind {
    let mid = wire::id(message.mid);
    let text = wire::string_value(message.text);

    if wire::is_true(message.is_echo) {
        let event_type = "messenger.message_echo";
        let dedup = NaturalKey::mid(event_type, mid.as_deref());
        let data = wire::record([
            ("mid", wire::opt_string(mid)),
            ("text", text),
            ("attachments", attachments(message.attachments)),
            ("app_id", wire::id_value(message.app_id)),
            ("metadata", wire::string_value(message.metadata)),
        ]);
        return Kind {
            event_type,
            direction: Direction::Outbound,
            data,
            dedup,
        };
    }

    // Quick replies arrive as messages, not postbacks; their routing string goes to `payload`.
    if let Some(quick_reply) = wire::object::<QuickReplyWire<'_>>(message.quick_reply) {
        let event_type = "messenger.quick_reply";
        let dedup = NaturalKey::mid(event_type, mid.as_deref());
        let data = wire::record([
            ("mid", wire::opt_string(mid)),
            ("text", text),
            ("payload", wire::string_value(quick_reply.payload)),
        ]);
        return Kind::inbound(event_type, data, dedup);
    }

    let reply_to = wire::object::<ReplyToWire<'_>>(message.reply_to).map_or(Value::Null, |reply_to| {
        wire::record([("mid", wire::id_value(reply_to.mid))])
    });
    let event_type = "messenger.message";
    let dedup = NaturalKey::mid(event_type, mid.as_deref());
    let data = wire::record([
        ("mid", wire::opt_string(mid)),
        ("text", text),
        ("attachments", attachments(message.attachments)),
        ("reply_to", reply_to),
        // Click-to-Messenger ads: `source: ADS`, `ad_id`, `ads_context_data`, kept as sent.
        ("referral", wire::as_sent(message.referral)),
        ("commands", wire::as_sent(message.commands)),
    ]);
    Kind::inbound(event_type, data, dedup)
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

fn attachment(attachment: AttachmentWire<'_>) -> Value {
    let payload = wire::as_sent(attachment.payload);
    // Media carry `payload.url`; fallback (shared link) and location carry their own `url`.
    let url = payload
        .get("url")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| wire::string(attachment.url).map(Cow::into_owned));
    wire::record([
        ("type", wire::string_value(attachment.kind)),
        ("url", wire::opt_string(url)),
        ("title", wire::string_value(attachment.title)),
        ("payload", payload),
    ])
}

fn postback(postback: PostbackWire<'_>) -> Kind {
    let event_type = "messenger.postback";
    let mid = wire::id(postback.mid);
    let dedup = NaturalKey::mid(event_type, mid.as_deref());
    let data = wire::record([
        ("mid", wire::opt_string(mid)),
        ("title", wire::string_value(postback.title)),
        // Absent in the standby copy another app receives.
        ("payload", wire::string_value(postback.payload)),
        ("referral", wire::as_sent(postback.referral)),
    ]);
    Kind::inbound(event_type, data, dedup)
}

fn referral(referral: ReferralWire<'_>) -> Kind {
    let reference = wire::string_value(referral.reference);
    let data = wire::record([
        // `ref` is the referral's routing string, so it is also `payload`.
        ("payload", reference.clone()),
        ("ref", reference),
        ("source", wire::string_value(referral.source)),
        ("type", wire::string_value(referral.kind)),
        ("ad_id", wire::id_value(referral.ad_id)),
        ("ads_context_data", wire::as_sent(referral.ads_context_data)),
        ("referer_uri", wire::string_value(referral.referer_uri)),
    ]);
    Kind::inbound("messenger.referral", data, NaturalKey::None)
}

fn reaction(reaction: ReactionWire<'_>) -> Kind {
    let data = wire::record([
        ("mid", wire::id_value(reaction.mid)),
        ("action", wire::string_value(reaction.action)),
        ("reaction", wire::string_value(reaction.reaction)),
        ("emoji", wire::string_value(reaction.emoji)),
    ]);
    Kind::inbound("messenger.reaction", data, NaturalKey::None)
}

fn read(read: WatermarkWire<'_>) -> Kind {
    let data = wire::record([("watermark", wire::integer_value(read.watermark))]);
    Kind::inbound(
        "messenger.read",
        data,
        NaturalKey::Watermark("read", wire::integer(read.watermark)),
    )
}

fn delivery(delivery: WatermarkWire<'_>) -> Kind {
    let mids = wire::array(delivery.mids).map_or(Value::Null, |mids| {
        mids.into_iter()
            .filter_map(|mid| wire::id(Some(mid)))
            .map(Value::String)
            .collect()
    });
    let data = wire::record([("mids", mids), ("watermark", wire::integer_value(delivery.watermark))]);
    Kind::inbound(
        "messenger.delivery",
        data,
        NaturalKey::Watermark("delivery", wire::integer(delivery.watermark)),
    )
}

fn message_edit(edit: MessageEditWire<'_>) -> Kind {
    let data = wire::record([
        ("mid", wire::id_value(edit.mid)),
        ("text", wire::string_value(edit.text)),
        ("num_edit", wire::integer_value(edit.num_edit)),
    ]);
    // Every edit of one message shares its mid, so the raw bytes tell edits apart.
    Kind::inbound("messenger.message_edit", data, NaturalKey::None)
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
    Kind::inbound("messenger.optin", data, NaturalKey::None)
}

fn account_linking(linking: AccountLinkingWire<'_>) -> Kind {
    let data = wire::record([
        ("status", wire::string_value(linking.status)),
        ("authorization_code", wire::string_value(linking.authorization_code)),
    ]);
    Kind::inbound("messenger.account_linking", data, NaturalKey::None)
}

/// `messenger.pass_thread_control` and `messenger.take_thread_control` (handover protocol).
fn thread_control(event_type: &'static str, control: ThreadControlWire<'_>) -> Kind {
    let data = wire::record([
        ("new_owner_app_id", wire::id_value(control.new_owner_app_id)),
        ("previous_owner_app_id", wire::id_value(control.previous_owner_app_id)),
        ("metadata", wire::string_value(control.metadata)),
    ]);
    Kind::inbound(event_type, data, NaturalKey::None)
}

fn request_thread_control(control: ThreadControlWire<'_>) -> Kind {
    let data = wire::record([
        ("requested_owner_app_id", wire::id_value(control.requested_owner_app_id)),
        ("metadata", wire::string_value(control.metadata)),
    ]);
    Kind::inbound("messenger.request_thread_control", data, NaturalKey::None)
}

fn app_roles(roles: &RawValue) -> Kind {
    let data = wire::record([("roles", wire::as_sent(Some(roles)))]);
    Kind::inbound("messenger.app_roles", data, NaturalKey::None)
}

fn policy_enforcement(policy: PolicyEnforcementWire<'_>) -> Kind {
    let data = wire::record([
        ("action", wire::string_value(policy.action)),
        ("reason", wire::string_value(policy.reason)),
    ]);
    Kind::inbound("messenger.policy_enforcement", data, NaturalKey::None)
}
