//! One pooled HTTP client that signs and sends deliveries and classifies what comes back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pagewire_core::endpoint::is_reserved_header;
use pagewire_core::{DeliveryOutcome, OperationalEvent, PayloadFormat};
use pagewire_store::LeasedDelivery;
use reqwest::header::{HeaderValue, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};

use crate::meta_format::{hub_signature, meta_body};
use crate::proxy::{CheckedHosts, DeliveryProxy, HostRefusal};
use crate::ssrf::{check_destination, BlockedAddress, DestinationPolicy, PolicyResolver};

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
    destinations: Arc<DestinationPolicy>,
    excerpt_limit: usize,
    /// Present when deliveries go through the operator's proxy: a target's name is judged here
    /// before the request leaves, since the proxy, not the client, resolves it.
    proxied: Option<Arc<CheckedHosts>>,
}

impl Sender {
    /// Builds the client: keep-alive pool, no redirects (a redirect is the customer's answer, not an
    /// invitation to go elsewhere), a whole-request timeout, and a resolver that connects only to
    /// addresses the policy permits. No proxy from the environment (`HTTP_PROXY`, `ALL_PROXY`, …)
    /// is ever used: through one, the resolver would judge only the proxy's name and the proxy would
    /// go wherever the URL says. The operator's `proxy`, if given, carries every delivery, each
    /// after its target's addresses pass the policy (see [`crate::proxy`] for what that does not cover).
    pub fn new(
        timeout: Duration,
        destinations: Arc<DestinationPolicy>,
        excerpt_limit: usize,
        proxy: Option<&DeliveryProxy>,
    ) -> Result<Self, reqwest::Error> {
        let resolver = PolicyResolver {
            policy: Arc::clone(&destinations),
            proxy_host: proxy.and_then(DeliveryProxy::host_name).map(Arc::from),
        };
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_keepalive(Duration::from_secs(60))
            .dns_resolver(Arc::new(resolver));
        if let Some(proxy) = proxy {
            builder = builder.proxy(proxy.to_reqwest()?);
        }
        Ok(Self {
            client: builder.build()?,
            destinations,
            excerpt_limit,
            proxied: proxy.map(|_| Arc::new(CheckedHosts::default())),
        })
    }

    /// Signs (Standard Webhooks) and sends one delivery. An event's payload moves into the request
    /// (what follows an attempt never reads it), so no delivery is copied on its way out.
    pub async fn send(&self, delivery: &mut LeasedDelivery, now_ms: i64) -> SendReport {
        let started = Instant::now();
        let elapsed = |started: Instant| i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let url = match self.admit(&delivery.url).await {
            Ok(url) => url,
            Err((outcome, error)) => {
                return SendReport {
                    outcome,
                    status_code: None,
                    duration_ms: elapsed(started),
                    error: Some(error),
                    response_excerpt: None,
                };
            }
        };
        let request = match self.request(url, delivery, now_ms) {
            Ok(request) => request,
            Err(e) => {
                return SendReport {
                    outcome: DeliveryOutcome::ConnectionFailed,
                    status_code: None,
                    duration_ms: 0,
                    error: Some(format!("the stored event could not be prepared: {e}")),
                    response_excerpt: None,
                };
            }
        };

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

impl Sender {
    /// The delivery's URL, parsed, if it may be sent to: its shape and any address in it pass the
    /// policy and, through a proxy, so do its name's addresses (directly, the resolver judges
    /// them as the client connects). Otherwise why not, as an outcome and an error.
    async fn admit(&self, url: &str) -> Result<url::Url, (DeliveryOutcome, String)> {
        let url = check_destination(url, &self.destinations).map_err(|e| (DeliveryOutcome::Blocked, e.to_string()))?;
        if let (Some(hosts), Some(url::Host::Domain(name))) = (&self.proxied, url.host()) {
            hosts.check(name, &self.destinations).await.map_err(|refusal| {
                let outcome = match refusal {
                    HostRefusal::Blocked(_) => DeliveryOutcome::Blocked,
                    HostRefusal::Lookup { .. } => DeliveryOutcome::ConnectionFailed,
                };
                (outcome, refusal.to_string())
            })?;
        }
        Ok(url)
    }

    /// The signed request: the event with Standard Webhooks headers (one `v1` signature per live
    /// secret, so that both verify during a rotation), or Meta's body with `X-Hub-Signature-256`;
    /// then the endpoint's own headers.
    /// `url` is the delivery's URL as the destination check parsed it (parsed once per attempt).
    fn request(
        &self,
        url: url::Url,
        delivery: &mut LeasedDelivery,
        now_ms: i64,
    ) -> Result<reqwest::RequestBuilder, serde_json::Error> {
        let mut request = self
            .client
            .post(url)
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        // The API refuses reserved names; an endpoint saved before a name was reserved must not send it
        // either (its `Proxy-Authorization` would stand in for the operator's at the proxy).
        for (name, value) in delivery.headers.iter().filter(|(name, _)| !is_reserved_header(name)) {
            request = request.header(name.as_str(), value.as_str());
        }
        // Operational events have no Meta form: they always go as events.
        let meta = delivery.format == PayloadFormat::Meta && !OperationalEvent::is_operational(&delivery.event_type);
        let request = if meta {
            let body = meta_body(&delivery.payload)?;
            let signature = delivery
                .secrets
                .first()
                .map(|secret| hub_signature(&secret.expose(), body.as_bytes()))
                .unwrap_or_default();
            request.header("x-hub-signature-256", signature).body(body)
        } else {
            let timestamp = now_ms.div_euclid(1000);
            let id = delivery.event_id.as_str();
            let body = delivery.payload.as_bytes();
            let signatures: Vec<String> = delivery
                .secrets
                .iter()
                .map(|secret| secret.sign(id, timestamp, body))
                .chain(delivery.ed25519.iter().map(|key| key.sign(id, timestamp, body)))
                .collect();
            request
                .header("webhook-id", id)
                .header("webhook-timestamp", timestamp.to_string())
                .header("webhook-signature", signatures.join(" "))
                .body(std::mem::take(&mut delivery.payload))
        };
        Ok(request)
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

#[cfg(test)]
mod tests {
    use super::*;
    use pagewire_core::{DeliveryId, EndpointId, EndpointSecret, EventId, TenantId};

    fn delivery(url: &str) -> LeasedDelivery {
        LeasedDelivery {
            id: DeliveryId::new(),
            lease_seq: 1,
            event_id: EventId::new(),
            event_type: String::from("messenger.message"),
            endpoint_id: EndpointId::new(),
            tenant_id: TenantId::new(),
            url: url.to_owned(),
            secrets: vec![EndpointSecret::generate()],
            ed25519: None,
            controls: pagewire_core::DeliveryControls::default(),
            format: PayloadFormat::Standard,
            headers: Vec::new(),
            payload: String::from("{}"),
            attempts: 0,
        }
    }

    async fn listener() -> std::io::Result<(tokio::net::TcpListener, String)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        Ok((listener, url))
    }

    #[tokio::test]
    async fn refuses_loopback_addresses_and_names_at_send_time() -> Result<(), Box<dyn std::error::Error>> {
        let sender = Sender::new(
            Duration::from_secs(5),
            Arc::new(DestinationPolicy::default()),
            1024,
            None,
        )?;
        let (_listener, url) = listener().await?;
        let by_address = sender.send(&mut delivery(&url), 0).await;
        assert_eq!(by_address.outcome, DeliveryOutcome::Blocked);
        let port = url.rsplit(':').next().unwrap_or_default();
        let by_name = sender
            .send(&mut delivery(&format!("http://localhost.:{port}")), 0)
            .await;
        assert_eq!(by_name.outcome, DeliveryOutcome::Blocked, "{:?}", by_name.error);
        Ok(())
    }

    /// Answers one request with `response`, byte for byte.
    async fn answer_once(response: &'static str) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (listener, url) = listener().await?;
        tokio::spawn(async move {
            if let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        Ok(url)
    }

    #[tokio::test]
    async fn keeps_a_capped_excerpt_and_honours_retry_after() -> Result<(), Box<dyn std::error::Error>> {
        let sender = Sender::new(
            Duration::from_secs(5),
            Arc::new(DestinationPolicy::permissive()),
            8,
            None,
        )?;
        let url = answer_once(
            "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 120\r\nContent-Length: 21\r\n\r\nbusy, come back later",
        )
        .await?;
        let report = sender.send(&mut delivery(&url), 0).await;
        assert_eq!(
            report.outcome,
            DeliveryOutcome::Rejected {
                status: 503,
                retry_after: Some(Duration::from_secs(120))
            }
        );
        assert_eq!(report.response_excerpt.as_deref(), Some("busy, co"));
        Ok(())
    }

    #[tokio::test]
    async fn does_not_follow_redirects_and_410_means_gone() -> Result<(), Box<dyn std::error::Error>> {
        let sender = Sender::new(
            Duration::from_secs(5),
            Arc::new(DestinationPolicy::permissive()),
            1024,
            None,
        )?;
        let url =
            answer_once("HTTP/1.1 302 Found\r\nLocation: http://169.254.169.254/\r\nContent-Length: 0\r\n\r\n").await?;
        let report = sender.send(&mut delivery(&url), 0).await;
        assert_eq!(
            report.outcome,
            DeliveryOutcome::Rejected {
                status: 302,
                retry_after: None
            }
        );
        let url = answer_once("HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n").await?;
        assert_eq!(sender.send(&mut delivery(&url), 0).await.outcome, DeliveryOutcome::Gone);
        Ok(())
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connection_failure() -> Result<(), Box<dyn std::error::Error>> {
        let sender = Sender::new(
            Duration::from_secs(5),
            Arc::new(DestinationPolicy::permissive()),
            1024,
            None,
        )?;
        let (listener, url) = listener().await?;
        drop(listener);
        let report = sender.send(&mut delivery(&url), 0).await;
        assert_eq!(report.outcome, DeliveryOutcome::ConnectionFailed);
        assert!(
            report.error.is_some_and(|e| !e.contains(&url)),
            "errors do not echo the URL"
        );
        Ok(())
    }
}
