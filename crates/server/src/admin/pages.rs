//! Pages (and Instagram accounts, WhatsApp Business Accounts): onboarding, checked against the
//! Graph API when an access token is given, and the Page's webhook subscription.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use pagewire_core::{Platform, Secret, TenantId};
use pagewire_store::{NewPage, Page, StoreError};
use serde::{Deserialize, Serialize};

use super::{iso, meta_id, not_found, required, AdminState, List, Paging};
use crate::auth::TenantContext;
use crate::error::{ApiError, ApiJson, ApiQuery};
use crate::subscriptions::{self, SubscriptionError, SubscriptionState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreatePage {
    page_id: String,
    app_id: String,
    /// A Page (or system user) access token. When given, it is checked against the Graph API, the
    /// Page's name is read, and the subscription can be managed.
    access_token: Option<Secret>,
    platform: Option<String>,
    name: Option<String>,
    /// WhatsApp only: the account's phone-number ids.
    phone_number_ids: Option<Vec<String>>,
    /// Webhook fields to subscribe instead of the platform's defaults.
    subscribed_fields: Option<Vec<String>>,
    /// Subscribe the Page to the app while onboarding it (default: true for a Messenger Page with
    /// an access token).
    subscribe: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct SubscriptionCheckView {
    status: String,
    detail: Option<String>,
    checked_at: String,
}

#[derive(Debug, Serialize)]
pub struct PageView {
    id: pagewire_core::PageRecordId,
    page_id: String,
    tenant_id: TenantId,
    app_id: String,
    platform: Platform,
    name: Option<String>,
    has_access_token: bool,
    phone_number_ids: Vec<String>,
    /// The fields the Page subscribes to (its own choice or the platform's defaults); null where the
    /// subscription is not a Page's.
    subscribed_fields: Option<Vec<String>>,
    /// What the last subscription check found.
    subscription_check: Option<SubscriptionCheckView>,
    created_at: String,
}

impl From<Page> for PageView {
    fn from(p: Page) -> Self {
        Self {
            subscribed_fields: subscriptions::wanted_fields(&p),
            subscription_check: p.subscription.map(|c| SubscriptionCheckView {
                status: c.status,
                detail: c.detail,
                checked_at: iso(c.checked_at),
            }),
            id: p.id,
            page_id: p.page_id,
            tenant_id: p.tenant_id,
            app_id: p.app_id,
            platform: p.platform,
            name: p.name,
            has_access_token: p.has_access_token,
            phone_number_ids: p.phone_number_ids,
            created_at: iso(p.created_at),
        }
    }
}

fn check_fields(fields: &[String]) -> Result<(), ApiError> {
    if fields.is_empty() || fields.len() > 64 {
        return Err(ApiError::Validation(String::from(
            "`subscribed_fields` must list 1 to 64 webhook fields",
        )));
    }
    let field = |f: &str| !f.is_empty() && f.len() <= 64 && f.bytes().all(|b| b.is_ascii_lowercase() || b == b'_');
    if let Some(bad) = fields.iter().find(|f| !field(f)) {
        return Err(ApiError::Validation(format!(
            "`subscribed_fields` has `{bad}`: webhook fields are lowercase words joined by `_`"
        )));
    }
    Ok(())
}

pub async fn create_page(
    State(state): State<AdminState>,
    tenant: TenantContext,
    ApiJson(body): ApiJson<CreatePage>,
) -> Result<(StatusCode, ApiJson<PageView>), ApiError> {
    meta_id("page_id", &body.page_id)?;
    meta_id("app_id", &body.app_id)?;
    if let Some(token) = &body.access_token {
        required("access_token", token.expose(), 1024)?;
    }
    if let Some(name) = &body.name {
        required("name", name, 200)?;
    }
    if let Some(fields) = &body.subscribed_fields {
        check_fields(fields)?;
    }
    let platform = match body.platform.as_deref() {
        None => Platform::Messenger,
        Some(p) => Platform::parse(p).filter(|p| *p != Platform::Page).ok_or_else(|| {
            ApiError::Validation(String::from("`platform` must be one of messenger, instagram, whatsapp"))
        })?,
    };
    if body.subscribed_fields.is_some() && platform != Platform::Messenger {
        return Err(ApiError::Validation(String::from(
            "`subscribed_fields` apply to Messenger Pages",
        )));
    }
    let phone_number_ids = body.phone_number_ids.unwrap_or_default();
    if !phone_number_ids.is_empty() && platform != Platform::Whatsapp {
        return Err(ApiError::Validation(String::from(
            "`phone_number_ids` belong to WhatsApp Business Accounts (`platform: whatsapp`)",
        )));
    }
    for id in &phone_number_ids {
        meta_id("phone_number_ids[]", id)?;
    }
    // A Page is onboarded under the tenant's own app or a shared one, never another tenant's.
    let app = state.store.get_app(&body.app_id).await.map_err(not_found("Meta app"))?;
    if app.tenant_id.as_ref().is_some_and(|owner| *owner != tenant.tenant_id) {
        return Err(ApiError::NotFound("Meta app"));
    }
    taken_check(&state, &tenant.tenant_id, &body.page_id).await?;
    // With a token, the Graph API says whether it is valid, for this Page, and what the Page is called.
    let mut name = body.name;
    if let Some(token) = &body.access_token {
        let info = state
            .graph
            .page(&body.page_id, token.expose(), app.app_secret.expose())
            .await?;
        if info.id != body.page_id {
            return Err(ApiError::Validation(format!(
                "the access token is for {} (`{}`), not for `{}`",
                info.name.as_deref().unwrap_or("another object"),
                info.id,
                body.page_id
            )));
        }
        if name.is_none() {
            name = info.name;
        }
        // Subscribing now shows at once whether the token has the permissions it needs.
        if platform == Platform::Messenger && body.subscribe != Some(false) {
            let fields = body.subscribed_fields.clone().unwrap_or_else(|| {
                subscriptions::MESSENGER_FIELDS
                    .iter()
                    .map(|f| (*f).to_owned())
                    .collect()
            });
            state
                .graph
                .subscribe_page(&body.page_id, token.expose(), app.app_secret.expose(), &fields)
                .await?;
        }
    } else if body.subscribe == Some(true) {
        return Err(SubscriptionError::NoToken.into());
    }
    let page = state
        .store
        .create_page(
            NewPage {
                page_id: body.page_id.clone(),
                tenant_id: tenant.tenant_id.clone(),
                app_id: body.app_id,
                platform,
                name,
                access_token: body.access_token,
                phone_number_ids,
                subscribed_fields: body.subscribed_fields,
            },
            state.clock.now_ms(),
        )
        .await
        .map_err(|e| match e {
            // Onboarded by someone else between the check and the insert.
            StoreError::Conflict { .. } => ApiError::PageTaken("this Page is already onboarded"),
            other => other.into(),
        })?;
    state.routing.reload().await?;
    tracing::info!(tenant_id = %page.tenant_id, page_id = %page.page_id, app_id = %page.app_id, "Page onboarded");
    Ok((StatusCode::CREATED, ApiJson(page.into())))
}

/// A Page has one tenant: say clearly whether it is this tenant's already or another's.
async fn taken_check(state: &AdminState, tenant_id: &TenantId, page_id: &str) -> Result<(), ApiError> {
    match state.store.page_owner(page_id).await? {
        None => Ok(()),
        Some(owner) if owner == *tenant_id => Err(ApiError::PageTaken("you have already onboarded this Page")),
        Some(_) => Err(ApiError::PageTaken(
            "this Page is onboarded by another tenant; it must be removed there first",
        )),
    }
}

pub async fn list_pages(
    State(state): State<AdminState>,
    tenant: TenantContext,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<ApiJson<List<PageView>>, ApiError> {
    let pages = state.store.list_pages(&tenant.tenant_id).await?;
    let page = paging.page_all(pages, |p| p.id.as_str())?;
    Ok(ApiJson(List {
        data: page.data.into_iter().map(PageView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub async fn get_page(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(page_id): Path<String>,
) -> Result<ApiJson<PageView>, ApiError> {
    let page = state
        .store
        .get_page(&tenant.tenant_id, &page_id)
        .await
        .map_err(not_found("Page"))?;
    Ok(ApiJson(page.into()))
}

/// Offboards a Page: its webhooks are no longer routed to the tenant. Its subscription at Meta is
/// left as it is (unsubscribe first to stop Meta sending them).
pub async fn delete_page(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(page_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .store
        .delete_page(&tenant.tenant_id, &page_id)
        .await
        .map_err(not_found("Page"))?;
    state.routing.reload().await?;
    tracing::info!(tenant_id = %tenant.tenant_id, page_id, "Page offboarded");
    Ok(StatusCode::NO_CONTENT)
}

impl From<SubscriptionError> for ApiError {
    fn from(e: SubscriptionError) -> Self {
        match e {
            SubscriptionError::Graph(e) => Self::Graph(e),
            other @ (SubscriptionError::Unsupported | SubscriptionError::NoToken) => {
                Self::Validation(other.to_string())
            }
        }
    }
}

async fn credentials(
    state: &AdminState,
    tenant: &TenantContext,
    page_id: &str,
) -> Result<pagewire_store::PageCredentials, ApiError> {
    state
        .store
        .page_credentials(&tenant.tenant_id, page_id)
        .await
        .map_err(not_found("Page"))
}

/// The fields Pagewire wants, the fields Meta has, and whether they drift.
pub async fn get_subscription(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(page_id): Path<String>,
) -> Result<ApiJson<SubscriptionState>, ApiError> {
    let creds = credentials(&state, &tenant, &page_id).await?;
    Ok(ApiJson(subscriptions::inspect(&state.graph, &creds).await?))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subscribe {
    /// Fields to subscribe from now on instead of the current ones; null returns to the defaults.
    #[serde(default, deserialize_with = "super::nullable")]
    subscribed_fields: Option<Option<Vec<String>>>,
}

/// Subscribes the Page to its app with the fields it wants (`POST /{page-id}/subscribed_apps`).
pub async fn subscribe(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(page_id): Path<String>,
    body: bytes::Bytes,
) -> Result<ApiJson<SubscriptionState>, ApiError> {
    let body: Subscribe = if body.iter().all(u8::is_ascii_whitespace) {
        Subscribe::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::Validation(e.to_string()))?
    };
    let mut creds = credentials(&state, &tenant, &page_id).await?;
    if let Some(fields) = body.subscribed_fields {
        if let Some(fields) = &fields {
            check_fields(fields)?;
        }
        if creds.page.platform != Platform::Messenger {
            return Err(SubscriptionError::Unsupported.into());
        }
        creds.page = state
            .store
            .set_page_fields(&tenant.tenant_id, &page_id, fields.as_deref())
            .await
            .map_err(not_found("Page"))?;
    }
    let subscribed = subscriptions::subscribe(&state.graph, &creds).await?;
    tracing::info!(tenant_id = %tenant.tenant_id, page_id, fields = ?subscribed.wanted, "Page subscribed");
    Ok(ApiJson(subscribed))
}

/// Unsubscribes the Page from its app (`DELETE /{page-id}/subscribed_apps`): Meta stops sending its
/// webhooks.
pub async fn unsubscribe(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(page_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let creds = credentials(&state, &tenant, &page_id).await?;
    subscriptions::unsubscribe(&state.graph, &creds).await?;
    tracing::info!(tenant_id = %tenant.tenant_id, page_id, "Page unsubscribed");
    Ok(StatusCode::NO_CONTENT)
}
