//! The store contract on PostgreSQL: a real server started from the machine's binaries (one per test
//! process, see `pagewire_store::testing::pg_server`), a fresh database per test. Then what only
//! a shared database has to guarantee: nodes working side by side never take the same work.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pagewire_core::{DeliveryControls, HealthPolicy, MasterKey, NextStep};
use pagewire_store::testing::{self, pg_server};
use pagewire_store::{AttemptRecord, Lease, LeasedDelivery, PgStore, PgStoreOptions, Store, StoreError};
use tokio::sync::Notify;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const NOW: i64 = 1_700_000_000_000;
const LEASE_MS: i64 = 60_000;
/// How long an announcement may take to reach another node: generous, for a loaded machine.
const HEARING: Duration = Duration::from_secs(10);

/// A node's store: each test holds a handful of connections at most.
async fn node(url: &str, key: MasterKey) -> std::result::Result<Arc<dyn Store>, StoreError> {
    let options = PgStoreOptions {
        max_connections: 4,
        ..PgStoreOptions::default()
    };
    Ok(Arc::new(PgStore::connect(url, key, options).await?))
}

/// A node on a database of its own (nothing to keep beside it: the server outlives the tests).
async fn fresh() -> Result<((), Arc<dyn Store>)> {
    let url = pg_server::fresh_database().await?;
    Ok(((), node(&url, MasterKey::generate()).await?))
}

testing::contract_tests!(fresh);

#[tokio::test]
async fn refuses_to_open_secrets_with_another_master_key() -> Result {
    let url = pg_server::fresh_database().await?;
    let first = node(&url, MasterKey::generate()).await?;
    testing::onboard(first.as_ref(), "200").await?;
    drop(first);
    let second = node(&url, MasterKey::generate()).await?;
    let err = second.load_routing().await;
    assert!(matches!(err, Err(StoreError::Sealed(_))), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn names_the_constraint_a_write_conflicts_with() -> Result {
    let url = pg_server::fresh_database().await?;
    let store = node(&url, MasterKey::generate()).await?;
    let f = testing::onboard(store.as_ref(), "210").await?;
    let page = pagewire_store::NewPage {
        page_id: String::from("210"),
        tenant_id: f.tenant.clone(),
        app_id: String::from("9210"),
        platform: pagewire_core::Platform::Messenger,
        name: None,
        access_token: None,
        phone_number_ids: Vec::new(),
        subscribed_fields: None,
        proof: pagewire_store::PageProof::AccessToken,
    };
    let err = store.create_page(page.clone(), NOW).await;
    assert!(
        matches!(&err, Err(StoreError::Conflict { constraint }) if constraint == "pages_page_id_key"),
        "{err:?}"
    );
    let unknown_app = pagewire_store::NewPage {
        page_id: String::from("211"),
        app_id: String::from("404"),
        ..page
    };
    let err = store.create_page(unknown_app, NOW).await;
    assert!(
        matches!(&err, Err(StoreError::Conflict { constraint }) if constraint == "pages_app_id_fkey"),
        "{err:?}"
    );
    let err = store.delete_app("9210").await;
    assert!(matches!(err, Err(StoreError::Conflict { .. })), "{err:?}");
    Ok(())
}

fn lease(now: i64, limit: u32) -> Lease {
    Lease {
        now,
        limit,
        per_endpoint_rounds: 1,
        lease_ms: LEASE_MS,
        held: Vec::new(),
    }
}

fn delivered(d: &LeasedDelivery) -> AttemptRecord {
    AttemptRecord {
        delivery_id: d.id.clone(),
        endpoint_id: d.endpoint_id.clone(),
        tenant_id: d.tenant_id.clone(),
        event_id: d.event_id.clone(),
        event_type: d.event_type.clone(),
        lease_seq: d.lease_seq,
        attempt: d.attempts + 1,
        started_at: NOW,
        duration_ms: 1,
        status_code: Some(200),
        outcome: "delivered",
        error: None,
        response_excerpt: None,
        next: NextStep::Done,
    }
}

/// Runs a dispatcher's loop on one node: settle what the last round sent and lease the next, until
/// a round finds nothing. Returns every delivery it leased.
async fn drain(store: Arc<dyn Store>) -> Result<Vec<String>> {
    let mut taken = Vec::new();
    let mut records = Vec::new();
    loop {
        let (_, leased) = store
            .settle(&records, NOW, &HealthPolicy::default(), Some(lease(NOW, 8)))
            .await?;
        let leased = store.load_leased(leased).await?;
        if leased.is_empty() {
            store.record_attempts(&records, NOW, &HealthPolicy::default()).await?;
            return Ok(taken);
        }
        records = leased.iter().map(delivered).collect();
        taken.extend(leased.iter().map(|d| d.id.as_str().to_owned()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_leasing_at_once_never_take_the_same_delivery() -> Result {
    let url = pg_server::fresh_database().await?;
    let key = MasterKey::generate();
    let (a, b) = (node(&url, key.clone()).await?, node(&url, key).await?);
    let controls = DeliveryControls {
        max_concurrency: 4,
        ..DeliveryControls::default()
    };
    let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    for page in ["220", "221", "222"] {
        let f = testing::onboard_with(a.as_ref(), page, controls).await?;
        a.ingest(&[testing::request(&f, page, &keys)], NOW).await?;
    }

    let (from_a, from_b) = tokio::try_join!(tokio::spawn(drain(a.clone())), tokio::spawn(drain(b)))?;
    let (from_a, from_b) = (from_a?, from_b?);
    assert!(
        !from_a.is_empty() && !from_b.is_empty(),
        "both nodes took work: {} and {}",
        from_a.len(),
        from_b.len()
    );
    let mut seen = HashSet::new();
    for id in from_a.iter().chain(&from_b) {
        assert!(seen.insert(id), "{id} was leased twice");
    }
    assert_eq!(seen.len(), 300, "every delivery was leased");
    assert_eq!(a.count_pending().await?, 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_one_node_probes_a_paused_endpoint() -> Result {
    let url = pg_server::fresh_database().await?;
    let key = MasterKey::generate();
    let (a, b) = (node(&url, key.clone()).await?, node(&url, key).await?);
    let f = testing::onboard(a.as_ref(), "230").await?;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    a.ingest(&[testing::request(&f, "230", &keys)], NOW).await?;
    let health = HealthPolicy {
        threshold: 3,
        first_pause: std::time::Duration::from_secs(10),
        ..HealthPolicy::default()
    };
    let failures: Vec<AttemptRecord> = a
        .lease_due(lease(NOW, 3))
        .await?
        .iter()
        .map(|d| AttemptRecord {
            next: NextStep::RetryAt(NOW + 1),
            status_code: Some(500),
            ..delivered(d)
        })
        .collect();
    a.record_attempts(&failures, NOW, &health).await?;
    assert_eq!(
        a.get_endpoint(&f.tenant, &f.endpoint).await?.paused_until,
        Some(NOW + 10_000)
    );

    // The pause is over for both nodes at once: one probe between them.
    let (probe_a, probe_b) = tokio::try_join!(
        tokio::spawn({
            let a = a.clone();
            async move { a.lease_due(lease(NOW + 10_000, 10)).await }
        }),
        tokio::spawn(async move { b.lease_due(lease(NOW + 10_000, 10)).await }),
    )?;
    assert_eq!(probe_a?.len() + probe_b?.len(), 1, "exactly one probe");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_ingesting_the_same_redeliveries_store_each_event_once() -> Result {
    let url = pg_server::fresh_database().await?;
    let key = MasterKey::generate();
    let (a, b) = (node(&url, key.clone()).await?, node(&url, key).await?);
    let f = testing::onboard(a.as_ref(), "240").await?;
    let keys: Vec<String> = (0..200).map(|i| format!("k{i}")).collect();
    let forward: Vec<&str> = keys.iter().map(String::as_str).collect();
    let backward: Vec<&str> = forward.iter().rev().copied().collect();
    // Meta sends the same items to both nodes, in opposite orders: neither may deadlock the other.
    let to_a = [testing::request(&f, "240", &forward)];
    let to_b = [testing::request(&f, "240", &backward)];
    let (got_a, got_b) = tokio::try_join!(
        tokio::spawn({
            let a = a.clone();
            async move { a.ingest(&to_a, NOW).await }
        }),
        tokio::spawn(async move { b.ingest(&to_b, NOW).await }),
    )?;
    let (got_a, got_b) = (got_a?.remove(0), got_b?.remove(0));
    assert_eq!(got_a.events + got_b.events, 200, "each event stored once");
    assert_eq!(
        got_a.duplicates + got_b.duplicates,
        200,
        "and recognized once as a redelivery"
    );
    assert_eq!(a.count_pending().await?, 200, "one delivery per event");
    Ok(())
}

#[tokio::test]
async fn nodes_hear_of_due_work_and_routing_changes_made_elsewhere() -> Result {
    let url = pg_server::fresh_database().await?;
    let key = MasterKey::generate();
    let options = PgStoreOptions {
        max_connections: 4,
        ..PgStoreOptions::default()
    };
    let (a, b) = (
        node(&url, key.clone()).await?,
        PgStore::connect(&url, key, options).await?,
    );
    let (work, routing) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
    let follower = b.follow_changes(Arc::clone(&work), Arc::clone(&routing));
    let heard = |notify: Arc<Notify>| async move { tokio::time::timeout(HEARING, notify.notified()).await };
    // Once listening, the follower catches up: anything may have changed before.
    heard(Arc::clone(&work)).await?;
    heard(Arc::clone(&routing)).await?;

    let f = testing::onboard(a.as_ref(), "250").await?;
    heard(Arc::clone(&routing))
        .await
        .map_err(|_| "an app, Page and endpoint made on a went unheard")?;
    a.ingest(&[testing::request(&f, "250", &["a"])], NOW).await?;
    heard(Arc::clone(&work))
        .await
        .map_err(|_| "deliveries ingested on a went unheard")?;

    follower.abort();
    Ok(())
}

#[tokio::test]
async fn upgrading_moves_dedup_keys_without_losing_deliveries() -> Result {
    use sqlx::{Connection as _, Executor as _};
    let url = pg_server::fresh_database().await?;
    let older = testing::migrations_before("postgres", "0004")?;
    let mut conn = sqlx::PgConnection::connect(&url).await?;
    sqlx::migrate::Migrator::new(older.path()).await?.run(&mut conn).await?;
    let legacy = testing::LegacyEvent::default();
    for statement in legacy.statements() {
        conn.execute(statement.as_str()).await?;
    }
    conn.close().await?;

    let store = node(&url, MasterKey::generate()).await?;
    legacy.check_upgraded(store.as_ref()).await?;
    Ok(())
}
