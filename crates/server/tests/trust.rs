//! The trust boundary between tenants who do not trust each other: each test plays one attack of
//! `docs/security.md` against a live gateway and asserts the answer it gets.

use pagewire_core::Clock;
use pagewire_testkit::app::ADMIN_TOKEN;
use pagewire_testkit::{Kind, MetaBody, Receiver, Tenant, TestApp};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const SHARED_APP: &str = "1517776481860352";
const SHARED_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const PAGE: &str = "104872345678901";
const OTHER_PAGE: &str = "104872345678902";

/// A message to `page`, signed with the shared app's secret as Meta signs it.
fn message(app: &TestApp, page: &str, mid_seq: u64) -> Vec<u8> {
    let now = app.clock.now_ms();
    MetaBody::page()
        .messaging(
            page,
            now,
            vec![Kind::Message.item(page, "6543210987654321", now, "hi", mid_seq)],
        )
        .to_bytes()
}

async fn events_of(app: &TestApp, tenant: &Tenant) -> Result<Vec<Value>, Box<dyn std::error::Error + Send + Sync>> {
    let (status, list) = app.api("GET", "/v1/events", &tenant.api_key, None).await?;
    assert_eq!(status, 200, "{list}");
    Ok(list["data"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn an_unproven_claim_receives_nothing_and_gives_way_to_the_proven_owner() -> TestResult {
    let app = TestApp::spawn().await?;
    app.create_app(None, SHARED_APP, SHARED_SECRET).await?;
    let squatter = app.create_tenant("Squatter").await?;
    let owner = app.create_tenant("Owner").await?;
    let squatter_hook = Receiver::start().await?;
    app.create_endpoint(&squatter, json!({"url": squatter_hook.url()}))
        .await?;

    // The squatter names the owner's Page under the shared app, without an access token.
    let claim = json!({"page_id": PAGE, "app_id": SHARED_APP});
    let (status, page) = app.api("POST", "/v1/pages", &squatter.api_key, Some(claim)).await?;
    assert_eq!(status, 201, "{page}");
    assert_eq!(
        (page["proof"].as_str(), page["receives_events"].as_bool()),
        (Some("none"), Some(false))
    );
    assert_eq!(app.send_signed(SHARED_SECRET, message(&app, PAGE, 1)).await?.0, 200);
    assert_eq!(app.deliver_due().await?, 0, "an unproven claim receives nothing");
    assert!(events_of(&app, &squatter).await?.is_empty());

    // A token for another Page (the squatter's own) proves nothing about this one.
    app.graph.add_page(
        OTHER_PAGE,
        "Squatter's Page",
        "EAAG-squatter",
        SHARED_APP,
        &["pages_messaging"],
    );
    let wrong = json!({"page_id": PAGE, "app_id": SHARED_APP, "access_token": "EAAG-squatter", "subscribe": false});
    let (status, problem) = app.api("POST", "/v1/pages", &squatter.api_key, Some(wrong)).await?;
    assert_eq!(
        (status, problem["code"].as_str()),
        (422, Some("validation_failed")),
        "{problem}"
    );

    // The owner proves the Page with its token: the claim is taken over and the move recorded.
    let page = app.create_page(&owner, PAGE, SHARED_APP).await?;
    assert_eq!(
        (page["proof"].as_str(), page["receives_events"].as_bool()),
        (Some("access_token"), Some(true))
    );
    let (_, squatter_pages) = app.api("GET", "/v1/pages", &squatter.api_key, None).await?;
    assert_eq!(squatter_pages["data"], json!([]));
    let (_, moves) = app
        .api("GET", &format!("/v1/page-moves?page_id={PAGE}"), ADMIN_TOKEN, None)
        .await?;
    assert_eq!(moves["data"][0]["from_tenant_id"], squatter.id.as_str());
    assert_eq!(moves["data"][0]["to_tenant_id"], owner.id.as_str());
    assert_eq!(moves["data"][0]["reason"], "proven_claim");

    // The squatter can claim it no more, with or without proof; the answer names nobody.
    let claim = json!({"page_id": PAGE, "app_id": SHARED_APP});
    let (status, problem) = app.api("POST", "/v1/pages", &squatter.api_key, Some(claim)).await?;
    assert_eq!((status, problem["code"].as_str()), (409, Some("page_taken")));
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.contains("another tenant") && !detail.contains(owner.id.as_str()),
        "{detail}"
    );

    let owner_hook = Receiver::start().await?;
    app.create_endpoint(&owner, json!({"url": owner_hook.url()})).await?;
    assert_eq!(app.send_signed(SHARED_SECRET, message(&app, PAGE, 2)).await?.0, 200);
    assert_eq!(app.deliver_due().await?, 1);
    assert_eq!(events_of(&app, &owner).await?.len(), 1);
    assert!(squatter_hook.received().is_empty());
    Ok(())
}

#[tokio::test]
async fn an_unproven_claim_under_the_claimant_s_own_app_gives_way_too() -> TestResult {
    let app = TestApp::spawn().await?;
    app.create_app(None, SHARED_APP, SHARED_SECRET).await?;
    let squatter = app.create_tenant("Squatter").await?;
    let owner = app.create_tenant("Owner").await?;
    app.create_app(Some(&squatter), "2222222222", "squatter-own-secret")
        .await?;
    let claim = json!({"page_id": PAGE, "app_id": "2222222222"});
    assert_eq!(
        app.api("POST", "/v1/pages", &squatter.api_key, Some(claim)).await?.0,
        201
    );
    // Signed with its own app's secret, the squatter's forged POST for the Page is not routed.
    let (status, _) = app.send_signed("squatter-own-secret", message(&app, PAGE, 1)).await?;
    assert_eq!(status, 200);
    assert!(events_of(&app, &squatter).await?.is_empty());
    app.create_page(&owner, PAGE, SHARED_APP).await?;
    let (_, pages) = app.api("GET", "/v1/pages", &owner.api_key, None).await?;
    assert_eq!(pages["data"][0]["app_id"], SHARED_APP);
    Ok(())
}

#[tokio::test]
async fn the_operator_approves_and_moves_pages_and_every_move_is_recorded() -> TestResult {
    let app = TestApp::spawn().await?;
    app.create_app(None, SHARED_APP, SHARED_SECRET).await?;
    let first = app.create_tenant("First").await?;
    let second = app.create_tenant("Second").await?;
    let claim = json!({"page_id": PAGE, "app_id": SHARED_APP});
    assert_eq!(app.api("POST", "/v1/pages", &first.api_key, Some(claim)).await?.0, 201);
    let (_, unproven) = app.api("GET", "/v1/pages?unproven=true", ADMIN_TOKEN, None).await?;
    assert_eq!(unproven["data"][0]["page_id"], PAGE);

    // Tenants cannot assign Pages, not even to themselves.
    let path = format!("/v1/tenants/{}/pages/{PAGE}", first.id);
    assert_eq!(app.api("PUT", &path, &first.api_key, None).await?.0, 403);
    let approved = app.approve_page(&first, PAGE).await?;
    assert_eq!(
        (approved["proof"].as_str(), approved["receives_events"].as_bool()),
        (Some("operator"), Some(true))
    );
    assert_eq!(app.send_signed(SHARED_SECRET, message(&app, PAGE, 1)).await?.0, 200);
    assert_eq!(events_of(&app, &first).await?.len(), 1);
    let (_, moves) = app.api("GET", "/v1/page-moves", ADMIN_TOKEN, None).await?;
    assert_eq!(moves["data"], json!([]), "approving a tenant's own claim is no move");

    // Moved, the Page's events are the second tenant's; the first sees the Page no more.
    let moved = app.approve_page(&second, PAGE).await?;
    assert_eq!(moved["tenant_id"], second.id.as_str());
    assert_eq!(app.send_signed(SHARED_SECRET, message(&app, PAGE, 2)).await?.0, 200);
    assert_eq!(events_of(&app, &second).await?.len(), 1);
    assert_eq!(
        events_of(&app, &first).await?.len(),
        1,
        "the first keeps only what it had"
    );
    let (status, _) = app
        .api("GET", &format!("/v1/pages/{PAGE}"), &first.api_key, None)
        .await?;
    assert_eq!(status, 404);
    let (_, moves) = app.api("GET", "/v1/page-moves", ADMIN_TOKEN, None).await?;
    assert_eq!(moves["data"][0]["reason"], "operator");
    assert_eq!(moves["data"][0]["from_tenant_id"], first.id.as_str());
    assert_eq!(app.api("GET", "/v1/page-moves", &first.api_key, None).await?.0, 403);
    Ok(())
}

#[tokio::test]
async fn refused_posts_leave_a_trace_without_their_bodies() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    let other = app.create_tenant("Globex").await?;
    app.create_app(Some(&tenant), SHARED_APP, SHARED_SECRET).await?;
    app.create_page(&tenant, PAGE, SHARED_APP).await?;

    let body = message(&app, PAGE, 1);
    let secret_text = String::from_utf8_lossy(&body).into_owned();
    let forged = pagewire_testkit::simulator::signature("not-the-secret", &body);
    assert_eq!(
        app.post_webhook("/webhooks/meta", body.clone(), Some(&forged)).await?.0,
        401
    );
    assert_eq!(app.post_webhook("/webhooks/meta", body.clone(), None).await?.0, 401);
    let garbage = b"{not json".to_vec();
    let signed = pagewire_testkit::simulator::signature(SHARED_SECRET, &garbage);
    let path = format!("/webhooks/meta/{SHARED_APP}");
    assert_eq!(app.post_webhook(&path, garbage, Some(&signed)).await?.0, 400);
    assert_eq!(
        app.post_webhook("/webhooks/meta/404404", body.clone(), Some(&forged))
            .await?
            .0,
        404
    );
    let unknown = message(&app, "999999999999", 2);
    assert_eq!(app.send_signed(SHARED_SECRET, unknown).await?.0, 200);

    let (status, list) = app.api("GET", "/v1/refusals", ADMIN_TOKEN, None).await?;
    assert_eq!(status, 200, "{list}");
    let reasons: Vec<(&str, Option<&str>, &str)> = list["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            (
                r["reason"].as_str().unwrap_or(""),
                r["app_id"].as_str(),
                r["route"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        reasons,
        [
            ("unknown_pages", None, "shared"),
            ("unknown_app", None, "app"),
            ("invalid_json", Some(SHARED_APP), "app"),
            // Without a signature the body is not read, so its app is not known.
            ("invalid_signature", None, "shared"),
            ("invalid_signature", Some(SHARED_APP), "shared"),
        ]
    );
    assert_eq!(list["data"][4]["size"], body.len());
    assert!(
        !list.to_string().contains("6543210987654321"),
        "no body is kept: {list}"
    );
    assert!(!list.to_string().contains(&secret_text));

    // A tenant sees the refusals of its own apps, and no one else's.
    let (_, own) = app.api("GET", "/v1/refusals", &tenant.api_key, None).await?;
    assert_eq!(own["data"].as_array().map(Vec::len), Some(2));
    let (_, others) = app.api("GET", "/v1/refusals", &other.api_key, None).await?;
    assert_eq!(others["data"], json!([]));
    Ok(())
}

#[tokio::test]
async fn refusals_kept_per_app_and_hour_are_bounded() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    app.create_app(Some(&tenant), SHARED_APP, SHARED_SECRET).await?;
    let path = format!("/webhooks/meta/{SHARED_APP}");
    let bound = pagewire_server::refusals::PER_APP_PER_HOUR as usize;
    for _ in 0..bound + 5 {
        assert_eq!(app.post_webhook(&path, b"{}".to_vec(), None).await?.0, 401);
    }
    let (_, list) = app.api("GET", "/v1/refusals?limit=500", ADMIN_TOKEN, None).await?;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(bound));
    // The next hour keeps them again.
    app.clock.advance(std::time::Duration::from_secs(3600));
    assert_eq!(app.post_webhook(&path, b"{}".to_vec(), None).await?.0, 401);
    let (_, list) = app.api("GET", "/v1/refusals?limit=500", ADMIN_TOKEN, None).await?;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(bound + 1));
    Ok(())
}

#[tokio::test]
async fn the_inbound_log_shows_a_tenant_only_its_own_entries() -> TestResult {
    let app = TestApp::spawn().await?;
    app.create_app(None, SHARED_APP, SHARED_SECRET).await?;
    let a = app.create_tenant("Acme").await?;
    let b = app.create_tenant("Globex").await?;
    app.create_page(&a, PAGE, SHARED_APP).await?;
    app.create_page(&b, OTHER_PAGE, SHARED_APP).await?;
    let now = app.clock.now_ms();
    let b_item = Kind::Message.item(OTHER_PAGE, "1111111111111111", now, "B's customer's secret", 7);
    // B's entry first, then A's: B's item is a redelivery (already stored), so it makes no new event.
    let b_only = MetaBody::page()
        .messaging(OTHER_PAGE, now, vec![b_item.clone()])
        .to_bytes();
    assert_eq!(app.send_signed(SHARED_SECRET, b_only).await?.0, 200);
    let shared = MetaBody::page()
        .messaging(OTHER_PAGE, now, vec![b_item])
        .messaging(
            PAGE,
            now,
            vec![Kind::Message.item(PAGE, "2222222222222222", now, "A's text", 8)],
        )
        .to_bytes();
    assert_eq!(app.send_signed(SHARED_SECRET, shared).await?.0, 200);

    let (_, list) = app.api("GET", "/v1/inbound", &a.api_key, None).await?;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1));
    let post = &list["data"][0];
    assert_eq!((post["entries"].as_u64(), post["events"].as_u64()), (Some(1), Some(1)));
    assert_eq!(post["unroutable_entries"], Value::Null);
    let id = post["id"].as_str().ok_or("no id")?;
    let (status, detail) = app.api("GET", &format!("/v1/inbound/{id}"), &a.api_key, None).await?;
    assert_eq!(status, 200, "{detail}");
    let text = detail.to_string();
    assert!(!text.contains(OTHER_PAGE) && !text.contains("B's customer"), "{text}");
    assert_eq!(detail["body"]["entry"].as_array().map(Vec::len), Some(1));
    assert_eq!(detail["body"]["entry"][0]["id"], PAGE);
    assert_eq!(
        detail["body"]["entry"][0]["messaging"][0]["message"]["text"],
        "A's text"
    );
    // The operator sees the POST whole.
    let (_, whole) = app.api("GET", &format!("/v1/inbound/{id}"), ADMIN_TOKEN, None).await?;
    assert_eq!(whole["body"]["entry"].as_array().map(Vec::len), Some(2));
    assert_eq!(whole["entries"], 2);
    Ok(())
}

async fn post_with_key(
    app: &TestApp,
    token: &str,
    path: &str,
    key: &str,
) -> Result<(u16, Value), Box<dyn std::error::Error + Send + Sync>> {
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&json!({"name": "deploy"}))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}

#[tokio::test]
async fn an_idempotency_key_replays_only_to_the_credential_that_used_it() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    let (_, reader) = app
        .api(
            "POST",
            "/v1/api-keys",
            &tenant.api_key,
            Some(json!({"role": "read_only"})),
        )
        .await?;
    let reader = reader["key"].as_str().ok_or("no key")?.to_owned();
    let (status, created) = post_with_key(&app, &tenant.api_key, "/v1/api-keys", "k-1").await?;
    assert_eq!(status, 201);
    let admin_key = created["key"].as_str().ok_or("no key")?;

    // The read-only key repeats the admin's key: refused, and given nothing of the admin's answer.
    let (status, answer) = post_with_key(&app, &reader, "/v1/api-keys", "k-1").await?;
    assert_eq!((status, answer["code"].as_str()), (403, Some("forbidden")), "{answer}");
    assert!(!answer.to_string().contains(admin_key));
    // Another admin key of the same tenant is another credential: a new key, not the first answer.
    let (status, again) = post_with_key(&app, admin_key, "/v1/api-keys", "k-1").await?;
    assert_eq!(status, 201);
    assert_ne!(again["key"], created["key"]);
    // A refusal is never kept: the same key, refused once, runs again when allowed.
    let (status, _) = post_with_key(&app, "pw_not_a_key", "/v1/api-keys", "k-2").await?;
    assert_eq!(status, 401);
    assert_eq!(
        post_with_key(&app, &tenant.api_key, "/v1/api-keys", "k-2").await?.0,
        201
    );
    Ok(())
}

async fn token_for(app: &TestApp, credential: &str) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    let (status, token) = app.api("POST", "/v1/auth/token", credential, None).await?;
    assert_eq!(status, 201, "{token}");
    Ok(token["token"].as_str().ok_or("no token")?.to_owned())
}

#[tokio::test]
async fn revoking_a_key_revokes_its_tokens_on_every_node() -> TestResult {
    let node = TestApp::spawn().await?;
    let other = TestApp::builder().data_dir(node.data_dir()).spawn().await?;
    let tenant = node.create_tenant("Acme").await?;
    let (_, key) = node
        .api("POST", "/v1/api-keys", &tenant.api_key, Some(json!({})))
        .await?;
    let (key_id, key) = (key["id"].as_str().ok_or("no id")?, key["key"].as_str().ok_or("no key")?);
    let token = token_for(&node, key).await?;
    assert_eq!(node.api("GET", "/v1/pages", &token, None).await?.0, 200);
    assert_eq!(other.api("GET", "/v1/pages", &token, None).await?.0, 200);

    assert_eq!(
        node.api("DELETE", &format!("/v1/api-keys/{key_id}"), &tenant.api_key, None)
            .await?
            .0,
        200
    );
    assert_eq!(
        node.api("GET", "/v1/pages", &token, None).await?.0,
        401,
        "at once where it was revoked"
    );
    // The other node trusted what it read for a while; within a minute it refuses too.
    other.clock.advance(std::time::Duration::from_secs(60));
    assert_eq!(other.api("GET", "/v1/pages", &token, None).await?.0, 401);
    Ok(())
}

#[tokio::test]
async fn the_operator_retires_a_signing_key_at_once() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    let token = token_for(&app, &tenant.api_key).await?;
    let operator_token = token_for(&app, ADMIN_TOKEN).await?;
    let rotate = "/v1/auth/signing-keys/rotate";
    assert_eq!(app.api("POST", rotate, ADMIN_TOKEN, None).await?.0, 200);
    assert_eq!(
        app.api("GET", "/v1/pages", &token, None).await?.0,
        200,
        "a rotation logs nobody out"
    );
    let (status, _) = app
        .api("POST", rotate, ADMIN_TOKEN, Some(json!({"retire_previous": true})))
        .await?;
    assert_eq!(status, 200);
    assert_eq!(app.api("GET", "/v1/pages", &token, None).await?.0, 401);
    assert_eq!(app.api("GET", "/v1/tenants", &operator_token, None).await?.0, 401);
    let fresh = token_for(&app, &tenant.api_key).await?;
    assert_eq!(app.api("GET", "/v1/pages", &fresh, None).await?.0, 200);
    Ok(())
}

#[tokio::test]
async fn conflicts_name_nobody_and_verify_tokens_are_generated() -> TestResult {
    let app = TestApp::spawn().await?;
    let a = app.create_tenant("Acme").await?;
    let b = app.create_tenant("Globex").await?;
    let chosen = "a-verify-token-of-acme-2f9c";
    let (status, created) = app
        .api(
            "POST",
            "/v1/apps",
            &a.api_key,
            Some(json!({"app_id": "3333333333", "app_secret": "s", "verify_token": chosen})),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    // B probes A's verify token: refused, but not told that it is another app's.
    let (status, problem) = app
        .api(
            "POST",
            "/v1/apps",
            &b.api_key,
            Some(json!({"app_id": "4444444444", "app_secret": "s", "verify_token": chosen})),
        )
        .await?;
    assert_eq!((status, problem["code"].as_str()), (409, Some("conflict")));
    let detail = problem["detail"].as_str().unwrap_or_default();
    assert!(
        !detail.contains("another") && !detail.contains("3333333333"),
        "{detail}"
    );
    // Without one, a unique token is generated and shown once.
    let (status, generated) = app
        .api(
            "POST",
            "/v1/apps",
            &b.api_key,
            Some(json!({"app_id": "4444444444", "app_secret": "s"})),
        )
        .await?;
    assert_eq!(status, 201);
    assert!(generated["verify_token"]
        .as_str()
        .is_some_and(|t| t.starts_with("pwv_") && t.len() > 30));
    // B registering A's app id is told it is registered, the same words as A would get.
    let body = json!({"app_id": "3333333333", "app_secret": "s"});
    let (status, to_b) = app.api("POST", "/v1/apps", &b.api_key, Some(body.clone())).await?;
    let (_, to_a) = app.api("POST", "/v1/apps", &a.api_key, Some(body)).await?;
    assert_eq!(status, 409);
    assert_eq!(to_b["detail"], to_a["detail"]);
    Ok(())
}
