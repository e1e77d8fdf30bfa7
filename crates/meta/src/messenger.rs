//! Messenger items: the elements of `entry[].messaging[]` and `entry[].standby[]` under
//! `object: "page"`.
//!
//! Each item is `{sender, recipient, timestamp}` plus one event key (`message`, `postback`, …). The
//! item is read once into a [`MessagingItem`] that keeps every value as a slice of the body; only the
//! event key's object is then read into its small view, and only the fields of `data` are decoded.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

use pagewire_core::{Direction, Platform};
use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::normalize::{Dedup, Item, Parts, Slot};
use crate::wire::{self, wire_object, Key};

/// The event keys of a Messenger item. Meta sends one per item; should an item carry several, the
/// first in [`EventKey::ALL`] decides its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EventKey {
    Message,
    Postback,
    Referral,
    Reaction,
    Read,
    Delivery,
    MessageEdit,
    Optin,
    AccountLinking,
    PassThreadControl,
    TakeThreadControl,
    RequestThreadControl,
    AppRoles,
    PolicyEnforcement,
}

const EVENT_KEY_COUNT: usize = 14;

impl EventKey {
    const ALL: [Self; EVENT_KEY_COUNT] = [
        Self::Message,
        Self::Postback,
        Self::Referral,
        Self::Reaction,
        Self::Read,
        Self::Delivery,
        Self::MessageEdit,
        Self::Optin,
        Self::AccountLinking,
        Self::PassThreadControl,
        Self::TakeThreadControl,
        Self::RequestThreadControl,
        Self::AppRoles,
        Self::PolicyEnforcement,
    ];

    fn parse(key: &str) -> Option<Self> {
        Some(match key {
            "message" => Self::Message,
            "postback" => Self::Postback,
            "referral" => Self::Referral,
            "reaction" => Self::Reaction,
            "read" => Self::Read,
            "delivery" => Self::Delivery,
            "message_edit" => Self::MessageEdit,
            "optin" => Self::Optin,
            "account_linking" => Self::AccountLinking,
            "pass_thread_control" => Self::PassThreadControl,
            "take_thread_control" => Self::TakeThreadControl,
            "request_thread_control" => Self::RequestThreadControl,
            "app_roles" => Self::AppRoles,
            // Older versions of Meta's reference spell it with a hyphen.
            "policy_enforcement" | "policy-enforcement" => Self::PolicyEnforcement,
            _ => return None,
        })
    }
}

/// A messaging item, read in one pass: its envelope fields and event keys as slices of the body.
#[derive(Debug, Default)]
pub(crate) struct MessagingItem<'a> {
    sender: Option<&'a RawValue>,
    recipient: Option<&'a RawValue>,
    timestamp: Option<&'a RawValue>,
    /// The first value of each event key, indexed by `EventKey as usize`.
    events: [Option<&'a RawValue>; EVENT_KEY_COUNT],
    /// The first key other than `sender`, `recipient` and `timestamp`: what an item we cannot read
    /// says it is.
    pub(crate) first_key: Option<Cow<'a, str>>,
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
        party_id(self.sender)
    }

    /// `recipient.id`, else `recipient.user_ref`.
    pub(crate) fn recipient_id(&self) -> Option<String> {
        party_id(self.recipient)
    }

    pub(crate) fn timestamp_ms(&self) -> Option<i64> {
        wire::integer(self.timestamp).map(wire::millis)
    }

    fn event(&self) -> Option<(EventKey, &'a RawValue)> {
        EventKey::ALL
            .into_iter()
            .find_map(|key| self.events[key as usize].map(|body| (key, body)))
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
                        "sender" => item.sender = map.next_value()?,
                        "recipient" => item.recipient = map.next_value()?,
                        "timestamp" => item.timestamp = map.next_value()?,
                        other => {
                            match EventKey::parse(other) {
                                Some(event) => {
                                    if let Some(body) = map.next_value::<Option<&'a RawValue>>()? {
                                        item.events[event as usize].get_or_insert(body);
                                    }
                                }
                                None => {
                                    map.next_value::<IgnoredAny>()?;
                                }
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

wire_object!(MessageEditWire {
    mid,
    text,
    num_edit
});

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

fn party_id(raw: Option<&RawValue>) -> Option<String> {
    let party: Party<'_> = wire::object(raw)?;
    wire::id(party.id).or_else(|| wire::id(party.user_ref))
}

/// Normalizes one messaging or standby item.
pub(crate) fn normalize<'a>(slot: Slot<'_, 'a>) -> Item<'a> {
    let item = MessagingItem::parse(slot.raw);
    let sender_id = item.sender_id();
    let recipient_id = item.recipient_id();
    let kind = item
        .event()
        .and_then(|(key, body)| Kind::from_event(key, body))
        .unwrap_or_else(|| Kind::unknown(item.first_key.as_deref()));

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
        timestamp_ms: item.timestamp_ms().or_else(|| slot.entry_time_ms()),
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

    /// Reads the event key's object; `None` when it is not an object (the item is then unknown).
    fn from_event(key: EventKey, body: &RawValue) -> Option<Self> {
        match key {
            EventKey::Message => Some(message(wire::object(Some(body))?)),
            EventKey::Postback => Some(postback(wire::object(Some(body))?)),
            EventKey::Referral => Some(referral(wire::object(Some(body))?)),
            EventKey::Reaction => Some(reaction(wire::object(Some(body))?)),
            EventKey::Read => Some(read(wire::object(Some(body))?)),
            EventKey::Delivery => Some(delivery(wire::object(Some(body))?)),
            EventKey::MessageEdit => Some(message_edit(wire::object(Some(body))?)),
            EventKey::Optin => Some(optin(wire::object(Some(body))?)),
            EventKey::AccountLinking => Some(account_linking(wire::object(Some(body))?)),
            EventKey::PassThreadControl => Some(thread_control(
                "messenger.pass_thread_control",
                wire::object(Some(body))?,
            )),
            EventKey::TakeThreadControl => Some(thread_control(
                "messenger.take_thread_control",
                wire::object(Some(body))?,
            )),
            EventKey::RequestThreadControl => {
                Some(request_thread_control(wire::object(Some(body))?))
            }
            EventKey::AppRoles => app_roles(body),
            EventKey::PolicyEnforcement => Some(policy_enforcement(wire::object(Some(body))?)),
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

    let reply_to = wire::object::<ReplyToWire<'_>>(message.reply_to)
        .map_or(Value::Null, |reply_to| {
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
    let list = wire::array(raw).unwrap_or_default();
    Value::Array(list.into_iter().map(attachment).collect())
}

fn attachment(raw: &RawValue) -> Value {
    let attachment: AttachmentWire<'_> = wire::object(Some(raw)).unwrap_or_default();
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
    let data = wire::record([
        ("mids", mids),
        ("watermark", wire::integer_value(delivery.watermark)),
    ]);
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
        (
            "user_token_status",
            wire::string_value(optin.user_token_status),
        ),
    ]);
    Kind::inbound("messenger.optin", data, NaturalKey::None)
}

fn account_linking(linking: AccountLinkingWire<'_>) -> Kind {
    let data = wire::record([
        ("status", wire::string_value(linking.status)),
        (
            "authorization_code",
            wire::string_value(linking.authorization_code),
        ),
    ]);
    Kind::inbound("messenger.account_linking", data, NaturalKey::None)
}

/// `messenger.pass_thread_control` and `messenger.take_thread_control` (handover protocol).
fn thread_control(event_type: &'static str, control: ThreadControlWire<'_>) -> Kind {
    let data = wire::record([
        ("new_owner_app_id", wire::id_value(control.new_owner_app_id)),
        (
            "previous_owner_app_id",
            wire::id_value(control.previous_owner_app_id),
        ),
        ("metadata", wire::string_value(control.metadata)),
    ]);
    Kind::inbound(event_type, data, NaturalKey::None)
}

fn request_thread_control(control: ThreadControlWire<'_>) -> Kind {
    let data = wire::record([
        (
            "requested_owner_app_id",
            wire::id_value(control.requested_owner_app_id),
        ),
        ("metadata", wire::string_value(control.metadata)),
    ]);
    Kind::inbound("messenger.request_thread_control", data, NaturalKey::None)
}

/// `app_roles` maps app ids to role lists (`{"123456789": ["primary_receiver"]}`): kept as sent.
fn app_roles(body: &RawValue) -> Option<Kind> {
    if !body.get().starts_with('{') {
        return None;
    }
    let data = wire::record([("roles", wire::as_sent(Some(body)))]);
    Some(Kind::inbound("messenger.app_roles", data, NaturalKey::None))
}

fn policy_enforcement(policy: PolicyEnforcementWire<'_>) -> Kind {
    let data = wire::record([
        ("action", wire::string_value(policy.action)),
        ("reason", wire::string_value(policy.reason)),
    ]);
    Kind::inbound("messenger.policy_enforcement", data, NaturalKey::None)
}
