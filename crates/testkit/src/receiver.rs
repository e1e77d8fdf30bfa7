//! A customer endpoint for tests: records every request, checks its Standard Webhooks signature with
//! the `standardwebhooks` crate (an implementation Pagewire did not write), and answers with a
//! scripted status.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::sync::Notify;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The status the receiver answered.
    pub answered: u16,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Verifies the request with `standardwebhooks`, timestamp tolerance included.
    pub fn verify(&self, secret: &str) -> Result<(), String> {
        let webhook = standardwebhooks::Webhook::new(secret).map_err(|e| e.to_string())?;
        webhook.verify(&self.body, &self.headers).map_err(|e| e.to_string())
    }

    /// Checks the signature with `standardwebhooks` without its five-minute timestamp window, for
    /// tests that move the gateway's clock days ahead.
    pub fn verify_signature_only(&self, secret: &str) -> Result<(), String> {
        let webhook = standardwebhooks::Webhook::new(secret).map_err(|e| e.to_string())?;
        let id = self.header("webhook-id").ok_or("no webhook-id")?;
        let timestamp: i64 = self
            .header("webhook-timestamp")
            .and_then(|t| t.parse().ok())
            .ok_or("no webhook-timestamp")?;
        let expected = webhook.sign(id, timestamp, &self.body).map_err(|e| e.to_string())?;
        let given = self.header("webhook-signature").ok_or("no webhook-signature")?;
        if given.split(' ').any(|s| s == expected) {
            Ok(())
        } else {
            Err(String::from("signature mismatch"))
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<u16>>,
    /// Standard Webhooks bodies that break the event contract in `openapi.yaml`.
    violations: Mutex<Vec<String>>,
    /// After the script: fail this share of requests with 503, drawn from a seeded generator.
    random_failures: Mutex<Option<(f64, rand::rngs::StdRng)>>,
    arrived: Notify,
}

impl Inner {
    fn received(&self) -> MutexGuard<'_, Vec<Received>> {
        self.received.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn script(&self) -> MutexGuard<'_, VecDeque<u16>> {
        self.script.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A recording HTTP endpoint on 127.0.0.1. It stops when dropped.
#[derive(Debug)]
pub struct Receiver {
    url: String,
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver that answers 200 unless scripted otherwise.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/hook", listener.local_addr()?);
        let inner = Arc::new(Inner::default());
        let app = Router::new()
            .route("/hook", post(record))
            .with_state(Arc::clone(&inner));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, inner, task })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers the next requests with these statuses, in order; 200 after that.
    pub fn respond_with(&self, statuses: impl IntoIterator<Item = u16>) {
        self.inner.script().extend(statuses);
    }

    /// After the script, answers 503 to a `ratio` of requests at random (reproducibly, from
    /// `seed`) and 200 to the rest.
    pub fn fail_randomly(&self, ratio: f64, seed: u64) {
        use rand::SeedableRng;
        *self
            .inner
            .random_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((ratio, rand::rngs::StdRng::seed_from_u64(seed)));
    }

    /// Everything received so far. Panics if an event broke the contract.
    pub fn received(&self) -> Vec<Received> {
        self.assert_contract();
        self.inner.received().clone()
    }

    /// Every event the receiver got (Standard Webhooks format) is checked against the event
    /// schema of `openapi.yaml` as it arrives; this panics with the violations, if any.
    pub fn assert_contract(&self) {
        let violations = self
            .inner
            .violations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        assert!(
            violations.is_empty(),
            "events broke the contract in openapi.yaml:\n{}",
            violations.join("\n")
        );
    }

    /// Waits until at least `n` requests have arrived, or panics after `deadline`.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> Vec<Received> {
        let waited = tokio::time::timeout(deadline, async {
            loop {
                let notified = self.inner.arrived.notified();
                {
                    let received = self.inner.received();
                    if received.len() >= n {
                        return received.clone();
                    }
                }
                notified.await;
            }
        })
        .await;
        self.assert_contract();
        match waited {
            Ok(received) => received,
            Err(_) => panic!(
                "the receiver got {} requests within {deadline:?}, expected {n}",
                self.inner.received().len()
            ),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn check_contract(inner: &Inner, body: &[u8]) {
    let verdict = match (
        crate::contract::EventContract::load(),
        serde_json::from_slice::<Value>(body),
    ) {
        (Ok(contract), Ok(event)) => contract.validate(&event).map_err(|e| format!("{e}\nin {event}")),
        (Err(e), _) => Err(format!("the contract did not load: {e}")),
        (_, Err(e)) => Err(format!("the body is not JSON: {e}")),
    };
    if let Err(violation) = verdict {
        inner
            .violations
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(violation);
    }
}

/// Answers the scripted status with a short body naming it, which the gateway keeps as the
/// response excerpt of the attempt.
async fn record(State(inner): State<Arc<Inner>>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    if headers.contains_key("webhook-id") {
        check_contract(&inner, &body);
    }
    let scripted = inner.script().pop_front();
    let answered = scripted.unwrap_or_else(|| {
        use rand::Rng;
        let mut random = inner
            .random_failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let fail = random
            .as_mut()
            .is_some_and(|(ratio, rng)| rng.gen_bool(ratio.clamp(0.0, 1.0)));
        if fail {
            503
        } else {
            200
        }
    });
    inner.received().push(Received {
        headers,
        body,
        answered,
    });
    inner.arrived.notify_waiters();
    (
        StatusCode::from_u16(answered).unwrap_or(StatusCode::OK),
        format!("receiver answered {answered}"),
    )
}
