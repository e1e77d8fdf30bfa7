//! `pagewire serve` and `pagewire migrate`: prepare the data directory and run the gateway.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use pagewire_core::{Clock, HealthPolicy, MasterKey, RetryPolicy, Secret, SystemClock};
use pagewire_delivery::DeliveryConfig;
use pagewire_server::auth::{generate_token, AdminToken, ADMIN_TOKEN_PREFIX};
use pagewire_server::ratelimit::RateLimit;
use pagewire_server::{Gateway, GatewayConfig, IngestConfig};
use pagewire_store::{PgStore, PgStoreOptions, SqliteStore, SqliteStoreOptions, Store};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, IngestSection};

const MASTER_KEY_FILE: &str = "master.key";
const ADMIN_TOKEN_FILE: &str = "admin-token.sha256";
const DATABASE_FILE: &str = "pagewire.db";

pub async fn migrate(config: Config) -> anyhow::Result<()> {
    prepare_data_dir(&config.data_dir)?;
    let key = master_key(&config)?;
    let store = open_store(&config, key).await?;
    store.close().await;
    println!("the database is up to date");
    Ok(())
}

pub async fn serve(config: Config) -> anyhow::Result<()> {
    prepare_data_dir(&config.data_dir)?;
    let key = master_key(&config)?;
    let (admin_token, new_token) = admin_token(&config)?;
    let store = open_store(&config, key).await?;
    let shared = store.shared();

    let gateway_config = GatewayConfig {
        role: config.role,
        max_connections: config.max_connections.max(1),
        idle_timeout: Duration::from_secs(config.idle_timeout_secs.max(1)),
        admin_token,
        ingest: ingest_config(&config.ingest, matches!(store, Database::Postgres(_))),
        delivery: DeliveryConfig {
            concurrency: config.delivery.concurrency,
            request_timeout: Duration::from_secs(config.delivery.request_timeout_secs),
            poll_interval: Duration::from_millis(config.delivery.poll_interval_ms.max(10)),
            destinations: Arc::new(config.destinations()?),
            proxy: config.delivery_proxy()?,
            retry: RetryPolicy::from_secs(&config.delivery.retry_schedule_secs),
            health: HealthPolicy {
                disable_after: Duration::from_secs(config.delivery.disable_after_days.saturating_mul(24 * 3600)),
                ..HealthPolicy::default()
            },
            ..DeliveryConfig::default()
        },
        routing_refresh: Duration::from_secs(30),
        dedup_window: Duration::from_secs(config.dedup_window_days.saturating_mul(24 * 3600)),
        retention: Duration::from_secs(config.retention_days.saturating_mul(24 * 3600)),
        maintenance_interval: Duration::from_secs(3600),
        token_ttl: Duration::from_secs(config.api.token_ttl_secs.max(1)),
        rate_limit: RateLimit {
            per_second: config.api.rate_limit_per_second,
            burst: config.api.rate_limit_burst,
        },
        graph: pagewire_graph::GraphConfig {
            base_url: config.graph_url.clone(),
            version: config.graph_version.clone(),
            ..pagewire_graph::GraphConfig::default()
        },
        public_url: config.public_url.clone(),
    };
    let gateway = Gateway::build(shared, Arc::new(SystemClock) as Arc<dyn Clock>, gateway_config)
        .await
        .context("starting the gateway")?;
    let listener = pagewire_server::listener::bind(config.listen)
        .with_context(|| format!("cannot listen on {} (is another process using it?)", config.listen))?;
    let addr = listener.local_addr()?;

    if let Some(token) = new_token {
        print_first_start(&token, &addr.to_string(), &config.data_dir);
    }
    tracing::info!(
        %addr,
        role = ?config.role,
        data_dir = %config.data_dir.display(),
        allow_private_endpoints = config.allow_private_endpoints,
        delivery_proxy = config.delivery_proxy().is_ok_and(|proxy| proxy.is_some()),
        "pagewire started"
    );
    println!("pagewire listening on http://{addr}");
    let _ = std::io::stdout().flush();

    // Nodes sharing a PostgreSQL database tell each other when deliveries are due and when routing
    // changed, so that a webhook ingested on one node is sent at once by another, and a Page
    // onboarded through one is routed by all.
    let follower = match &store {
        Database::Postgres(pg) => Some(pg.follow_changes(gateway.dispatcher().waker(), gateway.routing_changed())),
        Database::Sqlite(_) => None,
    };
    let shutdown = CancellationToken::new();
    tokio::spawn(cancel_on_signal(shutdown.clone()));
    let result = gateway.serve(listener, shutdown).await;
    if let Some(follower) = follower {
        follower.abort();
    }
    store.close().await;
    tracing::info!("pagewire stopped");
    result.context("serving")
}

/// The ingest writer's settings, with the store's defaults for what the operator left unset.
fn ingest_config(section: &IngestSection, postgres: bool) -> IngestConfig {
    // One connection writes SQLite; on PostgreSQL batches fill while others commit.
    let writers = section.writers.unwrap_or(if postgres { 4 } else { 1 }).max(1);
    IngestConfig {
        max_requests: section.max_requests.max(1),
        max_events: section.max_events.max(1),
        queue: section.queue.max(1),
        max_in_flight: section.max_in_flight.max(1),
        writers,
        linger: Duration::from_micros(section.linger_us),
        linger_requests: section.linger_requests.max(1),
    }
}

/// SIGINT (Ctrl-C) or SIGTERM start a graceful shutdown.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
    shutdown.cancel();
}

pub(crate) fn prepare_data_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    restrict(dir, 0o700)?;
    tracing::info!(data_dir = %dir.display(), "created the data directory");
    Ok(())
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot restrict the permissions of {}", path.display()))
}

#[cfg(not(unix))]
fn restrict(_: &Path, _: u32) -> anyhow::Result<()> {
    Ok(())
}

/// Writes a new file readable only by its owner; fails if it exists.
fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    file.sync_all()?;
    Ok(())
}

/// `PAGEWIRE_MASTER_KEY`, else the data dir's key file, else a new key written there.
pub(crate) fn master_key(config: &Config) -> anyhow::Result<MasterKey> {
    if let Some(key) = &config.master_key {
        return Ok(MasterKey::parse(key.expose())?);
    }
    let path = config.data_dir.join(MASTER_KEY_FILE);
    if path.exists() {
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        return MasterKey::parse(&text).with_context(|| format!("{} does not hold a valid master key", path.display()));
    }
    let key = MasterKey::generate();
    write_private(&path, &key.to_base64())?;
    tracing::info!(path = %path.display(), "generated the master key; back it up: without it stored secrets cannot be read");
    Ok(key)
}

/// `PAGEWIRE_ADMIN_TOKEN`, else the hash kept in the data dir, else a new token whose hash is kept
/// there and which is returned to be shown once.
fn admin_token(config: &Config) -> anyhow::Result<(AdminToken, Option<String>)> {
    if let Some(token) = &config.admin_token {
        return Ok((AdminToken::from_token(token), None));
    }
    let path = config.data_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        let text = fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let Some(token) = AdminToken::from_hash_hex(&text) else {
            bail!(
                "{} is damaged: delete it and restart to generate a new admin token",
                path.display()
            );
        };
        return Ok((token, None));
    }
    let token = generate_token(ADMIN_TOKEN_PREFIX);
    let admin = AdminToken::from_token(&Secret::new(token.clone()));
    write_private(&path, &admin.hash_hex())?;
    Ok((admin, Some(token)))
}

fn print_first_start(token: &str, addr: &str, data_dir: &Path) {
    println!(
        "
Pagewire generated its admin token. It is shown only this once; keep it safe:

    {token}

Next, create a tenant with it:

    export PAGEWIRE_ADMIN_TOKEN={token}
    curl -s -X POST http://{addr}/v1/tenants \\
      -H \"Authorization: Bearer $PAGEWIRE_ADMIN_TOKEN\" -H 'Content-Type: application/json' \\
      -d '{{\"name\": \"Acme Bots\"}}'

(Lost it? Delete {} and restart to generate a new one.)
",
        data_dir.join(ADMIN_TOKEN_FILE).display()
    );
}

/// The database the gateway keeps its state in, as `PAGEWIRE_DATABASE_URL` names it.
#[derive(Debug, Clone)]
pub(crate) enum Database {
    /// The embedded file: one node.
    Sqlite(SqliteStore),
    /// A server that several nodes share.
    Postgres(PgStore),
}

impl Database {
    /// The store, for the gateway and the commands.
    pub(crate) fn store(&self) -> &dyn Store {
        match self {
            Self::Sqlite(store) => store,
            Self::Postgres(store) => store,
        }
    }

    /// The store, to be shared by the gateway's tasks.
    pub(crate) fn shared(&self) -> Arc<dyn Store> {
        match self {
            Self::Sqlite(store) => Arc::new(store.clone()),
            Self::Postgres(store) => Arc::new(store.clone()),
        }
    }

    /// Waits for in-flight statements and closes the connections.
    pub(crate) async fn close(&self) {
        match self {
            Self::Sqlite(store) => store.close().await,
            Self::Postgres(store) => store.close().await,
        }
    }
}

/// Opens the database (the SQLite file in the data directory unless `PAGEWIRE_DATABASE_URL` says
/// otherwise) and brings its schema up to date.
pub(crate) async fn open_store(config: &Config, key: MasterKey) -> anyhow::Result<Database> {
    let Some(url) = &config.database_url else {
        let path = config.data_dir.join(DATABASE_FILE);
        let store = SqliteStore::open(&path, key, SqliteStoreOptions::default())
            .await
            .with_context(|| format!("opening the database {}", path.display()))?;
        return Ok(Database::Sqlite(store));
    };
    let url = url.expose();
    if url.starts_with("sqlite:") {
        let store = SqliteStore::open_url(url, key, SqliteStoreOptions::default())
            .await
            .context("opening the SQLite database at PAGEWIRE_DATABASE_URL")?;
        Ok(Database::Sqlite(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        // The URL can hold a password: errors name the variable, never the URL.
        let store = PgStore::connect(url, key, PgStoreOptions::default())
            .await
            .context("connecting to the PostgreSQL database at PAGEWIRE_DATABASE_URL")?;
        Ok(Database::Postgres(store))
    } else {
        bail!("PAGEWIRE_DATABASE_URL must start with sqlite:, postgres:// or postgresql://")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::ingest_config;
    use crate::config::IngestSection;

    #[test]
    fn defaults_by_store_and_bounds() {
        let unset = IngestSection::default();
        let sqlite = ingest_config(&unset, false);
        assert_eq!((sqlite.writers, sqlite.linger), (1, Duration::from_millis(1)));
        let postgres = ingest_config(&unset, true);
        assert_eq!((postgres.writers, postgres.linger), (4, Duration::from_millis(1)));
        assert_eq!(sqlite.linger_requests, 64);

        let one_writer = IngestSection {
            writers: Some(1),
            ..IngestSection::default()
        };
        assert_eq!(ingest_config(&one_writer, true).writers, 1);
        assert_eq!(ingest_config(&one_writer, true).linger, Duration::from_millis(1));
        let lingering = IngestSection {
            linger_us: 250,
            ..IngestSection::default()
        };
        assert_eq!(ingest_config(&lingering, true).linger, Duration::from_micros(250));
        let no_writers = IngestSection {
            writers: Some(0),
            ..IngestSection::default()
        };
        assert_eq!(ingest_config(&no_writers, false).writers, 1);
        let no_company = IngestSection {
            linger_requests: 0,
            ..IngestSection::default()
        };
        assert_eq!(ingest_config(&no_company, false).linger_requests, 1);
    }
}
