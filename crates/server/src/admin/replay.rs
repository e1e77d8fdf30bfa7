//! Replay: send again what failed, or anything at all. A replayed delivery is due at once with a
//! fresh retry schedule; its earlier attempts stay in the log.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use pagewire_core::{DeliveryId, EndpointId, EventId};
use pagewire_store::Replay;
use serde::{Deserialize, Serialize};

use super::AdminState;
use crate::auth::TenantContext;
use crate::error::{ApiError, ApiJson};

#[derive(Debug, Serialize)]
pub struct Replayed {
    /// How many deliveries are due again.
    replayed: u64,
}

fn not_found_if_none(replayed: u64, what: &'static str) -> Result<(StatusCode, ApiJson<Replayed>), ApiError> {
    if replayed == 0 {
        return Err(ApiError::NotFound(what));
    }
    Ok((StatusCode::ACCEPTED, ApiJson(Replayed { replayed })))
}

/// `POST /v1/deliveries/{id}/retry`: this delivery, now, whatever its state.
pub(super) async fn retry_delivery(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(id): Path<String>,
) -> Result<(StatusCode, ApiJson<Replayed>), ApiError> {
    let id: DeliveryId = id.parse().map_err(|_| ApiError::NotFound("delivery"))?;
    let replayed = state
        .store
        .replay(&tenant.tenant_id, Replay::Delivery(&id), state.clock.now_ms())
        .await?;
    tracing::info!(tenant_id = %tenant.tenant_id, delivery_id = %id, "delivery retried by the tenant");
    not_found_if_none(replayed, "delivery")
}

/// `POST /v1/events/{id}/redeliver`: every delivery of this event, now.
pub(super) async fn redeliver_event(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(id): Path<String>,
) -> Result<(StatusCode, ApiJson<Replayed>), ApiError> {
    let id: EventId = id.parse().map_err(|_| ApiError::NotFound("event"))?;
    let replayed = state
        .store
        .replay(&tenant.tenant_id, Replay::Event(&id), state.clock.now_ms())
        .await?;
    tracing::info!(tenant_id = %tenant.tenant_id, event_id = %id, replayed, "event redelivered by the tenant");
    not_found_if_none(replayed, "event")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recover {
    /// RFC 3339: replay the deliveries created at or after this time that failed.
    since: String,
}

/// `POST /v1/endpoints/{id}/recover`: every delivery to this endpoint that failed since a time.
pub(super) async fn recover_endpoint(
    State(state): State<AdminState>,
    tenant: TenantContext,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Recover>,
) -> Result<(StatusCode, ApiJson<Replayed>), ApiError> {
    let endpoint: EndpointId = id.parse().map_err(|_| ApiError::NotFound("endpoint"))?;
    state
        .store
        .get_endpoint(&tenant.tenant_id, &endpoint)
        .await
        .map_err(super::not_found("endpoint"))?;
    let since =
        time::OffsetDateTime::parse(&body.since, &time::format_description::well_known::Rfc3339).map_err(|_| {
            ApiError::Validation(String::from(
                "`since` must be an RFC 3339 time such as 2026-11-20T00:00:00Z",
            ))
        })?;
    let since_ms = i64::try_from(since.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MIN);
    let replayed = state
        .store
        .replay(
            &tenant.tenant_id,
            Replay::FailedSince {
                endpoint: &endpoint,
                since: since_ms,
            },
            state.clock.now_ms(),
        )
        .await?;
    tracing::info!(tenant_id = %tenant.tenant_id, endpoint_id = %endpoint, replayed, "endpoint recovered by the tenant");
    Ok((StatusCode::ACCEPTED, ApiJson(Replayed { replayed })))
}
