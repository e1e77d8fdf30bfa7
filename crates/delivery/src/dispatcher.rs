//! The dispatcher loop: lease, send, record, sleep until woken.

use std::sync::Arc;
use std::time::Duration;

use pagewire_core::{Clock, RetryPolicy};
use pagewire_store::{AttemptRecord, Lease, LeasedDelivery, Store, StoreError};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::sender::{SendReport, Sender};

/// How deliveries are sent and retried.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Requests in flight at once, over all endpoints; also the most deliveries leased per round.
    pub concurrency: usize,
    /// Most deliveries of one endpoint per round. They are sent one after another, so this also
    /// bounds how long a round can take.
    pub per_endpoint_per_round: u32,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// How often the store is polled when nothing wakes the dispatcher (another node's work, retries
    /// that come due).
    pub poll_interval: Duration,
    /// Bytes of each answer kept in the attempt log.
    pub excerpt_limit: usize,
    /// Refuse loopback and private destinations unless true.
    pub allow_private: bool,
    pub retry: RetryPolicy,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            per_endpoint_per_round: 8,
            request_timeout: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            excerpt_limit: 8 * 1024,
            allow_private: false,
            retry: RetryPolicy::default(),
        }
    }
}

impl DeliveryConfig {
    /// A lease outlives the longest round it can be part of (one endpoint's deliveries, sent one
    /// after another) by a wide margin, so that only a dead worker loses one.
    fn lease_ms(&self) -> i64 {
        let round = self.request_timeout.saturating_mul(self.per_endpoint_per_round.max(1));
        i64::try_from((round + self.request_timeout + Duration::from_secs(30)).as_millis()).unwrap_or(i64::MAX)
    }
}

/// Leases due deliveries and sends them. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    sender: Sender,
    clock: Arc<dyn Clock>,
    config: Arc<DeliveryConfig>,
    wake: Arc<Notify>,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: DeliveryConfig) -> Result<Self, reqwest::Error> {
        let sender = Sender::new(config.request_timeout, config.allow_private, config.excerpt_limit)?;
        Ok(Self {
            store,
            sender,
            clock,
            config: Arc::new(config),
            wake: Arc::new(Notify::new()),
        })
    }

    /// The handle ingress uses to wake the dispatcher after a commit.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.wake)
    }

    /// One round: leases up to `concurrency` due deliveries, sends them concurrently, records every
    /// attempt in one write. Returns how many were sent.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let lease = Lease {
            now: self.clock.now_ms(),
            limit: u32::try_from(self.config.concurrency.max(1)).unwrap_or(u32::MAX),
            per_endpoint: self.config.per_endpoint_per_round,
            lease_ms: self.config.lease_ms(),
        };
        let leased = self.store.lease_due(lease).await?;
        if leased.is_empty() {
            return Ok(0);
        }
        let count = leased.len();
        // Deliveries of one endpoint go one after another, in the order they were leased (the order
        // of their events); different endpoints are served concurrently, so a slow one delays only
        // itself.
        let mut by_endpoint: Vec<Vec<LeasedDelivery>> = Vec::new();
        let mut slot: std::collections::HashMap<pagewire_core::EndpointId, usize> = std::collections::HashMap::new();
        for delivery in leased {
            let index = *slot.entry(delivery.endpoint_id.clone()).or_insert_with(|| {
                by_endpoint.push(Vec::new());
                by_endpoint.len() - 1
            });
            by_endpoint[index].push(delivery);
        }
        let mut sends = JoinSet::new();
        for queue in by_endpoint {
            let sender = self.sender.clone();
            let clock = Arc::clone(&self.clock);
            sends.spawn(async move {
                let mut done = Vec::with_capacity(queue.len());
                for delivery in queue {
                    let started_at = clock.now_ms();
                    let report = sender.send(&delivery, started_at).await;
                    done.push((delivery, started_at, report));
                }
                done
            });
        }
        let mut records = Vec::with_capacity(count);
        while let Some(joined) = sends.join_next().await {
            match joined {
                Ok(done) => records.extend(
                    done.into_iter()
                        .map(|(delivery, started_at, report)| self.decide(delivery, started_at, report)),
                ),
                // The lease expires and another round sends it again.
                Err(e) => tracing::error!(error = %e, "a delivery task failed"),
            }
        }
        self.store.record_attempts(&records, self.clock.now_ms()).await?;
        Ok(count)
    }

    /// Runs rounds until nothing is due now. For tests and tools that drive delivery by hand.
    pub async fn drain(&self) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let sent = self.run_once().await?;
            if sent == 0 {
                return Ok(total);
            }
            total += sent;
        }
    }

    fn decide(&self, delivery: LeasedDelivery, started_at: i64, report: SendReport) -> AttemptRecord {
        let attempt = delivery.attempts.saturating_add(1);
        let next = self
            .config
            .retry
            .next_step(attempt, &report.outcome, self.clock.now_ms(), rand::random::<f64>());
        tracing::info!(
            delivery_id = %delivery.id,
            event_id = %delivery.event_id,
            endpoint_id = %delivery.endpoint_id,
            attempt,
            outcome = report.outcome.label(),
            status = report.status_code,
            duration_ms = report.duration_ms,
            next = ?next,
            "delivery attempt"
        );
        AttemptRecord {
            delivery_id: delivery.id,
            endpoint_id: delivery.endpoint_id,
            lease_seq: delivery.lease_seq,
            attempt,
            started_at,
            duration_ms: report.duration_ms,
            status_code: report.status_code,
            outcome: report.outcome.label(),
            error: report.error,
            response_excerpt: report.response_excerpt,
            next,
        }
    }

    /// Delivers until `shutdown` is cancelled: a round whenever ingress wakes it, and at least every
    /// `poll_interval`. On shutdown it stops leasing and lets the round in flight finish; leases left
    /// unrecorded expire and are sent again.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(concurrency = self.config.concurrency, "dispatcher started");
        let mut backoff = Duration::from_millis(100);
        loop {
            if shutdown.is_cancelled() {
                break;
            }
            match self.run_once().await {
                Ok(sent) if sent > 0 => {
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis(), "dispatcher round failed");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        tracing::info!("dispatcher stopped");
    }
}
