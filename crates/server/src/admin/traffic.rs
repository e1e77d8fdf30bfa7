//! What a tenant's traffic looks like: events (filtered, one by one with its raw item), deliveries
//! and their attempts, the raw POSTs Meta sent, and the tenant's numbers.

use std::collections::BTreeSet;

use axum::extract::{Path, State};
use pagewire_core::{DeliveryId, EndpointId, EventId, InboundId, RefusalId};
use pagewire_store::{
    Attempt, Delivery, DeliveryQuery, DeliveryStatus, EventQuery, Inbound, InboundQuery, Refusal, RefusalQuery,
};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::{iso, not_found, AdminState, List, Paging};
use crate::auth::{Caller, TenantContext};
use crate::error::{ApiError, ApiJson, ApiQuery};

fn millis(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            time::OffsetDateTime::parse(v, &time::format_description::well_known::Rfc3339)
                .map(|t| i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX))
                .map_err(|_| ApiError::Validation(format!("`{field}` must be an RFC 3339 time")))
        })
        .transpose()
}

fn parse_id<T: std::str::FromStr>(field: &str, value: Option<&str>) -> Result<Option<T>, ApiError> {
    value
        .map(|v| {
            v.parse()
                .map_err(|_| ApiError::Validation(format!("`{field}` is not a valid id")))
        })
        .transpose()
}

#[derive(Debug, Default, Deserialize)]
pub struct EventFilters {
    // Not a flattened `Paging`: query strings carry numbers as text, which flattening cannot read.
    limit: Option<u32>,
    cursor: Option<String>,
    /// An exact type or a family (`messenger.*`).
    #[serde(rename = "type")]
    event_type: Option<String>,
    page_id: Option<String>,
    sender_id: Option<String>,
    /// RFC 3339: received at or after.
    since: Option<String>,
    /// RFC 3339: received before.
    until: Option<String>,
}

/// The tenant's events, newest first, as endpoints receive them.
pub async fn list_events(
    State(state): State<AdminState>,
    tenant: TenantContext,
    ApiQuery(filters): ApiQuery<EventFilters>,
) -> Result<ApiJson<List<Box<RawValue>>>, ApiError> {
    let paging = Paging::new(filters.limit, filters.cursor.clone());
    if let Some(t) = &filters.event_type {
        let word = |w: &str| {
            !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        };
        let valid = match t.split_once('.') {
            Some((family, rest)) => word(family) && (rest == "*" || rest.split('.').all(word)),
            None => false,
        };
        if !valid {
            return Err(ApiError::Validation(String::from(
                "`type` must be an event type (`messenger.message`) or a family (`messenger.*`)",
            )));
        }
    }
    let query = EventQuery {
        limit: paging.fetch(),
        before: paging.before()?,
        event_type: filters.event_type.clone(),
        page_id: filters.page_id.clone(),
        sender_id: filters.sender_id.clone(),
        since: millis("since", filters.since.as_deref())?,
        until: millis("until", filters.until.as_deref())?,
    };
    let events = state.store.query_events(&tenant.tenant_id, &query).await?;
    let page = paging.page(events, |e| e.id.as_str());
    let data = page
        .data
        .into_iter()
        .map(|e| RawValue::from_string(e.payload).map_err(ApiError::internal))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ApiJson(List {
        data,
        next_cursor: page.next_cursor,
    }))
}

/// One event, with the raw Meta item it came from (`raw`).
pub async fn get_event(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(event_id): Path<String>,
) -> Result<ApiJson<Box<RawValue>>, ApiError> {
    let id: EventId = event_id.parse().map_err(|_| ApiError::NotFound("event"))?;
    let event = state
        .store
        .get_event(&tenant.tenant_id, &id)
        .await
        .map_err(not_found("event"))?;
    Ok(ApiJson(
        RawValue::from_string(event.payload).map_err(ApiError::internal)?,
    ))
}

#[derive(Debug, Serialize)]
pub struct DeliveryView {
    id: DeliveryId,
    event_id: EventId,
    endpoint_id: EndpointId,
    status: &'static str,
    attempts: u32,
    next_attempt_at: Option<String>,
    last_status: Option<u16>,
    last_error: Option<String>,
    created_at: String,
    updated_at: String,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        let pending = d.status == DeliveryStatus::Pending;
        Self {
            id: d.id,
            event_id: d.event_id,
            endpoint_id: d.endpoint_id,
            status: d.status.as_str(),
            attempts: d.attempts,
            next_attempt_at: pending.then(|| iso(d.next_attempt_at)),
            last_status: d.last_status,
            last_error: d.last_error,
            created_at: iso(d.created_at),
            updated_at: iso(d.updated_at),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct DeliveryFilters {
    // Not a flattened `Paging`: query strings carry numbers as text, which flattening cannot read.
    limit: Option<u32>,
    cursor: Option<String>,
    /// `pending`, `delivered` or `failed`.
    status: Option<String>,
    endpoint_id: Option<String>,
    event_id: Option<String>,
}

pub async fn list_deliveries(
    State(state): State<AdminState>,
    tenant: TenantContext,
    ApiQuery(filters): ApiQuery<DeliveryFilters>,
) -> Result<ApiJson<List<DeliveryView>>, ApiError> {
    let paging = Paging::new(filters.limit, filters.cursor.clone());
    let status = filters
        .status
        .as_deref()
        .map(|s| {
            DeliveryStatus::parse(s)
                .ok_or_else(|| ApiError::Validation(String::from("`status` must be pending, delivered or failed")))
        })
        .transpose()?;
    let query = DeliveryQuery {
        limit: paging.fetch(),
        before: paging.before()?,
        status,
        endpoint_id: parse_id("endpoint_id", filters.endpoint_id.as_deref())?,
        event_id: parse_id("event_id", filters.event_id.as_deref())?,
    };
    let deliveries = state.store.query_deliveries(&tenant.tenant_id, &query).await?;
    let page = paging.page(deliveries, |d| d.id.as_str());
    Ok(ApiJson(List {
        data: page.data.into_iter().map(DeliveryView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Serialize)]
pub struct AttemptView {
    attempt: u32,
    started_at: String,
    duration_ms: i64,
    status_code: Option<u16>,
    outcome: String,
    error: Option<String>,
    response_excerpt: Option<String>,
}

impl From<Attempt> for AttemptView {
    fn from(a: Attempt) -> Self {
        Self {
            attempt: a.attempt,
            started_at: iso(a.started_at),
            duration_ms: a.duration_ms,
            status_code: a.status_code,
            outcome: a.outcome,
            error: a.error,
            response_excerpt: a.response_excerpt,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct DeliveryDetail {
    #[serde(flatten)]
    delivery: DeliveryView,
    /// Every attempt, oldest first.
    attempt_log: Vec<AttemptView>,
}

fn delivery_id(id: &str) -> Result<DeliveryId, ApiError> {
    id.parse().map_err(|_| ApiError::NotFound("delivery"))
}

/// One delivery with every attempt.
pub async fn get_delivery(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(id): Path<String>,
) -> Result<ApiJson<DeliveryDetail>, ApiError> {
    let id = delivery_id(&id)?;
    let delivery = state
        .store
        .get_delivery(&tenant.tenant_id, &id)
        .await
        .map_err(not_found("delivery"))?;
    let attempts = state.store.attempts_of_delivery(&tenant.tenant_id, &id).await?;
    Ok(ApiJson(DeliveryDetail {
        delivery: delivery.into(),
        attempt_log: attempts.into_iter().map(AttemptView::from).collect(),
    }))
}

pub async fn list_attempts(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(id): Path<String>,
) -> Result<ApiJson<List<AttemptView>>, ApiError> {
    let id = delivery_id(&id)?;
    state
        .store
        .get_delivery(&tenant.tenant_id, &id)
        .await
        .map_err(not_found("delivery"))?;
    let attempts = state.store.attempts_of_delivery(&tenant.tenant_id, &id).await?;
    Ok(ApiJson(
        attempts.into_iter().map(AttemptView::from).collect::<Vec<_>>().into(),
    ))
}

#[derive(Debug, Serialize)]
pub struct InboundView {
    id: InboundId,
    received_at: String,
    app_id: Option<String>,
    object: String,
    /// Only POSTs whose `X-Hub-Signature-256` verified are stored; the others are refused with 401.
    signature: &'static str,
    /// Entries of the POST: all of them for the operator, a tenant's own for a tenant.
    entries: u32,
    /// Events the POST produced: for all tenants for the operator, a tenant's own for a tenant.
    events: u32,
    /// Entries of Pages no tenant has onboarded (the operator's view only).
    unroutable_entries: Option<Box<RawValue>>,
}

impl From<Inbound> for InboundView {
    fn from(i: Inbound) -> Self {
        Self {
            id: i.id,
            received_at: iso(i.received_at),
            app_id: i.app_id,
            object: i.object,
            signature: "valid",
            entries: i.entries,
            events: i.events,
            unroutable_entries: i.unroutable.and_then(|u| RawValue::from_string(u).ok()),
        }
    }
}

/// The raw POSTs: the operator sees every one, a tenant those that brought it events.
pub async fn list_inbound(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<ApiJson<List<InboundView>>, ApiError> {
    let query = InboundQuery {
        limit: paging.fetch(),
        before: paging.before()?,
        tenant_id: match caller {
            Caller::Operator => None,
            Caller::Tenant(id) => Some(id),
        },
    };
    let inbound = state.store.query_inbound(&query).await?;
    let page = paging.page(inbound, |i| i.id.as_str());
    Ok(ApiJson(List {
        data: page.data.into_iter().map(InboundView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Serialize)]
pub struct InboundEvent {
    id: EventId,
    #[serde(rename = "type")]
    event_type: String,
}

#[derive(Debug, Serialize)]
pub struct InboundDetail {
    #[serde(flatten)]
    inbound: InboundView,
    /// The body as Meta sent it. A tenant sees `object` and only the entries that brought it
    /// events, each as Meta sent it (a shared app's POST can carry several tenants' Pages).
    body: Option<Box<RawValue>>,
    /// The events it produced (a tenant sees its own).
    produced: Vec<InboundEvent>,
}

pub async fn get_inbound(
    State(state): State<AdminState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<ApiJson<InboundDetail>, ApiError> {
    let id: InboundId = id.parse().map_err(|_| ApiError::NotFound("inbound POST"))?;
    let mut inbound = state.store.get_inbound(&id).await.map_err(not_found("inbound POST"))?;
    let mut events = state.store.events_of_inbound(&id).await?;
    let body = match &caller {
        Caller::Operator => String::from_utf8(std::mem::take(&mut inbound.body))
            .ok()
            .and_then(|text| RawValue::from_string(text).ok()),
        Caller::Tenant(tenant) => {
            events.retain(|event| event.tenant_id == *tenant);
            if events.is_empty() {
                return Err(ApiError::NotFound("inbound POST"));
            }
            // A shared app's POST can carry other tenants' entries: the tenant sees its own, and
            // nothing of the others (not their ids, not how many there were).
            let own: BTreeSet<u32> = events.iter().filter_map(|event| event.entry).collect();
            let body = own_entries(&inbound.body, &own);
            inbound.entries = u32::try_from(own.len()).unwrap_or(u32::MAX);
            inbound.events = u32::try_from(events.len()).unwrap_or(u32::MAX);
            inbound.unroutable = None;
            body
        }
    };
    Ok(ApiJson(InboundDetail {
        inbound: inbound.into(),
        body,
        produced: events
            .into_iter()
            .map(|event| InboundEvent {
                id: event.id,
                event_type: event.event_type,
            })
            .collect(),
    }))
}

/// The stored POST with only the entries at `own`, each exactly as Meta sent it.
fn own_entries(body: &[u8], own: &BTreeSet<u32>) -> Option<Box<RawValue>> {
    #[derive(Deserialize)]
    struct Stored<'a> {
        #[serde(borrow)]
        object: &'a RawValue,
        #[serde(borrow)]
        entry: Vec<&'a RawValue>,
    }
    let stored: Stored<'_> = serde_json::from_slice(body).ok()?;
    let entries: Vec<&str> = stored
        .entry
        .iter()
        .enumerate()
        .filter(|(index, _)| u32::try_from(*index).is_ok_and(|index| own.contains(&index)))
        .map(|(_, entry)| entry.get())
        .collect();
    RawValue::from_string(format!(
        "{{\"object\":{},\"entry\":[{}]}}",
        stored.object.get(),
        entries.join(",")
    ))
    .ok()
}

#[derive(Debug, Serialize)]
pub struct RefusalView {
    id: RefusalId,
    received_at: String,
    /// `shared` (`/webhooks/meta`) or `app` (`/webhooks/meta/{app_id}`).
    route: String,
    app_id: Option<String>,
    size: u64,
    reason: String,
    detail: Option<String>,
}

impl From<Refusal> for RefusalView {
    fn from(r: Refusal) -> Self {
        Self {
            id: r.id,
            received_at: iso(r.received_at),
            route: r.route,
            app_id: r.app_id,
            size: r.size,
            reason: r.reason,
            detail: r.detail,
        }
    }
}

/// Webhook POSTs the ingress refused: the operator sees every one, a tenant those of its own apps
/// (a shared app's refusals can be any tenant's, or nobody's).
pub async fn list_refusals(
    State(state): State<AdminState>,
    caller: Caller,
    ApiQuery(paging): ApiQuery<Paging>,
) -> Result<ApiJson<List<RefusalView>>, ApiError> {
    let app_ids = match &caller {
        Caller::Operator => None,
        Caller::Tenant(tenant) => Some(
            state
                .store
                .list_apps(Some(tenant))
                .await?
                .into_iter()
                .filter(|app| app.tenant_id.as_ref() == Some(tenant))
                .map(|app| app.app_id)
                .collect(),
        ),
    };
    let query = RefusalQuery {
        limit: paging.fetch(),
        before: paging.before()?,
        app_ids,
    };
    let refusals = state.store.query_refusals(&query).await?;
    let page = paging.page(refusals, |r| r.id.as_str());
    Ok(ApiJson(List {
        data: page.data.into_iter().map(RefusalView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

#[derive(Debug, Serialize)]
pub struct Stats {
    pages: u64,
    endpoints: EndpointCounts,
    events: EventCounts,
    deliveries: DeliveryCounts,
}

#[derive(Debug, Serialize)]
pub struct EndpointCounts {
    enabled: u64,
    disabled: u64,
}

#[derive(Debug, Serialize)]
pub struct EventCounts {
    /// Within retention.
    total: u64,
    last_24h: u64,
}

#[derive(Debug, Serialize)]
pub struct DeliveryCounts {
    pending: u64,
    delivered: u64,
    failed: u64,
}

/// The tenant's numbers at a glance.
pub async fn stats(State(state): State<AdminState>, tenant: TenantContext) -> Result<ApiJson<Stats>, ApiError> {
    let since = state.clock.now_ms().saturating_sub(24 * 3600 * 1000);
    let s = state.store.tenant_stats(&tenant.tenant_id, since).await?;
    Ok(ApiJson(Stats {
        pages: s.pages,
        endpoints: EndpointCounts {
            enabled: s.endpoints_enabled,
            disabled: s.endpoints_disabled,
        },
        events: EventCounts {
            total: s.events_total,
            last_24h: s.events_since,
        },
        deliveries: DeliveryCounts {
            pending: s.deliveries_pending,
            delivered: s.deliveries_delivered,
            failed: s.deliveries_failed,
        },
    }))
}
