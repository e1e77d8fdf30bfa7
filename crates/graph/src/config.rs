//! The client's settings: where the Graph API is, which version, how long to wait, how to retry.

use std::time::Duration;

/// How the [`GraphClient`](crate::GraphClient) reaches the Graph API.
///
/// The defaults suit production; tests point `base_url` at a fake and shorten `retry_base_delay`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphConfig {
    /// Scheme and host (and port) of the Graph API, without the version: `https://graph.facebook.com`.
    pub base_url: String,
    /// The Graph API version, the first path segment of every call: `v21.0`.
    pub version: String,
    /// The limit for one HTTP exchange, connection included. Retries each get their own.
    pub timeout: Duration,
    /// Extra tries after a transient failure, a network error or a short rate limit (0: none).
    pub max_retries: u32,
    /// The wait before the first retry; it doubles at each further retry (capped at 30 s).
    pub retry_base_delay: Duration,
}

impl Default for GraphConfig {
    fn default() -> Self {
        Self {
            base_url: String::from("https://graph.facebook.com"),
            version: String::from("v21.0"),
            timeout: Duration::from_secs(10),
            max_retries: 2,
            retry_base_delay: Duration::from_millis(200),
        }
    }
}
