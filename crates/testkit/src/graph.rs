//! A fake Graph API for tests (feature `fake-graph`): a real HTTP server on 127.0.0.1 that answers
//! the calls `pagewire-graph` makes the way Meta does, errors included.
//!
//! It checks each request as Meta would:
//!
//! - the version prefix of the path (`/v21.0/…`, or the version given to
//!   [`FakeGraph::start_with_version`]); another prefix gets code 2500 "Unknown path components";
//! - `access_token`: missing → code 104; unknown → code 190; revoked ([`FakeGraph::revoke_token`]) →
//!   code 190, subcode 460;
//! - `appsecret_proof`: required with Page tokens (as for an app with "Require App Secret" on),
//!   optional with app tokens, and when present it must be the HMAC-SHA256 of the token keyed by
//!   the secret of the token's app, else code 100 "Invalid appsecret_proof provided in the API
//!   argument". The fake computes it with its own code, not with `pagewire-graph`'s;
//! - Page tokens work only for their Page's endpoints, app tokens (`{app_id}|{secret}`) only for
//!   their app's `subscriptions` edge (code 15, 10 or 210 otherwise, as Meta answers);
//! - `subscribed_apps` needs `pages_manage_metadata`, and `pages_messaging` for the messaging fields
//!   (code 200, with Meta's wording); field names are checked against Meta's list of Page fields;
//! - `POST /{app-id}/subscriptions` verifies the callback first, as Meta does: a GET with
//!   `hub.mode=subscribe`, `hub.challenge` (random) and `hub.verify_token`, accepted only if the
//!   answer is 200 with the challenge as its body; else code 2200 "Callback verification failed".
//!
//! Where it is simpler than Meta: Page tokens cannot read other Pages, paging is never needed, the
//! callback URL may be plain `http` (Meta wants `https`), and a new app subscription replaces the
//! fields of the previous one for the same object.
//!
//! HTTP statuses follow Meta: 400 for OAuth, permission, parameter and rate-limit errors (rate
//! limits are code 4, "Application request limit reached"), 500 with code 2 and `is_transient` for
//! [`FakeGraph::fail_next`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State as AxumState;
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use rand::Rng;
use serde_json::{json, Value};
use sha2::Sha256;

/// The version [`FakeGraph::start`] serves, the default of `pagewire_graph::GraphConfig`.
pub const DEFAULT_VERSION: &str = "v21.0";

/// Meta's Page webhook fields, which `subscribed_fields` values must be among.
const PAGE_FIELDS: &[&str] = &[
    "affiliation",
    "attire",
    "awards",
    "bio",
    "birthday",
    "category",
    "checkins",
    "company_overview",
    "conversations",
    "culinary_team",
    "current_location",
    "description",
    "email",
    "feature_access_list",
    "feed",
    "founded",
    "general_info",
    "general_manager",
    "group_feed",
    "hometown",
    "hours",
    "inbox_labels",
    "invoice_access_bank_slip_events",
    "invoice_access_invoice_change",
    "invoice_access_invoice_draft_change",
    "invoice_access_onboarding_status_active",
    "leadgen",
    "leadgen_fat",
    "live_videos",
    "local_delivery",
    "location",
    "mcom_invoice_change",
    "members",
    "mention",
    "merchant_review",
    "message_context",
    "message_deliveries",
    "message_echoes",
    "message_edits",
    "message_mention",
    "message_reactions",
    "message_reads",
    "messages",
    "messaging_account_linking",
    "messaging_appointments",
    "messaging_checkout_updates",
    "messaging_customer_information",
    "messaging_direct_sends",
    "messaging_fblogin_account_linking",
    "messaging_feedback",
    "messaging_game_plays",
    "messaging_handovers",
    "messaging_in_thread_lead_form_submit",
    "messaging_integrity",
    "messaging_optins",
    "messaging_optouts",
    "messaging_payments",
    "messaging_policy_enforcement",
    "messaging_postbacks",
    "messaging_pre_checkouts",
    "messaging_referrals",
    "mission",
    "name",
    "page_about_story",
    "page_change_proposal",
    "page_upcoming_change",
    "parking",
    "payment_options",
    "personal_info",
    "personal_interests",
    "phone",
    "picture",
    "price_range",
    "product_review",
    "products",
    "public_transit",
    "ratings",
    "registration",
    "send_cart",
    "standby",
    "user_action",
    "videos",
    "website",
];

/// The objects an app can subscribe its webhook to.
const APP_OBJECTS: &[&str] = &[
    "page",
    "instagram",
    "whatsapp_business_account",
    "user",
    "permissions",
    "application",
];

/// The permission to manage a Page's subscriptions.
const MANAGE_METADATA: &str = "pages_manage_metadata";
/// The permission the messaging fields need too.
const MESSAGING: &str = "pages_messaging";

/// One request the fake received, for assertions. The token and the proof are never kept: only
/// whether they were sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `POST`, `DELETE`.
    pub method: String,
    /// The path, version included: `/v21.0/123/subscribed_apps`.
    pub path: String,
    /// Query and form parameters (the form wins), without `access_token` and `appsecret_proof`.
    pub params: BTreeMap<String, String>,
    pub sent_access_token: bool,
    pub sent_appsecret_proof: bool,
    /// The status the fake answered.
    pub status: u16,
    /// The Meta error code the fake answered with, if it answered an error.
    pub error_code: Option<i64>,
}

/// A Graph API on 127.0.0.1 for tests; see the [module docs](self). It stops when dropped.
pub struct FakeGraph {
    base_url: String,
    version: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for FakeGraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FakeGraph")
            .field("base_url", &self.base_url)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

struct Shared {
    state: Mutex<World>,
    /// Makes the callback handshakes.
    http: reqwest::Client,
}

impl Shared {
    fn world(&self) -> MutexGuard<'_, World> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// What Meta knows: apps, Pages, tokens, subscriptions, and the scripted failures.
struct World {
    /// The version the fake serves, first path segment of every call.
    version: String,
    apps: BTreeMap<String, App>,
    pages: BTreeMap<String, Page>,
    page_tokens: HashMap<String, PageToken>,
    revoked: HashSet<String>,
    rate_limit_next: u32,
    fail_next: u32,
    requests: Vec<RecordedRequest>,
}

struct App {
    secret: String,
    /// Object → the app's webhook for it.
    subscriptions: BTreeMap<String, AppSubscription>,
}

#[derive(Clone)]
struct AppSubscription {
    callback_url: String,
    fields: Vec<String>,
    verify_token: String,
}

struct Page {
    name: String,
    /// App id → the fields the Page sends that app.
    subscribed: BTreeMap<String, Vec<String>>,
}

struct PageToken {
    page_id: String,
    app_id: String,
    permissions: BTreeSet<String>,
}

/// Who a valid token speaks for.
enum Caller {
    Page {
        page_id: String,
        app_id: String,
        permissions: BTreeSet<String>,
    },
    App {
        app_id: String,
    },
}

/// An answer: status and JSON body, with the Meta error code for the record.
struct Reply {
    status: StatusCode,
    body: Value,
    code: Option<i64>,
}

/// What a request comes to once checked under the lock.
enum Outcome {
    Reply(Reply),
    /// An app subscription to accept if its callback passes the handshake, done without the lock.
    Handshake {
        app_id: String,
        object: String,
        subscription: AppSubscription,
    },
}

impl FakeGraph {
    /// Starts a fake serving [`DEFAULT_VERSION`] (`v21.0`) on a free port of 127.0.0.1.
    pub async fn start() -> FakeGraph {
        Self::start_with_version(DEFAULT_VERSION).await
    }

    /// Starts a fake that serves `version` (`"v19.0"`) only.
    pub async fn start_with_version(version: &str) -> FakeGraph {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the fake Graph API binds 127.0.0.1:0");
        let addr = listener.local_addr().expect("a bound listener has an address");
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("facebookplatform/1.0 (+http://developers.facebook.com)")
            .build()
            .expect("the handshake client builds");
        let shared = Arc::new(Shared {
            state: Mutex::new(World {
                version: version.to_owned(),
                apps: BTreeMap::new(),
                pages: BTreeMap::new(),
                page_tokens: HashMap::new(),
                revoked: HashSet::new(),
                rate_limit_next: 0,
                fail_next: 0,
                requests: Vec::new(),
            }),
            http,
        });
        let app = Router::new().fallback(handle).with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGraph {
            base_url: format!("http://{addr}"),
            version: version.to_owned(),
            shared,
            task,
        }
    }

    /// The URL to configure the client with, without the version: `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// The version the fake serves.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Registers an app; its app token is `{app_id}|{app_secret}`.
    pub fn add_app(&self, app_id: &str, app_secret: &str) {
        self.shared.world().apps.insert(
            app_id.to_owned(),
            App {
                secret: app_secret.to_owned(),
                subscriptions: BTreeMap::new(),
            },
        );
    }

    /// Registers a Page (or updates its name) and a Page token issued through `app_id` with these
    /// permissions; the token's `appsecret_proof` is keyed by that app's secret, so add the app
    /// first. Calling it again for the same Page adds another token, e.g. for a second app.
    pub fn add_page(&self, page_id: &str, name: &str, page_token: &str, app_id: &str, permissions: &[&str]) {
        let mut world = self.shared.world();
        world
            .pages
            .entry(page_id.to_owned())
            .or_insert_with(|| Page {
                name: String::new(),
                subscribed: BTreeMap::new(),
            })
            .name = name.to_owned();
        world.page_tokens.insert(
            page_token.to_owned(),
            PageToken {
                page_id: page_id.to_owned(),
                app_id: app_id.to_owned(),
                permissions: permissions.iter().map(|p| (*p).to_owned()).collect(),
            },
        );
    }

    /// Revokes a Page or app token: calls with it then get code 190, subcode 460.
    pub fn revoke_token(&self, token: &str) {
        self.shared.world().revoked.insert(token.to_owned());
    }

    /// The next `calls` requests, whatever they are, get HTTP 400 with code 4 ("Application request
    /// limit reached"), without a wait hint.
    pub fn rate_limit_next(&self, calls: u32) {
        self.shared.world().rate_limit_next = calls;
    }

    /// The next `calls` requests get HTTP 500 with code 2 and `is_transient: true`. Checked before
    /// the rate limit.
    pub fn fail_next(&self, calls: u32) {
        self.shared.world().fail_next = calls;
    }

    /// The fields the Page sends `app_id`, or `None` if the app is not subscribed to the Page.
    pub fn subscribed_fields(&self, page_id: &str, app_id: &str) -> Option<Vec<String>> {
        self.shared
            .world()
            .pages
            .get(page_id)
            .and_then(|page| page.subscribed.get(app_id).cloned())
    }

    /// Subscribes the app to the Page's fields directly, without a request or any check: a Page
    /// that was subscribed elsewhere. The Page must have been added.
    pub fn set_subscribed_fields(&self, page_id: &str, app_id: &str, fields: &[&str]) {
        if let Some(page) = self.shared.world().pages.get_mut(page_id) {
            page.subscribed
                .insert(app_id.to_owned(), fields.iter().map(|f| (*f).to_owned()).collect());
        }
    }

    /// Removes the app from the Page's subscribed apps, as Meta does after webhooks fail for long.
    pub fn drop_subscription(&self, page_id: &str, app_id: &str) {
        if let Some(page) = self.shared.world().pages.get_mut(page_id) {
            page.subscribed.remove(app_id);
        }
    }

    /// The app's webhook for `object`: `(callback_url, fields, verify_token)`.
    pub fn app_subscription(&self, app_id: &str, object: &str) -> Option<(String, Vec<String>, String)> {
        self.shared
            .world()
            .apps
            .get(app_id)
            .and_then(|app| app.subscriptions.get(object))
            .map(|sub| (sub.callback_url.clone(), sub.fields.clone(), sub.verify_token.clone()))
    }

    /// Sets the app's webhook for `object` directly, without the handshake: an app configured
    /// elsewhere. The app must have been added.
    pub fn set_app_subscription(
        &self,
        app_id: &str,
        object: &str,
        callback_url: &str,
        fields: &[&str],
        verify_token: &str,
    ) {
        if let Some(app) = self.shared.world().apps.get_mut(app_id) {
            app.subscriptions.insert(
                object.to_owned(),
                AppSubscription {
                    callback_url: callback_url.to_owned(),
                    fields: fields.iter().map(|f| (*f).to_owned()).collect(),
                    verify_token: verify_token.to_owned(),
                },
            );
        }
    }

    /// Every request so far, in order of their answers.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.world().requests.clone()
    }
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every request lands here: the fake routes by hand, to answer unknown paths the way Meta does.
async fn handle(AxumState(shared): AxumState<Arc<Shared>>, method: Method, uri: Uri, body: Bytes) -> Response {
    let mut params: BTreeMap<String, String> = uri
        .query()
        .map(|query| url::form_urlencoded::parse(query.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    if method == Method::POST {
        params.extend(url::form_urlencoded::parse(&body).into_owned());
    }
    let path = uri.path().to_owned();

    let outcome = shared.world().answer(&method, &path, &params);
    let reply = match outcome {
        Outcome::Reply(reply) => reply,
        Outcome::Handshake {
            app_id,
            object,
            subscription,
        } => match handshake(&shared.http, &subscription).await {
            Ok(()) => {
                if let Some(app) = shared.world().apps.get_mut(&app_id) {
                    app.subscriptions.insert(object, subscription);
                }
                success()
            }
            Err(errors) => meta_error(
                StatusCode::BAD_REQUEST,
                "OAuthException",
                2200,
                None,
                &format!("(#2200) Callback verification failed with the following errors: {errors}"),
            ),
        },
    };

    let sent_access_token = params.remove("access_token").is_some();
    let sent_appsecret_proof = params.remove("appsecret_proof").is_some();
    shared.world().requests.push(RecordedRequest {
        method: method.to_string(),
        path,
        params,
        sent_access_token,
        sent_appsecret_proof,
        status: reply.status.as_u16(),
        error_code: reply.code,
    });
    (reply.status, Json(reply.body)).into_response()
}

/// Meta's verification GET to the callback: 200 with the challenge as the body, or the errors as
/// Meta words them.
async fn handshake(http: &reqwest::Client, subscription: &AppSubscription) -> Result<(), String> {
    let challenge = rand::thread_rng()
        .gen_range(1_000_000_000u64..10_000_000_000)
        .to_string();
    let mut url = reqwest::Url::parse(&subscription.callback_url).map_err(|e| format!("invalid URL: {e}"))?;
    url.query_pairs_mut()
        .append_pair("hub.mode", "subscribe")
        .append_pair("hub.challenge", &challenge)
        .append_pair("hub.verify_token", &subscription.verify_token);
    let response = http.get(url).send().await.map_err(|e| {
        format!(
            "curl_errno = 7; curl_error = Couldn't connect to server ({})",
            e.without_url()
        )
    })?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let reason = status.canonical_reason().unwrap_or("");
    if status != reqwest::StatusCode::OK {
        return Err(format!(
            "HTTP Status Code = {}; HTTP Message = {reason}",
            status.as_u16()
        ));
    }
    if body != challenge {
        let received: String = body.chars().take(100).collect();
        return Err(format!(
            "HTTP Status Code = 200; HTTP Message = OK; Response does not match challenge, expected value=\"{challenge}\", received=\"{received}\""
        ));
    }
    Ok(())
}

impl World {
    /// Checks and carries out a request, as far as it can go under the lock.
    fn answer(&mut self, method: &Method, path: &str, params: &BTreeMap<String, String>) -> Outcome {
        match self.check(method, path, params) {
            Ok(outcome) => outcome,
            Err(reply) => Outcome::Reply(reply),
        }
    }

    fn check(&mut self, method: &Method, path: &str, params: &BTreeMap<String, String>) -> Result<Outcome, Reply> {
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(transient());
        }
        if self.rate_limit_next > 0 {
            self.rate_limit_next -= 1;
            return Err(meta_error(
                StatusCode::BAD_REQUEST,
                "OAuthException",
                4,
                None,
                "(#4) Application request limit reached",
            ));
        }

        let version = self.version.as_str();
        let mut segments = path.trim_start_matches('/').split('/');
        if segments.next() != Some(version) {
            return Err(meta_error(
                StatusCode::BAD_REQUEST,
                "OAuthException",
                2500,
                None,
                &format!("Unknown path components: {path} (this fake Graph API serves /{version}/ only)"),
            ));
        }
        let segments: Vec<&str> = segments.collect();

        let caller = self.caller(params)?;

        match segments.as_slice() {
            // `me` is the token's own node: a Page token's Page, an app token's app.
            ["me"] if method == Method::GET => {
                let me = match &caller {
                    Caller::Page { page_id, .. } => page_id.clone(),
                    Caller::App { app_id } => app_id.clone(),
                };
                self.read_node(method, &me, &caller, params)
            }
            [node] if method == Method::GET => self.read_node(method, node, &caller, params),
            [page_id, "subscribed_apps"] => self.page_subscribed_apps(method, page_id, &caller, params),
            [app_id, "subscriptions"] => self.app_subscriptions(method, app_id, &caller, params),
            [node, edge] if self.pages.contains_key(*node) => Err(meta_error(
                StatusCode::BAD_REQUEST,
                "OAuthException",
                100,
                None,
                &format!("(#100) Tried accessing nonexisting field ({edge}) on node type (Page)"),
            )),
            [node, ..] => Err(unsupported(method, node)),
            [] => Err(unsupported(method, "")),
        }
    }

    /// Resolves `access_token` and checks `appsecret_proof`.
    fn caller(&self, params: &BTreeMap<String, String>) -> Result<Caller, Reply> {
        let token = match params.get("access_token") {
            Some(token) if !token.is_empty() => token,
            _ => {
                return Err(meta_error(
                    StatusCode::BAD_REQUEST,
                    "OAuthException",
                    104,
                    None,
                    "An access token is required to request this resource.",
                ))
            }
        };
        if self.revoked.contains(token) {
            return Err(meta_error(
                StatusCode::BAD_REQUEST,
                "OAuthException",
                190,
                Some(460),
                "Error validating access token: The session has been invalidated because the user changed their \
                 password or Facebook has changed the session for security reasons.",
            ));
        }
        let (caller, secret, proof_required) = if let Some(page_token) = self.page_tokens.get(token) {
            let secret = self.apps.get(&page_token.app_id).map(|app| app.secret.as_str());
            let caller = Caller::Page {
                page_id: page_token.page_id.clone(),
                app_id: page_token.app_id.clone(),
                permissions: page_token.permissions.clone(),
            };
            (caller, secret, true)
        } else if let Some((app_id, app)) = token
            .split_once('|')
            .and_then(|(app_id, secret)| self.apps.get_key_value(app_id).filter(|(_, app)| app.secret == secret))
        {
            let caller = Caller::App { app_id: app_id.clone() };
            (caller, Some(app.secret.as_str()), false)
        } else {
            return Err(meta_error(
                StatusCode::BAD_REQUEST,
                "OAuthException",
                190,
                None,
                "Invalid OAuth access token - Cannot parse access token",
            ));
        };
        let expected = secret.map(|secret| expected_proof(token, secret));
        match params.get("appsecret_proof") {
            Some(proof) if expected.as_deref() != Some(proof.as_str()) => Err(meta_error(
                StatusCode::BAD_REQUEST,
                "GraphMethodException",
                100,
                None,
                "Invalid appsecret_proof provided in the API argument",
            )),
            None if proof_required => Err(meta_error(
                StatusCode::BAD_REQUEST,
                "GraphMethodException",
                100,
                None,
                "API calls from the server require an appsecret_proof argument",
            )),
            _ => Ok(caller),
        }
    }

    /// `GET /{id}?fields=…`: a Page with its own token, or the app with its app token.
    fn read_node(
        &self,
        method: &Method,
        node: &str,
        caller: &Caller,
        params: &BTreeMap<String, String>,
    ) -> Result<Outcome, Reply> {
        let (id, name, node_type) = match caller {
            Caller::Page { page_id, .. } if page_id == node => match self.pages.get(node) {
                Some(page) => (node, page.name.clone(), "Page"),
                None => return Err(unsupported(method, node)),
            },
            Caller::App { .. } if self.pages.contains_key(node) => {
                return Err(meta_error(
                    StatusCode::BAD_REQUEST,
                    "OAuthException",
                    10,
                    None,
                    "(#10) This endpoint requires the 'pages_read_engagement' permission or the 'Page Public \
                     Metadata Access' feature.",
                ))
            }
            Caller::App { app_id } if app_id == node => (node, format!("App {app_id}"), "Application"),
            _ => return Err(unsupported(method, node)),
        };
        let fields = params.get("fields").map_or("id,name", String::as_str);
        let mut body = serde_json::Map::new();
        for field in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match field {
                "id" => body.insert(String::from("id"), json!(id)),
                "name" => body.insert(String::from("name"), json!(name)),
                other => {
                    return Err(meta_error(
                        StatusCode::BAD_REQUEST,
                        "OAuthException",
                        100,
                        None,
                        &format!("(#100) Tried accessing nonexisting field ({other}) on node type ({node_type})"),
                    ))
                }
            };
        }
        body.entry("id").or_insert_with(|| json!(id));
        Ok(Outcome::Reply(ok(Value::Object(body))))
    }

    /// `/{page-id}/subscribed_apps`: GET lists, POST subscribes the token's app, DELETE removes it.
    fn page_subscribed_apps(
        &mut self,
        method: &Method,
        page_id: &str,
        caller: &Caller,
        params: &BTreeMap<String, String>,
    ) -> Result<Outcome, Reply> {
        if !self.pages.contains_key(page_id) {
            return Err(unsupported(method, page_id));
        }
        let (app_id, permissions) = match caller {
            Caller::Page {
                page_id: token_page,
                app_id,
                permissions,
            } if token_page == page_id => (app_id.clone(), permissions),
            Caller::Page { .. } => return Err(unsupported(method, page_id)),
            Caller::App { .. } => {
                return Err(meta_error(
                    StatusCode::BAD_REQUEST,
                    "OAuthException",
                    210,
                    None,
                    "(#210) A page access token is required to request this resource.",
                ))
            }
        };
        if !permissions.contains(MANAGE_METADATA) {
            return Err(meta_error(
                StatusCode::BAD_REQUEST,
                "OAuthException",
                200,
                None,
                &format!("(#200) Requires {MANAGE_METADATA} permission to manage the object"),
            ));
        }
        let Some(page) = self.pages.get_mut(page_id) else {
            return Err(unsupported(method, page_id));
        };
        match method.as_str() {
            "GET" => {
                let data: Vec<Value> = page
                    .subscribed
                    .iter()
                    .map(|(app_id, fields)| {
                        json!({
                            "category": "Business",
                            "link": "https://pagewire.test/",
                            "name": format!("App {app_id}"),
                            "id": app_id,
                            "subscribed_fields": fields,
                        })
                    })
                    .collect();
                Ok(Outcome::Reply(ok(json!({ "data": data }))))
            }
            "POST" => {
                let fields = required(params, "subscribed_fields")?;
                let mut chosen: Vec<String> = Vec::new();
                for (i, field) in fields.split(',').map(str::trim).enumerate() {
                    if !PAGE_FIELDS.contains(&field) {
                        return Err(meta_error(
                            StatusCode::BAD_REQUEST,
                            "OAuthException",
                            100,
                            None,
                            &format!(
                                "(#100) Param subscribed_fields[{i}] must be one of {{{}}} - got \"{field}\"",
                                PAGE_FIELDS.join(", ")
                            ),
                        ));
                    }
                    if needs_messaging(field) && !permissions.contains(MESSAGING) {
                        return Err(meta_error(
                            StatusCode::BAD_REQUEST,
                            "OAuthException",
                            200,
                            None,
                            &format!(
                                "(#200) To subscribe to the {field} field, one of these permissions is needed: \
                                 {MESSAGING}"
                            ),
                        ));
                    }
                    if !chosen.iter().any(|f| f == field) {
                        chosen.push(field.to_owned());
                    }
                }
                page.subscribed.insert(app_id, chosen);
                Ok(Outcome::Reply(success()))
            }
            "DELETE" => {
                page.subscribed.remove(&app_id);
                Ok(Outcome::Reply(success()))
            }
            _ => Err(unsupported(method, page_id)),
        }
    }

    /// `/{app-id}/subscriptions`, with the app token: GET lists, POST sets one object's webhook
    /// (after the handshake), DELETE removes one object's (or all, without `object`).
    fn app_subscriptions(
        &mut self,
        method: &Method,
        app_id: &str,
        caller: &Caller,
        params: &BTreeMap<String, String>,
    ) -> Result<Outcome, Reply> {
        if !self.apps.contains_key(app_id) {
            return Err(unsupported(method, app_id));
        }
        match caller {
            Caller::App { app_id: token_app } if token_app == app_id => {}
            Caller::App { .. } => return Err(unsupported(method, app_id)),
            Caller::Page { .. } => {
                return Err(meta_error(
                    StatusCode::BAD_REQUEST,
                    "OAuthException",
                    15,
                    None,
                    "(#15) This method must be called with an app access_token.",
                ))
            }
        }
        let version = self.version.clone();
        let Some(app) = self.apps.get_mut(app_id) else {
            return Err(unsupported(method, app_id));
        };
        match method.as_str() {
            "GET" => {
                let data: Vec<Value> = app
                    .subscriptions
                    .iter()
                    .map(|(object, sub)| {
                        let fields: Vec<Value> = sub
                            .fields
                            .iter()
                            .map(|name| json!({ "name": name, "version": version }))
                            .collect();
                        json!({
                            "object": object,
                            "callback_url": sub.callback_url,
                            "active": true,
                            "fields": fields,
                        })
                    })
                    .collect();
                Ok(Outcome::Reply(ok(json!({ "data": data }))))
            }
            "POST" => {
                let object = valid_object(params)?;
                let callback_url = required(params, "callback_url")?;
                let fields = required(params, "fields")?;
                let verify_token = required(params, "verify_token")?;
                match reqwest::Url::parse(callback_url) {
                    Ok(url) if matches!(url.scheme(), "http" | "https") => {}
                    _ => {
                        return Err(meta_error(
                            StatusCode::BAD_REQUEST,
                            "OAuthException",
                            100,
                            None,
                            "(#100) Param callback_url must be a valid URL",
                        ))
                    }
                }
                let mut chosen: Vec<String> = Vec::new();
                for field in fields.split(',').map(str::trim).filter(|f| !f.is_empty()) {
                    if !chosen.iter().any(|f| f == field) {
                        chosen.push(field.to_owned());
                    }
                }
                Ok(Outcome::Handshake {
                    app_id: app_id.to_owned(),
                    object: object.to_owned(),
                    subscription: AppSubscription {
                        callback_url: callback_url.to_owned(),
                        fields: chosen,
                        verify_token: verify_token.to_owned(),
                    },
                })
            }
            "DELETE" => {
                if params.contains_key("object") {
                    let object = valid_object(params)?;
                    app.subscriptions.remove(object);
                } else {
                    app.subscriptions.clear();
                }
                Ok(Outcome::Reply(success()))
            }
            _ => Err(unsupported(method, app_id)),
        }
    }
}

/// Whether subscribing to the field needs `pages_messaging`.
fn needs_messaging(field: &str) -> bool {
    field.starts_with("message") || matches!(field, "standby" | "inbox_labels" | "send_cart")
}

fn required<'a>(params: &'a BTreeMap<String, String>, name: &str) -> Result<&'a str, Reply> {
    match params.get(name).map(|value| value.trim()) {
        Some(value) if !value.is_empty() => Ok(value),
        _ => Err(meta_error(
            StatusCode::BAD_REQUEST,
            "OAuthException",
            100,
            None,
            &format!("(#100) The parameter {name} is required"),
        )),
    }
}

fn valid_object(params: &BTreeMap<String, String>) -> Result<&str, Reply> {
    let object = required(params, "object")?;
    if APP_OBJECTS.contains(&object) {
        Ok(object)
    } else {
        Err(meta_error(
            StatusCode::BAD_REQUEST,
            "OAuthException",
            100,
            None,
            &format!(
                "(#100) Param object must be one of {{{}}} - got \"{object}\"",
                APP_OBJECTS.join(", ")
            ),
        ))
    }
}

/// The `appsecret_proof` Meta expects: hex HMAC-SHA256 of the token keyed by the app secret.
fn expected_proof(token: &str, secret: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(token.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn ok(body: Value) -> Reply {
    Reply {
        status: StatusCode::OK,
        body,
        code: None,
    }
}

fn success() -> Reply {
    ok(json!({ "success": true }))
}

/// Meta's error envelope, with a fresh `fbtrace_id`.
fn meta_error(status: StatusCode, kind: &str, code: i64, subcode: Option<i64>, message: &str) -> Reply {
    let mut error = json!({
        "message": message,
        "type": kind,
        "code": code,
        "fbtrace_id": fbtrace_id(),
    });
    if let Some(subcode) = subcode {
        error["error_subcode"] = json!(subcode);
    }
    Reply {
        status,
        body: json!({ "error": error }),
        code: Some(code),
    }
}

fn transient() -> Reply {
    let mut reply = meta_error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "OAuthException",
        2,
        None,
        "An unexpected error has occurred. Please retry your request later.",
    );
    reply.body["error"]["is_transient"] = json!(true);
    reply
}

/// Meta's answer for an object that does not exist or that the token may not see.
fn unsupported(method: &Method, id: &str) -> Reply {
    let verb = method.as_str().to_ascii_lowercase();
    meta_error(
        StatusCode::BAD_REQUEST,
        "GraphMethodException",
        100,
        Some(33),
        &format!(
            "Unsupported {verb} request. Object with ID '{id}' does not exist, cannot be loaded due to missing \
             permissions, or does not support this operation. Please read the Graph API documentation at \
             https://developers.facebook.com/docs/graph-api"
        ),
    )
}

fn fbtrace_id() -> String {
    rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(11)
        .map(char::from)
        .collect()
}
