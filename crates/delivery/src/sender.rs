//! One pooled HTTP client that signs and sends deliveries and classifies what comes back.

use std::time::{Duration, Instant};

use pagewire_core::DeliveryOutcome;
use pagewire_store::LeasedDelivery;
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};

use crate::ssrf::{self, check_destination, BlockedAddress};

const USER_AGENT_VALUE: &str = concat!("Pagewire/", env!("CARGO_PKG_VERSION"));

/// What one attempt came to, ready to be recorded.
#[derive(Debug, Clone)]
pub struct SendReport {
    pub outcome: DeliveryOutcome,
    pub status_code: Option<u16>,
    pub duration_ms: i64,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// Sends deliveries. Cloning shares the connection pool.
#[derive(Debug, Clone)]
pub struct Sender {
    client: reqwest::Client,
    allow_private: bool,
    excerpt_limit: usize,
}

impl Sender {
    /// Builds the client: keep-alive pool, no redirects (a redirect is the customer's answer, not an
    /// invitation to go elsewhere), a whole-request timeout, and — unless `allow_private` — a resolver
    /// that refuses private addresses.
    pub fn new(timeout: Duration, allow_private: bool, excerpt_limit: usize) -> Result<Self, reqwest::Error> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60));
        if !allow_private {
            builder = builder.dns_resolver(ssrf::resolver());
        }
        Ok(Self {
            client: builder.build()?,
            allow_private,
            excerpt_limit,
        })
    }

    /// Signs (Standard Webhooks) and sends one delivery.
    pub async fn send(&self, delivery: &LeasedDelivery, now_ms: i64) -> SendReport {
        let started = Instant::now();
        let elapsed = |started: Instant| i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        if let Err(e) = check_destination(&delivery.url, self.allow_private) {
            return SendReport {
                outcome: DeliveryOutcome::Blocked,
                status_code: None,
                duration_ms: 0,
                error: Some(e.to_string()),
                response_excerpt: None,
            };
        }
        let timestamp = now_ms.div_euclid(1000);
        let signature = delivery
            .secret
            .sign(delivery.event_id.as_str(), timestamp, delivery.payload.as_bytes());
        let request = self
            .client
            .post(&delivery.url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE))
            .header("webhook-id", delivery.event_id.as_str())
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(delivery.payload.clone());

        match request.send().await {
            Ok(mut response) => {
                let status = response.status();
                let retry_after = response
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let excerpt = read_excerpt(&mut response, self.excerpt_limit).await;
                let code = status.as_u16();
                let outcome = if status.is_success() {
                    DeliveryOutcome::Delivered { status: code }
                } else if code == 410 {
                    DeliveryOutcome::Gone
                } else {
                    DeliveryOutcome::Rejected {
                        status: code,
                        retry_after,
                    }
                };
                SendReport {
                    error: (!status.is_success()).then(|| format!("the endpoint answered {status}")),
                    outcome,
                    status_code: Some(code),
                    duration_ms: elapsed(started),
                    response_excerpt: excerpt,
                }
            }
            Err(err) => {
                let outcome = if is_blocked(&err) {
                    DeliveryOutcome::Blocked
                } else if err.is_timeout() {
                    DeliveryOutcome::Timeout
                } else {
                    DeliveryOutcome::ConnectionFailed
                };
                SendReport {
                    outcome,
                    status_code: None,
                    duration_ms: elapsed(started),
                    error: Some(describe(&err)),
                    response_excerpt: None,
                }
            }
        }
    }
}

/// Reads at most `limit` bytes of the answer, for the attempt log; the rest is not downloaded.
async fn read_excerpt(response: &mut reqwest::Response, limit: usize) -> Option<String> {
    let mut bytes = Vec::new();
    while bytes.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => bytes.extend_from_slice(&chunk[..chunk.len().min(limit - bytes.len())]),
            Ok(None) | Err(_) => break,
        }
    }
    if bytes.is_empty() {
        return None;
    }
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

fn is_blocked(err: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<BlockedAddress>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// The error and its causes in one line, without the URL (which may carry credentials).
fn describe(err: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = String::from(if err.is_timeout() {
        "timed out"
    } else if err.is_connect() {
        "could not connect"
    } else {
        "request failed"
    });
    let mut source = err.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
