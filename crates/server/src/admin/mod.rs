//! The `/v1` admin API: onboarding (tenants, API keys, Meta apps, Pages, endpoints) and what a tenant
//! needs to see its traffic (events, deliveries, attempts). Handlers are thin: authenticate with an
//! extractor, validate, call one store use case, map the answer.

use std::sync::Arc;

use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use pagewire_core::{Clock, DeliveryId, EventId, TenantId};
use pagewire_store::{Delivery, Store, StoreError, Tenant};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::auth::{AuthState, Operator, TenantContext};
use crate::error::{ApiError, ApiJson};
use crate::routing::RoutingCache;

mod apps;
mod endpoints;
mod keys;
mod pages;
mod replay;

/// What the admin API needs.
#[derive(Debug, Clone)]
pub struct AdminState {
    pub store: Arc<dyn Store>,
    pub routing: RoutingCache,
    pub auth: AuthState,
    pub clock: Arc<dyn Clock>,
    /// Where endpoint URLs may point.
    pub destinations: Arc<pagewire_delivery::DestinationPolicy>,
    pub graph: pagewire_graph::GraphClient,
    /// The gateway's address as Meta reaches it, for app webhook subscriptions.
    pub public_url: Option<String>,
}

impl FromRef<AdminState> for AuthState {
    fn from_ref(state: &AdminState) -> Self {
        state.auth.clone()
    }
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/v1/tenants", post(create_tenant).get(list_tenants))
        .route("/v1/tenants/{tenant_id}", get(get_tenant).patch(update_tenant))
        .route(
            "/v1/tenants/{tenant_id}/api-keys",
            post(keys::create_tenant_key).get(keys::list_tenant_keys),
        )
        .route(
            "/v1/tenants/{tenant_id}/api-keys/{key_id}",
            axum::routing::delete(keys::revoke_tenant_key),
        )
        .route("/v1/api-keys", post(keys::create_own_key).get(keys::list_own_keys))
        .route("/v1/api-keys/{key_id}", axum::routing::delete(keys::revoke_own_key))
        .route("/v1/auth/token", post(keys::issue_token))
        .route("/v1/auth/signing-keys/rotate", post(keys::rotate_signing_key))
        .route("/v1/apps", post(apps::create_app).get(apps::list_apps))
        .route(
            "/v1/apps/{app_id}",
            get(apps::get_app).patch(apps::update_app).delete(apps::delete_app),
        )
        .route("/v1/apps/{app_id}/rotate-secret", post(apps::rotate_app_secret))
        .route("/v1/pages", post(pages::create_page).get(pages::list_pages))
        .route("/v1/pages/{page_id}", get(pages::get_page).delete(pages::delete_page))
        .route(
            "/v1/pages/{page_id}/subscription",
            get(pages::get_subscription)
                .put(pages::subscribe)
                .delete(pages::unsubscribe),
        )
        .route(
            "/v1/apps/{app_id}/subscription",
            get(apps::get_app_subscription).put(apps::set_app_subscription),
        )
        .route(
            "/v1/endpoints",
            post(endpoints::create_endpoint).get(endpoints::list_endpoints),
        )
        .route(
            "/v1/endpoints/{endpoint_id}",
            get(endpoints::get_endpoint).patch(endpoints::update_endpoint),
        )
        .route(
            "/v1/endpoints/{endpoint_id}/rotate-secret",
            post(endpoints::rotate_endpoint_secret),
        )
        .route("/v1/events", get(list_events))
        .route("/v1/deliveries", get(list_deliveries))
        .route("/v1/deliveries/{delivery_id}/attempts", get(list_attempts))
        .route("/v1/deliveries/{delivery_id}/retry", post(replay::retry_delivery))
        .route("/v1/events/{event_id}/redeliver", post(replay::redeliver_event))
        .route("/v1/endpoints/{endpoint_id}/recover", post(replay::recover_endpoint))
        .route("/v1/endpoints/{endpoint_id}/test", post(endpoints::send_test_event))
        .with_state(state)
}

/// A list answer. Lists are newest first; `next_cursor` is reserved for pagination.
#[derive(Debug, Serialize)]
pub struct List<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> From<Vec<T>> for List<T> {
    fn from(data: Vec<T>) -> Self {
        Self {
            data,
            next_cursor: None,
        }
    }
}

/// For update fields where `null` clears and absence keeps: absent is `None`, `null` is
/// `Some(None)` (with `#[serde(default, deserialize_with = "nullable")]`).
pub(crate) fn nullable<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

pub(crate) fn iso(ms: i64) -> String {
    pagewire_core::clock::rfc3339_ms(ms)
}

pub(crate) fn required(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::Validation(format!("`{field}` must not be empty")));
    }
    if value.len() > max {
        return Err(ApiError::Validation(format!(
            "`{field}` must be at most {max} characters"
        )));
    }
    Ok(())
}

/// Meta's ids are decimal digits.
pub(crate) fn meta_id(field: &str, value: &str) -> Result<(), ApiError> {
    if value.is_empty() || value.len() > 32 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::Validation(format!(
            "`{field}` must be a Meta id: 1 to 32 decimal digits"
        )));
    }
    Ok(())
}

// ---- tenants and keys (operator) ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    name: String,
}

#[derive(Debug, Serialize)]
pub struct TenantView {
    id: TenantId,
    name: String,
    /// Days final events are kept; null for the operator's default.
    retention_days: Option<u32>,
    /// Whether Page subscriptions found missing are subscribed again (else reported).
    auto_resubscribe: bool,
    created_at: String,
}

impl From<Tenant> for TenantView {
    fn from(t: Tenant) -> Self {
        Self {
            id: t.id,
            name: t.name,
            retention_days: t.retention_days,
            auto_resubscribe: t.auto_resubscribe,
            created_at: iso(t.created_at),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateTenant {
    /// Days final events, deliveries and attempts are kept; null returns to the default.
    #[serde(default, deserialize_with = "nullable")]
    retention_days: Option<Option<u32>>,
    auto_resubscribe: Option<bool>,
}

async fn get_tenant(
    State(state): State<AdminState>,
    _: Operator,
    Path(tenant_id): Path<String>,
) -> Result<ApiJson<TenantView>, ApiError> {
    let id: TenantId = tenant_id.parse().map_err(|_| ApiError::NotFound("tenant"))?;
    Ok(ApiJson(
        state.store.get_tenant(&id).await.map_err(not_found("tenant"))?.into(),
    ))
}

async fn update_tenant(
    State(state): State<AdminState>,
    _: Operator,
    Path(tenant_id): Path<String>,
    ApiJson(body): ApiJson<UpdateTenant>,
) -> Result<ApiJson<TenantView>, ApiError> {
    let id: TenantId = tenant_id.parse().map_err(|_| ApiError::NotFound("tenant"))?;
    if body
        .retention_days
        .flatten()
        .is_some_and(|days| !(1..=3650).contains(&days))
    {
        return Err(ApiError::Validation(String::from(
            "`retention_days` must be between 1 and 3650",
        )));
    }
    let mut tenant = state.store.get_tenant(&id).await.map_err(not_found("tenant"))?;
    if let Some(days) = body.retention_days {
        tenant = state
            .store
            .set_tenant_retention(&id, days)
            .await
            .map_err(not_found("tenant"))?;
        tracing::info!(tenant_id = %tenant.id, retention_days = tenant.retention_days, "tenant retention set");
    }
    if let Some(on) = body.auto_resubscribe {
        tenant = state
            .store
            .set_tenant_auto_resubscribe(&id, on)
            .await
            .map_err(not_found("tenant"))?;
        tracing::info!(tenant_id = %tenant.id, auto_resubscribe = on, "tenant subscription repair set");
    }
    Ok(ApiJson(tenant.into()))
}

async fn create_tenant(
    State(state): State<AdminState>,
    _: Operator,
    ApiJson(body): ApiJson<CreateTenant>,
) -> Result<(StatusCode, ApiJson<TenantView>), ApiError> {
    required("name", &body.name, 200)?;
    let tenant = state
        .store
        .create_tenant(body.name.trim(), state.clock.now_ms())
        .await?;
    tracing::info!(tenant_id = %tenant.id, "tenant created");
    Ok((StatusCode::CREATED, ApiJson(tenant.into())))
}

async fn list_tenants(State(state): State<AdminState>, _: Operator) -> Result<ApiJson<List<TenantView>>, ApiError> {
    let tenants = state.store.list_tenants().await?;
    Ok(ApiJson(
        tenants.into_iter().map(TenantView::from).collect::<Vec<_>>().into(),
    ))
}

pub(crate) fn not_found(what: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |e| match e {
        StoreError::NotFound => ApiError::NotFound(what),
        other => other.into(),
    }
}

// ---- events and deliveries ----

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    limit: Option<u32>,
    event_id: Option<String>,
}

impl ListQuery {
    fn limit(&self) -> u32 {
        self.limit.unwrap_or(50).clamp(1, 500)
    }
}

async fn list_events(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Query(query): Query<ListQuery>,
) -> Result<ApiJson<List<Box<RawValue>>>, ApiError> {
    let events = state.store.list_events(&tenant.tenant_id, query.limit()).await?;
    let data = events
        .into_iter()
        .map(|e| RawValue::from_string(e.payload).map_err(ApiError::internal))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ApiJson(data.into()))
}

#[derive(Debug, Serialize)]
pub struct DeliveryView {
    id: DeliveryId,
    event_id: EventId,
    endpoint_id: pagewire_core::EndpointId,
    status: &'static str,
    attempts: u32,
    next_attempt_at: Option<String>,
    last_status: Option<u16>,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        let pending = d.status == pagewire_store::DeliveryStatus::Pending;
        Self {
            id: d.id,
            event_id: d.event_id,
            endpoint_id: d.endpoint_id,
            status: d.status.as_str(),
            attempts: d.attempts,
            next_attempt_at: pending.then(|| iso(d.next_attempt_at)),
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: iso(d.created_at),
            updated_at: iso(d.updated_at),
        }
    }
}

async fn list_deliveries(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Query(query): Query<ListQuery>,
) -> Result<ApiJson<List<DeliveryView>>, ApiError> {
    let deliveries = match &query.event_id {
        Some(id) => {
            let event_id: EventId = id
                .parse()
                .map_err(|e| ApiError::Validation(format!("`event_id`: {e}")))?;
            state.store.deliveries_of_event(&tenant.tenant_id, &event_id).await?
        }
        None => state.store.list_deliveries(&tenant.tenant_id, query.limit()).await?,
    };
    Ok(ApiJson(
        deliveries
            .into_iter()
            .map(DeliveryView::from)
            .collect::<Vec<_>>()
            .into(),
    ))
}

#[derive(Debug, Serialize)]
pub struct AttemptView {
    attempt: u32,
    started_at: String,
    duration_ms: i64,
    status_code: Option<u16>,
    outcome: String,
    error: Option<String>,
    response_excerpt: Option<String>,
}

async fn list_attempts(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(delivery_id): Path<String>,
) -> Result<ApiJson<List<AttemptView>>, ApiError> {
    let delivery_id: DeliveryId = delivery_id.parse().map_err(|_| ApiError::NotFound("delivery"))?;
    let attempts = state
        .store
        .attempts_of_delivery(&tenant.tenant_id, &delivery_id)
        .await?;
    let data = attempts
        .into_iter()
        .map(|a| AttemptView {
            attempt: a.attempt,
            started_at: iso(a.started_at),
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            outcome: a.outcome,
            error: a.error,
            response_excerpt: a.response_excerpt,
        })
        .collect::<Vec<_>>();
    Ok(ApiJson(data.into()))
}
