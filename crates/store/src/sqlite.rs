//! The embedded backend: one SQLite file in WAL mode.
//!
//! SQLite allows one writer at a time, so every write goes through a single-connection pool (the
//! ingest writer, the dispatcher and the admin API queue on it instead of failing with `BUSY`), and
//! reads use a separate pool of read-only connections that WAL lets run beside the writer.
//! sqlx's SQLite driver costs tens of microseconds per statement, so hot paths write many rows per
//! statement.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use pagewire_core::{
    ApiKeyId, AppRecordId, DeliveryId, EndpointId, EndpointSecret, EventId, HealthPolicy, InboundId, MasterKey,
    OperationalEvent, PageRecordId, RefusalId, Secret, TenantId,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{ConnectOptions as _, QueryBuilder, Sqlite};

use crate::rows::{
    self, api_key_from_row, app_from_row, attempt_from_row, count, created_api_key, created_app, created_endpoint,
    created_page, created_tenant, delivery_from_row, endpoint_from_row, events_from_rows, idempotency_from_row,
    inbound_columns_for_tenant, inbound_event_from_row, inbound_from_row, json_headers, json_list, leased_deliveries,
    millis, open_secret, page_credentials, page_from_row, page_move_from_row, parse_id, push_endpoint_changes,
    push_replay_scope, refusal_from_row, settled, shown_endpoint_from_row, signing_key_from_row, tally_health,
    tenant_from_row, verify_token_hash, ApiKeyRow, AppRow, AttemptRow, DeliveryRow, EndpointRow, EventRow,
    IdempotencyRow, InboundEventRow, InboundRow, LeasedRow, PageMoveRow, PageRow, PageSecretsRow, RefusalRow,
    SigningKeyRow, TargetRow, TenantRow, API_KEY_COLUMNS, APP_COLUMNS, APP_SECRET, ATTEMPT_COLUMNS, DELIVERY_COLUMNS,
    ENDPOINT_COLUMNS, ENDPOINT_ED25519, ENDPOINT_SECRET, EVENT_COLUMNS, IDEMPOTENT_RESPONSE, INBOUND_COLUMNS,
    LEASED_COLUMNS, PAGE_COLUMNS, PAGE_TOKEN, REFUSAL_COLUMNS, SIGNING_KEY, SIGNING_KEY_COLUMNS, TARGET_COLUMNS,
    TENANT_COLUMNS, VERIFY_TOKEN,
};
use crate::{
    ApiKey, AppUpdate, Attempt, AttemptRecord, Delivery, DeliveryQuery, DeliveryStatus, Endpoint, EndpointUpdate,
    EventQuery, HealthReport, Idempotency, Inbound, InboundEvent, InboundQuery, IngestReceipt, IngestRequest, Lease,
    Leased, LeasedDelivery, MetaApp, NewApiKey, NewEndpoint, NewMetaApp, NewPage, Page, PageCredentials, PageMove,
    PageProof, PruneReport, Refusal, RefusalQuery, Replay, Result, RoutingData, SigningKey, Store, StoreError,
    StoredEvent, SubscriptionCheck, Tenant, TenantStats,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// How long a checkpoint waits for the writer's transaction, and for readers, to start the log over.
const RESTART_WAIT: Duration = Duration::from_millis(5);

/// Rows per multi-row statement: well under SQLite's limit of 32766 bound parameters.
const ROWS_PER_STATEMENT: usize = 512;

/// The fewest rows an ingest statement is padded to (see [`push_padded_values`]).
const MIN_PADDED_ROWS: usize = 8;

/// How the SQLite store opens its file.
#[derive(Debug, Clone)]
pub struct SqliteStoreOptions {
    /// Read-only connections beside the one writer.
    pub readers: u32,
    /// How long a statement waits for a lock before failing.
    pub busy_timeout: Duration,
}

impl Default for SqliteStoreOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// The SQLite implementation of [`Store`].
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    readers: SqlitePool,
    key: MasterKey,
    _checkpoints: Arc<Checkpoints>,
}

/// How an open store keeps its file ([`SqliteStore::pragmas`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlitePragmas {
    /// `wal`.
    pub journal_mode: String,
    /// 2: `FULL`, a sync at every commit.
    pub synchronous: i64,
    /// In bytes: 8,192 in a database the store created, what it was in an older one.
    pub page_size: i64,
}

/// The page size of a database this store creates, in bytes.
const PAGE_SIZE: u32 = 8192;
/// Log pages after which the writer checkpoints by itself (64 MiB of 8 KiB pages): only if the
/// background pass falls behind.
const WRITER_AUTOCHECKPOINT_PAGES: u32 = 8192;
/// How often the background pass checkpoints. A pass writes what the log gathered since the last
/// one into the database file and syncs it, and a commit's own sync waits behind that write: the
/// smaller each pass, the shorter the wait. At 10,000 webhooks/s, passes every 250 ms (13 MiB of
/// log each) put acknowledgements' p99 at 17-19 ms, every second at 30 ms, every 50 ms at 9-15 ms.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(50);
/// Log pages (16 MiB) past which a pass also has the log started over (`RESTART`), holding the
/// writer off while it waits for readers. Below it the log is left to grow: with readers busy (a
/// node that delivers), a `RESTART` after every pass held the writer for 4 ms at the median, 20
/// times a second.
const RESTART_AT_PAGES: i64 = 4_096;

/// A JSON array of strings, for statements that take a list as one `json_each` parameter.
fn json_strings<'a>(items: impl Iterator<Item = &'a str>) -> String {
    serde_json::Value::Array(items.map(serde_json::Value::from).collect()).to_string()
}

/// The background checkpoint task, stopped when the last clone of the store is dropped.
#[derive(Debug)]
struct Checkpoints(tokio::task::AbortHandle);

impl Drop for Checkpoints {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Copies committed log pages into the database file without blocking the writer or readers
/// (`PASSIVE`): what readers still need stays in the log until a later pass. Once the log is
/// [`RESTART_AT_PAGES`] long, has it started over (`RESTART`), so that it stays well below the
/// writer's own threshold.
async fn checkpoint_continuously(pool: SqlitePool) {
    let passive = || async {
        checkpoint(&pool, "PASSIVE")
            .await
            .inspect_err(|e| {
                tracing::warn!(error = %e, "checkpointing the database log failed; the writer's own checkpoint takes over");
            })
            .ok()
    };
    let mut interval = tokio::time::interval(CHECKPOINT_INTERVAL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(log) = passive().await else { continue };
        if log < RESTART_AT_PAGES {
            continue;
        }
        // The log is only started over from its beginning by a transaction that begins once all
        // of it is copied, and the writer keeps committing while a pass copies: under steady load
        // the log grew to the writer's own threshold, whose checkpoint then ran inside a commit
        // (a stall of 40-50 ms every two thirds of a second at 10,000 webhooks/s). A second pass
        // first copies what came during the first (a few ms' worth, without holding the writer),
        // so that `RESTART`, which holds it, has little left to copy (at 8,000 webhooks/s its
        // hold fell from 9 ms to 2 ms at the median). `RESTART` copies what came since, holding
        // the writer off meanwhile, and has the next transaction start the log over. It waits
        // for readers at most the connection's busy timeout, and gives up when they stay.
        if passive().await.is_none() {
            continue;
        }
        if let Err(e) = checkpoint(&pool, "RESTART").await {
            tracing::debug!(error = %e, "the database log could not be started over now");
        }
    }
}

/// One checkpoint in `mode`, logged at debug with what it found (a log that stays long means
/// readers keep it from being started over) and how long it took. Returns the pages in the log.
async fn checkpoint(pool: &SqlitePool, mode: &str) -> std::result::Result<i64, sqlx::Error> {
    let started = std::time::Instant::now();
    let (busy, log, copied) = sqlx::query_as::<_, (i64, i64, i64)>(&format!("PRAGMA wal_checkpoint({mode})"))
        .fetch_one(pool)
        .await?;
    tracing::debug!(
        mode,
        busy,
        log,
        copied,
        elapsed_ms = started.elapsed().as_millis(),
        "checkpointed the database log"
    );
    Ok(log)
}

/// Makes the database file, and its log and shared-memory files, readable and writable by their
/// owner only, whatever the directory's mode or the process's umask: they hold every tenant's
/// messages. The file is created here when missing (an empty file is an empty database); SQLite
/// gives the `-wal` and `-shm` files it creates later the database file's mode, and those left
/// by an earlier run are tightened too.
fn owner_only(path: &Path) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| StoreError::Unavailable(sqlx::Error::Io(e));
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let file = Path::new(&name);
            match std::fs::metadata(file) {
                Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
                    std::fs::set_permissions(file, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
        }
    }
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs the migrations.
    pub async fn open(path: &Path, key: MasterKey, options: SqliteStoreOptions) -> Result<Self> {
        owner_only(path)?;
        let base = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            // A database this creates has 8 KiB pages rather than SQLite's 4 KiB. A commit writes
            // each page it changed to the log as a frame of two `pwrite`s, checksummed, and a
            // group commit of a few hundred webhooks wrote about 180 frames: half the frames cut
            // the writer's work and its commits' time (ingest +2 to +9 % in alternating runs;
            // docs/benchmarks.md), for about 0.5 KiB more written per webhook. A database made
            // before keeps its size (the log's mode fixes it), which still works as before.
            .page_size(PAGE_SIZE)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true)
            // Memory-mapped reads: leasing and recording touch the same index pages over and
            // over, and reading them through the OS page cache by syscall dominated a delivery
            // backlog's profile. Mapped pages count in the process's resident memory, so the map
            // is bounded (64 MiB), as are the page caches: 32 MiB for the writer, which writes
            // the hot pages, and 8 MiB for each reader.
            .pragma("cache_size", "-8192")
            .pragma("mmap_size", "67108864")
            .pragma("journal_size_limit", "67108864")
            // A statement that changes many rows inside a transaction keeps a statement journal
            // (to undo itself alone); past 64 KiB SQLite spills it to a temporary file, and a lease
            // of hundreds of rows always did. In memory it stays.
            .pragma("temp_store", "memory")
            // Rows cross from the connection's thread to the caller through a bounded channel;
            // a lease returns hundreds, and at the default of 50 the two threads take turns.
            .row_buffer_size(1024);
        // Checkpoints (copying the log back into the database file, and syncing it) run on a
        // connection of their own, so the writer never copies the log in the middle of a commit
        // (it only waits for the short `RESTART` step). The writer's automatic checkpoint stays
        // as a backstop, at a size the background passes keep the log well below.
        // Migrations run on a connection of their own with foreign keys off, as SQLite's guide to
        // schema changes asks: a table that others reference is rebuilt by dropping it and renaming
        // its copy in, and with foreign keys on, the drop would cascade into the rows that refer
        // to it.
        let mut migrating = base
            .clone()
            .create_if_missing(true)
            .foreign_keys(false)
            .connect()
            .await?;
        MIGRATOR.run(&mut migrating).await?;
        sqlx::Connection::close(migrating).await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            // A ping before each transaction is a round trip to the connection's thread and tells
            // nothing: a file's connection does not drop (the pool still pings it on release).
            .test_before_acquire(false)
            .acquire_timeout(options.busy_timeout)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .pragma("cache_size", "-32768")
                    .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT_PAGES.to_string()),
            )
            .await?;
        let readers = SqlitePoolOptions::new()
            .max_connections(options.readers.max(1))
            .acquire_timeout(options.busy_timeout)
            .connect_with(base.clone().read_only(true))
            .await?;
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.busy_timeout)
            .connect_with(base.pragma("wal_autocheckpoint", "0").busy_timeout(RESTART_WAIT))
            .await?;
        let checkpoints = Arc::new(Checkpoints(
            tokio::spawn(checkpoint_continuously(checkpointer)).abort_handle(),
        ));
        let store = Self {
            writer,
            readers,
            key,
            _checkpoints: checkpoints,
        };
        store.backfill_verify_token_hashes().await?;
        store.hash_legacy_dedup_keys().await?;
        Ok(store)
    }

    /// [`Store::ingest`] for a batch with redeliveries, in two round trips: its dedup keys first
    /// (the unique key drops redeliveries, also within the batch, where the first occurrence wins,
    /// and `RETURNING` names the new keys), then its writes with only the new events.
    async fn ingest_checked(&self, batch: &[IngestRequest], now: i64) -> Result<Vec<IngestReceipt>> {
        let (events, keys) = events_and_keys(batch);
        let mut tx = ListTx::acquire(&self.writer).await?;
        let mut checks = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE");
        push_dedup_keys(&mut checks, &keys, " ON CONFLICT DO NOTHING RETURNING key");
        let returned: Vec<(Vec<u8>,)> = checks.build_query_as().fetch_all(tx.conn()).await?;
        let mut new_keys: std::collections::HashSet<Vec<u8>> = returned.into_iter().map(|(key,)| key).collect();
        let new_events: Vec<_> = events
            .iter()
            .zip(&keys)
            .filter(|(_, key)| new_keys.remove(&key[..]))
            .map(|(event, _)| *event)
            .collect();
        let inserted: std::collections::HashSet<&str> = new_events.iter().map(|(_, event)| event.id.as_str()).collect();
        let (receipts, targets) = rows::new_deliveries(batch.len(), &events, |id| inserted.contains(id));
        let deliveries = with_ids(targets);

        let mut writes = QueryBuilder::<Sqlite>::new("");
        push_writes(&mut writes, batch, &new_events, &deliveries, now);
        writes.build().execute(tx.conn()).await?;
        tx.committed();
        Ok(receipts)
    }

    /// A transaction on the writer that takes the write lock at its start (`BEGIN IMMEDIATE`). A
    /// transaction that began by reading would take it at its first write, an upgrade; while the
    /// checkpointer's `RESTART` step holds the lock, SQLite refuses such an upgrade at once
    /// ("database is locked", to rule out a deadlock between two upgrading connections) instead of
    /// waiting. A lock asked for at the start waits for the step like any other.
    ///
    /// A wait of 10 ms or more for the writer is logged at debug: a stall of ingest or delivery
    /// shows whether the time went to waiting for the writer or to the work itself.
    async fn write_transaction(&self) -> std::result::Result<sqlx::Transaction<'static, Sqlite>, sqlx::Error> {
        let started = std::time::Instant::now();
        let tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        note_writer_wait(started);
        Ok(tx)
    }

    /// Opens the database at a `sqlite://` URL or a plain path.
    pub async fn open_url(url: &str, key: MasterKey, options: SqliteStoreOptions) -> Result<Self> {
        let path = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        let path = path.split('?').next().unwrap_or(path);
        Self::open(Path::new(path), key, options).await
    }

    /// How the writer connection keeps the file, for checks.
    pub async fn pragmas(&self) -> Result<SqlitePragmas> {
        let mut conn = self.writer.acquire().await?;
        let (journal_mode,): (String,) = sqlx::query_as("PRAGMA journal_mode").fetch_one(&mut *conn).await?;
        let (synchronous,): (i64,) = sqlx::query_as("PRAGMA synchronous").fetch_one(&mut *conn).await?;
        let (page_size,): (i64,) = sqlx::query_as("PRAGMA page_size").fetch_one(&mut *conn).await?;
        Ok(SqlitePragmas {
            journal_mode,
            synchronous,
            page_size,
        })
    }

    /// Waits for in-flight statements and closes the file cleanly.
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    /// The endpoints a lease may take from, with the room each has: read beside the writer (a
    /// lease that finds nothing never waits for it); a stale entry only leases nothing, as the
    /// lease itself re-checks what is due.
    async fn eligible(&self, lease: &Lease) -> Result<Vec<(String, i64, bool)>> {
        // The endpoints that may send now and have something due, the longest-waiting first. Each
        // is then leased on its own, through an index on (endpoint, due time): skipping a paused or
        // busy endpoint costs nothing however deep its backlog. The list is read beside the writer
        // (a lease that finds nothing never waits for it); a stale entry only leases nothing, as
        // every lease below re-checks what is due.
        let endpoints: Vec<(String, i64, i64, bool, i64)> = sqlx::query_as(
            "SELECT e.id, CASE WHEN e.probe_at IS NOT NULL THEN 1 ELSE e.max_concurrency * ?1 END AS cap, \
             e.max_concurrency, e.ordered, \
             (SELECT MIN(d.next_attempt_at) FROM deliveries d \
              WHERE d.endpoint_id = e.id AND d.status = 'pending') AS due \
             FROM endpoints e WHERE e.enabled = 1 AND (e.probe_at IS NULL OR e.probe_at <= ?2) \
             AND due <= ?2 ORDER BY due, e.id",
        )
        .bind(i64::from(lease.per_endpoint_rounds.max(1)))
        .bind(lease.now)
        .fetch_all(&self.readers)
        .await?;
        let held: std::collections::HashMap<&str, i64> = lease
            .held
            .iter()
            .map(|(endpoint, count)| (endpoint.as_str(), i64::from(*count)))
            .collect();
        let endpoints: Vec<(String, i64, bool)> = endpoints
            .into_iter()
            .filter_map(|(endpoint, cap, max_concurrency, ordered, _)| {
                let room = cap - held.get(endpoint.as_str()).copied().unwrap_or(0);
                (room >= max_concurrency.clamp(1, cap)).then_some((endpoint, room, ordered))
            })
            .collect();
        Ok(endpoints)
    }

    /// Takes due deliveries of `endpoints` inside the writer's transaction; returns (id, lease_seq).
    async fn take(
        tx: &mut sqlx::SqliteConnection,
        lease: &Lease,
        endpoints: Vec<(String, i64, bool)>,
    ) -> Result<Leased> {
        let mut leased: Vec<(String, i64)> = Vec::new();
        let mut per_endpoint: Vec<(EndpointId, u32)> = Vec::new();
        let mut room = i64::from(lease.limit);
        for (endpoint, cap, ordered) in endpoints {
            if room <= 0 {
                break;
            }
            // Ordered endpoints take only the first pending delivery of each conversation.
            let head_only = if ordered {
                " AND (d.ordering_key IS NULL OR NOT EXISTS (SELECT 1 FROM deliveries p \
                   WHERE p.endpoint_id = d.endpoint_id AND p.ordering_key = d.ordering_key \
                   AND p.status = 'pending' AND p.rowid < d.rowid))"
            } else {
                ""
            };
            let taken: Vec<(String, i64)> = sqlx::query_as(&format!(
                "UPDATE deliveries SET next_attempt_at = ?1, lease_seq = lease_seq + 1, updated_at = ?2 \
                 WHERE id IN (SELECT d.id FROM deliveries d \
                   WHERE d.endpoint_id = ?3 AND d.status = 'pending' AND d.next_attempt_at <= ?2{head_only} \
                   ORDER BY d.next_attempt_at, d.rowid LIMIT ?4) \
                 RETURNING id, lease_seq"
            ))
            .bind(lease.now.saturating_add(lease.lease_ms))
            .bind(lease.now)
            .bind(&endpoint)
            .bind(cap.min(room))
            .fetch_all(&mut *tx)
            .await?;
            room -= i64::try_from(taken.len()).unwrap_or(i64::MAX);
            if !taken.is_empty() {
                per_endpoint.push((parse_id(&endpoint)?, u32::try_from(taken.len()).unwrap_or(u32::MAX)));
            }
            leased.extend(taken);
        }
        if leased.is_empty() {
            return Ok(Leased::default());
        }

        // A paused endpoint gets one probe at a time: hold its pause for as long as the probe's lease.
        let endpoints = json_strings(per_endpoint.iter().map(|(id, _)| id.as_str()));
        sqlx::query(
            "UPDATE endpoints SET probe_at = ?1 \
             WHERE probe_at IS NOT NULL AND id IN (SELECT value FROM json_each(?2))",
        )
        .bind(lease.now.saturating_add(lease.lease_ms))
        .bind(&endpoints)
        .execute(&mut *tx)
        .await?;
        Ok(Leased {
            now: lease.now,
            taken: leased,
            per_endpoint,
        })
    }

    /// Events with their items' bytes, each POST's body read once.
    async fn events_with_items(&self, rows: Vec<EventRow>) -> Result<Vec<StoredEvent>> {
        let posts: std::collections::BTreeSet<&str> = rows.iter().filter_map(EventRow::post).collect();
        let bodies: Vec<(String, Vec<u8>)> = if posts.is_empty() {
            Vec::new()
        } else {
            sqlx::query_as("SELECT id, body FROM inbound WHERE id IN (SELECT value FROM json_each(?))")
                .bind(json_strings(posts.into_iter()))
                .fetch_all(&self.readers)
                .await?
        };
        events_from_rows(rows, &bodies)
    }

    /// What to send for deliveries just leased (and committed): read beside the writer, once the
    /// lease is committed (the rows are the worker's now, and the writer is free for the next
    /// transaction). Each endpoint's settings are read and opened once, not once per delivery.
    async fn read_leased(&self, leased: &Leased) -> Result<Vec<LeasedDelivery>> {
        if leased.is_empty() {
            return Ok(Vec::new());
        }
        let ids = json_strings(leased.taken.iter().map(|(id, _)| id.as_str()));
        let leased_sql = format!(
            "SELECT {LEASED_COLUMNS} FROM deliveries d JOIN events ev ON ev.id = d.event_id \
             WHERE d.id IN (SELECT value FROM json_each(?1)) ORDER BY d.rowid"
        );
        let targets_sql = format!(
            "SELECT {TARGET_COLUMNS} FROM endpoints WHERE id IN \
               (SELECT endpoint_id FROM deliveries WHERE id IN (SELECT value FROM json_each(?1)))"
        );
        let bodies_sql = "SELECT i.id, i.body FROM inbound i WHERE i.id IN (SELECT ev.inbound_id FROM deliveries d \
             JOIN events ev ON ev.id = d.event_id WHERE d.id IN (SELECT value FROM json_each(?1)) \
             AND (ev.raw_at IS NOT NULL OR ev.text_at IS NOT NULL))";
        let deliveries = sqlx::query_as::<_, LeasedRow>(&leased_sql)
            .bind(&ids)
            .fetch_all(&self.readers);
        let endpoints = sqlx::query_as::<_, TargetRow>(&targets_sql)
            .bind(&ids)
            .fetch_all(&self.readers);
        let bodies = sqlx::query_as::<_, (String, Vec<u8>)>(bodies_sql)
            .bind(&ids)
            .fetch_all(&self.readers);
        let (deliveries, endpoints, bodies) = tokio::try_join!(deliveries, endpoints, bodies)?;
        leased_deliveries(&self.key, leased, deliveries, endpoints, bodies)
    }

    /// Fills in the verify-token hash of apps stored before it existed. A token two apps share keeps
    /// no hash (and a warning): the operator should give one of them a new token.
    /// Moves the dedup keys that migration 0016 set aside (SQLite cannot compute SHA-256) into
    /// `dedup_keys`, in steps, then drops their table: redeliveries of items ingested before the
    /// upgrade stay recognized.
    async fn hash_legacy_dedup_keys(&self) -> Result<()> {
        const STEP: i64 = 10_000;
        let pending: Option<(String,)> =
            sqlx::query_as("SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'legacy_dedup_keys'")
                .fetch_optional(&self.writer)
                .await?;
        if pending.is_none() {
            return Ok(());
        }
        let mut moved = 0_usize;
        loop {
            let mut tx = self.write_transaction().await?;
            let legacy: Vec<(i64, String, String, String, i64)> = sqlx::query_as(
                "SELECT rowid, tenant_id, page_id, dedup_key, timestamp_ms FROM legacy_dedup_keys \
                 ORDER BY rowid LIMIT ?",
            )
            .bind(STEP)
            .fetch_all(&mut *tx)
            .await?;
            let Some(&(last, ..)) = legacy.last() else {
                sqlx::query("DROP TABLE legacy_dedup_keys").execute(&mut *tx).await?;
                tx.commit().await?;
                break;
            };
            for chunk in legacy.chunks(ROWS_PER_STATEMENT) {
                let mut insert = QueryBuilder::<Sqlite>::new("INSERT INTO dedup_keys (key) ");
                insert.push_values(chunk, |mut row, (_, tenant, page, key, time)| {
                    row.push_bind(rows::dedup_key_of(tenant, page, key, *time).to_vec());
                });
                insert.push(" ON CONFLICT DO NOTHING");
                insert.build().execute(&mut *tx).await?;
            }
            sqlx::query("DELETE FROM legacy_dedup_keys WHERE rowid <= ?")
                .bind(last)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            moved += legacy.len();
        }
        if moved > 0 {
            tracing::info!(keys = moved, "moved the dedup keys of the window into their own table");
        }
        Ok(())
    }

    async fn backfill_verify_token_hashes(&self) -> Result<()> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT app_id, verify_token_sealed FROM meta_apps WHERE verify_token_hash IS NULL")
                .fetch_all(&self.writer)
                .await?;
        for (app_id, sealed) in rows {
            let hash = verify_token_hash(&open_secret(&self.key, VERIFY_TOKEN, &sealed)?);
            let done = sqlx::query("UPDATE meta_apps SET verify_token_hash = ? WHERE app_id = ?")
                .bind(hash)
                .bind(&app_id)
                .execute(&self.writer)
                .await;
            match done.map_err(StoreError::from) {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => {
                    tracing::warn!(
                        app_id,
                        "this app's verify token is another app's too; give it a new one"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Runs a statement whose last parameter is a `LIMIT` again and again, `step` rows at a time, until
/// a step changes fewer: a large deletion in short transactions, so the writer is never held for
/// long. Returns the rows changed in all.
async fn in_steps<'q>(
    writer: &SqlitePool,
    step: i64,
    statement: impl Fn() -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
) -> Result<u64> {
    let mut total = 0;
    loop {
        let done = statement().bind(step).execute(writer).await?.rows_affected();
        total += done;
        if done < u64::try_from(step).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

/// Begins the writer's transaction on `tx` (a [`ListTx`]'s connection) and records attempts in
/// it: the attempt log, each delivery's next step (fenced by its lease, so a stale worker's answer
/// changes nothing), and endpoint health.
async fn begin_recording(
    tx: &mut sqlx::SqliteConnection,
    records: &[AttemptRecord],
    now: i64,
    health: &HealthPolicy,
) -> Result<HealthReport> {
    if records.is_empty() {
        sqlx::query("BEGIN IMMEDIATE").execute(&mut *tx).await?;
        return Ok(HealthReport::default());
    }
    // Every outcome goes in as one JSON array bound to one parameter: the two statements below
    // are the same text whatever the batch size, so they are prepared once, and binding costs
    // one argument instead of sixteen per attempt.
    let rows: Vec<_> = records
        .iter()
        .map(|r| {
            let (status, next_at) = settled(r.next, now);
            // A tuple serializes as a JSON array, with no `Value` tree built on the way.
            (
                &r.delivery_id,
                r.attempt,
                r.started_at,
                r.duration_ms,
                r.status_code,
                &r.outcome,
                &r.error,
                &r.response_excerpt,
                r.lease_seq,
                status.as_str(),
                next_at,
            )
        })
        .collect();
    // Strings and numbers only: serializing cannot fail, but is not assumed not to.
    let rows = serde_json::to_string(&rows).map_err(|e| StoreError::Corrupt(format!("an attempt record: {e}")))?;
    // The transaction's BEGIN, the attempts and the deliveries' outcomes in one list: one round
    // trip to the connection's thread. Both statements read the same two parameters. A delivery
    // deleted since it was leased (its endpoint was) has no log left to add to: its attempt is
    // dropped, and the rest of the batch is recorded.
    sqlx::query(
        "BEGIN IMMEDIATE; \
         INSERT INTO delivery_attempts (delivery_id, attempt, started_at, duration_ms, status_code, outcome, \
             error, response_excerpt) \
             SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>7 \
             FROM json_each(?1) WHERE EXISTS (SELECT 1 FROM deliveries WHERE id = value->>0); \
         UPDATE deliveries SET status = v.status, next_attempt_at = v.next_at, attempts = v.attempt, \
             last_status = v.status_code, last_error = v.error, updated_at = ?2 \
             FROM (SELECT value->>0 AS id, value->>1 AS attempt, value->>4 AS status_code, value->>6 AS error, \
                   value->>8 AS seq, value->>9 AS status, value->>10 AS next_at FROM json_each(?1)) AS v \
             WHERE deliveries.id = v.id AND deliveries.lease_seq = v.seq",
    )
    .bind(&rows)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    update_health(tx, records, now, health).await
}

/// Applies a batch of outcomes to the health of each endpoint involved: one statement per endpoint,
/// not per attempt.
async fn update_health(
    tx: &mut sqlx::SqliteConnection,
    records: &[AttemptRecord],
    now: i64,
    health: &HealthPolicy,
) -> Result<HealthReport> {
    let mut report = HealthReport::default();
    for (endpoint, tally) in tally_health(records) {
        if tally.gone {
            let row: Option<(String,)> = sqlx::query_as(
                "UPDATE endpoints SET enabled = 0, disabled_reason = 'the endpoint answered 410 Gone', updated_at = ? \
                 WHERE id = ? AND enabled = 1 RETURNING tenant_id",
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
                 WHERE id = ? AND probe_at IS NOT NULL RETURNING tenant_id",
            )
            .bind(endpoint)
            .fetch_optional(&mut *tx)
            .await?;
            match reopened {
                Some((tenant,)) => report.recovered.push((parse_id(endpoint)?, parse_id(&tenant)?)),
                None => {
                    sqlx::query(
                        "UPDATE endpoints SET consecutive_failures = 0, failing_since = NULL \
                         WHERE id = ? AND consecutive_failures > 0",
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
                "UPDATE endpoints SET consecutive_failures = consecutive_failures + ?1, \
                   failing_since = COALESCE(failing_since, ?2), \
                   probe_at = CASE WHEN consecutive_failures + ?1 >= ?3 \
                     THEN ?2 + MIN(?4 << MIN(consecutive_failures + ?1 - ?3, 30), ?5) ELSE probe_at END \
                 WHERE id = ?6 RETURNING tenant_id, failing_since, probe_at",
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
                        "UPDATE endpoints SET enabled = 0, disabled_reason = 'failing without a success for too long', \
                         updated_at = ? WHERE id = ?",
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
    Ok(report)
}

/// The statement that inserts a Page record.
fn insert_page<'q>(
    key: &MasterKey,
    id: &'q PageRecordId,
    page: &'q NewPage,
    now: i64,
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    let sealed = page.access_token.as_ref().map(|t| key.seal(PAGE_TOKEN, t.expose()));
    sqlx::query(
        "INSERT INTO pages (id, page_id, tenant_id, app_id, platform, name, access_token_sealed, \
         phone_number_ids, subscribed_fields, created_at, proof) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    sqlx::query("INSERT INTO page_moves (page_id, from_tenant, to_tenant, reason, moved_at) VALUES (?, ?, ?, ?, ?)")
        .bind(page_id)
        .bind(from.map(TenantId::as_str))
        .bind(to.as_str())
        .bind(reason)
        .bind(now)
}

/// An event's entry in its POST, from its payload's `source`.
const INBOUND_EVENT_ENTRY: &str = "json_extract(e.payload, '$.source.entry')";

#[async_trait]
impl Store for SqliteStore {
    async fn create_tenant(&self, name: &str, now: i64) -> Result<Tenant> {
        let id = TenantId::new();
        sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES (?, ?, ?)")
            .bind(id.as_str())
            .bind(name)
            .bind(now)
            .execute(&self.writer)
            .await?;
        Ok(created_tenant(id, name, now))
    }

    async fn list_tenants(&self) -> Result<Vec<Tenant>> {
        let rows: Vec<TenantRow> = sqlx::query_as(&format!("SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id"))
            .fetch_all(&self.readers)
            .await?;
        rows.into_iter().map(tenant_from_row).collect()
    }

    async fn get_tenant(&self, id: &TenantId) -> Result<Tenant> {
        let row: TenantRow = sqlx::query_as(&format!("SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?"))
            .bind(id.as_str())
            .fetch_one(&self.readers)
            .await?;
        tenant_from_row(row)
    }

    async fn set_tenant_retention(&self, id: &TenantId, days: Option<u32>) -> Result<Tenant> {
        let row: TenantRow = sqlx::query_as(&format!(
            "UPDATE tenants SET retention_days = ? WHERE id = ? RETURNING {TENANT_COLUMNS}"
        ))
        .bind(days.map(i64::from))
        .bind(id.as_str())
        .fetch_one(&self.writer)
        .await?;
        tenant_from_row(row)
    }

    async fn prune(&self, now: i64, default_retention_ms: i64) -> Result<PruneReport> {
        const STEP: i64 = 1_000;
        const DAY_MS: i64 = 86_400_000;
        let mut report = PruneReport::default();
        // Tenant by tenant, each with its own retention, walking its events from the oldest
        // through (tenant_id, id) (ids are minted from the arrival time, `EventId::at`): a pass
        // touches only what it deletes (and old events still pending), however many events are
        // kept. Deleting an event deletes its deliveries and their attempts (foreign keys cascade).
        let tenants: Vec<(String, Option<i64>)> = sqlx::query_as("SELECT id, retention_days FROM tenants")
            .fetch_all(&self.readers)
            .await?;
        for (tenant, days) in tenants {
            let cutoff = now.saturating_sub(days.map_or(default_retention_ms, |d| d.saturating_mul(DAY_MS)));
            let before = EventId::first_at(cutoff);
            report.events += in_steps(&self.writer, STEP, || {
                sqlx::query(
                    "DELETE FROM events WHERE rowid IN ( \
                       SELECT e.rowid FROM events e WHERE e.tenant_id = ?1 AND e.id < ?2 \
                         AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id AND d.status = 'pending') \
                       LIMIT ?3)",
                )
                .bind(&tenant)
                .bind(before.as_str())
            })
            .await?;
        }
        // A POST goes with the last of its events: their items' bytes are read from its body. Its
        // id is minted from its arrival time (`InboundId::at`), so the old ones are found by id.
        let before = InboundId::first_at(now.saturating_sub(default_retention_ms));
        report.inbound += in_steps(&self.writer, STEP, || {
            sqlx::query(
                "DELETE FROM inbound WHERE rowid IN (SELECT rowid FROM inbound WHERE id < ? \
                 AND NOT EXISTS (SELECT 1 FROM events e WHERE e.inbound_id = inbound.id) LIMIT ?)",
            )
            .bind(before.as_str())
        })
        .await?;
        let before = RefusalId::first_at(now.saturating_sub(default_retention_ms));
        report.refusals += in_steps(&self.writer, STEP, || {
            sqlx::query("DELETE FROM refusals WHERE rowid IN (SELECT rowid FROM refusals WHERE id < ? LIMIT ?)")
                .bind(before.as_str())
        })
        .await?;
        Ok(report)
    }

    async fn record_refusals(&self, refusals: &[Refusal]) -> Result<()> {
        if refusals.is_empty() {
            return Ok(());
        }
        let mut insert =
            QueryBuilder::<Sqlite>::new("INSERT INTO refusals (id, received_at, route, app_id, size, reason, detail) ");
        insert.push_values(refusals, |mut row, r| {
            row.push_bind(r.id.as_str())
                .push_bind(r.received_at)
                .push_bind(&r.route)
                .push_bind(r.app_id.as_deref())
                .push_bind(i64::try_from(r.size).unwrap_or(i64::MAX))
                .push_bind(&r.reason)
                .push_bind(r.detail.as_deref());
        });
        let mut conn = self.writer.acquire().await?;
        insert.build().execute(&mut *conn).await?;
        Ok(())
    }

    async fn query_refusals(&self, query: &RefusalQuery) -> Result<Vec<Refusal>> {
        let apps = query
            .app_ids
            .as_ref()
            .map(|ids| serde_json::to_string(ids).map_err(|e| StoreError::Corrupt(e.to_string())))
            .transpose()?;
        let rows: Vec<RefusalRow> = sqlx::query_as(&format!(
            "SELECT {REFUSAL_COLUMNS} FROM refusals WHERE (?1 IS NULL OR id < ?1) \
             AND (?2 IS NULL OR app_id IN (SELECT value FROM json_each(?2))) ORDER BY id DESC LIMIT ?3"
        ))
        .bind(query.before.as_deref())
        .bind(apps)
        .bind(i64::from(query.limit))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(refusal_from_row).collect()
    }

    async fn create_api_key(&self, key: NewApiKey<'_>, now: i64) -> Result<ApiKey> {
        let id = ApiKeyId::new();
        sqlx::query(
            "INSERT INTO api_keys (id, tenant_id, name, role, key_hash, key_prefix, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id.as_str())
        .bind(key.tenant_id.as_str())
        .bind(key.name)
        .bind(key.role.as_str())
        .bind(key.key_hash)
        .bind(key.prefix)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(created_api_key(id, &key, now))
    }

    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>> {
        let row: Option<ApiKeyRow> = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL"
        ))
        .bind(key_hash)
        .fetch_optional(&self.readers)
        .await?;
        row.map(api_key_from_row).transpose()
    }

    async fn list_api_keys(&self, tenant_id: &TenantId) -> Result<Vec<ApiKey>> {
        let rows: Vec<ApiKeyRow> = sqlx::query_as(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys WHERE tenant_id = ? ORDER BY id DESC"
        ))
        .bind(tenant_id.as_str())
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(api_key_from_row).collect()
    }

    async fn revoke_api_key(&self, tenant_id: &TenantId, id: &ApiKeyId, now: i64) -> Result<ApiKey> {
        let row: Option<ApiKeyRow> = sqlx::query_as(&format!(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND tenant_id = ? \
             RETURNING {API_KEY_COLUMNS}"
        ))
        .bind(now)
        .bind(id.as_str())
        .bind(tenant_id.as_str())
        .fetch_optional(&self.writer)
        .await?;
        row.map(api_key_from_row).transpose()?.ok_or(StoreError::NotFound)
    }

    async fn touch_api_key(&self, id: &ApiKeyId, now: i64) -> Result<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = ? WHERE id = ?")
            .bind(now)
            .bind(id.as_str())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        let rows: Vec<SigningKeyRow> = sqlx::query_as(&format!(
            "SELECT {SIGNING_KEY_COLUMNS} FROM signing_keys ORDER BY created_at DESC, kid DESC"
        ))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter()
            .map(|row| signing_key_from_row(&self.key, row))
            .collect()
    }

    async fn rotate_signing_key(&self, kid: &str, secret: &Secret, now: i64, forget_before: i64) -> Result<()> {
        let mut tx = self.write_transaction().await?;
        sqlx::query("UPDATE signing_keys SET retired_at = ? WHERE retired_at IS NULL")
            .bind(now)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM signing_keys WHERE retired_at IS NOT NULL AND retired_at < ?")
            .bind(forget_before)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO signing_keys (kid, secret_sealed, created_at) VALUES (?, ?, ?)")
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
             verify_token_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&self.writer)
        .await?;
        Ok(created_app(id, app, now))
    }

    async fn update_app(&self, app_id: &str, update: AppUpdate, now: i64) -> Result<MetaApp> {
        let mut tx = self.write_transaction().await?;
        if let Some(name) = &update.name {
            sqlx::query("UPDATE meta_apps SET name = ? WHERE app_id = ?")
                .bind(name.as_deref())
                .bind(app_id)
                .execute(&mut *tx)
                .await?;
        }
        if let Some(token) = &update.verify_token {
            sqlx::query("UPDATE meta_apps SET verify_token_sealed = ?, verify_token_hash = ? WHERE app_id = ?")
                .bind(self.key.seal(VERIFY_TOKEN, token.expose()))
                .bind(verify_token_hash(token))
                .bind(app_id)
                .execute(&mut *tx)
                .await?;
        }
        let row: AppRow = sqlx::query_as(&format!(
            "UPDATE meta_apps SET updated_at = ? WHERE app_id = ? RETURNING {APP_COLUMNS}"
        ))
        .bind(now)
        .bind(app_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
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
             previous_secret_expires_at = ?, app_secret_sealed = ?, updated_at = ? \
             WHERE app_id = ? RETURNING {APP_COLUMNS}"
        ))
        .bind(previous_valid_until)
        .bind(self.key.seal(APP_SECRET, secret.expose()))
        .bind(now)
        .bind(app_id)
        .fetch_one(&self.writer)
        .await?;
        app_from_row(&self.key, row)
    }

    async fn delete_app(&self, app_id: &str) -> Result<()> {
        let mut tx = self.write_transaction().await?;
        let (pages,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pages WHERE app_id = ?")
            .bind(app_id)
            .fetch_one(&mut *tx)
            .await?;
        if pages > 0 {
            return Err(StoreError::Conflict {
                constraint: String::from("pages.app_id"),
            });
        }
        let deleted = sqlx::query("DELETE FROM meta_apps WHERE app_id = ?")
            .bind(app_id)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        tx.commit().await?;
        Ok(())
    }

    async fn list_apps(&self, tenant_id: Option<&TenantId>) -> Result<Vec<MetaApp>> {
        let rows: Vec<AppRow> = match tenant_id {
            Some(tenant) => {
                sqlx::query_as(&format!(
                    "SELECT {APP_COLUMNS} FROM meta_apps WHERE tenant_id = ? OR tenant_id IS NULL ORDER BY id"
                ))
                .bind(tenant.as_str())
                .fetch_all(&self.readers)
                .await?
            }
            None => {
                sqlx::query_as(&format!("SELECT {APP_COLUMNS} FROM meta_apps ORDER BY id"))
                    .fetch_all(&self.readers)
                    .await?
            }
        };
        rows.into_iter().map(|row| app_from_row(&self.key, row)).collect()
    }

    async fn get_app(&self, app_id: &str) -> Result<MetaApp> {
        let row: AppRow = sqlx::query_as(&format!("SELECT {APP_COLUMNS} FROM meta_apps WHERE app_id = ?"))
            .bind(app_id)
            .fetch_one(&self.readers)
            .await?;
        app_from_row(&self.key, row)
    }

    async fn create_page(&self, page: NewPage, now: i64) -> Result<Page> {
        let id = PageRecordId::new();
        insert_page(&self.key, &id, &page, now).execute(&self.writer).await?;
        Ok(created_page(id, page, now))
    }

    async fn take_over_page(&self, page: NewPage, now: i64) -> Result<(Page, Option<TenantId>)> {
        let mut tx = self.write_transaction().await?;
        let held: Option<(String, String)> = sqlx::query_as("SELECT tenant_id, proof FROM pages WHERE page_id = ?")
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
                sqlx::query("DELETE FROM pages WHERE page_id = ?")
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
        Ok((created_page(id, page, now), moved))
    }

    async fn assign_page(
        &self,
        page_id: &str,
        tenant_id: &TenantId,
        app_id: &str,
        now: i64,
    ) -> Result<(Page, Option<TenantId>)> {
        let mut tx = self.write_transaction().await?;
        let (from,): (String,) = sqlx::query_as("SELECT tenant_id FROM pages WHERE page_id = ?")
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
            "UPDATE pages SET tenant_id = ?, app_id = ?, proof = 'operator'{clear} WHERE page_id = ? \
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
        Ok((page_from_row(row)?, moved))
    }

    async fn all_pages(&self) -> Result<Vec<Page>> {
        let rows: Vec<PageRow> = sqlx::query_as(&format!("SELECT {PAGE_COLUMNS} FROM pages ORDER BY id"))
            .fetch_all(&self.readers)
            .await?;
        rows.into_iter().map(page_from_row).collect()
    }

    async fn page_moves(&self, page_id: Option<&str>) -> Result<Vec<PageMove>> {
        let rows: Vec<PageMoveRow> = sqlx::query_as(
            "SELECT page_id, from_tenant, to_tenant, reason, moved_at FROM page_moves \
             WHERE ?1 IS NULL OR page_id = ?1 ORDER BY id DESC",
        )
        .bind(page_id)
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(page_move_from_row).collect()
    }

    async fn list_pages(&self, tenant_id: &TenantId) -> Result<Vec<Page>> {
        let rows: Vec<PageRow> = sqlx::query_as(&format!(
            "SELECT {PAGE_COLUMNS} FROM pages WHERE tenant_id = ? ORDER BY id"
        ))
        .bind(tenant_id.as_str())
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(page_from_row).collect()
    }

    async fn get_page(&self, tenant_id: &TenantId, page_id: &str) -> Result<Page> {
        let row: PageRow = sqlx::query_as(&format!(
            "SELECT {PAGE_COLUMNS} FROM pages WHERE tenant_id = ? AND page_id = ?"
        ))
        .bind(tenant_id.as_str())
        .bind(page_id)
        .fetch_one(&self.readers)
        .await?;
        page_from_row(row)
    }

    async fn page_owner(&self, page_id: &str) -> Result<Option<(TenantId, PageProof)>> {
        let row: Option<(String, String)> = sqlx::query_as("SELECT tenant_id, proof FROM pages WHERE page_id = ?")
            .bind(page_id)
            .fetch_optional(&self.readers)
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
             WHERE p.page_id = ?",
        )
        .bind(page_id)
        .fetch_one(&self.readers)
        .await?;
        page_credentials(&self.key, page, row)
    }

    async fn pages_with_tokens(&self) -> Result<Vec<PageCredentials>> {
        let rows: Vec<(String, String)> =
            sqlx::query_as("SELECT page_id, tenant_id FROM pages WHERE access_token_sealed IS NOT NULL ORDER BY id")
                .fetch_all(&self.readers)
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
            "UPDATE pages SET subscribed_fields = ? WHERE tenant_id = ? AND page_id = ? RETURNING {PAGE_COLUMNS}"
        ))
        .bind(json_list(fields))
        .bind(tenant_id.as_str())
        .bind(page_id)
        .fetch_one(&self.writer)
        .await?;
        page_from_row(row)
    }

    async fn record_subscription_check(&self, page_id: &str, check: &SubscriptionCheck) -> Result<()> {
        sqlx::query(
            "UPDATE pages SET subscription_status = ?, subscription_detail = ?, subscription_checked_at = ? \
             WHERE page_id = ?",
        )
        .bind(&check.status)
        .bind(check.detail.as_deref())
        .bind(check.checked_at)
        .bind(page_id)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn delete_page(&self, tenant_id: &TenantId, page_id: &str) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM pages WHERE tenant_id = ? AND page_id = ?")
            .bind(tenant_id.as_str())
            .bind(page_id)
            .execute(&self.writer)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn set_tenant_auto_resubscribe(&self, id: &TenantId, on: bool) -> Result<Tenant> {
        let row: TenantRow = sqlx::query_as(&format!(
            "UPDATE tenants SET auto_resubscribe = ? WHERE id = ? RETURNING {TENANT_COLUMNS}"
        ))
        .bind(on)
        .bind(id.as_str())
        .fetch_one(&self.writer)
        .await?;
        tenant_from_row(row)
    }

    async fn create_endpoint(&self, endpoint: NewEndpoint, now: i64) -> Result<Endpoint> {
        let id = EndpointId::new();
        sqlx::query(
            "INSERT INTO endpoints (id, tenant_id, url, description, event_types, page_ids, include_standby, \
             include_echoes, secret_sealed, max_concurrency, rate_limit, ordered, format, headers, ed25519_sealed, \
             enabled, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
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
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(created_endpoint(id, endpoint, now))
    }

    async fn list_endpoints(&self, tenant_id: &TenantId) -> Result<Vec<Endpoint>> {
        let rows: Vec<EndpointRow> = sqlx::query_as(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = ? ORDER BY id"
        ))
        .bind(tenant_id.as_str())
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter()
            .map(|row| shown_endpoint_from_row(&self.key, row))
            .collect()
    }

    async fn get_endpoint(&self, tenant_id: &TenantId, id: &EndpointId) -> Result<Endpoint> {
        let row: EndpointRow = sqlx::query_as(&format!(
            "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant_id.as_str())
        .bind(id.as_str())
        .fetch_one(&self.readers)
        .await?;
        shown_endpoint_from_row(&self.key, row)
    }

    async fn delete_endpoint(&self, tenant_id: &TenantId, id: &EndpointId) -> Result<()> {
        let deleted = sqlx::query("DELETE FROM endpoints WHERE tenant_id = ? AND id = ?")
            .bind(tenant_id.as_str())
            .bind(id.as_str())
            .execute(&self.writer)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn update_endpoint(
        &self,
        tenant_id: &TenantId,
        id: &EndpointId,
        update: EndpointUpdate,
        now: i64,
    ) -> Result<Endpoint> {
        let mut query = QueryBuilder::<Sqlite>::new("UPDATE endpoints SET updated_at = ");
        query.push_bind(now);
        push_endpoint_changes(&mut query, &self.key, &update);
        match update.enabled {
            Some(true) => {
                query.push(
                    ", enabled = 1, disabled_reason = NULL, consecutive_failures = 0, failing_since = NULL, \
                     probe_at = NULL",
                );
            }
            Some(false) => {
                query.push(", enabled = 0, disabled_reason = 'disabled by the tenant'");
            }
            None => {}
        }
        query.push(" WHERE tenant_id = ").push_bind(tenant_id.as_str());
        query.push(" AND id = ").push_bind(id.as_str());
        query.push(format!(" RETURNING {ENDPOINT_COLUMNS}"));
        let mut tx = self.write_transaction().await?;
        let was_ordered: Option<bool> =
            sqlx::query_scalar("SELECT ordered FROM endpoints WHERE tenant_id = ? AND id = ?")
                .bind(tenant_id.as_str())
                .bind(id.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        let row: EndpointRow = query.build_query_as().fetch_one(&mut *tx).await?;
        // Only a change of order touches the pending deliveries (a walk over the endpoint's backlog).
        if let Some(controls) = update.controls.as_ref().filter(|c| was_ordered != Some(c.ordered)) {
            // Pending deliveries follow the endpoint's choice: their conversation as ordering key
            // when it keeps order, none (and no index entry) when it does not.
            let statement = if controls.ordered {
                "UPDATE deliveries SET ordering_key = (SELECT json_extract(e.payload, '$.conversation_id')                    FROM events e WHERE e.id = deliveries.event_id)                  WHERE endpoint_id = ? AND status = 'pending' AND ordering_key IS NULL"
            } else {
                "UPDATE deliveries SET ordering_key = NULL                  WHERE endpoint_id = ? AND status = 'pending' AND ordering_key IS NOT NULL"
            };
            sqlx::query(statement).bind(id.as_str()).execute(&mut *tx).await?;
        }
        tx.commit().await?;
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
            "UPDATE endpoints SET previous_secret_sealed = secret_sealed, previous_secret_expires_at = ?, \
             secret_sealed = ?, updated_at = ? WHERE tenant_id = ? AND id = ? RETURNING {ENDPOINT_COLUMNS}"
        ))
        .bind(previous_until)
        .bind(self.key.seal(ENDPOINT_SECRET, &secret.expose()))
        .bind(now)
        .bind(tenant_id.as_str())
        .bind(id.as_str())
        .fetch_one(&self.writer)
        .await?;
        shown_endpoint_from_row(&self.key, row)
    }

    async fn load_routing(&self) -> Result<RoutingData> {
        let mut conn = self.readers.acquire().await?;
        let apps: Vec<AppRow> = sqlx::query_as(&format!("SELECT {APP_COLUMNS} FROM meta_apps"))
            .fetch_all(&mut *conn)
            .await?;
        let pages: Vec<PageRow> = sqlx::query_as(&format!("SELECT {PAGE_COLUMNS} FROM pages"))
            .fetch_all(&mut *conn)
            .await?;
        let endpoints: Vec<EndpointRow> =
            sqlx::query_as(&format!("SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE enabled = 1"))
                .fetch_all(&mut *conn)
                .await?;
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
        // A batch without redeliveries (nearly every batch) is one list of statements, from BEGIN
        // to COMMIT, sent to the connection's thread at once: each round trip to that thread
        // waits for it and then for this task to be scheduled again, which on a busy machine took
        // longer than the writing. Its dedup keys go in with a plain INSERT, so a key seen before
        // fails the list; the transaction is rolled back and the batch written the checked way.
        let (events, keys) = events_and_keys(batch);
        let (receipts, targets) = rows::new_deliveries(batch.len(), &events, |_| true);
        let deliveries = with_ids(targets);

        let mut statements = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE");
        push_dedup_keys(&mut statements, &keys, "");
        push_writes(&mut statements, batch, &events, &deliveries, now);
        let mut tx = ListTx::acquire(&self.writer).await?;
        // The list's statements are padded to a few sizes, so the writer keeps each form prepared.
        match statements.build().execute(tx.conn()).await {
            Ok(_) => {
                tx.committed();
                Ok(receipts)
            }
            Err(sqlx::Error::Database(e)) if e.kind() == sqlx::error::ErrorKind::UniqueViolation => {
                tx.roll_back().await;
                self.ingest_checked(batch, now).await
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn release_dedup_keys(&self, before: i64) -> Result<u64> {
        let bound = rows::dedup_time(before);
        in_steps(&self.writer, 5_000, || {
            sqlx::query("DELETE FROM dedup_keys WHERE key IN (SELECT key FROM dedup_keys WHERE key < ? LIMIT ?)")
                .bind(bound.to_vec())
        })
        .await
    }

    async fn send_test_event(&self, event: &crate::NewEvent, endpoint: &EndpointId, now: i64) -> Result<DeliveryId> {
        let delivery = DeliveryId::new();
        let mut tx = self.write_transaction().await?;
        sqlx::query(
            "INSERT INTO events (id, tenant_id, page_id, type, inbound_id, received_at, payload) \
             VALUES (?, ?, ?, ?, '', ?, ?)",
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
             created_at, updated_at) SELECT ?, ?, id, tenant_id, 'pending', 0, ?, ?, ? FROM endpoints \
             WHERE id = ? AND tenant_id = ?",
        )
        .bind(delivery.as_str())
        .bind(event.id.as_str())
        .bind(now)
        .bind(now)
        .bind(now)
        .bind(endpoint.as_str())
        .bind(event.tenant_id.as_str())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(delivery)
    }

    async fn emit_operational(&self, events: &[OperationalEvent], now: i64) -> Result<usize> {
        let mut created = 0;
        for event in events {
            let endpoints: Vec<EndpointRow> = sqlx::query_as(&format!(
                "SELECT {ENDPOINT_COLUMNS} FROM endpoints WHERE tenant_id = ? AND enabled = 1 ORDER BY id"
            ))
            .bind(event.tenant_id.as_str())
            .fetch_all(&self.readers)
            .await?;
            let mut wanted = Vec::new();
            for row in endpoints {
                let endpoint = endpoint_from_row(row)?;
                if endpoint.filter.wants_operational(&event.event_type) {
                    wanted.push(endpoint.id);
                }
            }
            let mut tx = self.write_transaction().await?;
            sqlx::query(
                "INSERT INTO events (id, tenant_id, page_id, type, inbound_id, received_at, payload) \
                 VALUES (?, ?, '', ?, '', ?, ?)",
            )
            .bind(event.id.as_str())
            .bind(event.tenant_id.as_str())
            .bind(event.event_type.as_str())
            .bind(now)
            .bind(event.to_json())
            .execute(&mut *tx)
            .await?;
            for endpoint in &wanted {
                sqlx::query(
                    "INSERT INTO deliveries (id, event_id, endpoint_id, tenant_id, status, attempts, next_attempt_at, \
                     created_at, updated_at) VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?)",
                )
                .bind(DeliveryId::new().as_str())
                .bind(event.id.as_str())
                .bind(endpoint.as_str())
                .bind(event.tenant_id.as_str())
                .bind(now)
                .bind(now)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
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
        let mut tx = self.write_transaction().await?;
        let leased = Self::take(&mut tx, &lease, endpoints).await?;
        tx.commit().await?;
        self.read_leased(&leased).await
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
        // One transaction (one commit, one sync) records what was sent and leases what is next.
        let mut tx = ListTx::acquire(&self.writer).await?;
        let report = begin_recording(tx.conn(), records, now, health).await?;
        let leased = match &lease {
            Some(lease) if !endpoints.is_empty() => Self::take(tx.conn(), lease, endpoints).await?,
            _ => Leased::default(),
        };
        tx.commit().await?;
        Ok((report, leased))
    }

    async fn load_leased(&self, leased: Leased) -> Result<Vec<LeasedDelivery>> {
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
        let mut tx = ListTx::acquire(&self.writer).await?;
        let report = begin_recording(tx.conn(), records, now, health).await?;
        tx.commit().await?;
        Ok(report)
    }

    async fn list_events(&self, tenant_id: &TenantId, limit: u32) -> Result<Vec<StoredEvent>> {
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = ? ORDER BY id DESC LIMIT ?"
        ))
        .bind(tenant_id.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        self.events_with_items(rows).await
    }

    async fn deliveries_of_event(&self, tenant_id: &TenantId, event_id: &EventId) -> Result<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = ? AND event_id = ? ORDER BY id"
        ))
        .bind(tenant_id.as_str())
        .bind(event_id.as_str())
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(delivery_from_row).collect()
    }

    async fn list_deliveries(&self, tenant_id: &TenantId, limit: u32) -> Result<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = ? ORDER BY id DESC LIMIT ?"
        ))
        .bind(tenant_id.as_str())
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(delivery_from_row).collect()
    }

    async fn attempts_of_delivery(&self, tenant_id: &TenantId, delivery_id: &DeliveryId) -> Result<Vec<Attempt>> {
        let rows: Vec<AttemptRow> = sqlx::query_as(&format!(
            "SELECT {ATTEMPT_COLUMNS} FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id \
             WHERE d.tenant_id = ? AND a.delivery_id = ? ORDER BY a.attempt, a.started_at"
        ))
        .bind(tenant_id.as_str())
        .bind(delivery_id.as_str())
        .fetch_all(&self.readers)
        .await?;
        Ok(rows.into_iter().map(attempt_from_row).collect())
    }

    async fn list_inbound(&self, limit: u32) -> Result<Vec<Inbound>> {
        let rows: Vec<InboundRow> = sqlx::query_as(&format!(
            "SELECT {INBOUND_COLUMNS} FROM inbound i ORDER BY i.id DESC LIMIT ?"
        ))
        .bind(i64::from(limit))
        .fetch_all(&self.readers)
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
        let rows: Vec<EventRow> = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = ?1 \
             AND (?2 IS NULL OR id < ?2) AND (?3 IS NULL OR type = ?3) AND (?4 IS NULL OR type LIKE ?4) \
             AND (?5 IS NULL OR page_id = ?5) AND (?6 IS NULL OR json_extract(payload, '$.sender_id') = ?6) \
             AND (?7 IS NULL OR received_at >= ?7) AND (?8 IS NULL OR received_at < ?8) \
             ORDER BY id DESC LIMIT ?9"
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
        .fetch_all(&self.readers)
        .await?;
        self.events_with_items(rows).await
    }

    async fn get_event(&self, tenant_id: &TenantId, id: &EventId) -> Result<StoredEvent> {
        let row: EventRow = sqlx::query_as(&format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant_id.as_str())
        .bind(id.as_str())
        .fetch_one(&self.readers)
        .await?;
        let mut events = self.events_with_items(vec![row]).await?;
        events.pop().ok_or(StoreError::NotFound)
    }

    async fn query_deliveries(&self, tenant_id: &TenantId, query: &DeliveryQuery) -> Result<Vec<Delivery>> {
        let rows: Vec<DeliveryRow> = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = ?1 AND (?2 IS NULL OR id < ?2) \
             AND (?3 IS NULL OR status = ?3) AND (?4 IS NULL OR endpoint_id = ?4) AND (?5 IS NULL OR event_id = ?5) \
             ORDER BY id DESC LIMIT ?6"
        ))
        .bind(tenant_id.as_str())
        .bind(query.before.as_deref())
        .bind(query.status.map(DeliveryStatus::as_str))
        .bind(query.endpoint_id.as_ref().map(EndpointId::as_str))
        .bind(query.event_id.as_ref().map(EventId::as_str))
        .bind(i64::from(query.limit))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(delivery_from_row).collect()
    }

    async fn get_delivery(&self, tenant_id: &TenantId, id: &DeliveryId) -> Result<Delivery> {
        let row: DeliveryRow = sqlx::query_as(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE tenant_id = ? AND id = ?"
        ))
        .bind(tenant_id.as_str())
        .bind(id.as_str())
        .fetch_one(&self.readers)
        .await?;
        delivery_from_row(row)
    }

    async fn query_inbound(&self, query: &InboundQuery) -> Result<Vec<Inbound>> {
        let columns = match query.tenant_id {
            Some(_) => inbound_columns_for_tenant("?2", INBOUND_EVENT_ENTRY),
            None => INBOUND_COLUMNS.to_owned(),
        };
        let rows: Vec<InboundRow> = sqlx::query_as(&format!(
            "SELECT {columns} FROM inbound i WHERE (?1 IS NULL OR i.id < ?1) \
             AND (?2 IS NULL OR EXISTS (SELECT 1 FROM events e WHERE e.inbound_id = i.id AND e.tenant_id = ?2)) \
             ORDER BY i.id DESC LIMIT ?3"
        ))
        .bind(query.before.as_deref())
        .bind(query.tenant_id.as_ref().map(TenantId::as_str))
        .bind(i64::from(query.limit))
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(inbound_from_row).collect()
    }

    async fn get_inbound(&self, id: &InboundId) -> Result<Inbound> {
        let row: InboundRow = sqlx::query_as(&format!("SELECT {INBOUND_COLUMNS} FROM inbound i WHERE i.id = ?"))
            .bind(id.as_str())
            .fetch_one(&self.readers)
            .await?;
        inbound_from_row(row)
    }

    async fn events_of_inbound(&self, id: &InboundId) -> Result<Vec<InboundEvent>> {
        let rows: Vec<InboundEventRow> = sqlx::query_as(&format!(
            "SELECT e.id, e.tenant_id, e.type, {INBOUND_EVENT_ENTRY} FROM events e WHERE e.inbound_id = ? ORDER BY e.id"
        ))
        .bind(id.as_str())
        .fetch_all(&self.readers)
        .await?;
        rows.into_iter().map(inbound_event_from_row).collect()
    }

    async fn tenant_stats(&self, tenant_id: &TenantId, since: i64) -> Result<TenantStats> {
        let mut conn = self.readers.acquire().await?;
        let (pages,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM pages WHERE tenant_id = ?")
            .bind(tenant_id.as_str())
            .fetch_one(&mut *conn)
            .await?;
        let (enabled, disabled): (i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(enabled = 1), 0), COALESCE(SUM(enabled = 0), 0) FROM endpoints WHERE tenant_id = ?",
        )
        .bind(tenant_id.as_str())
        .fetch_one(&mut *conn)
        .await?;
        let (total, recent): (i64, i64) =
            sqlx::query_as("SELECT COUNT(*), COALESCE(SUM(received_at >= ?), 0) FROM events WHERE tenant_id = ?")
                .bind(since)
                .bind(tenant_id.as_str())
                .fetch_one(&mut *conn)
                .await?;
        let (pending, delivered, failed): (i64, i64, i64) = sqlx::query_as(
            "SELECT COALESCE(SUM(status = 'pending'), 0), COALESCE(SUM(status = 'delivered'), 0), \
             COALESCE(SUM(status = 'failed'), 0) FROM deliveries WHERE tenant_id = ?",
        )
        .bind(tenant_id.as_str())
        .fetch_one(&mut *conn)
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

    async fn idempotency_begin(&self, scope: &str, key: &str, request_hash: &str, now: i64) -> Result<Idempotency> {
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, created_at) VALUES (?, ?, ?, ?) \
             ON CONFLICT (scope, key) DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .execute(&self.writer)
        .await?;
        if claimed.rows_affected() == 1 {
            return Ok(Idempotency::Started);
        }
        let row: IdempotencyRow = sqlx::query_as(
            "SELECT request_hash, status, response_sealed FROM idempotency_keys WHERE scope = ? AND key = ?",
        )
        .bind(scope)
        .bind(key)
        .fetch_one(&self.writer)
        .await?;
        idempotency_from_row(&self.key, row)
    }

    async fn idempotency_finish(&self, scope: &str, key: &str, status: u16, body: &[u8]) -> Result<()> {
        let text = String::from_utf8_lossy(body);
        sqlx::query("UPDATE idempotency_keys SET status = ?, response_sealed = ? WHERE scope = ? AND key = ?")
            .bind(i64::from(status))
            .bind(self.key.seal(IDEMPOTENT_RESPONSE, &text))
            .bind(scope)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND status IS NULL")
            .bind(scope)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn idempotency_prune(&self, before: i64) -> Result<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
            .bind(before)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    async fn count_pending(&self) -> Result<u64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM deliveries WHERE status = 'pending'")
            .fetch_one(&self.readers)
            .await?;
        Ok(count(n))
    }

    async fn replay(&self, tenant_id: &TenantId, what: Replay<'_>, now: i64) -> Result<u64> {
        let mut query =
            QueryBuilder::<Sqlite>::new("UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ");
        query.push_bind(now).push(", updated_at = ").push_bind(now);
        push_replay_scope(&mut query, tenant_id, what);
        Ok(query.build().execute(&self.writer).await?.rows_affected())
    }

    async fn count_replayable(&self, tenant_id: &TenantId, what: Replay<'_>) -> Result<u64> {
        let mut query = QueryBuilder::<Sqlite>::new("SELECT COUNT(*) FROM deliveries");
        push_replay_scope(&mut query, tenant_id, what);
        let (n,): (i64,) = query.build_query_as().fetch_one(&self.readers).await?;
        Ok(count(n))
    }
}

/// A batch's events in order, each with the index of its request, and their dedup keys.
fn events_and_keys(batch: &[IngestRequest]) -> (Vec<(usize, &crate::NewEvent)>, Vec<[u8; rows::DEDUP_KEY_LEN]>) {
    let events: Vec<(usize, &crate::NewEvent)> = batch
        .iter()
        .enumerate()
        .flat_map(|(i, req)| req.events.iter().map(move |e| (i, e)))
        .collect();
    let keys = events.iter().map(|(_, event)| rows::dedup_key(event)).collect();
    (events, keys)
}

/// The deliveries to create for `targets`, each with a new id.
fn with_ids<'a>(
    targets: Vec<(&'a crate::NewEvent, &'a EndpointId)>,
) -> Vec<(DeliveryId, &'a crate::NewEvent, &'a EndpointId)> {
    targets
        .into_iter()
        .map(|(event, endpoint)| (DeliveryId::new(), event, endpoint))
        .collect()
}

/// Appends to a list of statements (after its `BEGIN`) an `INSERT` of `keys` into `dedup_keys`,
/// each statement followed by `tail` (its conflict clause).
fn push_dedup_keys<'a>(list: &mut QueryBuilder<'a, Sqlite>, keys: &'a [[u8; rows::DEDUP_KEY_LEN]], tail: &str) {
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        list.push("; INSERT INTO dedup_keys (key) SELECT column1 FROM (");
        push_padded_values(list, chunk.iter(), 1, |mut row, key| {
            row.push_bind(&key[..]);
        });
        list.push(") WHERE column1 IS NOT NULL");
        list.push(tail);
    }
}

/// Appends to a list of statements a batch's writes, then `COMMIT`: its POSTs, `events` (each
/// with the index of its request in `batch`) and `deliveries`.
fn push_writes<'a>(
    list: &mut QueryBuilder<'a, Sqlite>,
    batch: &'a [IngestRequest],
    events: &[(usize, &'a crate::NewEvent)],
    deliveries: &'a [(DeliveryId, &'a crate::NewEvent, &'a EndpointId)],
    now: i64,
) {
    for chunk in batch.chunks(ROWS_PER_STATEMENT) {
        list.push("; ");
        push_inbound(list, chunk);
    }
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        list.push("; ");
        push_events(list, batch, chunk);
    }
    for chunk in deliveries.chunks(ROWS_PER_STATEMENT) {
        list.push("; ");
        push_deliveries(list, chunk, now);
    }
    list.push("; COMMIT");
}

/// Appends an `INSERT` of `requests`' POSTs to `query`.
fn push_inbound<'a>(query: &mut QueryBuilder<'a, Sqlite>, requests: &'a [IngestRequest]) {
    query.push(
        "INSERT INTO inbound (id, received_at, app_id, object, body, entries, events, unroutable_entries) \
         SELECT * FROM (",
    );
    push_padded_values(query, requests.iter(), 8, |mut row, req| {
        let unroutable =
            (!req.unroutable.is_empty()).then(|| serde_json::to_string(&req.unroutable).unwrap_or_default());
        row.push_bind(req.inbound_id.as_str())
            .push_bind(req.received_at)
            .push_bind(req.app_id.as_deref())
            .push_bind(req.object.as_str())
            .push_bind(&req.body[..])
            .push_bind(i64::from(req.entries))
            .push_bind(i64::try_from(req.events.len()).unwrap_or(i64::MAX))
            .push_bind(unroutable);
    });
    query.push(") WHERE column1 IS NOT NULL");
}

/// Appends an `INSERT` of `events` (each with the index of its request in `batch`) to `query`.
fn push_events<'a>(
    query: &mut QueryBuilder<'a, Sqlite>,
    batch: &'a [IngestRequest],
    events: &[(usize, &'a crate::NewEvent)],
) {
    query.push(
        "INSERT INTO events (id, tenant_id, page_id, type, inbound_id, received_at, payload, raw_at, \
         raw_start, raw_len, text_at, text_start, text_len) SELECT * FROM (",
    );
    push_padded_values(query, events.iter(), 13, |mut row, &(i, event)| {
        let req = &batch[i];
        let [at, start, len] = rows::span_columns(event.raw);
        let [text_at, text_start, text_len] = rows::span_columns(event.text);
        row.push_bind(event.id.as_str())
            .push_bind(event.tenant_id.as_str())
            .push_bind(event.page_id.as_str())
            .push_bind(event.event_type.as_str())
            .push_bind(req.inbound_id.as_str())
            .push_bind(req.received_at)
            .push_bind(event.payload.as_str())
            .push_bind(at)
            .push_bind(start)
            .push_bind(len)
            .push_bind(text_at)
            .push_bind(text_start)
            .push_bind(text_len);
    });
    query.push(") WHERE column1 IS NOT NULL");
}

/// Appends an `INSERT` of pending `deliveries`, due at `now`, to `query`, in the order given
/// (their rowids: the order they are leased in). A delivery keeps its event's conversation as its
/// ordering key only when its endpoint is `ordered`, as the endpoint stands in this transaction.
fn push_deliveries<'a>(
    query: &mut QueryBuilder<'a, Sqlite>,
    deliveries: &'a [(DeliveryId, &'a crate::NewEvent, &'a EndpointId)],
    now: i64,
) {
    query.push(
        "INSERT INTO deliveries (id, event_id, endpoint_id, tenant_id, ordering_key, status, attempts, \
         next_attempt_at, created_at, updated_at) \
         SELECT v.column1, v.column2, v.column3, v.column4, \
             CASE WHEN (SELECT ordered FROM endpoints e WHERE e.id = v.column3) = 1 THEN v.column5 END, \
             'pending', 0, ",
    );
    query.push_bind(now).push(", ").push_bind(now).push(", ").push_bind(now);
    query.push(" FROM (");
    push_padded_values(
        query,
        deliveries.iter().enumerate(),
        6,
        |mut row, (n, (id, event, endpoint))| {
            row.push_bind(id.as_str())
                .push_bind(event.id.as_str())
                .push_bind(endpoint.as_str())
                .push_bind(event.tenant_id.as_str())
                .push_bind(event.conversation_id.as_deref())
                .push_bind(i64::try_from(n).unwrap_or(i64::MAX));
        },
    );
    query.push(") AS v WHERE v.column1 IS NOT NULL ORDER BY v.column6");
}

/// Appends `VALUES` with a row for each of `items` (`width` columns, bound by `bind`), and then
/// rows of NULLs up to a power of two of at least [`MIN_PADDED_ROWS`] (a statement's items are at
/// most [`ROWS_PER_STATEMENT`]). The statement around it skips the NULL rows (`WHERE column1 IS
/// NOT NULL`).
///
/// So the text of a batch's list of statements takes one of a few forms, whatever the number of
/// its rows, and the writer keeps each form prepared: parsing and planning a list of hundreds of
/// rows anew for every batch took a sixth of the writer's time, more than a row of NULLs costs.
fn push_padded_values<'a, T>(
    query: &mut QueryBuilder<'a, Sqlite>,
    mut items: impl ExactSizeIterator<Item = T>,
    width: usize,
    mut bind: impl FnMut(sqlx::query_builder::Separated<'_, 'a, Sqlite, &'static str>, T),
) {
    let rows = items.len().next_power_of_two().max(MIN_PADDED_ROWS);
    query.push("VALUES ");
    for n in 0..rows {
        query.push(if n == 0 { "(" } else { ", (" });
        match items.next() {
            Some(item) => bind(query.separated(", "), item),
            None => {
                let mut row = query.separated(", ");
                for _ in 0..width {
                    row.push_bind(None::<i64>);
                }
            }
        }
        query.push(")");
    }
}

/// Logs a wait of 10 ms or more, since `started`, for the writer connection.
fn note_writer_wait(started: std::time::Instant) {
    let waited = started.elapsed();
    if waited >= Duration::from_millis(10) {
        tracing::debug!(waited_ms = waited.as_millis(), "waited for the database writer");
    }
}

/// The writer connection, for a transaction whose `BEGIN` and `COMMIT` travel inside the lists of
/// statements sent to the connection's thread (one round trip each) rather than on their own.
/// sqlx does not see such a transaction, so this guard ends it: dropped before the transaction
/// has ended (an error on the way, or its future cancelled), it closes the connection rather than
/// return it to the pool, and closing rolls the transaction back.
struct ListTx {
    conn: sqlx::pool::PoolConnection<Sqlite>,
    /// A `BEGIN` may have run and no `COMMIT` or `ROLLBACK` has.
    open: bool,
}

impl ListTx {
    async fn acquire(pool: &SqlitePool) -> std::result::Result<Self, sqlx::Error> {
        let started = std::time::Instant::now();
        let conn = pool.acquire().await?;
        note_writer_wait(started);
        Ok(Self { conn, open: true })
    }

    fn conn(&mut self) -> &mut sqlx::SqliteConnection {
        &mut self.conn
    }

    /// The transaction has committed: the connection goes back to the pool.
    fn committed(mut self) {
        self.open = false;
    }

    /// Commits on its own round trip.
    async fn commit(mut self) -> std::result::Result<(), sqlx::Error> {
        sqlx::query("COMMIT").execute(self.conn()).await?;
        self.committed();
        Ok(())
    }

    /// Rolls back after a list failed inside the transaction (a list stops at the statement that
    /// fails). Should the `ROLLBACK` fail too, the connection is closed.
    async fn roll_back(mut self) {
        if sqlx::query("ROLLBACK").execute(self.conn()).await.is_ok() {
            self.open = false;
        }
    }
}

impl Drop for ListTx {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}
