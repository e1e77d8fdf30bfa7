//! [`GraphClient`]: the calls Pagewire makes to the Graph API, with retries.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, Url};
use serde::de::DeserializeOwned;

use crate::config::GraphConfig;
use crate::error::GraphError;
use crate::proof::appsecret_proof;
use crate::types::{AppSubscription, List, NewAppSubscription, PageInfo, SubscribedApp, Success, WireAppSubscription};

/// The longest wait between two tries, whatever the attempt number.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A Graph API client: one pooled HTTP client, cheap to clone and share.
///
/// Each call sends its token as `access_token` with its `appsecret_proof`, in the query string (GET,
/// DELETE) or in the form body (POST). Failures are retried up to
/// [`GraphConfig::max_retries`] times with exponential backoff when they may pass: transient
/// errors, network errors and rate limits that ask for at most 2 s. All the calls here are
/// idempotent at Meta, POSTs included, so retrying them is safe. Redirects are not followed (the
/// URL carries the token).
#[derive(Debug, Clone)]
pub struct GraphClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// The base URL with the version as its last path segment: `https://graph.facebook.com/v21.0`.
    base: Url,
    timeout: Duration,
    max_retries: u32,
    retry_base_delay: Duration,
}

/// One call: the path below the version, and its parameters without the token.
struct Call<'a> {
    method: Method,
    path: &'a [&'a str],
    params: &'a [(&'a str, &'a str)],
}

impl GraphClient {
    /// Builds the client. Fails if the base URL is not an absolute `http`/`https` URL, the version
    /// is not a single path segment (`v21.0`), or the timeout is zero.
    pub fn new(config: GraphConfig) -> Result<Self, GraphError> {
        let GraphConfig {
            base_url,
            version,
            timeout,
            max_retries,
            retry_base_delay,
        } = config;
        if version.is_empty() || version.contains(['/', '?', '#', ' ']) {
            return Err(GraphError::InvalidRequest(format!(
                "the Graph API version {version:?} is not a path segment like \"v21.0\""
            )));
        }
        if timeout.is_zero() {
            return Err(GraphError::InvalidRequest(String::from(
                "the Graph API timeout is zero",
            )));
        }
        let mut base = Url::parse(&base_url).map_err(|e| {
            GraphError::InvalidRequest(format!("the Graph API base URL {base_url:?} is not a URL: {e}"))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.query().is_some() || base.fragment().is_some() {
            return Err(GraphError::InvalidRequest(format!(
                "the Graph API base URL {base_url:?} must be an http(s) URL without query or fragment"
            )));
        }
        base.path_segments_mut()
            .map_err(|()| GraphError::InvalidRequest(format!("the Graph API base URL {base_url:?} has no path")))?
            .pop_if_empty()
            .push(&version);
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pagewire-graph/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| GraphError::InvalidRequest(format!("the HTTP client did not build: {}", e.without_url())))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                timeout,
                max_retries,
                retry_base_delay,
            }),
        })
    }

    /// `GET /{page-id}?fields=id,name` with the Page's token: checks that the token works for the
    /// Page and reads its name.
    pub async fn page(&self, page_id: &str, access_token: &str, app_secret: &str) -> Result<PageInfo, GraphError> {
        non_empty("Page id", page_id)?;
        let call = Call {
            method: Method::GET,
            path: &[page_id],
            params: &[("fields", "id,name")],
        };
        self.call(&call, access_token, app_secret).await
    }

    /// `GET /me?fields=id,name`: what a token is for. A Page access token is the Page's own, so this
    /// is what proves that a token (and whoever holds it) speaks for a Page; reading the Page's
    /// node proves nothing, as public Pages can be read with tokens of others.
    pub async fn me(&self, access_token: &str, app_secret: &str) -> Result<PageInfo, GraphError> {
        let call = Call {
            method: Method::GET,
            path: &["me"],
            params: &[("fields", "id,name")],
        };
        self.call(&call, access_token, app_secret).await
    }

    /// `GET /{page-id}/subscribed_apps` with the Page's token: every app subscribed to the Page's
    /// webhooks (other apps included) and the fields each receives.
    pub async fn page_subscribed_apps(
        &self,
        page_id: &str,
        access_token: &str,
        app_secret: &str,
    ) -> Result<Vec<SubscribedApp>, GraphError> {
        non_empty("Page id", page_id)?;
        let call = Call {
            method: Method::GET,
            path: &[page_id, "subscribed_apps"],
            params: &[],
        };
        let list: List<SubscribedApp> = self.call(&call, access_token, app_secret).await?;
        Ok(list.data)
    }

    /// `POST /{page-id}/subscribed_apps` with `subscribed_fields=a,b,c` and the Page's token:
    /// subscribes the token's app to these Page fields, replacing the ones it had. The token needs
    /// `pages_manage_metadata`, and `pages_messaging` for the messaging fields.
    pub async fn subscribe_page(
        &self,
        page_id: &str,
        access_token: &str,
        app_secret: &str,
        fields: &[String],
    ) -> Result<(), GraphError> {
        non_empty("Page id", page_id)?;
        let fields = fields.join(",");
        let call = Call {
            method: Method::POST,
            path: &[page_id, "subscribed_apps"],
            params: &[("subscribed_fields", &fields)],
        };
        let answer: Success = self.call(&call, access_token, app_secret).await?;
        succeeded(answer)
    }

    /// `DELETE /{page-id}/subscribed_apps` with the Page's token: the token's app stops receiving
    /// the Page's webhooks.
    pub async fn unsubscribe_page(
        &self,
        page_id: &str,
        access_token: &str,
        app_secret: &str,
    ) -> Result<(), GraphError> {
        non_empty("Page id", page_id)?;
        let call = Call {
            method: Method::DELETE,
            path: &[page_id, "subscribed_apps"],
            params: &[],
        };
        let answer: Success = self.call(&call, access_token, app_secret).await?;
        succeeded(answer)
    }

    /// `GET /{app-id}/subscriptions` with the app access token (`{app-id}|{app-secret}`): the app's
    /// webhook configuration, one entry per object (`page`, `instagram`, …).
    pub async fn app_subscriptions(&self, app_id: &str, app_secret: &str) -> Result<Vec<AppSubscription>, GraphError> {
        non_empty("app id", app_id)?;
        let call = Call {
            method: Method::GET,
            path: &[app_id, "subscriptions"],
            params: &[],
        };
        let list: List<WireAppSubscription> = self.call(&call, &app_token(app_id, app_secret), app_secret).await?;
        Ok(list.data.into_iter().map(AppSubscription::from).collect())
    }

    /// `POST /{app-id}/subscriptions` with `object`, `callback_url`, `fields` (comma separated),
    /// `verify_token` and `include_values=true`, with the app access token: sets the app's webhook
    /// for the object. Meta verifies the callback first (see [`NewAppSubscription`]); when the
    /// handshake fails it answers code 2200, a [`GraphError::Meta`].
    pub async fn set_app_subscription(
        &self,
        app_id: &str,
        app_secret: &str,
        sub: &NewAppSubscription<'_>,
    ) -> Result<(), GraphError> {
        non_empty("app id", app_id)?;
        let fields = sub.fields.join(",");
        let call = Call {
            method: Method::POST,
            path: &[app_id, "subscriptions"],
            params: &[
                ("object", sub.object),
                ("callback_url", sub.callback_url),
                ("fields", &fields),
                ("verify_token", sub.verify_token),
                ("include_values", "true"),
            ],
        };
        let answer: Success = self.call(&call, &app_token(app_id, app_secret), app_secret).await?;
        succeeded(answer)
    }

    /// `DELETE /{app-id}/subscriptions?object=…` with the app access token: removes the app's
    /// webhook for the object; Meta stops sending its updates.
    pub async fn delete_app_subscription(
        &self,
        app_id: &str,
        app_secret: &str,
        object: &str,
    ) -> Result<(), GraphError> {
        non_empty("app id", app_id)?;
        non_empty("object", object)?;
        let call = Call {
            method: Method::DELETE,
            path: &[app_id, "subscriptions"],
            params: &[("object", object)],
        };
        let answer: Success = self.call(&call, &app_token(app_id, app_secret), app_secret).await?;
        succeeded(answer)
    }

    /// Makes the call, retrying what may pass.
    async fn call<T: DeserializeOwned>(
        &self,
        call: &Call<'_>,
        access_token: &str,
        app_secret: &str,
    ) -> Result<T, GraphError> {
        let url = self.url(call.path)?;
        let proof = appsecret_proof(access_token, app_secret);
        let mut params = call.params.to_vec();
        params.push(("access_token", access_token));
        params.push(("appsecret_proof", &proof));
        // The path holds ids only; the URL (with the token) is never logged.
        let path = url.path();
        let mut retries = 0;
        loop {
            let error = match self.send(&call.method, &url, &params).await {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if retries >= self.inner.max_retries || !error.is_retried() {
                tracing::debug!(method = %call.method, path, code = error.code(), error = %error, "Graph API call failed");
                return Err(error);
            }
            let delay = self.backoff(retries).max(error.retry_after().unwrap_or_default());
            tracing::warn!(
                method = %call.method,
                path,
                retry = retries + 1,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                code = error.code(),
                error = %error,
                "Graph API call failed; retrying"
            );
            tokio::time::sleep(delay).await;
            retries += 1;
        }
    }

    /// One HTTP exchange.
    async fn send<T: DeserializeOwned>(
        &self,
        method: &Method,
        url: &Url,
        params: &[(&str, &str)],
    ) -> Result<T, GraphError> {
        let timeout = self.inner.timeout;
        let request = self.inner.http.request(method.clone(), url.clone());
        let request = if *method == Method::POST {
            request.form(params)
        } else {
            request.query(params)
        };
        let response = request.send().await.map_err(|e| GraphError::from_reqwest(e, timeout))?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let body = response
            .bytes()
            .await
            .map_err(|e| GraphError::from_reqwest(e, timeout))?;
        if !status.is_success() {
            return Err(GraphError::from_response(status.as_u16(), &body, retry_after));
        }
        serde_json::from_slice(&body).map_err(|e| {
            // Meta has been seen answering 200 with an error body.
            match GraphError::from_response(status.as_u16(), &body, retry_after) {
                GraphError::Decode(_) => GraphError::Decode(format!("the answer does not fit: {e}")),
                error => error,
            }
        })
    }

    /// `{base}/{version}/{path...}`, each segment percent-encoded.
    fn url(&self, path: &[&str]) -> Result<Url, GraphError> {
        let mut url = self.inner.base.clone();
        url.path_segments_mut()
            .map_err(|()| GraphError::InvalidRequest(String::from("the Graph API base URL has no path")))?
            .extend(path);
        Ok(url)
    }

    /// The wait before retry number `retries + 1`: the base delay doubled at each retry, capped.
    fn backoff(&self, retries: u32) -> Duration {
        let factor = 1u32.checked_shl(retries).unwrap_or(u32::MAX);
        self.inner
            .retry_base_delay
            .checked_mul(factor)
            .map_or(MAX_BACKOFF, |delay| delay.min(MAX_BACKOFF))
    }
}

/// The app access token, `{app-id}|{app-secret}`.
fn app_token(app_id: &str, app_secret: &str) -> String {
    format!("{app_id}|{app_secret}")
}

fn non_empty(what: &str, value: &str) -> Result<(), GraphError> {
    if value.trim().is_empty() {
        Err(GraphError::InvalidRequest(format!("the {what} is empty")))
    } else {
        Ok(())
    }
}

fn succeeded(answer: Success) -> Result<(), GraphError> {
    if answer.success {
        Ok(())
    } else {
        Err(GraphError::Meta {
            status: 200,
            code: None,
            subcode: None,
            message: String::from("Meta answered {\"success\": false}"),
            fbtrace_id: None,
        })
    }
}

/// How long a rate-limited answer asks to wait: `Retry-After` in seconds, else the largest
/// `estimated_time_to_regain_access` (minutes) in `X-Business-Use-Case-Usage`, which Meta sends
/// with Page-token rate limits.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    if let Some(seconds) = headers
        .get(RETRY_AFTER)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok())
    {
        return Some(Duration::from_secs(seconds));
    }
    let usage: serde_json::Value = headers
        .get("x-business-use-case-usage")
        .and_then(|value| serde_json::from_slice(value.as_bytes()).ok())?;
    let minutes = usage
        .as_object()?
        .values()
        .filter_map(serde_json::Value::as_array)
        .flatten()
        .filter_map(|entry| entry.get("estimated_time_to_regain_access")?.as_u64())
        .max()?;
    (minutes > 0).then(|| Duration::from_secs(minutes.saturating_mul(60)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn client(base_url: &str, version: &str) -> Result<GraphClient, GraphError> {
        GraphClient::new(GraphConfig {
            base_url: base_url.to_owned(),
            version: version.to_owned(),
            ..GraphConfig::default()
        })
    }

    #[test]
    fn builds_urls_below_the_version_with_encoded_segments() {
        let graph = client("https://graph.facebook.com", "v21.0").expect("must work");
        assert_eq!(
            graph.url(&["123", "subscribed_apps"]).expect("must work").as_str(),
            "https://graph.facebook.com/v21.0/123/subscribed_apps"
        );
        assert_eq!(
            graph.url(&["1/2?x"]).expect("must work").as_str(),
            "https://graph.facebook.com/v21.0/1%2F2%3Fx"
        );
        let proxied = client("http://127.0.0.1:9000/graph/", "v19.0").expect("must work");
        assert_eq!(
            proxied.url(&["me"]).expect("must work").as_str(),
            "http://127.0.0.1:9000/graph/v19.0/me"
        );
    }

    #[test]
    fn refuses_unusable_configurations() {
        for (base, version) in [
            ("graph.facebook.com", "v21.0"),
            ("ftp://graph.facebook.com", "v21.0"),
            ("https://graph.facebook.com?x=1", "v21.0"),
            ("https://graph.facebook.com", ""),
            ("https://graph.facebook.com", "v21.0/x"),
        ] {
            let error = client(base, version).expect_err("must fail");
            assert!(
                matches!(error, GraphError::InvalidRequest(_)),
                "{base} {version}: {error}"
            );
        }
        let zero = GraphClient::new(GraphConfig {
            timeout: Duration::ZERO,
            ..GraphConfig::default()
        });
        assert!(matches!(zero, Err(GraphError::InvalidRequest(_))));
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        let graph = GraphClient::new(GraphConfig {
            retry_base_delay: Duration::from_millis(200),
            ..GraphConfig::default()
        })
        .expect("must work");
        assert_eq!(graph.backoff(0), Duration::from_millis(200));
        assert_eq!(graph.backoff(1), Duration::from_millis(400));
        assert_eq!(graph.backoff(2), Duration::from_millis(800));
        assert_eq!(graph.backoff(20), MAX_BACKOFF);
        assert_eq!(graph.backoff(40), MAX_BACKOFF);
    }

    #[test]
    fn reads_retry_after_and_business_use_case_usage() {
        let mut headers = HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(
            "x-business-use-case-usage",
            HeaderValue::from_static(
                r#"{"112233":[{"type":"pages","call_count":100,"total_cputime":12,"total_time":30,"estimated_time_to_regain_access":3}]}"#,
            ),
        );
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(180)));
        headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(1)));

        let mut idle = HeaderMap::new();
        idle.insert(
            "x-business-use-case-usage",
            HeaderValue::from_static(r#"{"1":[{"type":"pages","call_count":5,"estimated_time_to_regain_access":0}]}"#),
        );
        assert_eq!(retry_after(&idle), None);
    }

    #[tokio::test]
    async fn refuses_empty_ids_without_calling() {
        let graph = client("http://127.0.0.1:9", "v21.0").expect("must work");
        let error = graph.page(" ", "token", "secret").await.expect_err("must fail");
        assert!(matches!(error, GraphError::InvalidRequest(_)), "{error}");
        let error = graph.app_subscriptions("", "secret").await.expect_err("must fail");
        assert!(matches!(error, GraphError::InvalidRequest(_)), "{error}");
    }

    #[tokio::test]
    async fn network_errors_hold_neither_url_nor_token() {
        // A port that was just free: connections to it are refused.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let graph = GraphClient::new(GraphConfig {
            base_url: format!("http://127.0.0.1:{port}"),
            max_retries: 1,
            retry_base_delay: Duration::from_millis(1),
            ..GraphConfig::default()
        })
        .expect("must work");
        let error = graph
            .page("123", "SECRET-TOKEN", "app-secret")
            .await
            .expect_err("must fail");
        assert!(matches!(error, GraphError::Network(_)), "{error}");
        let text = format!("{error} {error:?}");
        assert!(!text.contains("SECRET-TOKEN"), "{text}");
        assert!(!text.contains("127.0.0.1"), "{text}");
        assert!(!text.contains("appsecret_proof"), "{text}");
    }
}
