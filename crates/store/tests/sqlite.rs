//! The store contract on the embedded backend: a real SQLite file per test.

use std::sync::Arc;

use pagewire_core::MasterKey;
use pagewire_store::{testing, SqliteStore, SqliteStoreOptions, Store, StoreError};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

async fn store(dir: &tempfile::TempDir, key: MasterKey) -> std::result::Result<Arc<dyn Store>, StoreError> {
    let store = SqliteStore::open(&dir.path().join("pagewire.db"), key, SqliteStoreOptions::default()).await?;
    Ok(Arc::new(store))
}

/// A store on a file of its own, in a directory that goes when the test ends.
async fn fresh() -> Result<(tempfile::TempDir, Arc<dyn Store>)> {
    let dir = tempfile::tempdir()?;
    let store = store(&dir, MasterKey::generate()).await?;
    Ok((dir, store))
}

testing::contract_tests!(fresh);

#[tokio::test]
async fn opens_in_wal_mode_with_full_sync_and_8_kib_pages() -> Result {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(
        &dir.path().join("pagewire.db"),
        MasterKey::generate(),
        SqliteStoreOptions::default(),
    )
    .await?;
    let pragmas = store.pragmas().await?;
    assert_eq!(pragmas.journal_mode, "wal");
    assert_eq!(pragmas.synchronous, 2, "synchronous = FULL");
    assert_eq!(pragmas.page_size, 8192);
    Ok(())
}

/// The database holds every tenant's messages: other local users must not read it, even where
/// the data directory is open to them (mode 0777) or was made by an older release.
#[cfg(unix)]
#[tokio::test]
async fn keeps_database_files_readable_by_their_owner_only() -> Result {
    use std::os::unix::fs::PermissionsExt;
    let mode = |path: &std::path::Path| -> Result<u32> { Ok(std::fs::metadata(path)?.permissions().mode() & 0o777) };
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))?;
    let db = dir.path().join("pagewire.db");
    let first = store(&dir, MasterKey::generate()).await?;
    testing::onboard(first.as_ref(), "210").await?;
    for file in ["pagewire.db", "pagewire.db-wal", "pagewire.db-shm"] {
        assert_eq!(mode(&dir.path().join(file))?, 0o600, "{file}");
    }
    drop(first);

    // Files an older release left readable to all are closed up when the node opens them.
    for file in ["pagewire.db", "pagewire.db-wal", "pagewire.db-shm"] {
        let path = dir.path().join(file);
        if path.exists() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
        }
    }
    let reopened = store(&dir, MasterKey::generate()).await?;
    assert_eq!(mode(&db)?, 0o600);
    drop(reopened);
    Ok(())
}

#[tokio::test]
async fn refuses_to_open_secrets_with_another_master_key() -> Result {
    let dir = tempfile::tempdir()?;
    let first = store(&dir, MasterKey::generate()).await?;
    testing::onboard(first.as_ref(), "200").await?;
    drop(first);
    let second = store(&dir, MasterKey::generate()).await?;
    let err = second.load_routing().await;
    assert!(matches!(err, Err(StoreError::Sealed(_))), "{err:?}");
    Ok(())
}

/// A database at `path` as a release before migration `version` left it, and a connection to it.
async fn migrated_before(path: &std::path::Path, version: &str) -> Result<sqlx::SqliteConnection> {
    use sqlx::ConnectOptions as _;
    let older = testing::migrations_before("sqlite", version)?;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .foreign_keys(true)
        .connect()
        .await?;
    sqlx::migrate::Migrator::new(older.path()).await?.run(&mut conn).await?;
    Ok(conn)
}

#[tokio::test]
async fn upgrading_moves_dedup_keys_without_losing_deliveries() -> Result {
    use sqlx::{Connection as _, Executor as _};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pagewire.db");
    let mut conn = migrated_before(&path, "0016").await?;
    let legacy = testing::LegacyEvent::default();
    for statement in legacy.statements() {
        conn.execute(statement.as_str()).await?;
    }
    conn.close().await?;

    let store = SqliteStore::open(&path, MasterKey::generate(), SqliteStoreOptions::default()).await?;
    legacy.check_upgraded(&store).await?;
    // A database made before keeps the page size it was made with, and works as well.
    let pragmas = store.pragmas().await?;
    assert_eq!((pragmas.journal_mode.as_str(), pragmas.page_size), ("wal", 4096));
    Ok(())
}

/// Pages onboarded before proof was asked for stay routed after the upgrade, and are listed as
/// unproven (`legacy`): the operator approves or moves them.
#[tokio::test]
async fn pages_from_before_proof_stay_routed_as_legacy() -> Result {
    use sqlx::{Connection as _, Executor as _};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pagewire.db");
    let mut conn = migrated_before(&path, "0022").await?;
    for statement in [
        "INSERT INTO tenants (id, name, created_at) VALUES ('ten_01HZY3J5Q8X9W7V6T5R4P3N2M1', 'Old', 1)",
        "INSERT INTO meta_apps (id, app_id, tenant_id, app_secret_sealed, verify_token_sealed, verify_token_hash, \
         created_at, updated_at) VALUES ('app_01HZY3J5Q8X9W7V6T5R4P3N2M1', '9300', NULL, 'x', 'y', 'h', 1, 1)",
        "INSERT INTO pages (id, page_id, tenant_id, app_id, platform, created_at) \
         VALUES ('pg_01HZY3J5Q8X9W7V6T5R4P3N2M1', '300', 'ten_01HZY3J5Q8X9W7V6T5R4P3N2M1', '9300', 'messenger', 1)",
    ] {
        conn.execute(statement).await?;
    }
    conn.close().await?;

    let store = SqliteStore::open(&path, MasterKey::generate(), SqliteStoreOptions::default()).await?;
    let pages = store.all_pages().await?;
    assert_eq!(pages.len(), 1);
    assert_eq!(pages[0].proof, pagewire_store::PageProof::Legacy);
    assert!(pages[0].proof.is_routed() && !pages[0].proof.is_proven());
    Ok(())
}

/// Another connection to the store's file, holding its write lock (until `COMMIT`), as the
/// checkpointer's `RESTART` step does.
async fn hold_write_lock(dir: &tempfile::TempDir) -> Result<sqlx::SqliteConnection> {
    use sqlx::ConnectOptions as _;
    let mut other = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(dir.path().join("pagewire.db"))
        .connect()
        .await?;
    sqlx::query("BEGIN IMMEDIATE").execute(&mut other).await?;
    Ok(other)
}

/// A change that reads before it writes (an endpoint's update reads whether it kept order) waits
/// while another connection holds the write lock, as the checkpointer's `RESTART` step does, and
/// then goes through; it used to fail at once with "database is locked".
#[tokio::test]
async fn a_change_waits_for_the_write_lock_held_elsewhere() -> Result {
    use sqlx::Connection as _;
    let (dir, store) = fresh().await?;
    let f = testing::onboard(store.as_ref(), "140").await?;
    let mut other = hold_write_lock(&dir).await?;
    let update = tokio::spawn({
        let store = Arc::clone(&store);
        async move {
            let update = pagewire_store::EndpointUpdate {
                description: Some(Some(String::from("renamed"))),
                ..pagewire_store::EndpointUpdate::default()
            };
            store.update_endpoint(&f.tenant, &f.endpoint, update, 1).await
        }
    });
    let mut update = std::pin::pin!(update);
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(300), &mut update)
            .await
            .is_err(),
        "the update ended while the lock was held elsewhere"
    );
    sqlx::query("COMMIT").execute(&mut other).await?;
    other.close().await?;
    let endpoint = tokio::time::timeout(std::time::Duration::from_secs(10), update).await???;
    assert_eq!(endpoint.description.as_deref(), Some("renamed"));
    Ok(())
}

/// A batch is one list of statements from its `BEGIN` to its `COMMIT`. Abandoned while that list
/// waits for the write lock (its caller went away), it leaves no transaction open on the writer:
/// the batch that follows is written, and the abandoned one is not.
#[tokio::test]
async fn an_abandoned_ingest_leaves_the_writer_usable() -> Result {
    use sqlx::Connection as _;
    let (dir, store) = fresh().await?;
    let f = testing::onboard(store.as_ref(), "141").await?;
    let mut other = hold_write_lock(&dir).await?;
    let abandoned = tokio::time::timeout(
        std::time::Duration::from_millis(300),
        store.ingest(&[testing::request(&f, "141", &["a"])], testing::NOW),
    )
    .await;
    assert!(abandoned.is_err(), "the ingest ended while the lock was held elsewhere");
    sqlx::query("COMMIT").execute(&mut other).await?;
    other.close().await?;

    let receipts = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        store.ingest(&[testing::request(&f, "141", &["b"])], testing::NOW),
    )
    .await??;
    assert_eq!(receipts[0].events, 1);
    assert_eq!(
        store.list_inbound(10).await?.len(),
        1,
        "the abandoned batch wrote nothing"
    );
    Ok(())
}
