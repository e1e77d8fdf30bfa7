//! The shared backend: PostgreSQL, for operators that run several gateway nodes behind a load
//! balancer. Every node reads and writes the same database, which is also the delivery queue.
//!
//! Design, and how it differs from SQLite:
//! - One pool serves reads and writes: PostgreSQL runs writers side by side (row locks, MVCC), so
//!   there is no single writer to queue on. The pool size bounds each node's connections; nodes ×
//!   pool size must stay under the server's `max_connections`.
//! - Multi-row writes bind one array per column and insert from `UNNEST`: a statement's text and
//!   its parameter count are the same whatever the batch size, so it is prepared once and never has
//!   to be split to stay under a parameter limit. A batch of webhooks is one transaction (group
//!   commit), as on SQLite.
//! - Leasing picks rows with `FOR NO KEY UPDATE SKIP LOCKED` (the lock an `UPDATE` of non-key columns
//!   takes, so inserting attempts, whose reference to the delivery takes `KEY SHARE`, never blocks
//!   it): nodes leasing at once take disjoint deliveries without waiting on each other. A paused
//!   endpoint's single probe is claimed by locking the endpoint row the same way, so two nodes never
//!   probe it at once. Each node's share of an endpoint (`Lease::held`, `max_concurrency`) is its
//!   own: N nodes may send up to N times an endpoint's concurrency.
//! - SQLite's `rowid` order (deliveries go out in the order of their events) is `deliveries.seq`, an
//!   identity column that the leasing indexes end with.
//! - Events of a batch are inserted in dedup-key order, so that two nodes ingesting the same
//!   redelivered items at once take their key locks in one order and cannot deadlock; the first
//!   occurrence of a key in a batch still wins. Rare deadlocks and serialization failures elsewhere
//!   surface as [`StoreError::Unavailable`] (retry), as does any lost connection.
//! - Nodes tell each other about changes with `LISTEN/NOTIFY` ([`PgStore::follow_changes`]):
//!   ingests announce the deliveries they made due after they commit, one announcement in flight
//!   per node ([`WorkAnnouncer`]); the rarer writes that make deliveries due (test sends,
//!   operational events, replays) inside their transaction (so at commit); admin changes to apps,
//!   Pages and endpoints after they commit. Announcements are hints that save waiting: the
//!   dispatcher's poll and the routing refresh stay the safety net.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pagewire_core::{
    ApiKeyId, AppRecordId, DeliveryId, EndpointId, EndpointSecret, EventId, HealthPolicy, InboundId, MasterKey,
    OperationalEvent, PageRecordId, RefusalId, Secret, TenantId,
};
use sqlx::postgres::{PgArguments, PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, QueryBuilder};
use tokio::sync::Notify;

use crate::rows::{
    self, api_key_from_row, app_from_row, attempt_from_row, count, created_api_key, created_app, created_endpoint,
    created_page, created_tenant, delivery_from_row, endpoint_from_row, events_from_rows, idempotency_from_row,
    inbound_columns_for_tenant, inbound_event_from_row, inbound_from_row, json_headers, json_list, leased_deliveries,
    millis, page_credentials, page_from_row, page_move_from_row, parse_id, push_endpoint_changes, push_replay_scope,
    refusal_from_row, settled, shown_endpoint_from_row, signing_key_from_row, tally_health, tenant_from_row,
    verify_token_hash, ApiKeyRow, AppRow, AttemptRow, DeliveryRow, EndpointRow, EventRow, IdempotencyRow,
    InboundEventRow, InboundRow, LeasedRow, PageMoveRow, PageRow, PageSecretsRow, RefusalRow, SigningKeyRow, TargetRow,
    TenantRow, API_KEY_COLUMNS, APP_COLUMNS, APP_SECRET, ATTEMPT_COLUMNS, DELIVERY_COLUMNS, ENDPOINT_COLUMNS,
    ENDPOINT_ED25519, ENDPOINT_SECRET, EVENT_COLUMNS, IDEMPOTENT_RESPONSE, INBOUND_COLUMNS, LEASED_COLUMNS,
    PAGE_COLUMNS, PAGE_TOKEN, REFUSAL_COLUMNS, SIGNING_KEY, SIGNING_KEY_COLUMNS, TARGET_COLUMNS, TENANT_COLUMNS,
    VERIFY_TOKEN,
};
use crate::{
    ApiKey, AppUpdate, Attempt, AttemptRecord, Delivery, DeliveryQuery, DeliveryStatus, Endpoint, EndpointUpdate,
    EventQuery, HealthReport, Idempotency, Inbound, InboundEvent, InboundQuery, IngestReceipt, IngestRequest, Lease,
    Leased, LeasedDelivery, MetaApp, NewApiKey, NewEndpoint, NewEvent, NewMetaApp, NewPage, Page, PageCredentials,
    PageMove, PageProof, PruneReport, Refusal, RefusalQuery, Replay, Result, RoutingData, SigningKey, Store,
    StoreError, StoredEvent, SubscriptionCheck, Tenant, TenantStats,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/postgres");

/// Writes that make deliveries due announce it here, so that every node's dispatcher wakes.
const WORK_CHANNEL: &str = "pagewire_work";
/// Changes to apps, Pages and endpoints are announced here, so that every node reloads its routing.
const ROUTING_CHANNEL: &str = "pagewire_routing";
/// How long the change listener waits before connecting again after a failure.
const LISTEN_RETRY: Duration = Duration::from_secs(5);
/// The planner's cost of a random page read on the store's connections, over the server's default
/// of 4 (a spinning disk's). The rows a node reads and writes in its rounds (deliveries just leased
/// or settled, their events) are recent and in memory: with 4, a round that looks up a few thousand
/// deliveries by id is planned as a scan of the whole table while it holds up to a few hundred
/// thousand rows, which costs each round tens of milliseconds (`docs/benchmarks.md`). 1.1 is the
/// usual value for SSDs and cached data. An operator's own value in the database URL
/// (`?options=-c%20random_page_cost%3D2`) is kept.
const RANDOM_PAGE_COST: &str = "1.1";

/// How the PostgreSQL store connects.
#[derive(Debug, Clone)]
pub struct PgStoreOptions {
    /// Most connections this node holds, [`PgStore::follow_changes`]'s listener included. Every
    /// node has its own pool, so the server must allow nodes × `max_connections` (PostgreSQL's
    /// default `max_connections` is 100).
    pub max_connections: u32,
    /// How long a use case waits for a connection before failing with `Unavailable`.
    pub acquire_timeout: Duration,
}

impl Default for PgStoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// The PostgreSQL implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    key: MasterKey,
    work: Arc<WorkAnnouncer>,
}

/// Announces on [`WORK_CHANNEL`] that ingests made deliveries due, each time in a transaction of
/// its own after theirs committed. A transaction that notifies holds PostgreSQL's one lock on the
/// queue of notifications from just before its commit until its commit is on disk, so ingests
/// that announced inside their own transaction committed one after another, every node's alike:
/// the server log (`log_lock_waits`) showed ingest commits waiting 39-57 ms for that lock in a
/// steady 5,000 webhooks/s. Announcements asked for while one is being sent fold into the next
/// one, so at most one of this node's transactions waits for the lock. The task stops when the
/// last clone of the store is dropped.
#[derive(Debug)]
struct WorkAnnouncer {
    wanted: Arc<Notify>,
    task: tokio::task::AbortHandle,
}

impl WorkAnnouncer {
    fn start(pool: PgPool) -> Self {
        let wanted = Arc::new(Notify::new());
        let waiting = Arc::clone(&wanted);
        let task = tokio::spawn(async move {
            loop {
                // A permit stored while an announcement was being sent wakes this at once.
                waiting.notified().await;
                match announce(&pool, WORK_CHANNEL).await {
                    Ok(()) => {}
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(e) => tracing::warn!(
                        error = %e,
                        "could not announce new deliveries to the other nodes; they find them at their next poll"
                    ),
                }
            }
        })
        .abort_handle();
        Self { wanted, task }
    }

    /// Asks for an announcement; returns at once.
    fn announce(&self) {
        self.wanted.notify_one();
    }
}

impl Drop for WorkAnnouncer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PgStore {
    /// Connects to the database at a `postgres://` (or `postgresql://`) URL and runs the
    /// migrations. Nodes starting together are safe: the migrator holds an advisory lock.
    pub async fn connect(url: &str, key: MasterKey, options: PgStoreOptions) -> Result<Self> {
        let connect = connect_options(url)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;
        let work = Arc::new(WorkAnnouncer::start(pool.clone()));
        Ok(Self { pool, key, work })
    }

    /// Waits for in-flight statements and closes the connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Follows what the nodes sharing this database announce (`LISTEN/NOTIFY`), this one included:
    /// `work` is notified when deliveries became due (ingested, test sends, operational events,
    /// replays), `routing` when apps, Pages or endpoints changed. Whenever announcements may have
    /// been missed (at the start, after a lost connection), both are notified. Holds one of the
    /// pool's connections; runs until the task is aborted or the store is closed.
    pub fn follow_changes(&self, work: Arc<Notify>, routing: Arc<Notify>) -> tokio::task::JoinHandle<()> {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            loop {
                match follow(&pool, &work, &routing).await {
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(e) => tracing::warn!(
                        error = %e,
                        "listening for other nodes' changes failed; they are seen at the next poll until it resumes"
                    ),
                    Ok(never) => match never {},
                }
                tokio::time::sleep(LISTEN_RETRY).await;
            }
        })
    }

    /// Tells every node about a change made outside a transaction. Best effort: the change is
    /// committed, and a node that misses the announcement sees it at its next poll or refresh.
    async fn announce(&self, channel: &'static str) {
        if let Err(e) = announce(&self.pool, channel).await {
            tracing::warn!(error = %e, channel, "could not announce a change to the other nodes");
        }
    }

    /// The endpoints a lease may take from, the longest-waiting first, with the room each has.
    /// Read before the lease's transaction (a lease that finds nothing never opens one); a stale
    /// entry only leases nothing, as [`Self::take`] re-checks what is due and locks what it takes.
    async fn eligible(&self, lease: &Lease) -> Result<Vec<Eligible>> {
        // The earliest due time per endpoint comes from delivery_queue_due_idx (a min over an
        // index range), so an endpoint with a deep backlog costs one index probe.
        let endpoints: Vec<(String, i64, i64, bool, bool)> = sqlx::query_as(
            "SELECT e.id, CASE WHEN e.probe_at IS NOT NULL THEN 1 ELSE e.max_concurrency * $1 END AS cap, \
                    e.max_concurrency, e.ordered, e.probe_at IS NOT NULL AS probing \
             FROM endpoints e \
             CROSS JOIN LATERAL (SELECT MIN(q.next_attempt_at) AS due FROM delivery_queue q \
                                 WHERE q.endpoint_id = e.id) AS p \
             WHERE e.enabled AND (e.probe_at IS NULL OR e.probe_at <= $2) AND p.due <= $2 \
             ORDER BY p.due, e.id",
        )
        .bind(i64::from(lease.per_endpoint_rounds.max(1)))
        .bind(lease.now)
        .fetch_all(&self.pool)
        .await?;
        let held: HashMap<&str, i64> = lease
            .held
            .iter()
            .map(|(endpoint, count)| (endpoint.as_str(), i64::from(*count)))
            .collect();
        Ok(endpoints
            .into_iter()
            .filter_map(|(id, cap, max_concurrency, ordered, probing)| {
                let room = cap - held.get(id.as_str()).copied().unwrap_or(0);
                (room >= max_concurrency.clamp(1, cap)).then_some(Eligible {
                    id,
                    room,
                    ordered,
                    probing,
                })
            })
            .collect())
    }

    /// Takes due deliveries of `endpoints` inside the caller's transaction.
    async fn take(tx: &mut PgConnection, lease: &Lease, endpoints: Vec<Eligible>) -> Result<Leased> {
        let lease_end = lease.now.saturating_add(lease.lease_ms);
        let mut ready = Vec::with_capacity(endpoints.len());
        for endpoint in endpoints {
            if endpoint.probing {
                // One probe at a time across nodes: the node that locks the endpoint row probes.
                // Locked elsewhere (another node is probing or recording its health) or paused
                // again since the list was read: nothing from it this round.
                let row: Option<(Option<i64>,)> = sqlx::query_as(
                    "SELECT probe_at FROM endpoints WHERE id = $1 AND enabled FOR NO KEY UPDATE SKIP LOCKED",
                )
                .bind(&endpoint.id)
                .fetch_optional(&mut *tx)
                .await?;
                match row {
                    Some((Some(probe_at),)) if probe_at <= lease.now => {}
                    // The breaker closed meanwhile: the single delivery planned still goes.
                    Some((None,)) => {}
                    _ => continue,
                }
            }
            ready.push(endpoint);
        }
        if ready.is_empty() {
            return Ok(Leased::default());
        }

        // Every endpoint in one statement, in the order given: each takes its due deliveries up
        // to its room, in due order then insertion order, until the lease's limit is reached (the
        // nested loop visits the endpoints in array order, and the limit stops it). Ordered
        // endpoints take only the first pending delivery of each conversation. A lease is written
        // to the queue's narrow row alone: the delivery's own row is not touched until its outcome.
        let taken: Vec<(String, i64, String)> = sqlx::query_as(
            "WITH due AS ( \
                 SELECT c.delivery_id FROM UNNEST($3::text[], $4::int8[], $5::bool[]) WITH ORDINALITY \
                     AS e (id, room, ordered, n) \
                 CROSS JOIN LATERAL ( \
                     SELECT c.delivery_id FROM delivery_queue c \
                     WHERE c.endpoint_id = e.id AND c.next_attempt_at <= $2 \
                       AND (NOT e.ordered OR c.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM delivery_queue p \
                         WHERE p.endpoint_id = c.endpoint_id AND p.ordering_key = c.ordering_key \
                         AND p.seq < c.seq)) \
                     ORDER BY c.next_attempt_at, c.seq LIMIT e.room \
                     FOR NO KEY UPDATE SKIP LOCKED) AS c \
                 LIMIT $6) \
             UPDATE delivery_queue q SET next_attempt_at = $1, lease_seq = q.lease_seq + 1 \
             FROM due WHERE q.delivery_id = due.delivery_id \
             RETURNING q.delivery_id, q.lease_seq, q.endpoint_id",
        )
        .bind(lease_end)
        .bind(lease.now)
        .bind(ready.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
        .bind(ready.iter().map(|e| e.room.max(0)).collect::<Vec<_>>())
        .bind(ready.iter().map(|e| e.ordered).collect::<Vec<_>>())
        .bind(i64::from(lease.limit))
        .fetch_all(&mut *tx)
        .await?;

        let mut per_endpoint: HashMap<&str, u32> = HashMap::new();
        for (_, _, endpoint) in &taken {
            *per_endpoint.entry(endpoint.as_str()).or_default() += 1;
        }
        // A paused endpoint gets one probe at a time: hold its pause for as long as the probe's
        // lease. Only rows this transaction has locked above, so this never waits.
        let probed: Vec<&str> = ready
            .iter()
            .filter(|e| e.probing && per_endpoint.contains_key(e.id.as_str()))
            .map(|e| e.id.as_str())
            .collect();
        if !probed.is_empty() {
            sqlx::query("UPDATE endpoints SET probe_at = $1 WHERE probe_at IS NOT NULL AND id = ANY($2)")
                .bind(lease_end)
                .bind(&probed)
                .execute(&mut *tx)
                .await?;
        }
        let per_endpoint = per_endpoint
            .into_iter()
            .map(|(endpoint, n)| Ok((parse_id(endpoint)?, n)))
            .collect::<Result<_>>()?;
        Ok(Leased {
            now: lease.now,
            taken: taken.into_iter().map(|(id, seq, _)| (id, seq)).collect(),
            per_endpoint,
        })
    }

    /// Events with their items' bytes, each POST's body read once.
    async fn events_with_items(&self, rows: Vec<EventRow>) -> Result<Vec<StoredEvent>> {
        let posts = distinct(rows.iter().filter_map(EventRow::post));
        let bodies = self.bodies(&posts).await?;
        events_from_rows(rows, &bodies)
    }

    /// The bodies of the POSTs `posts`, as `(inbound id, body)`; no round trip for none.
    async fn bodies(&self, posts: &[&str]) -> Result<Vec<(String, Vec<u8>)>> {
        if posts.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as("SELECT id, body FROM inbound WHERE id = ANY($1)")
            .bind(posts)
            .fetch_all(&self.pool)
            .await?)
    }

    /// What to send for deliveries just leased (and committed): the rows are the worker's now.
    /// The deliveries with their events first, then what they name: each endpoint's settings,
    /// read and opened once, and the POSTs whose bodies hold their items, each read once. (Looking
    /// the endpoints and POSTs up through the deliveries instead, beside the first read, repeated
    /// its thousands of lookups by id twice, for a handful of rows.)
    async fn read_leased(&self, leased: &Leased) -> Result<Vec<LeasedDelivery>> {
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = leased.taken.iter().map(|(id, _)| id.as_str()).collect();
        let leased_sql = format!(
            "SELECT {LEASED_COLUMNS} FROM deliveries d JOIN events ev ON ev.id = d.event_id \
             WHERE d.id = ANY($1) ORDER BY d.seq"
        );
        let deliveries = sqlx::query_as::<_, LeasedRow>(&leased_sql)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await?;
        let endpoint_ids = distinct(deliveries.iter().map(LeasedRow::endpoint_id));
        let posts = distinct(deliveries.iter().filter_map(LeasedRow::post));
        let targets_sql = format!("SELECT {TARGET_COLUMNS} FROM endpoints WHERE id = ANY($1)");
        let endpoints = async {
            let rows = sqlx::query_as::<_, TargetRow>(&targets_sql)
                .bind(&endpoint_ids)
                .fetch_all(&self.pool)
                .await?;
            Ok::<_, StoreError>(rows)
        };
        let (endpoints, bodies) = tokio::try_join!(endpoints, self.bodies(&posts))?;
        leased_deliveries(&self.key, leased, deliveries, endpoints, bodies)
    }
}

/// Each of `ids` once.
fn distinct<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    ids.collect::<std::collections::BTreeSet<_>>().into_iter().collect()
}

/// How the store's connections are opened: the URL's settings, the application's name, and the
/// planner's page cost unless the URL sets its own.
fn connect_options(url: &str) -> Result<PgConnectOptions> {
    let connect = PgConnectOptions::from_str(url)?.application_name("pagewire");
    let set_by_url = connect
        .get_options()
        .is_some_and(|options| options.contains("random_page_cost"));
    Ok(if set_by_url {
        connect
    } else {
        connect.options([("random_page_cost", RANDOM_PAGE_COST)])
    })
}

/// An endpoint with due work, for [`PgStore::take`].
struct Eligible {
    id: String,
    /// Deliveries it may still take this round.
    room: i64,
    ordered: bool,
    /// Its breaker is open and its pause is over: one probe.
    probing: bool,
}

/// Announces a change on `channel`: inside a transaction, it is delivered when (and only if) the
/// transaction commits, and PostgreSQL folds repeats within one transaction into one.
async fn announce<'c, E: sqlx::PgExecutor<'c>>(executor: E, channel: &'static str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(channel)
        .execute(executor)
        .await
        .map(drop)
}

/// Listens on one connection until it fails; never returns otherwise.
async fn follow(pool: &PgPool, work: &Notify, routing: &Notify) -> Result<std::convert::Infallible, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen_all([WORK_CHANNEL, ROUTING_CHANNEL]).await?;
    loop {
        // Announcements made before LISTEN took effect, or while the connection was down, are
        // gone: catch up once, then follow.
        work.notify_one();
        routing.notify_one();
        while let Some(notification) = listener.try_recv().await? {
            if notification.channel() == WORK_CHANNEL {
                work.notify_one();
            } else {
                routing.notify_one();
            }
        }
        // `try_recv` has reconnected (and listens again) before saying the connection was lost.
    }
}

/// Runs a statement whose last parameter is a `LIMIT` again and again, `step` rows at a time, until
/// a step changes fewer: a large deletion in short transactions, so that no lock is held for long.
/// The statements pick their rows with `SKIP LOCKED`, so nodes running the same pass at once split
/// the work instead of queueing on each other. Returns the rows changed in all.
async fn in_steps<'q>(
    pool: &PgPool,
    step: i64,
    statement: impl Fn() -> sqlx::query::Query<'q, Postgres, PgArguments>,
) -> Result<u64> {
    let mut total = 0;
    loop {
        let done = statement().bind(step).execute(pool).await?.rows_affected();
        total += done;
        if done < u64::try_from(step).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

/// Records attempts inside the caller's transaction: the attempt log, each delivery's next step
/// (fenced by its lease, so a stale worker's answer changes nothing), and endpoint health.
async fn record_in(
    tx: &mut PgConnection,
    records: &[AttemptRecord],
    now: i64,
    health: &HealthPolicy,
) -> Result<HealthReport> {
    if records.is_empty() {
        return Ok(HealthReport::default());
    }
    // One array per column: both statements are the same text whatever the batch size.
    let mut ids = Vec::with_capacity(records.len());
    let mut attempts = Vec::with_capacity(records.len());
    let mut started = Vec::with_capacity(records.len());
    let mut durations = Vec::with_capacity(records.len());
    let mut codes = Vec::with_capacity(records.len());
    let mut outcomes = Vec::with_capacity(records.len());
    let mut errors = Vec::with_capacity(records.len());
    let mut excerpts = Vec::with_capacity(records.len());
    let mut seqs = Vec::with_capacity(records.len());
    let mut statuses = Vec::with_capacity(records.len());
    let mut next_ats = Vec::with_capacity(records.len());
    for r in records {
        let (status, next_at) = settled(r.next, now);
        ids.push(r.delivery_id.as_str());
        attempts.push(i64::from(r.attempt));
        started.push(r.started_at);
        durations.push(r.duration_ms);
        codes.push(r.status_code.map(i64::from));
        outcomes.push(r.outcome);
        errors.push(r.error.as_deref());
        excerpts.push(r.response_excerpt.as_deref());
        seqs.push(r.lease_seq);
        statuses.push(status.as_str());
        next_ats.push(next_at);
    }
    // The deliveries' outcomes and the attempt log in one statement (one round trip). An outcome
    // counts only while its lease is the delivery's latest (`fenced`): a delivery that is done
    // leaves the queue, one to retry stays there, due at its retry's time. An attempt that
    // delivers its delivery is kept on the delivery's row, which the outcome rewrites anyway;
    // every other attempt gets a row of its own. So does one whose lease has passed on (its
    // outcome changes nothing), unless its delivery was deleted since it was leased (its endpoint
    // was): that one has no log left to add to, and the rest of the batch is recorded. (One
    // deleted while this statement runs fails the reference check; the batch is written again, and
    // then finds it gone.) The `CASE` looks a delivery up only for the answers its update skipped.
    sqlx::query(
        "WITH v AS ( \
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::int8[], $5::int8[], $6::text[], \
                 $7::text[], $8::text[], $9::int8[], $10::text[], $11::int8[]) \
                 AS v (id, attempt, started_at, duration_ms, status_code, outcome, error, response_excerpt, seq, \
                 status, next_at)), \
         done AS ( \
             DELETE FROM delivery_queue q USING v \
             WHERE q.delivery_id = v.id AND q.lease_seq = v.seq AND v.status <> 'pending' \
             RETURNING q.delivery_id, q.lease_seq), \
         retried AS ( \
             UPDATE delivery_queue q SET next_attempt_at = v.next_at FROM v \
             WHERE q.delivery_id = v.id AND q.lease_seq = v.seq AND v.status = 'pending' \
             RETURNING q.delivery_id, q.lease_seq), \
         fenced AS (SELECT * FROM done UNION ALL SELECT * FROM retried), \
         settled AS ( \
             UPDATE deliveries d SET status = v.status, next_attempt_at = v.next_at, attempts = v.attempt, \
                 last_status = v.status_code, last_error = v.error, updated_at = $12, \
                 delivered_started_at = CASE WHEN v.status = 'delivered' THEN v.started_at END, \
                 delivered_duration_ms = CASE WHEN v.status = 'delivered' THEN v.duration_ms END, \
                 delivered_outcome = CASE WHEN v.status = 'delivered' THEN v.outcome END, \
                 delivered_excerpt = CASE WHEN v.status = 'delivered' THEN v.response_excerpt END \
             FROM v JOIN fenced f ON f.delivery_id = v.id AND f.lease_seq = v.seq \
             WHERE d.id = v.id \
             RETURNING d.id, v.seq, d.status) \
         INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, error, \
             response_excerpt) \
         SELECT v.id, v.attempt, v.started_at, v.duration_ms, v.status_code, v.outcome, v.error, v.response_excerpt \
         FROM v LEFT JOIN settled s ON s.id = v.id AND s.seq = v.seq \
         WHERE CASE WHEN s.id IS NOT NULL THEN s.status <> 'delivered' \
             ELSE EXISTS (SELECT 1 FROM deliveries d WHERE d.id = v.id) END",
    )
    .bind(&ids)
    .bind(&attempts)
    .bind(&started)
    .bind(&durations)
    .bind(&codes)
    .bind(&outcomes)
    .bind(&errors)
    .bind(&excerpts)
    .bind(&seqs)
    .bind(&statuses)
    .bind(&next_ats)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    update_health(tx, records, now, health).await
}

/// Applies a batch of outcomes to the health of each endpoint involved: one statement per endpoint,
/// not per attempt. Endpoints are visited in id order, so two nodes recording at once lock them in
/// the same order.
async fn update_health(
    tx: &mut PgConnection,
    records: &[AttemptRecord],
    now: i64,
    health: &HealthPolicy,
) -> Result<HealthReport> {
    let mut report = HealthReport::default();
    let tallies = tally_health(records);
    if tallies.values().all(|tally| tally.succeeded && !tally.gone) {
        // Only successes, the usual round: every endpoint in one statement, which touches (and
        // locks, in id order) only those that had failed.
        let ids: Vec<&str> = tallies.keys().copied().collect();
        let reset: Vec<(String, String, bool)> = sqlx::query_as(
            "WITH failing AS (SELECT id, probe_at IS NOT NULL AS paused FROM endpoints \
                 WHERE id = ANY($1) AND (probe_at IS NOT NULL OR consecutive_failures > 0) \
                 ORDER BY id FOR NO KEY UPDATE) \
             UPDATE endpoints e SET consecutive_failures = 0, failing_since = NULL, probe_at = NULL \
             FROM failing WHERE e.id = failing.id \
             RETURNING e.id, e.tenant_id, failing.paused",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        // A success closes the breaker; the endpoint "recovered" if the breaker had been open.
        let mut recovered: Vec<(String, String)> = reset
            .into_iter()
            .filter(|(_, _, paused)| *paused)
            .map(|(id, tenant, _)| (id, tenant))
            .collect();
        recovered.sort_unstable();
        for (endpoint, tenant) in recovered {
            report.recovered.push((parse_id(&endpoint)?, parse_id(&tenant)?));
        }
        return Ok(report);
    }
    for (endpoint, tally) in tallies {
        if tally.gone {
            let row: Option<(String,)> = sqlx::query_as(
                "UPDATE endpoints SET enabled = FALSE, disabled_reason = 'the endpoint answered 410 Gone', \
                 updated_at = $1 WHERE id = $2 AND enabled RETURNING tenant_id",
            )
            .bind(now)
            .bind(endpoint)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((tenant,)) = row {
                report
                    .disabled
                    .push((parse_id(endpoint)?, parse_id(&tenant)?, String::from("gone")));
            }
        } else if tally.succeeded {
            // A success closes the breaker; the endpoint "recovered" if the breaker had been open.
            let reopened: Option<(String,)> = sqlx::query_as(
                "UPDATE endpoints SET consecutive_failures = 0, failing_since = NULL, probe_at = NULL \
                 WHERE id = $1 AND probe_at IS NOT NULL RETURNING tenant_id",
            )
            .bind(endpoint)
            .fetch_optional(&mut *tx)
            .await?;
            match reopened {
                Some((tenant,)) => report.recovered.push((parse_id(endpoint)?, parse_id(&tenant)?)),
                None => {
                    sqlx::query(
                        "UPDATE endpoints SET consecutive_failures = 0, failing_since = NULL \
                         WHERE id = $1 AND consecutive_failures > 0",
                    )
                    .bind(endpoint)
                    .execute(&mut *tx)
                    .await?;
                }
            }
        } else if tally.failed > 0 {
            // After `threshold` failures in a row the breaker opens for a pause that doubles with
            // each further failure; `probe_at` is when one delivery may try again.
            let row: Option<(String, Option<i64>, Option<i64>)> = sqlx::query_as(
                "UPDATE endpoints SET consecutive_failures = consecutive_failures + $1, \
                   failing_since = COALESCE(failing_since, $2), \
                   probe_at = CASE WHEN consecutive_failures + $1 >= $3 \
                     THEN $2 + LEAST($4 << LEAST(consecutive_failures + $1 - $3, 30)::int4, $5) \
                     ELSE probe_at END \
                 WHERE id = $6 RETURNING tenant_id, failing_since, probe_at",
            )
            .bind(tally.failed)
            .bind(now)
            .bind(i64::from(health.threshold))
            .bind(millis(health.first_pause))
            .bind(millis(health.max_pause))
            .bind(endpoint)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((tenant, Some(since), _)) = row {
                if now.saturating_sub(since) >= millis(health.disable_after) {
                    sqlx::query(
                        "UPDATE endpoints SET enabled = FALSE, \
                         disabled_reason = 'failing without a success for too long', updated_at = $1 \
                         WHERE id = $2",
                    )
                    .bind(now)
                    .bind(endpoint)
                    .execute(&mut *tx)
                    .await?;
                    report
                        .disabled
                        .push((parse_id(endpoint)?, parse_id(&tenant)?, String::from("failing")));
                }
            }
        }
    }
    if !report.disabled.is_empty() {
        announce(&mut *tx, ROUTING_CHANNEL).await?;
    }
    Ok(report)
}

/// A delivery about to be created, for [`insert_deliveries`].
struct NewDelivery<'a> {
    id: DeliveryId,
    event_id: &'a str,
    endpoint_id: &'a str,
    tenant_id: &'a str,
    ordering_key: Option<&'a str>,
}

/// Inserts pending deliveries, due at `now`, in one statement and in the order given (which
/// `seq` keeps: it is the order they are leased in).
async fn insert_deliveries(tx: &mut PgConnection, deliveries: &[NewDelivery<'_>], now: i64) -> Result<()> {
    if deliveries.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO deliveries (id, event_id, endpoint_id, tenant_id, ordering_key, status, attempts, \
             next_attempt_at, created_at, updated_at) \
         SELECT v.id, v.event_id, v.endpoint_id, v.tenant_id, v.ordering_key, 'pending', 0, $6, $6, $6 \
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) WITH ORDINALITY \
             AS v (id, event_id, endpoint_id, tenant_id, ordering_key, n) \
         ORDER BY v.n",
    )
    .bind(deliveries.iter().map(|d| d.id.as_str()).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.event_id).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.endpoint_id).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.tenant_id).collect::<Vec<_>>())
    .bind(deliveries.iter().map(|d| d.ordering_key).collect::<Vec<_>>())
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // Delivered at commit; with the deliveries they announce.
    announce(&mut *tx, WORK_CHANNEL).await?;
    Ok(())
}

/// The statement that inserts a Page record.
fn insert_page<'q>(
    key: &MasterKey,
    id: &'q PageRecordId,
    page: &'q NewPage,
    now: i64,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    let sealed = page.access_token.as_ref().map(|t| key.seal(PAGE_TOKEN, t.expose()));
    sqlx::query(
        "INSERT INTO pages (id, page_id, tenant_id, app_id, platform, name, access_token_sealed, \
         phone_number_ids, subscribed_fields, created_at, proof) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id.as_str())
    .bind(&page.page_id)
    .bind(page.tenant_id.as_str())
    .bind(&page.app_id)
    .bind(page.platform.as_str())
    .bind(page.name.as_deref())
    .bind(sealed)
    .bind(
        (!page.phone_number_ids.is_empty())
            .then(|| json_list(Some(&page.phone_number_ids)))
            .flatten(),
    )
    .bind(json_list(page.subscribed_fields.as_deref()))
    .bind(now)
    .bind(page.proof.as_str())
}

/// The statement that records a Page's move between tenants.
fn record_move<'q>(
    page_id: &'q str,
    from: Option<&'q TenantId>,
    to: &'q TenantId,
    reason: &'static str,
    now: i64,
) -> sqlx::query::Query<'q, Postgres, PgArguments> {
    sqlx::query(
        "INSERT INTO page_moves (page_id, from_tenant, to_tenant, reason, moved_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(page_id)
    .bind(from.map(TenantId::as_str))
    .bind(to.as_str())
    .bind(reason)
    .bind(now)
}

/// An event's entry in its POST, from its payload's `source`.
const INBOUND_EVENT_ENTRY: &str = "(e.payload::jsonb #>> '{source,entry}')::bigint";

#[async_trait]
impl Store for PgStore {
    async fn create_tenant(&self, name: &str, now: i64) -> Result<Tenant> {
        let id = TenantId::new();
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id.as_str())
            .bind(name)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(created_tenant(id, name, now))
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let rows: Vec<TenantRow> = sqlx::query_as(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(tenant_from_row).collect()
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        let row: TenantRow = sqlx::query_as(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = $1"))
            .bind(id.as_str())
            .fetch_one(&self.pool)
            .await?;
        tenant_from_row(row)
    }

    async fn create_api_key(&self, key: NewApiKey<'_>, now: i64) -> Result<ApiKey> {
        let id = ApiKeyId::new();
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, role, key_hash, key_prefix, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(id.as_str())
        .bind(key.tenant_id.as_str())
        .bind(key.name)
        .bind(key.role.as_str())
        .bind(key.key_hash)
        .bind(key.prefix)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(created_api_key(id, &key, now))
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        let row: Option<ApiKeyRow> = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(api_key_from_row).transpose()
    }

    async fn list_api_keys(&self, tenant_id: &TenantId) -> Result<Vec<ApiKey>> {
        let rows: Vec<ApiKeyRow> = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = $1 ORDER BY id DESC"
        ))
        .bind(tenant_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(api_key_from_row).collect()
    }

    async fn revoke_api_key(&self, tenant_id: &TenantId, id: &ApiKeyId, now: i64) -> Result<ApiKey> {
        let row: Option<ApiKeyRow> = sqlx::query_as(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND tenant_id = $3 \
             RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(now)
        .bind(id.as_str())
        .bind(tenant_id.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(api_key_from_row).transpose()?.ok_or(StoreError::NotFound)
    }

    async fn touch_api_key(&self, id: &ApiKeyId, now: i64) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $1 WHERE id = $2")
            .bind(now)
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        let rows: Vec<SigningKeyRow> = sqlx::query_as(&format!(
            "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys ORDER BY created_at DESC, kid DESC"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| signing_key_from_row(&self.key, row))
            .collect()
    }

    async fn rotate_signing_key(&self, kid: &str, secret: &Secret, now: i64, forget_before: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = $1 WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < $1")
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO signing_keys (kid, secret_sealed, created_at) VALUES ($1, $2, $3)")
            .bind(kid)
            .bind(self.key.seal(SIGNING_KEY, secret.expose()))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_app(&self, app: NewMetaApp, now: i64) -> Result<MetaApp> {
        let id = AppRecordId::new();
        sqlx::query(
            "INSERT INTO meta_apps (id, app_id, tenant_id, name, app_secret_sealed, verify_token_sealed, \
             verify_token_hash, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id.as_str())
        .bind(&app.app_id)
        .bind(app.tenant_id.as_ref().map(TenantId::as_str))
        .bind(app.name.as_deref())
        .bind(self.key.seal(APP_SECRET, app.app_secret.expose()))
        .bind(self.key.seal(VERIFY_TOKEN, app.verify_token.expose()))
        .bind(verify_token_hash(&app.verify_token))
        .bind(now)
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.announce(ROUTING_CHANNEL).await;
        Ok(created_app(id, app, now))
    }

    async fn list_apps(&self, tenant_id: Option<&TenantId>) -> Result<Vec<MetaApp>> {
        let rows: Vec<AppRow> = match tenant_id {
            Some(tenant) => {
                sqlx::query_as(&format!(
                    "SELECT {APP_COLUMNS} FROM meta_apps WHERE tenant_id = $1 OR tenant_id IS NULL ORDER BY id"
                ))
                .bind(tenant.as_str())
                .fetch_all(&self.pool)
                .await?
            }
            None => {
                sqlx::query_as(&format!("SELECT {APP_COLUMNS} FROM meta_apps ORDER BY id"))
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.into_iter().map(|row| app_from_row(&self.key, row)).collect()
    }

    async fn get_app(&self, app_id: &str) -> Result<MetaApp> {
        let row: AppRow = sqlx::query_as(&format!("SELECT {APP_COLUMNS} FROM meta_apps WHERE app_id = $1"))
            .bind(app_id)
            .fetch_one(&self.pool)
            .await?;
        app_from_row(&self.key, row)
    }

    async fn update_app(&self, app_id: &str, update: AppUpdate, now: i64) -> Result<MetaApp> {
        let mut query = QueryBuilder::<Postgres>::new("UPDATE meta_apps SET updated_at = ");
        query.push_bind(now);
        if let Some(name) = &update.name {
            query.push(", name = ").push_bind(name.as_deref());
        }
        if let Some(token) = &update.verify_token {
            query
                .push(", verify_token_sealed = ")
                .push_bind(self.key.seal(VERIFY_TOKEN, token.expose()))
                .push(", verify_token_hash = ")
                .push_bind(verify_token_hash(token));
        }
        query.push(" WHERE app_id = ").push_bind(app_id);
        query.push(format!(" RETURNING {APP_COLUMNS}"));
        let row: AppRow = query.build_query_as().fetch_one(&self.pool).await?;
        self.announce(ROUTING_CHANNEL).await;
        app_from_row(&self.key, row)
    }

    async fn rotate_app_secret(
        &self,
        app_id: &str,
        secret: &Secret,
        previous_valid_until: i64,
        now: i64,
    ) -> Result<MetaApp> {
        let row: AppRow = sqlx::query_as(&format!(
            "UPDATE meta_apps SET previous_app_secret_sealed = app_secret_sealed, \
             previous_secret_expires_at = $1, app_secret_sealed = $2, updated_at = $3 \
             WHERE app_id = $4 RETURNING {APP_COLUMNS}"
        ))
        .bind(previous_valid_until)
        .bind(self.key.seal(APP_SECRET, secret.expose()))
        .bind(now)
        .bind(app_id)
        .fetch_one(&self.pool)
        .await?;
        self.announce(ROUTING_CHANNEL).await;
        app_from_row(&self.key, row)
    }

    async fn delete_app(&self, app_id: &str) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        let (pages,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pages WHERE app_id = $1")
            .bind(app_id)
            .fetch_one(&mut *tx)
            .await?;
        if pages > 0 {
            return Err(StoreError::Conflict {
                constraint: String::from("pages.app_id"),
            });
        }
        // A Page onboarded meanwhile makes the reference (pages_app_id_fkey) refuse the delete.
        let deleted = sqlx::query("DELETE FROM meta_apps WHERE app_id = $1")
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        announce(&mut *tx, ROUTING_CHANNEL).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn create_page(&self, page: NewPage, now: i64) -> Result<Page> {
        let id = PageRecordId::new();
        insert_page(&self.key, &id, &page, now).execute(&self.pool).await?;
        self.announce(ROUTING_CHANNEL).await;
        Ok(created_page(id, page, now))
    }

    async fn take_over_page(&self, page: NewPage, now: i64) -> Result<(Page, Option<TenantId>)> {
        let mut tx = self.pool.begin().await?;
        let held: Option<(String, String)> = sqlx::query_as("SELECT tenant_id, proof FROM pages WHERE page_id = $1")
            .bind(&page.page_id)
            .fetch_optional(&mut *tx)
            .await?;
        let previous = match held {
            None => None,
            Some((_, proof)) if PageProof::parse(&proof).is_none_or(PageProof::is_proven) => {
                return Err(StoreError::Conflict {
                    constraint: String::from("pages_page_id_key"),
                });
            }
            Some((tenant, _)) => {
                sqlx::query("DELETE FROM pages WHERE page_id = $1")
                    .bind(&page.page_id)
                    .execute(&mut *tx)
                    .await?;
                Some(parse_id::<TenantId>(&tenant)?)
            }
        };
        let id = PageRecordId::new();
        insert_page(&self.key, &id, &page, now).execute(&mut *tx).await?;
        let moved = previous.filter(|from| *from != page.tenant_id);
        if let Some(from) = &moved {
            record_move(&page.page_id, Some(from), &page.tenant_id, "proven_claim", now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.announce(ROUTING_CHANNEL).await;
        Ok((created_page(id, page, now), moved))
    }

    async fn assign_page(
        &self,
        page_id: &str,
        tenant_id: &TenantId,
        app_id: &str,
        now: i64,
    ) -> Result<(Page, Option<TenantId>)> {
        let mut tx = self.pool.begin().await?;
        let (from,): (String,) = sqlx::query_as("SELECT tenant_id FROM pages WHERE page_id = $1")
            .bind(page_id)
            .fetch_one(&mut *tx)
            .await?;
        let from: TenantId = parse_id(&from)?;
        let moved = (from != *tenant_id).then_some(from);
        // A token and subscription state are the tenant's that gave them: they do not move.
        let clear = if moved.is_some() {
            ", access_token_sealed = NULL, subscribed_fields = NULL, subscription_status = NULL, \
             subscription_detail = NULL, subscription_checked_at = NULL"
        } else {
            ""
        };
        let row: PageRow = sqlx::query_as(&format!(
            "UPDATE pages SET tenant_id = $1, app_id = $2, proof = 'operator'{clear} WHERE page_id = $3 \
             RETURNING {PAGE_COLUMNS}"
        ))
        .bind(tenant_id.as_str())
        .bind(app_id)
        .bind(page_id)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(from) = &moved {
            record_move(page_id, Some(from), tenant_id, "operator", now)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.announce(ROUTING_CHANNEL).await;
        Ok((page_from_row(row)?, moved))
    }

    async fn all_pages(&self) -> Result<Vec<Page>> {
        let rows: Vec<PageRow> = sqlx::query_as(&format!("SELECT {PAGE_COLUMNS} FROM pages ORDER BY id"))
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(page_from_row).collect()
    }

    async fn page_moves(&self, page_id: Option<&str>) -> Result<Vec<PageMove>> {
        let rows: Vec<PageMoveRow> = sqlx::query_as(
            "SELECT page_id, from_tenant, to_tenant, reason, moved_at FROM page_moves \
             WHERE $1::text IS NULL OR page_id = $1 ORDER BY id DESC",
        )
        .bind(page_id)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(page_move_from_row).collect()
    }

    async fn list_pages(&self, tenant_id: &TenantId) -> Result<Vec<Page>> {
        let rows: Vec<PageRow> = sqlx::query_as(&format!(
            "SELECT {PAGE_COLUMNS} FROM pages WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(page_from_row).collect()
    }

    async fn get_page(&self, tenant_id: &TenantId, page_id: &str) -> Result<Page> {
        let row: PageRow = sqlx::query_as(&format!(
            "SELECT {PAGE_COLUMNS} FROM pages WHERE tenant_id = $1 AND page_id = $2"
        ))
        .bind(tenant_id.as_str())
        .bind(page_id)
        .fetch_one(&self.pool)
        .await?;
        page_from_row(row)
    }

    async fn page_owner(&self, page_id: &str) -> Result<Option<(TenantId, PageProof)>> {
        let row: Option<(String, String)> = sqlx::query_as("SELECT tenant_id, proof FROM pages WHERE page_id = $1")
            .bind(page_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|(tenant, proof)| {
            let proof =
                PageProof::parse(&proof).ok_or_else(|| StoreError::Corrupt(format!("unknown page proof `{proof}`")))?;
            Ok((parse_id(&tenant)?, proof))
        })
        .transpose()
    }

    async fn page_credentials(&self, tenant_id: &TenantId, page_id: &str) -> Result<PageCredentials> {
        let page = self.get_page(tenant_id, page_id).await?;
        let row: PageSecretsRow = sqlx::query_as(
            "SELECT p.access_token_sealed, a.app_secret_sealed FROM pages p JOIN meta_apps a ON a.app_id = p.app_id \
             WHERE p.page_id = $1",
        )
        .bind(page_id)
        .fetch_one(&self.pool)
        .await?;
        page_credentials(&self.key, page, row)
    }

    async fn pages_with_tokens(&self) -> Result<Vec<PageCredentials>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT page_id, tenant_id FROM pages WHERE access_token_sealed IS NOT NULL ORDER BY id")
                .fetch_all(&self.pool)
                .await?;
        let mut pages = Vec::with_capacity(rows.len());
        for (page_id, tenant_id) in rows {
            match self.page_credentials(&parse_id(&tenant_id)?, &page_id).await {
                Ok(page) => pages.push(page),
                // Offboarded since the list was read.
                Err(StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(pages)
    }

    async fn set_page_fields(&self, tenant_id: &TenantId, page_id: &str, fields: Option<&[String]>) -> Result<Page> {
        let row: PageRow = sqlx::query_as(&format!(
            "UPDATE pages SET subscribed_fields = $1 WHERE tenant_id = $2 AND page_id = $3 RETURNING {PAGE_COLUMNS}"
        ))
        .bind(json_list(fields))
        .bind(tenant_id.as_str())
        .bind(page_id)
        .fetch_one(&self.pool)
        .await?;
        self.announce(ROUTING_CHANNEL).await;
        page_from_row(row)
    }

    async fn record_subscription_check(&self, page_id: &str, check: &SubscriptionCheck) -> Result<()> {
        sqlx::query(
            "UPDATE pages SET subscription_status = $1, subscription_detail = $2, subscription_checked_at = $3 \
             WHERE page_id = $4",
        )
        .bind(&check.status)
        .bind(check.detail.as_deref())
        .bind(check.checked_at)
        .bind(page_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_page(&self, tenant_id: &TenantId, page_id: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM pages WHERE tenant_id = $1 AND page_id = $2")
            .bind(tenant_id.as_str())
            .bind(page_id)
            .execute(&self.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.announce(ROUTING_CHANNEL).await;
        Ok(())
    }

    async fn set_tenant_auto_resubscribe(&self, id: &TenantId, on: bool) -> Result<Tenant> {
        let row: TenantRow = sqlx::query_as(&format!(
            "UPDATE tenants SET auto_resubscribe = $1 WHERE id = $2 RETURNING {TENANT_COLUMNS}"
        ))
        .bind(on)
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await?;
        tenant_from_row(row)
    }

    async fn create_endpoint(&self, endpoint: NewEndpoint, now: i64) -> Result<Endpoint> {
        let id = EndpointId::new();
        sqlx::query(
            "INSERT INTO endpoints (id, tenant_id, url, description, event_types, page_ids, include_standby, \
             include_echoes, secret_sealed, max_concurrency, rate_limit, ordered, format, headers, ed25519_sealed, \
             enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, TRUE, $16, $16)",
        )
        .bind(id.as_str())
        .bind(endpoint.tenant_id.as_str())
        .bind(&endpoint.url)
        .bind(endpoint.description.as_deref())
        .bind(json_list(endpoint.filter.event_types.as_deref()))
        .bind(json_list(endpoint.filter.page_ids.as_deref()))
        .bind(endpoint.filter.include_standby)
        .bind(endpoint.filter.include_echoes)
        .bind(self.key.seal(ENDPOINT_SECRET, &endpoint.secret.expose()))
        .bind(i64::from(endpoint.controls.max_concurrency))
        .bind(endpoint.controls.rate_limit.map(i64::from))
        .bind(endpoint.controls.ordered)
        .bind(endpoint.format.as_str())
        .bind(json_headers(&endpoint.headers))
        .bind(
            endpoint
                .ed25519
                .as_ref()
                .map(|key| self.key.seal(ENDPOINT_ED25519, &key.expose())),
        )
        .bind(now)
        .execute(&self.pool)
        .await?;
        self.announce(ROUTING_CHANNEL).await;
        Ok(created_endpoint(id, endpoint, now))
    }

    async fn list_endpoints(&self, tenant_id: &TenantId) -> Result<Vec<Endpoint>> {
        let rows: Vec<EndpointRow> = sqlx::query_as(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = $1 ORDER BY id"
        ))
        .bind(tenant_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter()
            .map(|row| shown_endpoint_from_row(&self.key, row))
            .collect()
    }

    async fn get_endpoint(&self, tenant_id: &TenantId, id: &EndpointId) -> Result<Endpoint> {
        let row: EndpointRow = sqlx::query_as(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id.as_str())
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await?;
        shown_endpoint_from_row(&self.key, row)
    }

    async fn delete_endpoint(&self, tenant_id: &TenantId, id: &EndpointId) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM endpoints WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id.as_str())
            .bind(id.as_str())
            .execute(&self.pool)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.announce(ROUTING_CHANNEL).await;
        Ok(())
    }

    async fn update_endpoint(
        &self,
        tenant_id: &TenantId,
        id: &EndpointId,
        update: EndpointUpdate,
        now: i64,
    ) -> Result<Endpoint> {
        let mut query = QueryBuilder::<Postgres>::new("UPDATE endpoints SET updated_at = ");
        query.push_bind(now);
        push_endpoint_changes(&mut query, &self.key, &update);
        match update.enabled {
            Some(true) => {
                query.push(
                    ", enabled = TRUE, disabled_reason = NULL, consecutive_failures = 0, failing_since = NULL, \
                     probe_at = NULL",
                );
            }
            Some(false) => {
                query.push(", enabled = FALSE, disabled_reason = 'disabled by the tenant'");
            }
            None => {}
        }
        query.push(" WHERE tenant_id = ").push_bind(tenant_id.as_str());
        query.push(" AND id = ").push_bind(id.as_str());
        query.push(format!(" RETURNING {ENDPOINT_COLUMNS}"));
        let mut tx = self.pool.begin().await?;
        let was_ordered: Option<bool> =
            sqlx::query_scalar("SELECT ordered FROM endpoints WHERE tenant_id = $1 AND id = $2")
                .bind(tenant_id.as_str())
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let row: EndpointRow = query.build_query_as().fetch_one(&mut *tx).await?;
        // Only a change of order touches the pending deliveries (a walk over the endpoint's backlog).
        if let Some(controls) = update.controls.as_ref().filter(|c| was_ordered != Some(c.ordered)) {
            // Queued deliveries follow the endpoint's choice: their conversation as ordering key
            // when it keeps order, none (and no index entry) when it does not.
            let statement = if controls.ordered {
                "UPDATE delivery_queue q SET ordering_key = e.payload::jsonb ->> 'conversation_id' \
                 FROM deliveries d JOIN events e ON e.id = d.event_id \
                 WHERE d.id = q.delivery_id AND q.endpoint_id = $1 AND q.ordering_key IS NULL"
            } else {
                "UPDATE delivery_queue SET ordering_key = NULL WHERE endpoint_id = $1 AND ordering_key IS NOT NULL"
            };
            sqlx::query(statement).bind(id.as_str()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        self.announce(ROUTING_CHANNEL).await;
        shown_endpoint_from_row(&self.key, row)
    }

    async fn rotate_endpoint_secret(
        &self,
        tenant_id: &TenantId,
        id: &EndpointId,
        secret: EndpointSecret,
        previous_until: i64,
        now: i64,
    ) -> Result<Endpoint> {
        let row: EndpointRow = sqlx::query_as(&format!(
            "UPDATE endpoints SET previous_secret_sealed = secret_sealed, previous_secret_expires_at = $1, \
             secret_sealed = $2, updated_at = $3 WHERE tenant_id = $4 AND id = $5 RETURNING {ENDPOINT_COLUMNS}"
        ))
        .bind(previous_until)
        .bind(self.key.seal(ENDPOINT_SECRET, &secret.expose()))
        .bind(now)
        .bind(tenant_id.as_str())
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await?;
        self.announce(ROUTING_CHANNEL).await;
        shown_endpoint_from_row(&self.key, row)
    }

    async fn load_routing(&self) -> Result<RoutingData> {
        // One snapshot for the three reads, so a Page is never routed to an app the same reload
        // does not see.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let apps: Vec<AppRow> = sqlx::query_as(&format!("SELECT {APP_COLUMNS} FROM meta_apps"))
            .fetch_all(&mut *tx)
            .await?;
        let pages: Vec<PageRow> = sqlx::query_as(&format!("SELECT {PAGE_COLUMNS} FROM pages"))
            .fetch_all(&mut *tx)
            .await?;
        let endpoints: Vec<EndpointRow> =
            sqlx::query_as(&format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE enabled"))
                .fetch_all(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(RoutingData {
            apps: apps
                .into_iter()
                .map(|row| app_from_row(&self.key, row))
                .collect::<Result<_>>()?,
            pages: pages.into_iter().map(page_from_row).collect::<Result<_>>()?,
            endpoints: endpoints.into_iter().map(endpoint_from_row).collect::<Result<_>>()?,
        })
    }

    async fn ingest(&self, batch: &[IngestRequest], now: i64) -> Result<Vec<IngestReceipt>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        // The batch is one statement, so one round trip and its own transaction: the raw POSTs,
        // the dedup keys, the events whose keys were new, and their deliveries. Each step reads
        // what the one before returned; as statements in a transaction the batch took eight round
        // trips, each a wait for the server's process. The work is announced after the commit
        // ([`WorkAnnouncer`]).
        let events: Vec<(usize, &NewEvent)> = batch
            .iter()
            .enumerate()
            .flat_map(|(i, req)| req.events.iter().map(move |e| (i, e)))
            .collect();

        // Within the batch the first occurrence of a key wins: the others are redeliveries. The
        // unique key drops those of earlier batches, and RETURNING tells which keys are new. Keys
        // go in key order: a transaction waits on another's uncommitted row with the same key,
        // and two nodes inserting the same keys in one order cannot wait on each other in a cycle.
        let mut seen = HashSet::with_capacity(events.len());
        let firsts: Vec<(&IngestRequest, &NewEvent, [u8; rows::DEDUP_KEY_LEN])> = events
            .iter()
            .map(|&(i, event)| (&batch[i], event, rows::dedup_key(event)))
            .filter(|(_, _, key)| seen.insert(*key))
            .collect();
        let mut keys: Vec<&[u8]> = firsts.iter().map(|(_, _, key)| &key[..]).collect();
        keys.sort_unstable();

        // Deliveries for every event that may be new, in the order `new_deliveries` gives (`seq`
        // is the order they are leased in); those of events found to be redeliveries are dropped
        // by the statement.
        let candidates: HashSet<&str> = firsts.iter().map(|(_, e, _)| e.id.as_str()).collect();
        let (_, targets) = rows::new_deliveries(batch.len(), &events, |id| candidates.contains(id));
        let delivery_ids: Vec<DeliveryId> = targets.iter().map(|_| DeliveryId::new()).collect();

        let unroutable: Vec<Option<String>> = batch
            .iter()
            .map(|req| (!req.unroutable.is_empty()).then(|| serde_json::to_string(&req.unroutable).unwrap_or_default()))
            .collect();
        let raw: Vec<[Option<i64>; 3]> = firsts.iter().map(|(_, e, _)| rows::span_columns(e.raw)).collect();
        let text: Vec<[Option<i64>; 3]> = firsts.iter().map(|(_, e, _)| rows::span_columns(e.text)).collect();

        let (inserted, queued): (Vec<String>, bool) = sqlx::query_as(
            "WITH posts AS ( \
                 INSERT INTO inbound (id, received_at, app_id, object, body, entries, events, unroutable_entries) \
                 SELECT * FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::bytea[], $6::int8[], \
                     $7::int8[], $8::text[])), \
             fresh AS ( \
                 INSERT INTO dedup_keys (key) \
                 SELECT v.key FROM UNNEST($9::bytea[]) WITH ORDINALITY AS v (key, n) ORDER BY v.n \
                 ON CONFLICT DO NOTHING RETURNING key), \
             kept AS ( \
                 INSERT INTO events (id, tenant_id, page_id, type, inbound_id, received_at, payload, raw_at, \
                     raw_start, raw_len, text_at, text_start, text_len) \
                 SELECT v.id, v.tenant_id, v.page_id, v.type, v.inbound_id, v.received_at, v.payload, v.raw_at, \
                     v.raw_start, v.raw_len, v.text_at, v.text_start, v.text_len \
                 FROM UNNEST($10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::int8[], \
                     $16::text[], $17::int8[], $18::int8[], $19::int8[], $20::int8[], $21::int8[], $22::int8[], \
                     $23::bytea[]) \
                     AS v (id, tenant_id, page_id, type, inbound_id, received_at, payload, raw_at, raw_start, \
                         raw_len, text_at, text_start, text_len, key) \
                 WHERE v.key IN (SELECT key FROM fresh) \
                 RETURNING id), \
             queued AS ( \
                 INSERT INTO deliveries (id, event_id, endpoint_id, tenant_id, ordering_key, status, attempts, \
                     next_attempt_at, created_at, updated_at) \
                 SELECT d.id, d.event_id, d.endpoint_id, d.tenant_id, CASE WHEN ep.ordered THEN d.conversation END, \
                     'pending', 0, $29, $29, $29 \
                 FROM UNNEST($24::text[], $25::text[], $26::text[], $27::text[], $28::text[]) WITH ORDINALITY \
                     AS d (id, event_id, endpoint_id, tenant_id, conversation, n) \
                 LEFT JOIN endpoints ep ON ep.id = d.endpoint_id \
                 WHERE d.event_id IN (SELECT id FROM kept) \
                 ORDER BY d.n \
                 RETURNING 1) \
             SELECT ARRAY(SELECT id FROM kept), EXISTS (SELECT 1 FROM queued)",
        )
        .bind(batch.iter().map(|req| req.inbound_id.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|req| req.received_at).collect::<Vec<_>>())
        .bind(batch.iter().map(|req| req.app_id.as_deref()).collect::<Vec<_>>())
        .bind(batch.iter().map(|req| req.object.as_str()).collect::<Vec<_>>())
        .bind(batch.iter().map(|req| &req.body[..]).collect::<Vec<_>>())
        .bind(batch.iter().map(|req| i64::from(req.entries)).collect::<Vec<_>>())
        .bind(
            batch
                .iter()
                .map(|req| i64::try_from(req.events.len()).unwrap_or(i64::MAX))
                .collect::<Vec<_>>(),
        )
        .bind(&unroutable)
        .bind(&keys)
        .bind(firsts.iter().map(|(_, e, _)| e.id.as_str()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|(_, e, _)| e.tenant_id.as_str()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|(_, e, _)| e.page_id.as_str()).collect::<Vec<_>>())
        .bind(firsts.iter().map(|(_, e, _)| e.event_type.as_str()).collect::<Vec<_>>())
        .bind(
            firsts
                .iter()
                .map(|(post, _, _)| post.inbound_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(firsts.iter().map(|(post, _, _)| post.received_at).collect::<Vec<_>>())
        .bind(firsts.iter().map(|(_, e, _)| e.payload.as_str()).collect::<Vec<_>>())
        .bind(raw.iter().map(|r| r[0]).collect::<Vec<_>>())
        .bind(raw.iter().map(|r| r[1]).collect::<Vec<_>>())
        .bind(raw.iter().map(|r| r[2]).collect::<Vec<_>>())
        .bind(text.iter().map(|r| r[0]).collect::<Vec<_>>())
        .bind(text.iter().map(|r| r[1]).collect::<Vec<_>>())
        .bind(text.iter().map(|r| r[2]).collect::<Vec<_>>())
        .bind(firsts.iter().map(|(_, _, key)| &key[..]).collect::<Vec<_>>())
        .bind(delivery_ids.iter().map(DeliveryId::as_str).collect::<Vec<_>>())
        .bind(targets.iter().map(|(e, _)| e.id.as_str()).collect::<Vec<_>>())
        .bind(
            targets
                .iter()
                .map(|(_, endpoint)| endpoint.as_str())
                .collect::<Vec<_>>(),
        )
        .bind(targets.iter().map(|(e, _)| e.tenant_id.as_str()).collect::<Vec<_>>())
        .bind(
            targets
                .iter()
                .map(|(e, _)| e.conversation_id.as_deref())
                .collect::<Vec<_>>(),
        )
        .bind(now)
        .fetch_one(&self.pool)
        .await?;
        if queued {
            self.work.announce();
        }
        let inserted: HashSet<&str> = inserted.iter().map(String::as_str).collect();
        let (receipts, _) = rows::new_deliveries(batch.len(), &events, |id| inserted.contains(id));
        Ok(receipts)
    }

    async fn prune(&self, now: i64, default_retention_ms: i64) -> Result<PruneReport> {
        const STEP: i64 = 1_000;
        const DAY_MS: i64 = 86_400_000;
        let mut report = PruneReport::default();
        // Tenant by tenant, each with its own retention, walking its events from the oldest
        // through (tenant_id, id) (ids are minted from the arrival time, `EventId::at`). Deleting
        // an event deletes its deliveries and their attempts (the references cascade).
        let tenants: Vec<(String, Option<i64>)> = sqlx::query_as("SELECT id, retention_days FROM tenants")
            .fetch_all(&self.pool)
            .await?;
        for (tenant, days) in tenants {
            let cutoff = now.saturating_sub(days.map_or(default_retention_ms, |d| d.saturating_mul(DAY_MS)));
            let before = EventId::first_at(cutoff);
            report.events += in_steps(&self.pool, STEP, || {
                sqlx::query(
                    "DELETE FROM events WHERE id IN ( \
                       SELECT e.id FROM events e WHERE e.tenant_id = $1 AND e.id < $2 \
                         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'pending') \
                       LIMIT $3 FOR UPDATE SKIP LOCKED)",
                )
                .bind(tenant.as_str())
                .bind(before.as_str())
            })
            .await?;
        }
        // A POST goes with the last of its events: their items' bytes are read from its body. Its
        // id is minted from its arrival time (`InboundId::at`), so the old ones are found by id.
        let before = InboundId::first_at(now.saturating_sub(default_retention_ms));
        report.inbound += in_steps(&self.pool, STEP, || {
            sqlx::query(
                "DELETE FROM inbound WHERE id IN \
                 (SELECT id FROM inbound WHERE id < $1 \
                  AND NOT EXISTS (SELECT 1 FROM events e WHERE e.inbound_id = inbound.id) \
                  LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(before.as_str())
        })
        .await?;
        let before = RefusalId::first_at(now.saturating_sub(default_retention_ms));
        report.refusals += in_steps(&self.pool, STEP, || {
            sqlx::query(
                "DELETE FROM refusals WHERE id IN (SELECT id FROM refusals WHERE id < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(before.as_str())
        })
        .await?;
        Ok(report)
    }

    async fn record_refusals(&self, refusals: &[Refusal]) -> Result<()> {
        if refusals.is_empty() {
            return Ok(());
        }
        let mut insert = QueryBuilder::<Postgres>::new(
            "INSERT INTO refusals (id, received_at, route, app_id, size, reason, detail) ",
        );
        insert.push_values(refusals, |mut row, r| {
            row.push_bind(r.id.as_str())
                .push_bind(r.received_at)
                .push_bind(&r.route)
                .push_bind(r.app_id.as_deref())
                .push_bind(i64::try_from(r.size).unwrap_or(i64::MAX))
                .push_bind(&r.reason)
                .push_bind(r.detail.as_deref());
        });
        insert.build().execute(&self.pool).await?;
        Ok(())
    }

    async fn query_refusals(&self, query: &RefusalQuery) -> Result<Vec<Refusal>> {
        let rows: Vec<RefusalRow> = sqlx::query_as(&format!(
            "SELECT {REFUSAL_COLUMNS} FROM refusals WHERE ($1::text IS NULL OR id < $1) \
             AND ($2::text[] IS NULL OR app_id = ANY($2)) ORDER BY id DESC LIMIT $3"
        ))
        .bind(query.before.as_deref())
        .bind(query.app_ids.as_deref())
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(refusal_from_row).collect()
    }

    async fn set_tenant_retention(&self, id: &TenantId, days: Option<u32>) -> Result<Tenant> {
        let row: TenantRow = sqlx::query_as(&format!(
            "UPDATE tenants SET retention_days = $1 WHERE id = $2 RETURNING {TENANT_COLUMNS}"
        ))
        .bind(days.map(i64::from))
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await?;
        tenant_from_row(row)
    }

    async fn release_dedup_keys(&self, before: i64) -> Result<u64> {
        let bound = rows::dedup_time(before);
        in_steps(&self.pool, 5_000, || {
            sqlx::query(
                "DELETE FROM dedup_keys WHERE key IN \
                 (SELECT key FROM dedup_keys WHERE key < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)",
            )
            .bind(bound.to_vec())
        })
        .await
    }

    async fn send_test_event(&self, event: &NewEvent, endpoint: &EndpointId, now: i64) -> Result<DeliveryId> {
        let delivery = DeliveryId::new();
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO events (id, tenant_id, page_id, type, inbound_id, received_at, payload) \
             VALUES ($1, $2, $3, $4, '', $5, $6)",
        )
        .bind(event.id.as_str())
        .bind(event.tenant_id.as_str())
        .bind(event.page_id.as_str())
        .bind(event.event_type.as_str())
        .bind(now)
        .bind(event.payload.as_str())
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO deliveries (id, event_id, endpoint_id, tenant_id, status, attempts, next_attempt_at, \
             created_at, updated_at) SELECT $1, $2, id, tenant_id, 'pending', 0, $3, $3, $3 FROM endpoints \
             WHERE id = $4 AND tenant_id = $5",
        )
        .bind(delivery.as_str())
        .bind(event.id.as_str())
        .bind(now)
        .bind(endpoint.as_str())
        .bind(event.tenant_id.as_str())
        .execute(&mut *tx)
        .await?;
        announce(&mut *tx, WORK_CHANNEL).await?;
        tx.commit().await?;
        Ok(delivery)
    }

    async fn emit_operational(&self, events: &[OperationalEvent], now: i64) -> Result<usize> {
        let mut created = 0;
        for event in events {
            let endpoints: Vec<EndpointRow> = sqlx::query_as(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = $1 AND enabled ORDER BY id"
            ))
            .bind(event.tenant_id.as_str())
            .fetch_all(&self.pool)
            .await?;
            let mut wanted = Vec::new();
            for row in endpoints {
                let endpoint = endpoint_from_row(row)?;
                if endpoint.filter.wants_operational(&event.event_type) {
                    wanted.push(endpoint.id);
                }
            }
            let mut tx = self.pool.begin().await?;
            sqlx::query(
                "INSERT INTO events (id, tenant_id, page_id, type, inbound_id, received_at, payload) \
                 VALUES ($1, $2, '', $3, '', $4, $5)",
            )
            .bind(event.id.as_str())
            .bind(event.tenant_id.as_str())
            .bind(event.event_type.as_str())
            .bind(now)
            .bind(event.to_json())
            .execute(&mut *tx)
            .await?;
            let deliveries: Vec<NewDelivery<'_>> = wanted
                .iter()
                .map(|endpoint| NewDelivery {
                    id: DeliveryId::new(),
                    event_id: event.id.as_str(),
                    endpoint_id: endpoint.as_str(),
                    tenant_id: event.tenant_id.as_str(),
                    ordering_key: None,
                })
                .collect();
            insert_deliveries(&mut tx, &deliveries, now).await?;
            tx.commit().await?;
            created += wanted.len();
        }
        Ok(created)
    }

    async fn lease_due(&self, lease: Lease) -> Result<Vec<LeasedDelivery>> {
        let endpoints = self.eligible(&lease).await?;
        if endpoints.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.pool.begin().await?;
        let leased = Self::take(&mut tx, &lease, endpoints).await?;
        tx.commit().await?;
        self.read_leased(&leased).await
    }

    async fn record_attempts(
        &self,
        records: &[AttemptRecord],
        now: i64,
        health: &HealthPolicy,
    ) -> Result<HealthReport> {
        if records.is_empty() {
            return Ok(HealthReport::default());
        }
        let mut tx = self.pool.begin().await?;
        let report = record_in(&mut tx, records, now, health).await?;
        tx.commit().await?;
        Ok(report)
    }

    fn writes_in_parallel(&self) -> bool {
        true
    }

    async fn settle(
        &self,
        records: &[AttemptRecord],
        now: i64,
        health: &HealthPolicy,
        lease: Option<Lease>,
    ) -> Result<(HealthReport, Leased)> {
        let endpoints = match &lease {
            Some(lease) => self.eligible(lease).await?,
            None => Vec::new(),
        };
        if records.is_empty() && endpoints.is_empty() {
            return Ok((HealthReport::default(), Leased::default()));
        }
        // One transaction (one commit) records what was sent and leases what is next.
        let mut tx = self.pool.begin().await?;
        let report = record_in(&mut tx, records, now, health).await?;
        let leased = match &lease {
            Some(lease) if !endpoints.is_empty() => Self::take(&mut tx, lease, endpoints).await?,
            _ => Leased::default(),
        };
        tx.commit().await?;
        Ok((report, leased))
    }

    async fn load_leased(&self, leased: Leased) -> Result<Vec<LeasedDelivery>> {
        self.read_leased(&leased).await
    }

    async fn list_events(&self, tenant_id: &TenantId, limit: u32) -> Result<Vec<StoredEvent>> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(tenant_id.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.events_with_items(rows).await
    }

    async fn deliveries_of_event(&self, tenant_id: &TenantId, event_id: &EventId) -> Result<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = $1 AND event_id = $2 ORDER BY id"
        ))
        .bind(tenant_id.as_str())
        .bind(event_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(delivery_from_row).collect()
    }

    async fn list_deliveries(&self, tenant_id: &TenantId, limit: u32) -> Result<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = $1 ORDER BY id DESC LIMIT $2"
        ))
        .bind(tenant_id.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(delivery_from_row).collect()
    }

    async fn attempts_of_delivery(&self, tenant_id: &TenantId, delivery_id: &DeliveryId) -> Result<Vec<Attempt>> {
        let rows: Vec<AttemptRow> = sqlx::query_as(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
             WHERE d.tenant_id = $1 AND a.delivery_id = $2 \
             UNION ALL \
             SELECT d.attempts, d.delivered_started_at, d.delivered_duration_ms, d.last_status, d.delivered_outcome, \
                 d.last_error, d.delivered_excerpt FROM deliveries d \
             WHERE d.tenant_id = $1 AND d.id = $2 AND d.delivered_outcome IS NOT NULL \
             ORDER BY 1, 2"
        ))
        .bind(tenant_id.as_str())
        .bind(delivery_id.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(attempt_from_row).collect())
    }

    async fn list_inbound(&self, limit: u32) -> Result<Vec<Inbound>> {
        let rows: Vec<InboundRow> = sqlx::query_as(&format!(
            "SELECT {INBOUND_COLUMNS} FROM inbound i ORDER BY i.id DESC LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(inbound_from_row).collect()
    }

    async fn query_events(&self, tenant_id: &TenantId, query: &EventQuery) -> Result<Vec<StoredEvent>> {
        // `messenger.*` is a family; anything else an exact type.
        let (exact, family) = match query.event_type.as_deref() {
            Some(t) => match t.strip_suffix(".*") {
                Some(family) => (None, Some(format!("{family}.%"))),
                None => (Some(t), None),
            },
            None => (None, None),
        };
        // The payload is kept as text (exactly as sent); it is parsed only when filtering on the
        // sender, and `json` (unlike `jsonb`) parses without building a tree.
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 \
             AND ($2::text IS NULL OR id < $2) AND ($3::text IS NULL OR type = $3) \
             AND ($4::text IS NULL OR type LIKE $4) AND ($5::text IS NULL OR page_id = $5) \
             AND ($6::text IS NULL OR payload::json ->> 'sender_id' = $6) \
             AND ($7::int8 IS NULL OR received_at >= $7) AND ($8::int8 IS NULL OR received_at < $8) \
             ORDER BY id DESC LIMIT $9"
        ))
        .bind(tenant_id.as_str())
        .bind(query.before.as_deref())
        .bind(exact)
        .bind(family)
        .bind(query.page_id.as_deref())
        .bind(query.sender_id.as_deref())
        .bind(query.since)
        .bind(query.until)
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        self.events_with_items(rows).await
    }

    async fn get_event(&self, tenant_id: &TenantId, id: &EventId) -> Result<StoredEvent> {
        let row: EventRow = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id.as_str())
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await?;
        let mut events = self.events_with_items(vec![row]).await?;
        events.pop().ok_or(StoreError::NotFound)
    }

    async fn query_deliveries(&self, tenant_id: &TenantId, query: &DeliveryQuery) -> Result<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = $1 AND ($2::text IS NULL OR id < $2) \
             AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR endpoint_id = $4) \
             AND ($5::text IS NULL OR event_id = $5) \
             ORDER BY id DESC LIMIT $6"
        ))
        .bind(tenant_id.as_str())
        .bind(query.before.as_deref())
        .bind(query.status.map(DeliveryStatus::as_str))
        .bind(query.endpoint_id.as_ref().map(EndpointId::as_str))
        .bind(query.event_id.as_ref().map(EventId::as_str))
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(delivery_from_row).collect()
    }

    async fn get_delivery(&self, tenant_id: &TenantId, id: &DeliveryId) -> Result<Delivery> {
        let row: DeliveryRow = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = $1 AND id = $2"
        ))
        .bind(tenant_id.as_str())
        .bind(id.as_str())
        .fetch_one(&self.pool)
        .await?;
        delivery_from_row(row)
    }

    async fn query_inbound(&self, query: &InboundQuery) -> Result<Vec<Inbound>> {
        let columns = match query.tenant_id {
            Some(_) => inbound_columns_for_tenant("$2", INBOUND_EVENT_ENTRY),
            None => INBOUND_COLUMNS.to_owned(),
        };
        let rows: Vec<InboundRow> = sqlx::query_as(&format!(
            "SELECT {columns} FROM inbound i WHERE ($1::text IS NULL OR i.id < $1) \
             AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM events e WHERE e.inbound_id = i.id AND e.tenant_id = $2)) \
             ORDER BY i.id DESC LIMIT $3"
        ))
        .bind(query.before.as_deref())
        .bind(query.tenant_id.as_ref().map(TenantId::as_str))
        .bind(i64::from(query.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(inbound_from_row).collect()
    }

    async fn get_inbound(&self, id: &InboundId) -> Result<Inbound> {
        let row: InboundRow = sqlx::query_as(&format!("SELECT {INBOUND_COLUMNS} FROM inbound i WHERE i.id = $1"))
            .bind(id.as_str())
            .fetch_one(&self.pool)
            .await?;
        inbound_from_row(row)
    }

    async fn events_of_inbound(&self, id: &InboundId) -> Result<Vec<InboundEvent>> {
        let rows: Vec<InboundEventRow> = sqlx::query_as(&format!(
            "SELECT e.id, e.tenant_id, e.type, {INBOUND_EVENT_ENTRY} FROM events e WHERE e.inbound_id = $1 ORDER BY e.id"
        ))
        .bind(id.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(inbound_event_from_row).collect()
    }

    async fn idempotency_begin(&self, scope: &str, key: &str, request_hash: &str, now: i64) -> Result<Idempotency> {
        // A concurrent claim of the same key (on another node) waits for the first to commit, then
        // finds it taken.
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .execute(&self.pool)
        .await?;
        if claimed.rows_affected() == 1 {
            return Ok(Idempotency::Started);
        }
        let row: IdempotencyRow = sqlx::query_as(
            "SELECT request_hash, status, response_sealed FROM idempotency_keys WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_one(&self.pool)
        .await?;
        idempotency_from_row(&self.key, row)
    }

    async fn idempotency_finish(&self, scope: &str, key: &str, status: u16, body: &[u8]) -> Result<()> {
        let text = String::from_utf8_lossy(body);
        sqlx::query("UPDATE idempotency_keys SET status = $1, response_sealed = $2 WHERE scope = $3 AND key = $4")
            .bind(i64::from(status))
            .bind(self.key.seal(IDEMPOTENT_RESPONSE, &text))
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL")
            .bind(scope)
            .bind(key)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn idempotency_prune(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(before)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn tenant_stats(&self, tenant_id: &TenantId, since: i64) -> Result<TenantStats> {
        let (pages, enabled, disabled, total, recent, pending, delivered, failed): (
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
        ) = sqlx::query_as(
            "SELECT (SELECT COUNT(*) FROM pages WHERE tenant_id = $1), \
                    e.enabled, e.disabled, ev.total, ev.recent, d.pending, d.delivered, d.failed \
             FROM (SELECT COUNT(*) FILTER (WHERE enabled) AS enabled, COUNT(*) FILTER (WHERE NOT enabled) AS disabled \
                   FROM endpoints WHERE tenant_id = $1) AS e, \
                  (SELECT COUNT(*) AS total, COUNT(*) FILTER (WHERE received_at >= $2) AS recent \
                   FROM events WHERE tenant_id = $1) AS ev, \
                  (SELECT COUNT(*) FILTER (WHERE status = 'pending') AS pending, \
                          COUNT(*) FILTER (WHERE status = 'delivered') AS delivered, \
                          COUNT(*) FILTER (WHERE status = 'failed') AS failed \
                   FROM deliveries WHERE tenant_id = $1) AS d",
        )
        .bind(tenant_id.as_str())
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(TenantStats {
            pages: count(pages),
            endpoints_enabled: count(enabled),
            endpoints_disabled: count(disabled),
            events_total: count(total),
            events_since: count(recent),
            deliveries_pending: count(pending),
            deliveries_delivered: count(delivered),
            deliveries_failed: count(failed),
        })
    }

    async fn count_pending(&self) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM delivery_queue")
            .fetch_one(&self.pool)
            .await?;
        Ok(count(n))
    }

    async fn replay(&self, tenant_id: &TenantId, what: Replay<'_>, now: i64) -> Result<u64> {
        // The attempt that delivered a delivery moves from its row to the attempt log first, and
        // keeps its number there. The deliveries are queued again, due now (one still queued, as
        // a leased one is, comes due now), ordered as their endpoints now ask.
        let mut query = QueryBuilder::<Postgres>::new(
            "WITH replayed AS (SELECT id, attempts, delivered_started_at, delivered_duration_ms, last_status, \
                 delivered_outcome, last_error, delivered_excerpt FROM deliveries",
        );
        push_replay_scope(&mut query, tenant_id, what);
        query.push(
            " FOR UPDATE), \
             moved AS (INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, \
                 outcome, error, response_excerpt) \
                 SELECT id, attempts, delivered_started_at, delivered_duration_ms, last_status, delivered_outcome, \
                     last_error, delivered_excerpt FROM replayed WHERE delivered_outcome IS NOT NULL), \
             reset AS (UPDATE deliveries d SET status = 'pending', attempts = 0, next_attempt_at = ",
        );
        query.push_bind(now).push(", updated_at = ").push_bind(now);
        query.push(
            ", delivered_started_at = NULL, delivered_duration_ms = NULL, delivered_outcome = NULL, \
             delivered_excerpt = NULL FROM replayed WHERE d.id = replayed.id \
             RETURNING d.id, d.endpoint_id, d.seq, d.event_id) \
             INSERT INTO delivery_queue (delivery_id, endpoint_id, seq, next_attempt_at, ordering_key) \
             SELECT r.id, r.endpoint_id, r.seq, ",
        );
        query.push_bind(now);
        query.push(
            ", CASE WHEN ep.ordered THEN ev.payload::jsonb ->> 'conversation_id' END \
             FROM reset r JOIN endpoints ep ON ep.id = r.endpoint_id JOIN events ev ON ev.id = r.event_id \
             ON CONFLICT (delivery_id) DO UPDATE SET next_attempt_at = EXCLUDED.next_attempt_at",
        );
        let replayed = query.build().execute(&self.pool).await?.rows_affected();
        if replayed > 0 {
            self.announce(WORK_CHANNEL).await;
        }
        Ok(replayed)
    }

    async fn count_replayable(&self, tenant_id: &TenantId, what: Replay<'_>) -> Result<u64> {
        let mut query = QueryBuilder::<Postgres>::new("SELECT COUNT(*) FROM deliveries");
        push_replay_scope(&mut query, tenant_id, what);
        let (n,): (i64,) = query.build_query_as().fetch_one(&self.pool).await?;
        Ok(count(n))
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;

    use super::*;
    use crate::testing::pg_server;

    type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

    async fn random_page_cost(connect: &PgConnectOptions) -> Result<String> {
        let mut conn = PgConnection::connect_with(connect).await?;
        let (cost,): (String,) = sqlx::query_as("SHOW random_page_cost").fetch_one(&mut conn).await?;
        Ok(cost)
    }

    #[tokio::test]
    async fn connections_plan_for_data_in_memory_unless_the_url_says_otherwise() -> Result {
        let url = pg_server::fresh_database().await?;
        assert_eq!(random_page_cost(&connect_options(&url)?).await?, RANDOM_PAGE_COST);

        let separator = if url.contains('?') { '&' } else { '?' };
        let operators = format!("{url}{separator}options=-c%20random_page_cost%3D2.5");
        assert_eq!(random_page_cost(&connect_options(&operators)?).await?, "2.5");
        Ok(())
    }
}
