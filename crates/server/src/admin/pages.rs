//! Pages (and Instagram accounts, WhatsApp Business Accounts): onboarding, checked against the
//! Graph API when an access token is given, and the Page's webhook subscription.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use pagewire_core::{Platform, Secret, TenantId};
use pagewire_store::{NewPage, Page, PageProof, StoreError};
use serde::{Deserialize, Serialize};

use super::{iso, meta_id, not_found, required, AdminState, List, Paging};
use crate::auth::{Caller, Operator, TenantContext};
use crate::error::{ApiError, ApiJson, ApiQuery, OptionalJson};
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
    /// What shows the Page is this tenant's: `access_token` (confirmed by the Graph API),
    /// `operator`, or `none` (a claim without proof).
    proof: &'static str,
    /// Whether the Page's events reach the tenant: not for a claim without proof (Pages onboarded
    /// before proof was asked for still do, and are listed to the operator as unproven).
    receives_events: bool,
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
            proof: match p.proof {
                PageProof::AccessToken | PageProof::Operator => p.proof.as_str(),
                PageProof::Legacy | PageProof::Unproven => PageProof::Unproven.as_str(),
            },
            receives_events: p.proof.is_routed(),
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
    // Anyone can name any Page id: only a proof makes the Page the tenant's. Without one, the claim
    // is kept but receives nothing, and gives way to whoever proves the Page.
    let held = state.store.page_owner(&body.page_id).await?;
    if let Some((_, proof)) = held {
        if proof.is_proven() || body.access_token.is_none() {
            return Err(page_taken());
        }
    }
    let mut name = body.name;
    let proof = match &body.access_token {
        Some(token) => {
            let info = prove(&state, platform, &body.page_id, token, app.app_secret.expose()).await?;
            if name.is_none() {
                name = info.name;
            }
            PageProof::AccessToken
        }
        None if body.subscribe == Some(true) => return Err(SubscriptionError::NoToken.into()),
        None => PageProof::Unproven,
    };
    // Subscribing now shows at once whether the token has the permissions it needs.
    if let (Some(token), Platform::Messenger, false) = (&body.access_token, platform, body.subscribe == Some(false)) {
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
    let new = NewPage {
        page_id: body.page_id.clone(),
        tenant_id: tenant.tenant_id.clone(),
        app_id: body.app_id,
        platform,
        name,
        access_token: body.access_token,
        phone_number_ids,
        subscribed_fields: body.subscribed_fields,
        proof,
    };
    let now = state.clock.now_ms();
    let (page, taken_from) = if proof.is_proven() {
        state.store.take_over_page(new, now).await
    } else {
        state.store.create_page(new, now).await.map(|page| (page, None))
    }
    .map_err(|e| match e {
        // Onboarded by someone else between the check and the write.
        StoreError::Conflict { .. } => page_taken(),
        other => other.into(),
    })?;
    state.routing.reload().await?;
    match taken_from {
        Some(from) => tracing::warn!(
            tenant_id = %page.tenant_id,
            from_tenant_id = %from,
            page_id = %page.page_id,
            "Page proven with its access token: taken from an unproven claim"
        ),
        None => tracing::info!(
            tenant_id = %page.tenant_id,
            page_id = %page.page_id,
            app_id = %page.app_id,
            proof = page.proof.as_str(),
            "Page onboarded"
        ),
    }
    Ok((StatusCode::CREATED, ApiJson(page.into())))
}

/// The one answer to a Page someone already has, whoever it is: the words never tell whose.
fn page_taken() -> ApiError {
    ApiError::PageTaken(
        "this Page is onboarded already. Onboarding it with its access token takes it from a claim \
         without one; a proven Page is moved only by the operator",
    )
}

/// Checks with the Graph API that `token` speaks for the Page (a Messenger Page's own access token)
/// or sees the account (Instagram, WhatsApp), and reads its name.
async fn prove(
    state: &AdminState,
    platform: Platform,
    page_id: &str,
    token: &Secret,
    app_secret: &str,
) -> Result<pagewire_graph::PageInfo, ApiError> {
    let info = match platform {
        Platform::Messenger => state.graph.me(token.expose(), app_secret).await?,
        _ => state.graph.page(page_id, token.expose(), app_secret).await?,
    };
    if info.id != page_id {
        return Err(ApiError::Validation(format!(
            "the access token is not `{page_id}`'s: a Page is proven with its own Page access token"
        )));
    }
    Ok(info)
}

#[derive(Debug, Default, Deserialize)]
pub struct PageListQuery {
    limit: Option<u32>,
    cursor: Option<String>,
    /// The operator's view: `true` lists only Pages without proof.
    unproven: Option<bool>,
}

/// A tenant's Pages; with the operator's token, every tenant's (`?unproven=true`: those whose
/// claim is not proven, to approve or move).
pub async fn list_pages(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<PageListQuery>,
) -> Result<ApiJson<List<PageView>>, ApiError> {
    let paging = Paging::new(query.limit, query.cursor);
    let mut pages = match &caller {
        Caller::Tenant(tenant_id) => state.store.list_pages(tenant_id).await?,
        Caller::Operator => state.store.all_pages().await?,
    };
    if query.unproven == Some(true) {
        pages.retain(|p| !p.proof.is_proven());
    }
    let page = paging.page_all(pages, |p| p.id.as_str())?;
    Ok(ApiJson(List {
        data: page.data.into_iter().map(PageView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignPage {
    /// The app the Page's webhooks come from: a shared app or the tenant's own (default: the
    /// Page's app, when that may serve the tenant).
    app_id: Option<String>,
}

/// The operator gives a Page to a tenant, proven: it approves a tenant's own claim, or moves the
/// Page from whoever had it (its access token stays behind). Every move is recorded.
pub async fn assign_page(
    State(state): State<AdminState>,
    _: Operator,
    Path((tenant_id, page_id)): Path<(String, String)>,
    OptionalJson(body): OptionalJson<AssignPage>,
) -> Result<ApiJson<PageView>, ApiError> {
    let tenant_id: TenantId = tenant_id.parse().map_err(|_| ApiError::NotFound("tenant"))?;
    state.store.get_tenant(&tenant_id).await.map_err(not_found("tenant"))?;
    let (current, _) = state
        .store
        .page_owner(&page_id)
        .await?
        .ok_or(ApiError::NotFound("Page"))?;
    let app_id = match body.app_id {
        Some(app_id) => app_id,
        None => {
            state
                .store
                .get_page(&current, &page_id)
                .await
                .map_err(not_found("Page"))?
                .app_id
        }
    };
    let app = state.store.get_app(&app_id).await.map_err(not_found("Meta app"))?;
    if app.tenant_id.as_ref().is_some_and(|owner| *owner != tenant_id) {
        return Err(ApiError::Validation(format!(
            "app `{app_id}` is another tenant's own; give the Page a shared app or one of the tenant's (`app_id`)"
        )));
    }
    let (page, moved_from) = state
        .store
        .assign_page(&page_id, &tenant_id, &app_id, state.clock.now_ms())
        .await
        .map_err(not_found("Page"))?;
    state.routing.reload().await?;
    match moved_from {
        Some(from) => tracing::warn!(
            tenant_id = %page.tenant_id,
            from_tenant_id = %from,
            page_id = %page.page_id,
            app_id = %page.app_id,
            "the operator moved a Page to another tenant"
        ),
        None => tracing::info!(
            tenant_id = %page.tenant_id,
            page_id = %page.page_id,
            app_id = %page.app_id,
            "the operator approved a Page"
        ),
    }
    Ok(ApiJson(page.into()))
}

#[derive(Debug, Serialize)]
pub struct PageMoveView {
    page_id: String,
    from_tenant_id: Option<TenantId>,
    to_tenant_id: TenantId,
    /// `proven_claim` or `operator`.
    reason: String,
    moved_at: String,
}

#[derive(Debug, Default, Deserialize)]
pub struct PageMovesQuery {
    page_id: Option<String>,
}

/// Every recorded move of a Page between tenants (of one Page with `?page_id=`), newest first.
pub async fn list_page_moves(
    State(state): State<AdminState>,
    _: Operator,
    ApiQuery(query): ApiQuery<PageMovesQuery>,
) -> Result<ApiJson<List<PageMoveView>>, ApiError> {
    let moves = state.store.page_moves(query.page_id.as_deref()).await?;
    Ok(ApiJson(
        moves
            .into_iter()
            .map(|m| PageMoveView {
                page_id: m.page_id,
                from_tenant_id: m.from_tenant,
                to_tenant_id: m.to_tenant,
                reason: m.reason,
                moved_at: iso(m.moved_at),
            })
            .collect::<Vec<_>>()
            .into(),
    ))
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
    OptionalJson(body): OptionalJson<Subscribe>,
) -> Result<ApiJson<SubscriptionState>, ApiError> {
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
