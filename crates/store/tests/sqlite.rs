//! The store contract on the embedded backend: a real SQLite file per test.

use std::sync::Arc;

use pagewire_core::MasterKey;
use pagewire_store::{testing, SqliteStore, SqliteStoreOptions, Store, StoreError};

type Result = std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn store(dir: &tempfile::TempDir, key: MasterKey) -> std::result::Result<Arc<dyn Store>, StoreError> {
    let store = SqliteStore::open(&dir.path().join("pagewire.db"), key, SqliteStoreOptions::default()).await?;
    Ok(Arc::new(store))
}

macro_rules! contract {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test]
        async fn $name() -> Result {
            let dir = tempfile::tempdir()?;
            testing::$name(store(&dir, MasterKey::generate()).await?).await
        }
    )*};
}

contract!(
    deduplicates_within_and_across_batches,
    leases_are_exclusive_until_they_expire,
    a_stale_lease_does_not_overwrite_a_newer_one,
    retries_come_due_at_their_time_and_giving_up_fails,
    a_gone_endpoint_is_disabled_and_its_deliveries_wait,
    one_endpoint_cannot_fill_a_round,
    ordered_endpoints_get_one_event_per_conversation_at_a_time,
    switching_order_applies_to_pending_deliveries,
    a_failing_endpoint_is_paused_then_probed_then_disabled,
    releases_dedup_keys_after_the_window,
    keeps_whatsapp_phone_number_ids,
    a_rotated_secret_keeps_signing_until_the_overlap_ends,
    enabling_an_endpoint_clears_its_failures,
    prunes_final_events_after_retention_and_keeps_pending_ones,
    keeps_tenants_apart,
    refuses_a_page_onboarded_twice,
    opens_secrets_it_sealed,
    keeps_a_rotated_app_secret_until_its_overlap_ends,
    refuses_a_verify_token_another_app_has,
    rotates_signing_keys_and_forgets_expired_ones,
    settles_outcomes_and_leases_the_next_in_one_step,
);

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
