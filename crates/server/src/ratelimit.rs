//! Rate limiting of the `/v1` API per credential (tower_governor): each bearer credential has its
//! own bucket of `burst` requests refilled at `per_second`; requests without one share a bucket. Over
//! the limit, the answer is 429 problem+json with `Retry-After`. The Meta ingress is not limited
//! here: Meta is its only caller, and an unsigned flood is refused by the signature check before
//! any database work.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Request, Response};
use axum::response::IntoResponse;
use axum::Router;
use sha2::{Digest, Sha256};
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_governor::{GovernorError, GovernorLayer};

use crate::error::ApiError;

/// How many requests one credential may make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: u32,
    /// Requests that may come at once.
    pub burst: u32,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            per_second: 20,
            burst: 100,
        }
    }
}

/// Buckets by the SHA-256 of the bearer credential, so the limiter never holds a credential.
#[derive(Debug, Clone, Copy)]
struct CredentialKey;

impl KeyExtractor for CredentialKey {
    type Key = Option<[u8; 32]>;

    fn extract<T>(&self, req: &Request<T>) -> Result<Self::Key, GovernorError> {
        Ok(req
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .map(|value| Sha256::digest(value.as_bytes()).into()))
    }
}

/// How long an idle credential's bucket is kept before the periodic sweep forgets it.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Limits `router`, unless `limit` turns limiting off (a zero rate or burst).
pub fn apply(router: Router, limit: RateLimit) -> Router {
    let Some(period) = Duration::from_secs(1).checked_div(limit.per_second) else {
        return router;
    };
    let Some(config) = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(limit.burst)
        .key_extractor(CredentialKey)
        .finish()
    else {
        return router;
    };
    let limiter = Arc::downgrade(config.limiter());
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SWEEP_EVERY);
        loop {
            every.tick().await;
            let Some(limiter) = limiter.upgrade() else { return };
            limiter.retain_recent();
        }
    });
    router.layer(GovernorLayer::new(config).error_handler(too_many))
}

fn too_many(error: GovernorError) -> Response<Body> {
    match error {
        GovernorError::TooManyRequests { wait_time, headers } => {
            let mut response = ApiError::RateLimited.into_response();
            if let Some(headers) = headers {
                response.headers_mut().extend(headers);
            }
            // Never "retry after 0 seconds".
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, HeaderValue::from(wait_time.max(1)));
            response
        }
        GovernorError::UnableToExtractKey | GovernorError::Other { .. } => {
            ApiError::internal(std::io::Error::other("the rate limiter failed")).into_response()
        }
    }
}
