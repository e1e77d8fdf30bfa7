//! Meta apps: a tenant's own, or the operator's shared apps that many tenants' Pages subscribe to.
//! Secrets never come back out; a rotation keeps the old secret verifying for an overlap, as Meta's
//! "reset app secret" leaves webhooks signed with either for a while.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use pagewire_core::{Secret, TenantId};
use pagewire_store::{AppUpdate, MetaApp, NewMetaApp};
use serde::{Deserialize, Serialize};

use super::{iso, meta_id, not_found, required, AdminState, List, Paging};
use crate::auth::{generate_token, Caller};
use crate::error::{ApiError, ApiJson, ApiQuery, OptionalJson};

/// The prefix of generated verify tokens.
const VERIFY_TOKEN_PREFIX: &str = "pwv_";
/// How long a rotated-out secret verifies unless the request says otherwise.
const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);
/// The longest overlap a rotation may ask for (a week).
const MAX_OVERLAP_HOURS: u32 = 168;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApp {
    app_id: String,
    app_secret: Secret,
    /// The token Meta's handshake must present; generated when absent.
    verify_token: Option<Secret>,
    name: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AppView {
    id: pagewire_core::AppRecordId,
    app_id: String,
    name: Option<String>,
    /// The owning tenant; null for the operator's shared apps.
    tenant_id: Option<TenantId>,
    shared: bool,
    /// While a rotated-out secret still verifies: until when.
    previous_secret_expires_at: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<MetaApp> for AppView {
    fn from(app: MetaApp) -> Self {
        Self {
            id: app.id,
            app_id: app.app_id,
            name: app.name,
            shared: app.tenant_id.is_none(),
            tenant_id: app.tenant_id,
            previous_secret_expires_at: app.previous_secret.map(|(_, until)| iso(until)),
            created_at: iso(app.created_at),
            updated_at: iso(app.updated_at),
        }
    }
}

/// A new app, with its verify token shown once (to paste into Meta's dashboard, or let
/// `PUT /v1/apps/{app_id}/subscription` send it).
#[derive(Debug, Serialize)]
pub struct CreatedApp {
    #[serde(flatten)]
    app: AppView,
    verify_token: String,
}

fn check_name(name: Option<&str>) -> Result<(), ApiError> {
    name.map_or(Ok(()), |name| required("name", name, 200))
}

fn check_verify_token(token: &Secret) -> Result<(), ApiError> {
    required("verify_token", token.expose(), 256)?;
    if token.expose().len() < 16 {
        return Err(ApiError::Validation(String::from(
            "`verify_token` must be at least 16 characters: it is all that proves a handshake comes from your app's settings",
        )));
    }
    Ok(())
}

/// A chosen verify token must be unique (the shared handshake route finds the app by it). The
/// answer says only that it cannot be used, never whose it is.
fn verify_token_unusable() -> ApiError {
    ApiError::Conflict(String::from(
        "this verify token cannot be used; leave `verify_token` out to have a unique one generated",
    ))
}

fn verify_token_taken(e: pagewire_store::StoreError) -> ApiError {
    match e {
        pagewire_store::StoreError::Conflict { constraint } if constraint.contains("verify_token_hash") => {
            verify_token_unusable()
        }
        other => not_found("Meta app")(other),
    }
}

/// The app, if the caller may see it: the operator sees every app, a tenant its own and the shared.
async fn visible(state: &AdminState, caller: &Caller, app_id: &str) -> Result<MetaApp, ApiError> {
    let app = state.store.get_app(app_id).await.map_err(not_found("Meta app"))?;
    match (caller, &app.tenant_id) {
        (Caller::Operator, _) | (Caller::Tenant(_), None) => Ok(app),
        (Caller::Tenant(caller), Some(owner)) if caller == owner => Ok(app),
        (Caller::Tenant(_), Some(_)) => Err(ApiError::NotFound("Meta app")),
    }
}

/// The app, if the caller may change it: the operator any app, a tenant only its own.
pub(crate) async fn manageable(state: &AdminState, caller: &Caller, app_id: &str) -> Result<MetaApp, ApiError> {
    let app = visible(state, caller, app_id).await?;
    if matches!(caller, Caller::Tenant(_)) && app.tenant_id.is_none() {
        return Err(ApiError::Forbidden("a shared app is managed by the operator"));
    }
    Ok(app)
}

/// With a tenant key: the tenant's own app. With the admin token: a shared app, to which many tenants'
/// Pages subscribe.
pub async fn create_app(
    State(state): State<AdminState>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateApp>,
) -> Result<(StatusCode, ApiJson<CreatedApp>), ApiError> {
    meta_id("app_id", &body.app_id)?;
    required("app_secret", body.app_secret.expose(), 256)?;
    check_name(body.name.as_deref())?;
    let verify_token = match body.verify_token {
        Some(token) => {
            check_verify_token(&token)?;
            token
        }
        None => Secret::new(generate_token(VERIFY_TOKEN_PREFIX)),
    };
    let tenant_id = match caller {
        Caller::Operator => None,
        Caller::Tenant(id) => Some(id),
    };
    let app = state
        .store
        .create_app(
            NewMetaApp {
                app_id: body.app_id,
                tenant_id,
                name: body.name,
                app_secret: body.app_secret,
                verify_token,
            },
            state.clock.now_ms(),
        )
        .await
        .map_err(|e| match e {
            pagewire_store::StoreError::Conflict { constraint } if constraint.contains("verify_token_hash") => {
                verify_token_unusable()
            }
            other => other.into(),
        })?;
    state.routing.reload().await?;
    tracing::info!(app_id = %app.app_id, shared = app.tenant_id.is_none(), "Meta app registered");
    let verify_token = app.verify_token.expose().to_owned();
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedApp {
            app: app.into(),
            verify_token,
        }),
    ))
}

pub async fn list_apps(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<ApiJson<List<AppView>>, ApiError> {
    let apps = match &caller {
        Caller::Operator => state.store.list_apps(None).await?,
        Caller::Tenant(id) => state.store.list_apps(Some(id)).await?,
    };
    let page = paging.page_all(apps, |a| a.id.as_str())?;
    Ok(ApiJson(List {
        data: page.data.into_iter().map(AppView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub async fn get_app(
    State(state): State<AdminState>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> Result<ApiJson<AppView>, ApiError> {
    Ok(ApiJson(visible(&state, &caller, &app_id).await?.into()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateApp {
    #[serde(default, deserialize_with = "super::nullable")]
    name: Option<Option<String>>,
    verify_token: Option<Secret>,
}

pub async fn update_app(
    State(state): State<AdminState>,
    caller: Caller,
    Path(app_id): Path<String>,
    ApiJson(body): ApiJson<UpdateApp>,
) -> Result<ApiJson<AppView>, ApiError> {
    check_name(body.name.as_ref().and_then(Option::as_deref))?;
    if let Some(token) = &body.verify_token {
        check_verify_token(token)?;
    }
    manageable(&state, &caller, &app_id).await?;
    let update = AppUpdate {
        name: body.name,
        verify_token: body.verify_token,
    };
    let app = state
        .store
        .update_app(&app_id, update, state.clock.now_ms())
        .await
        .map_err(verify_token_taken)?;
    state.routing.reload().await?;
    tracing::info!(app_id = %app.app_id, "Meta app updated");
    Ok(ApiJson(app.into()))
}

pub async fn delete_app(
    State(state): State<AdminState>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    manageable(&state, &caller, &app_id).await?;
    state.store.delete_app(&app_id).await.map_err(|e| match e {
        pagewire_store::StoreError::Conflict { .. } => {
            ApiError::Conflict(String::from("Pages are onboarded under this app; remove them first"))
        }
        other => not_found("Meta app")(other),
    })?;
    state.routing.reload().await?;
    tracing::info!(app_id, "Meta app deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateAppSecret {
    /// The secret Meta's "Reset app secret" gave.
    app_secret: Secret,
    /// Hours the old secret still verifies (default 24, at most 168).
    overlap_hours: Option<u32>,
}

/// After Meta's "Reset app secret": the new secret verifies at once, the old one for the overlap,
/// so webhooks Meta signed before the reset (or retries of them) are still accepted.
pub async fn rotate_app_secret(
    State(state): State<AdminState>,
    caller: Caller,
    Path(app_id): Path<String>,
    ApiJson(body): ApiJson<RotateAppSecret>,
) -> Result<ApiJson<AppView>, ApiError> {
    required("app_secret", body.app_secret.expose(), 256)?;
    let overlap = match body.overlap_hours {
        None => DEFAULT_OVERLAP,
        Some(hours) if hours <= MAX_OVERLAP_HOURS => Duration::from_secs(u64::from(hours) * 3600),
        Some(_) => {
            return Err(ApiError::Validation(format!(
                "`overlap_hours` must be at most {MAX_OVERLAP_HOURS}"
            )))
        }
    };
    manageable(&state, &caller, &app_id).await?;
    let now = state.clock.now_ms();
    let until = now.saturating_add(i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX));
    let app = state
        .store
        .rotate_app_secret(&app_id, &body.app_secret, until, now)
        .await
        .map_err(not_found("Meta app"))?;
    state.routing.reload().await?;
    tracing::info!(app_id = %app.app_id, overlap_hours = overlap.as_secs() / 3600, "Meta app secret rotated");
    Ok(ApiJson(app.into()))
}

/// The webhook fields an app subscription asks for unless the request names them.
fn default_app_fields(object: &str) -> Option<Vec<String>> {
    let fields: &[&str] = match object {
        "page" => crate::subscriptions::MESSENGER_FIELDS,
        "instagram" => &[
            "messages",
            "messaging_postbacks",
            "messaging_referral",
            "messaging_seen",
            "message_reactions",
            "comments",
            "mentions",
        ],
        "whatsapp_business_account" => &["messages"],
        _ => return None,
    };
    Some(fields.iter().map(|f| (*f).to_owned()).collect())
}

#[derive(Debug, Serialize)]
pub struct AppSubscriptionView {
    app_id: String,
    /// Where Meta should send this app's webhooks: the gateway's route for the app.
    callback_url: Option<String>,
    /// What Meta has, per object.
    subscriptions: Vec<pagewire_graph::AppSubscription>,
}

fn callback_url(state: &AdminState, app_id: &str) -> Option<String> {
    state
        .public_url
        .as_deref()
        .map(|base| format!("{}/webhooks/meta/{app_id}", base.trim_end_matches('/')))
}

/// The app's webhook subscriptions as Meta has them (`GET /{app-id}/subscriptions`).
pub async fn get_app_subscription(
    State(state): State<AdminState>,
    caller: Caller,
    Path(app_id): Path<String>,
) -> Result<ApiJson<AppSubscriptionView>, ApiError> {
    let app = manageable(&state, &caller, &app_id).await?;
    let subscriptions = state
        .graph
        .app_subscriptions(&app.app_id, app.app_secret.expose())
        .await?;
    Ok(ApiJson(AppSubscriptionView {
        callback_url: callback_url(&state, &app.app_id),
        app_id: app.app_id,
        subscriptions,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetAppSubscription {
    /// `page` (default), `instagram` or `whatsapp_business_account`.
    object: Option<String>,
    /// Webhook fields; the object's defaults when absent.
    fields: Option<Vec<String>>,
}

/// Points the app's webhooks at this gateway (`POST /{app-id}/subscriptions` with the app access
/// token): Meta calls the callback with the app's verify token before it accepts.
pub async fn set_app_subscription(
    State(state): State<AdminState>,
    caller: Caller,
    Path(app_id): Path<String>,
    OptionalJson(body): OptionalJson<SetAppSubscription>,
) -> Result<ApiJson<AppSubscriptionView>, ApiError> {
    let object = body.object.as_deref().unwrap_or("page");
    let defaults = default_app_fields(object).ok_or_else(|| {
        ApiError::Validation(String::from(
            "`object` must be one of page, instagram, whatsapp_business_account",
        ))
    })?;
    let fields = body.fields.unwrap_or(defaults);
    if fields.is_empty() || fields.len() > 64 || fields.iter().any(|f| f.is_empty() || f.len() > 64) {
        return Err(ApiError::Validation(String::from(
            "`fields` must list 1 to 64 webhook fields",
        )));
    }
    let app = manageable(&state, &caller, &app_id).await?;
    let callback = callback_url(&state, &app.app_id).ok_or_else(|| {
        ApiError::Validation(String::from(
            "the gateway does not know its public address: set `public_url` (PAGEWIRE_PUBLIC_URL)",
        ))
    })?;
    state
        .graph
        .set_app_subscription(
            &app.app_id,
            app.app_secret.expose(),
            &pagewire_graph::NewAppSubscription {
                object,
                callback_url: &callback,
                fields: &fields,
                verify_token: app.verify_token.expose(),
            },
        )
        .await?;
    tracing::info!(app_id = %app.app_id, object, callback, "app webhook subscription set");
    let subscriptions = state
        .graph
        .app_subscriptions(&app.app_id, app.app_secret.expose())
        .await?;
    Ok(ApiJson(AppSubscriptionView {
        app_id: app.app_id,
        callback_url: Some(callback),
        subscriptions,
    }))
}
