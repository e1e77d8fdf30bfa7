//! The harness's endpoints: a receiver that verifies every Standard Webhooks signature and counts
//! every event id, so loss and duplicates are measured; one that accepts
//! connections and never answers; and an address where nothing listens.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Router;
use base64::Engine as _;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::ingest::{body_number, Timeline};
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Counts {
    ids: HashSet<String>,
    duplicated: u64,
}

#[derive(Default)]
struct Shared {
    counts: Mutex<Counts>,
    arrived: Notify,
    mode: Mode,
    requests: std::sync::atomic::AtomicU64,
    /// The signing keys of the endpoints that send here: every request must verify with one.
    keys: RwLock<Vec<Hmac<Sha256>>>,
    bad_signatures: std::sync::atomic::AtomicU64,
    /// When each body was sent, and the ingest-to-customer latencies (µs) measured against it.
    timeline: OnceLock<Arc<Timeline>>,
    latencies: Mutex<Option<Histogram<u64>>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// How the receiver answers.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub enum Mode {
    /// 200 at once.
    #[default]
    Fast,
    /// 200 after a fixed delay.
    Slow(Duration),
    /// 500 for every `n`th request (the event then comes again), 200 otherwise.
    Failing(u64),
}

impl std::str::FromStr for Mode {
    type Err = String;

    /// `fast`, `slow:50ms`, `failing:10` (one request in ten answers 500).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once(':') {
            None if s == "fast" => Ok(Self::Fast),
            Some(("slow", ms)) => ms
                .trim_end_matches("ms")
                .parse()
                .map(|ms| Self::Slow(Duration::from_millis(ms)))
                .map_err(|_| format!("`{s}`: expected slow:<milliseconds>ms")),
            Some(("failing", n)) => n
                .parse()
                .ok()
                .filter(|n| *n > 1)
                .map(Self::Failing)
                .ok_or_else(|| format!("`{s}`: expected failing:<n>, n > 1")),
            _ => Err(format!("`{s}`: expected fast, slow:<ms>ms or failing:<n>")),
        }
    }
}

/// Answers as its [`Mode`] says and counts `webhook-id`s of the events it accepted.
#[derive(Debug)]
pub struct Counter {
    url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Counter {
    pub async fn start(mode: Mode) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/events", listener.local_addr()?);
        let shared = Arc::new(Shared {
            mode,
            ..Shared::default()
        });
        let app = Router::new().fallback(count).with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, shared, task })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Accepts requests signed with this endpoint's `whsec_` secret (every request must verify with
    /// one of the secrets given).
    pub fn verify_with(&self, secret: &str) -> anyhow::Result<()> {
        let key = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").context("not a whsec_ secret")?)
            .context("the secret is not base64")?;
        let key = Hmac::<Sha256>::new_from_slice(&key).context("the secret is not an HMAC key")?;
        self.shared
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(key);
        Ok(())
    }

    /// Measures ingest-to-customer latency of every event against when its body was sent.
    pub fn time_with(&self, timeline: Arc<Timeline>) {
        let _ = self.shared.timeline.set(timeline);
        *self.latencies() = Histogram::new_with_bounds(1, 600_000_000, 3).ok();
    }

    /// (p50, p99, p99.9, max) ingest-to-customer latency in milliseconds, if measured.
    pub fn latency_ms(&self) -> Option<(f64, f64, f64, f64)> {
        let latencies = self.latencies();
        let h = latencies.as_ref().filter(|h| !h.is_empty())?;
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        Some((ms(0.5), ms(0.99), ms(0.999), h.max() as f64 / 1000.0))
    }

    fn latencies(&self) -> std::sync::MutexGuard<'_, Option<Histogram<u64>>> {
        self.shared
            .latencies
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Requests whose Standard Webhooks signature did not verify (answered 401, so sent again).
    pub fn bad_signatures(&self) -> u64 {
        self.shared.bad_signatures.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// (unique ids, duplicates) so far.
    pub fn counts(&self) -> (u64, u64) {
        let counts = self
            .shared
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (u64::try_from(counts.ids.len()).unwrap_or(u64::MAX), counts.duplicated)
    }

    /// Waits until `n` distinct events have arrived.
    pub async fn wait_for(&self, n: u64, deadline: Duration) -> Result<(), tokio::time::error::Elapsed> {
        tokio::time::timeout(deadline, async {
            loop {
                let arrived = self.shared.arrived.notified();
                if self.counts().0 >= n {
                    return;
                }
                // Wake now and then even without news, in case a notification raced the check.
                let _ = tokio::time::timeout(Duration::from_millis(50), arrived).await;
            }
        })
        .await
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn count(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let Some(id) = headers.get("webhook-id").and_then(|v| v.to_str().ok()) else {
        return StatusCode::BAD_REQUEST;
    };
    let verified = verify(
        &shared.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner),
        &headers,
        &body,
    );
    if !verified {
        shared.bad_signatures.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let n = shared.requests.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    match shared.mode {
        Mode::Fast => {}
        Mode::Slow(delay) => tokio::time::sleep(delay).await,
        Mode::Failing(every) if n % every == 0 => return StatusCode::INTERNAL_SERVER_ERROR,
        Mode::Failing(_) => {}
    }
    let first = {
        let mut counts = shared.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = counts.ids.insert(id.to_owned());
        if !first {
            counts.duplicated += 1;
        }
        first
    };
    if let (true, Some(timeline)) = (first, shared.timeline.get()) {
        if let Some(latency) = body_number(&body).and_then(|n| timeline.since_sent(n)) {
            let micros = u64::try_from(latency.as_micros())
                .unwrap_or(u64::MAX)
                .clamp(1, 600_000_000);
            if let Some(h) = shared
                .latencies
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_mut()
            {
                let _ = h.record(micros);
            }
        }
    }
    shared.arrived.notify_waiters();
    StatusCode::OK
}

/// Checks a Standard Webhooks `v1` signature: HMAC-SHA256 over `id.timestamp.body`, base64, against
/// each signature the request carries. (The tests check Pagewire's signatures with the
/// `standardwebhooks` crate; here a lean check with keys prepared once keeps the receiver's share of
/// the machine small.)
fn verify(keys: &[Hmac<Sha256>], headers: &HeaderMap, body: &[u8]) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    keys.iter().any(|key| {
        let mut mac = key.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.as_bytes());
        mac.update(b".");
        mac.update(body);
        let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        signatures
            .split(' ')
            .filter_map(|s| s.strip_prefix("v1,"))
            .any(|s| s == expected)
    })
}

/// Accepts connections and holds them open without answering.
#[derive(Debug)]
pub struct HangingEndpoint {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl HangingEndpoint {
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        Ok(Self { url, task })
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for HangingEndpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address where nothing listens: every connection is refused.
pub async fn down_url() -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    drop(listener);
    Ok(format!("http://{addr}/hook"))
}
