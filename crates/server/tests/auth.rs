//! Credentials end to end: API keys with roles, revocation and `last_used_at`; tokens from
//! `POST /v1/auth/token`, refused when expired, signed with another key, unsigned, or tampered with;
//! signing-key rotation that logs nobody out.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use pagewire_testkit::app::ADMIN_TOKEN;
use pagewire_testkit::TestApp;
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn part(token: &str, index: usize) -> Value {
    let segment = token.split('.').nth(index).unwrap_or_default();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(segment).unwrap_or_default()).unwrap_or_default()
}

fn encode(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(value.to_string())
}

async fn token_for(app: &TestApp, credential: &str) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
    let (status, body) = app.api("POST", "/v1/auth/token", credential, None).await?;
    assert_eq!(status, 201, "{body}");
    Ok(body)
}

#[tokio::test]
async fn keys_have_roles_and_can_be_revoked() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;

    let (status, created) = app
        .api(
            "POST",
            "/v1/api-keys",
            &tenant.api_key,
            Some(json!({"name": "dashboard", "role": "read_only"})),
        )
        .await?;
    assert_eq!(status, 201, "{created}");
    let reader = created["key"].as_str().ok_or("no key")?.to_owned();
    assert!(reader.starts_with("pw_"));
    assert_eq!(created["role"], "read_only");

    // A read-only key reads, and may not write.
    let (status, _) = app.api("GET", "/v1/endpoints", &reader, None).await?;
    assert_eq!(status, 200);
    let (status, problem) = app
        .api(
            "POST",
            "/v1/endpoints",
            &reader,
            Some(json!({"url": "https://example.com/hook"})),
        )
        .await?;
    assert_eq!(status, 403);
    assert_eq!(problem["code"], "forbidden");
    let (status, _) = app.api("POST", "/v1/api-keys", &reader, None).await?;
    assert_eq!(status, 403, "a read-only key cannot make keys");

    // Lists show the keys without the keys themselves, and when each was last used.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let (status, listed) = app.api("GET", "/v1/api-keys", &tenant.api_key, None).await?;
        assert_eq!(status, 200);
        let used = listed["data"]
            .as_array()
            .ok_or("no data")?
            .iter()
            .all(|k| k["last_used_at"].is_string());
        if used || tokio::time::Instant::now() > deadline {
            break listed;
        }
        tokio::task::yield_now().await;
    };
    let keys = listed["data"].as_array().ok_or("no data")?;
    assert_eq!(keys.len(), 2);
    assert!(keys
        .iter()
        .all(|k| k.get("key").is_none() && k["prefix"].as_str().is_some_and(|p| p.starts_with("pw_"))));
    assert!(keys.iter().all(|k| k["last_used_at"].is_string()), "{listed}");

    // Another tenant cannot see or revoke them.
    let other = app.create_tenant("Other").await?;
    let reader_id = created["id"].as_str().ok_or("no id")?;
    let (status, _) = app
        .api("DELETE", &format!("/v1/api-keys/{reader_id}"), &other.api_key, None)
        .await?;
    assert_eq!(status, 404);

    // Revoked, the key stops working at once; the operator can revoke too.
    let (status, revoked) = app
        .api("DELETE", &format!("/v1/api-keys/{reader_id}"), &tenant.api_key, None)
        .await?;
    assert_eq!(status, 200);
    assert!(revoked["revoked_at"].is_string());
    let (status, _) = app.api("GET", "/v1/endpoints", &reader, None).await?;
    assert_eq!(status, 401);
    let (status, keys) = app
        .api("GET", &format!("/v1/tenants/{}/api-keys", other.id), ADMIN_TOKEN, None)
        .await?;
    assert_eq!(status, 200);
    let other_key = keys["data"][0]["id"].as_str().ok_or("no key")?;
    let (status, _) = app
        .api(
            "DELETE",
            &format!("/v1/tenants/{}/api-keys/{other_key}", other.id),
            ADMIN_TOKEN,
            None,
        )
        .await?;
    assert_eq!(status, 200);
    let (status, _) = app.api("GET", "/v1/endpoints", &other.api_key, None).await?;
    assert_eq!(status, 401);
    Ok(())
}

#[tokio::test]
async fn tokens_carry_the_key_s_rights_and_expire() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    let issued = token_for(&app, &tenant.api_key).await?;
    let token = issued["token"].as_str().ok_or("no token")?.to_owned();
    assert_eq!(issued["token_type"], "Bearer");
    assert_eq!(issued["scope"], "tenant:admin");
    assert_eq!(issued["expires_in"], 900);
    assert_eq!(part(&token, 0)["alg"], "HS256");

    let (status, _) = app.api("GET", "/v1/endpoints", &token, None).await?;
    assert_eq!(status, 200);
    let (status, _) = app
        .api(
            "POST",
            "/v1/endpoints",
            &token,
            Some(json!({"url": "https://example.com/hook"})),
        )
        .await?;
    assert_eq!(status, 201, "an admin key's token writes");
    let (status, _) = app.api("POST", "/v1/auth/token", &token, None).await?;
    assert_eq!(status, 403, "a token does not mint tokens");

    // The operator's token is the operator.
    let operator = token_for(&app, ADMIN_TOKEN).await?;
    let (status, _) = app
        .api(
            "GET",
            "/v1/tenants",
            operator["token"].as_str().ok_or("no token")?,
            None,
        )
        .await?;
    assert_eq!(status, 200);

    // Past its expiry (by the gateway's clock), refused.
    app.clock.advance(Duration::from_secs(901));
    let (status, problem) = app.api("GET", "/v1/endpoints", &token, None).await?;
    assert_eq!(status, 401);
    assert_eq!(problem["code"], "unauthorized");
    Ok(())
}

#[tokio::test]
async fn forged_tokens_are_refused() -> TestResult {
    let app = TestApp::spawn().await?;
    let victim = app.create_tenant("Victim").await?;
    let attacker = app.create_tenant("Attacker").await?;
    let token = token_for(&app, &attacker.api_key).await?["token"]
        .as_str()
        .ok_or("no token")?
        .to_owned();
    let header = part(&token, 0);
    let claims = part(&token, 1);
    let signature = token.rsplit('.').next().unwrap_or_default();

    // The tenant claim changed, the signature kept.
    let mut tampered = claims.clone();
    tampered["tid"] = json!(victim.id);
    let forged_tenant = format!("{}.{}.{signature}", encode(&header), encode(&tampered));
    // The scope raised to operator, the signature kept.
    let mut raised = claims.clone();
    raised["scope"] = json!("operator");
    let forged_scope = format!("{}.{}.{signature}", encode(&header), encode(&raised));
    // No signature at all.
    let mut none = header.clone();
    none["alg"] = json!("none");
    let unsigned = format!("{}.{}.", encode(&none), encode(&claims));
    // Signed with a key the gateway never made, under the real key id.
    let wrong_key = jsonwebtoken::encode(
        &jsonwebtoken::Header {
            kid: header["kid"].as_str().map(str::to_owned),
            ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256)
        },
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"not-the-gateway-s-signing-key-at-all"),
    )?;
    // Another algorithm named in the header.
    let mut hs512 = header.clone();
    hs512["alg"] = json!("HS512");
    let other_alg = format!("{}.{}.{signature}", encode(&hs512), encode(&claims));

    for (what, forged) in [
        ("tampered tenant", forged_tenant),
        ("raised scope", forged_scope),
        ("alg none", unsigned),
        ("wrong key", wrong_key),
        ("other algorithm", other_alg),
        ("garbage", String::from("eyJhbGciOi.not.a-token")),
    ] {
        let (status, problem) = app.api("GET", "/v1/endpoints", &forged, None).await?;
        assert_eq!(status, 401, "{what}: {problem}");
        assert_eq!(problem["code"], "unauthorized", "{what}");
        let (status, _) = app.api("GET", "/v1/tenants", &forged, None).await?;
        assert_eq!(status, 401, "{what} on an operator route");
    }
    Ok(())
}

#[tokio::test]
async fn rotating_the_signing_key_logs_nobody_out() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    let before = token_for(&app, &tenant.api_key).await?["token"]
        .as_str()
        .ok_or("no token")?
        .to_owned();

    let (status, rotated) = app
        .api("POST", "/v1/auth/signing-keys/rotate", ADMIN_TOKEN, None)
        .await?;
    assert_eq!(status, 200, "{rotated}");
    let (status, _) = app
        .api("POST", "/v1/auth/signing-keys/rotate", &tenant.api_key, None)
        .await?;
    assert_eq!(status, 403, "only the operator rotates");

    let after = token_for(&app, &tenant.api_key).await?["token"]
        .as_str()
        .ok_or("no token")?
        .to_owned();
    assert_ne!(
        part(&before, 0)["kid"],
        part(&after, 0)["kid"],
        "new tokens use the new key"
    );
    assert_eq!(part(&after, 0)["kid"], rotated["kid"]);
    for token in [&before, &after] {
        let (status, _) = app.api("GET", "/v1/endpoints", token, None).await?;
        assert_eq!(status, 200, "tokens of both keys verify");
    }
    Ok(())
}

#[tokio::test]
async fn each_credential_has_its_own_rate_limit() -> TestResult {
    use pagewire_server::ratelimit::RateLimit;
    let app = TestApp::builder()
        .rate_limit(RateLimit {
            per_second: 1,
            burst: 5,
        })
        .spawn()
        .await?;
    // Four of the operator's five.
    let tenant = app.create_tenant("Acme").await?;
    let other = app.create_tenant("Other").await?;
    for _ in 0..5 {
        let (status, _) = app.api("GET", "/v1/endpoints", &tenant.api_key, None).await?;
        assert_eq!(status, 200);
    }
    let limited = app
        .client
        .get(app.url("/v1/endpoints"))
        .bearer_auth(&tenant.api_key)
        .send()
        .await?;
    assert_eq!(limited.status(), 429);
    let retry_after: u64 = limited
        .headers()
        .get("retry-after")
        .ok_or("no Retry-After")?
        .to_str()?
        .parse()?;
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert_eq!(
        limited.headers().get("content-type").ok_or("no content type")?,
        "application/problem+json"
    );
    let problem: Value = limited.json().await?;
    assert_eq!(problem["code"], "rate_limited");

    // Another credential is not affected, nor is Meta's ingress.
    let (status, _) = app.api("GET", "/v1/endpoints", &other.api_key, None).await?;
    assert_eq!(status, 200);
    for _ in 0..5 {
        let handshake = app
            .client
            .get(app.url("/webhooks/meta?hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1"))
            .send()
            .await?;
        assert_ne!(handshake.status(), 429);
    }
    Ok(())
}
