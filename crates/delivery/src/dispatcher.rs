//! The dispatcher: lease due deliveries, send each through its endpoint's lane, record outcomes.
//!
//! Every endpoint has a lane: a FIFO queue worked by at most `max_concurrency` tasks, paced by the
//! endpoint's rate limit, each request also holding one permit of the global bound. A slow or dead
//! endpoint fills only its own lane: leasing counts what each lane holds against the endpoint's
//! share (`per_endpoint_rounds` rounds of its concurrency), so it never hoards deliveries it cannot
//! start. A lane asks for more while it still has several rounds queued, so a fast endpoint's
//! requests never wait for a lease. Lanes exist only while they have work.
//!
//! Outcomes flow back to the dispatcher loop, which writes them in batches (attempt log, next
//! step, endpoint health) in the same transaction as the next lease; what a lease took is read
//! beside the writer while the next transaction runs. Up to [`WRITERS`] rounds write at once (one
//! of them leasing at most), so that a store that runs writers side by side (PostgreSQL) records a
//! batch while another commits. Leases are committed before anything is sent; a worker that dies
//! leaves leases that expire, and the deliveries are sent again (at least once).

use std::collections::{HashMap, VecDeque};
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use pagewire_core::{Clock, DeliveryControls, EndpointId, HealthPolicy, NextStep, OperationalEvent, RetryPolicy};
use pagewire_store::{AttemptRecord, HealthReport, Lease, Leased, LeasedDelivery, Store, StoreError};
use tokio::sync::{mpsc, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::proxy::DeliveryProxy;
use crate::sender::{SendReport, Sender};
use crate::ssrf::DestinationPolicy;

/// Most attempts recorded in one transaction.
const RECORD_BATCH: usize = 1024;
/// How long the dispatcher gathers outcomes before writing them (unless a lease goes first).
const RECORD_GATHER: Duration = Duration::from_millis(5);
/// Rounds writing at once. On PostgreSQL each is a transaction of its own on its own connection,
/// and a round's statements run on one server process: one round at a time left the server's
/// other cores idle while the dispatcher waited on it (`docs/benchmarks.md`). SQLite has one
/// writer: the second round waits for the first to commit, its batch already gathered.
const WRITERS: usize = 2;

/// How deliveries are sent and retried.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Requests in flight at once, over all endpoints.
    pub concurrency: usize,
    /// How many rounds of its own concurrency one endpoint may have leased (in flight or queued).
    /// A lane asks for more with this many less two rounds still queued: the transaction ahead of
    /// the lease, the lease and its read then finish before a fast endpoint's queue runs dry (each
    /// took up to 20-25 ms on SQLite at 25,000 deliveries a second; at 10 and 256 in flight, 2,048
    /// deliveries of slack: 80 ms). It also sets how long a lease lasts (see `lease_ms`).
    pub per_endpoint_rounds: u32,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// How often the store is polled when nothing wakes the dispatcher (another node's work,
    /// retries that come due).
    pub poll_interval: Duration,
    /// Bytes of each answer kept in the attempt log.
    pub excerpt_limit: usize,
    /// Where customer URLs may point.
    pub destinations: Arc<DestinationPolicy>,
    /// The operator's forward proxy, if deliveries must go through one. Proxies named in the
    /// environment (`HTTP_PROXY`, …) are never used.
    pub proxy: Option<DeliveryProxy>,
    pub retry: RetryPolicy,
    pub health: HealthPolicy,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            concurrency: 512,
            per_endpoint_rounds: 10,
            request_timeout: Duration::from_secs(15),
            poll_interval: Duration::from_secs(1),
            excerpt_limit: 8 * 1024,
            destinations: Arc::default(),
            proxy: None,
            retry: RetryPolicy::default(),
            health: HealthPolicy::default(),
        }
    }
}

impl DeliveryConfig {
    /// A lease outlives the longest wait a leased delivery can have in its lane (its rounds, one
    /// request timeout each) plus the request itself, with a margin: only a dead worker loses one.
    fn lease_ms(&self) -> i64 {
        let waits = self.request_timeout.saturating_mul(self.per_endpoint_rounds.max(1) + 1);
        i64::try_from((waits + Duration::from_secs(30)).as_millis()).unwrap_or(i64::MAX)
    }
}

/// Leases due deliveries and sends them. Cheap to clone; clones share lanes and bounds.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    sender: Sender,
    clock: Arc<dyn Clock>,
    config: DeliveryConfig,
    wake: Arc<Notify>,
    global: Arc<Semaphore>,
    lanes: Mutex<HashMap<EndpointId, Arc<Lane>>>,
    /// Signalled (all waiters) whenever a lane finishes a delivery or retires.
    progress: Notify,
    /// Signalled (one permit kept) whenever a lane has worked off a round of its queue
    /// ([`Lane::asks_for_more`]): the lease loop's cue that there is room again. (Waking on every
    /// delivery would run a lease per delivery.)
    room: Notify,
    results: mpsc::UnboundedSender<AttemptRecord>,
    outcomes: tokio::sync::Mutex<mpsc::UnboundedReceiver<AttemptRecord>>,
}

/// One endpoint's queue and pacing.
struct Lane {
    state: Mutex<LaneState>,
    max_workers: u32,
    /// The queue length at which the lane starts asking for more: with this many queued and at
    /// most `max_workers` in flight, a whole round of its share is free to lease. It asks again at
    /// every round it works off after that, so that while one lease is under way the next is
    /// wanted, and a fast endpoint's queue is topped up before it runs dry.
    refill_at: usize,
    limiter: Option<DefaultDirectRateLimiter>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane")
            .field("max_workers", &self.max_workers)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default)]
struct LaneState {
    queue: VecDeque<LeasedDelivery>,
    workers: u32,
}

impl Lane {
    fn new(controls: DeliveryControls, rounds: u32) -> Self {
        let limiter = controls
            .rate_limit
            .and_then(NonZeroU32::new)
            .map(|per_second| RateLimiter::direct(Quota::per_second(per_second)));
        let max_workers = controls.max_concurrency.clamp(1, DeliveryControls::MAX_CONCURRENCY);
        Self {
            state: Mutex::new(LaneState::default()),
            max_workers,
            refill_at: rounds.saturating_sub(2) as usize * max_workers as usize,
            limiter,
        }
    }

    fn state(&self) -> MutexGuard<'_, LaneState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether the lane asks to be leased again, `left` deliveries still queued: at `refill_at`
    /// and at every round below it, down to empty.
    fn asks_for_more(&self, left: usize) -> bool {
        left <= self.refill_at && left.is_multiple_of(self.max_workers as usize)
    }
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: DeliveryConfig) -> Result<Self, reqwest::Error> {
        let sender = Sender::new(
            config.request_timeout,
            Arc::clone(&config.destinations),
            config.excerpt_limit,
            config.proxy.as_ref(),
        )?;
        let (results, outcomes) = mpsc::unbounded_channel();

        Ok(Self {
            inner: Arc::new(Inner {
                store,
                sender,
                clock,
                global: Arc::new(Semaphore::new(config.concurrency.max(1))),
                config,
                wake: Arc::new(Notify::new()),
                lanes: Mutex::new(HashMap::new()),
                progress: Notify::new(),
                room: Notify::new(),
                results,
                outcomes: tokio::sync::Mutex::new(outcomes),
            }),
        })
    }

    /// The handle ingress uses to wake the dispatcher after a commit.
    pub fn waker(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.wake)
    }

    /// One round, waited for: leases what is due, sends it through the lanes, records every
    /// outcome. Returns how many deliveries were attempted. For tests and tools that drive
    /// delivery by hand; do not mix with [`Dispatcher::run`].
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let leased = self.inner.lease(self.inner.config.concurrency).await?;
        let count = leased.len();
        if count == 0 {
            return Ok(0);
        }
        for delivery in leased {
            self.inner.dispatch(delivery);
        }
        let mut outcomes = self.inner.outcomes.lock().await;
        let mut records = Vec::with_capacity(count);
        while records.len() < count {
            match outcomes.recv().await {
                Some(record) => records.push(record),
                None => break,
            }
        }
        drop(outcomes);
        self.inner.record(&records).await?;
        Ok(count)
    }

    /// Runs rounds until nothing is due at the clock's current time.
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

    /// Delivers until `shutdown` is cancelled. Each round is one store transaction that records
    /// the outcomes gathered so far, leases what is due (when a lane has room, ingress woke it, or
    /// `poll_interval` passed), or both (where the store's writes take turns); what a round
    /// leased is then read beside the writer while the next round records, so the writer never
    /// waits for those reads. One round leases at a time, and what the leases still being read
    /// hold counts against each endpoint's share as what its lane holds does; so the next lease
    /// need not wait for the last one's read. On shutdown it stops leasing, lets requests in
    /// flight finish within one request timeout, and records their outcomes; deliveries leased and
    /// not yet started keep their leases, which expire, and are sent again later.
    pub async fn run(self, shutdown: CancellationToken) {
        let inner = Arc::clone(&self.inner);
        tracing::info!(concurrency = inner.config.concurrency, "dispatcher started");
        let mut outcomes = inner.outcomes.lock().await;
        let backlog_limit =
            inner.config.concurrency.max(1) * inner.config.per_endpoint_rounds.saturating_sub(1).max(1) as usize;
        let parallel_writes = inner.store.writes_in_parallel();
        let mut backoff = Duration::from_millis(100);
        let mut pending: Vec<AttemptRecord> = Vec::with_capacity(RECORD_BATCH);
        // When the records gathered so far are written even if no round leases.
        let mut gather_until: Option<tokio::time::Instant> = None;
        let mut lease_wanted = true;
        // The rounds writing (each one's task, and whether it leases), and the reads of leases
        // under way (each one's task, and how many deliveries it holds of each endpoint).
        let mut writing: Vec<(tokio::task::Id, bool)> = Vec::with_capacity(WRITERS);
        let mut reading: Vec<(tokio::task::Id, Vec<(EndpointId, u32)>)> = Vec::new();
        let mut stages: JoinSet<Stage> = JoinSet::new();
        let poll = tokio::time::sleep(inner.config.poll_interval);
        let gather = tokio::time::sleep(RECORD_GATHER);
        tokio::pin!(poll, gather);
        while !shutdown.is_cancelled() {
            while pending.len() < RECORD_BATCH {
                match outcomes.try_recv() {
                    Ok(record) => {
                        pending.push(record);
                        gather_until.get_or_insert_with(|| tokio::time::Instant::now() + RECORD_GATHER);
                    }
                    Err(_) => break,
                }
            }
            if writing.len() < WRITERS {
                let leasing = writing.iter().any(|&(_, leases)| leases);
                let being_read: usize = reading
                    .iter()
                    .flat_map(|(_, held)| held)
                    .map(|&(_, n)| n as usize)
                    .sum();
                let room = backlog_limit.saturating_sub(inner.queued().saturating_add(being_read));
                let lease = (lease_wanted && !leasing && room > 0)
                    .then(|| inner.lease_request(room, reading.iter().map(|(_, held)| held.as_slice())));
                // Where writes take turns (SQLite), a lease takes the outcomes gathered so far along:
                // one commit for both. Where they run side by side (PostgreSQL), it goes alone, so
                // that recording them does not hold up what a lane is waiting for; they follow in a
                // round of their own.
                let lease_takes_records = lease.is_some() && !parallel_writes;
                let records_due = !pending.is_empty()
                    && (pending.len() >= RECORD_BATCH
                        || lease_takes_records
                        || gather_until.is_some_and(|until| until <= tokio::time::Instant::now()));
                if lease.is_some() || records_due {
                    let leases = lease.is_some();
                    let records = if leases && !lease_takes_records {
                        Vec::new()
                    } else {
                        gather_until = None;
                        std::mem::replace(&mut pending, Vec::with_capacity(RECORD_BATCH))
                    };
                    let inner = Arc::clone(&inner);
                    let task = stages.spawn(async move {
                        let result = inner.settle(&records, lease).await;
                        Stage::Written { records, result }
                    });
                    writing.push((task.id(), leases));
                    continue;
                }
            }
            if let Some(until) = gather_until {
                if gather.deadline() != until {
                    gather.as_mut().reset(until);
                }
            }
            let done = tokio::select! {
                () = shutdown.cancelled() => break,
                () = inner.wake.notified() => { lease_wanted = true; continue }
                () = inner.room.notified() => { lease_wanted = true; continue }
                () = &mut poll => {
                    lease_wanted = true;
                    poll.as_mut().reset(tokio::time::Instant::now() + inner.config.poll_interval);
                    continue
                }
                // Outcomes are gathered for a few milliseconds, then taken all at once: one commit
                // records hundreds of attempts instead of a handful, and the loop does not turn
                // once per outcome. Only the attempt log waits; nothing is resent.
                () = &mut gather, if gather_until.is_some() && writing.len() < WRITERS => continue,
                Some(record) = outcomes.recv(), if gather_until.is_none() => {
                    pending.push(record);
                    gather_until = Some(tokio::time::Instant::now() + RECORD_GATHER);
                    continue
                }
                Some(done) = stages.join_next_with_id(), if !stages.is_empty() => done,
            };
            let (task, stage) = match done {
                Ok(done) => done,
                Err(e) => {
                    // Only a panic ends a stage early; its leases expire and are sent again.
                    tracing::error!(error = %e, "a dispatcher round failed unexpectedly");
                    ended(&mut writing, e.id());
                    reading.retain(|(id, _)| *id != e.id());
                    continue;
                }
            };
            match stage {
                Stage::Written { records, result } => {
                    let leased_here = ended(&mut writing, task);
                    match result {
                        Ok(leased) => {
                            backoff = Duration::from_millis(100);
                            if leased_here {
                                // Found work: read it, and look again at once (what it holds of
                                // each endpoint's share counts while it is read); found none: wait
                                // for a reason.
                                lease_wanted = !leased.is_empty();
                                if !leased.is_empty() {
                                    let held = leased.per_endpoint().to_vec();
                                    let inner = Arc::clone(&inner);
                                    let task = stages.spawn(async move { Stage::Read(inner.load(leased).await) });
                                    reading.push((task.id(), held));
                                }
                            }
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, records = records.len(), retry_in_ms = backoff.as_millis(), "recording attempts or leasing failed");
                            if backoff > Duration::from_secs(5) {
                                // The leases expire and the deliveries are sent again.
                                if !records.is_empty() {
                                    tracing::error!(
                                        records = records.len(),
                                        "recording attempts keeps failing; dropping them"
                                    );
                                }
                            } else {
                                pending.extend(records);
                            }
                            tokio::select! {
                                () = shutdown.cancelled() => break,
                                () = tokio::time::sleep(backoff) => {}
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(10));
                        }
                    }
                }
                Stage::Read(result) => {
                    reading.retain(|(id, _)| *id != task);
                    match result {
                        Ok(leased) => {
                            for delivery in leased {
                                inner.dispatch(delivery);
                            }
                        }
                        // The leases expire and the deliveries are sent again.
                        Err(e) => tracing::warn!(error = %e, "reading leased deliveries failed"),
                    }
                }
            }
        }
        inner.abandon_queued();
        // Rounds under way finish; what they leased is not started (the leases expire), what they
        // failed to record is recorded below.
        while let Some(done) = stages.join_next().await {
            if let Ok(Stage::Written {
                records,
                result: Err(_),
                ..
            }) = done
            {
                pending.extend(records);
            }
        }
        // Requests in flight finish within one request timeout; their outcomes are recorded.
        let deadline = tokio::time::Instant::now() + inner.config.request_timeout + Duration::from_secs(1);
        loop {
            while let Ok(record) = outcomes.try_recv() {
                pending.push(record);
            }
            if !pending.is_empty() {
                if let Err(e) = inner.settle(&pending, None).await {
                    tracing::error!(error = %e, records = pending.len(), "recording the last attempts failed; they will be resent");
                }
                pending.clear();
            }
            let progressed = inner.progress.notified();
            if inner.lanes().is_empty() {
                if outcomes.is_empty() {
                    break;
                }
                continue;
            }
            tokio::select! {
                () = progressed => {}
                Some(record) = outcomes.recv() => pending.push(record),
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!("requests still in flight at shutdown; their leases will expire and they will be resent");
                    break;
                }
            }
        }
        tracing::info!("dispatcher stopped");
    }
}

/// What the worker holds of each endpoint's share: queued in its lane or in flight there, and in
/// the leases still being read (`reading`).
fn held<'a>(
    lanes: &HashMap<EndpointId, Arc<Lane>>,
    reading: impl Iterator<Item = &'a [(EndpointId, u32)]>,
) -> Vec<(EndpointId, u32)> {
    let mut held: HashMap<EndpointId, u32> = HashMap::new();
    for (id, lane) in lanes {
        let state = lane.state();
        let queued = state.queue.len().saturating_add(state.workers as usize);
        held.insert(id.clone(), u32::try_from(queued).unwrap_or(u32::MAX));
    }
    for (id, n) in reading.flatten() {
        let count = held.entry(id.clone()).or_default();
        *count = count.saturating_add(*n);
    }
    let mut held: Vec<_> = held.into_iter().collect();
    held.sort_unstable();
    held
}

/// Takes a round that ended off those writing; says whether it was leasing.
fn ended(writing: &mut Vec<(tokio::task::Id, bool)>, task: tokio::task::Id) -> bool {
    let at = writing.iter().position(|&(id, _)| id == task);
    at.is_some_and(|at| writing.swap_remove(at).1)
}

/// What a step of the dispatcher's pipeline came to.
enum Stage {
    /// A round's transaction: these records written and, if it was leasing, what it leased.
    Written {
        records: Vec<AttemptRecord>,
        result: Result<Leased, StoreError>,
    },
    /// What a round leased, read and ready to send.
    Read(Result<Vec<LeasedDelivery>, StoreError>),
}

/// The operational events a batch of outcomes calls for: endpoints disabled or recovered, and
/// deliveries that gave up (except deliveries of operational events, which would echo forever).
fn operational_events(records: &[AttemptRecord], report: &HealthReport, now: i64) -> Vec<OperationalEvent> {
    let mut events = Vec::new();
    for (endpoint_id, tenant_id, reason) in &report.disabled {
        tracing::warn!(%endpoint_id, %tenant_id, reason, "endpoint disabled");
        let data = serde_json::json!({"endpoint_id": endpoint_id, "reason": reason});
        events.push(OperationalEvent::new("endpoint.disabled", tenant_id.clone(), now, data));
    }
    for (endpoint_id, tenant_id) in &report.recovered {
        tracing::info!(%endpoint_id, %tenant_id, "endpoint recovered");
        let data = serde_json::json!({"endpoint_id": endpoint_id});
        events.push(OperationalEvent::new(
            "endpoint.recovered",
            tenant_id.clone(),
            now,
            data,
        ));
    }
    for record in records {
        if record.next != NextStep::GiveUp || OperationalEvent::is_operational(&record.event_type) {
            continue;
        }
        let data = serde_json::json!({
            "delivery_id": record.delivery_id,
            "event_id": record.event_id,
            "event_type": record.event_type,
            "endpoint_id": record.endpoint_id,
            "attempts": record.attempt,
            "last_status": record.status_code,
            "last_error": record.error,
        });
        events.push(OperationalEvent::new(
            "delivery.exhausted",
            record.tenant_id.clone(),
            now,
            data,
        ));
    }
    events
}

impl Inner {
    fn lanes(&self) -> MutexGuard<'_, HashMap<EndpointId, Arc<Lane>>> {
        self.lanes.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Deliveries leased by this worker and not yet started.
    fn queued(&self) -> usize {
        self.lanes().values().map(|lane| lane.state().queue.len()).sum()
    }

    async fn lease(self: &Arc<Self>, limit: usize) -> Result<Vec<LeasedDelivery>, StoreError> {
        let lease = self.lease_request(limit, std::iter::empty());
        let started = std::time::Instant::now();
        let leased = self.store.lease_due(lease).await?;
        tracing::debug!(leased = leased.len(), took = ?started.elapsed(), "leased deliveries");
        Ok(leased)
    }

    /// Records `records` and leases with `lease`, in one store transaction; then tells tenants what
    /// the outcomes changed.
    async fn settle(&self, records: &[AttemptRecord], lease: Option<Lease>) -> Result<Leased, StoreError> {
        let now = self.clock.now_ms();
        let started = std::time::Instant::now();
        let (report, leased) = self.store.settle(records, now, &self.config.health, lease).await?;
        tracing::debug!(records = records.len(), leased = leased.len(), took = ?started.elapsed(), "settled a round");
        self.notify(records, &report, now).await;
        Ok(leased)
    }

    /// Reads what a round leased.
    async fn load(&self, leased: Leased) -> Result<Vec<LeasedDelivery>, StoreError> {
        let started = std::time::Instant::now();
        let deliveries = self.store.load_leased(leased).await?;
        tracing::debug!(deliveries = deliveries.len(), took = ?started.elapsed(), "read a lease");
        Ok(deliveries)
    }

    /// What the next lease asks for: at most `limit`, each endpoint's share less what this worker
    /// already holds of it: in its lane, and in the leases still being read (`reading`).
    fn lease_request<'a>(&self, limit: usize, reading: impl Iterator<Item = &'a [(EndpointId, u32)]>) -> Lease {
        let held = held(&self.lanes(), reading);
        Lease {
            now: self.clock.now_ms(),
            limit: u32::try_from(limit.max(1)).unwrap_or(u32::MAX),
            per_endpoint_rounds: self.config.per_endpoint_rounds,
            lease_ms: self.config.lease_ms(),
            held,
        }
    }

    /// Queues a delivery in its endpoint's lane, starting a worker if the lane has room for one.
    fn dispatch(self: &Arc<Self>, delivery: LeasedDelivery) {
        let endpoint = delivery.endpoint_id.clone();
        let lane = {
            let mut lanes = self.lanes();
            Arc::clone(
                lanes
                    .entry(endpoint.clone())
                    .or_insert_with(|| Arc::new(Lane::new(delivery.controls, self.config.per_endpoint_rounds))),
            )
        };
        let start_worker = {
            let mut state = lane.state();
            state.queue.push_back(delivery);
            let start = state.workers < lane.max_workers;
            if start {
                state.workers += 1;
            }
            start
        };
        if start_worker {
            tokio::spawn(Arc::clone(self).work_lane(endpoint, lane));
        }
    }

    /// One worker of a lane: takes deliveries in order until the queue is empty.
    async fn work_lane(self: Arc<Self>, endpoint: EndpointId, lane: Arc<Lane>) {
        loop {
            loop {
                let (next, refill) = {
                    let mut state = lane.state();
                    let next = state.queue.pop_front();
                    let left = state.queue.len();
                    let refill = next.is_some() && lane.asks_for_more(left);
                    (next, refill)
                };
                let Some(delivery) = next else { break };
                if refill {
                    // A round of room: the lane is leased again, while it still has work
                    // queued if it is busy.
                    self.room.notify_one();
                }
                self.deliver(&lane, delivery).await;
            }
            // Retire the worker, and the lane with its last worker, under the map's lock, so that
            // a concurrent dispatch either finds the lane alive or makes a new one.
            let retired = {
                let mut lanes = self.lanes();
                let mut state = lane.state();
                if state.queue.is_empty() {
                    state.workers = state.workers.saturating_sub(1);
                    if state.workers == 0 {
                        drop(state);
                        lanes.remove(&endpoint);
                    }
                    true
                } else {
                    // Work arrived after the queue looked empty: keep going.
                    false
                }
            };
            if retired {
                break;
            }
        }
        self.progress.notify_waiters();
    }

    async fn deliver(&self, lane: &Lane, mut delivery: LeasedDelivery) {
        if let Some(limiter) = &lane.limiter {
            limiter.until_ready().await;
        }
        // The semaphore is never closed, so acquiring only waits.
        let permit = Arc::clone(&self.global).acquire_owned().await;
        let started_at = self.clock.now_ms();
        let report = self.sender.send(&mut delivery, started_at).await;
        drop(permit);
        let record = self.decide(delivery, started_at, report);
        let _ = self.results.send(record);
        self.progress.notify_waiters();
    }

    fn decide(&self, delivery: LeasedDelivery, started_at: i64, report: SendReport) -> AttemptRecord {
        let attempt = delivery.attempts.saturating_add(1);
        let next = self
            .config
            .retry
            .next_step(attempt, &report.outcome, self.clock.now_ms(), rand::random::<f64>());
        // Every attempt is in the attempt log; the process log shows failures at `info` and
        // successes only at `debug` (at tens of thousands a second they would drown the rest).
        macro_rules! log_attempt {
            ($level:expr) => {
                tracing::event!(
                    $level,
                    delivery_id = %delivery.id,
                    event_id = %delivery.event_id,
                    endpoint_id = %delivery.endpoint_id,
                    attempt,
                    outcome = report.outcome.label(),
                    status = report.status_code,
                    duration_ms = report.duration_ms,
                    next = ?next,
                    "delivery attempt"
                )
            };
        }
        if next == NextStep::Done {
            log_attempt!(tracing::Level::DEBUG);
        } else {
            log_attempt!(tracing::Level::INFO);
        }
        AttemptRecord {
            delivery_id: delivery.id,
            endpoint_id: delivery.endpoint_id,
            tenant_id: delivery.tenant_id,
            event_id: delivery.event_id,
            event_type: delivery.event_type,
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

    async fn record(&self, records: &[AttemptRecord]) -> Result<HealthReport, StoreError> {
        let now = self.clock.now_ms();
        let report = self.store.record_attempts(records, now, &self.config.health).await?;
        self.notify(records, &report, now).await;
        Ok(report)
    }

    /// Stores the operational events a batch of outcomes calls for.
    async fn notify(&self, records: &[AttemptRecord], report: &HealthReport, now: i64) {
        let operational = operational_events(records, report, now);
        if !operational.is_empty() {
            // A failure here loses only the notice, never a delivery: log it and go on.
            match self.store.emit_operational(&operational, now).await {
                Ok(deliveries) if deliveries > 0 => self.wake.notify_one(),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "storing operational events failed"),
            }
        }
    }

    /// Drops queued deliveries that have not started (their leases expire).
    fn abandon_queued(&self) {
        for lane in self.lanes().values() {
            lane.state().queue.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lane_asks_for_more_at_every_round_it_works_off_once_a_round_is_free() {
        let controls = DeliveryControls {
            max_concurrency: 4,
            rate_limit: None,
            ordered: false,
        };
        // A share of 10 rounds of 4: with 32 queued and 4 in flight, a round is free; then again
        // at every round worked off, down to empty.
        let lane = Lane::new(controls, 10);
        let asks: Vec<usize> = (0..=40).rev().filter(|&left| lane.asks_for_more(left)).collect();
        assert_eq!(asks, [32, 28, 24, 20, 16, 12, 8, 4, 0]);
    }

    #[test]
    fn what_leases_being_read_hold_counts_against_each_endpoints_share() {
        let controls = DeliveryControls {
            max_concurrency: 4,
            rate_limit: None,
            ordered: false,
        };
        let (busy, idle, new) = (EndpointId::new(), EndpointId::new(), EndpointId::new());
        let lane = Arc::new(Lane::new(controls, 10));
        lane.state().workers = 3;
        let lanes = HashMap::from([
            (busy.clone(), Arc::clone(&lane)),
            (idle.clone(), Arc::new(Lane::new(controls, 10))),
        ]);
        let first = vec![(busy.clone(), 40), (new.clone(), 7)];
        let second = vec![(busy.clone(), 12)];
        let mut expected = vec![(busy, 3 + 40 + 12), (idle, 0), (new, 7)];
        expected.sort_unstable();
        assert_eq!(
            held(&lanes, [first.as_slice(), second.as_slice()].into_iter()),
            expected
        );
        assert_eq!(held(&lanes, std::iter::empty()).iter().map(|(_, n)| n).sum::<u32>(), 3);
    }
}
