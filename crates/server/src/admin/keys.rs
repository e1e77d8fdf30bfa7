//! API keys and tokens: tenants' keys (created by the operator or by the tenant), revocation, and
//! the exchange of a key for a short-lived token.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use pagewire_core::{ApiKeyId, TenantId};
use pagewire_store::{ApiKey, KeyRole, NewApiKey};
use serde::{Deserialize, Serialize};

use super::{iso, not_found, required, AdminState, List, Paging};
use crate::auth::{generate_token, hash_api_key, Caller, Credential, Operator, TenantContext, API_KEY_PREFIX};
use crate::error::{ApiError, ApiJson, ApiQuery, OptionalJson};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateApiKey {
    name: Option<String>,
    /// `admin` (default) or `read_only`.
    role: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct CreatedApiKey {
    #[serde(flatten)]
    view: ApiKeyView,
    /// Shown once; only its hash is kept.
    key: String,
}

#[derive(Debug, Serialize)]
pub struct ApiKeyView {
    id: ApiKeyId,
    tenant_id: TenantId,
    name: Option<String>,
    role: &'static str,
    /// The key's first characters, to tell keys apart.
    prefix: String,
    created_at: String,
    last_used_at: Option<String>,
    revoked_at: Option<String>,
}

impl From<ApiKey> for ApiKeyView {
    fn from(key: ApiKey) -> Self {
        Self {
            id: key.id,
            tenant_id: key.tenant_id,
            name: key.name,
            role: key.role.as_str(),
            prefix: key.prefix,
            created_at: iso(key.created_at),
            last_used_at: key.last_used_at.map(iso),
            revoked_at: key.revoked_at.map(iso),
        }
    }
}

fn tenant_path(tenant_id: &str) -> Result<TenantId, ApiError> {
    tenant_id.parse().map_err(|_| ApiError::NotFound("tenant"))
}

fn key_path(key_id: &str) -> Result<ApiKeyId, ApiError> {
    key_id.parse().map_err(|_| ApiError::NotFound("API key"))
}

async fn create_key(
    state: &AdminState,
    tenant_id: TenantId,
    body: CreateApiKey,
) -> Result<(StatusCode, ApiJson<CreatedApiKey>), ApiError> {
    if let Some(name) = &body.name {
        required("name", name, 200)?;
    }
    let role = match body.role.as_deref() {
        None => KeyRole::Admin,
        Some(role) => KeyRole::parse(role)
            .ok_or_else(|| ApiError::Validation(String::from("`role` must be `admin` or `read_only`")))?,
    };
    state.store.get_tenant(&tenant_id).await.map_err(not_found("tenant"))?;
    let key = generate_token(API_KEY_PREFIX);
    let record = state
        .store
        .create_api_key(
            NewApiKey {
                tenant_id: &tenant_id,
                name: body.name.as_deref(),
                role,
                key_hash: &hash_api_key(&key),
                prefix: &key[..7],
            },
            state.clock.now_ms(),
        )
        .await?;
    tracing::info!(%tenant_id, key_id = %record.id, role = role.as_str(), "API key created");
    Ok((
        StatusCode::CREATED,
        ApiJson(CreatedApiKey {
            view: record.into(),
            key,
        }),
    ))
}

async fn revoke_key(state: &AdminState, tenant_id: &TenantId, key_id: &str) -> Result<ApiJson<ApiKeyView>, ApiError> {
    let key_id = key_path(key_id)?;
    let key = state
        .store
        .revoke_api_key(tenant_id, &key_id, state.clock.now_ms())
        .await
        .map_err(not_found("API key"))?;
    // This node refuses the key's tokens at once; the others when their view of it is a minute old.
    state.auth.forget_key(&key_id);
    tracing::info!(%tenant_id, %key_id, "API key revoked");
    Ok(ApiJson(key.into()))
}

async fn list_keys(
    state: &AdminState,
    tenant_id: &TenantId,
    paging: &Paging,
) -> Result<ApiJson<List<ApiKeyView>>, ApiError> {
    let keys = state.store.list_api_keys(tenant_id).await?;
    let page = paging.page_all(keys, |k| k.id.as_str())?;
    Ok(ApiJson(List {
        data: page.data.into_iter().map(ApiKeyView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

pub async fn create_tenant_key(
    State(state): State<AdminState>,
    _: Operator,
    Path(tenant_id): Path<String>,
    OptionalJson(body): OptionalJson<CreateApiKey>,
) -> Result<(StatusCode, ApiJson<CreatedApiKey>), ApiError> {
    create_key(&state, tenant_path(&tenant_id)?, body).await
}

pub async fn list_tenant_keys(
    State(state): State<AdminState>,
    _: Operator,
    Path(tenant_id): Path<String>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<ApiJson<List<ApiKeyView>>, ApiError> {
    let tenant_id = tenant_path(&tenant_id)?;
    state.store.get_tenant(&tenant_id).await.map_err(not_found("tenant"))?;
    list_keys(&state, &tenant_id, &paging).await
}

pub async fn revoke_tenant_key(
    State(state): State<AdminState>,
    _: Operator,
    Path((tenant_id, key_id)): Path<(String, String)>,
) -> Result<ApiJson<ApiKeyView>, ApiError> {
    revoke_key(&state, &tenant_path(&tenant_id)?, &key_id).await
}

pub async fn create_own_key(
    State(state): State<AdminState>,
    tenant: TenantContext,
    OptionalJson(body): OptionalJson<CreateApiKey>,
) -> Result<(StatusCode, ApiJson<CreatedApiKey>), ApiError> {
    create_key(&state, tenant.tenant_id, body).await
}

pub async fn list_own_keys(
    State(state): State<AdminState>,
    tenant: TenantContext,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<ApiJson<List<ApiKeyView>>, ApiError> {
    list_keys(&state, &tenant.tenant_id, &paging).await
}

pub async fn revoke_own_key(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(key_id): Path<String>,
) -> Result<ApiJson<ApiKeyView>, ApiError> {
    revoke_key(&state, &tenant.tenant_id, &key_id).await
}

#[derive(Debug, Serialize)]
pub struct TokenView {
    token: String,
    token_type: &'static str,
    /// Seconds.
    expires_in: u64,
    expires_at: String,
    scope: &'static str,
    tenant_id: Option<TenantId>,
}

/// Exchanges an API key (or the admin token) for a short-lived token with the same rights.
pub async fn issue_token(
    State(state): State<AdminState>,
    credential: Credential,
) -> Result<(StatusCode, ApiJson<TokenView>), ApiError> {
    if credential.via_token {
        return Err(ApiError::Forbidden(
            "a token cannot be exchanged for another; present an API key",
        ));
    }
    let tokens = state.auth.tokens();
    let (sub, tenant_id) = match &credential.caller {
        Caller::Operator => (String::from("operator"), None),
        Caller::Tenant(tenant_id) => (
            credential.key_id.as_ref().map(ToString::to_string).unwrap_or_default(),
            Some(tenant_id.clone()),
        ),
    };
    let issued = tokens
        .issue(
            &sub,
            tenant_id.as_ref().map(TenantId::as_str),
            credential.scope.as_str(),
        )
        .await
        .map_err(ApiError::internal)?;
    Ok((
        StatusCode::CREATED,
        ApiJson(TokenView {
            token: issued.token.expose().to_owned(),
            token_type: "Bearer",
            expires_in: tokens.ttl().as_secs(),
            expires_at: iso(issued.expires_at_ms),
            scope: credential.scope.as_str(),
            tenant_id,
        }),
    ))
}

#[derive(Debug, Serialize)]
pub struct RotatedKey {
    kid: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateSigningKey {
    /// Refuse every token signed before, at once (a leaked signing key or token), instead of letting
    /// them run out.
    #[serde(default)]
    retire_previous: bool,
}

/// Starts signing tokens with a new key; tokens signed with the previous key stay valid until they
/// expire, or, with `retire_previous`, are refused from now on.
pub async fn rotate_signing_key(
    State(state): State<AdminState>,
    _: Operator,
    OptionalJson(body): OptionalJson<RotateSigningKey>,
) -> Result<ApiJson<RotatedKey>, ApiError> {
    let kid = state
        .auth
        .tokens()
        .rotate(body.retire_previous)
        .await
        .map_err(ApiError::internal)?;
    Ok(ApiJson(RotatedKey { kid }))
}
