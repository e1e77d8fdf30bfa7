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
async fn opens_in_wal_mode_with_full_sync() -> Result {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(
        &dir.path().join("pagewire.db"),
        MasterKey::generate(),
        SqliteStoreOptions::default(),
    )
    .await?;
    let (mode, sync) = store.pragmas().await?;
    assert_eq!(mode, "wal");
    assert_eq!(sync, 2, "synchronous = FULL");
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

#[tokio::test]
async fn upgrading_moves_dedup_keys_without_losing_deliveries() -> Result {
    use sqlx::{ConnectOptions as _, Connection as _, Executor as _};
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("pagewire.db");
    let older = testing::migrations_before("sqlite", "0016")?;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .foreign_keys(true)
        .connect()
        .await?;
    sqlx::migrate::Migrator::new(older.path()).await?.run(&mut conn).await?;
    let legacy = testing::LegacyEvent::default();
    for statement in legacy.statements() {
        conn.execute(statement.as_str()).await?;
    }
    conn.close().await?;

    let store = SqliteStore::open(&path, MasterKey::generate(), SqliteStoreOptions::default()).await?;
    legacy.check_upgraded(&store).await?;
    Ok(())
}
