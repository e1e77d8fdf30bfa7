//! `ApiError`: the only error that becomes a response.
//!
//! Every error answer is `application/problem+json` (RFC 9457) with a stable `code` from the table in
//! [`ApiError::code`], documented in `openapi.yaml`. Server faults answer "internal error" with an
//! error id; the cause chain goes to the log under the same id.

use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use pagewire_store::StoreError;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0} not found")]
    NotFound(&'static str),
    #[error("{0}")]
    Validation(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is not valid JSON: {0}")]
    InvalidJson(String),
    /// A webhook body with a key twice in one object: parsers disagree on which value counts, so
    /// none is taken. The detail names the key and the object (both cut short).
    #[error("{0}")]
    DuplicateKey(String),
    #[error("the request body is larger than the limit")]
    PayloadTooLarge,
    #[error("the webhook signature is missing or invalid: {0}")]
    Signature(pagewire_meta::SignatureError),
    #[error("the service is temporarily unavailable")]
    Unavailable,
    #[error("this node is taking in webhooks faster than it can store them; send again shortly")]
    Overloaded,
    #[error("too many requests with this credential; retry after the time in `Retry-After`")]
    RateLimited,
    #[error("{0}")]
    PageTaken(&'static str),
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still running; retry shortly")]
    IdempotencyInProgress,
    #[error("{0}")]
    Graph(#[from] pagewire_graph::GraphError),
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

#[derive(Serialize)]
struct Problem<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    code: &'static str,
    detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_id: Option<&'a str>,
}

impl ApiError {
    pub fn internal(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Internal(Box::new(err))
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Unauthorized | Self::Signature(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::InvalidJson(_) | Self::DuplicateKey(_) => StatusCode::BAD_REQUEST,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable | Self::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::PageTaken(_) | Self::IdempotencyInProgress => StatusCode::CONFLICT,
            Self::IdempotencyKeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            // What the tenant gave (a token, a Page id) is wrong: 422. Meta busy or down: 503/502.
            Self::Graph(e) => match e {
                pagewire_graph::GraphError::InvalidToken { .. }
                | pagewire_graph::GraphError::PermissionDenied { .. }
                | pagewire_graph::GraphError::InvalidParameter { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                pagewire_graph::GraphError::RateLimited { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            },
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The stable, documented code of each kind of error.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Validation(_) => "validation_failed",
            Self::Conflict(_) => "conflict",
            Self::InvalidJson(_) => "invalid_json",
            Self::DuplicateKey(_) => "duplicate_key",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Signature(_) => "invalid_signature",
            Self::Unavailable => "unavailable",
            Self::Overloaded => "overloaded",
            Self::RateLimited => "rate_limited",
            Self::PageTaken(_) => "page_taken",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::IdempotencyInProgress => "idempotency_key_in_progress",
            Self::Graph(e) => e.code(),
            Self::Internal(_) => "internal",
        }
    }

    fn title(&self) -> &'static str {
        match self {
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden(_) => "Forbidden",
            Self::NotFound(_) => "Not found",
            Self::Validation(_) => "Validation failed",
            Self::Conflict(_) => "Conflict",
            Self::InvalidJson(_) => "Invalid JSON",
            Self::DuplicateKey(_) => "Duplicate key",
            Self::PayloadTooLarge => "Payload too large",
            Self::Signature(_) => "Invalid signature",
            Self::Unavailable | Self::Overloaded => "Service unavailable",
            Self::RateLimited => "Too many requests",
            Self::PageTaken(_) => "Page taken",
            Self::IdempotencyKeyReused => "Idempotency key reused",
            Self::IdempotencyInProgress => "Idempotency key in progress",
            Self::Graph(_) => "Graph API error",
            Self::Internal(_) => "Internal error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let error_id = match &self {
            Self::Internal(source) => {
                let id = format!("err_{}", ulid::Ulid::new());
                tracing::error!(error_id = %id, error = %source, cause = ?source.source(), "internal error");
                Some(id)
            }
            Self::Unavailable => {
                tracing::warn!("answering 503: the store is unavailable");
                None
            }
            _ => None,
        };
        let problem = Problem {
            kind: "about:blank",
            title: self.title(),
            status: status.as_u16(),
            code: self.code(),
            detail: match &self {
                Self::Internal(_) => String::from("internal error"),
                other => other.to_string(),
            },
            error_id: error_id.as_deref(),
        };
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/problem+json"),
            )],
            body,
        )
            .into_response();
        if let Self::Overloaded = &self {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(1));
        }
        if let Self::Graph(e) = &self {
            if let Some(wait) = e.retry_after() {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(wait.as_secs().max(1)));
            }
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::NotFound => Self::NotFound("the resource"),
            StoreError::Conflict { constraint } => Self::Conflict(conflict_message(&constraint)),
            StoreError::Unavailable(_) => Self::Unavailable,
            other => Self::internal(other),
        }
    }
}

/// Says which value is taken, in the API's words rather than the schema's.
fn conflict_message(constraint: &str) -> String {
    match constraint {
        // Whoever registered it, the caller or another tenant: the words never tell which.
        c if c.contains("meta_apps") && c.contains("app_id") => String::from(
            "this Meta app is registered already; if it is yours and you did not register it, ask the operator",
        ),
        c if c.contains("pages") && c.contains("page_id") => String::from("this Page is onboarded already"),
        // SQLite says `FOREIGN KEY constraint failed`; PostgreSQL names the reference (`…_fkey`).
        c if c.contains("FOREIGN KEY") || c.ends_with("_fkey") => String::from("a referenced resource does not exist"),
        _ => String::from("the resource already exists"),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::JsonDataError(e) => Self::Validation(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => {
                Self::InvalidJson(String::from("send `Content-Type: application/json`"))
            }
            JsonRejection::BytesRejection(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => Self::PayloadTooLarge,
            other => Self::InvalidJson(other.body_text()),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::PayloadTooLarge
        } else {
            Self::InvalidJson(rejection.body_text())
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::Validation(rejection.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::Validation(rejection.body_text())
    }
}

/// `Query<T>` whose rejections are problem+json (422 `validation_failed`).
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Json<T>` whose rejections are problem+json.
#[derive(Debug, axum::extract::FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// A JSON body that may be left out: an empty (or blank) body is `T::default()`. Malformed JSON or
/// wrong fields are 422 `validation_failed`, as for [`ApiJson`].
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<T, S> axum::extract::FromRequest<S> for OptionalJson<T>
where
    T: serde::de::DeserializeOwned + Default,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(request: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = bytes::Bytes::from_request(request, state).await?;
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        serde_json::from_slice(&body)
            .map(Self)
            .map_err(|e| ApiError::Validation(e.to_string()))
    }
}
