//! The `/v1` admin API: onboarding (tenants, API keys, Meta apps, Pages, endpoints) and what a tenant
//! needs to see its traffic (events, deliveries, attempts). Handlers are thin: authenticate with an
//! extractor, validate, call one store use case, map the answer.

use std::sync::Arc;

use axum::extract::{FromRef, Path, State};
use axum::http::StatusCode;
use axum::Router;
use pagewire_core::{Clock, TenantId};
use pagewire_store::{Store, StoreError, Tenant};
use serde::{Deserialize, Serialize};

use crate::auth::{AuthState, Operator};
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::routing::RoutingCache;

mod apps;
mod endpoints;
mod keys;
mod pages;
mod replay;
mod traffic;

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

/// Declares the routes once: the router, and the table tests hold against `openapi.yaml`.
macro_rules! routes {
    ($($method:ident $path:literal => $handler:path;)*) => {
        /// Every admin route as (method, path), in the order declared.
        pub const ROUTES: &[(&str, &str)] = &[$((stringify!($method), $path)),*];

        pub fn router(state: AdminState) -> Router {
            // Routes of one path merge into one method router.
            Router::new()
                $(.route($path, axum::routing::$method($handler)))*
                .layer(axum::middleware::from_fn_with_state(state.clone(), crate::idempotency::guard))
                .with_state(state)
        }
    };
}

routes! {
    post "/v1/tenants" => create_tenant;
    get "/v1/tenants" => list_tenants;
    get "/v1/tenants/{tenant_id}" => get_tenant;
    patch "/v1/tenants/{tenant_id}" => update_tenant;
    post "/v1/tenants/{tenant_id}/api-keys" => keys::create_tenant_key;
    get "/v1/tenants/{tenant_id}/api-keys" => keys::list_tenant_keys;
    delete "/v1/tenants/{tenant_id}/api-keys/{key_id}" => keys::revoke_tenant_key;
    put "/v1/tenants/{tenant_id}/pages/{page_id}" => pages::assign_page;
    get "/v1/page-moves" => pages::list_page_moves;
    post "/v1/api-keys" => keys::create_own_key;
    get "/v1/api-keys" => keys::list_own_keys;
    delete "/v1/api-keys/{key_id}" => keys::revoke_own_key;
    post "/v1/auth/token" => keys::issue_token;
    post "/v1/auth/signing-keys/rotate" => keys::rotate_signing_key;
    post "/v1/apps" => apps::create_app;
    get "/v1/apps" => apps::list_apps;
    get "/v1/apps/{app_id}" => apps::get_app;
    patch "/v1/apps/{app_id}" => apps::update_app;
    delete "/v1/apps/{app_id}" => apps::delete_app;
    post "/v1/apps/{app_id}/rotate-secret" => apps::rotate_app_secret;
    get "/v1/apps/{app_id}/subscription" => apps::get_app_subscription;
    put "/v1/apps/{app_id}/subscription" => apps::set_app_subscription;
    post "/v1/pages" => pages::create_page;
    get "/v1/pages" => pages::list_pages;
    get "/v1/pages/{page_id}" => pages::get_page;
    delete "/v1/pages/{page_id}" => pages::delete_page;
    get "/v1/pages/{page_id}/subscription" => pages::get_subscription;
    put "/v1/pages/{page_id}/subscription" => pages::subscribe;
    delete "/v1/pages/{page_id}/subscription" => pages::unsubscribe;
    post "/v1/endpoints" => endpoints::create_endpoint;
    get "/v1/endpoints" => endpoints::list_endpoints;
    get "/v1/endpoints/{endpoint_id}" => endpoints::get_endpoint;
    patch "/v1/endpoints/{endpoint_id}" => endpoints::update_endpoint;
    delete "/v1/endpoints/{endpoint_id}" => endpoints::delete_endpoint;
    post "/v1/endpoints/{endpoint_id}/rotate-secret" => endpoints::rotate_endpoint_secret;
    post "/v1/endpoints/{endpoint_id}/recover" => replay::recover_endpoint;
    post "/v1/endpoints/{endpoint_id}/test" => endpoints::send_test_event;
    get "/v1/events" => traffic::list_events;
    get "/v1/events/{event_id}" => traffic::get_event;
    post "/v1/events/{event_id}/redeliver" => replay::redeliver_event;
    get "/v1/deliveries" => traffic::list_deliveries;
    get "/v1/deliveries/{delivery_id}" => traffic::get_delivery;
    get "/v1/deliveries/{delivery_id}/attempts" => traffic::list_attempts;
    post "/v1/deliveries/{delivery_id}/retry" => replay::retry_delivery;
    get "/v1/inbound" => traffic::list_inbound;
    get "/v1/inbound/{inbound_id}" => traffic::get_inbound;
    get "/v1/refusals" => traffic::list_refusals;
    get "/v1/stats" => traffic::stats;
}

/// A list answer, newest first. `next_cursor`, when not null, fetches the next (older) page.
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

/// `?limit=` (1 to 500, default 50) and `?cursor=` (a `next_cursor` this API gave).
#[derive(Debug, Default, Deserialize)]
pub struct Paging {
    limit: Option<u32>,
    cursor: Option<String>,
}

impl Paging {
    pub(crate) fn new(limit: Option<u32>, cursor: Option<String>) -> Self {
        Self { limit, cursor }
    }

    pub(crate) fn limit(&self) -> u32 {
        self.limit.unwrap_or(50).clamp(1, 500)
    }

    /// What to fetch from the store: one more than the page, to know whether another follows.
    pub(crate) fn fetch(&self) -> u32 {
        self.limit() + 1
    }

    /// The id the page starts before.
    pub(crate) fn before(&self) -> Result<Option<String>, ApiError> {
        use base64::Engine;
        self.cursor
            .as_deref()
            .map(|cursor| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(cursor)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .filter(|id| id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                    .ok_or_else(|| ApiError::Validation(String::from("`cursor` is not one this API gave")))
            })
            .transpose()
    }

    /// Cuts `items` (newest first, at most [`Paging::fetch`] of them) to a page.
    pub(crate) fn page<T>(&self, mut items: Vec<T>, id: impl Fn(&T) -> &str) -> List<T> {
        use base64::Engine;
        let limit = self.limit() as usize;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items
                .last()
                .map(|last| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id(last)))
        } else {
            None
        };
        List {
            data: items,
            next_cursor,
        }
    }

    /// Pages a whole collection read at once (a tenant's keys, apps, Pages, endpoints).
    pub(crate) fn page_all<T>(&self, mut items: Vec<T>, id: impl Fn(&T) -> &str) -> Result<List<T>, ApiError> {
        items.sort_by(|a, b| id(b).cmp(id(a)));
        if let Some(before) = self.before()? {
            items.retain(|item| id(item) < before.as_str());
        }
        items.truncate(self.fetch() as usize);
        Ok(self.page(items, id))
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

async fn list_tenants(
    State(state): State<AdminState>,
    _: Operator,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<ApiJson<List<TenantView>>, ApiError> {
    let tenants = state.store.list_tenants().await?;
    let page = paging.page_all(tenants, |t| t.id.as_str())?;
    Ok(ApiJson(List {
        data: page.data.into_iter().map(TenantView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub(crate) fn not_found(what: &'static str) -> impl Fn(StoreError) -> ApiError {
    move |e| match e {
        StoreError::NotFound => ApiError::NotFound(what),
        other => other.into(),
    }
}
