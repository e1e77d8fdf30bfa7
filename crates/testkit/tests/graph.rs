//! `pagewire-graph`'s client against the fake Graph API, over real HTTP on 127.0.0.1: tokens,
//! `appsecret_proof`, permissions, retries, Page subscriptions and the app webhook with its
//! verification handshake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use pagewire_graph::{AppSubscription, GraphClient, GraphConfig, GraphError, NewAppSubscription, SubscribedApp};
use pagewire_testkit::graph::{FakeGraph, RecordedRequest};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const APP_ID: &str = "1234567890";
const APP_SECRET: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f0";
const PAGE_ID: &str = "102030405060";
const PAGE_NAME: &str = "Café Ünïcode";
const PAGE_TOKEN: &str = "EAAPageTokenForCafe";
const BOTH: &[&str] = &["pages_messaging", "pages_manage_metadata"];

/// A fake with one app and one Page whose token has both permissions.
async fn fake_graph() -> FakeGraph {
    let fake = FakeGraph::start().await;
    fake.add_app(APP_ID, APP_SECRET);
    fake.add_page(PAGE_ID, PAGE_NAME, PAGE_TOKEN, APP_ID, BOTH);
    fake
}

/// A client for the fake, with retries a millisecond apart.
fn client(fake: &FakeGraph) -> Result<GraphClient, GraphError> {
    GraphClient::new(GraphConfig {
        base_url: fake.base_url(),
        retry_base_delay: Duration::from_millis(1),
        ..GraphConfig::default()
    })
}

fn strings(fields: &[&str]) -> Vec<String> {
    fields.iter().map(|f| (*f).to_owned()).collect()
}

#[tokio::test]
async fn looks_up_a_page_with_its_token_and_proof() -> TestResult {
    let fake = fake_graph().await;
    let page = client(&fake)?.page(PAGE_ID, PAGE_TOKEN, APP_SECRET).await?;
    assert_eq!(page.id, PAGE_ID);
    assert_eq!(page.name.as_deref(), Some(PAGE_NAME));

    let requests = fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, format!("/v21.0/{PAGE_ID}"));
    assert_eq!(request.params.get("fields").map(String::as_str), Some("id,name"));
    assert!(request.sent_access_token && request.sent_appsecret_proof);
    assert!(!request.params.contains_key("access_token"));
    assert_eq!(request.status, 200);
    Ok(())
}

#[tokio::test]
async fn unknown_and_revoked_tokens_are_invalid_tokens() -> TestResult {
    let fake = fake_graph().await;
    let graph = client(&fake)?;

    let unknown = graph.page(PAGE_ID, "EAANotAToken", APP_SECRET).await;
    assert!(
        matches!(
            unknown,
            Err(GraphError::InvalidToken {
                code: 190,
                subcode: None,
                ..
            })
        ),
        "{unknown:?}"
    );

    fake.revoke_token(PAGE_TOKEN);
    let revoked = graph
        .page(PAGE_ID, PAGE_TOKEN, APP_SECRET)
        .await
        .expect_err("a revoked token is refused");
    assert!(
        matches!(
            revoked,
            GraphError::InvalidToken {
                code: 190,
                subcode: Some(460),
                ..
            }
        ),
        "{revoked:?}"
    );
    assert_eq!(revoked.code(), "graph_invalid_token");
    assert!(revoked.fbtrace_id().is_some());
    assert!(!revoked.to_string().contains(PAGE_TOKEN), "{revoked}");

    // Client errors are never retried: one request each.
    assert_eq!(fake.requests().len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_wrong_app_secret_fails_the_appsecret_proof() -> TestResult {
    let fake = fake_graph().await;
    let error = client(&fake)?
        .page(PAGE_ID, PAGE_TOKEN, "not-the-app-secret")
        .await
        .expect_err("the proof is keyed by the wrong secret");
    match &error {
        GraphError::InvalidParameter { message, .. } => {
            assert_eq!(message, "Invalid appsecret_proof provided in the API argument");
        }
        other => panic!("expected InvalidParameter, got {other:?}"),
    }
    assert_eq!(error.code(), "graph_invalid_parameter");
    assert_eq!(fake.requests().len(), 1);
    Ok(())
}

#[tokio::test]
async fn an_unknown_page_is_an_invalid_parameter() -> TestResult {
    let fake = fake_graph().await;
    let error = client(&fake)?
        .page("999999", PAGE_TOKEN, APP_SECRET)
        .await
        .expect_err("no such Page");
    assert!(
        matches!(&error, GraphError::InvalidParameter { subcode: Some(33), message, .. }
            if message.contains("Object with ID '999999' does not exist")),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn subscribing_without_a_permission_is_permission_denied() -> TestResult {
    let fake = fake_graph().await;
    fake.add_page(
        "777",
        "No messaging",
        "EAAMetadataOnly",
        APP_ID,
        &["pages_manage_metadata"],
    );
    fake.add_page("888", "No metadata", "EAAMessagingOnly", APP_ID, &["pages_messaging"]);
    let graph = client(&fake)?;

    let error = graph
        .subscribe_page("777", "EAAMetadataOnly", APP_SECRET, &strings(&["messages"]))
        .await
        .expect_err("messages need pages_messaging");
    assert!(
        matches!(&error, GraphError::PermissionDenied { code: 200, message, .. }
            if message.contains("one of these permissions is needed: pages_messaging")),
        "{error:?}"
    );
    assert_eq!(error.code(), "graph_permission_denied");
    assert_eq!(fake.subscribed_fields("777", APP_ID), None);

    // Page fields outside messaging need only pages_manage_metadata.
    graph
        .subscribe_page("777", "EAAMetadataOnly", APP_SECRET, &strings(&["feed"]))
        .await?;
    assert_eq!(fake.subscribed_fields("777", APP_ID), Some(strings(&["feed"])));

    let error = graph
        .subscribe_page("888", "EAAMessagingOnly", APP_SECRET, &strings(&["messages"]))
        .await
        .expect_err("subscribing needs pages_manage_metadata");
    assert!(
        matches!(&error, GraphError::PermissionDenied { message, .. } if message.contains("pages_manage_metadata")),
        "{error:?}"
    );
    Ok(())
}

#[tokio::test]
async fn retries_a_short_rate_limit_and_succeeds() -> TestResult {
    let fake = fake_graph().await;
    fake.rate_limit_next(1);
    let page = client(&fake)?.page(PAGE_ID, PAGE_TOKEN, APP_SECRET).await?;
    assert_eq!(page.id, PAGE_ID);
    let codes: Vec<Option<i64>> = fake.requests().iter().map(|r| r.error_code).collect();
    assert_eq!(codes, [Some(4), None]);
    Ok(())
}

#[tokio::test]
async fn gives_up_on_a_lasting_rate_limit_after_the_retries() -> TestResult {
    let fake = fake_graph().await;
    fake.rate_limit_next(10);
    let error = client(&fake)?
        .page(PAGE_ID, PAGE_TOKEN, APP_SECRET)
        .await
        .expect_err("still rate limited");
    assert!(
        matches!(
            error,
            GraphError::RateLimited {
                code: Some(4),
                retry_after: None,
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.code(), "graph_rate_limited");
    // One try and the two retries of the default configuration.
    assert_eq!(fake.requests().len(), 3);
    Ok(())
}

#[tokio::test]
async fn retries_a_transient_failure_and_succeeds() -> TestResult {
    let fake = fake_graph().await;
    let graph = client(&fake)?;
    fake.fail_next(1);
    graph
        .subscribe_page(PAGE_ID, PAGE_TOKEN, APP_SECRET, &strings(&["messages"]))
        .await?;
    let statuses: Vec<u16> = fake.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 200]);
    assert_eq!(fake.subscribed_fields(PAGE_ID, APP_ID), Some(strings(&["messages"])));

    fake.fail_next(10);
    let error = graph
        .page(PAGE_ID, PAGE_TOKEN, APP_SECRET)
        .await
        .expect_err("Meta stays down");
    assert!(
        matches!(
            error,
            GraphError::Transient {
                status: 500,
                code: Some(2),
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.code(), "graph_unavailable");
    assert_eq!(fake.requests().len(), 2 + 3);
    Ok(())
}

#[tokio::test]
async fn subscribes_lists_and_unsubscribes_a_page() -> TestResult {
    let fake = fake_graph().await;
    let graph = client(&fake)?;
    let fields = strings(&["messages", "messaging_postbacks", "message_reads"]);

    graph.subscribe_page(PAGE_ID, PAGE_TOKEN, APP_SECRET, &fields).await?;
    assert_eq!(fake.subscribed_fields(PAGE_ID, APP_ID), Some(fields.clone()));
    let post: Vec<RecordedRequest> = fake.requests().into_iter().filter(|r| r.method == "POST").collect();
    assert_eq!(post.len(), 1);
    assert_eq!(post[0].path, format!("/v21.0/{PAGE_ID}/subscribed_apps"));
    assert_eq!(
        post[0].params.get("subscribed_fields").map(String::as_str),
        Some("messages,messaging_postbacks,message_reads")
    );

    let apps = graph.page_subscribed_apps(PAGE_ID, PAGE_TOKEN, APP_SECRET).await?;
    assert_eq!(
        apps,
        [SubscribedApp {
            id: APP_ID.to_owned(),
            name: Some(format!("App {APP_ID}")),
            subscribed_fields: fields,
        }]
    );

    graph.unsubscribe_page(PAGE_ID, PAGE_TOKEN, APP_SECRET).await?;
    assert_eq!(fake.subscribed_fields(PAGE_ID, APP_ID), None);
    assert!(graph
        .page_subscribed_apps(PAGE_ID, PAGE_TOKEN, APP_SECRET)
        .await?
        .is_empty());
    Ok(())
}

#[tokio::test]
async fn sees_meta_drop_the_app_from_a_page() -> TestResult {
    let fake = fake_graph().await;
    let graph = client(&fake)?;
    fake.set_subscribed_fields(PAGE_ID, APP_ID, &["messages"]);
    assert_eq!(
        graph.page_subscribed_apps(PAGE_ID, PAGE_TOKEN, APP_SECRET).await?.len(),
        1
    );

    fake.drop_subscription(PAGE_ID, APP_ID);
    assert!(graph
        .page_subscribed_apps(PAGE_ID, PAGE_TOKEN, APP_SECRET)
        .await?
        .is_empty());
    Ok(())
}

#[tokio::test]
async fn unknown_subscribed_fields_are_refused() -> TestResult {
    let fake = fake_graph().await;
    let error = client(&fake)?
        .subscribe_page(PAGE_ID, PAGE_TOKEN, APP_SECRET, &strings(&["messages", "mesages"]))
        .await
        .expect_err("a misspelt field");
    assert!(
        matches!(&error, GraphError::InvalidParameter { message, .. }
            if message.contains("subscribed_fields[1]") && message.contains("got \"mesages\"")),
        "{error:?}"
    );
    Ok(())
}

/// What a test callback answers to Meta's verification GET.
#[derive(Clone, Copy)]
enum Answer {
    /// The challenge, if the verify token is the expected one (403 otherwise), like the gateway.
    Challenge,
    /// 200 with a body that is not the challenge.
    WrongBody,
}

/// The query strings of the verification GETs a callback got.
type Handshakes = Arc<Mutex<Vec<HashMap<String, String>>>>;

/// A webhook callback on 127.0.0.1 that records the verification GETs it gets.
struct Callback {
    url: String,
    handshakes: Handshakes,
    task: tokio::task::JoinHandle<()>,
}

impl Callback {
    async fn start(answer: Answer, verify_token: &'static str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/webhooks/meta", listener.local_addr()?);
        let handshakes: Handshakes = Arc::default();
        let recorded = Arc::clone(&handshakes);
        let app = Router::new()
            .route(
                "/webhooks/meta",
                get(
                    move |State(recorded): State<Handshakes>, Query(query): Query<HashMap<String, String>>| async move {
                        recorded
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(query.clone());
                        let param = |name: &str| query.get(name).cloned().unwrap_or_default();
                        match answer {
                            Answer::Challenge
                                if param("hub.mode") == "subscribe" && param("hub.verify_token") == verify_token =>
                            {
                                (StatusCode::OK, param("hub.challenge"))
                            }
                            Answer::Challenge => (StatusCode::FORBIDDEN, String::from("forbidden")),
                            Answer::WrongBody => (StatusCode::OK, String::from("ok")),
                        }
                    },
                ),
            )
            .with_state(recorded);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { url, handshakes, task })
    }

    fn handshakes(&self) -> Vec<HashMap<String, String>> {
        self.handshakes.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl Drop for Callback {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn sets_the_app_webhook_when_the_callback_answers_the_challenge() -> TestResult {
    let fake = fake_graph().await;
    let graph = client(&fake)?;
    let callback = Callback::start(Answer::Challenge, "verify-me").await?;
    let fields = strings(&["messages", "messaging_postbacks"]);

    graph
        .set_app_subscription(
            APP_ID,
            APP_SECRET,
            &NewAppSubscription {
                object: "page",
                callback_url: &callback.url,
                fields: &fields,
                verify_token: "verify-me",
            },
        )
        .await?;

    let handshakes = callback.handshakes();
    assert_eq!(handshakes.len(), 1);
    assert_eq!(handshakes[0].get("hub.mode").map(String::as_str), Some("subscribe"));
    assert_eq!(
        handshakes[0].get("hub.verify_token").map(String::as_str),
        Some("verify-me")
    );
    assert!(handshakes[0].get("hub.challenge").is_some_and(|c| !c.is_empty()));
    assert_eq!(
        fake.app_subscription(APP_ID, "page"),
        Some((callback.url.clone(), fields.clone(), String::from("verify-me")))
    );
    let post = fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST")
        .ok_or("no POST recorded")?;
    assert_eq!(post.params.get("include_values").map(String::as_str), Some("true"));
    assert_eq!(
        post.params.get("fields").map(String::as_str),
        Some("messages,messaging_postbacks")
    );

    assert_eq!(
        graph.app_subscriptions(APP_ID, APP_SECRET).await?,
        [AppSubscription {
            object: String::from("page"),
            callback_url: callback.url.clone(),
            active: true,
            fields,
        }]
    );

    graph.delete_app_subscription(APP_ID, APP_SECRET, "page").await?;
    assert_eq!(fake.app_subscription(APP_ID, "page"), None);
    assert!(graph.app_subscriptions(APP_ID, APP_SECRET).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn refuses_the_app_webhook_when_the_callback_answers_wrong() -> TestResult {
    let fake = fake_graph().await;
    let graph = client(&fake)?;
    let fields = strings(&["messages"]);

    let wrong_body = Callback::start(Answer::WrongBody, "verify-me").await?;
    let error = graph
        .set_app_subscription(
            APP_ID,
            APP_SECRET,
            &NewAppSubscription {
                object: "page",
                callback_url: &wrong_body.url,
                fields: &fields,
                verify_token: "verify-me",
            },
        )
        .await
        .expect_err("the callback did not echo the challenge");
    assert!(
        matches!(&error, GraphError::Meta { status: 400, code: Some(2200), message, .. }
            if message.contains("Callback verification failed") && message.contains("does not match challenge")),
        "{error:?}"
    );
    assert_eq!(wrong_body.handshakes().len(), 1);

    let other_token = Callback::start(Answer::Challenge, "another-token").await?;
    let error = graph
        .set_app_subscription(
            APP_ID,
            APP_SECRET,
            &NewAppSubscription {
                object: "page",
                callback_url: &other_token.url,
                fields: &fields,
                verify_token: "verify-me",
            },
        )
        .await
        .expect_err("the callback refused the verify token");
    assert!(
        matches!(&error, GraphError::Meta { code: Some(2200), message, .. } if message.contains("HTTP Status Code = 403")),
        "{error:?}"
    );
    assert_eq!(fake.app_subscription(APP_ID, "page"), None);
    assert!(graph.app_subscriptions(APP_ID, APP_SECRET).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn the_app_token_needs_the_right_secret() -> TestResult {
    let fake = fake_graph().await;
    let error = client(&fake)?
        .app_subscriptions(APP_ID, "not-the-secret")
        .await
        .expect_err("the app token is wrong");
    assert!(matches!(error, GraphError::InvalidToken { code: 190, .. }), "{error:?}");
    Ok(())
}

#[tokio::test]
async fn calls_the_configured_version() -> TestResult {
    let fake = FakeGraph::start_with_version("v19.0").await;
    fake.add_app(APP_ID, APP_SECRET);
    fake.add_page(PAGE_ID, PAGE_NAME, PAGE_TOKEN, APP_ID, BOTH);

    let default_version = client(&fake)?;
    let error = default_version
        .page(PAGE_ID, PAGE_TOKEN, APP_SECRET)
        .await
        .expect_err("the fake serves v19.0 only");
    assert_eq!(error.meta_code(), Some(2500), "{error:?}");

    let v19 = GraphClient::new(GraphConfig {
        base_url: fake.base_url(),
        version: String::from("v19.0"),
        ..GraphConfig::default()
    })?;
    assert_eq!(v19.page(PAGE_ID, PAGE_TOKEN, APP_SECRET).await?.id, PAGE_ID);
    assert_eq!(
        fake.requests().last().map(|r| r.path.clone()),
        Some(format!("/v19.0/{PAGE_ID}"))
    );
    Ok(())
}
