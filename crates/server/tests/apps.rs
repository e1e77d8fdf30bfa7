//! Meta apps through the admin API: create (with a generated verify token), read, update, delete,
//! secret rotation with an overlap during which webhooks signed with either secret are accepted,
//! verify tokens unique across the system, shared apps managed by the operator alone.

use std::time::Duration;

use pagewire_core::Clock;
use pagewire_testkit::app::ADMIN_TOKEN;
use pagewire_testkit::simulator::signature;
use pagewire_testkit::{Kind, MetaBody, TestApp};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const APP_ID: &str = "1517776481860352";
const OLD_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const NEW_SECRET: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
const PAGE: &str = "104872345678901";
const PSID: &str = "6543210987654321";

/// Posts a signed body to the shared route, or to the app's own route.
async fn send(
    app: &TestApp,
    app_route: bool,
    secret: &str,
    body: Vec<u8>,
) -> Result<(u16, String), Box<dyn std::error::Error + Send + Sync>> {
    let path = if app_route {
        format!("/webhooks/meta/{APP_ID}")
    } else {
        String::from("/webhooks/meta")
    };
    let signature = signature(secret, &body);
    app.post_webhook(&path, body, Some(&signature)).await
}

#[tokio::test]
async fn apps_can_be_read_changed_and_deleted_by_their_owner() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    let other = app.create_tenant("Other").await?;

    let (status, created) = app
        .api(
            "POST",
            "/v1/apps",
            &tenant.api_key,
            Some(json!({"app_id": APP_ID, "app_secret": OLD_SECRET, "name": "Acme bot"})),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let token = created["verify_token"].as_str().ok_or("no verify token")?;
    assert!(
        token.starts_with("pwv_") && token.len() > 30,
        "a generated verify token: {token}"
    );
    assert!(created.get("app_secret").is_none());

    // Meta's handshake works with the generated token.
    let challenge = app
        .client
        .get(app.url(&format!(
            "/webhooks/meta/{APP_ID}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=4242"
        )))
        .send()
        .await?;
    assert_eq!(challenge.status(), 200);
    assert_eq!(challenge.text().await?, "4242");

    let path = format!("/v1/apps/{APP_ID}");
    let (status, got) = app.api("GET", &path, &tenant.api_key, None).await?;
    assert_eq!(status, 200);
    assert_eq!(got["name"], "Acme bot");
    assert!(got.get("verify_token").is_none(), "shown once, at creation");
    let (status, _) = app.api("GET", &path, &other.api_key, None).await?;
    assert_eq!(status, 404, "another tenant's app");
    let (status, _) = app.api("GET", &path, ADMIN_TOKEN, None).await?;
    assert_eq!(status, 200, "the operator sees every app");

    let (status, updated) = app
        .api(
            "PATCH",
            &path,
            &tenant.api_key,
            Some(json!({"name": null, "verify_token": "a-new-verify-token-1234"})),
        )
        .await?;
    assert_eq!(status, 200, "{updated}");
    assert!(updated["name"].is_null());
    let (status, _) = app
        .api("PATCH", &path, &other.api_key, Some(json!({"name": "mine"})))
        .await?;
    assert_eq!(status, 404);

    // Verify tokens are unique across the system.
    let (status, problem) = app
        .api(
            "POST",
            "/v1/apps",
            &other.api_key,
            Some(json!({"app_id": "99887766", "app_secret": "s3cr3t", "verify_token": "a-new-verify-token-1234"})),
        )
        .await?;
    assert_eq!(status, 409, "{problem}");
    assert_eq!(problem["code"], "conflict");
    let (status, problem) = app
        .api(
            "POST",
            "/v1/apps",
            &other.api_key,
            Some(json!({"app_id": "99887766", "app_secret": "s3cr3t", "verify_token": "short"})),
        )
        .await?;
    assert_eq!(status, 422, "{problem}");

    // An app with Pages cannot be deleted; without, it can.
    app.graph.add_app(APP_ID, OLD_SECRET);
    app.create_page(&tenant, PAGE, APP_ID).await?;
    let (status, problem) = app.api("DELETE", &path, &tenant.api_key, None).await?;
    assert_eq!(status, 409, "{problem}");
    let (status, _) = app.api("DELETE", &path, &other.api_key, None).await?;
    assert_eq!(status, 404);
    let (status, _) = app
        .api(
            "POST",
            "/v1/apps",
            &tenant.api_key,
            Some(json!({"app_id": "5566778899", "app_secret": "s3cr3t"})),
        )
        .await?;
    assert_eq!(status, 201);
    let (status, _) = app.api("DELETE", "/v1/apps/5566778899", &tenant.api_key, None).await?;
    assert_eq!(status, 204);
    let (status, _) = app.api("GET", "/v1/apps/5566778899", &tenant.api_key, None).await?;
    assert_eq!(status, 404);
    Ok(())
}

#[tokio::test]
async fn shared_apps_are_the_operator_s_to_manage() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    app.create_app(None, APP_ID, OLD_SECRET).await?;
    let path = format!("/v1/apps/{APP_ID}");
    let (status, shared) = app.api("GET", &path, &tenant.api_key, None).await?;
    assert_eq!(status, 200, "tenants see the shared apps they can onboard under");
    assert_eq!(shared["shared"], true);
    for (method, body) in [
        ("PATCH", Some(json!({"name": "taken over"}))),
        ("POST", Some(json!({"app_secret": NEW_SECRET}))),
        ("DELETE", None),
    ] {
        let target = if method == "POST" {
            format!("{path}/rotate-secret")
        } else {
            path.clone()
        };
        let (status, problem) = app.api(method, &target, &tenant.api_key, body).await?;
        assert_eq!(status, 403, "{method} {target}: {problem}");
    }
    let (status, _) = app
        .api("PATCH", &path, ADMIN_TOKEN, Some(json!({"name": "Shared"})))
        .await?;
    assert_eq!(status, 200);
    Ok(())
}

#[tokio::test]
async fn a_rotated_secret_verifies_for_the_overlap_only() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    app.create_app(Some(&tenant), APP_ID, OLD_SECRET).await?;
    app.create_page(&tenant, PAGE, APP_ID).await?;
    let body = |n: u64| {
        let now = app.clock.now_ms();
        MetaBody::page()
            .messaging(PAGE, now, vec![Kind::Message.item(PAGE, PSID, now, "hello", n)])
            .to_bytes()
    };

    let (status, rotated) = app
        .api(
            "POST",
            &format!("/v1/apps/{APP_ID}/rotate-secret"),
            &tenant.api_key,
            Some(json!({"app_secret": NEW_SECRET, "overlap_hours": 2})),
        )
        .await?;
    assert_eq!(status, 200, "{rotated}");
    assert!(rotated["previous_secret_expires_at"].is_string());

    for (route, secret, n) in [
        ("shared", OLD_SECRET, 1),
        ("shared", NEW_SECRET, 2),
        ("app", OLD_SECRET, 3),
        ("app", NEW_SECRET, 4),
    ] {
        let (status, answer) = send(&app, route == "app", secret, body(n)).await?;
        assert_eq!(status, 200, "during the overlap, {route} route, {secret}: {answer}");
    }
    app.clock.advance(Duration::from_secs(2 * 3600 + 1));
    for app_route in [false, true] {
        let (status, _) = send(&app, app_route, OLD_SECRET, body(5)).await?;
        assert_eq!(status, 401, "after the overlap the old secret is refused");
        let (status, _) = send(&app, app_route, NEW_SECRET, body(6)).await?;
        assert_eq!(status, 200);
    }
    let (status, problem) = app
        .api(
            "POST",
            &format!("/v1/apps/{APP_ID}/rotate-secret"),
            &tenant.api_key,
            Some(json!({"app_secret": OLD_SECRET, "overlap_hours": 500})),
        )
        .await?;
    assert_eq!(status, 422, "{problem}");
    Ok(())
}
