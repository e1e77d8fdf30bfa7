//! A Meta webhook sender: bodies shaped and encoded as Meta sends them, signed with the app secret.

use std::io;

use serde_json::{json, Value};

/// Serializes JSON the way Meta does before signing: every non-ASCII character escaped as `\uXXXX`
/// (UTF-16, so emoji become surrogate pairs) and `/` as `\/`. A gateway that re-encodes the body
/// before verifying fails on exactly these bytes.
pub fn meta_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, MetaFormatter);
    // Writing a `Value` into a `Vec` cannot fail.
    let _ = serde::Serialize::serialize(value, &mut serializer);
    out
}

struct MetaFormatter;

impl serde_json::ser::Formatter for MetaFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(&mut self, writer: &mut W, fragment: &str) -> io::Result<()> {
        let mut units = [0u16; 2];
        for c in fragment.chars() {
            if c == '/' {
                writer.write_all(b"\\/")?;
            } else if c.is_ascii() {
                writer.write_all(&[c as u8])?;
            } else {
                for unit in c.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }
}

/// The kinds of Messenger item the simulator builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    QuickReply,
    Postback,
    PostbackWithReferral,
    Referral,
    AdMessage,
    Reaction,
    Read,
    Delivery,
    Echo,
}

impl Kind {
    pub const ALL: [Self; 10] = [
        Self::Message,
        Self::QuickReply,
        Self::Postback,
        Self::PostbackWithReferral,
        Self::Referral,
        Self::AdMessage,
        Self::Reaction,
        Self::Read,
        Self::Delivery,
        Self::Echo,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::QuickReply => "quick_reply",
            Self::Postback => "postback",
            Self::PostbackWithReferral => "postback_referral",
            Self::Referral => "referral",
            Self::AdMessage => "ad_message",
            Self::Reaction => "reaction",
            Self::Read => "read",
            Self::Delivery => "delivery",
            Self::Echo => "echo",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.name() == s)
    }

    /// A realistic item of this kind between `page_id` and the user `psid`, at `timestamp_ms`.
    /// `text` is the message text or the postback/quick-reply payload; `seq` keeps mids unique.
    pub fn item(self, page_id: &str, psid: &str, timestamp_ms: i64, text: &str, seq: u64) -> Value {
        let inbound = |body: (&str, Value)| {
            let mut item = json!({
                "sender": {"id": psid},
                "recipient": {"id": page_id},
                "timestamp": timestamp_ms,
            });
            item[body.0] = body.1;
            item
        };
        let mid = format!("m_{timestamp_ms}{seq:06}AbCdEfGhIjKlMnOp");
        match self {
            Self::Message => inbound(("message", json!({"mid": mid, "text": text}))),
            Self::QuickReply => inbound((
                "message",
                json!({"mid": mid, "text": "Yes, please!", "quick_reply": {"payload": text}}),
            )),
            Self::Postback => inbound((
                "postback",
                json!({"mid": mid, "title": "Track My Order", "payload": text}),
            )),
            Self::PostbackWithReferral => inbound((
                "postback",
                json!({
                    "mid": mid,
                    "title": "Get Started",
                    "payload": text,
                    "referral": {"ref": "summer_sale", "source": "SHORTLINK", "type": "OPEN_THREAD"}
                }),
            )),
            Self::Referral => inbound((
                "referral",
                json!({"ref": text, "source": "SHORTLINK", "type": "OPEN_THREAD"}),
            )),
            Self::AdMessage => inbound((
                "message",
                json!({
                    "mid": mid,
                    "text": text,
                    "referral": {
                        "source": "ADS",
                        "type": "OPEN_THREAD",
                        "ad_id": "120208512345670123",
                        "ads_context_data": {
                            "ad_title": "Summer Sale: 20% off",
                            "photo_url": "https://scontent.xx.fbcdn.net/v/t45.1600-4/ad.png",
                            "post_id": "104872345678901_122113456789012345"
                        }
                    }
                }),
            )),
            Self::Reaction => inbound((
                "reaction",
                json!({"mid": mid, "action": "react", "reaction": "love", "emoji": "\u{2764}\u{fe0f}"}),
            )),
            Self::Read => inbound(("read", json!({"watermark": timestamp_ms - 1000}))),
            Self::Delivery => inbound(("delivery", json!({"mids": [mid], "watermark": timestamp_ms - 500}))),
            Self::Echo => json!({
                "sender": {"id": page_id},
                "recipient": {"id": psid},
                "timestamp": timestamp_ms,
                "message": {"is_echo": true, "app_id": 1_517_776_481_860_352_u64, "mid": mid, "text": text}
            }),
        }
    }
}

/// A webhook body under construction: `{"object": …, "entry": [ … ]}`.
#[derive(Debug, Clone)]
pub struct MetaBody {
    object: String,
    entries: Vec<Value>,
}

impl MetaBody {
    /// A Messenger (`object: page`) body.
    pub fn page() -> Self {
        Self {
            object: String::from("page"),
            entries: Vec::new(),
        }
    }

    pub fn object(object: &str) -> Self {
        Self {
            object: object.to_owned(),
            entries: Vec::new(),
        }
    }

    /// Adds an entry for `page_id` whose items arrive in `messaging[]`.
    pub fn messaging(self, page_id: &str, time_ms: i64, items: Vec<Value>) -> Self {
        self.entry(page_id, time_ms, "messaging", items)
    }

    /// Adds an entry whose items arrive in `standby[]` (another app owns the thread).
    pub fn standby(self, page_id: &str, time_ms: i64, items: Vec<Value>) -> Self {
        self.entry(page_id, time_ms, "standby", items)
    }

    /// Adds an entry with `field` (`messaging`, `standby` or `changes`) holding `items`.
    pub fn entry(mut self, page_id: &str, time_ms: i64, field: &str, items: Vec<Value>) -> Self {
        let mut entry = json!({"id": page_id, "time": time_ms});
        entry[field] = Value::Array(items);
        self.entries.push(entry);
        self
    }

    pub fn to_value(&self) -> Value {
        json!({"object": self.object, "entry": self.entries})
    }

    /// The body's bytes, encoded as Meta encodes them.
    pub fn to_bytes(&self) -> Vec<u8> {
        meta_json(&self.to_value())
    }
}

/// `sha256=<hex>` over `body` with `app_secret`, as Meta's `X-Hub-Signature-256`.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    pagewire_meta::sign(app_secret.as_bytes(), body)
}

/// Posts `body` to `url`, signed as Meta signs it.
pub async fn post_signed(
    client: &reqwest::Client,
    url: &str,
    app_secret: &str,
    body: Vec<u8>,
) -> Result<reqwest::Response, reqwest::Error> {
    let signature = signature(app_secret, &body);
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_non_ascii_and_slashes_like_meta() {
        let body = meta_json(&json!({"text": "äöå 😀", "url": "https://x.y/z"}));
        assert_eq!(
            String::from_utf8_lossy(&body),
            r#"{"text":"\u00e4\u00f6\u00e5 \ud83d\ude00","url":"https:\/\/x.y\/z"}"#
        );
        let back: Value = serde_json::from_slice(&body).unwrap_or_default();
        assert_eq!(back["text"], "äöå 😀");
    }

    #[test]
    fn every_kind_has_a_name_that_parses_back() {
        for kind in Kind::ALL {
            assert_eq!(Kind::parse(kind.name()), Some(kind));
        }
    }
}
