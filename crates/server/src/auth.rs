//! Who is calling: the operator (the bootstrap admin token) or a tenant (an API key).
//!
//! Both arrive as `Authorization: Bearer …`. Tenant keys are `pw_` followed by random characters and
//! are stored only as their SHA-256 hash; the admin token is compared by hash in constant time.
//! Handlers take [`Caller`], [`Operator`] or [`TenantContext`] as extractors and never read headers.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use pagewire_core::{Secret, TenantId};
use pagewire_store::Store;
use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

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

/// What authentication needs: the store (for keys) and the admin token's hash.
#[derive(Debug, Clone)]
pub struct AuthState {
    store: Arc<dyn Store>,
    admin_token: AdminToken,
}

impl AuthState {
    pub fn new(store: Arc<dyn Store>, admin_token: AdminToken) -> Self {
        Self { store, admin_token }
    }
}

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

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl<S> FromRequestParts<S> for Caller
where
    S: Send + Sync,
    AuthState: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let auth = AuthState::from_ref(state);
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        if auth.admin_token.matches(token) {
            return Ok(Self::Operator);
        }
        if token.starts_with(API_KEY_PREFIX) {
            if let Some(key) = auth.store.find_api_key(&hash_api_key(token)).await? {
                return Ok(Self::Tenant(key.tenant_id));
            }
        }
        Err(ApiError::Unauthorized)
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

/// A tenant, identified by one of its API keys. Everything a handler reads or writes with it is
/// scoped to this tenant.
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
