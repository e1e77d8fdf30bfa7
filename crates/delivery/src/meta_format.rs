//! Meta-compatible deliveries: the item wrapped back into Meta's own webhook body, signed the way
//! Meta signs, so that a bot written against Meta's webhooks runs behind Pagewire unchanged.
//!
//! The body holds one entry with one item, and the item is the raw bytes Meta sent (non-ASCII still
//! escaped as `\uXXXX`), so a bot that verifies over the raw body as Meta's sample app does accepts it.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::Sha256;

/// The parts of a stored event that the Meta body needs.
#[derive(Debug, Deserialize)]
struct EventParts<'a> {
    platform: &'a str,
    page_id: String,
    timestamp_ms: i64,
    #[serde(borrow)]
    raw: &'a RawValue,
    source: SourceParts,
}

#[derive(Debug, Deserialize)]
struct SourceParts {
    field: String,
    nested: Option<NestedParts>,
}

#[derive(Debug, Deserialize)]
struct NestedParts {
    array: String,
}

/// Builds Meta's webhook body for the event in `payload` (an event as stored).
pub fn meta_body(payload: &str) -> Result<String, serde_json::Error> {
    let event: EventParts<'_> = serde_json::from_str(payload)?;
    let object = match event.platform {
        "instagram" => "instagram",
        "whatsapp" => "whatsapp_business_account",
        _ => "page",
    };
    let id = serde_json::to_string(&event.page_id)?;
    let raw = event.raw.get();
    let time = event.timestamp_ms;
    let entry = match (event.source.field.as_str(), &event.source.nested) {
        ("entry", _) => raw.to_owned(),
        ("changes", Some(nested)) => {
            // WhatsApp: the one message or status inside a `messages` change of its phone number.
            let array = serde_json::to_string(&nested.array)?;
            format!(
                r#"{{"id":{id},"changes":[{{"field":"messages","value":{{"messaging_product":"whatsapp","metadata":{{"phone_number_id":{id}}},{array}:[{raw}]}}}}]}}"#
            )
        }
        (field, _) => {
            let field = serde_json::to_string(field)?;
            format!(r#"{{"id":{id},"time":{time},{field}:[{raw}]}}"#)
        }
    };
    Ok(format!(r#"{{"object":"{object}","entry":[{entry}]}}"#))
}

/// `sha256=<hex>` over `body`, keyed by `secret` as the bot knows it (its "app secret").
pub fn hub_signature(secret: &str, body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        unreachable!("HMAC accepts keys of any length")
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(platform: &str, field: &str, nested: &str, raw: &str) -> String {
        format!(
            r#"{{"id":"evt_x","type":"t","platform":"{platform}","page_id":"104872345678901","timestamp_ms":1747231892100,"raw":{raw},"source":{{"inbound_id":"inb_x","entry":0,"item":0,"field":"{field}","nested":{nested}}}}}"#
        )
    }

    #[test]
    fn wraps_a_messaging_item_with_its_raw_bytes_untouched() -> Result<(), serde_json::Error> {
        let raw = r#"{"sender":{"id":"1"},"message":{"mid":"m_1","text":"\u00e4\u00f6\u00e5 \ud83d\ude00"}}"#;
        let body = meta_body(&event("messenger", "messaging", "null", raw))?;
        assert_eq!(
            body,
            format!(
                r#"{{"object":"page","entry":[{{"id":"104872345678901","time":1747231892100,"messaging":[{raw}]}}]}}"#
            )
        );
        let standby = meta_body(&event("instagram", "standby", "null", raw))?;
        assert!(standby
            .starts_with(r#"{"object":"instagram","entry":[{"id":"104872345678901","time":1747231892100,"standby":["#));
        Ok(())
    }

    #[test]
    fn rebuilds_a_whatsapp_change_around_one_message() -> Result<(), serde_json::Error> {
        let raw = r#"{"from":"16505551234","id":"wamid.X","type":"text","text":{"body":"hi"}}"#;
        let body = meta_body(&event("whatsapp", "changes", r#"{"array":"messages","index":0}"#, raw))?;
        let value: serde_json::Value = serde_json::from_str(&body)?;
        assert_eq!(value["object"], "whatsapp_business_account");
        assert_eq!(value["entry"][0]["changes"][0]["value"]["messages"][0]["id"], "wamid.X");
        assert_eq!(
            value["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"],
            "104872345678901"
        );
        Ok(())
    }

    #[test]
    fn signs_like_meta() {
        // HMAC-SHA256("key", "The quick brown fox jumps over the lazy dog"), a published test vector.
        assert_eq!(
            hub_signature("key", b"The quick brown fox jumps over the lazy dog"),
            "sha256=f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }
}
