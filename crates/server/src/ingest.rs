//! The ingest writer: the one task that writes what ingress accepts.
//!
//! Requests hand it an [`IngestRequest`] over a channel and wait. It takes everything pending (up to a
//! bound), writes it all in one transaction, commits once, answers every waiter, and wakes the
//! dispatcher. Under load one fsync serves hundreds of webhooks (group commit); a request is
//! acknowledged to Meta only after the commit that holds it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pagewire_core::Clock;
use pagewire_store::{IngestReceipt, IngestRequest, Store, StoreError};
use tokio::sync::{mpsc, oneshot, Mutex, Notify};
use tokio::task::{JoinHandle, JoinSet};

/// Bounds of one group commit.
#[derive(Debug, Clone, Copy)]
pub struct IngestConfig {
    /// Requests waiting for the writer; beyond it, webhooks are refused with 503 (load shedding).
    pub queue: usize,
    /// Most requests in one transaction.
    pub max_requests: usize,
    /// Most events in one transaction (a batch always takes at least one request).
    pub max_events: usize,
    /// Webhook requests handled at once (reading, verifying, waiting for their commit); beyond,
    /// requests are refused with 503 before their body is read.
    pub max_in_flight: usize,
    /// Transactions written at once, each taking the next batch from the queue: 1 for SQLite (one
    /// connection writes); more lets a PostgreSQL node fill a batch while another commits.
    pub writers: usize,
    /// How long a batch waits for more requests when the previous commit has just ended (under
    /// load); zero: never.
    pub linger: Duration,
    /// Requests after which a lingering batch stops waiting and commits: a batch this large
    /// already keeps up, and its requests' clients (Meta's senders) wait for it to send more.
    pub linger_requests: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            queue: 4096,
            max_requests: 512,
            max_events: 20_000,
            max_in_flight: 512,
            writers: 1,
            linger: Duration::from_millis(1),
            linger_requests: 64,
        }
    }
}

/// Why a request could not be written.
#[derive(Debug, Clone, thiserror::Error)]
pub enum IngestError {
    #[error("the ingest writer has stopped")]
    Stopped,
    /// The writer's queue is full: the node takes no more until it has written what it holds.
    #[error("the ingest queue is full")]
    Overloaded,
    #[error("writing the batch failed: {0}")]
    Store(Arc<StoreError>),
}

type Reply = oneshot::Sender<Result<IngestReceipt, IngestError>>;

/// The handle requests use to submit work. Cloning is cheap; the writer stops when every handle is
/// dropped, after writing what was submitted.
#[derive(Debug, Clone)]
pub struct IngestWriter {
    tx: mpsc::Sender<(IngestRequest, Reply)>,
}

impl IngestWriter {
    /// Starts the writer task. `wake` is notified after every commit that created deliveries.
    pub fn spawn(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        wake: Arc<Notify>,
        config: IngestConfig,
    ) -> (Self, JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(config.queue.max(1));
        let rx = Arc::new(Mutex::new(rx));
        let task = tokio::spawn(async move {
            // Dropping (or aborting) the set stops every writer.
            let mut writers = JoinSet::new();
            for _ in 0..config.writers.max(1) {
                writers.spawn(run(
                    Arc::clone(&rx),
                    Arc::clone(&store),
                    Arc::clone(&clock),
                    Arc::clone(&wake),
                    config,
                ));
            }
            while writers.join_next().await.is_some() {}
        });
        (Self { tx }, task)
    }

    /// Writes `request` and waits for its commit. A full queue refuses at once instead of
    /// waiting: under overload the node sheds load (Meta sends again later) rather than holding
    /// ever more requests in memory while each waits longer.
    pub async fn submit(&self, request: IngestRequest) -> Result<IngestReceipt, IngestError> {
        let (reply, answer) = oneshot::channel();
        self.tx.try_send((request, reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => IngestError::Overloaded,
            mpsc::error::TrySendError::Closed(_) => IngestError::Stopped,
        })?;
        answer.await.map_err(|_| IngestError::Stopped)?
    }
}

async fn run(
    rx: Arc<Mutex<mpsc::Receiver<(IngestRequest, Reply)>>>,
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    config: IngestConfig,
) {
    let mut requests = Vec::with_capacity(config.max_requests);
    let mut replies = Vec::with_capacity(config.max_requests);
    let mut last_commit: Option<Instant> = None;
    loop {
        // One writer at a time takes a batch: everything pending, up to the bounds.
        let mut events = 0;
        {
            let mut rx = rx.lock().await;
            let Some((first, reply)) = rx.recv().await else {
                break;
            };
            // Under load (the previous commit has just ended), a batch waits up to `linger` for
            // more requests: every commit writes the last page of each index and syncs, so a
            // stream of commits of a request or two costs several times the pages per webhook
            // and falls behind. When idle, a request is written at once. It stops waiting once it
            // holds `linger_requests`, and then takes only what is already queued: the clients
            // of a full batch send nothing more until it is acknowledged, so waiting out the
            // linger only held them (and the timer's millisecond grain made it 1-2 ms).
            let linger_until = last_commit
                .filter(|at| !config.linger.is_zero() && at.elapsed() < config.linger)
                .map(|_| tokio::time::Instant::now() + config.linger);
            events += first.events.len();
            requests.push(first);
            replies.push(reply);
            while requests.len() < config.max_requests && events < config.max_events {
                let next = match rx.try_recv() {
                    Ok(next) => next,
                    Err(mpsc::error::TryRecvError::Empty) => match linger_until {
                        Some(until) if requests.len() < config.linger_requests => {
                            match tokio::time::timeout_at(until, rx.recv()).await {
                                Ok(Some(next)) => next,
                                _ => break,
                            }
                        }
                        _ => break,
                    },
                    Err(mpsc::error::TryRecvError::Disconnected) => break,
                };
                let (request, reply) = next;
                events += request.events.len();
                requests.push(request);
                replies.push(reply);
            }
        }

        let started = std::time::Instant::now();
        let mut waiting: Vec<Option<Reply>> = replies.drain(..).map(Some).collect();
        let deliveries = write(store.as_ref(), clock.as_ref(), &requests, &mut waiting).await;
        tracing::debug!(
            requests = requests.len(),
            events,
            deliveries,
            elapsed_ms = started.elapsed().as_millis(),
            "ingest batch written"
        );
        if deliveries > 0 {
            wake.notify_one();
        }
        last_commit = Some(Instant::now());
        requests.clear();
    }
    tracing::debug!("ingest writer stopped");
}

/// Writes a batch and answers each of its requests; returns how many deliveries were created.
///
/// A batch holds many tenants' webhooks, so one request that the database refuses (a reference to
/// an endpoint deleted meanwhile, a value it cannot store) must not fail the others: a batch that
/// fails is written again in halves, down to single requests, and only the requests that fail on
/// their own are refused. A store that is unavailable fails the whole batch at once, as another
/// try would only add to its load. A failed write commits nothing, so nothing is written twice.
async fn write(
    store: &dyn Store,
    clock: &dyn Clock,
    requests: &[IngestRequest],
    replies: &mut [Option<Reply>],
) -> usize {
    let mut deliveries = 0;
    // The ranges still to write, the next on top.
    let mut ranges: Vec<std::ops::Range<usize>> = Vec::with_capacity(8);
    ranges.push(0..requests.len());
    while let Some(range) = ranges.pop() {
        match store.ingest(&requests[range.clone()], clock.now_ms()).await {
            Ok(receipts) => {
                for (index, receipt) in range.zip(receipts) {
                    deliveries += receipt.deliveries;
                    // A waiter that went away (client disconnected) still had its data committed.
                    if let Some(reply) = replies[index].take() {
                        let _ = reply.send(Ok(receipt));
                    }
                }
            }
            Err(err) if range.len() > 1 && !matches!(err, StoreError::Unavailable(_)) => {
                tracing::warn!(error = %err, requests = range.len(), "ingest batch failed; writing it again in halves");
                let middle = range.start + range.len() / 2;
                ranges.push(middle..range.end);
                ranges.push(range.start..middle);
            }
            Err(err) => {
                tracing::error!(
                    error = %err,
                    cause = std::error::Error::source(&err).map(tracing::field::display),
                    requests = range.len(),
                    "ingest failed; these webhooks were not acknowledged"
                );
                let err = Arc::new(err);
                for index in range {
                    if let Some(reply) = replies[index].take() {
                        let _ = reply.send(Err(IngestError::Store(Arc::clone(&err))));
                    }
                }
            }
        }
    }
    deliveries
}
