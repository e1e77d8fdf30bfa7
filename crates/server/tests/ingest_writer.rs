//! The ingest writer commits many tenants' webhooks together; one request that the database
//! refuses must fail alone, on both stores, and the others be acknowledged.

use std::sync::Arc;

use pagewire_core::{EndpointId, ManualClock, MasterKey};
use pagewire_server::ingest::{IngestError, IngestWriter};
use pagewire_server::IngestConfig;
use pagewire_store::testing::{self, pg_server};
use pagewire_store::{PgStore, PgStoreOptions, SqliteStore, SqliteStoreOptions, Store};
use tokio::sync::Notify;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// Tenant A's request names an endpoint deleted meanwhile (its deliveries cannot be stored); it
/// lands in one batch with four of tenant B's.
async fn a_request_the_store_refuses_fails_alone(store: Arc<dyn Store>) -> TestResult {
    let a = testing::onboard(store.as_ref(), "160").await?;
    let b = testing::onboard(store.as_ref(), "161").await?;
    let (writer, task) = IngestWriter::spawn(
        Arc::clone(&store),
        Arc::new(ManualClock::starting_now()),
        Arc::new(Notify::new()),
        IngestConfig::default(),
    );
    let mut culprit = testing::request(&a, "160", &["a"]);
    culprit.events[0].endpoints = vec![EndpointId::new()];
    let b_request = |key: &str| testing::request(&b, "161", &[key]);
    // Submitted in one poll, before the writer runs: they are one batch.
    let (b0, b1, bad, b2, b3) = tokio::join!(
        writer.submit(b_request("b0")),
        writer.submit(b_request("b1")),
        writer.submit(culprit),
        writer.submit(b_request("b2")),
        writer.submit(b_request("b3")),
    );
    assert!(matches!(bad, Err(IngestError::Store(_))), "{bad:?}");
    for receipt in [b0, b1, b2, b3] {
        assert_eq!(receipt?.events, 1, "B's webhook is acknowledged");
    }
    assert_eq!(store.list_events(&b.tenant, 10).await?.len(), 4);
    assert!(store.list_events(&a.tenant, 10).await?.is_empty());
    drop(writer);
    task.await?;
    Ok(())
}

#[tokio::test]
async fn a_request_the_store_refuses_fails_alone_on_sqlite() -> TestResult {
    let dir = tempfile::tempdir()?;
    let store = SqliteStore::open(
        &dir.path().join("pagewire.db"),
        MasterKey::generate(),
        SqliteStoreOptions::default(),
    )
    .await?;
    a_request_the_store_refuses_fails_alone(Arc::new(store)).await
}

#[tokio::test]
async fn a_request_the_store_refuses_fails_alone_on_postgres() -> TestResult {
    let url = pg_server::fresh_database().await?;
    let options = PgStoreOptions {
        max_connections: 4,
        ..PgStoreOptions::default()
    };
    let store = PgStore::connect(&url, MasterKey::generate(), options).await?;
    a_request_the_store_refuses_fails_alone(Arc::new(store)).await
}
