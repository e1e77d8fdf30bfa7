//! Tenant isolation, generated from the router's own route table: every tenant route that names an
//! object is called by tenant B with tenant A's ids, and answers 404 (or the same validation error a
//! made-up id gets, which tells nothing). A new route with a new kind of id fails here until the
//! test knows how to make one.

use std::collections::BTreeMap;

use pagewire_core::Clock;
use pagewire_testkit::{Kind, MetaBody, Receiver, TestApp};
use serde_json::json;

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const APP_ID: &str = "1517776481860352";
const APP_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const PAGE: &str = "104872345678901";

/// Routes that are the operator's (a tenant gets 403 whatever the id), or name no tenant object.
fn is_tenant_route(path: &str) -> bool {
    !path.starts_with("/v1/tenants") && !path.starts_with("/v1/auth/") && path.contains('{')
}

#[tokio::test]
async fn no_tenant_route_reaches_another_tenant_s_objects() -> TestResult {
    let app = TestApp::spawn().await?;
    let a = app.create_tenant("Acme").await?;
    let b = app.create_tenant("Globex").await?;
    app.create_app(Some(&a), APP_ID, APP_SECRET).await?;
    app.create_page(&a, PAGE, APP_ID).await?;
    let receiver = Receiver::start().await?;
    let (endpoint, _) = app.create_endpoint(&a, json!({"url": receiver.url()})).await?;
    let now = app.clock.now_ms();
    let body = MetaBody::page()
        .messaging(
            PAGE,
            now,
            vec![Kind::Message.item(PAGE, "6543210987654321", now, "hi", 1)],
        )
        .to_bytes();
    let (status, _) = app.send_signed(APP_SECRET, body).await?;
    assert_eq!(status, 200);
    app.deliver_due().await?;
    let first = |path: &str| {
        let path = path.to_owned();
        let key = a.api_key.clone();
        let app = &app;
        async move {
            let (status, list) = app.api("GET", &path, &key, None).await?;
            assert_eq!(status, 200, "{path}: {list}");
            list["data"][0]["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| -> Box<dyn std::error::Error + Send + Sync> { format!("{path} is empty").into() })
        }
    };
    let ids: BTreeMap<&str, String> = BTreeMap::from([
        ("{app_id}", APP_ID.to_owned()),
        ("{page_id}", PAGE.to_owned()),
        ("{endpoint_id}", endpoint.clone()),
        ("{event_id}", first("/v1/events").await?),
        ("{delivery_id}", first("/v1/deliveries").await?),
        ("{inbound_id}", first("/v1/inbound").await?),
        ("{key_id}", first("/v1/api-keys").await?),
    ]);
    // The same shapes, pointing at nothing.
    let made_up: BTreeMap<&str, &str> = BTreeMap::from([
        ("{app_id}", "9999999999"),
        ("{page_id}", "999999999999999"),
        ("{endpoint_id}", "ep_01M84FYAXDSNXET57Z1AY5JTX9"),
        ("{event_id}", "evt_01M84FYBGSEP014SJAZDGHD9ZM"),
        ("{delivery_id}", "dlv_01M84FYBGTWDCJ5JEBFD34ZT1S"),
        ("{inbound_id}", "inb_01M84FYBGTWDCJ5JEBFD34ZT1V"),
        ("{key_id}", "key_01M84FYBGTWDCJ5JEBFD34ZT1T"),
    ]);
    let fill = |path: &str, values: &dyn Fn(&str) -> Option<String>| -> Result<String, String> {
        let mut out = path.to_owned();
        while let Some(start) = out.find('{') {
            let end = out[start..]
                .find('}')
                .map(|e| start + e + 1)
                .ok_or("unclosed parameter")?;
            let name = out[start..end].to_owned();
            let value = values(&name).ok_or(format!("no object for {name} in {path}: teach this test to make one"))?;
            out.replace_range(start..end, &value);
        }
        Ok(out)
    };

    let mut checked = 0;
    for (method, path) in pagewire_server::admin::ROUTES
        .iter()
        .filter(|(_, p)| is_tenant_route(p))
    {
        let method = method.to_uppercase();
        let body = (method != "GET" && method != "DELETE").then(|| json!({}));
        let theirs = fill(path, &|name| ids.get(name).cloned())?;
        let (status, answer) = app.api(&method, &theirs, &b.api_key, body.clone()).await?;
        if status != 404 {
            // Only a refusal that a made-up id gets as well, so it says nothing about A's object.
            let nothing = fill(path, &|name| made_up.get(name).map(|v| (*v).to_owned()))?;
            let (same, _) = app.api(&method, &nothing, &b.api_key, body).await?;
            assert!(
                status == same && (400..500).contains(&status),
                "{method} {path} with tenant A's ids answered tenant B {status} (a made-up id gets {same}): {answer}"
            );
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} tenant routes checked");

    // Nothing of A's was touched by B's attempts.
    for path in [
        format!("/v1/apps/{APP_ID}"),
        format!("/v1/pages/{PAGE}"),
        format!("/v1/endpoints/{endpoint}"),
        format!("/v1/events/{}", ids["{event_id}"]),
    ] {
        let (status, _) = app.api("GET", &path, &a.api_key, None).await?;
        assert_eq!(status, 200, "{path}");
    }
    let (status, _) = app.api("GET", "/v1/endpoints", &a.api_key, None).await?;
    assert_eq!(status, 200, "A's key still works");
    Ok(())
}
