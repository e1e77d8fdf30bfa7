//! `pagewire-server`: Pagewire's HTTP side and the wiring of one gateway process.
//!
//! - [`ingress`]: Meta's handshake and webhook POSTs (raw bytes in, verified, normalized, committed).
//! - [`ingest`]: the ingest writer, which group-commits what ingress accepts.
//! - [`admin`]: the `/v1` admin API; [`auth`]: who is calling; [`error`]: problem+json answers.
//! - [`routing`]: the in-memory routing snapshot that keeps the database off the ingress path.
//!
//! [`Gateway`] assembles them with the dispatcher for one process. Nothing depends on this crate but
//! the `pagewire` binary and the test kit.

pub mod admin;
pub mod auth;
pub mod error;
pub mod idempotency;
pub mod ingest;
pub mod ingress;
pub mod listener;
pub mod ratelimit;
pub mod refusals;
pub mod routing;
pub mod subscriptions;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use pagewire_core::Clock;
use pagewire_delivery::{DeliveryConfig, Dispatcher};
use pagewire_store::{Store, StoreError};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use ingest::IngestConfig;

/// What this process does: everything, only the HTTP side, or only delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    #[default]
    All,
    /// Ingress and the admin API, no dispatcher.
    Ingress,
    /// The dispatcher (and a health check), no ingress or admin API.
    Worker,
}

impl Role {
    fn serves_http_api(self) -> bool {
        matches!(self, Self::All | Self::Ingress)
    }

    fn delivers(self) -> bool {
        matches!(self, Self::All | Self::Worker)
    }
}

/// How the gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub role: Role,
    /// Connections held open at once; at the bound new ones wait in the kernel's backlog
    /// ([`listener::BoundedListener`]).
    pub max_connections: usize,
    /// How long a connection may wait for a request (or for the rest of a request's head) before
    /// it is closed, so that idle connections do not hold the bound.
    pub idle_timeout: Duration,
    pub admin_token: auth::AdminToken,
    pub ingest: IngestConfig,
    pub delivery: DeliveryConfig,
    /// How often the routing snapshot is re-read, to see changes made through other nodes.
    pub routing_refresh: Duration,
    /// How long Meta's redeliveries of an item are recognized (Meta retries WhatsApp for up to 7
    /// days); older dedup keys are released.
    pub dedup_window: Duration,
    /// How long final events, their deliveries and attempts, and raw POSTs are kept, for tenants
    /// without a retention of their own.
    pub retention: Duration,
    /// How often housekeeping (releasing dedup keys) runs.
    pub maintenance_interval: Duration,
    /// How long a token from `POST /v1/auth/token` is valid.
    pub token_ttl: Duration,
    /// Requests per credential on `/v1` (zero turns the limit off).
    pub rate_limit: ratelimit::RateLimit,
    /// The Graph API: where it is, its version, timeouts.
    pub graph: pagewire_graph::GraphConfig,
    /// The gateway's address as Meta reaches it (`https://hooks.example.com`), for app webhook
    /// subscriptions.
    pub public_url: Option<String>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("loading the routing tables failed")]
    Store(#[from] StoreError),
    #[error("building the HTTP client failed")]
    Client(#[from] pagewire_delivery::ClientError),
    #[error("building the Graph API client failed")]
    Graph(#[from] pagewire_graph::GraphError),
}

/// One gateway process: its router, ingest writer and dispatcher.
#[derive(Debug)]
pub struct Gateway {
    router: Router,
    dispatcher: Dispatcher,
    routing: routing::RoutingCache,
    /// Reloads the routing snapshot before `routing_refresh` is up, when told of a change.
    routing_changed: Arc<tokio::sync::Notify>,
    writer_task: JoinHandle<()>,
    maintenance: Maintenance,
    clock: Arc<dyn Clock>,
    config: GatewayConfig,
}

/// Housekeeping: releasing dedup keys older than the window.
#[derive(Debug, Clone)]
pub struct Maintenance {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    graph: pagewire_graph::GraphClient,
    dedup_window: Duration,
    retention: Duration,
}

/// What one housekeeping pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    pub dedup_keys_released: u64,
    pub events_pruned: u64,
    pub inbound_pruned: u64,
    /// The Page subscription check.
    pub subscriptions: subscriptions::CheckReport,
}

impl Maintenance {
    /// One housekeeping pass: release dedup keys older than the window, prune what retention no
    /// longer keeps, check Page subscriptions (repairing or reporting lost ones).
    pub async fn run_once(&self) -> Result<MaintenanceReport, StoreError> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let now = self.clock.now_ms();
        let released = self
            .store
            .release_dedup_keys(now.saturating_sub(ms(self.dedup_window)))
            .await?;
        let pruned = self.store.prune(now, ms(self.retention)).await?;
        self.store
            .idempotency_prune(now.saturating_sub(idempotency::RETENTION_MS))
            .await?;
        let subscriptions = subscriptions::check_all(self.store.as_ref(), &self.graph, now).await?;
        let report = MaintenanceReport {
            dedup_keys_released: released,
            events_pruned: pruned.events,
            inbound_pruned: pruned.inbound,
            subscriptions,
        };
        if report != MaintenanceReport::default() {
            tracing::info!(
                dedup_keys_released = report.dedup_keys_released,
                events_pruned = report.events_pruned,
                inbound_pruned = report.inbound_pruned,
                subscriptions_checked = report.subscriptions.checked,
                subscriptions_repaired = report.subscriptions.repaired,
                subscriptions_lost = report.subscriptions.lost,
                "housekeeping done"
            );
        }
        Ok(report)
    }

    async fn run(self, every: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.run_once().await {
                tracing::warn!(error = %e, "housekeeping failed; trying again later");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
        }
    }
}

impl Gateway {
    /// Loads the routing tables and starts the ingest writer.
    pub async fn build(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: GatewayConfig,
    ) -> Result<Self, GatewayError> {
        let routing = routing::RoutingCache::load(Arc::clone(&store)).await?;
        let dispatcher = Dispatcher::new(Arc::clone(&store), Arc::clone(&clock), config.delivery.clone())?;
        let (writer, writer_task) = ingest::IngestWriter::spawn(
            Arc::clone(&store),
            Arc::clone(&clock),
            dispatcher.waker(),
            config.ingest,
        );

        let graph = pagewire_graph::GraphClient::new(config.graph.clone())?;
        let mut router = Router::new().route("/healthz", get(|| async { "ok" }));
        if config.role.serves_http_api() {
            let ingress = ingress::IngressState {
                routing: routing.clone(),
                writer,
                clock: Arc::clone(&clock),
                unverifiable: Arc::default(),
                in_flight: Arc::new(tokio::sync::Semaphore::new(config.ingest.max_in_flight.max(1))),
                shed: Arc::default(),
                refusals: Arc::new(refusals::RefusalLog::new(Arc::clone(&store), Arc::clone(&clock))),
            };
            let admin = admin::AdminState {
                store: Arc::clone(&store),
                routing: routing.clone(),
                auth: auth::AuthState::new(
                    Arc::clone(&store),
                    config.admin_token,
                    Arc::clone(&clock),
                    tokens::TokenService::new(Arc::clone(&store), Arc::clone(&clock), config.token_ttl),
                ),
                clock: Arc::clone(&clock),
                destinations: std::sync::Arc::clone(&config.delivery.destinations),
                graph: graph.clone(),
                public_url: config.public_url.clone(),
            };
            let admin = ratelimit::apply(admin::router(admin), config.rate_limit);
            router = router.merge(ingress::router(ingress)).merge(admin);
        }
        let maintenance = Maintenance {
            store: Arc::clone(&store),
            clock: Arc::clone(&clock),
            graph: graph.clone(),
            dedup_window: config.dedup_window,
            retention: config.retention,
        };
        let router = router
            .fallback(|| async { error::ApiError::NotFound("this route") })
            // Handlers log their own failures (an internal error with its id, an unavailable store,
            // shedding at most once per interval); a line per 5xx here would flood the log exactly
            // when the node sheds load.
            .layer(
                tower_http::trace::TraceLayer::new_for_http()
                    .on_failure(tower_http::trace::DefaultOnFailure::new().level(tracing::Level::DEBUG)),
            );
        Ok(Self {
            router,
            dispatcher,
            routing,
            routing_changed: Arc::new(tokio::sync::Notify::new()),
            writer_task,
            maintenance,
            clock,
            config,
        })
    }

    /// The dispatcher, to drive delivery by hand in tests and tools.
    pub fn dispatcher(&self) -> &Dispatcher {
        &self.dispatcher
    }

    /// Housekeeping, to run by hand in tests and tools.
    pub fn maintenance(&self) -> &Maintenance {
        &self.maintenance
    }

    /// Notify it when apps, Pages or endpoints were changed elsewhere (another node sharing the
    /// database), so that the routing snapshot is reloaded now rather than at the next refresh.
    pub fn routing_changed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.routing_changed)
    }

    /// Serves until `shutdown` is cancelled, then drains: in-flight requests finish, the ingest writer
    /// commits what it was given, the dispatcher finishes its round.
    pub async fn serve(self, listener: TcpListener, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let Self {
            router,
            dispatcher,
            routing,
            routing_changed,
            writer_task,
            maintenance,
            clock,
            config,
        } = self;
        let dispatcher_task = config
            .role
            .delivers()
            .then(|| tokio::spawn(dispatcher.run(shutdown.clone())));
        let refresh_task = tokio::spawn(refresh_routing(
            routing,
            routing_changed,
            config.routing_refresh,
            shutdown.clone(),
        ));
        let maintenance_task = tokio::spawn(maintenance.run(config.maintenance_interval, shutdown.clone()));

        let listener = listener::BoundedListener::new(listener, config.max_connections, clock);
        listener::serve(listener, router, config.idle_timeout, shutdown.clone()).await;
        shutdown.cancel();
        // The router held the last handles of the ingest writer; it now drains and stops.
        if let Err(e) = writer_task.await {
            tracing::error!(error = %e, "the ingest writer failed");
        }
        if let Some(task) = dispatcher_task {
            if let Err(e) = task.await {
                tracing::error!(error = %e, "the dispatcher failed");
            }
        }
        refresh_task.abort();
        maintenance_task.abort();
        Ok(())
    }
}

/// Reloads the routing snapshot every `every`, and as soon as `changed` is notified (changes made
/// through this node's admin API reload it themselves).
async fn refresh_routing(
    routing: routing::RoutingCache,
    changed: Arc<tokio::sync::Notify>,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
            () = changed.notified() => {}
        }
        if let Err(e) = routing.reload().await {
            tracing::warn!(error = %e, "refreshing the routing tables failed; keeping the last ones");
        }
    }
}
