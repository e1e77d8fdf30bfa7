//! The walking path end to end: signed Meta webhooks into a real gateway on 127.0.0.1 with its own
//! SQLite file, normalized events out to a recording receiver that checks Standard Webhooks
//! signatures with the `standardwebhooks` crate. Delivery is driven by the test, never waited for.

use std::time::Duration;

use pagewire_core::Clock;
use pagewire_testkit::simulator::signature;
use pagewire_testkit::{meta_json, Kind, MetaBody, Receiver, TestApp};
use serde_json::{json, Value};

type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

const APP_ID: &str = "1517776481860352";
const APP_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const PAGE_A: &str = "104872345678901";
const PAGE_B: &str = "208765432109876";
const PSID: &str = "6543210987654321";
const WAIT: Duration = Duration::from_secs(10);

/// A tenant with its own app, two Pages and one endpoint pointing at a fresh receiver.
async fn onboarded(
    app: &TestApp,
) -> Result<(pagewire_testkit::Tenant, Receiver, String), Box<dyn std::error::Error + Send + Sync>> {
    let tenant = app.create_tenant("Acme Bots").await?;
    app.create_app(Some(&tenant), APP_ID, APP_SECRET).await?;
    app.create_page(&tenant, PAGE_A, APP_ID).await?;
    app.create_page(&tenant, PAGE_B, APP_ID).await?;
    let receiver = Receiver::start().await?;
    // One request at a time: events arrive in exactly the order Meta sent them; standby items too.
    let endpoint = json!({"url": receiver.url(), "max_concurrency": 1, "include_standby": true});
    let (_, secret) = app.create_endpoint(&tenant, endpoint).await?;
    Ok((tenant, receiver, secret))
}

fn five_item_batch(now: i64) -> MetaBody {
    MetaBody::page()
        .messaging(
            PAGE_A,
            now,
            vec![
                Kind::Message.item(PAGE_A, PSID, now, "Hi 😀 äöå", 1),
                Kind::PostbackWithReferral.item(PAGE_A, PSID, now + 1, "GET_STARTED", 2),
            ],
        )
        .messaging(
            PAGE_B,
            now,
            vec![
                Kind::QuickReply.item(PAGE_B, PSID, now + 2, "CONFIRM_YES", 3),
                Kind::Read.item(PAGE_B, PSID, now + 3, "", 4),
            ],
        )
        .standby(
            PAGE_A,
            now,
            vec![json!({
                "sender": {"id": PSID},
                "recipient": {"id": PAGE_A},
                "timestamp": now + 4,
                "postback": {"title": "Talk to a human"}
            })],
        )
}

#[tokio::test]
async fn delivers_a_signed_batch_as_five_verified_events_in_order() -> TestResult {
    let app = TestApp::spawn().await?;
    let (tenant, receiver, secret) = onboarded(&app).await?;
    let now = 1_747_231_892_100;
    let batch = five_item_batch(now);
    let body = batch.to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains(r"\u00e4\u00f6\u00e5"),
        "the simulator escapes like Meta"
    );

    let (status, _) = app.send_signed(APP_SECRET, body).await?;
    assert_eq!(status, 200);
    assert_eq!(app.deliver_due().await?, 5);

    let received = receiver.wait_for(5, WAIT).await;
    assert_eq!(received.len(), 5);
    for request in &received {
        request.verify(&secret)?;
        assert_eq!(request.header("content-type"), Some("application/json"));
    }
    let events: Vec<Value> = received.iter().map(|r| r.json()).collect();
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(
        types,
        [
            "messenger.message",
            "messenger.postback",
            "messenger.quick_reply",
            "messenger.read",
            "messenger.postback"
        ]
    );
    let sent = batch.to_value();
    for (i, (event, request)) in events.iter().zip(&received).enumerate() {
        assert_eq!(
            request.header("webhook-id"),
            event["id"].as_str(),
            "webhook-id is the event id"
        );
        assert!(event["id"].as_str().is_some_and(|id| id.starts_with("evt_")));
        assert_eq!(event["version"], 1);
        assert_eq!(event["platform"], "messenger");
        assert_eq!(event["tenant_id"], tenant.id.as_str());
        assert_eq!(event["sender_id"], PSID);
        assert_eq!(event["direction"], "inbound");
        assert_eq!(event["timestamp_ms"], now + i64::try_from(i)?);
        assert!(event["received_at"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(event["source"]["inbound_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("inb_")));
        let (entry, item, field) = [
            (0, 0, "messaging"),
            (0, 1, "messaging"),
            (1, 0, "messaging"),
            (1, 1, "messaging"),
            (2, 0, "standby"),
        ][i];
        assert_eq!(event["source"]["entry"], entry);
        assert_eq!(event["source"]["item"], item);
        assert_eq!(event["source"]["field"], field);
        assert_eq!(
            event["raw"], sent["entry"][entry][field][item],
            "raw is the item as sent"
        );
    }
    assert_eq!(events[0]["page_id"], PAGE_A);
    assert_eq!(events[0]["data"]["text"], "Hi 😀 äöå");
    assert_eq!(events[0]["conversation_id"], format!("{PAGE_A}:{PSID}"));
    assert_eq!(events[1]["data"]["payload"], "GET_STARTED");
    assert_eq!(events[1]["data"]["referral"]["ref"], "summer_sale");
    assert_eq!(events[2]["page_id"], PAGE_B);
    assert_eq!(events[2]["data"]["payload"], "CONFIRM_YES");
    assert_eq!(events[3]["data"]["watermark"], now + 3 - 1000);
    assert_eq!(events[4]["standby"], true);
    assert_eq!(events[4]["data"]["payload"], Value::Null);
    assert!(events[..4].iter().all(|e| e["standby"] == false));

    // The raw bytes are kept as sent: the escaped text, not a re-encoding; `data.text` is written
    // as the event was serialized at ingest (the store keeps the text once, in the body, and puts
    // it back on reading).
    let raw_text = std::str::from_utf8(&received[0].body)?;
    assert!(raw_text.contains(r"Hi \ud83d\ude00 \u00e4\u00f6\u00e5"));
    assert!(raw_text.contains(r#""text":"Hi 😀 äöå""#));
    Ok(())
}

#[tokio::test]
async fn rejects_wrong_missing_and_sha1_only_signatures_and_stores_nothing() -> TestResult {
    let app = TestApp::spawn().await?;
    let (_, receiver, _) = onboarded(&app).await?;
    let body = five_item_batch(1_747_231_892_100).to_bytes();

    let wrong = signature("not-the-app-secret", &body);
    let (status, answer) = app.post_webhook("/webhooks/meta", body.clone(), Some(&wrong)).await?;
    assert_eq!(status, 401);
    assert!(answer.contains("invalid_signature"));
    assert_eq!(app.post_webhook("/webhooks/meta", body.clone(), None).await?.0, 401);
    assert_eq!(
        app.post_webhook("/webhooks/meta", body.clone(), Some("sha256=nothex"))
            .await?
            .0,
        401
    );
    let sha1_only = app
        .client
        .post(app.url("/webhooks/meta"))
        .header("x-hub-signature", "sha1=0123456789abcdef0123456789abcdef01234567")
        .body(body.clone())
        .send()
        .await?;
    assert_eq!(sha1_only.status().as_u16(), 401);
    let per_app = format!("/webhooks/meta/{APP_ID}");
    assert_eq!(app.post_webhook(&per_app, body, Some(&wrong)).await?.0, 401);

    assert!(app.store.list_inbound(10).await?.is_empty(), "nothing stored");
    assert_eq!(app.deliver_due().await?, 0, "nothing to deliver");
    assert!(receiver.received().is_empty());
    Ok(())
}

#[tokio::test]
async fn rejects_a_body_signed_over_re_encoded_json() -> TestResult {
    let app = TestApp::spawn().await?;
    onboarded(&app).await?;
    let batch = MetaBody::page().messaging(PAGE_A, 1, vec![Kind::Message.item(PAGE_A, PSID, 1, "äöå", 1)]);
    let sent = batch.to_bytes();
    let re_encoded = serde_json::to_vec(&batch.to_value())?;
    assert!(String::from_utf8_lossy(&re_encoded).contains("äöå"));
    let (status, _) = app
        .post_webhook(
            "/webhooks/meta",
            sent.clone(),
            Some(&signature(APP_SECRET, &re_encoded)),
        )
        .await?;
    assert_eq!(status, 401);
    // The same bytes signed as Meta signs them pass.
    assert_eq!(
        app.post_webhook("/webhooks/meta", sent.clone(), Some(&signature(APP_SECRET, &sent)))
            .await?
            .0,
        200
    );
    Ok(())
}

#[tokio::test]
async fn routes_a_shared_app_post_to_each_tenant_only() -> TestResult {
    let app = TestApp::spawn().await?;
    let shared_secret = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
    let shared = app.create_app(None, APP_ID, shared_secret).await?;
    assert_eq!(shared["shared"], true);
    let acme = app.create_tenant("Acme").await?;
    let globex = app.create_tenant("Globex").await?;
    app.create_page(&acme, PAGE_A, APP_ID).await?;
    app.create_page(&globex, PAGE_B, APP_ID).await?;
    let acme_hook = Receiver::start().await?;
    let globex_hook = Receiver::start().await?;
    let (_, acme_secret) = app.create_endpoint(&acme, json!({"url": acme_hook.url()})).await?;
    let (_, globex_secret) = app.create_endpoint(&globex, json!({"url": globex_hook.url()})).await?;

    let body = MetaBody::page()
        .messaging(PAGE_A, 1, vec![Kind::Message.item(PAGE_A, PSID, 1, "for acme", 1)])
        .messaging(
            PAGE_B,
            1,
            vec![
                Kind::Message.item(PAGE_B, PSID, 2, "for globex", 2),
                Kind::Read.item(PAGE_B, PSID, 3, "", 3),
            ],
        )
        .to_bytes();
    assert_eq!(app.send_signed(shared_secret, body).await?.0, 200);
    assert_eq!(app.deliver_due().await?, 3);

    let to_acme = acme_hook.wait_for(1, WAIT).await;
    let to_globex = globex_hook.wait_for(2, WAIT).await;
    assert_eq!(to_acme.len(), 1);
    assert_eq!(to_globex.len(), 2);
    assert_eq!(to_acme[0].json()["tenant_id"], acme.id.as_str());
    assert_eq!(to_acme[0].json()["data"]["text"], "for acme");
    assert!(to_globex
        .iter()
        .all(|r| r.json()["tenant_id"] == globex.id.as_str() && r.json()["page_id"] == PAGE_B));
    to_acme[0].verify(&acme_secret)?;
    for r in &to_globex {
        r.verify(&globex_secret)?;
        assert!(
            r.verify(&acme_secret).is_err(),
            "each tenant's secret signs only its own"
        );
    }

    // Neither tenant sees the other's events through the API.
    let (_, acme_events) = app.api("GET", "/v1/events", &acme.api_key, None).await?;
    let (_, globex_events) = app.api("GET", "/v1/events", &globex.api_key, None).await?;
    assert_eq!(acme_events["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(globex_events["data"].as_array().map(Vec::len), Some(2));
    Ok(())
}

/// `body` with `"id":"<first>",` put before its first `"id":"<last>"`: an entry that names two
/// Pages, which a reader keeping the first value routes to one and a reader keeping the last to the
/// other. `spelling` is how the first of the two keys is written (`id`, or escaped as `\u0069d`).
fn with_first_id(
    body: &[u8],
    spelling: &str,
    first: &str,
    last: &str,
) -> Result<Vec<u8>, Box<dyn std::error::Error + Send + Sync>> {
    let text = std::str::from_utf8(body)?;
    let honest = format!(r#"{{"id":"{last}""#);
    let at = text.find(&honest).ok_or("the body has no entry id")?;
    let forged = format!(r#"{}{{"{spelling}":"{first}","id":"{last}""#, &text[..at]);
    Ok(format!("{forged}{}", &text[at + honest.len()..]).into_bytes())
}

/// Parsers disagree on a repeated key (first wins, last wins): a signed body whose entry names
/// another tenant's Page first and the sender's own last is refused whole, on both routes, and
/// nothing of it reaches either tenant.
#[tokio::test]
async fn refuses_a_body_with_duplicate_keys() -> TestResult {
    let app = TestApp::spawn().await?;
    let shared_secret = "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a";
    app.create_app(None, APP_ID, shared_secret).await?;
    let acme = app.create_tenant("Acme").await?;
    let globex = app.create_tenant("Globex").await?;
    app.create_page(&acme, PAGE_A, APP_ID).await?;
    app.create_page(&globex, PAGE_B, APP_ID).await?;
    let acme_hook = Receiver::start().await?;
    let globex_hook = Receiver::start().await?;
    app.create_endpoint(&acme, json!({"url": acme_hook.url()})).await?;
    app.create_endpoint(&globex, json!({"url": globex_hook.url()})).await?;

    // Acme's own message, in an entry that names Globex's Page first and Acme's last.
    let honest = MetaBody::page()
        .messaging(PAGE_A, 1, vec![Kind::Message.item(PAGE_A, PSID, 1, "for whom?", 1)])
        .to_bytes();
    let forged = with_first_id(&honest, "id", PAGE_B, PAGE_A)?;
    let response = app
        .client
        .post(app.url("/webhooks/meta"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature(shared_secret, &forged))
        .body(forged.clone())
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 400);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: Value = response.json().await?;
    assert_eq!(problem["code"], "duplicate_key");
    assert_eq!(problem["status"], 400);
    assert_eq!(
        problem["detail"],
        r#"the body repeats the key "id" in the object at $.entry[0]"#
    );

    // The same with the key's second spelling escaped, and with the app named in the URL (the
    // body verified before it is parsed); and a repeat deep inside an item.
    let escaped = with_first_id(&honest, r"\u0069d", PAGE_B, PAGE_A)?;
    let per_app = format!("/webhooks/meta/{APP_ID}");
    let in_an_item =
        String::from_utf8(honest.clone())?.replacen(r#""sender":{"#, &format!(r#""sender":{{"id":"{PSID}","#), 1);
    for (path, body) in [
        ("/webhooks/meta", escaped.clone()),
        (per_app.as_str(), forged),
        (per_app.as_str(), escaped),
        ("/webhooks/meta", in_an_item.into_bytes()),
    ] {
        let (status, answer) = app
            .post_webhook(path, body.clone(), Some(&signature(shared_secret, &body)))
            .await?;
        let problem: Value = serde_json::from_str(&answer)?;
        assert_eq!(
            (status, problem["code"].as_str()),
            (400, Some("duplicate_key")),
            "{path}: {answer}"
        );
    }

    // Nothing was stored, for either tenant.
    assert!(app.store.list_inbound(10).await?.is_empty(), "nothing stored");
    assert_eq!(app.deliver_due().await?, 0, "nothing to deliver");
    for tenant in [&acme, &globex] {
        let (_, events) = app.api("GET", "/v1/events", &tenant.api_key, None).await?;
        assert_eq!(events["data"], json!([]), "{}", tenant.id);
    }
    assert!(acme_hook.received().is_empty() && globex_hook.received().is_empty());

    // The honest body, the same but for the repeat, is taken in, and reaches Acme only.
    assert_eq!(app.send_signed(shared_secret, honest).await?.0, 200);
    let (_, events) = app.api("GET", "/v1/events", &acme.api_key, None).await?;
    assert_eq!(events["data"].as_array().map(Vec::len), Some(1));
    let (_, events) = app.api("GET", "/v1/events", &globex.api_key, None).await?;
    assert_eq!(events["data"], json!([]));
    Ok(())
}

#[tokio::test]
async fn delivers_a_redelivered_body_only_once() -> TestResult {
    let app = TestApp::spawn().await?;
    let (tenant, receiver, _) = onboarded(&app).await?;
    let body = five_item_batch(1_747_231_892_100).to_bytes();
    assert_eq!(app.send_signed(APP_SECRET, body.clone()).await?.0, 200);
    assert_eq!(app.send_signed(APP_SECRET, body).await?.0, 200);
    assert_eq!(app.deliver_due().await?, 5);
    assert_eq!(receiver.wait_for(5, WAIT).await.len(), 5);
    let (_, events) = app.api("GET", "/v1/events", &tenant.api_key, None).await?;
    assert_eq!(events["data"].as_array().map(Vec::len), Some(5));
    // Both POSTs are kept as received.
    assert_eq!(app.store.list_inbound(10).await?.len(), 2);
    Ok(())
}

/// The `n`th of a stream of signed one-item webhooks for Page A, each a new message.
fn nth_webhook(client: &reqwest::Client, app: &TestApp, n: u16) -> reqwest::RequestBuilder {
    let at = 1_747_231_892_100 + i64::from(n);
    let item = Kind::Message.item(PAGE_A, PSID, at, "hello", u64::from(n));
    let body = MetaBody::page().messaging(PAGE_A, at, vec![item]).to_bytes();
    client
        .post(app.url("/webhooks/meta"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", signature(APP_SECRET, &body))
        .body(body)
}

/// Sends 200 one-item webhooks at once; checks that every refusal is a 503 `overloaded` with
/// `Retry-After`, that some were refused, and that exactly the acknowledged ones were stored.
async fn burst_is_shed_and_nothing_acknowledged_is_lost(ingest: pagewire_server::IngestConfig) -> TestResult {
    let app = TestApp::builder().ingest(ingest).spawn().await?;
    let (tenant, _receiver, _) = onboarded(&app).await?;
    let client = reqwest::Client::new();
    let mut sends = tokio::task::JoinSet::new();
    for n in 0..200_u16 {
        let request = nth_webhook(&client, &app, n);
        sends.spawn(async move {
            let response = request.send().await?;
            let retry_after = response.headers().get("retry-after").cloned();
            let status = response.status().as_u16();
            let problem: Value = if status == 200 {
                Value::Null
            } else {
                response.json().await?
            };
            Ok::<_, reqwest::Error>((status, retry_after, problem))
        });
    }
    let mut acknowledged = 0;
    let mut shed = 0;
    while let Some(sent) = sends.join_next().await {
        let (status, retry_after, problem) = sent??;
        match status {
            200 => acknowledged += 1,
            503 => {
                shed += 1;
                assert_eq!(problem["code"], "overloaded");
                assert_eq!(retry_after.as_ref().and_then(|v| v.to_str().ok()), Some("1"));
            }
            other => panic!("unexpected status {other}: {problem}"),
        }
    }
    assert!(shed > 0, "200 concurrent webhooks must overflow the bound");
    assert!(acknowledged > 0);
    // Every acknowledged webhook was stored; none that was shed was.
    let (_, events) = app.api("GET", "/v1/events?limit=200", &tenant.api_key, None).await?;
    assert_eq!(events["data"].as_array().map(Vec::len), Some(acknowledged));
    Ok(())
}

#[tokio::test]
async fn sheds_load_with_503_when_the_ingest_queue_is_full_and_keeps_every_acknowledged_event() -> TestResult {
    // A queue of one and one request per commit.
    burst_is_shed_and_nothing_acknowledged_is_lost(pagewire_server::IngestConfig {
        queue: 1,
        max_requests: 1,
        max_events: 1,
        ..pagewire_server::IngestConfig::default()
    })
    .await
}

#[tokio::test]
async fn sheds_load_with_503_beyond_the_requests_in_flight_and_keeps_every_acknowledged_event() -> TestResult {
    // Two requests in flight at most, each waiting for its own commit.
    burst_is_shed_and_nothing_acknowledged_is_lost(pagewire_server::IngestConfig {
        max_in_flight: 2,
        max_requests: 1,
        ..pagewire_server::IngestConfig::default()
    })
    .await
}

#[tokio::test]
async fn several_writers_share_the_queue_and_keep_every_acknowledged_event() -> TestResult {
    // Three writers taking batches of at most two from one queue, lingering under load; eight
    // requests in flight at most.
    burst_is_shed_and_nothing_acknowledged_is_lost(pagewire_server::IngestConfig {
        writers: 3,
        max_requests: 2,
        max_in_flight: 8,
        linger: std::time::Duration::from_millis(2),
        ..pagewire_server::IngestConfig::default()
    })
    .await
}

/// Under load a commit lingers for company, and stops waiting once it holds `linger_requests`:
/// a lone webhook waits out the linger (here an hour), and the next one's arrival lets both be
/// committed and acknowledged at once.
#[tokio::test]
async fn a_lingering_commit_stops_waiting_once_it_holds_linger_requests() -> TestResult {
    let app = TestApp::builder()
        .ingest(pagewire_server::IngestConfig {
            linger: Duration::from_secs(3600),
            linger_requests: 2,
            ..pagewire_server::IngestConfig::default()
        })
        .spawn()
        .await?;
    let (tenant, _receiver, _) = onboarded(&app).await?;
    let client = reqwest::Client::new();
    let send = |n: u16| {
        let request = nth_webhook(&client, &app, n);
        tokio::spawn(async move { request.send().await.map(|r| r.status().as_u16()) })
    };
    // Idle: written at once.
    assert_eq!(tokio::time::timeout(WAIT, send(0)).await???, 200);
    // The previous commit has just ended: a lone webhook lingers for company.
    let mut lone = std::pin::pin!(send(1));
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut lone)
            .await
            .is_err(),
        "a lone webhook under load was committed without lingering"
    );
    // Company: the batch holds two and both are acknowledged.
    let company = send(2);
    assert_eq!(tokio::time::timeout(WAIT, lone).await???, 200);
    assert_eq!(tokio::time::timeout(WAIT, company).await???, 200);
    let (_, events) = app.api("GET", "/v1/events?limit=10", &tenant.api_key, None).await?;
    assert_eq!(events["data"].as_array().map(Vec::len), Some(3));
    Ok(())
}

/// One `GET /healthz` on a raw keep-alive connection: the answer's head, lowercased.
async fn ask_health(conn: &mut tokio::net::TcpStream) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: pagewire\r\n\r\n")
        .await?;
    let mut answer = [0_u8; 512];
    let read = tokio::time::timeout(WAIT, conn.read(&mut answer)).await??;
    Ok(String::from_utf8_lossy(&answer[..read]).to_lowercase())
}

/// At its bound of open connections the node accepts no more until one closes: a flood of
/// connections waits in the kernel's backlog instead of taking the node's memory.
#[tokio::test]
async fn holds_at_most_max_connections_open() -> TestResult {
    let app = TestApp::builder().max_connections(2).spawn().await?;
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    // Two connections the node accepted: each had a request answered, and stays open.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut conn = tokio::net::TcpStream::connect(&addr).await?;
        let answer = ask_health(&mut conn).await?;
        assert!(answer.starts_with("http/1.1 200"), "{answer}");
        held.push(conn);
    }
    // A third is connected by the kernel but not served while they stay open.
    let third = tokio::spawn(reqwest::Client::new().get(format!("{}/healthz", app.base_url)).send());
    let mut third = std::pin::pin!(third);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut third)
            .await
            .is_err(),
        "a connection beyond the bound was served"
    );
    // One closes: the third is served.
    drop(held.pop());
    let answer = tokio::time::timeout(WAIT, third).await???;
    assert_eq!(answer.status(), 200);
    Ok(())
}

/// While a connection waits for room, the answers on the open ones close their connections: a
/// client that keeps its connections busy does not keep a waiting one out until it stops.
#[tokio::test]
async fn a_waiting_connection_has_busy_ones_close_after_their_answer() -> TestResult {
    // The idle timeout is far beyond the test's deadline: only the answers can let the third in.
    let app = TestApp::builder()
        .max_connections(2)
        .idle_timeout(Duration::from_secs(600))
        .spawn()
        .await?;
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    let mut busy = Vec::new();
    for _ in 0..2 {
        busy.push(tokio::net::TcpStream::connect(&addr).await?);
    }
    for conn in &mut busy {
        let answer = ask_health(conn).await?;
        assert!(answer.starts_with("http/1.1 200"), "{answer}");
        assert!(!answer.contains("connection: close"), "nobody waits yet: {answer}");
    }
    let third = tokio::spawn(reqwest::Client::new().get(format!("{}/healthz", app.base_url)).send());
    // The first client keeps asking on its connection until an answer closes it.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let answer = ask_health(&mut busy[0]).await?;
        assert!(answer.starts_with("http/1.1 200"), "{answer}");
        if answer.contains("connection: close") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no answer closed its connection"
        );
    }
    let answer = tokio::time::timeout(WAIT, third).await???;
    assert_eq!(answer.status(), 200);
    Ok(())
}

/// A connection that waits for a request longer than the idle timeout is closed, and no longer
/// holds the bound: another client is served.
#[tokio::test]
async fn closes_idle_connections_so_that_they_do_not_hold_the_bound() -> TestResult {
    use tokio::io::AsyncReadExt as _;
    let app = TestApp::builder()
        .max_connections(1)
        .idle_timeout(Duration::from_millis(200))
        .spawn()
        .await?;
    let addr = app.base_url.trim_start_matches("http://").to_owned();
    let mut idle = tokio::net::TcpStream::connect(&addr).await?;
    assert!(ask_health(&mut idle).await?.starts_with("http/1.1 200"));
    // Kept open and silent: the node closes it.
    let mut rest = [0_u8; 512];
    assert_eq!(tokio::time::timeout(WAIT, idle.read(&mut rest)).await??, 0, "closed");
    let answer = tokio::time::timeout(
        WAIT,
        reqwest::Client::new().get(format!("{}/healthz", app.base_url)).send(),
    )
    .await??;
    assert_eq!(answer.status(), 200);
    Ok(())
}

#[tokio::test]
async fn retries_after_a_500_and_records_both_attempts() -> TestResult {
    let app = TestApp::spawn().await?;
    let (tenant, receiver, secret) = onboarded(&app).await?;
    receiver.respond_with([500]);
    let body = MetaBody::page()
        .messaging(PAGE_A, 1, vec![Kind::Postback.item(PAGE_A, PSID, 1, "TRACK_ORDER", 1)])
        .to_bytes();
    assert_eq!(app.send_signed(APP_SECRET, body).await?.0, 200);

    assert_eq!(app.deliver_due().await?, 1);
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(app.deliver_due().await?, 0, "the retry is not due yet");

    app.clock.advance(Duration::from_secs(60));
    assert_eq!(app.deliver_due().await?, 1);
    let received = receiver.wait_for(2, WAIT).await;
    assert_eq!(received.iter().map(|r| r.answered).collect::<Vec<_>>(), [500, 200]);
    assert_eq!(
        received[0].header("webhook-id"),
        received[1].header("webhook-id"),
        "same id on retry"
    );
    received[1].verify_signature_only(&secret)?;

    let (_, deliveries) = app.api("GET", "/v1/deliveries", &tenant.api_key, None).await?;
    let delivery = &deliveries["data"][0];
    assert_eq!(delivery["status"], "delivered");
    assert_eq!(delivery["attempts"], 2);
    let id = delivery["id"].as_str().ok_or("no delivery id")?;
    let (_, attempts) = app
        .api("GET", &format!("/v1/deliveries/{id}/attempts"), &tenant.api_key, None)
        .await?;
    let attempts = attempts["data"].as_array().ok_or("no attempts")?;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0]["status_code"], 500);
    assert_eq!(attempts[0]["outcome"], "rejected");
    assert_eq!(attempts[0]["response_excerpt"], "receiver answered 500", "{attempts:?}");
    assert_eq!(attempts[1]["status_code"], 200);
    assert_eq!(attempts[1]["outcome"], "delivered");
    assert!(attempts.iter().all(|a| a["duration_ms"].as_i64().is_some()));
    Ok(())
}

#[tokio::test]
async fn answers_the_handshake_with_the_right_token_only() -> TestResult {
    let app = TestApp::spawn().await?;
    onboarded(&app).await?;
    let handshake = |path: &str, token: &str| {
        app.client
            .get(app.url(path))
            .query(&[
                ("hub.mode", "subscribe"),
                ("hub.verify_token", token),
                ("hub.challenge", "1158201444"),
            ])
            .send()
    };
    let right = format!("verify-token-for-{APP_ID}");
    let ok = handshake("/webhooks/meta", &right).await?;
    assert_eq!(ok.status().as_u16(), 200);
    assert!(ok.headers()["content-type"].to_str()?.starts_with("text/plain"));
    assert_eq!(ok.text().await?, "1158201444");
    let per_app = handshake(&format!("/webhooks/meta/{APP_ID}"), &right).await?;
    assert_eq!(per_app.text().await?, "1158201444");

    assert_eq!(handshake("/webhooks/meta", "wrong").await?.status().as_u16(), 403);
    assert_eq!(handshake("/webhooks/meta/999", &right).await?.status().as_u16(), 403);
    let no_query = app.client.get(app.url("/webhooks/meta")).send().await?;
    assert_eq!(no_query.status().as_u16(), 403);
    Ok(())
}

#[tokio::test]
async fn acknowledges_unknown_pages_and_keeps_verified_ones_for_the_operator() -> TestResult {
    let app = TestApp::spawn().await?;
    let (_, receiver, _) = onboarded(&app).await?;
    let stranger = "999888777666555";

    // Only unknown Pages: cannot be verified, acknowledged, nothing stored.
    let unknown = MetaBody::page()
        .messaging(stranger, 1, vec![Kind::Message.item(stranger, PSID, 1, "hi", 1)])
        .to_bytes();
    assert_eq!(app.send_signed("whatever", unknown).await?.0, 200);
    assert!(app.store.list_inbound(10).await?.is_empty());

    // A verified POST with a known and an unknown Page: the known one is delivered, the other kept.
    let mixed = MetaBody::page()
        .messaging(PAGE_A, 1, vec![Kind::Message.item(PAGE_A, PSID, 1, "known", 1)])
        .messaging(stranger, 1, vec![Kind::Message.item(stranger, PSID, 2, "unknown", 2)])
        .to_bytes();
    assert_eq!(app.send_signed(APP_SECRET, mixed).await?.0, 200);
    assert_eq!(app.deliver_due().await?, 1);
    assert_eq!(receiver.wait_for(1, WAIT).await[0].json()["data"]["text"], "known");
    let inbound = app.store.list_inbound(10).await?;
    assert_eq!(inbound.len(), 1);
    let unroutable: Value = serde_json::from_str(inbound[0].unroutable.as_deref().ok_or("no unroutable record")?)?;
    assert_eq!(unroutable, json!([{"entry": 1, "page_id": stranger}]));
    Ok(())
}

#[tokio::test]
async fn answers_400_for_signed_bodies_that_are_not_json_and_413_beyond_4_mib() -> TestResult {
    let app = TestApp::spawn().await?;
    onboarded(&app).await?;
    let per_app = format!("/webhooks/meta/{APP_ID}");
    let garbage = b"{\"object\": \"page\", \"entry\": [".to_vec();
    let (status, answer) = app
        .post_webhook(&per_app, garbage.clone(), Some(&signature(APP_SECRET, &garbage)))
        .await?;
    assert_eq!(status, 400);
    assert!(answer.contains("invalid_json"));
    let (status, _) = app
        .post_webhook(
            "/webhooks/meta",
            garbage.clone(),
            Some(&signature(APP_SECRET, &garbage)),
        )
        .await?;
    assert_eq!(status, 400);

    let mut huge = meta_json(&json!({"object": "page", "entry": []}));
    huge.extend(std::iter::repeat_n(b' ', 4 * 1024 * 1024));
    let (status, _) = app
        .post_webhook(&per_app, huge.clone(), Some(&signature(APP_SECRET, &huge)))
        .await?;
    assert_eq!(status, 413);
    assert!(app.store.list_inbound(10).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn keeps_tenants_apart_and_answers_problem_json() -> TestResult {
    let app = TestApp::spawn().await?;
    let (acme, _, _) = onboarded(&app).await?;
    let globex = app.create_tenant("Globex").await?;

    // Another tenant's app cannot carry your Page, and the Page stays with its first owner.
    let (status, problem) = app
        .api(
            "POST",
            "/v1/pages",
            &globex.api_key,
            Some(json!({"page_id": "301", "app_id": APP_ID})),
        )
        .await?;
    assert_eq!((status, problem["code"].as_str()), (404, Some("not_found")));
    app.create_app(Some(&globex), "2222", "globex-secret").await?;
    let (status, problem) = app
        .api(
            "POST",
            "/v1/pages",
            &globex.api_key,
            Some(json!({"page_id": PAGE_A, "app_id": "2222"})),
        )
        .await?;
    assert_eq!((status, problem["code"].as_str()), (409, Some("page_taken")));

    let (_, pages) = app.api("GET", "/v1/pages", &globex.api_key, None).await?;
    assert_eq!(pages["data"], json!([]));
    let (_, endpoints) = app.api("GET", "/v1/endpoints", &globex.api_key, None).await?;
    assert_eq!(endpoints["data"], json!([]));
    let (_, endpoints) = app.api("GET", "/v1/endpoints", &acme.api_key, None).await?;
    assert_eq!(endpoints["data"].as_array().map(Vec::len), Some(1));
    assert!(
        endpoints["data"][0].get("secret").is_none(),
        "the secret is shown only at creation"
    );

    // Roles and credentials.
    let (status, problem) = app
        .api("POST", "/v1/tenants", &acme.api_key, Some(json!({"name": "x"})))
        .await?;
    assert_eq!((status, problem["code"].as_str()), (403, Some("forbidden")));
    let (status, problem) = app.api("GET", "/v1/pages", "pw_not_a_key", None).await?;
    assert_eq!((status, problem["code"].as_str()), (401, Some("unauthorized")));
    let response = app.client.get(app.url("/v1/tenants")).send().await?;
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(response.headers()["content-type"], "application/problem+json");

    // Validation.
    let (status, problem) = app
        .api("POST", "/v1/endpoints", &acme.api_key, Some(json!({"url": "ftp://x"})))
        .await?;
    assert_eq!((status, problem["code"].as_str()), (422, Some("validation_failed")));
    let (status, problem) = app
        .api(
            "POST",
            "/v1/endpoints",
            &acme.api_key,
            Some(json!({"url": "https://example.com", "event_types": ["Messenger"]})),
        )
        .await?;
    assert_eq!((status, problem["code"].as_str()), (422, Some("validation_failed")));
    let (status, problem) = app
        .api(
            "POST",
            "/v1/tenants",
            pagewire_testkit::app::ADMIN_TOKEN,
            Some(json!({"nam": "x"})),
        )
        .await?;
    assert_eq!((status, problem["code"].as_str()), (422, Some("validation_failed")));
    Ok(())
}

#[tokio::test]
async fn refuses_private_endpoint_urls_unless_allowed() -> TestResult {
    let app = TestApp::builder().refuse_private_endpoints().spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    for url in [
        "http://127.0.0.1:9000/hook",
        "http://localhost/hook",
        "http://169.254.169.254/",
        "http://10.0.0.8/",
    ] {
        let (status, problem) = app
            .api("POST", "/v1/endpoints", &tenant.api_key, Some(json!({"url": url})))
            .await?;
        assert_eq!(status, 422, "{url}");
        assert!(problem["detail"]
            .as_str()
            .is_some_and(|d| d.contains("publicly reachable")));
    }
    let (status, _) = app
        .api(
            "POST",
            "/v1/endpoints",
            &tenant.api_key,
            Some(json!({"url": "https://hooks.example.com/meta"})),
        )
        .await?;
    assert_eq!(status, 201);
    Ok(())
}

#[tokio::test]
async fn keeps_secrets_sealed_and_api_keys_hashed_at_rest() -> TestResult {
    let app = TestApp::spawn().await?;
    let (tenant, _, endpoint_secret) = onboarded(&app).await?;
    // A rotated app secret (the old one is kept for the overlap), a second endpoint secret, a key
    // made with an Idempotency-Key (its answer is kept), and a token (its signing key is kept).
    let rotated_secret = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let (status, _) = app
        .api(
            "POST",
            &format!("/v1/apps/{APP_ID}/rotate-secret"),
            &tenant.api_key,
            Some(json!({"app_secret": rotated_secret})),
        )
        .await?;
    assert_eq!(status, 200);
    let kept_key = app
        .client
        .post(app.url("/v1/api-keys"))
        .bearer_auth(&tenant.api_key)
        .header("idempotency-key", "at-rest")
        .send()
        .await?
        .json::<Value>()
        .await?["key"]
        .as_str()
        .ok_or("no key")?
        .to_owned();
    let (status, _) = app.api("POST", "/v1/auth/token", &tenant.api_key, None).await?;
    assert_eq!(status, 201);
    let dir = app.data_dir().to_owned();
    let _temp = app.shutdown().await?;
    let mut bytes = std::fs::read(dir.join("pagewire.db"))?;
    if let Ok(wal) = std::fs::read(dir.join("pagewire.db-wal")) {
        bytes.extend(wal);
    }
    let haystack = String::from_utf8_lossy(&bytes);
    for secret in [
        APP_SECRET,
        rotated_secret,
        &format!("EAAG-test-page-token-{PAGE_A}"),
        &endpoint_secret,
        &tenant.api_key,
        &kept_key,
        &format!("verify-token-for-{APP_ID}"),
    ] {
        assert!(!haystack.contains(secret), "{secret} is stored in the clear");
    }
    Ok(())
}

#[tokio::test]
async fn recognizes_redeliveries_for_the_dedup_window_only() -> TestResult {
    let app = TestApp::spawn().await?;
    let (_, receiver, _) = onboarded(&app).await?;
    // The window counts from the item's own time, which Meta keeps on every retry.
    let sent = app.clock.now_ms();
    let body = MetaBody::page()
        .messaging(PAGE_A, sent, vec![Kind::Message.item(PAGE_A, PSID, sent, "hello", 1)])
        .to_bytes();
    let day = Duration::from_secs(24 * 3600);

    assert_eq!(app.send_signed(APP_SECRET, body.clone()).await?.0, 200);
    assert_eq!(app.deliver_due().await?, 1);

    // Meta retries WhatsApp for up to seven days: within the window a redelivery is dropped.
    app.clock.advance(day * 6);
    assert_eq!(app.run_maintenance().await?.dedup_keys_released, 0);
    assert_eq!(app.send_signed(APP_SECRET, body.clone()).await?.0, 200);
    assert_eq!(app.deliver_due().await?, 0);

    // After it, the key is released and the same item is a new event.
    app.clock.advance(day * 2);
    assert_eq!(app.run_maintenance().await?.dedup_keys_released, 1);
    assert_eq!(app.send_signed(APP_SECRET, body).await?.0, 200);
    assert_eq!(app.deliver_due().await?, 1);
    assert_eq!(receiver.wait_for(2, WAIT).await.len(), 2);
    Ok(())
}

const WABA: &str = "102290129340398";
const PHONE: &str = "106540352242922";

fn whatsapp_body() -> Vec<u8> {
    let change = json!({
        "field": "messages",
        "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE},
            "contacts": [{"profile": {"name": "Märta Öberg"}, "wa_id": "16505551234"}],
            "messages": [
                {"from": "16505551234", "id": "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTdBQ0Y2QzQ5RkQ2MDNEMDY1QQA=",
                 "timestamp": "1749416383", "type": "text", "text": {"body": "Hej! Är ni öppna idag?"}},
                {"from": "16505551234", "id": "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTdBQ0Y2QzQ5RkQ2MDNEMDY1QgA=",
                 "timestamp": "1749416390", "type": "interactive",
                 "interactive": {"type": "button_reply", "button_reply": {"id": "OPENING_HOURS", "title": "Öppettider"}}}
            ],
            "statuses": [
                {"id": "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI0QjM2RjQ4NjE3QzU3MjYyNjkA", "status": "delivered",
                 "timestamp": "1749416400", "recipient_id": "16505551234"}
            ]
        }
    });
    MetaBody::object("whatsapp_business_account")
        .entry(WABA, 1_749_416_400, "changes", vec![change])
        .to_bytes()
}

#[tokio::test]
async fn delivers_whatsapp_messages_and_statuses_routed_by_the_business_account() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    app.create_app(Some(&tenant), APP_ID, APP_SECRET).await?;
    let page = json!({"page_id": WABA, "app_id": APP_ID, "platform": "whatsapp", "phone_number_ids": [PHONE]});
    let (status, account) = app.api("POST", "/v1/pages", &tenant.api_key, Some(page)).await?;
    assert_eq!(status, 201, "{account}");
    assert_eq!(account["phone_number_ids"], json!([PHONE]));
    // Onboarded without a token, the account is the tenant's once the operator approves it.
    assert_eq!(account["receives_events"], false);
    app.approve_page(&tenant, WABA).await?;
    let by_phone = Receiver::start().await?;
    let other_phone = Receiver::start().await?;
    app.create_endpoint(&tenant, json!({"url": by_phone.url(), "page_ids": [PHONE]}))
        .await?;
    app.create_endpoint(&tenant, json!({"url": other_phone.url(), "page_ids": ["999"]}))
        .await?;

    assert_eq!(app.send_signed(APP_SECRET, whatsapp_body()).await?.0, 200);
    assert_eq!(app.deliver_due().await?, 3);
    let events: Vec<Value> = by_phone.wait_for(3, WAIT).await.iter().map(|r| r.json()).collect();
    let types: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(types, ["whatsapp.message", "whatsapp.button_reply", "whatsapp.status"]);
    assert!(events
        .iter()
        .all(|e| e["page_id"] == PHONE && e["platform"] == "whatsapp"));
    assert_eq!(events[0]["data"]["text"], "Hej! Är ni öppna idag?");
    assert_eq!(events[0]["data"]["profile_name"], "Märta Öberg");
    assert_eq!(events[1]["data"]["payload"], "OPENING_HOURS");
    assert_eq!(events[2]["data"]["status"], "delivered");
    assert_eq!(events[2]["source"]["nested"], json!({"array": "statuses", "index": 0}));
    assert!(other_phone.received().is_empty());

    // The same statuses and messages again (Meta retries WhatsApp for days): nothing new.
    assert_eq!(app.send_signed(APP_SECRET, whatsapp_body()).await?.0, 200);
    assert_eq!(app.deliver_due().await?, 0);
    Ok(())
}

#[tokio::test]
async fn refuses_phone_numbers_on_accounts_other_than_whatsapp() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    app.create_app(Some(&tenant), APP_ID, APP_SECRET).await?;
    let page = json!({"page_id": PAGE_A, "app_id": APP_ID, "phone_number_ids": [PHONE]});
    let (status, problem) = app.api("POST", "/v1/pages", &tenant.api_key, Some(page)).await?;
    assert_eq!((status, problem["code"].as_str()), (422, Some("validation_failed")));
    Ok(())
}

#[tokio::test]
async fn delivers_instagram_messages_of_an_onboarded_account() -> TestResult {
    let app = TestApp::spawn().await?;
    let tenant = app.create_tenant("Acme").await?;
    app.create_app(Some(&tenant), APP_ID, APP_SECRET).await?;
    let ig_account = "17841400008460056";
    let page = json!({"page_id": ig_account, "app_id": APP_ID, "platform": "instagram"});
    assert_eq!(app.api("POST", "/v1/pages", &tenant.api_key, Some(page)).await?.0, 201);
    app.approve_page(&tenant, ig_account).await?;
    let receiver = Receiver::start().await?;
    app.create_endpoint(&tenant, json!({"url": receiver.url(), "event_types": ["instagram.*"]}))
        .await?;

    let item = json!({
        "sender": {"id": "1254459154682919"},
        "recipient": {"id": ig_account},
        "timestamp": 1_749_416_383_000_i64,
        "message": {"mid": "aWdfZAG1faXRlbToxOklHTWVzc2FnZAUlEOjE3ODQxNDAwMDA4NDYwMDU2", "text": "Onko tämä vielä myynnissä?"}
    });
    let body = MetaBody::object("instagram")
        .messaging(ig_account, 1_749_416_383_000, vec![item])
        .to_bytes();
    assert_eq!(app.send_signed(APP_SECRET, body).await?.0, 200);
    assert_eq!(app.deliver_due().await?, 1);
    let event = receiver.wait_for(1, WAIT).await[0].json();
    assert_eq!(event["type"], "instagram.message");
    assert_eq!(event["platform"], "instagram");
    assert_eq!(event["data"]["text"], "Onko tämä vielä myynnissä?");
    Ok(())
}

#[tokio::test]
async fn runs_the_whole_retry_schedule_in_milliseconds_then_gives_up() -> TestResult {
    let app = TestApp::spawn().await?;
    let (tenant, receiver, _) = onboarded(&app).await?;
    let policy = pagewire_core::RetryPolicy::default();
    let attempts = usize::try_from(policy.max_attempts())?;
    receiver.respond_with(std::iter::repeat_n(503, attempts));
    let body = MetaBody::page()
        .messaging(PAGE_A, 1, vec![Kind::Postback.item(PAGE_A, PSID, 1, "TRACK_ORDER", 1)])
        .to_bytes();
    assert_eq!(app.send_signed(APP_SECRET, body).await?.0, 200);

    let tenant_id: pagewire_core::TenantId = tenant.id.parse()?;
    let mut sent_at = Vec::new();
    loop {
        assert_eq!(app.deliver_due().await?, 1);
        sent_at.push(app.clock.now_ms());
        let delivery = app.store.list_deliveries(&tenant_id, 1).await?.remove(0);
        if delivery.status != pagewire_store::DeliveryStatus::Pending {
            assert_eq!(delivery.status, pagewire_store::DeliveryStatus::Failed);
            assert_eq!(delivery.last_status, Some(503));
            break;
        }
        assert_eq!(app.deliver_due().await?, 0, "nothing is sent before its time");
        app.clock.set(delivery.next_attempt_at);
    }
    assert_eq!(sent_at.len(), attempts);
    assert_eq!(receiver.received().len(), attempts);
    for (i, (pair, base)) in sent_at.windows(2).zip(&policy.schedule).enumerate() {
        let wait = u128::try_from(pair[1] - pair[0])?;
        let base = base.as_millis();
        assert!(
            wait * 10 >= base * 8 && wait * 10 <= base * 12,
            "retry {i}: waited {wait} ms for {base} ms ± 20 %"
        );
    }
    let total: i64 = sent_at[attempts - 1] - sent_at[0];
    assert!(
        total > 2 * 86_400_000 && total < 4 * 86_400_000,
        "about three days: {total} ms"
    );
    Ok(())
}
