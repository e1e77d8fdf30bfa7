//! Onboarding against the fake Graph API (a real HTTP server that answers like Meta): a Page's
//! token is checked and its name read; invalid tokens, missing permissions, Meta's rate limits and
//! Pages of other tenants get clear errors; subscriptions are shown, applied, removed, and a
//! subscription Meta dropped is found and repaired or reported.

use pagewire_testkit::app::ADMIN_TOKEN;
use pagewire_testkit::{Receiver, TestApp};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const APP_ID: &str = "1517776481860352";
const APP_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const PAGE: &str = "104872345678901";
const TOKEN: &str = "EAAG-page-token-104872345678901";
const FULL: &[&str] = &["pages_messaging", "pages_manage_metadata"];

async fn onboard(
    app: &TestApp,
    key: &str,
    token: &str,
) -> Result<(u16, Value), Box<dyn std::error::Error + Send + Sync>> {
    app.api(
        "POST",
        "/v1/pages",
        key,
        Some(json!({"page_id": PAGE, "app_id": APP_ID, "access_token": token})),
    )
    .await
}

#[tokio::test]
async fn onboarding_checks_the_token_reads_the_name_and_subscribes() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    app.create_app(Some(&tenant), APP_ID, APP_SECRET).await?;
    app.graph.add_page(PAGE, "Acme Support", TOKEN, APP_ID, FULL);

    let (status, page) = onboard(&app, &tenant.api_key, TOKEN).await?;
    assert_eq!(status, 201, "{page}");
    assert_eq!(page["name"], "Acme Support", "the name comes from the Graph API");
    assert_eq!(page["has_access_token"], true);
    let fields = app.graph.subscribed_fields(PAGE, APP_ID).ok_or("not subscribed")?;
    assert!(fields.iter().any(|f| f == "messages") && fields.iter().any(|f| f == "messaging_postbacks"));
    // Every call carried the token's proof; the fake checks it as Meta does.
    let calls = app.graph.requests();
    assert!(
        calls
            .iter()
            .all(|c| c.sent_access_token && c.sent_appsecret_proof && c.status == 200),
        "{calls:?}"
    );

    let (status, sub) = app
        .api("GET", &format!("/v1/pages/{PAGE}/subscription"), &tenant.api_key, None)
        .await?;
    assert_eq!(status, 200, "{sub}");
    assert_eq!(sub["drift"], false);
    assert_eq!(sub["missing"], json!([]));

    // The Page is this tenant's: another tenant is told it is taken (not by whom), and cannot see it.
    let other = app.create_tenant("Other").await?;
    let (status, problem) = onboard(&app, &other.api_key, TOKEN).await?;
    assert_eq!(status, 404, "another tenant's app: {problem}");
    app.create_app(Some(&other), "2222333344445555", "other-secret").await?;
    let (status, problem) = app
        .api(
            "POST",
            "/v1/pages",
            &other.api_key,
            Some(json!({"page_id": PAGE, "app_id": "2222333344445555"})),
        )
        .await?;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "page_taken");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("onboarded already") && !d.contains("another tenant")),
        "{problem}"
    );
    let (status, _) = app
        .api("GET", &format!("/v1/pages/{PAGE}"), &other.api_key, None)
        .await?;
    assert_eq!(status, 404);
    let (status, problem) = onboard(&app, &tenant.api_key, TOKEN).await?;
    assert_eq!(status, 409);
    assert_eq!(problem["code"], "page_taken");
    Ok(())
}

#[tokio::test]
async fn onboarding_explains_what_meta_refused() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    app.create_app(Some(&tenant), APP_ID, APP_SECRET).await?;

    // A token Meta does not know.
    let (status, problem) = onboard(&app, &tenant.api_key, "EAAG-made-up").await?;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "graph_invalid_token");

    // A revoked one.
    app.graph.add_page(PAGE, "Acme Support", TOKEN, APP_ID, FULL);
    app.graph.revoke_token(TOKEN);
    let (status, problem) = onboard(&app, &tenant.api_key, TOKEN).await?;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "graph_invalid_token");

    // A token without the permission subscriptions need.
    let limited = "EAAG-no-metadata-permission";
    app.graph
        .add_page(PAGE, "Acme Support", limited, APP_ID, &["pages_messaging"]);
    let (status, problem) = onboard(&app, &tenant.api_key, limited).await?;
    assert_eq!(status, 422, "{problem}");
    assert_eq!(problem["code"], "graph_permission_denied");
    assert!(
        problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("pages_manage_metadata")),
        "{problem}"
    );

    // Meta rate limiting the app, beyond the client's retries.
    let good = "EAAG-good-token";
    app.graph.add_page(PAGE, "Acme Support", good, APP_ID, FULL);
    app.graph.rate_limit_next(10);
    let (status, problem) = onboard(&app, &tenant.api_key, good).await?;
    assert_eq!(status, 503, "{problem}");
    assert_eq!(problem["code"], "graph_rate_limited");

    // Nothing was onboarded by the failures; a transient failure is retried and onboarding succeeds.
    let (status, pages) = app.api("GET", "/v1/pages", &tenant.api_key, None).await?;
    assert_eq!(status, 200);
    assert_eq!(pages["data"], json!([]));
    app.graph.rate_limit_next(0);
    app.graph.fail_next(1);
    let (status, page) = onboard(&app, &tenant.api_key, good).await?;
    assert_eq!(status, 201, "{page}");
    Ok(())
}

#[tokio::test]
async fn subscriptions_are_applied_removed_and_repaired() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    app.create_app(Some(&tenant), APP_ID, APP_SECRET).await?;
    app.create_page(&tenant, PAGE, APP_ID).await?;
    let path = format!("/v1/pages/{PAGE}/subscription");

    // Fewer fields by choice; then unsubscribed.
    let (status, sub) = app
        .api(
            "PUT",
            &path,
            &tenant.api_key,
            Some(json!({"subscribed_fields": ["messages"]})),
        )
        .await?;
    assert_eq!(status, 200, "{sub}");
    assert_eq!(sub["wanted"], json!(["messages"]));
    assert_eq!(sub["drift"], false);
    let (status, _) = app.api("DELETE", &path, &tenant.api_key, None).await?;
    assert_eq!(status, 204);
    assert_eq!(app.graph.subscribed_fields(PAGE, APP_ID), None);
    let (_, sub) = app.api("GET", &path, &tenant.api_key, None).await?;
    assert_eq!(sub["drift"], true);
    assert!(sub["subscribed"].is_null());
    let (status, sub) = app
        .api("PUT", &path, &tenant.api_key, Some(json!({"subscribed_fields": null})))
        .await?;
    assert_eq!(status, 200, "{sub}");
    assert!(
        sub["wanted"].as_array().is_some_and(|f| f.len() > 5),
        "back to the defaults: {sub}"
    );

    // Meta drops the app (its webhook kept failing): the background check subscribes it again.
    app.graph.drop_subscription(PAGE, APP_ID);
    let report = app.run_maintenance().await?;
    assert_eq!(report.subscriptions.checked, 1);
    assert_eq!(report.subscriptions.repaired, 1);
    assert!(app.graph.subscribed_fields(PAGE, APP_ID).is_some());
    let (_, page) = app
        .api("GET", &format!("/v1/pages/{PAGE}"), &tenant.api_key, None)
        .await?;
    assert_eq!(page["subscription_check"]["status"], "repaired", "{page}");

    // A tenant that repairs by hand is told instead, through its endpoints.
    let receiver = Receiver::start().await?;
    app.create_endpoint(
        &tenant,
        json!({"url": receiver.url(), "event_types": ["subscription.*"]}),
    )
    .await?;
    let (status, _) = app
        .api(
            "PATCH",
            &format!("/v1/tenants/{}", tenant.id),
            ADMIN_TOKEN,
            Some(json!({"auto_resubscribe": false})),
        )
        .await?;
    assert_eq!(status, 200);
    app.graph.drop_subscription(PAGE, APP_ID);
    let report = app.run_maintenance().await?;
    assert_eq!(report.subscriptions.lost, 1);
    assert_eq!(app.graph.subscribed_fields(PAGE, APP_ID), None, "left as it is");
    app.deliver_due().await?;
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    let event: Value = serde_json::from_slice(&received[0].body)?;
    assert_eq!(event["type"], "subscription.lost");
    assert_eq!(event["data"]["page_id"], PAGE);
    let (_, page) = app
        .api("GET", &format!("/v1/pages/{PAGE}"), &tenant.api_key, None)
        .await?;
    assert_eq!(page["subscription_check"]["status"], "lost");
    Ok(())
}

#[tokio::test]
async fn the_app_webhook_points_at_the_gateway() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    app.create_app(Some(&tenant), APP_ID, APP_SECRET).await?;
    let path = format!("/v1/apps/{APP_ID}/subscription");
    // Meta verifies the callback with the app's verify token before it accepts; the gateway answers.
    let (status, sub) = app.api("PUT", &path, &tenant.api_key, None).await?;
    assert_eq!(status, 200, "{sub}");
    let callback = format!("{}/webhooks/meta/{APP_ID}", app.base_url);
    assert_eq!(sub["callback_url"], callback);
    let (url, fields, verify_token) = app.graph.app_subscription(APP_ID, "page").ok_or("not set at Meta")?;
    assert_eq!(url, callback);
    assert!(fields.iter().any(|f| f == "messages"));
    assert_eq!(verify_token, format!("verify-token-for-{APP_ID}"));
    let (status, sub) = app.api("GET", &path, &tenant.api_key, None).await?;
    assert_eq!(status, 200);
    assert_eq!(sub["subscriptions"][0]["object"], "page");
    assert_eq!(sub["subscriptions"][0]["callback_url"], callback);

    // Another tenant cannot touch it.
    let other = app.create_tenant("Other").await?;
    let (status, _) = app.api("PUT", &path, &other.api_key, None).await?;
    assert_eq!(status, 404);
    Ok(())
}
