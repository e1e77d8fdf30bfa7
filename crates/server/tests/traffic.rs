//! What a tenant sees of its traffic: events filtered and paged by cursor, one event with its raw
//! item, deliveries by status and endpoint with their attempts, the raw POSTs that brought them,
//! and its numbers; every list pages the same way.

use std::collections::BTreeSet;
use std::time::Duration;

use pagewire_core::Clock;
use pagewire_testkit::app::ADMIN_TOKEN;
use pagewire_testkit::{Kind, MetaBody, Receiver, TestApp};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;
type Error = Box<dyn std::error::Error + Send + Sync>;

const APP_ID: &str = "1517776481860352";
const APP_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const PAGE_A: &str = "104872345678901";
const PAGE_B: &str = "208765432109876";
const ALICE: &str = "6543210987654321";
const BOB: &str = "7654321098765432";

/// Follows `next_cursor` from `path` to the end; returns every item in order.
async fn all_pages(app: &TestApp, key: &str, path: &str) -> Result<(Vec<Value>, usize), Error> {
    let mut items = Vec::new();
    let mut pages = 0;
    let mut cursor: Option<String> = None;
    loop {
        let sep = if path.contains('?') { '&' } else { '?' };
        let url = match &cursor {
            Some(c) => format!("{path}{sep}cursor={c}"),
            None => path.to_owned(),
        };
        let (status, page) = app.api("GET", &url, key, None).await?;
        assert_eq!(status, 200, "{url}: {page}");
        items.extend(page["data"].as_array().ok_or("no data")?.iter().cloned());
        pages += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok((items, pages)),
        }
        assert!(pages < 100, "the cursor never ends");
    }
}

#[tokio::test]
async fn events_deliveries_and_posts_can_be_filtered_paged_and_opened() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    app.create_app(Some(&tenant), APP_ID, APP_SECRET).await?;
    app.create_page(&tenant, PAGE_A, APP_ID).await?;
    app.create_page(&tenant, PAGE_B, APP_ID).await?;
    let receiver = Receiver::start().await?;
    let (endpoint, _) = app.create_endpoint(&tenant, json!({"url": receiver.url()})).await?;

    let start = app.clock.now_ms();
    let body = MetaBody::page()
        .messaging(
            PAGE_A,
            start,
            vec![
                Kind::Message.item(PAGE_A, ALICE, start, "hi", 1),
                Kind::Postback.item(PAGE_A, ALICE, start + 1, "MENU", 2),
                Kind::Message.item(PAGE_A, BOB, start + 2, "hello", 3),
            ],
        )
        .messaging(
            PAGE_B,
            start,
            vec![
                Kind::QuickReply.item(PAGE_B, BOB, start + 3, "YES", 4),
                Kind::Postback.item(PAGE_B, BOB, start + 4, "HELP", 5),
            ],
        )
        .to_bytes();
    let (status, _) = app.send_signed(APP_SECRET, body).await?;
    assert_eq!(status, 200);
    app.clock.advance(Duration::from_secs(3600));
    let later = app.clock.now_ms();
    let body = MetaBody::page()
        .messaging(
            PAGE_A,
            later,
            vec![Kind::Message.item(PAGE_A, ALICE, later, "again", 6)],
        )
        .to_bytes();
    let (status, _) = app.send_signed(APP_SECRET, body).await?;
    assert_eq!(status, 200);
    app.deliver_due().await?;

    // Six events, two at a time, newest first, each once.
    let (events, pages) = all_pages(&app, &tenant.api_key, "/v1/events?limit=2").await?;
    assert_eq!(pages, 3);
    let ids: Vec<&str> = events.iter().filter_map(|e| e["id"].as_str()).collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 6, "no event twice");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first");

    let count = |path: String| {
        let key = tenant.api_key.clone();
        let app = &app;
        async move { Ok::<usize, Error>(all_pages(app, &key, &path).await?.0.len()) }
    };
    assert_eq!(count(String::from("/v1/events?type=messenger.postback")).await?, 2);
    assert_eq!(count(String::from("/v1/events?type=messenger.*")).await?, 6);
    assert_eq!(count(format!("/v1/events?page_id={PAGE_B}")).await?, 2);
    assert_eq!(count(format!("/v1/events?sender_id={BOB}")).await?, 3);
    let cut = pagewire_core::clock::rfc3339_ms(later - 1000);
    assert_eq!(count(format!("/v1/events?since={cut}")).await?, 1);
    assert_eq!(count(format!("/v1/events?until={cut}&sender_id={ALICE}")).await?, 2);
    for bad in [
        "/v1/events?cursor=%21%21",
        "/v1/events?type=nope",
        "/v1/events?since=yesterday",
    ] {
        let (status, problem) = app.api("GET", bad, &tenant.api_key, None).await?;
        assert_eq!(status, 422, "{bad}: {problem}");
        assert_eq!(problem["code"], "validation_failed");
    }

    // One event, with the raw item Meta sent.
    let first = ids[5];
    let (status, event) = app
        .api("GET", &format!("/v1/events/{first}"), &tenant.api_key, None)
        .await?;
    assert_eq!(status, 200);
    assert_eq!(event["raw"]["message"]["text"], "hi");
    let other = app.create_tenant("Other").await?;
    let (status, _) = app
        .api("GET", &format!("/v1/events/{first}"), &other.api_key, None)
        .await?;
    assert_eq!(status, 404);

    // Deliveries by status and endpoint, one with its attempts.
    assert_eq!(count(String::from("/v1/deliveries?status=delivered&limit=4")).await?, 6);
    assert_eq!(count(String::from("/v1/deliveries?status=pending")).await?, 0);
    assert_eq!(count(format!("/v1/deliveries?endpoint_id={endpoint}")).await?, 6);
    assert_eq!(count(format!("/v1/deliveries?event_id={first}")).await?, 1);
    let (_, deliveries) = app.api("GET", "/v1/deliveries?limit=1", &tenant.api_key, None).await?;
    let delivery = deliveries["data"][0]["id"].as_str().ok_or("no delivery")?;
    let (status, detail) = app
        .api("GET", &format!("/v1/deliveries/{delivery}"), &tenant.api_key, None)
        .await?;
    assert_eq!(status, 200);
    assert_eq!(detail["status"], "delivered");
    assert_eq!(detail["attempt_log"][0]["status_code"], 200);
    let (status, _) = app
        .api("GET", &format!("/v1/deliveries/{delivery}"), &other.api_key, None)
        .await?;
    assert_eq!(status, 404);

    // The POSTs that brought them, with the body Meta sent.
    let (posts, _) = all_pages(&app, &tenant.api_key, "/v1/inbound?limit=1").await?;
    assert_eq!(posts.len(), 2);
    assert!(posts.iter().all(|p| p["signature"] == "valid"));
    let post = posts[1]["id"].as_str().ok_or("no id")?;
    let (status, detail) = app
        .api("GET", &format!("/v1/inbound/{post}"), &tenant.api_key, None)
        .await?;
    assert_eq!(status, 200);
    assert_eq!(detail["produced"].as_array().map(Vec::len), Some(5));
    assert_eq!(detail["body"]["object"], "page");
    let (status, _) = app
        .api("GET", &format!("/v1/inbound/{post}"), &other.api_key, None)
        .await?;
    assert_eq!(status, 404);
    assert!(all_pages(&app, &other.api_key, "/v1/inbound").await?.0.is_empty());

    // The numbers.
    let (status, stats) = app.api("GET", "/v1/stats", &tenant.api_key, None).await?;
    assert_eq!(status, 200);
    assert_eq!(stats["pages"], 2);
    assert_eq!(stats["endpoints"], json!({"enabled": 1, "disabled": 0}));
    assert_eq!(stats["events"], json!({"total": 6, "last_24h": 6}));
    assert_eq!(stats["deliveries"], json!({"pending": 0, "delivered": 6, "failed": 0}));

    // Deleting the endpoint deletes its deliveries.
    let (status, _) = app
        .api("DELETE", &format!("/v1/endpoints/{endpoint}"), &tenant.api_key, None)
        .await?;
    assert_eq!(status, 204);
    let (status, _) = app
        .api("GET", &format!("/v1/endpoints/{endpoint}"), &tenant.api_key, None)
        .await?;
    assert_eq!(status, 404);
    assert_eq!(count(String::from("/v1/deliveries")).await?, 0);
    Ok(())
}

#[tokio::test]
async fn a_shared_app_s_post_shows_each_tenant_only_its_own() -> TestResult {
    let app = TestApp::spawn().await?;
    app.create_app(None, APP_ID, APP_SECRET).await?;
    let acme = app.create_tenant("Acme").await?;
    let globex = app.create_tenant("Globex").await?;
    app.create_page(&acme, PAGE_A, APP_ID).await?;
    app.create_page(&globex, PAGE_B, APP_ID).await?;
    let now = app.clock.now_ms();
    let body = MetaBody::page()
        .messaging(PAGE_A, now, vec![Kind::Message.item(PAGE_A, ALICE, now, "a", 1)])
        .messaging(PAGE_B, now, vec![Kind::Message.item(PAGE_B, BOB, now, "b", 2)])
        .to_bytes();
    let (status, _) = app.send_signed(APP_SECRET, body).await?;
    assert_eq!(status, 200);

    let (_, posts) = app.api("GET", "/v1/inbound", &acme.api_key, None).await?;
    let post = posts["data"][0]["id"].as_str().ok_or("no post")?;
    let (_, detail) = app
        .api("GET", &format!("/v1/inbound/{post}"), &acme.api_key, None)
        .await?;
    // The body carries Globex's entry too: Acme sees only its own.
    assert_eq!(detail["body"]["entry"].as_array().map(Vec::len), Some(1));
    assert_eq!(detail["body"]["entry"][0]["id"], PAGE_A);
    assert!(!detail.to_string().contains(PAGE_B), "{detail}");
    assert_eq!(detail["produced"].as_array().map(Vec::len), Some(1));
    let (_, detail) = app
        .api("GET", &format!("/v1/inbound/{post}"), ADMIN_TOKEN, None)
        .await?;
    assert_eq!(detail["body"]["entry"].as_array().map(Vec::len), Some(2));
    assert_eq!(detail["produced"].as_array().map(Vec::len), Some(2));

    // Small collections page the same way.
    for i in 0..3 {
        app.create_endpoint(&acme, json!({"url": format!("https://example.com/hook/{i}")}))
            .await?;
    }
    let (endpoints, pages) = all_pages(&app, &acme.api_key, "/v1/endpoints?limit=2").await?;
    assert_eq!((endpoints.len(), pages), (3, 2));
    let (tenants, pages) = all_pages(&app, ADMIN_TOKEN, "/v1/tenants?limit=1").await?;
    assert_eq!((tenants.len(), pages), (2, 2));
    Ok(())
}
