//! `Idempotency-Key` on POSTs: a client that retries a create (after a timeout, a dropped
//! connection) with the same key gets the first answer again instead of a second object.
//!
//! Keys belong to the credential that presented them (the operator, or one API key, directly or
//! through a token exchanged for it) and live 24 hours: a key another credential used is a new
//! key, so a read-only key can never be handed an admin's kept answer (a new key in plain text,
//! say). Read-only credentials are not kept at all, and neither are refusals (401, 403): the
//! handler authorizes every request a kept answer does not answer. The same key with a different request answers 422 `idempotency_key_reused`; while
//! the first request runs, 409 `idempotency_key_in_progress`. Answers that are worth retrying
//! (5xx, 429) are not kept. Kept answers are sealed: a create can show a secret once.

use axum::body::{to_bytes, Body};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use pagewire_store::Idempotency;
use sha2::{Digest, Sha256};

use crate::admin::AdminState;
use crate::auth::{Caller, Credential, Scope};
use crate::error::ApiError;

pub const HEADER: &str = "idempotency-key";
/// How long a key is remembered.
pub const RETENTION_MS: i64 = 24 * 3600 * 1000;
/// The largest request or answer kept (admin requests are small).
const MAX_BODY: usize = 1024 * 1024;

fn valid_key(value: &HeaderValue) -> Option<&str> {
    let key = value.to_str().ok()?;
    (1..=255)
        .contains(&key.len())
        .then_some(key)
        .filter(|k| k.bytes().all(|b| b.is_ascii_graphic()))
}

/// The middleware: POSTs with an `Idempotency-Key` run at most once per caller and key.
pub async fn guard(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let Some(value) = request.headers().get(HEADER) else {
        return next.run(request).await;
    };
    let Some(key) = valid_key(value).map(str::to_owned) else {
        return ApiError::Validation(String::from(
            "`Idempotency-Key` must be 1 to 255 visible ASCII characters",
        ))
        .into_response();
    };
    let (mut parts, body) = request.into_parts();
    // The handler finds the credential resolved here in the request's extensions.
    let credential = match Credential::from_request_parts(&mut parts, &state).await {
        Ok(credential) => credential,
        Err(e) => return e.into_response(),
    };
    let Some(scope) = scope_of(&credential) else {
        // Nothing a read-only credential may POST creates anything worth keeping; the handler
        // refuses the rest.
        return next.run(Request::from_parts(parts, body)).await;
    };
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        return ApiError::PayloadTooLarge.into_response();
    };
    let mut hasher = Sha256::new();
    hasher.update(parts.method.as_str().as_bytes());
    hasher.update(b" ");
    hasher.update(parts.uri.path().as_bytes());
    hasher.update(b"\n");
    hasher.update(&bytes);
    let request_hash = hex::encode(hasher.finalize());

    let store = &state.store;
    match store
        .idempotency_begin(&scope, &key, &request_hash, state.clock.now_ms())
        .await
    {
        Err(e) => ApiError::from(e).into_response(),
        Ok(Idempotency::InProgress) => ApiError::IdempotencyInProgress.into_response(),
        Ok(Idempotency::Done {
            request_hash: first,
            status,
            body,
        }) => {
            if first != request_hash {
                return ApiError::IdempotencyKeyReused.into_response();
            }
            replay(status, body)
        }
        Ok(Idempotency::Started) => {
            let response = next.run(Request::from_parts(parts, Body::from(bytes))).await;
            let (parts, body) = response.into_parts();
            let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
                let _ = store.idempotency_abandon(&scope, &key).await;
                return ApiError::internal(std::io::Error::other("an answer too large to keep")).into_response();
            };
            let status = parts.status;
            // A refusal is not an answer to keep: the same credential may be allowed later, and
            // a kept 401 or 403 would stand in for the authorization that must run each time.
            let not_kept = status.is_server_error()
                || status == StatusCode::TOO_MANY_REQUESTS
                || status == StatusCode::UNAUTHORIZED
                || status == StatusCode::FORBIDDEN;
            let kept = if not_kept {
                store.idempotency_abandon(&scope, &key).await
            } else {
                store.idempotency_finish(&scope, &key, status.as_u16(), &bytes).await
            };
            if let Err(e) = kept {
                tracing::warn!(error = %e, "keeping the answer for an Idempotency-Key failed");
                let _ = store.idempotency_abandon(&scope, &key).await;
            }
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}

/// Whose kept answers a request may be given: the operator's, or one API key's (a token exchanged
/// for a key is that key). `None` for read-only credentials, whose requests are never kept.
fn scope_of(credential: &Credential) -> Option<String> {
    match (&credential.caller, credential.scope, &credential.key_id) {
        (_, Scope::TenantReadOnly, _) => None,
        (Caller::Operator, ..) => Some(String::from("operator")),
        (Caller::Tenant(tenant), _, Some(key)) => Some(format!("{tenant}/{key}")),
        (Caller::Tenant(_), _, None) => None,
    }
}

/// The first answer again, marked as such.
fn replay(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    let content_type = if status.is_success() {
        "application/json"
    } else {
        "application/problem+json"
    };
    let mut response = (status, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    response
}
