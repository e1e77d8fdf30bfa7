//! The ingest scenarios: signed one-item Meta webhooks (about 1 KiB, non-ASCII text) for many Pages
//! of several tenants, sent to a node that only ingests, closed-loop at maximum or open-loop at a
//! fixed rate. Every acknowledgement's latency goes into an HDR histogram; in open loop it is
//! measured from the moment the request was due, not sent, so a stalled gateway cannot hide its
//! stall (no coordinated omission).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// Makes unique, signed one-item bodies cheaply: the body of each Page is built once with the
/// simulator and only the message id changes.
pub struct Bodies {
    templates: Vec<(String, String)>,
    secret: Vec<u8>,
    next: AtomicU64,
}

const MARKER: &str = "MIDMARKER";

impl Bodies {
    pub fn new(pages: &[String], secret: &str) -> Self {
        // About 900 bytes of text with non-ASCII, as chat messages are.
        let text = "Hej! Ich möchte meine Bestellung ändern, bitte 🙏 ".repeat(17);
        let templates = pages
            .iter()
            .map(|page| {
                let item = pagewire_testkit::Kind::Message.item(page, "6100000000000001", 1_747_231_892_100, &text, 0);
                let mut item = item;
                item["message"]["mid"] = serde_json::Value::from(MARKER);
                let body = pagewire_testkit::MetaBody::page()
                    .messaging(page, 1_747_231_892_100, vec![item])
                    .to_bytes();
                let body = String::from_utf8_lossy(&body).into_owned();
                let (head, tail) = body.split_once(MARKER).unwrap_or((&body, ""));
                (head.to_owned(), tail.to_owned())
            })
            .collect();
        Self {
            templates,
            secret: secret.as_bytes().to_vec(),
            next: AtomicU64::new(0),
        }
    }

    /// The next body and its `X-Hub-Signature-256`.
    pub fn next(&self) -> (Bytes, String) {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (head, tail) = &self.templates[usize::try_from(n).unwrap_or(0) % self.templates.len()];
        let body = format!("{head}m_bench{n:012}{tail}");
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!());
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        (Bytes::from(body), signature)
    }

    pub fn len(&self) -> usize {
        self.templates.first().map_or(0, |(h, t)| h.len() + t.len() + 20)
    }
}

/// What one ingest run measured.
#[derive(Debug, Serialize)]
pub struct IngestReport {
    pub name: String,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_second: f64,
    pub body_bytes: usize,
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_p999_ms: f64,
    pub ack_max_ms: f64,
    pub peak_rss_mb: Option<f64>,
}

struct Tally {
    histogram: Mutex<Histogram<u64>>,
    ok: AtomicU64,
    errors: AtomicU64,
}

impl Tally {
    fn new() -> Self {
        Self {
            histogram: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|_| unreachable!())),
            ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    fn record(&self, latency: Duration, ok: bool) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        if let Ok(mut h) = self.histogram.lock() {
            let _ = h.record(micros.min(60_000_000));
        }
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn report(&self, name: String, seconds: f64, body_bytes: usize) -> IngestReport {
        let h = self
            .histogram
            .lock()
            .map(|h| h.clone())
            .unwrap_or_else(|e| e.into_inner().clone());
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let requests = self.ok.load(Ordering::Relaxed);
        IngestReport {
            name,
            seconds,
            requests,
            errors: self.errors.load(Ordering::Relaxed),
            requests_per_second: requests as f64 / seconds,
            body_bytes,
            ack_p50_ms: ms(0.5),
            ack_p99_ms: ms(0.99),
            ack_p999_ms: ms(0.999),
            ack_max_ms: h.max() as f64 / 1000.0,
            peak_rss_mb: None,
        }
    }
}

async fn send(client: &reqwest::Client, url: &str, bodies: &Bodies) -> bool {
    let (body, signature) = bodies.next();
    client
        .post(url)
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature)
        .body(body)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// As fast as `connections` requests in flight allow, for `duration`.
pub async fn closed_loop(url: &str, bodies: Arc<Bodies>, connections: usize, duration: Duration) -> IngestReport {
    let client = reqwest::Client::new();
    let tally = Arc::new(Tally::new());
    let started = Instant::now();
    let end = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections.max(1) {
        let (client, url, bodies, tally) = (client.clone(), url.to_owned(), Arc::clone(&bodies), Arc::clone(&tally));
        tasks.spawn(async move {
            while Instant::now() < end {
                let sent = Instant::now();
                let ok = send(&client, &url, &bodies).await;
                tally.record(sent.elapsed(), ok);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    tally.report(
        format!("closed loop, {connections} in flight"),
        started.elapsed().as_secs_f64(),
        bodies.len(),
    )
}

/// `rate` requests per second for `duration`, each on its schedule whatever the answers do;
/// latency counts from when a request was due.
pub async fn open_loop(url: &str, bodies: Arc<Bodies>, rate: u64, duration: Duration) -> IngestReport {
    let client = reqwest::Client::new();
    let tally = Arc::new(Tally::new());
    let started = tokio::time::Instant::now();
    let total = rate.saturating_mul(duration.as_secs()).max(1);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..total {
        let due = started + interval.mul_f64(n as f64);
        tokio::time::sleep_until(due).await;
        let (client, url, bodies, tally) = (client.clone(), url.to_owned(), Arc::clone(&bodies), Arc::clone(&tally));
        tasks.spawn(async move {
            let ok = send(&client, &url, &bodies).await;
            tally.record(due.elapsed(), ok);
        });
        // Reap finished tasks now and then so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
    tally.report(
        format!("open loop, {rate} webhooks/s"),
        started.elapsed().as_secs_f64(),
        bodies.len(),
    )
}
