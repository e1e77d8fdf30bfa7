//! `/v1/endpoints`: where a tenant's events go, and how.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use pagewire_core::endpoint::is_reserved_header;
use pagewire_core::{
    DeliveryControls, DeliveryId, Ed25519Key, EndpointFilter, EndpointId, EndpointSecret, EventId, InboundId,
    PayloadFormat, TenantId,
};
use pagewire_delivery::DestinationPolicy;
use pagewire_store::{Endpoint, EndpointUpdate, NewEndpoint, NewEvent, Replay};
use serde::{Deserialize, Serialize};

use super::{iso, meta_id, not_found, required, AdminState, List};
use crate::auth::TenantContext;
use crate::error::{ApiError, ApiJson, ApiQuery, OptionalJson};

/// Most extra headers per endpoint.
const MAX_HEADERS: usize = 20;
/// How long a rotated-out secret keeps signing, unless the request says otherwise.
const DEFAULT_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// The settable fields of an endpoint: every field for a creation (`url` required), any subset for
/// an update.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointBody {
    url: Option<String>,
    description: Option<String>,
    /// Event type patterns: exact types, `messenger.*`, `*.postback`, `*`. Absent: all types.
    event_types: Option<Vec<String>>,
    /// Only events of these Pages. Absent: all of the tenant's Pages.
    page_ids: Option<Vec<String>>,
    /// Also deliver standby items (threads another app owns). Default false.
    include_standby: Option<bool>,
    /// Also deliver echoes of the Page's own messages. Default false.
    include_echoes: Option<bool>,
    /// Requests in flight at once (default 16; 1 delivers strictly in order).
    max_concurrency: Option<u32>,
    /// Most requests per second (default: no limit).
    rate_limit: Option<u32>,
    /// Deliver the events of one conversation one at a time, in order.
    ordered: Option<bool>,
    /// `standard` (the normalized event, Standard Webhooks) or `meta` (Meta's own body and signature).
    format: Option<PayloadFormat>,
    /// Extra headers sent with every delivery.
    headers: Option<BTreeMap<String, String>>,
    /// Also sign with ed25519 (`v1a`), verifiable with the endpoint's public key alone.
    ed25519: Option<bool>,
    /// Updates only: false pauses delivery, true resumes it and clears the failure history.
    enabled: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct EndpointView {
    id: EndpointId,
    tenant_id: TenantId,
    url: String,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    page_ids: Option<Vec<String>>,
    include_standby: bool,
    include_echoes: bool,
    max_concurrency: u32,
    rate_limit: Option<u32>,
    ordered: bool,
    format: PayloadFormat,
    headers: BTreeMap<String, String>,
    enabled: bool,
    disabled_reason: Option<String>,
    /// Failed attempts in a row; after a few the endpoint is paused as a whole.
    consecutive_failures: u32,
    /// While the endpoint is paused: when the next probe goes.
    paused_until: Option<String>,
    /// While a rotated-out secret still signs: until when.
    previous_secret_expires_at: Option<String>,
    /// With ed25519 signing on: the public key (`whpk_…`) that verifies the `v1a` signatures.
    public_key: Option<String>,
    created_at: String,
    updated_at: String,
    /// The signing secret: present only in the answers to a creation and a rotation.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<String>,
    /// Present when an update re-enabled the endpoint: what it missed, and how to replay it.
    #[serde(skip_serializing_if = "Option::is_none")]
    missed: Option<Missed>,
}

/// Deliveries that failed while an endpoint was failing or disabled.
#[derive(Debug, Serialize)]
pub struct Missed {
    failed_deliveries: u64,
    /// `POST` this with `{"since": …}` to replay them.
    recover: String,
}

impl From<Endpoint> for EndpointView {
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id,
            tenant_id: e.tenant_id,
            url: e.url,
            description: e.description,
            event_types: e.filter.event_types,
            page_ids: e.filter.page_ids,
            include_standby: e.filter.include_standby,
            include_echoes: e.filter.include_echoes,
            max_concurrency: e.controls.max_concurrency,
            rate_limit: e.controls.rate_limit,
            ordered: e.controls.ordered,
            format: e.format,
            headers: e.headers,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            consecutive_failures: e.consecutive_failures,
            paused_until: e.paused_until.map(iso),
            previous_secret_expires_at: e.previous_secret_expires_at.map(iso),
            public_key: e.public_key,
            created_at: iso(e.created_at),
            updated_at: iso(e.updated_at),
            secret: None,
            missed: None,
        }
    }
}

fn endpoint_id(raw: &str) -> Result<EndpointId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("endpoint"))
}

/// Validates `body` over `current` (an existing endpoint's settings, or the defaults) and returns
/// the changes it asks for.
fn validate(
    body: EndpointBody,
    current: &Endpoint,
    destinations: &DestinationPolicy,
) -> Result<EndpointUpdate, ApiError> {
    if let Some(url) = &body.url {
        required("url", url, 2048)?;
        pagewire_delivery::check_destination(url, destinations)
            .map_err(|e| ApiError::Validation(format!("`url`: {e}")))?;
    }
    if let Some(description) = &body.description {
        required("description", description, 500)?;
    }
    for page_id in body.page_ids.iter().flatten() {
        meta_id("page_ids[]", page_id)?;
    }
    let filter_changed = body.event_types.is_some()
        || body.page_ids.is_some()
        || body.include_standby.is_some()
        || body.include_echoes.is_some();
    let filter = EndpointFilter {
        event_types: body.event_types.or_else(|| current.filter.event_types.clone()),
        page_ids: body.page_ids.or_else(|| current.filter.page_ids.clone()),
        include_standby: body.include_standby.unwrap_or(current.filter.include_standby),
        include_echoes: body.include_echoes.unwrap_or(current.filter.include_echoes),
    };
    filter
        .validate()
        .map_err(|e| ApiError::Validation(format!("`event_types`: {e}")))?;
    let controls_changed = body.max_concurrency.is_some() || body.rate_limit.is_some() || body.ordered.is_some();
    let controls = DeliveryControls {
        max_concurrency: body.max_concurrency.unwrap_or(current.controls.max_concurrency),
        rate_limit: body.rate_limit.or(current.controls.rate_limit),
        ordered: body.ordered.unwrap_or(current.controls.ordered),
    };
    if !(1..=DeliveryControls::MAX_CONCURRENCY).contains(&controls.max_concurrency) {
        return Err(ApiError::Validation(format!(
            "`max_concurrency` must be between 1 and {}",
            DeliveryControls::MAX_CONCURRENCY
        )));
    }
    if controls.rate_limit == Some(0) {
        return Err(ApiError::Validation(String::from(
            "`rate_limit` must be at least 1 event per second (omit it for no limit)",
        )));
    }
    if let Some(headers) = &body.headers {
        validate_headers(headers)?;
    }
    Ok(EndpointUpdate {
        url: body.url,
        description: body.description.map(Some),
        filter: filter_changed.then_some(filter),
        controls: controls_changed.then_some(controls),
        format: body.format,
        headers: body.headers,
        // Turning it on keeps an existing key, so receivers need not change theirs.
        ed25519: match (body.ed25519, current.public_key.is_some()) {
            (Some(true), false) => Some(Some(Ed25519Key::generate())),
            (Some(false), true) => Some(None),
            _ => None,
        },
        enabled: body.enabled,
    })
}

fn validate_headers(headers: &BTreeMap<String, String>) -> Result<(), ApiError> {
    if headers.len() > MAX_HEADERS {
        return Err(ApiError::Validation(format!(
            "`headers`: at most {MAX_HEADERS} headers"
        )));
    }
    for (name, value) in headers {
        if axum::http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(ApiError::Validation(format!(
                "`headers`: `{name}` is not a valid header name"
            )));
        }
        if is_reserved_header(name) {
            return Err(ApiError::Validation(format!(
                "`headers`: `{name}` is reserved (framing, signature, proxy, forwarding and metadata headers)"
            )));
        }
        if value.len() > 1024 || axum::http::HeaderValue::from_str(value).is_err() {
            return Err(ApiError::Validation(format!(
                "`headers`: the value of `{name}` must be visible ASCII, at most 1024 characters"
            )));
        }
    }
    Ok(())
}

/// What a new endpoint starts from before its body applies.
fn defaults(tenant_id: TenantId) -> Endpoint {
    Endpoint {
        id: EndpointId::new(),
        tenant_id,
        url: String::new(),
        description: None,
        filter: EndpointFilter::default(),
        controls: DeliveryControls::default(),
        format: PayloadFormat::Standard,
        headers: BTreeMap::new(),
        previous_secret_expires_at: None,
        public_key: None,
        enabled: true,
        disabled_reason: None,
        consecutive_failures: 0,
        paused_until: None,
        created_at: 0,
        updated_at: 0,
    }
}

pub(super) async fn create_endpoint(
    State(state): State<AdminState>,
    tenant: TenantContext,
    ApiJson(body): ApiJson<EndpointBody>,
) -> Result<(StatusCode, ApiJson<EndpointView>), ApiError> {
    if body.url.is_none() {
        return Err(ApiError::Validation(String::from("`url` is required")));
    }
    if body.enabled.is_some() {
        return Err(ApiError::Validation(String::from(
            "`enabled` is set by updating an endpoint",
        )));
    }
    let base = defaults(tenant.tenant_id.clone());
    let update = validate(body, &base, &state.destinations)?;
    let secret = EndpointSecret::generate();
    let shown = secret.expose();
    let endpoint = state
        .store
        .create_endpoint(
            NewEndpoint {
                tenant_id: tenant.tenant_id,
                url: update.url.unwrap_or_default(),
                description: update.description.flatten(),
                filter: update.filter.unwrap_or(base.filter),
                controls: update.controls.unwrap_or(base.controls),
                format: update.format.unwrap_or(base.format),
                headers: update.headers.unwrap_or_default(),
                secret,
                ed25519: update.ed25519.flatten(),
            },
            state.clock.now_ms(),
        )
        .await?;
    state.routing.reload().await?;
    tracing::info!(tenant_id = %endpoint.tenant_id, endpoint_id = %endpoint.id, "endpoint created");
    let mut view = EndpointView::from(endpoint);
    view.secret = Some(shown);
    Ok((StatusCode::CREATED, ApiJson(view)))
}

pub(super) async fn list_endpoints(
    State(state): State<AdminState>,
    tenant: TenantContext,
    ApiQuery(paging): ApiQuery<super::Paging>,
) -> Result<ApiJson<List<EndpointView>>, ApiError> {
    let endpoints = state.store.list_endpoints(&tenant.tenant_id).await?;
    let page = paging.page_all(endpoints, |e| e.id.as_str())?;
    Ok(ApiJson(List {
        data: page.data.into_iter().map(EndpointView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// Deletes an endpoint, with its deliveries and their attempt log.
pub(super) async fn delete_endpoint(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(id): Path<String>,
) -> Result<axum::http::StatusCode, ApiError> {
    let id = endpoint_id(&id)?;
    state
        .store
        .delete_endpoint(&tenant.tenant_id, &id)
        .await
        .map_err(not_found("endpoint"))?;
    state.routing.reload().await?;
    tracing::info!(tenant_id = %tenant.tenant_id, endpoint_id = %id, "endpoint deleted");
    Ok(axum::http::StatusCode::NO_CONTENT)
}

pub(super) async fn get_endpoint(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(id): Path<String>,
) -> Result<ApiJson<EndpointView>, ApiError> {
    let endpoint = state
        .store
        .get_endpoint(&tenant.tenant_id, &endpoint_id(&id)?)
        .await
        .map_err(not_found("endpoint"))?;
    Ok(ApiJson(endpoint.into()))
}

/// `PATCH`: changes the fields given; `enabled: true` resumes a disabled or paused endpoint.
pub(super) async fn update_endpoint(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<EndpointBody>,
) -> Result<ApiJson<EndpointView>, ApiError> {
    let id = endpoint_id(&id)?;
    let current = state
        .store
        .get_endpoint(&tenant.tenant_id, &id)
        .await
        .map_err(not_found("endpoint"))?;
    let update = validate(body, &current, &state.destinations)?;
    let resumed = !current.enabled && update.enabled == Some(true);
    let endpoint = state
        .store
        .update_endpoint(&tenant.tenant_id, &id, update, state.clock.now_ms())
        .await
        .map_err(not_found("endpoint"))?;
    state.routing.reload().await?;
    tracing::info!(tenant_id = %endpoint.tenant_id, endpoint_id = %endpoint.id, enabled = endpoint.enabled, "endpoint updated");
    let missed = if resumed {
        let failed = Replay::FailedSince {
            endpoint: &id,
            since: i64::MIN,
        };
        let failed_deliveries = state.store.count_replayable(&tenant.tenant_id, failed).await?;
        (failed_deliveries > 0).then(|| Missed {
            failed_deliveries,
            recover: format!("/v1/endpoints/{id}/recover"),
        })
    } else {
        None
    };
    let mut view = EndpointView::from(endpoint);
    view.missed = missed;
    Ok(ApiJson(view))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RotateSecret {
    /// How long the current secret keeps signing beside the new one, in hours (default 24, at most
    /// 168; 0 ends it at once).
    overlap_hours: Option<u32>,
}

/// Makes a new signing secret. During the overlap every delivery carries both signatures, so
/// receivers can switch secrets at their own pace.
pub(super) async fn rotate_endpoint_secret(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<RotateSecret>,
) -> Result<ApiJson<EndpointView>, ApiError> {
    let id = endpoint_id(&id)?;
    let overlap = match body.overlap_hours {
        None => DEFAULT_OVERLAP,
        Some(hours) if hours <= 168 => Duration::from_secs(u64::from(hours) * 3600),
        Some(_) => {
            return Err(ApiError::Validation(String::from(
                "`overlap_hours` must be at most 168",
            )))
        }
    };
    let now = state.clock.now_ms();
    let until = now.saturating_add(i64::try_from(overlap.as_millis()).unwrap_or(i64::MAX));
    let secret = EndpointSecret::generate();
    let shown = secret.expose();
    let endpoint = state
        .store
        .rotate_endpoint_secret(&tenant.tenant_id, &id, secret, until, now)
        .await
        .map_err(not_found("endpoint"))?;
    tracing::info!(tenant_id = %endpoint.tenant_id, endpoint_id = %endpoint.id, "endpoint secret rotated");
    let mut view = EndpointView::from(endpoint);
    view.secret = Some(shown);
    Ok(ApiJson(view))
}

/// One example event of every type (the same examples `docs/events.md` shows and the contract tests
/// check), used for test sends.
const EXAMPLES: &str = include_str!("../../../../docs/examples/events.json");

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TestSend {
    /// The type of the example event (default `messenger.message`).
    #[serde(rename = "type")]
    event_type: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TestSent {
    event_id: EventId,
    delivery_id: DeliveryId,
    #[serde(rename = "type")]
    event_type: String,
}

/// `POST /v1/endpoints/{id}/test`: sends an example event of the chosen type to this endpoint only,
/// through the usual delivery (signed, retried, logged).
pub(super) async fn send_test_event(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(id): Path<String>,
    OptionalJson(body): OptionalJson<TestSend>,
) -> Result<(StatusCode, ApiJson<TestSent>), ApiError> {
    let endpoint = endpoint_id(&id)?;
    state
        .store
        .get_endpoint(&tenant.tenant_id, &endpoint)
        .await
        .map_err(not_found("endpoint"))?;
    let wanted = body.event_type.unwrap_or_else(|| String::from("messenger.message"));
    let examples: Vec<serde_json::Value> = serde_json::from_str(EXAMPLES).map_err(ApiError::internal)?;
    let Some(mut event) = examples.into_iter().find(|e| e["type"] == wanted.as_str()) else {
        return Err(ApiError::Validation(format!(
            "`type`: there is no example of `{wanted}`"
        )));
    };
    let now = state.clock.now_ms();
    let event_id = EventId::at(now);
    event["id"] = serde_json::json!(event_id);
    event["tenant_id"] = serde_json::json!(tenant.tenant_id);
    event["received_at"] = serde_json::json!(iso(now));
    event["source"]["inbound_id"] = serde_json::json!(InboundId::new());
    let new_event = NewEvent {
        id: event_id.clone(),
        tenant_id: tenant.tenant_id.clone(),
        page_id: event["page_id"].as_str().unwrap_or_default().to_owned(),
        event_type: wanted.clone(),
        dedup_key: String::new(),
        timestamp_ms: now,
        conversation_id: None,
        payload: event.to_string(),
        raw: None,
        text: None,
        endpoints: Vec::new(),
    };
    let delivery_id = state.store.send_test_event(&new_event, &endpoint, now).await?;
    tracing::info!(tenant_id = %tenant.tenant_id, endpoint_id = %endpoint, event_type = %wanted, "test event queued");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(TestSent {
            event_id,
            delivery_id,
            event_type: wanted,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(name: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(name.to_owned(), String::from("x"))])
    }

    #[test]
    fn refuses_proxy_forwarding_and_metadata_headers_in_any_case() {
        for name in [
            "Metadata-Flavor",
            "proxy-authorization",
            "Proxy-Anything",
            "X-Forwarded-For",
            "x-forwarded-host",
            "Forwarded",
            "Webhook-Signature",
            "content-type",
        ] {
            assert!(
                matches!(validate_headers(&headers(name)), Err(ApiError::Validation(_))),
                "{name} is refused"
            );
        }
        assert!(validate_headers(&headers("X-Api-Key")).is_ok());
    }
}
