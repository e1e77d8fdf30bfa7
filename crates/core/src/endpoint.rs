//! Which events an endpoint wants.

use serde::{Deserialize, Serialize};

/// An endpoint's filters. An absent list means "everything"; an event must pass both lists.
///
/// Event type patterns are exact types (`messenger.postback`), a platform wildcard (`messenger.*`) or
/// `*`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointFilter {
    pub event_types: Option<Vec<String>>,
    pub page_ids: Option<Vec<String>>,
    /// Also deliver items from `standby[]` (threads another app owns). Off by default.
    #[serde(default)]
    pub include_standby: bool,
    /// Also deliver echoes of what the Page sent. Off by default, since a bot that answers its own
    /// echoes talks to itself; naming an echo type exactly in `event_types` also opts in.
    #[serde(default)]
    pub include_echoes: bool,
}

/// What a filter looks at in an event.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    pub event_type: &'a str,
    /// The ids the event is known by: its `page_id` and, when it differs, the account it was routed
    /// through (a WhatsApp Business Account for its phone numbers' events).
    pub page_ids: &'a [&'a str],
    pub standby: bool,
}

impl EventFacts<'_> {
    fn is_echo(&self) -> bool {
        self.event_type.ends_with(".message_echo")
    }
}

/// The shape of what an endpoint receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PayloadFormat {
    /// The normalized event, signed with Standard Webhooks headers.
    #[default]
    Standard,
    /// Meta's own webhook body for the item (one entry, one item, the raw bytes as Meta sent them),
    /// signed with `X-Hub-Signature-256` keyed by the endpoint secret: an existing Messenger bot
    /// sits behind Pagewire unchanged, with the secret as its app secret.
    Meta,
}

impl PayloadFormat {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Standard => "standard",
            Self::Meta => "meta",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "standard" => Some(Self::Standard),
            "meta" => Some(Self::Meta),
            _ => None,
        }
    }
}

/// Header names an endpoint may not set: they carry the body's framing or Pagewire's signature, or
/// they speak to something on the way rather than to the endpoint: `Forwarded` tells a proxy or a
/// receiver who the client is, and `Metadata-Flavor` is what a cloud metadata server (GCP's) asks
/// for before it answers. Compare with [`is_reserved_header`], which also knows the reserved prefixes.
pub const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "host",
    "transfer-encoding",
    "connection",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "x-hub-signature",
    "x-hub-signature-256",
    "forwarded",
    // Cloud metadata services ask for these (GCP, Azure, AWS's token): a delivery must never carry
    // them, should an address slip through.
    "metadata-flavor",
    "metadata",
    "x-aws-ec2-metadata-token",
];

/// Prefixes of header names an endpoint may not set: Standard Webhooks' own (`webhook-`), those meant
/// for a proxy (`proxy-`: a `Proxy-Authorization` would reach the operator's proxy in place of its
/// credentials) and those a proxy adds about the client (`x-forwarded-`).
pub const RESERVED_HEADER_PREFIXES: &[&str] = &["webhook-", "proxy-", "x-forwarded-"];

/// Whether an endpoint may not set the header `name`, compared without regard to case.
pub fn is_reserved_header(name: &str) -> bool {
    RESERVED_HEADERS
        .iter()
        .any(|reserved| reserved.eq_ignore_ascii_case(name))
        || RESERVED_HEADER_PREFIXES.iter().any(|prefix| {
            name.get(..prefix.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(prefix))
        })
}

/// How deliveries to one endpoint are paced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliveryControls {
    /// Requests in flight to this endpoint at once. 1 delivers strictly one after another.
    pub max_concurrency: u32,
    /// Most requests per second; `None` for no limit.
    pub rate_limit: Option<u32>,
    /// Events of one conversation are delivered one at a time, in order: the next waits until the
    /// previous is delivered or given up. Conversations still run in parallel.
    pub ordered: bool,
}

impl DeliveryControls {
    pub const MAX_CONCURRENCY: u32 = 256;
}

impl Default for DeliveryControls {
    fn default() -> Self {
        Self {
            max_concurrency: 16,
            rate_limit: None,
            ordered: false,
        }
    }
}

/// When a failing endpoint is paused as a whole (a circuit breaker) and when it is disabled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthPolicy {
    /// Consecutive failed attempts that open the breaker.
    pub threshold: u32,
    /// The first pause; each further failure doubles it, up to `max_pause`. When a pause ends one
    /// delivery goes as a probe: its success closes the breaker.
    pub first_pause: std::time::Duration,
    pub max_pause: std::time::Duration,
    /// An endpoint failing without a single success for this long is disabled.
    pub disable_after: std::time::Duration,
}

impl Default for HealthPolicy {
    fn default() -> Self {
        Self {
            threshold: 5,
            first_pause: std::time::Duration::from_secs(5),
            max_pause: std::time::Duration::from_secs(600),
            disable_after: std::time::Duration::from_secs(5 * 24 * 3600),
        }
    }
}

/// An event type pattern that no event type can ever match.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not an event type pattern: use a type such as `messenger.postback`, `messenger.*`, `*.postback` or `*`"
)]
pub struct InvalidPattern(pub String);

impl EndpointFilter {
    /// Whether the endpoint wants the event: its type passes a pattern (when there are patterns),
    /// one of its ids is listed (when Pages are listed), and standby items and echoes only when
    /// asked for.
    pub fn matches(&self, event: &EventFacts<'_>) -> bool {
        let type_ok = self
            .event_types
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| pattern_matches(p, event.event_type)));
        let page_ok = self
            .page_ids
            .as_ref()
            .is_none_or(|pages| pages.iter().any(|p| event.page_ids.contains(&p.as_str())));
        let standby_ok = !event.standby || self.include_standby;
        let echo_ok =
            !event.is_echo() || self.include_echoes || self.event_types.iter().flatten().any(|p| p == event.event_type);
        type_ok && page_ok && standby_ok && echo_ok
    }

    /// Checks every pattern's shape, so that a typo is an error at registration, not silence later.
    /// Whether the endpoint asked for an operational event (`endpoint.disabled`, …): only by naming
    /// it or its family (`endpoint.*`); `*` alone means every Meta event.
    pub fn wants_operational(&self, event_type: &str) -> bool {
        let family = event_type.split_once('.').map(|(family, _)| family);
        self.event_types
            .iter()
            .flatten()
            .any(|p| p == event_type || (p.strip_suffix(".*").is_some() && p.strip_suffix(".*") == family))
    }

    pub fn validate(&self) -> Result<(), InvalidPattern> {
        let word = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        for p in self.event_types.iter().flatten() {
            let ok = p == "*"
                || p.split_once('.')
                    .is_some_and(|(platform, kind)| match (platform, kind) {
                        ("*", "*") => false,
                        ("*", kind) => word(kind),
                        (platform, "*") => word(platform),
                        (platform, kind) => word(platform) && word(kind),
                    });
            if !ok {
                return Err(InvalidPattern(p.clone()));
            }
        }
        Ok(())
    }
}

/// `*`, `platform.*`, `*.kind` or an exact type.
fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some((platform, kind)) = event_type.split_once('.') else {
        return false;
    };
    match pattern.split_once('.') {
        Some(("*", wanted)) => wanted == kind,
        Some((wanted, "*")) => wanted == platform,
        _ => pattern == event_type,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(types: Option<&[&str]>, pages: Option<&[&str]>) -> EndpointFilter {
        let owned = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect();
        EndpointFilter {
            event_types: types.map(owned),
            page_ids: pages.map(owned),
            ..EndpointFilter::default()
        }
    }

    fn event<'a>(event_type: &'a str, page_ids: &'a [&'a str]) -> EventFacts<'a> {
        EventFacts {
            event_type,
            page_ids,
            standby: false,
        }
    }

    #[test]
    fn no_filter_matches_everything_but_standby_and_echoes() {
        let all = filter(None, None);
        assert!(all.matches(&event("messenger.message", &["1"])));
        assert!(all.matches(&event("whatsapp.status", &["1"])));
        assert!(!all.matches(&EventFacts {
            standby: true,
            ..event("messenger.postback", &["1"])
        }));
        assert!(!all.matches(&event("messenger.message_echo", &["1"])));
        assert!(!all.matches(&event("instagram.message_echo", &["1"])));
    }

    #[test]
    fn standby_and_echoes_come_when_asked_for() {
        let f = EndpointFilter {
            include_standby: true,
            include_echoes: true,
            ..EndpointFilter::default()
        };
        assert!(f.matches(&EventFacts {
            standby: true,
            ..event("messenger.postback", &["1"])
        }));
        assert!(f.matches(&event("messenger.message_echo", &["1"])));
        let named = filter(Some(&["messenger.message_echo"]), None);
        assert!(
            named.matches(&event("messenger.message_echo", &["1"])),
            "naming the echo type opts in"
        );
        assert!(!filter(Some(&["messenger.*"]), None).matches(&event("messenger.message_echo", &["1"])));
    }

    #[test]
    fn matches_exact_types_wildcards_and_pages() {
        let f = filter(Some(&["messenger.postback", "instagram.*"]), Some(&["42"]));
        assert!(f.matches(&event("messenger.postback", &["42"])));
        assert!(f.matches(&event("instagram.message", &["42"])));
        assert!(!f.matches(&event("messenger.message", &["42"])));
        assert!(!f.matches(&event("messenger.postback", &["43"])));
        assert!(
            f.matches(&event("messenger.postback", &["43", "42"])),
            "any of the event's ids"
        );
        assert!(!filter(Some(&["insta.*"]), None).matches(&event("instagram.message", &["1"])));
        let any_postback = filter(Some(&["*.postback"]), None);
        assert!(any_postback.matches(&event("instagram.postback", &["1"])));
        assert!(any_postback.matches(&event("messenger.postback", &["1"])));
        assert!(!any_postback.matches(&event("messenger.message", &["1"])));
    }

    #[test]
    fn reserves_framing_signature_proxy_and_metadata_headers_in_any_case() {
        for name in [
            "Content-Type",
            "HOST",
            "webhook-id",
            "Webhook-Anything",
            "X-Hub-Signature-256",
            "Metadata-Flavor",
            "metadata-flavor",
            "Metadata",
            "X-aws-ec2-metadata-token",
            "Proxy-Authorization",
            "proxy-connection",
            "PROXY-ANYTHING",
            "X-Forwarded-For",
            "x-forwarded-host",
            "X-FORWARDED-PROTO",
            "Forwarded",
            "FORWARDED",
        ] {
            assert!(is_reserved_header(name), "{name} is reserved");
        }
        for name in [
            "Authorization",
            "X-Api-Key",
            "X-Forwarded",
            "Forwarded-By",
            "Proxy",
            "X-Metadata-Flavor",
            "Webhook",
            "ünïcode-",
        ] {
            assert!(!is_reserved_header(name), "{name} is the endpoint's own");
        }
    }

    #[test]
    fn rejects_malformed_patterns() {
        assert!(filter(Some(&["messenger.*", "*", "page.feed", "*.postback"]), None)
            .validate()
            .is_ok());
        for bad in ["Messenger", "messenger.", "*.*", ".x", "messenger.Post"] {
            assert!(filter(Some(&[bad]), None).validate().is_err(), "{bad}");
        }
    }
}
