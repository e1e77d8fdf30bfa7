//! The store contract: behaviour every backend must have, written once against `&dyn Store` and run
//! by each backend's test suite. [`pg_server`] starts the PostgreSQL server the PostgreSQL suite
//! runs on.

#[cfg(unix)]
pub mod pg_server;

use std::sync::Arc;

use bytes::Bytes;
use pagewire_core::{
    DeliveryControls, EndpointFilter, EndpointSecret, EventId, HealthPolicy, InboundId, NextStep, Platform, Secret,
    TenantId,
};

use crate::{
    AttemptRecord, DeliveryStatus, IngestRequest, Lease, NewEndpoint, NewEvent, NewMetaApp, NewPage, PageProof, Store,
    StoreError,
};

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Every contract test as a `#[tokio::test]`, for a backend's test file to run on its own stores:
/// `pagewire_store::testing::contract_tests!(fresh)`, where `fresh().await` is a
/// `Result<(guard, Arc<dyn Store>)>` and the guard (a temporary directory, say) is kept until the
/// test ends. A new contract test is listed here, once, and runs on every backend.
#[macro_export]
macro_rules! contract_tests {
    ($fresh:path) => {
        $crate::contract_tests!(
            @each $fresh;
            deduplicates_within_and_across_batches,
            stores_every_row_of_batches_of_any_size,
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
            keeps_an_items_bytes_once_and_reads_them_whole,
            reads_the_items_of_several_posts_each_whole,
            prunes_posts_by_their_arrival_time,
            keeps_tenants_apart,
            a_tenant_sees_only_its_own_entries_of_a_shared_post,
            refuses_a_page_onboarded_twice,
            a_proven_claim_takes_a_page_from_an_unproven_one,
            the_operator_moves_a_page_without_its_token,
            keeps_refusals_and_prunes_them_with_the_posts,
            opens_secrets_it_sealed,
            keeps_a_rotated_app_secret_until_its_overlap_ends,
            refuses_a_verify_token_another_app_has,
            rotates_signing_keys_and_forgets_expired_ones,
            settles_outcomes_and_leases_the_next_in_one_step,
            outcomes_of_deleted_deliveries_do_not_hold_up_the_others,
            the_attempt_log_keeps_every_attempt_across_replays,
        );
    };
    (@each $fresh:path; $($name:ident,)*) => {$(
        #[tokio::test]
        async fn $name() -> ::std::result::Result<(), Box<dyn ::std::error::Error + Send + Sync>> {
            let (_guard, store) = $fresh().await?;
            $crate::testing::$name(store).await
        }
    )*};
}
pub use crate::contract_tests;

/// The time the contract's requests arrive at.
pub const NOW: i64 = 1_700_000_000_000;
const LEASE_MS: i64 = 60_000;

/// A tenant with an app, a Page and one endpoint.
#[derive(Debug)]
pub struct Fixture {
    pub tenant: TenantId,
    pub endpoint: pagewire_core::EndpointId,
}

pub async fn onboard(store: &dyn Store, page_id: &str) -> Result<Fixture> {
    onboard_with(store, page_id, DeliveryControls::default()).await
}

/// Like [`onboard`], with the endpoint's delivery controls.
pub async fn onboard_with(store: &dyn Store, page_id: &str, controls: DeliveryControls) -> Result<Fixture> {
    let tenant = store.create_tenant("Acme", NOW).await?.id;
    let app_id = format!("9{page_id}");
    store
        .create_app(
            NewMetaApp {
                app_id: app_id.clone(),
                tenant_id: Some(tenant.clone()),
                name: None,
                app_secret: Secret::new(String::from("app-secret")),
                verify_token: Secret::new(format!("verify-{app_id}")),
            },
            NOW,
        )
        .await?;
    store
        .create_page(
            NewPage {
                page_id: page_id.to_owned(),
                tenant_id: tenant.clone(),
                app_id,
                platform: Platform::Messenger,
                name: None,
                access_token: Some(Secret::new(String::from("page-token"))),
                phone_number_ids: Vec::new(),
                subscribed_fields: None,
                proof: PageProof::AccessToken,
            },
            NOW,
        )
        .await?;
    let endpoint = store
        .create_endpoint(
            NewEndpoint {
                tenant_id: tenant.clone(),
                url: String::from("https://example.com/hook"),
                description: None,
                filter: EndpointFilter::default(),
                controls,
                format: pagewire_core::PayloadFormat::Standard,
                headers: std::collections::BTreeMap::new(),
                secret: EndpointSecret::generate(),
                ed25519: None,
            },
            NOW,
        )
        .await?
        .id;
    Ok(Fixture { tenant, endpoint })
}

/// A request with one event per dedup key, each going to `fixture.endpoint`, all in one
/// conversation.
pub fn request(fixture: &Fixture, page_id: &str, keys: &[&str]) -> IngestRequest {
    let keyed: Vec<(&str, &str)> = keys.iter().map(|k| (*k, "user")).collect();
    request_in(fixture, page_id, &keyed)
}

/// A request with one event per `(dedup key, conversation)`.
pub fn request_in(fixture: &Fixture, page_id: &str, keys: &[(&str, &str)]) -> IngestRequest {
    IngestRequest {
        inbound_id: InboundId::at(NOW),
        received_at: NOW,
        app_id: Some(format!("9{page_id}")),
        object: String::from("page"),
        body: Bytes::from_static(b"{\"object\":\"page\",\"entry\":[]}"),
        entries: 1,
        unroutable: Vec::new(),
        events: keys
            .iter()
            .map(|(key, conversation)| NewEvent {
                id: EventId::at(NOW),
                tenant_id: fixture.tenant.clone(),
                page_id: page_id.to_owned(),
                event_type: String::from("messenger.message"),
                dedup_key: (*key).to_owned(),
                timestamp_ms: NOW,
                conversation_id: Some(format!("{page_id}:{conversation}")),
                payload: format!("{{\"key\":\"{key}\"}}"),
                raw: None,
                text: None,
                endpoints: vec![fixture.endpoint.clone()],
            })
            .collect(),
    }
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

fn record(d: &crate::LeasedDelivery, next: NextStep, status: Option<u16>) -> AttemptRecord {
    AttemptRecord {
        delivery_id: d.id.clone(),
        endpoint_id: d.endpoint_id.clone(),
        tenant_id: d.tenant_id.clone(),
        event_id: d.event_id.clone(),
        event_type: d.event_type.clone(),
        lease_seq: d.lease_seq,
        attempt: d.attempts + 1,
        started_at: NOW,
        duration_ms: 3,
        status_code: status,
        outcome: "rejected",
        error: None,
        response_excerpt: None,
        next,
    }
}

pub async fn deduplicates_within_and_across_batches(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "101").await?;
    let receipts = store
        .ingest(
            &[request(&f, "101", &["a", "b", "a"]), request(&f, "101", &["b", "c"])],
            NOW,
        )
        .await?;
    assert_eq!(
        (receipts[0].events, receipts[0].duplicates, receipts[0].deliveries),
        (2, 1, 2)
    );
    assert_eq!((receipts[1].events, receipts[1].duplicates), (1, 1));
    let again = store.ingest(&[request(&f, "101", &["a", "b", "c"])], NOW).await?;
    assert_eq!((again[0].events, again[0].duplicates, again[0].deliveries), (0, 3, 0));
    assert_eq!(store.list_events(&f.tenant, 10).await?.len(), 3);
    assert_eq!(store.count_pending().await?, 3);
    assert_eq!(store.list_inbound(10).await?.len(), 3, "every POST is kept");
    Ok(())
}

/// Batches of many sizes, one after another: some the same size with other rows (a store may
/// reuse a statement of the last batch's shape), some of more rows than one statement takes.
/// Every POST, event and delivery is stored once, each with its own values.
pub async fn stores_every_row_of_batches_of_any_size(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "102").await?;
    let mut expected = std::collections::BTreeSet::new();
    let mut posts = 0;
    for (round, (requests, events_each)) in [(1, 3), (1, 5), (9, 1), (3, 1), (600, 1), (1, 520), (2, 2)]
        .into_iter()
        .enumerate()
    {
        let batch: Vec<IngestRequest> = (0..requests)
            .map(|r| {
                let keys: Vec<String> = (0..events_each).map(|e| format!("k{round}-{r}-{e}")).collect();
                expected.extend(keys.iter().map(|key| format!("{{\"key\":\"{key}\"}}")));
                request(&f, "102", &keys.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .collect();
        posts += requests;
        let receipts = store.ingest(&batch, NOW).await?;
        assert!(
            receipts.iter().all(|r| r.duplicates == 0 && r.deliveries == r.events),
            "round {round}: {receipts:?}"
        );
    }
    let mut stored: Vec<String> = store
        .list_events(&f.tenant, 10_000)
        .await?
        .into_iter()
        .map(|event| event.payload)
        .collect();
    stored.sort_unstable();
    assert_eq!(
        stored,
        expected.into_iter().collect::<Vec<_>>(),
        "each event once, as sent"
    );
    assert_eq!(store.count_pending().await?, u64::try_from(stored.len())?);
    assert_eq!(store.list_inbound(10_000).await?.len(), posts);
    Ok(())
}

pub async fn leases_are_exclusive_until_they_expire(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "102").await?;
    store.ingest(&[request(&f, "102", &["a", "b"])], NOW).await?;
    let first = store.lease_due(lease(NOW, 10)).await?;
    assert_eq!(first.len(), 2);
    assert_eq!(
        first[0].payload, "{\"key\":\"a\"}",
        "leased in the order of their events"
    );
    assert!(
        store.lease_due(lease(NOW + LEASE_MS - 1, 10)).await?.is_empty(),
        "leased deliveries are not due"
    );
    // The worker died: the lease runs out and the deliveries are due again.
    let again = store.lease_due(lease(NOW + LEASE_MS, 10)).await?;
    assert_eq!(again.len(), 2);
    assert!(again
        .iter()
        .zip(&first)
        .all(|(a, b)| a.id == b.id && a.lease_seq > b.lease_seq));
    Ok(())
}

pub async fn a_stale_lease_does_not_overwrite_a_newer_one(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "103").await?;
    store.ingest(&[request(&f, "103", &["a"])], NOW).await?;
    let stale = store.lease_due(lease(NOW, 10)).await?.remove(0);
    let fresh = store.lease_due(lease(NOW + LEASE_MS, 10)).await?.remove(0);
    store
        .record_attempts(
            &[record(&stale, NextStep::GiveUp, Some(500))],
            NOW,
            &HealthPolicy::default(),
        )
        .await?;
    let delivery = store.deliveries_of_event(&f.tenant, &fresh.event_id).await?.remove(0);
    assert_eq!(
        delivery.status,
        DeliveryStatus::Pending,
        "the stale worker's decision is ignored"
    );
    store
        .record_attempts(
            &[record(&fresh, NextStep::Done, Some(200))],
            NOW,
            &HealthPolicy::default(),
        )
        .await?;
    let delivery = store.deliveries_of_event(&f.tenant, &fresh.event_id).await?.remove(0);
    assert_eq!(delivery.status, DeliveryStatus::Delivered);
    assert_eq!(
        store.attempts_of_delivery(&f.tenant, &delivery.id).await?.len(),
        2,
        "both attempts are logged"
    );
    Ok(())
}

pub async fn retries_come_due_at_their_time_and_giving_up_fails(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "104").await?;
    store.ingest(&[request(&f, "104", &["a"])], NOW).await?;
    let leased = store.lease_due(lease(NOW, 10)).await?.remove(0);
    store
        .record_attempts(
            &[record(&leased, NextStep::RetryAt(NOW + 5_000), Some(503))],
            NOW,
            &HealthPolicy::default(),
        )
        .await?;
    assert!(store.lease_due(lease(NOW + 4_999, 10)).await?.is_empty());
    let retry = store.lease_due(lease(NOW + 5_000, 10)).await?.remove(0);
    assert_eq!(retry.attempts, 1);
    store
        .record_attempts(
            &[record(&retry, NextStep::GiveUp, Some(503))],
            NOW + 5_000,
            &HealthPolicy::default(),
        )
        .await?;
    let delivery = store.deliveries_of_event(&f.tenant, &retry.event_id).await?.remove(0);
    assert_eq!(
        (delivery.status, delivery.attempts, delivery.last_status),
        (DeliveryStatus::Failed, 2, Some(503))
    );
    assert_eq!(store.count_pending().await?, 0);
    Ok(())
}

pub async fn a_gone_endpoint_is_disabled_and_its_deliveries_wait(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "105").await?;
    store.ingest(&[request(&f, "105", &["a", "b"])], NOW).await?;
    let leased = store.lease_due(lease(NOW, 1)).await?.remove(0);
    store
        .record_attempts(
            &[record(&leased, NextStep::DisableEndpoint, Some(410))],
            NOW,
            &HealthPolicy::default(),
        )
        .await?;
    let endpoint = store.list_endpoints(&f.tenant).await?.remove(0);
    assert!(!endpoint.enabled);
    assert!(endpoint.disabled_reason.is_some());
    assert!(
        store.load_routing().await?.endpoints.is_empty(),
        "ingress stops routing to it"
    );
    assert!(
        store.lease_due(lease(NOW + LEASE_MS, 10)).await?.is_empty(),
        "its pending deliveries wait"
    );
    Ok(())
}

pub async fn one_endpoint_cannot_fill_a_round(store: Arc<dyn Store>) -> Result {
    let controls = DeliveryControls {
        max_concurrency: 4,
        ..DeliveryControls::default()
    };
    let busy = onboard_with(store.as_ref(), "110", controls).await?;
    let quiet = onboard(store.as_ref(), "111").await?;
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    store.ingest(&[request(&busy, "110", &keys)], NOW).await?;
    store.ingest(&[request(&quiet, "111", &["q"])], NOW).await?;
    let round = store.lease_due(lease(NOW, 10)).await?;
    let busy_count = round.iter().filter(|d| d.endpoint_id == busy.endpoint).count();
    assert_eq!(busy_count, 4, "the endpoint's concurrency bounds its share");
    assert!(
        round.iter().any(|d| d.endpoint_id == quiet.endpoint),
        "the quiet endpoint gets its turn"
    );
    // What the worker already holds counts against the endpoint's share, and an endpoint is only
    // leased when a whole round of its concurrency fits.
    // Two rounds of 4: a share of 8.
    let holding = |count| Lease {
        held: vec![(busy.endpoint.clone(), count)],
        per_endpoint_rounds: 2,
        ..lease(NOW + LEASE_MS, 10)
    };
    let leased = store.lease_due(holding(8)).await?;
    assert!(leased.iter().all(|d| d.endpoint_id != busy.endpoint), "a full share");
    let leased = store.lease_due(holding(5)).await?;
    assert!(
        leased.iter().all(|d| d.endpoint_id != busy.endpoint),
        "less than a round of room"
    );
    let leased = store.lease_due(holding(4)).await?;
    let busy_count = leased.iter().filter(|d| d.endpoint_id == busy.endpoint).count();
    assert_eq!(busy_count, 4, "one round of room");
    Ok(())
}

pub async fn ordered_endpoints_get_one_event_per_conversation_at_a_time(store: Arc<dyn Store>) -> Result {
    let controls = DeliveryControls {
        ordered: true,
        ..DeliveryControls::default()
    };
    let f = onboard_with(store.as_ref(), "114", controls).await?;
    let keys = [
        ("a1", "alice"),
        ("b1", "bob"),
        ("a2", "alice"),
        ("b2", "bob"),
        ("a3", "alice"),
    ];
    store.ingest(&[request_in(&f, "114", &keys)], NOW).await?;
    let heads = store.lease_due(lease(NOW, 10)).await?;
    let payloads: Vec<&str> = heads.iter().map(|d| d.payload.as_str()).collect();
    assert_eq!(
        payloads,
        ["{\"key\":\"a1\"}", "{\"key\":\"b1\"}"],
        "only the head of each conversation"
    );

    // Alice's head is retried later: her conversation waits; Bob's moves on once b1 is delivered.
    let (a1, b1) = (&heads[0], &heads[1]);
    let records = [
        record(a1, NextStep::RetryAt(NOW + 10_000), Some(503)),
        record(b1, NextStep::Done, Some(200)),
    ];
    store.record_attempts(&records, NOW, &HealthPolicy::default()).await?;
    let next = store.lease_due(lease(NOW + 1, 10)).await?;
    let payloads: Vec<&str> = next.iter().map(|d| d.payload.as_str()).collect();
    assert_eq!(payloads, ["{\"key\":\"b2\"}"]);
    let later = store.lease_due(lease(NOW + 10_000, 10)).await?;
    assert_eq!(
        later.iter().map(|d| d.payload.as_str()).collect::<Vec<_>>(),
        ["{\"key\":\"a1\"}"]
    );
    Ok(())
}

/// An endpoint that asks for order later orders what is still pending; one that stops asking frees
/// it. (Deliveries carry an ordering key only while their endpoint keeps order.)
pub async fn switching_order_applies_to_pending_deliveries(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "115").await?;
    let mut req = request_in(&f, "115", &[("a1", "alice"), ("a2", "alice"), ("b1", "bob")]);
    for event in &mut req.events {
        let conversation = event.conversation_id.clone().unwrap_or_default();
        event.payload = format!(
            "{{\"key\":\"{}\",\"conversation_id\":\"{conversation}\"}}",
            event.dedup_key
        );
    }
    store.ingest(&[req], NOW).await?;
    let set_ordered = |ordered: bool| crate::EndpointUpdate {
        controls: Some(DeliveryControls {
            ordered,
            ..DeliveryControls::default()
        }),
        ..crate::EndpointUpdate::default()
    };
    store
        .update_endpoint(&f.tenant, &f.endpoint, set_ordered(true), NOW)
        .await?;
    let heads = store.lease_due(lease(NOW, 10)).await?;
    let keys: Vec<&str> = heads
        .iter()
        .map(|d| d.payload.split('"').nth(3).unwrap_or_default())
        .collect();
    assert_eq!(keys, ["a1", "b1"], "only the head of each conversation");

    // Alice's head fails for now; without order, her second event need not wait for it.
    store
        .record_attempts(
            &[record(&heads[0], NextStep::RetryAt(NOW + 10_000), Some(503))],
            NOW,
            &HealthPolicy::default(),
        )
        .await?;
    assert!(
        store.lease_due(lease(NOW + 1, 10)).await?.is_empty(),
        "a2 waits behind a1"
    );
    store
        .update_endpoint(&f.tenant, &f.endpoint, set_ordered(false), NOW)
        .await?;
    let freed = store.lease_due(lease(NOW + 2, 10)).await?;
    let keys: Vec<&str> = freed
        .iter()
        .map(|d| d.payload.split('"').nth(3).unwrap_or_default())
        .collect();
    assert_eq!(keys, ["a2"]);
    Ok(())
}

pub async fn a_failing_endpoint_is_paused_then_probed_then_disabled(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "115").await?;
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    store.ingest(&[request(&f, "115", &keys)], NOW).await?;
    let health = HealthPolicy {
        threshold: 3,
        first_pause: std::time::Duration::from_secs(10),
        max_pause: std::time::Duration::from_secs(60),
        disable_after: std::time::Duration::from_secs(3600),
    };
    // Three failures in a row open the breaker.
    let round = store.lease_due(lease(NOW, 3)).await?;
    let failed: Vec<AttemptRecord> = round
        .iter()
        .map(|d| record(d, NextStep::RetryAt(NOW + 1), Some(500)))
        .collect();
    assert!(store.record_attempts(&failed, NOW, &health).await?.disabled.is_empty());
    let endpoint = store.list_endpoints(&f.tenant).await?.remove(0);
    assert_eq!(
        (endpoint.consecutive_failures, endpoint.paused_until),
        (3, Some(NOW + 10_000))
    );
    assert!(
        store.lease_due(lease(NOW + 9_999, 10)).await?.is_empty(),
        "paused: nothing is sent"
    );

    // The pause ends: one probe, and only one while it is out.
    let probe = store.lease_due(lease(NOW + 10_000, 10)).await?;
    assert_eq!(probe.len(), 1);
    assert!(store.lease_due(lease(NOW + 10_001, 10)).await?.is_empty());
    // The probe fails: a longer pause.
    store
        .record_attempts(
            &[record(&probe[0], NextStep::RetryAt(NOW + 10_001), Some(500))],
            NOW + 10_000,
            &health,
        )
        .await?;
    let endpoint = store.list_endpoints(&f.tenant).await?.remove(0);
    assert_eq!(endpoint.paused_until, Some(NOW + 10_000 + 20_000));

    // The next probe succeeds: the breaker closes and everything due flows again.
    let probe = store.lease_due(lease(NOW + 30_000, 10)).await?;
    assert_eq!(probe.len(), 1);
    let report = store
        .record_attempts(&[record(&probe[0], NextStep::Done, Some(200))], NOW + 30_000, &health)
        .await?;
    assert_eq!(report.recovered, [(f.endpoint.clone(), f.tenant.clone())]);
    assert_eq!(store.lease_due(lease(NOW + 30_001, 10)).await?.len(), 10);

    // Failing without a success for longer than the policy allows disables it.
    let again = store.lease_due(lease(NOW + 100_000, 3)).await?;
    let failed: Vec<AttemptRecord> = again
        .iter()
        .map(|d| record(d, NextStep::RetryAt(NOW + 1), Some(500)))
        .collect();
    store.record_attempts(&failed, NOW + 100_000, &health).await?;
    let probe = store.lease_due(lease(NOW + 200_000, 10)).await?;
    let report = store
        .record_attempts(
            &[record(&probe[0], NextStep::RetryAt(NOW + 1), Some(500))],
            NOW + 100_000 + 3_600_000,
            &health,
        )
        .await?;
    assert_eq!(report.disabled.len(), 1);
    assert!(!store.list_endpoints(&f.tenant).await?[0].enabled);
    Ok(())
}

pub async fn releases_dedup_keys_after_the_window(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "112").await?;
    // Keys are released by the items' own time: "old" happened at NOW, "recent" at NOW + 10, and
    // each arrives (and comes again) later than it happened.
    let timed = |keys: &[&str], received_at: i64| {
        let mut req = request(&f, "112", keys);
        req.received_at = received_at;
        for event in &mut req.events {
            event.timestamp_ms = if event.dedup_key == "recent" { NOW + 10 } else { NOW };
        }
        req
    };
    store.ingest(&[timed(&["old"], NOW + 1_000)], NOW + 1_000).await?;
    store.ingest(&[timed(&["recent"], NOW + 1_000)], NOW + 1_000).await?;
    assert_eq!(store.release_dedup_keys(NOW + 5).await?, 1);
    assert_eq!(store.release_dedup_keys(NOW + 5).await?, 0, "released once");
    let again = store
        .ingest(&[timed(&["old", "recent"], NOW + 2_000)], NOW + 2_000)
        .await?;
    assert_eq!(
        (again[0].events, again[0].duplicates),
        (1, 1),
        "only the released key is new again"
    );
    Ok(())
}

pub async fn keeps_whatsapp_phone_number_ids(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "113").await?;
    store
        .create_page(
            NewPage {
                page_id: String::from("102290129340398"),
                tenant_id: f.tenant.clone(),
                app_id: String::from("9113"),
                platform: Platform::Whatsapp,
                name: None,
                access_token: None,
                phone_number_ids: vec![String::from("106540352242922"), String::from("106540352242923")],
                subscribed_fields: None,
                proof: PageProof::AccessToken,
            },
            NOW,
        )
        .await?;
    let pages = store.list_pages(&f.tenant).await?;
    let waba = pages
        .iter()
        .find(|p| p.platform == Platform::Whatsapp)
        .ok_or("no WhatsApp account")?;
    assert_eq!(waba.phone_number_ids, ["106540352242922", "106540352242923"]);
    assert!(pages
        .iter()
        .filter(|p| p.platform == Platform::Messenger)
        .all(|p| p.phone_number_ids.is_empty()));
    Ok(())
}

pub async fn a_rotated_secret_keeps_signing_until_the_overlap_ends(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "116").await?;
    store.ingest(&[request(&f, "116", &["a"])], NOW).await?;
    let before = store.lease_due(lease(NOW, 10)).await?.remove(0);
    assert_eq!(before.secrets.len(), 1);
    let new = EndpointSecret::generate();
    let rotated = store
        .rotate_endpoint_secret(&f.tenant, &f.endpoint, new.clone(), NOW + LEASE_MS + 1_000, NOW)
        .await?;
    assert_eq!(rotated.previous_secret_expires_at, Some(NOW + LEASE_MS + 1_000));
    let during = store.lease_due(lease(NOW + LEASE_MS, 10)).await?.remove(0);
    assert_eq!(
        during.secrets,
        [new.clone(), before.secrets[0].clone()],
        "the new secret first, the old one too"
    );
    let after = store.lease_due(lease(NOW + 2 * LEASE_MS + 1_000, 10)).await?.remove(0);
    assert_eq!(after.secrets, [new]);
    Ok(())
}

pub async fn enabling_an_endpoint_clears_its_failures(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "117").await?;
    store.ingest(&[request(&f, "117", &["a"])], NOW).await?;
    let leased = store.lease_due(lease(NOW, 10)).await?.remove(0);
    store
        .record_attempts(
            &[record(&leased, NextStep::DisableEndpoint, Some(410))],
            NOW,
            &HealthPolicy::default(),
        )
        .await?;
    let disabled = store.get_endpoint(&f.tenant, &f.endpoint).await?;
    assert!(!disabled.enabled);
    let update = crate::EndpointUpdate {
        enabled: Some(true),
        ..crate::EndpointUpdate::default()
    };
    let enabled = store.update_endpoint(&f.tenant, &f.endpoint, update, NOW + 1).await?;
    assert!(enabled.enabled && enabled.disabled_reason.is_none() && enabled.consecutive_failures == 0);
    let other = onboard(store.as_ref(), "118").await?;
    let err = store.get_endpoint(&other.tenant, &f.endpoint).await;
    assert!(
        matches!(err, Err(StoreError::NotFound)),
        "another tenant's endpoint is not found: {err:?}"
    );
    Ok(())
}

pub async fn prunes_final_events_after_retention_and_keeps_pending_ones(store: Arc<dyn Store>) -> Result {
    const DAY: i64 = 86_400_000;
    let f = onboard(store.as_ref(), "119").await?;
    store
        .ingest(&[request(&f, "119", &["delivered", "pending"])], NOW)
        .await?;
    let leased = store.lease_due(lease(NOW, 10)).await?;
    let delivered = leased
        .iter()
        .find(|d| d.payload.contains("\"delivered\""))
        .ok_or("no delivery")?;
    store
        .record_attempts(
            &[record(delivered, NextStep::Done, Some(200))],
            NOW,
            &HealthPolicy::default(),
        )
        .await?;

    // Within the default retention nothing goes.
    assert_eq!(
        store.prune(NOW + 29 * DAY, 30 * DAY).await?,
        crate::PruneReport::default()
    );
    // After it, the delivered event goes with its delivery and attempts; the pending one stays,
    // and so does the POST they came in (the events' items are read from its body).
    let report = store.prune(NOW + 31 * DAY, 30 * DAY).await?;
    assert_eq!((report.events, report.inbound), (1, 0));
    let left = store.list_events(&f.tenant, 10).await?;
    assert_eq!(left.len(), 1);
    assert!(left[0].payload.contains("pending"));
    assert!(store.attempts_of_delivery(&f.tenant, &delivered.id).await?.is_empty());

    // A tenant's own, shorter retention.
    let short = onboard(store.as_ref(), "120").await?;
    store.set_tenant_retention(&short.tenant, Some(2)).await?;
    store.ingest(&[request(&short, "120", &["x"])], NOW).await?;
    let leased = store.lease_due(lease(NOW, 10)).await?;
    let x = leased
        .iter()
        .find(|d| d.endpoint_id == short.endpoint)
        .ok_or("no delivery")?;
    store
        .record_attempts(&[record(x, NextStep::Done, Some(200))], NOW, &HealthPolicy::default())
        .await?;
    assert_eq!(store.prune(NOW + 3 * DAY, 30 * DAY).await?.events, 1);
    assert_eq!(store.get_tenant(&short.tenant).await?.retention_days, Some(2));
    Ok(())
}

pub async fn keeps_tenants_apart(store: Arc<dyn Store>) -> Result {
    let acme = onboard(store.as_ref(), "106").await?;
    let globex = onboard(store.as_ref(), "107").await?;
    store.ingest(&[request(&acme, "106", &["a"])], NOW).await?;
    let event = store.list_events(&acme.tenant, 10).await?.remove(0);
    assert!(store.list_events(&globex.tenant, 10).await?.is_empty());
    assert!(store.deliveries_of_event(&globex.tenant, &event.id).await?.is_empty());
    let delivery = store.deliveries_of_event(&acme.tenant, &event.id).await?.remove(0);
    assert!(store
        .attempts_of_delivery(&globex.tenant, &delivery.id)
        .await?
        .is_empty());
    assert!(store
        .list_pages(&globex.tenant)
        .await?
        .iter()
        .all(|p| p.page_id == "107"));
    Ok(())
}

/// A POST of three entries: Acme's item in the first, two of Globex's in the second and third. Each
/// tenant's view of it counts its own entries and events, and names no unroutable entry.
pub async fn a_tenant_sees_only_its_own_entries_of_a_shared_post(store: Arc<dyn Store>) -> Result {
    let acme = onboard(store.as_ref(), "150").await?;
    let globex = onboard(store.as_ref(), "151").await?;
    let mut post = request(&acme, "150", &["a"]);
    let mut theirs = request(&globex, "151", &["b", "c"]).events;
    for (n, event) in post.events.iter_mut().chain(theirs.iter_mut()).enumerate() {
        event.payload = format!("{{\"n\":{n},\"source\":{{\"entry\":{n}}}}}");
    }
    post.events.append(&mut theirs);
    post.entries = 4;
    post.unroutable = vec![crate::UnroutableEntry {
        entry: 3,
        page_id: Some(String::from("999")),
    }];
    store.ingest(std::slice::from_ref(&post), NOW).await?;

    let query = |tenant: Option<&TenantId>| crate::InboundQuery {
        limit: 10,
        before: None,
        tenant_id: tenant.cloned(),
    };
    let whole = store.query_inbound(&query(None)).await?.remove(0);
    assert_eq!((whole.entries, whole.events), (4, 3));
    assert!(whole.unroutable.is_some());
    let mine = store.query_inbound(&query(Some(&acme.tenant))).await?.remove(0);
    assert_eq!((mine.entries, mine.events, mine.unroutable), (1, 1, None));
    let theirs = store.query_inbound(&query(Some(&globex.tenant))).await?.remove(0);
    assert_eq!((theirs.entries, theirs.events), (2, 2));

    let events = store.events_of_inbound(&post.inbound_id).await?;
    let entries: Vec<(bool, Option<u32>)> = events.iter().map(|e| (e.tenant_id == acme.tenant, e.entry)).collect();
    assert_eq!(entries, [(true, Some(0)), (false, Some(1)), (false, Some(2))]);
    Ok(())
}

pub async fn refuses_a_page_onboarded_twice(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "108").await?;
    let err = store
        .create_page(
            NewPage {
                page_id: String::from("108"),
                tenant_id: f.tenant,
                app_id: String::from("9108"),
                platform: Platform::Messenger,
                name: None,
                access_token: None,
                phone_number_ids: Vec::new(),
                subscribed_fields: None,
                proof: PageProof::AccessToken,
            },
            NOW,
        )
        .await;
    assert!(matches!(err, Err(StoreError::Conflict { .. })), "{err:?}");
    Ok(())
}

/// A claim of Page `page_id` by `tenant` under app `app_id`.
fn claim(page_id: &str, tenant: &TenantId, app_id: &str, proof: PageProof) -> NewPage {
    NewPage {
        page_id: page_id.to_owned(),
        tenant_id: tenant.clone(),
        app_id: app_id.to_owned(),
        platform: Platform::Messenger,
        name: None,
        access_token: proof.is_proven().then(|| Secret::new(String::from("page-token"))),
        phone_number_ids: Vec::new(),
        subscribed_fields: None,
        proof,
    }
}

pub async fn a_proven_claim_takes_a_page_from_an_unproven_one(store: Arc<dyn Store>) -> Result {
    let owner = onboard(store.as_ref(), "130").await?;
    let squatter = store.create_tenant("Squatter", NOW).await?.id;
    // The squatter's unproven claim of a Page nobody has: kept, but not routed.
    store
        .create_page(claim("131", &squatter, "9130", PageProof::Unproven), NOW)
        .await?;
    let routing = store.load_routing().await?;
    let page = routing
        .pages
        .iter()
        .find(|p| p.page_id == "131")
        .ok_or("claim missing")?;
    assert!(!page.proof.is_routed());
    assert_eq!(
        store.page_owner("131").await?,
        Some((squatter.clone(), PageProof::Unproven))
    );

    // The owner proves it: the claim is taken over, and the move recorded.
    let (page, from) = store
        .take_over_page(claim("131", &owner.tenant, "9130", PageProof::AccessToken), NOW + 1)
        .await?;
    assert_eq!(
        (page.tenant_id.clone(), page.proof),
        (owner.tenant.clone(), PageProof::AccessToken)
    );
    assert_eq!(from, Some(squatter.clone()));
    assert!(store.list_pages(&squatter).await?.is_empty());
    let moves = store.page_moves(Some("131")).await?;
    assert_eq!(moves.len(), 1);
    assert_eq!(
        (
            moves[0].from_tenant.as_ref(),
            &moves[0].to_tenant,
            moves[0].reason.as_str()
        ),
        (Some(&squatter), &owner.tenant, "proven_claim")
    );

    // A proven claim is not taken by another proof, nor by an unproven claim.
    let err = store
        .take_over_page(claim("131", &squatter, "9130", PageProof::AccessToken), NOW + 2)
        .await;
    assert!(matches!(err, Err(StoreError::Conflict { .. })), "{err:?}");
    let err = store
        .create_page(claim("131", &squatter, "9130", PageProof::Unproven), NOW + 2)
        .await;
    assert!(matches!(err, Err(StoreError::Conflict { .. })), "{err:?}");
    // Proving one's own unproven claim is no move.
    store
        .create_page(claim("132", &owner.tenant, "9130", PageProof::Unproven), NOW)
        .await?;
    let (_, from) = store
        .take_over_page(claim("132", &owner.tenant, "9130", PageProof::AccessToken), NOW + 3)
        .await?;
    assert_eq!(from, None);
    assert!(store.page_moves(Some("132")).await?.is_empty());
    Ok(())
}

pub async fn the_operator_moves_a_page_without_its_token(store: Arc<dyn Store>) -> Result {
    let first = onboard(store.as_ref(), "133").await?;
    let second = store.create_tenant("Second", NOW).await?.id;
    let (page, from) = store.assign_page("133", &second, "9133", NOW + 5).await?;
    assert_eq!(from, Some(first.tenant.clone()));
    assert_eq!(
        (page.tenant_id.clone(), page.proof),
        (second.clone(), PageProof::Operator)
    );
    assert!(
        !page.has_access_token,
        "the first tenant's token does not move with the Page"
    );
    assert_eq!(store.page_moves(None).await?[0].reason, "operator");
    // Approving the tenant's own Page is no move.
    let (page, from) = store.assign_page("133", &second, "9133", NOW + 6).await?;
    assert_eq!((page.proof, from), (PageProof::Operator, None));
    assert_eq!(store.page_moves(Some("133")).await?.len(), 1);
    assert!(matches!(
        store.assign_page("404", &second, "9133", NOW).await,
        Err(StoreError::NotFound)
    ));
    assert_eq!(store.all_pages().await?.len(), 1);
    Ok(())
}

pub async fn keeps_refusals_and_prunes_them_with_the_posts(store: Arc<dyn Store>) -> Result {
    const DAY: i64 = 86_400_000;
    let refusal = |at: i64, app: Option<&str>, reason: &str| crate::Refusal {
        id: pagewire_core::RefusalId::at(at),
        received_at: at,
        route: String::from("shared"),
        app_id: app.map(str::to_owned),
        size: 120,
        reason: reason.to_owned(),
        detail: Some(String::from("why")),
    };
    let kept = [
        refusal(NOW, Some("9140"), "invalid_signature"),
        refusal(NOW + 1, None, "unknown_pages"),
        refusal(NOW + 10 * DAY, Some("9141"), "invalid_json"),
    ];
    store.record_refusals(&kept).await?;
    let all = store
        .query_refusals(&crate::RefusalQuery {
            limit: 10,
            ..crate::RefusalQuery::default()
        })
        .await?;
    assert_eq!(
        all.iter().map(|r| r.reason.as_str()).collect::<Vec<_>>(),
        ["invalid_json", "unknown_pages", "invalid_signature"]
    );
    let one_app = store
        .query_refusals(&crate::RefusalQuery {
            limit: 10,
            before: None,
            app_ids: Some(vec![String::from("9140")]),
        })
        .await?;
    assert_eq!(one_app, vec![kept[0].clone()]);
    let none = store
        .query_refusals(&crate::RefusalQuery {
            limit: 10,
            before: None,
            app_ids: Some(Vec::new()),
        })
        .await?;
    assert!(none.is_empty(), "no apps, no refusals");
    assert_eq!(store.prune(NOW + 31 * DAY, 30 * DAY).await?.refusals, 2);
    assert_eq!(
        store
            .query_refusals(&crate::RefusalQuery {
                limit: 10,
                ..Default::default()
            })
            .await?
            .len(),
        1
    );
    Ok(())
}

pub async fn opens_secrets_it_sealed(store: Arc<dyn Store>) -> Result {
    onboard(store.as_ref(), "109").await?;
    let routing = store.load_routing().await?;
    let app = routing.apps.iter().find(|a| a.app_id == "9109").ok_or("app missing")?;
    assert_eq!(app.app_secret.expose(), "app-secret");
    assert_eq!(app.verify_token.expose(), "verify-9109");
    Ok(())
}

pub async fn keeps_a_rotated_app_secret_until_its_overlap_ends(store: Arc<dyn Store>) -> Result {
    onboard(store.as_ref(), "120").await?;
    let rotated = store
        .rotate_app_secret("9120", &Secret::new(String::from("new-secret")), NOW + 3_600_000, NOW)
        .await?;
    assert_eq!(rotated.app_secret.expose(), "new-secret");
    let (previous, until) = rotated.previous_secret.ok_or("no previous secret")?;
    assert_eq!(previous.expose(), "app-secret");
    assert_eq!(until, NOW + 3_600_000);
    let routing = store.load_routing().await?;
    let app = routing.apps.iter().find(|a| a.app_id == "9120").ok_or("app missing")?;
    assert_eq!(
        app.previous_secret.as_ref().map(|(s, _)| s.expose().as_str()),
        Some("app-secret")
    );
    let err = store
        .rotate_app_secret("404", &Secret::new(String::from("x")), NOW, NOW)
        .await;
    assert!(matches!(err, Err(StoreError::NotFound)), "{err:?}");
    Ok(())
}

pub async fn refuses_a_verify_token_another_app_has(store: Arc<dyn Store>) -> Result {
    onboard(store.as_ref(), "121").await?;
    let taken = NewMetaApp {
        app_id: String::from("777"),
        tenant_id: None,
        name: None,
        app_secret: Secret::new(String::from("s")),
        verify_token: Secret::new(String::from("verify-9121")),
    };
    let err = store.create_app(taken, NOW).await;
    assert!(matches!(err, Err(StoreError::Conflict { .. })), "{err:?}");
    let update = crate::AppUpdate {
        name: None,
        verify_token: Some(Secret::new(String::from("verify-9121"))),
    };
    onboard(store.as_ref(), "122").await?;
    let err = store.update_app("9122", update, NOW).await;
    assert!(matches!(err, Err(StoreError::Conflict { .. })), "{err:?}");
    Ok(())
}

pub async fn rotates_signing_keys_and_forgets_expired_ones(store: Arc<dyn Store>) -> Result {
    assert!(store.signing_keys().await?.is_empty());
    store
        .rotate_signing_key("sk_a", &Secret::new(String::from("a")), NOW, NOW - 1)
        .await?;
    store
        .rotate_signing_key("sk_b", &Secret::new(String::from("b")), NOW + 10, NOW)
        .await?;
    let keys = store.signing_keys().await?;
    let kids: Vec<(&str, Option<i64>)> = keys.iter().map(|k| (k.kid.as_str(), k.retired_at)).collect();
    assert_eq!(kids, vec![("sk_b", None), ("sk_a", Some(NOW + 10))]);
    assert_eq!(keys[0].secret.expose(), "b");
    // A key retired before `forget_before` goes at the next rotation.
    store
        .rotate_signing_key("sk_c", &Secret::new(String::from("c")), NOW + 20, NOW + 11)
        .await?;
    let kids: Vec<String> = store.signing_keys().await?.into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, vec!["sk_c", "sk_b"]);
    // Forgetting from after `now` takes the key just retired as well: retired at once.
    store
        .rotate_signing_key("sk_d", &Secret::new(String::from("d")), NOW + 30, NOW + 31)
        .await?;
    let kids: Vec<String> = store.signing_keys().await?.into_iter().map(|k| k.kid).collect();
    assert_eq!(kids, vec!["sk_d"]);
    Ok(())
}

pub async fn settles_outcomes_and_leases_the_next_in_one_step(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "123").await?;
    store.ingest(&[request(&f, "123", &["a", "b", "c"])], NOW).await?;
    let first = store.lease_due(lease(NOW, 1)).await?.remove(0);
    let (report, next) = store
        .settle(
            &[record(&first, NextStep::Done, Some(200))],
            NOW,
            &HealthPolicy::default(),
            Some(lease(NOW, 10)),
        )
        .await?;
    assert_eq!(report, crate::HealthReport::default());
    assert_eq!(next.len(), 2, "the other two, leased in the same step");
    let next = store.load_leased(next).await?;
    assert_eq!(next.len(), 2, "what was leased is read afterwards");
    assert!(next.iter().all(|d| d.id != first.id));
    assert!(next.iter().all(|d| d.lease_seq == 1 && !d.payload.is_empty()));
    let delivered = store.deliveries_of_event(&f.tenant, &first.event_id).await?.remove(0);
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    // Outcomes alone, no lease.
    let (_, none) = store
        .settle(
            &[record(&next[0], NextStep::Done, Some(200))],
            NOW,
            &HealthPolicy::default(),
            None,
        )
        .await?;
    assert!(none.is_empty());
    assert_eq!(store.count_pending().await?, 1);
    Ok(())
}

/// Every attempt is read back as it was recorded, whatever ended its delivery, and a replay adds
/// to the log instead of replacing any of it.
pub async fn the_attempt_log_keeps_every_attempt_across_replays(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "124").await?;
    store.ingest(&[request(&f, "124", &["a"])], NOW).await?;
    let sent = |d: &crate::LeasedDelivery, next, status, at, outcome, excerpt: &str| AttemptRecord {
        started_at: at,
        duration_ms: at - NOW + 7,
        outcome,
        error: (status != Some(200)).then(|| format!("status {status:?}")),
        response_excerpt: Some(excerpt.to_owned()),
        ..record(d, next, status)
    };
    let logged = |attempt, at, status: Option<u16>, outcome: &str, excerpt: &str| crate::Attempt {
        attempt,
        started_at: at,
        duration_ms: at - NOW + 7,
        status_code: status,
        outcome: outcome.to_owned(),
        error: (status != Some(200)).then(|| format!("status {status:?}")),
        response_excerpt: Some(excerpt.to_owned()),
    };
    let policy = HealthPolicy::default();

    let first = store.lease_due(lease(NOW, 1)).await?.remove(0);
    let retry_at = NOW + 1_000;
    store
        .record_attempts(
            &[sent(
                &first,
                NextStep::RetryAt(retry_at),
                Some(503),
                NOW,
                "rejected",
                "busy",
            )],
            NOW,
            &policy,
        )
        .await?;
    let second = store.lease_due(lease(retry_at, 1)).await?.remove(0);
    store
        .record_attempts(
            &[sent(&second, NextStep::Done, Some(200), retry_at, "delivered", "ok")],
            retry_at,
            &policy,
        )
        .await?;
    let mut log = vec![
        logged(1, NOW, Some(503), "rejected", "busy"),
        logged(2, retry_at, Some(200), "delivered", "ok"),
    ];
    assert_eq!(store.attempts_of_delivery(&f.tenant, &first.id).await?, log);

    let replayed_at = NOW + 2_000;
    let replayed = store
        .replay(&f.tenant, crate::Replay::Delivery(&first.id), replayed_at)
        .await?;
    assert_eq!(replayed, 1);
    assert_eq!(
        store.attempts_of_delivery(&f.tenant, &first.id).await?,
        log,
        "the replay keeps the log"
    );
    let again = store.lease_due(lease(replayed_at, 1)).await?.remove(0);
    assert_eq!((again.id.clone(), again.attempts), (first.id.clone(), 0));
    store
        .record_attempts(
            &[sent(
                &again,
                NextStep::Done,
                Some(200),
                replayed_at,
                "delivered",
                "again",
            )],
            replayed_at,
            &policy,
        )
        .await?;
    log.insert(1, logged(1, replayed_at, Some(200), "delivered", "again"));
    assert_eq!(
        store.attempts_of_delivery(&f.tenant, &first.id).await?,
        log,
        "in attempt order, then time order"
    );
    let delivery = store.get_delivery(&f.tenant, &first.id).await?;
    assert_eq!((delivery.status, delivery.attempts), (DeliveryStatus::Delivered, 1));
    Ok(())
}

/// An endpoint deleted while its deliveries are out: their outcomes have nothing left to record
/// to, and the other outcomes of the same batch are recorded all the same (had the batch failed,
/// its deliveries would have been sent again once their leases ran out).
pub async fn outcomes_of_deleted_deliveries_do_not_hold_up_the_others(store: Arc<dyn Store>) -> Result {
    let kept = onboard(store.as_ref(), "140").await?;
    let gone = onboard(store.as_ref(), "141").await?;
    store
        .ingest(&[request(&kept, "140", &["k"]), request(&gone, "141", &["g"])], NOW)
        .await?;
    let leased = store.lease_due(lease(NOW, 10)).await?;
    assert_eq!(leased.len(), 2);
    store.delete_endpoint(&gone.tenant, &gone.endpoint).await?;

    let records: Vec<AttemptRecord> = leased.iter().map(|d| record(d, NextStep::Done, Some(200))).collect();
    store.settle(&records, NOW, &HealthPolicy::default(), None).await?;
    let kept_delivery = leased
        .iter()
        .find(|d| d.endpoint_id == kept.endpoint)
        .ok_or("the kept endpoint's delivery was not leased")?;
    let delivered = store
        .deliveries_of_event(&kept.tenant, &kept_delivery.event_id)
        .await?
        .remove(0);
    assert_eq!(delivered.status, DeliveryStatus::Delivered);
    assert_eq!(
        store.attempts_of_delivery(&kept.tenant, &kept_delivery.id).await?.len(),
        1
    );
    Ok(())
}

/// The migrations of `dialect` (`sqlite` or `postgres`) whose files sort before `first_new` (say
/// `0016`), copied into a directory of their own: a migrator over it brings a database to where an
/// older release left it, for upgrade tests.
pub fn migrations_before(dialect: &str, first_new: &str) -> Result<tempfile::TempDir> {
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(dialect);
    let older = tempfile::tempdir()?;
    for file in std::fs::read_dir(all)? {
        let path = file?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name < first_new {
            std::fs::copy(&path, older.path().join(name))?;
        }
    }
    Ok(older)
}

/// An item ingested before dedup keys left the events table (SQLite migration 0016, PostgreSQL
/// 0004), with a pending delivery, as the older schema held them: for the upgrade tests of each
/// backend, which migrate a database to just before the move, write [`LegacyEvent::statements`],
/// open the store (which migrates the rest) and [`LegacyEvent::check_upgraded`].
#[derive(Debug)]
pub struct LegacyEvent {
    tenant: TenantId,
    event: EventId,
    delivery: pagewire_core::DeliveryId,
}

impl Default for LegacyEvent {
    fn default() -> Self {
        Self {
            tenant: TenantId::new(),
            event: EventId::at(NOW),
            delivery: pagewire_core::DeliveryId::new(),
        }
    }
}

const LEGACY_PAGE: &str = "300";
const LEGACY_KEY: &str = "messenger.message:m_legacy";
/// The item's own time, a little before its arrival at `NOW`.
const LEGACY_TIME: i64 = NOW - 1_500;

impl LegacyEvent {
    /// Literal SQL that both dialects read: a tenant, an endpoint, the event with its dedup key
    /// and a pending delivery of it.
    pub fn statements(&self) -> Vec<String> {
        let (tenant, event, delivery) = (self.tenant.as_str(), self.event.as_str(), self.delivery.as_str());
        let endpoint = pagewire_core::EndpointId::new();
        let endpoint = endpoint.as_str();
        vec![
            format!("INSERT INTO tenants (id, name, created_at) VALUES ('{tenant}', 'legacy', {NOW})"),
            format!(
                "INSERT INTO endpoints (id, tenant_id, url, secret_sealed, created_at, updated_at) \
                 VALUES ('{endpoint}', '{tenant}', 'https://example.com/hook', 'sealed', {NOW}, {NOW})"
            ),
            format!(
                "INSERT INTO events (id, tenant_id, page_id, type, dedup_key, inbound_id, received_at, payload) \
                 VALUES ('{event}', '{tenant}', '{LEGACY_PAGE}', 'messenger.message', '{LEGACY_KEY}', \
                 'inb_legacy', {NOW}, '{{\"id\":\"{event}\",\"timestamp_ms\":{LEGACY_TIME}}}')"
            ),
            format!(
                "INSERT INTO deliveries (id, event_id, endpoint_id, tenant_id, status, next_attempt_at, created_at, \
                 updated_at) VALUES ('{delivery}', '{event}', '{endpoint}', '{tenant}', 'pending', {NOW}, {NOW}, {NOW})"
            ),
        ]
    }

    /// After the upgrade the event and its pending delivery are still there (rebuilding the
    /// events table must not cascade into deliveries), a redelivery of the item is recognized by
    /// the key it had, and another item is new.
    pub async fn check_upgraded(&self, store: &dyn Store) -> Result {
        let delivery = store.get_delivery(&self.tenant, &self.delivery).await?;
        assert_eq!(delivery.status, DeliveryStatus::Pending);
        assert_eq!(store.count_pending().await?, 1, "still waiting to be sent");
        assert_eq!(store.get_event(&self.tenant, &self.event).await?.id, self.event);
        let redelivered = |key: &str| IngestRequest {
            inbound_id: InboundId::at(NOW + 60_000),
            received_at: NOW + 60_000,
            app_id: None,
            object: String::from("page"),
            body: Bytes::from_static(b"{\"object\":\"page\",\"entry\":[]}"),
            entries: 1,
            unroutable: Vec::new(),
            events: vec![NewEvent {
                id: EventId::at(NOW + 60_000),
                tenant_id: self.tenant.clone(),
                page_id: LEGACY_PAGE.to_owned(),
                event_type: String::from("messenger.message"),
                dedup_key: key.to_owned(),
                timestamp_ms: LEGACY_TIME,
                conversation_id: None,
                payload: String::from("{}"),
                raw: None,
                text: None,
                endpoints: Vec::new(),
            }],
        };
        let receipts = store
            .ingest(
                &[redelivered(LEGACY_KEY), redelivered("messenger.message:m_new")],
                NOW + 60_000,
            )
            .await?;
        assert_eq!(
            (receipts[0].events, receipts[0].duplicates),
            (0, 1),
            "the old key is kept"
        );
        assert_eq!((receipts[1].events, receipts[1].duplicates), (1, 0));
        Ok(())
    }
}

/// A POST without events (its entries' Pages onboarded by no tenant) goes once its arrival is past
/// the retention of raw POSTs, found by its id (minted from that time, `InboundId::at`); a later one
/// stays until its own time comes.
pub async fn prunes_posts_by_their_arrival_time(store: Arc<dyn Store>) -> Result {
    const DAY: i64 = 86_400_000;
    let f = onboard(store.as_ref(), "122").await?;
    let post = |received_at: i64| {
        let mut req = request(&f, "122", &[]);
        req.inbound_id = InboundId::at(received_at);
        req.received_at = received_at;
        req
    };
    let (early, later) = (post(NOW), post(NOW + 10 * DAY));
    store.ingest(std::slice::from_ref(&early), NOW).await?;
    store.ingest(std::slice::from_ref(&later), NOW + 10 * DAY).await?;

    assert_eq!(store.prune(NOW + 30 * DAY, 30 * DAY).await?.inbound, 0, "not yet");
    assert_eq!(store.prune(NOW + 31 * DAY, 30 * DAY).await?.inbound, 1);
    assert!(
        store.get_inbound(&early.inbound_id).await.is_err(),
        "the early POST went"
    );
    assert_eq!(store.get_inbound(&later.inbound_id).await?.id, later.inbound_id);
    assert_eq!(store.prune(NOW + 41 * DAY, 30 * DAY).await?.inbound, 1);
    Ok(())
}

/// Events from two POSTs (one of three items), read in a list, a query, one by one and in a lease:
/// each carries its own item's bytes and text, cut from the right POST's body (texts with escapes,
/// decoded, and one without).
pub async fn reads_the_items_of_several_posts_each_whole(store: Arc<dyn Store>) -> Result {
    let f = onboard(store.as_ref(), "123").await?;
    // (as sent, as read)
    let text = |mid: &str| match mid {
        "m_4" => (format!(r#""{mid} plain""#), format!(r#""{mid} plain""#)),
        _ => (format!(r#""{mid} \u00e9""#), format!(r#""{mid} é""#)),
    };
    let post = |mids: &[&str]| -> Result<(IngestRequest, Vec<String>)> {
        let items: Vec<String> = mids
            .iter()
            .map(|mid| {
                format!(
                    r#"{{"sender":{{"id":"7"}},"message":{{"mid":"{mid}","text":{}}}}}"#,
                    text(mid).0
                )
            })
            .collect();
        let body = format!(
            r#"{{"object":"page","entry":[{{"id":"123","time":1,"messaging":[{}]}}]}}"#,
            items.join(",")
        );
        let mut req = request(&f, "123", mids);
        let mut wholes = Vec::new();
        for ((event, item), mid) in req.events.iter_mut().zip(&items).zip(mids) {
            let head = format!(r#"{{"id":"{}","data":{{"text":"#, event.id.as_str());
            let middle = r#"},"raw":"#;
            event.payload = format!("{head}null{middle}null}}");
            let start = body.find(item.as_str()).ok_or("no item")?;
            event.raw = Some(crate::RawSpan {
                at: head.len() + "null".len() + middle.len(),
                start,
                len: item.len(),
            });
            let (sent, read) = text(mid);
            event.text = Some(crate::RawSpan {
                at: head.len(),
                start: start + item.find(&sent).ok_or("no text")?,
                len: sent.len(),
            });
            wholes.push(format!("{head}{read}{middle}{item}}}"));
        }
        req.body = Bytes::from(body);
        Ok((req, wholes))
    };
    let (batch, mut wholes) = post(&["m_1", "m_2", "m_3"])?;
    let (single, more) = post(&["m_4"])?;
    wholes.extend(more);
    store.ingest(&[batch, single], NOW).await?;
    wholes.sort_unstable();
    let sorted = |mut payloads: Vec<String>| {
        payloads.sort_unstable();
        payloads
    };
    let listed = store.list_events(&f.tenant, 10).await?;
    assert_eq!(sorted(listed.iter().map(|e| e.payload.clone()).collect()), wholes);
    let query = crate::EventQuery {
        limit: 10,
        ..crate::EventQuery::default()
    };
    let queried = store.query_events(&f.tenant, &query).await?;
    assert_eq!(sorted(queried.into_iter().map(|e| e.payload).collect()), wholes);
    let mut one_by_one = Vec::new();
    for event in &listed {
        one_by_one.push(store.get_event(&f.tenant, &event.id).await?.payload);
    }
    assert_eq!(sorted(one_by_one), wholes);
    let leased = store.lease_due(lease(NOW, 10)).await?;
    assert_eq!(sorted(leased.into_iter().map(|d| d.payload).collect()), wholes);
    Ok(())
}

/// An item's bytes and its text stored once, in its POST's body: every read of the event (one, a
/// list, a query, a lease) gives the payload whole, its text as serde_json writes it (escapes
/// decoded), and the POST stays as long as the event does.
pub async fn keeps_an_items_bytes_once_and_reads_them_whole(store: Arc<dyn Store>) -> Result {
    const DAY: i64 = 86_400_000;
    let f = onboard(store.as_ref(), "121").await?;
    let item = r#"{"sender":{"id":"7"},"message":{"mid":"m_1","text":"h\u00e9 \ud83d\ude4f"}}"#;
    let body = format!(r#"{{"object":"page","entry":[{{"id":"121","time":1,"messaging":[{item}]}}]}}"#);
    let start = body.find(item).ok_or("no item")?;
    let head = r#"{"id":"evt","type":"messenger.message","data":{"mid":"m_1","text":"#;
    let middle = r#"},"raw":"#;
    let tail = r#","source":{"entry":0,"item":0}}"#;
    let mut req = request(&f, "121", &["m_1"]);
    req.body = Bytes::from(body.clone());
    req.events[0].payload = format!("{head}null{middle}null{tail}");
    req.events[0].raw = Some(crate::RawSpan {
        at: head.len() + "null".len() + middle.len(),
        start,
        len: item.len(),
    });
    let text = r#""h\u00e9 \ud83d\ude4f""#;
    req.events[0].text = Some(crate::RawSpan {
        at: head.len(),
        start: body.find(text).ok_or("no text")?,
        len: text.len(),
    });
    let whole = format!(r#"{head}"hé 🙏"{middle}{item}{tail}"#);
    store.ingest(&[req.clone()], NOW).await?;
    let id = req.events[0].id.clone();

    assert_eq!(store.get_event(&f.tenant, &id).await?.payload, whole);
    assert_eq!(store.list_events(&f.tenant, 10).await?[0].payload, whole);
    let query = crate::EventQuery {
        limit: 10,
        ..crate::EventQuery::default()
    };
    assert_eq!(store.query_events(&f.tenant, &query).await?[0].payload, whole);
    let leased = store.lease_due(lease(NOW, 10)).await?;
    assert_eq!(leased[0].payload, whole);

    // Past the retention of raw POSTs the POST stays while its event does (still pending here).
    assert_eq!(store.prune(NOW + 31 * DAY, 30 * DAY).await?.inbound, 0);
    assert_eq!(store.get_event(&f.tenant, &id).await?.payload, whole);
    // Once the event goes, so does the POST.
    store
        .record_attempts(
            &[record(&leased[0], NextStep::Done, Some(200))],
            NOW,
            &HealthPolicy::default(),
        )
        .await?;
    let report = store.prune(NOW + 31 * DAY, 30 * DAY).await?;
    assert_eq!((report.events, report.inbound), (1, 1));
    Ok(())
}
