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
#[error("`{0}` is not an event type pattern: use a type such as `messenger.postback`, `messenger.*` or `*`")]
pub struct InvalidPattern(pub String);

impl EndpointFilter {
    /// `page_ids` are the ids an event is known by: its `page_id` and, when it differs, the account
    /// it was routed through (a WhatsApp Business Account for its phone numbers' events). The Page
    /// filter passes when it names any of them.
    pub fn matches(&self, event_type: &str, page_ids: &[&str]) -> bool {
        let type_ok = self
            .event_types
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| pattern_matches(p, event_type)));
        let page_ok = self
            .page_ids
            .as_ref()
            .is_none_or(|pages| pages.iter().any(|p| page_ids.contains(&p.as_str())));
        type_ok && page_ok
    }

    /// Checks every pattern's shape, so that a typo is an error at registration, not silence later.
    pub fn validate(&self) -> Result<(), InvalidPattern> {
        for p in self.event_types.iter().flatten() {
            let ok = p == "*"
                || p.split_once('.').is_some_and(|(platform, kind)| {
                    !platform.is_empty()
                        && !kind.is_empty()
                        && platform.bytes().all(|b| b.is_ascii_lowercase())
                        && (kind == "*"
                            || kind
                                .bytes()
                                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.'))
                });
            if !ok {
                return Err(InvalidPattern(p.clone()));
            }
        }
        Ok(())
    }
}

fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix(".*") {
        Some(platform) => event_type
            .strip_prefix(platform)
            .is_some_and(|rest| rest.starts_with('.')),
        None => pattern == event_type,
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
        }
    }

    #[test]
    fn no_filter_matches_everything() {
        assert!(filter(None, None).matches("messenger.message", &["1"]));
    }

    #[test]
    fn matches_exact_types_wildcards_and_pages() {
        let f = filter(Some(&["messenger.postback", "instagram.*"]), Some(&["42"]));
        assert!(f.matches("messenger.postback", &["42"]));
        assert!(f.matches("instagram.message", &["42"]));
        assert!(!f.matches("messenger.message", &["42"]));
        assert!(!f.matches("messenger.postback", &["43"]));
        assert!(f.matches("messenger.postback", &["43", "42"]), "any of the event's ids");
        assert!(!filter(Some(&["insta.*"]), None).matches("instagram.message", &["1"]));
    }

    #[test]
    fn rejects_malformed_patterns() {
        assert!(filter(Some(&["messenger.*", "*", "page.feed"]), None)
            .validate()
            .is_ok());
        assert!(filter(Some(&["Messenger"]), None).validate().is_err());
        assert!(filter(Some(&["messenger."]), None).validate().is_err());
    }
}
