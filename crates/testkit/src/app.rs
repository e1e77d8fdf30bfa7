//! `TestApp`: a whole gateway on 127.0.0.1:0 with its own SQLite file, driven by tests.
//!
//! By default the dispatcher does not run on its own: tests call [`TestApp::deliver_due`] to run
//! delivery rounds and move [`TestApp::clock`] to make retries come due, so nothing waits on time.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pagewire_core::{Clock, ManualClock, MasterKey, RetryPolicy, Secret};
use pagewire_delivery::{DeliveryConfig, DestinationPolicy, Dispatcher};
use pagewire_server::auth::AdminToken;
use pagewire_server::ratelimit::RateLimit;

use crate::graph::FakeGraph;
use pagewire_server::{Gateway, GatewayConfig, IngestConfig, Role};
use pagewire_store::{SqliteStore, SqliteStoreOptions, Store};
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "pwadm_test_operator_token";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds a [`TestApp`].
#[derive(Debug, Default)]
pub struct TestAppBuilder {
    data_dir: Option<PathBuf>,
    master_key: Option<MasterKey>,
    background_delivery: bool,
    refuse_private_endpoints: bool,
    retry: Option<RetryPolicy>,
    rate_limit: Option<RateLimit>,
    ingest: Option<IngestConfig>,
    max_connections: Option<usize>,
    idle_timeout: Option<Duration>,
}

impl TestAppBuilder {
    /// Bounds the ingest writer (queue, group commit) differently from production.
    pub fn ingest(mut self, config: IngestConfig) -> Self {
        self.ingest = Some(config);
        self
    }

    /// Uses this directory (and its database) instead of a fresh temporary one.
    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_owned());
        self
    }

    pub fn master_key(mut self, key: MasterKey) -> Self {
        self.master_key = Some(key);
        self
    }

    /// Runs the dispatcher loop in the background, as `pagewire serve` does.
    pub fn background_delivery(mut self) -> Self {
        self.background_delivery = true;
        self
    }

    /// Refuses loopback and private endpoint URLs, as production does (test apps allow them, since
    /// the receivers run on 127.0.0.1).
    pub fn refuse_private_endpoints(mut self) -> Self {
        self.refuse_private_endpoints = true;
        self
    }

    pub fn retry_policy(mut self, policy: RetryPolicy) -> Self {
        self.retry = Some(policy);
        self
    }

    /// Connections the gateway holds open at once (1024 by default, as in production).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = Some(max);
        self
    }

    /// How long a connection may wait for a request before the gateway closes it (30 s by default,
    /// as in production).
    pub fn idle_timeout(mut self, idle: Duration) -> Self {
        self.idle_timeout = Some(idle);
        self
    }

    /// Limits `/v1` requests per credential (test apps do not limit by default).
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    pub async fn spawn(self) -> Result<TestApp, BoxError> {
        let (temp, dir) = match self.data_dir {
            Some(dir) => (None, dir),
            None => {
                let temp = tempfile::tempdir()?;
                let dir = temp.path().to_owned();
                (Some(temp), dir)
            }
        };
        let key = self.master_key.unwrap_or_else(test_master_key);
        let store = SqliteStore::open(&dir.join("pagewire.db"), key, SqliteStoreOptions::default()).await?;
        let store: Arc<dyn Store> = Arc::new(store);
        let clock = ManualClock::starting_now();
        // Bound first, so the gateway knows its public address (Meta's handshake goes there).
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let graph = FakeGraph::start().await;
        let config = GatewayConfig {
            max_connections: self.max_connections.unwrap_or(1024),
            idle_timeout: self.idle_timeout.unwrap_or(Duration::from_secs(30)),
            role: if self.background_delivery {
                Role::All
            } else {
                Role::Ingress
            },
            admin_token: AdminToken::from_token(&Secret::new(ADMIN_TOKEN.to_owned())),
            ingest: self.ingest.unwrap_or_default(),
            delivery: DeliveryConfig {
                destinations: Arc::new(if self.refuse_private_endpoints {
                    DestinationPolicy::default()
                } else {
                    DestinationPolicy::permissive()
                }),
                request_timeout: Duration::from_secs(10),
                poll_interval: Duration::from_millis(50),
                retry: self.retry.unwrap_or_default(),
                ..DeliveryConfig::default()
            },
            routing_refresh: Duration::from_secs(3600),
            dedup_window: Duration::from_secs(7 * 24 * 3600),
            retention: Duration::from_secs(30 * 24 * 3600),
            maintenance_interval: Duration::from_secs(24 * 3600),
            token_ttl: Duration::from_secs(900),
            rate_limit: self.rate_limit.unwrap_or(RateLimit {
                per_second: 0,
                burst: 0,
            }),
            graph: pagewire_graph::GraphConfig {
                base_url: graph.base_url(),
                version: graph.version().to_owned(),
                retry_base_delay: Duration::from_millis(1),
                ..pagewire_graph::GraphConfig::default()
            },
            public_url: Some(format!("http://{addr}")),
        };
        let gateway = Gateway::build(Arc::clone(&store), Arc::new(clock.clone()) as Arc<dyn Clock>, config).await?;
        let dispatcher = gateway.dispatcher().clone();
        let maintenance = gateway.maintenance().clone();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(gateway.serve(listener, shutdown.clone()));
        Ok(TestApp {
            base_url: format!("http://{addr}"),
            client: reqwest::Client::new(),
            store,
            clock,
            graph,
            dispatcher,
            maintenance,
            shutdown,
            task: Some(task),
            data_dir: dir,
            _temp: temp,
        })
    }
}

/// The same key for every test app, so that a second app on the same directory opens the secrets.
fn test_master_key() -> MasterKey {
    MasterKey::parse(&"7e".repeat(32)).unwrap_or_else(|_| MasterKey::generate())
}

/// A tenant created through the API, with its key.
#[derive(Debug, Clone)]
pub struct Tenant {
    pub id: String,
    pub api_key: String,
}

/// A running gateway for one test.
#[derive(Debug)]
pub struct TestApp {
    pub base_url: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub clock: ManualClock,
    /// The Graph API this gateway calls: a fake that answers like Meta.
    pub graph: FakeGraph,
    dispatcher: Dispatcher,
    maintenance: pagewire_server::Maintenance,
    shutdown: CancellationToken,
    task: Option<JoinHandle<Result<(), pagewire_server::GatewayError>>>,
    data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

impl TestApp {
    /// A gateway on a fresh temporary directory, delivering only when driven.
    pub async fn spawn() -> Result<Self, BoxError> {
        Self::builder().spawn().await
    }

    pub fn builder() -> TestAppBuilder {
        TestAppBuilder::default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Runs delivery rounds until nothing is due at the clock's current time; returns how many
    /// attempts were made.
    pub async fn deliver_due(&self) -> Result<usize, BoxError> {
        Ok(self.dispatcher.drain().await?)
    }

    /// Runs one housekeeping pass at the clock's current time.
    pub async fn run_maintenance(&self) -> Result<pagewire_server::MaintenanceReport, BoxError> {
        Ok(self.maintenance.run_once().await?)
    }

    /// Stops serving, lets the ingest writer drain, and keeps the data directory.
    pub async fn shutdown(mut self) -> Result<Option<tempfile::TempDir>, BoxError> {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            task.await??;
        }
        Ok(self._temp.take())
    }

    /// Calls the admin API and returns the status and JSON answer.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value), BoxError> {
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut request = self.client.request(method, self.url(path)).bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text)?
        };
        Ok((status, json))
    }

    /// Calls the admin API and fails unless the answer is 2xx.
    async fn api_ok(&self, method: &str, path: &str, token: &str, body: Option<Value>) -> Result<Value, BoxError> {
        let (status, json) = self.api(method, path, token, body).await?;
        if !(200..300).contains(&status) {
            return Err(format!("{method} {path} answered {status}: {json}").into());
        }
        Ok(json)
    }

    /// Creates a tenant and an API key for it.
    pub async fn create_tenant(&self, name: &str) -> Result<Tenant, BoxError> {
        let tenant = self
            .api_ok("POST", "/v1/tenants", ADMIN_TOKEN, Some(json!({"name": name})))
            .await?;
        let id = tenant["id"].as_str().ok_or("no tenant id")?.to_owned();
        let key = self
            .api_ok(
                "POST",
                &format!("/v1/tenants/{id}/api-keys"),
                ADMIN_TOKEN,
                Some(json!({"name": "test"})),
            )
            .await?;
        Ok(Tenant {
            id,
            api_key: key["key"].as_str().ok_or("no key")?.to_owned(),
        })
    }

    /// Registers a Meta app: the tenant's own with `Some(tenant)`, a shared one with `None`. The
    /// fake Graph API knows it too.
    pub async fn create_app(&self, tenant: Option<&Tenant>, app_id: &str, app_secret: &str) -> Result<Value, BoxError> {
        self.graph.add_app(app_id, app_secret);
        let token = tenant.map_or(ADMIN_TOKEN, |t| t.api_key.as_str());
        let body =
            json!({"app_id": app_id, "app_secret": app_secret, "verify_token": format!("verify-token-for-{app_id}")});
        self.api_ok("POST", "/v1/apps", token, Some(body)).await
    }

    /// Onboards a Page with a Page access token the fake Graph API knows (with the permissions
    /// subscriptions need).
    pub async fn create_page(&self, tenant: &Tenant, page_id: &str, app_id: &str) -> Result<Value, BoxError> {
        let token = format!("EAAG-test-page-token-{page_id}");
        self.graph.add_page(
            page_id,
            &format!("Page {page_id}"),
            &token,
            app_id,
            &["pages_messaging", "pages_manage_metadata"],
        );
        let body = json!({"page_id": page_id, "app_id": app_id, "access_token": token});
        self.api_ok("POST", "/v1/pages", &tenant.api_key, Some(body)).await
    }

    /// The operator assigns a Page to `tenant`, proven (approves a claim made without a token).
    pub async fn approve_page(&self, tenant: &Tenant, page_id: &str) -> Result<Value, BoxError> {
        let path = format!("/v1/tenants/{}/pages/{page_id}", tenant.id);
        self.api_ok("PUT", &path, ADMIN_TOKEN, None).await
    }

    /// Registers an endpoint and returns its id and `whsec_` secret.
    pub async fn create_endpoint(&self, tenant: &Tenant, body: Value) -> Result<(String, String), BoxError> {
        let endpoint = self
            .api_ok("POST", "/v1/endpoints", &tenant.api_key, Some(body))
            .await?;
        Ok((
            endpoint["id"].as_str().ok_or("no endpoint id")?.to_owned(),
            endpoint["secret"].as_str().ok_or("no endpoint secret")?.to_owned(),
        ))
    }

    /// Posts a webhook body to `path` with the given `X-Hub-Signature-256` (or none).
    pub async fn post_webhook(
        &self,
        path: &str,
        body: Vec<u8>,
        signature: Option<&str>,
    ) -> Result<(u16, String), BoxError> {
        let mut request = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        let response = request.send().await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// Posts a webhook body to `/webhooks/meta`, signed with `app_secret` as Meta signs it.
    pub async fn send_signed(&self, app_secret: &str, body: Vec<u8>) -> Result<(u16, String), BoxError> {
        let signature = crate::simulator::signature(app_secret, &body);
        self.post_webhook("/webhooks/meta", body, Some(&signature)).await
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
