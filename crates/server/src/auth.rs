//! Who is calling: the operator (the bootstrap admin token) or a tenant (an API key, or a
//! short-lived token exchanged for one).
//!
//! All arrive as `Authorization: Bearer …`. Tenant keys are `pw_` followed by random characters and
//! are stored only as their SHA-256 hash; the admin token is compared by hash in constant time;
//! tokens are JWTs verified by [`TokenService`]. A key is `admin` or `read_only`; a read-only
//! credential gets 403 on every method but GET and HEAD. Handlers take [`Credential`], [`Caller`],
//! [`Operator`] or [`TenantContext`] as extractors and never read headers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use pagewire_core::{ApiKeyId, Clock, Secret, TenantId};
use pagewire_store::{ApiKey, KeyRole, Store};
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::tokens::{Claims, TokenError, TokenService};

/// The prefix of tenant API keys.
pub const API_KEY_PREFIX: &str = "pw_";
/// The prefix of generated admin tokens.
pub const ADMIN_TOKEN_PREFIX: &str = "pwadm_";

/// The operator's admin token, known only by its SHA-256 hash.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AdminToken([u8; 32]);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken([redacted])")
    }
}

impl AdminToken {
    pub fn from_token(token: &Secret) -> Self {
        Self(sha256(token.expose()))
    }

    /// Reads the hash as written by [`AdminToken::hash_hex`].
    pub fn from_hash_hex(hash: &str) -> Option<Self> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(hash.trim(), &mut bytes).ok()?;
        Some(Self(bytes))
    }

    pub fn hash_hex(&self) -> String {
        hex::encode(self.0)
    }

    fn matches(&self, candidate: &str) -> bool {
        bool::from(sha256(candidate).ct_eq(&self.0))
    }
}

/// What authentication needs: the store (for keys), the admin token's hash, and the token service.
#[derive(Debug, Clone)]
pub struct AuthState {
    store: Arc<dyn Store>,
    admin_token: AdminToken,
    clock: Arc<dyn Clock>,
    tokens: TokenService,
    /// Whether each API key that tokens were presented for is unrevoked, and when that was read.
    key_status: Arc<Mutex<HashMap<ApiKeyId, (bool, i64)>>>,
}

impl AuthState {
    pub fn new(store: Arc<dyn Store>, admin_token: AdminToken, clock: Arc<dyn Clock>, tokens: TokenService) -> Self {
        Self {
            store,
            admin_token,
            clock,
            tokens,
            key_status: Arc::default(),
        }
    }

    pub fn tokens(&self) -> &TokenService {
        &self.tokens
    }

    /// Who a bearer credential is: the admin token, a tenant API key, or a token from
    /// `POST /v1/auth/token`.
    async fn resolve(&self, bearer: &str) -> Result<Credential, ApiError> {
        if self.admin_token.matches(bearer) {
            return Ok(Credential {
                caller: Caller::Operator,
                scope: Scope::Operator,
                key_id: None,
                via_token: false,
            });
        }
        if bearer.starts_with(API_KEY_PREFIX) {
            let Some(key) = self.store.find_api_key(&hash_api_key(bearer)).await? else {
                return Err(ApiError::Unauthorized);
            };
            self.note_use(&key);
            let scope = match key.role {
                KeyRole::Admin => Scope::TenantAdmin,
                KeyRole::ReadOnly => Scope::TenantReadOnly,
            };
            return Ok(Credential {
                caller: Caller::Tenant(key.tenant_id),
                scope,
                key_id: Some(key.id),
                via_token: false,
            });
        }
        if bearer.starts_with("eyJ") {
            let claims = self.tokens.verify(bearer).await.map_err(|e| {
                if let TokenError::Store(e) = e {
                    return ApiError::from(e);
                }
                tracing::info!(reason = %e, "token refused");
                ApiError::Unauthorized
            })?;
            let credential = Credential::from_claims(&claims).ok_or(ApiError::Unauthorized)?;
            if let (Caller::Tenant(tenant_id), Some(key_id)) = (&credential.caller, &credential.key_id) {
                if !self.key_is_live(tenant_id, key_id).await? {
                    tracing::info!(%key_id, "token refused: its API key is revoked");
                    return Err(ApiError::Unauthorized);
                }
            }
            return Ok(credential);
        }
        Err(ApiError::Unauthorized)
    }

    /// Whether the API key a token was exchanged for is still unrevoked: read from the store, then
    /// trusted for [`KEY_STATUS_TTL_MS`], so a revocation made on another node reaches this one
    /// within a minute without a database read per request.
    async fn key_is_live(&self, tenant_id: &TenantId, key_id: &ApiKeyId) -> Result<bool, ApiError> {
        let now = self.clock.now_ms();
        if let Some(&(live, checked_at)) = self
            .key_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key_id)
        {
            if now.saturating_sub(checked_at) < KEY_STATUS_TTL_MS {
                return Ok(live);
            }
        }
        let live = self
            .store
            .list_api_keys(tenant_id)
            .await?
            .iter()
            .any(|key| key.id == *key_id && key.revoked_at.is_none());
        let mut cache = self.key_status.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= KEY_STATUS_CAPACITY {
            cache.retain(|_, (_, checked_at)| now.saturating_sub(*checked_at) < KEY_STATUS_TTL_MS);
        }
        cache.insert(key_id.clone(), (live, now));
        Ok(live)
    }

    /// Refuses a revoked key's tokens on this node at once.
    pub fn forget_key(&self, key_id: &ApiKeyId) {
        let now = self.clock.now_ms();
        self.key_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key_id.clone(), (false, now));
    }

    /// Records `last_used_at`, at most once a minute per key and off the request's path.
    fn note_use(&self, key: &ApiKey) {
        let now = self.clock.now_ms();
        if key
            .last_used_at
            .is_some_and(|at| now.saturating_sub(at) < LAST_USED_RESOLUTION_MS)
        {
            return;
        }
        let store = Arc::clone(&self.store);
        let id = key.id.clone();
        tokio::spawn(async move {
            if let Err(e) = store.touch_api_key(&id, now).await {
                tracing::warn!(key_id = %id, error = %e, "recording an API key's last use failed");
            }
        });
    }
}

/// How precisely `last_used_at` is kept.
const LAST_USED_RESOLUTION_MS: i64 = 60_000;
/// How long a key's standing, read for its tokens, is trusted: a revocation made on another node
/// refuses the key's tokens here within this (well within the minute that is promised).
const KEY_STATUS_TTL_MS: i64 = 30_000;
/// Beyond this many keys remembered, stale entries are dropped.
const KEY_STATUS_CAPACITY: usize = 10_000;

fn sha256(value: &str) -> [u8; 32] {
    Sha256::digest(value.as_bytes()).into()
}

/// The stored form of an API key.
pub fn hash_api_key(key: &str) -> String {
    hex::encode(sha256(key))
}

/// A new random secret with `prefix`: 32 alphanumeric characters, about 190 bits.
pub fn generate_token(prefix: &str) -> String {
    let body: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(32)
        .map(char::from)
        .collect();
    format!("{prefix}{body}")
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    Operator,
    Tenant(TenantId),
}

/// What a credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Operator,
    TenantAdmin,
    /// Reads only: every method but GET and HEAD answers 403.
    TenantReadOnly,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Operator => "operator",
            Self::TenantAdmin => "tenant:admin",
            Self::TenantReadOnly => "tenant:read_only",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "operator" => Some(Self::Operator),
            "tenant:admin" => Some(Self::TenantAdmin),
            "tenant:read_only" => Some(Self::TenantReadOnly),
            _ => None,
        }
    }
}

/// A verified credential: who, with what scope, and how it was presented.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub caller: Caller,
    pub scope: Scope,
    /// The API key, when one was presented (directly or through a token exchanged for it).
    pub key_id: Option<ApiKeyId>,
    /// Presented as a token from `POST /v1/auth/token`.
    pub via_token: bool,
}

impl Credential {
    fn from_claims(claims: &Claims) -> Option<Self> {
        let scope = Scope::parse(&claims.scope)?;
        let (caller, key_id) = match scope {
            Scope::Operator => (Caller::Operator, None),
            Scope::TenantAdmin | Scope::TenantReadOnly => (
                Caller::Tenant(claims.tid.as_deref()?.parse().ok()?),
                Some(claims.sub.parse().ok()?),
            ),
        };
        Some(Self {
            caller,
            scope,
            key_id,
            via_token: true,
        })
    }
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl<S> FromRequestParts<S> for Credential
where
    S: Send + Sync,
    AuthState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Resolved once per request, whichever extractors a handler takes.
        if let Some(credential) = parts.extensions.get::<Self>() {
            return Ok(credential.clone());
        }
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let credential = AuthState::from_ref(state).resolve(token).await?;
        parts.extensions.insert(credential.clone());
        Ok(credential)
    }
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AuthState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let credential = Credential::from_request_parts(parts, state).await?;
        if credential.scope == Scope::TenantReadOnly && !parts.method.is_safe() {
            return Err(ApiError::Forbidden("this credential is read-only"));
        }
        Ok(credential.caller)
    }
}

/// The operator, and only the operator.
#[derive(Debug, Clone, Copy)]
pub struct Operator;

impl<S> FromRequestParts<S> for Operator
where
    S: Send + Sync,
    AuthState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Operator => Ok(Self),
            Caller::Tenant(_) => Err(ApiError::Forbidden("this call needs the operator's admin token")),
        }
    }
}

/// A tenant, identified by one of its API keys or a token exchanged for one. Everything a handler
/// reads or writes with it is scoped to this tenant.
#[derive(Debug, Clone)]
pub struct TenantContext {
    pub tenant_id: TenantId,
}

impl<S> FromRequestParts<S> for TenantContext
where
    S: Send + Sync,
    AuthState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Caller::from_request_parts(parts, state).await? {
            Caller::Tenant(tenant_id) => Ok(Self { tenant_id }),
            Caller::Operator => Err(ApiError::Forbidden("this call needs a tenant API key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_carry_their_prefix_and_differ() {
        let a = generate_token(API_KEY_PREFIX);
        let b = generate_token(API_KEY_PREFIX);
        assert!(a.starts_with("pw_") && a.len() == 35);
        assert_ne!(a, b);
        assert_eq!(hash_api_key(&a).len(), 64);
        assert_ne!(hash_api_key(&a), a);
    }
}
