//! [`GraphError`]: what can go wrong when calling the Graph API, with Meta's error codes sorted into
//! the few families a caller acts on differently.

use std::time::Duration;

use serde::Deserialize;

/// The longest rate-limit wait the client sits out itself before retrying; a longer one is returned
/// to the caller at once.
pub(crate) const MAX_RETRY_AFTER: Duration = Duration::from_secs(2);

/// A failed Graph API call.
///
/// Meta's error body is `{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}`; the
/// variants carry its code, subcode and `fbtrace_id` (which Meta's support asks for) where Meta sent
/// them. [`code`](Self::code) gives a stable identifier for API responses.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// The access token is invalid, expired, revoked or missing (Meta code 190 with any subcode; also
    /// the older session codes 102 and 104). The token must be replaced; retrying cannot help.
    #[error("the access token is invalid or expired{}: {message}", meta_ref(Some(.code), .subcode, .fbtrace_id))]
    InvalidToken {
        code: i64,
        subcode: Option<i64>,
        message: String,
        fbtrace_id: Option<String>,
    },
    /// The token lacks a permission the call needs (Meta code 10 or 200–299). Meta's message names
    /// the permission, e.g. "(#200) ... one of these permissions is needed: pages_messaging".
    #[error("permission denied by the Graph API{}: {message}", meta_ref(Some(.code), &None, .fbtrace_id))]
    PermissionDenied {
        code: i64,
        message: String,
        fbtrace_id: Option<String>,
    },
    /// A parameter was refused (Meta code 100): an unknown Page id, a missing or unknown field, a wrong
    /// `appsecret_proof`. Meta's message says which.
    #[error("invalid parameter for the Graph API{}: {message}", meta_ref(Some(&100), .subcode, .fbtrace_id))]
    InvalidParameter {
        subcode: Option<i64>,
        message: String,
        fbtrace_id: Option<String>,
    },
    /// The app, the Page or the business is over its rate limit (Meta codes 4, 17, 32, 341, 613 and
    /// 80001–80014, or HTTP 429). `retry_after` is Meta's estimate of when calls work again, when it
    /// sent one (`Retry-After`, or `estimated_time_to_regain_access` in
    /// `X-Business-Use-Case-Usage`).
    #[error("rate limited by the Graph API{}: {message}", rate_ref(.code.as_ref(), .retry_after, .fbtrace_id))]
    RateLimited {
        code: Option<i64>,
        retry_after: Option<Duration>,
        message: String,
        fbtrace_id: Option<String>,
    },
    /// A temporary failure at Meta (codes 1 and 2, a body marked `is_transient`, or HTTP 5xx).
    #[error("the Graph API is temporarily unavailable (HTTP {status}{}): {message}", meta_more(.code.as_ref(), &None, .fbtrace_id))]
    Transient {
        status: u16,
        code: Option<i64>,
        message: String,
        fbtrace_id: Option<String>,
    },
    /// Any other error Meta answered with.
    #[error("the Graph API refused the call (HTTP {status}{}): {message}", meta_more(.code.as_ref(), .subcode, .fbtrace_id))]
    Meta {
        status: u16,
        code: Option<i64>,
        subcode: Option<i64>,
        message: String,
        fbtrace_id: Option<String>,
    },
    /// The call did not complete: connection refused, TLS failure, timeout. The text never holds
    /// the URL (which carries the token).
    #[error("could not reach the Graph API: {0}")]
    Network(String),
    /// Meta answered with a body this client does not understand.
    #[error("unexpected answer from the Graph API: {0}")]
    Decode(String),
    /// Refused before any call was made: the [`GraphConfig`](crate::GraphConfig) cannot work (a bad
    /// base URL or version), or an argument is unusable (an empty id).
    #[error("invalid Graph API request: {0}")]
    InvalidRequest(String),
}

impl GraphError {
    /// A stable snake_case code for API error responses (`problem+json`):
    ///
    /// | variant | code |
    /// |---|---|
    /// | `InvalidToken` | `graph_invalid_token` |
    /// | `PermissionDenied` | `graph_permission_denied` |
    /// | `InvalidParameter` | `graph_invalid_parameter` |
    /// | `RateLimited` | `graph_rate_limited` |
    /// | `Transient`, `Network` | `graph_unavailable` |
    /// | `Meta`, `Decode`, `InvalidRequest` | `graph_error` |
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidToken { .. } => "graph_invalid_token",
            Self::PermissionDenied { .. } => "graph_permission_denied",
            Self::InvalidParameter { .. } => "graph_invalid_parameter",
            Self::RateLimited { .. } => "graph_rate_limited",
            Self::Transient { .. } | Self::Network(_) => "graph_unavailable",
            Self::Meta { .. } | Self::Decode(_) | Self::InvalidRequest(_) => "graph_error",
        }
    }

    /// Meta's error code, when Meta sent one.
    pub fn meta_code(&self) -> Option<i64> {
        match self {
            Self::InvalidToken { code, .. } | Self::PermissionDenied { code, .. } => Some(*code),
            Self::InvalidParameter { .. } => Some(100),
            Self::RateLimited { code, .. } | Self::Transient { code, .. } | Self::Meta { code, .. } => *code,
            Self::Network(_) | Self::Decode(_) | Self::InvalidRequest(_) => None,
        }
    }

    /// Meta's `fbtrace_id` for the failed call, which Meta's support asks for.
    pub fn fbtrace_id(&self) -> Option<&str> {
        match self {
            Self::InvalidToken { fbtrace_id, .. }
            | Self::PermissionDenied { fbtrace_id, .. }
            | Self::InvalidParameter { fbtrace_id, .. }
            | Self::RateLimited { fbtrace_id, .. }
            | Self::Transient { fbtrace_id, .. }
            | Self::Meta { fbtrace_id, .. } => fbtrace_id.as_deref(),
            Self::Network(_) | Self::Decode(_) | Self::InvalidRequest(_) => None,
        }
    }

    /// For [`RateLimited`](Self::RateLimited): how long Meta asked to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether trying the same call again later may succeed: transient and network failures, and
    /// rate limits. (The client itself retries rate limits only when the wait is short.)
    pub fn is_temporary(&self) -> bool {
        matches!(
            self,
            Self::Transient { .. } | Self::Network(_) | Self::RateLimited { .. }
        )
    }

    /// Whether the client retries this failure on its own: transient and network failures, and rate
    /// limits that ask for no wait or at most [`MAX_RETRY_AFTER`].
    pub(crate) fn is_retried(&self) -> bool {
        match self {
            Self::Transient { .. } | Self::Network(_) => true,
            Self::RateLimited { retry_after, .. } => retry_after.is_none_or(|wait| wait <= MAX_RETRY_AFTER),
            _ => false,
        }
    }

    /// Turns a reqwest error into [`Network`](Self::Network) (or [`Decode`](Self::Decode)), without
    /// its URL, with the chain of causes.
    pub(crate) fn from_reqwest(err: reqwest::Error, timeout: Duration) -> Self {
        if err.is_timeout() {
            return Self::Network(format!("no answer within {timeout:?}"));
        }
        let is_decode = err.is_decode();
        let err = err.without_url();
        let mut text = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        if is_decode {
            Self::Decode(text)
        } else {
            Self::Network(text)
        }
    }

    /// Maps a non-success answer (or a success status with an `error` body) to an error.
    /// `retry_after` is what the response headers said about rate limits.
    pub(crate) fn from_response(status: u16, body: &[u8], retry_after: Option<Duration>) -> Self {
        let error = serde_json::from_slice::<Envelope>(body)
            .ok()
            .and_then(|envelope| envelope.error);
        match error {
            Some(error) => Self::from_meta_error(status, error, retry_after),
            None if status == 429 => Self::RateLimited {
                code: None,
                retry_after,
                message: String::from("HTTP 429 Too Many Requests"),
                fbtrace_id: None,
            },
            None if status >= 500 => Self::Transient {
                status,
                code: None,
                message: format!("HTTP {status} without a Graph API error body"),
                fbtrace_id: None,
            },
            None => Self::Decode(format!("HTTP {status} without a Graph API error body")),
        }
    }

    fn from_meta_error(status: u16, error: MetaError, retry_after: Option<Duration>) -> Self {
        let MetaError {
            message,
            code,
            error_subcode: subcode,
            fbtrace_id,
            is_transient,
        } = error;
        let message = message.unwrap_or_else(|| String::from("(no message)"));
        match code {
            Some(code @ (102 | 104 | 190)) => Self::InvalidToken {
                code,
                subcode,
                message,
                fbtrace_id,
            },
            Some(code @ (10 | 200..=299)) => Self::PermissionDenied {
                code,
                message,
                fbtrace_id,
            },
            Some(100) => Self::InvalidParameter {
                subcode,
                message,
                fbtrace_id,
            },
            Some(4 | 17 | 32 | 341 | 613 | 80001..=80014) => Self::RateLimited {
                code,
                retry_after,
                message,
                fbtrace_id,
            },
            Some(1 | 2) => Self::Transient {
                status,
                code,
                message,
                fbtrace_id,
            },
            _ if status == 429 => Self::RateLimited {
                code,
                retry_after,
                message,
                fbtrace_id,
            },
            _ if status >= 500 || is_transient == Some(true) => Self::Transient {
                status,
                code,
                message,
                fbtrace_id,
            },
            _ => Self::Meta {
                status,
                code,
                subcode,
                message,
                fbtrace_id,
            },
        }
    }
}

/// `{"error": {...}}`, Meta's error envelope.
#[derive(Deserialize)]
struct Envelope {
    error: Option<MetaError>,
}

/// The fields of Meta's error object this client uses (`type`, `error_user_msg` and
/// `error_user_title` are left out: the code says more than the type, and the user texts are
/// localised copies of the message).
#[derive(Deserialize)]
struct MetaError {
    message: Option<String>,
    code: Option<i64>,
    error_subcode: Option<i64>,
    fbtrace_id: Option<String>,
    is_transient: Option<bool>,
}

/// " (Meta code 190, subcode 463, fbtrace_id AbC)", or "" when there is nothing to say.
fn meta_ref(code: Option<&i64>, subcode: &Option<i64>, fbtrace_id: &Option<String>) -> String {
    parenthesised(&meta_parts(code, subcode, fbtrace_id))
}

fn parenthesised(parts: &[String]) -> String {
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

/// ", Meta code 2, fbtrace_id AbC" (to extend a parenthesis), or "" when there is nothing to say.
fn meta_more(code: Option<&i64>, subcode: &Option<i64>, fbtrace_id: &Option<String>) -> String {
    meta_parts(code, subcode, fbtrace_id)
        .iter()
        .fold(String::new(), |text, part| format!("{text}, {part}"))
}

fn meta_parts(code: Option<&i64>, subcode: &Option<i64>, fbtrace_id: &Option<String>) -> Vec<String> {
    let mut parts = Vec::new();
    if let Some(code) = code {
        parts.push(format!("Meta code {code}"));
    }
    if let Some(subcode) = subcode {
        parts.push(format!("subcode {subcode}"));
    }
    if let Some(fbtrace_id) = fbtrace_id {
        parts.push(format!("fbtrace_id {fbtrace_id}"));
    }
    parts
}

/// " (Meta code 4, fbtrace_id AbC, retry after 3s)", or "" when there is nothing to say.
fn rate_ref(code: Option<&i64>, retry_after: &Option<Duration>, fbtrace_id: &Option<String>) -> String {
    let mut parts = meta_parts(code, &None, fbtrace_id);
    if let Some(wait) = retry_after {
        parts.push(format!("retry after {wait:?}"));
    }
    parenthesised(&parts)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::GraphError;

    fn meta(status: u16, error: serde_json::Value) -> GraphError {
        GraphError::from_response(status, json!({ "error": error }).to_string().as_bytes(), None)
    }

    #[test]
    fn maps_code_190_with_any_subcode_to_invalid_token() {
        let error = meta(
            400,
            json!({
                "message": "Error validating access token: Session has expired on Tuesday, 01-Oct-24 10:00:00 PDT.",
                "type": "OAuthException",
                "code": 190,
                "error_subcode": 463,
                "fbtrace_id": "AbCdEf123"
            }),
        );
        assert_eq!(
            error,
            GraphError::InvalidToken {
                code: 190,
                subcode: Some(463),
                message: String::from(
                    "Error validating access token: Session has expired on Tuesday, 01-Oct-24 10:00:00 PDT."
                ),
                fbtrace_id: Some(String::from("AbCdEf123")),
            }
        );
        assert_eq!(error.code(), "graph_invalid_token");
        assert_eq!(error.meta_code(), Some(190));
        assert_eq!(error.fbtrace_id(), Some("AbCdEf123"));
        let text = error.to_string();
        assert!(text.starts_with("the access token is invalid or expired"), "{text}");
        assert!(
            text.contains("Meta code 190, subcode 463, fbtrace_id AbCdEf123"),
            "{text}"
        );
        assert!(!error.is_retried());

        let bare = meta(
            400,
            json!({"message": "Invalid OAuth access token - Cannot parse access token", "type": "OAuthException", "code": 190}),
        );
        assert!(
            matches!(bare, GraphError::InvalidToken { subcode: None, .. }),
            "{bare:?}"
        );
        let missing = meta(
            400,
            json!({"message": "An access token is required to request this resource.", "code": 104}),
        );
        assert_eq!(missing.code(), "graph_invalid_token");
    }

    #[test]
    fn maps_codes_10_and_200_to_299_to_permission_denied_with_meta_message() {
        for code in [10, 200, 210, 299] {
            let message =
                "(#200) To subscribe to the messages field, one of these permissions is needed: pages_messaging";
            let error = meta(
                403,
                json!({"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "T1"}),
            );
            assert!(
                matches!(&error, GraphError::PermissionDenied { code: c, message: m, .. } if *c == code && m == message),
                "{error:?}"
            );
            assert_eq!(error.code(), "graph_permission_denied");
            assert!(error.to_string().contains("pages_messaging"), "{error}");
            assert!(!error.is_retried());
        }
        let not_permission = meta(400, json!({"message": "other", "code": 300}));
        assert!(
            matches!(not_permission, GraphError::Meta { code: Some(300), .. }),
            "{not_permission:?}"
        );
    }

    #[test]
    fn maps_code_100_to_invalid_parameter_with_meta_message() {
        let message = "Unsupported get request. Object with ID '123' does not exist, cannot be loaded due to missing \
                       permissions, or does not support this operation.";
        let error = meta(
            400,
            json!({"message": message, "type": "GraphMethodException", "code": 100, "error_subcode": 33, "fbtrace_id": "X"}),
        );
        assert_eq!(
            error,
            GraphError::InvalidParameter {
                subcode: Some(33),
                message: String::from(message),
                fbtrace_id: Some(String::from("X")),
            }
        );
        assert_eq!(error.code(), "graph_invalid_parameter");
        assert!(
            error.to_string().contains("Object with ID '123' does not exist"),
            "{error}"
        );

        let proof = meta(
            400,
            json!({"message": "Invalid appsecret_proof provided in the API argument", "type": "GraphMethodException", "code": 100}),
        );
        assert!(matches!(proof, GraphError::InvalidParameter { .. }), "{proof:?}");
        assert!(!proof.is_retried());
    }

    #[test]
    fn maps_rate_limit_codes_to_rate_limited() {
        for code in [4, 17, 32, 341, 613, 80001, 80006, 80014] {
            let error = meta(
                400,
                json!({"message": "(#4) Application request limit reached", "type": "OAuthException", "code": code, "is_transient": true}),
            );
            assert!(
                matches!(error, GraphError::RateLimited { code: Some(c), retry_after: None, .. } if c == code),
                "{code}: {error:?}"
            );
            assert_eq!(error.code(), "graph_rate_limited");
            assert!(error.is_retried(), "no wait given: retried");
        }
        let outside = meta(400, json!({"message": "x", "code": 80015}));
        assert!(matches!(outside, GraphError::Meta { .. }), "{outside:?}");
    }

    #[test]
    fn retries_rate_limits_only_when_the_wait_is_short() {
        let body = json!({"error": {"message": "(#32) Page request limit reached", "code": 32}}).to_string();
        let short = GraphError::from_response(400, body.as_bytes(), Some(Duration::from_secs(2)));
        assert!(short.is_retried());
        assert_eq!(short.retry_after(), Some(Duration::from_secs(2)));
        let long = GraphError::from_response(400, body.as_bytes(), Some(Duration::from_secs(180)));
        assert!(!long.is_retried());
        assert!(long.is_temporary());
        assert!(long.to_string().contains("retry after 180s"), "{long}");

        let bare_429 = GraphError::from_response(429, b"Too Many Requests", Some(Duration::from_secs(1)));
        assert!(
            matches!(bare_429, GraphError::RateLimited { code: None, .. }),
            "{bare_429:?}"
        );
    }

    #[test]
    fn maps_codes_1_and_2_and_server_errors_to_transient() {
        for (status, code) in [(500, 1), (500, 2), (400, 2)] {
            let error = meta(
                status,
                json!({"message": "An unexpected error has occurred. Please retry your request later.", "type": "OAuthException", "is_transient": true, "code": code, "fbtrace_id": "Z"}),
            );
            assert!(
                matches!(error, GraphError::Transient { code: Some(c), .. } if c == code),
                "{error:?}"
            );
            assert_eq!(error.code(), "graph_unavailable");
            assert!(error.is_retried());
            assert!(
                error
                    .to_string()
                    .contains(&format!("HTTP {status}, Meta code {code}, fbtrace_id Z")),
                "{error}"
            );
        }
        let unknown_5xx = meta(503, json!({"message": "Service temporarily unavailable", "code": 9999}));
        assert!(
            matches!(unknown_5xx, GraphError::Transient { status: 503, .. }),
            "{unknown_5xx:?}"
        );
        let marked = meta(
            400,
            json!({"message": "Please retry", "code": 9998, "is_transient": true}),
        );
        assert!(matches!(marked, GraphError::Transient { .. }), "{marked:?}");
        let html = GraphError::from_response(502, b"<html>Bad Gateway</html>", None);
        assert!(
            matches!(
                html,
                GraphError::Transient {
                    status: 502,
                    code: None,
                    ..
                }
            ),
            "{html:?}"
        );
    }

    #[test]
    fn maps_other_codes_to_meta_and_odd_bodies_to_decode() {
        let error = meta(
            400,
            json!({"message": "(#2200) Callback verification failed with the following errors: HTTP Status Code = 403", "type": "OAuthException", "code": 2200, "fbtrace_id": "F"}),
        );
        assert_eq!(
            error,
            GraphError::Meta {
                status: 400,
                code: Some(2200),
                subcode: None,
                message: String::from(
                    "(#2200) Callback verification failed with the following errors: HTTP Status Code = 403"
                ),
                fbtrace_id: Some(String::from("F")),
            }
        );
        assert_eq!(error.code(), "graph_error");
        assert!(!error.is_retried());

        let html = GraphError::from_response(404, b"<html>Not Found</html>", None);
        assert!(matches!(html, GraphError::Decode(_)), "{html:?}");
        assert_eq!(html.code(), "graph_error");
        assert_eq!(GraphError::Network(String::from("x")).code(), "graph_unavailable");
    }

    #[test]
    fn messages_name_the_failure_and_meta_references() {
        let cases = [
            (
                meta(400, json!({"message": "Bad token", "code": 190, "error_subcode": 460, "fbtrace_id": "A1"})),
                "the access token is invalid or expired (Meta code 190, subcode 460, fbtrace_id A1): Bad token",
            ),
            (
                meta(400, json!({"message": "(#200) Needs pages_messaging", "code": 200})),
                "permission denied by the Graph API (Meta code 200): (#200) Needs pages_messaging",
            ),
            (
                meta(400, json!({"message": "Invalid appsecret_proof provided in the API argument", "code": 100})),
                "invalid parameter for the Graph API (Meta code 100): Invalid appsecret_proof provided in the API \
                 argument",
            ),
            (
                GraphError::from_response(
                    400,
                    br#"{"error": {"message": "(#4) Application request limit reached", "code": 4, "fbtrace_id": "B2"}}"#,
                    Some(Duration::from_secs(60)),
                ),
                "rate limited by the Graph API (Meta code 4, fbtrace_id B2, retry after 60s): (#4) Application \
                 request limit reached",
            ),
            (
                meta(500, json!({"message": "An unexpected error has occurred.", "code": 2, "is_transient": true})),
                "the Graph API is temporarily unavailable (HTTP 500, Meta code 2): An unexpected error has occurred.",
            ),
            (
                meta(400, json!({"message": "(#15) This method must be called with an app access_token.", "code": 15})),
                "the Graph API refused the call (HTTP 400, Meta code 15): (#15) This method must be called with an \
                 app access_token.",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }
}
