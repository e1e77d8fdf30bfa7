//! `Idempotency-Key`: a retried create gets the first answer, not a second object; the same key with
//! another request is refused; keys are the caller's and are forgotten after a day.

use std::time::Duration;

use pagewire_testkit::TestApp;
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

async fn post(
    app: &TestApp,
    token: &str,
    path: &str,
    key: &str,
    body: Value,
) -> Result<(u16, bool, Value), Box<dyn std::error::Error + Send + Sync>> {
    let response = app
        .client
        .post(app.url(path))
        .bearer_auth(token)
        .header("idempotency-key", key)
        .json(&body)
        .send()
        .await?;
    let status = response.status().as_u16();
    let replayed = response.headers().get("idempotent-replayed").is_some();
    Ok((status, replayed, response.json().await?))
}

#[tokio::test]
async fn a_retried_create_gets_the_first_answer() -> TestResult {
    let app = TestApp::spawn().await?;
    let acme = app.create_tenant("Acme").await?;
    let globex = app.create_tenant("Globex").await?;
    let hook = json!({"url": "https://example.com/hook"});

    let (status, replayed, first) = post(&app, &acme.api_key, "/v1/endpoints", "create-1", hook.clone()).await?;
    assert_eq!((status, replayed), (201, false), "{first}");
    let (status, replayed, again) = post(&app, &acme.api_key, "/v1/endpoints", "create-1", hook.clone()).await?;
    assert_eq!((status, replayed), (201, true));
    assert_eq!(again, first, "the same answer, secret included");
    let (_, list) = app.api("GET", "/v1/endpoints", &acme.api_key, None).await?;
    assert_eq!(list["data"].as_array().map(Vec::len), Some(1), "one endpoint");

    // The same key with another request.
    let (status, _, problem) = post(
        &app,
        &acme.api_key,
        "/v1/endpoints",
        "create-1",
        json!({"url": "https://example.com/other"}),
    )
    .await?;
    assert_eq!(status, 422);
    assert_eq!(problem["code"], "idempotency_key_reused");

    // Keys are the caller's: another tenant's same key is its own.
    let (status, replayed, theirs) = post(&app, &globex.api_key, "/v1/endpoints", "create-1", hook.clone()).await?;
    assert_eq!((status, replayed), (201, false));
    assert_ne!(theirs["id"], first["id"]);

    // A refusal is an answer too; a malformed key is refused.
    let bad = json!({"url": "not a url"});
    let (status, _, refused) = post(&app, &acme.api_key, "/v1/endpoints", "create-2", bad.clone()).await?;
    assert_eq!(status, 422, "{refused}");
    let (status, replayed, _) = post(&app, &acme.api_key, "/v1/endpoints", "create-2", bad).await?;
    assert_eq!((status, replayed), (422, true));
    let (status, _, problem) = post(&app, &acme.api_key, "/v1/endpoints", &"k".repeat(300), hook.clone()).await?;
    assert_eq!(status, 422, "{problem}");

    // A key shown once is kept sealed, not in the clear.
    let (status, _, key) = post(&app, &acme.api_key, "/v1/api-keys", "key-1", json!({"name": "ci"})).await?;
    assert_eq!(status, 201);
    let (_, replayed, again) = post(&app, &acme.api_key, "/v1/api-keys", "key-1", json!({"name": "ci"})).await?;
    assert!(replayed);
    assert_eq!(again["key"], key["key"]);
    let secret = key["key"].as_str().ok_or("no key")?;
    for file in ["pagewire.db", "pagewire.db-wal"] {
        let bytes = std::fs::read(app.data_dir().join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{file} holds the API key in the clear"
        );
    }

    // A day later the key is forgotten: the same request makes a new object.
    app.clock.advance(Duration::from_secs(24 * 3600 + 1));
    app.run_maintenance().await?;
    let (status, replayed, later) = post(&app, &acme.api_key, "/v1/endpoints", "create-1", hook).await?;
    assert_eq!((status, replayed), (201, false));
    assert_ne!(later["id"], first["id"]);
    Ok(())
}
