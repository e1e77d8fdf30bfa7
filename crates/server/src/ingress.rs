//! The Meta side: the verification handshake and the webhook POSTs.
//!
//! A POST is taken as raw bytes (the signature covers exactly what Meta sent), parsed once lightly to
//! find its Pages, verified with the app secret those Pages are onboarded under, normalized into one
//! event per item, handed to the ingest writer, and acknowledged only after the writer's commit.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use pagewire_core::{Clock, EventFacts, EventId, InboundId};
use pagewire_meta::{Envelope, EnvelopeError, SignatureError, SignatureHeader, VerifiedEnvelope};
use pagewire_store::{IngestRequest, NewEvent, RawSpan, UnroutableEntry};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::ApiError;
use crate::ingest::{IngestError, IngestWriter};
use crate::refusals::{self, RefusalLog, Route};
use crate::routing::{AppRoute, Routing, RoutingCache};

/// Meta sends up to about 3 MB; anything beyond this is refused with 413.
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

/// What the ingress router needs, and nothing more (no admin or auth state).
#[derive(Debug)]
pub struct IngressState {
    pub routing: RoutingCache,
    pub writer: IngestWriter,
    pub clock: Arc<dyn Clock>,
    /// POSTs that named no registered Page and so could not be verified.
    pub unverifiable: Arc<Throttled>,
    /// Webhook requests being handled; when none is left, requests are refused at once with 503
    /// before their body is read (load shedding).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Requests refused to shed load.
    pub shed: Arc<Throttled>,
    /// Refused POSTs, kept as metadata.
    pub refusals: Arc<RefusalLog>,
}

/// Something that can happen many times a second, counted and logged at most once per interval so
/// that a flood cannot flood the log.
#[derive(Debug, Default)]
pub struct Throttled {
    count: AtomicU64,
    last_logged_ms: AtomicI64,
}

const THROTTLED_LOG_INTERVAL_MS: i64 = 10_000;

/// Where an event's JSON holds its item (`raw`) when serialized with `null` there.
const RAW_PLACE: &str = ",\"raw\":null,\"source\":";

impl Throttled {
    /// Counts one occurrence; returns the total so far when it is time to log it.
    pub(crate) fn note(&self, now_ms: i64) -> Option<u64> {
        let total = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let last = self.last_logged_ms.load(Ordering::Relaxed);
        (now_ms - last >= THROTTLED_LOG_INTERVAL_MS
            && self
                .last_logged_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok())
        .then_some(total)
    }
}

/// Refuses a request at once, before its body is read, when the node already handles as many
/// webhook requests as it may: under overload memory stays bounded and Meta is answered in
/// microseconds (and sends again later) instead of waiting on a node that falls further behind.
async fn shed_when_full(
    State(state): State<Arc<IngressState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Ok(_permit) = Arc::clone(&state.in_flight).try_acquire_owned() else {
        if let Some(total) = state.shed.note(state.clock.now_ms()) {
            tracing::warn!(
                total,
                "shedding load: webhooks refused with 503 while the node is at its limit of requests in flight"
            );
        }
        return ApiError::Overloaded.into_response();
    };
    next.run(request).await
}

pub fn router(state: IngressState) -> Router {
    // Shared, not cloned, per request: the state holds several `Arc`s and the writer's channel,
    // whose clones and drops were 1.3 % of the node's CPU under load.
    let state = Arc::new(state);
    Router::new()
        .route("/webhooks/meta", get(handshake).post(receive))
        .route("/webhooks/meta/{app_id}", get(handshake_for_app).post(receive_for_app))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(axum::middleware::from_fn_with_state(Arc::clone(&state), shed_when_full))
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct HandshakeQuery {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// Meta's subscription check: `hub.mode=subscribe` and a verify token of a registered app answer the
/// challenge; anything else is 403.
async fn handshake(
    State(state): State<Arc<IngressState>>,
    query: Result<Query<HandshakeQuery>, QueryRejection>,
) -> Response {
    let routing = state.routing.snapshot();
    answer_handshake(query.ok().map(|q| q.0), |token| {
        routing.apps().any(|app| app.verify_token_matches(token))
    })
}

async fn handshake_for_app(
    State(state): State<Arc<IngressState>>,
    Path(app_id): Path<String>,
    query: Result<Query<HandshakeQuery>, QueryRejection>,
) -> Response {
    let routing = state.routing.snapshot();
    answer_handshake(query.ok().map(|q| q.0), |token| {
        routing.app(&app_id).is_some_and(|app| app.verify_token_matches(token))
    })
}

fn answer_handshake(query: Option<HandshakeQuery>, token_ok: impl FnOnce(&str) -> bool) -> Response {
    let Some(HandshakeQuery {
        mode: Some(mode),
        verify_token: Some(token),
        challenge: Some(challenge),
    }) = query
    else {
        return (StatusCode::FORBIDDEN, "forbidden").into_response();
    };
    if mode == "subscribe" && token_ok(&token) {
        tracing::info!("answered Meta's verification handshake");
        ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], challenge).into_response()
    } else {
        tracing::warn!(mode, "refused a verification handshake");
        (StatusCode::FORBIDDEN, "forbidden").into_response()
    }
}

fn signature_header(headers: &HeaderMap) -> Result<SignatureHeader, ApiError> {
    let sha256 = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
    SignatureHeader::parse(sha256, headers.contains_key("x-hub-signature")).map_err(reject_signature)
}

fn reject_signature(err: SignatureError) -> ApiError {
    tracing::warn!(reason = %err, "rejected a webhook: bad signature");
    ApiError::Signature(err)
}

/// 400 for a body that is not a webhook envelope. A body that repeats a key within an object gets
/// its own code: it is well-formed JSON that parsers read differently (first value or last), which
/// is how a body could be routed to one tenant and read as another's, so nothing of it is taken.
fn reject_envelope(err: EnvelopeError) -> ApiError {
    match err {
        EnvelopeError::DuplicateKey { .. } => {
            // The key and path in the message are cut short by the parser.
            tracing::warn!(reason = %err, "rejected a webhook: a key repeats within an object");
            ApiError::DuplicateKey(err.to_string())
        }
        other => ApiError::InvalidJson(other.to_string()),
    }
}

/// A POST refused, with the registered app it was for when that is known.
struct Refused {
    error: ApiError,
    app_id: Option<String>,
}

impl From<ApiError> for Refused {
    fn from(error: ApiError) -> Self {
        Self { error, app_id: None }
    }
}

/// The size of a POST's body: as read, or as declared when it was too large to read.
fn body_size(headers: &HeaderMap, body: &Result<Bytes, BytesRejection>) -> u64 {
    match body {
        Ok(body) => body.len() as u64,
        Err(_) => headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    }
}

/// Answers a refusal, keeping its record when it says something about the POST.
async fn answer(
    state: &IngressState,
    route: Route,
    size: u64,
    result: Result<&'static str, Refused>,
) -> Result<&'static str, ApiError> {
    let Refused { error, app_id } = match result {
        Ok(answer) => return Ok(answer),
        Err(refused) => refused,
    };
    if let Some(reason) = refusals::reason(&error) {
        state
            .refusals
            .record(route, app_id.as_deref(), size, reason, error.to_string())
            .await;
    }
    Err(error)
}

/// `POST /webhooks/meta`: the app is found through the Pages the entries name.
async fn receive(
    State(state): State<Arc<IngressState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<&'static str, ApiError> {
    let size = body_size(&headers, &body);
    let result = receive_shared(&state, &headers, body).await;
    answer(&state, Route::Shared, size, result).await
}

async fn receive_shared(
    state: &IngressState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<&'static str, Refused> {
    let body = body.map_err(ApiError::from)?;
    let signature = signature_header(headers)?;
    let envelope = Envelope::parse(&body).map_err(reject_envelope)?;
    let routing = state.routing.snapshot();

    // The apps the named Pages are onboarded under, in order of appearance. A POST comes from one
    // app, so this is almost always one; trying each keeps Pages of several apps in one body working.
    let mut candidates: Vec<&Arc<AppRoute>> = Vec::new();
    for entry in envelope.entries() {
        let app = entry
            .id()
            .and_then(|id| routing.page(id))
            .and_then(|page| routing.app(&page.app_id));
        if let Some(app) = app {
            if !candidates.iter().any(|c| c.app_id == app.app_id) {
                candidates.push(app);
            }
        }
    }
    if candidates.is_empty() {
        // Unverifiable, so nothing is stored; a non-2xx would only make Meta retry for hours and put
        // the app's subscription at risk.
        if let Some(total) = state.unverifiable.note(state.clock.now_ms()) {
            tracing::warn!(
                total,
                object = envelope.object(),
                entries = envelope.entries().len(),
                "acknowledged a webhook for Pages no tenant has onboarded; nothing was stored"
            );
        }
        let detail = format!(
            "`{}` POST of {} entries, none for a Page a tenant has proven; answered 200 and not stored",
            envelope.object().chars().take(64).collect::<String>(),
            envelope.entries().len()
        );
        state
            .refusals
            .record(Route::Shared, None, body.len() as u64, "unknown_pages", detail)
            .await;
        return Ok("EVENT_RECEIVED");
    }
    let now = state.clock.now_ms();
    let first_app = candidates.first().map(|app| app.app_id.clone());
    let mismatch = || Refused {
        error: reject_signature(SignatureError::Mismatch),
        app_id: first_app.clone(),
    };
    let verified = candidates.into_iter().find_map(|app| {
        signature
            .verify_any(app.app_secrets(now), &body)
            .ok()
            .map(|proof| (app, proof))
    });
    let (app, proof) = verified.ok_or_else(mismatch)?;
    let envelope = envelope.into_verified(proof).map_err(|_| mismatch())?;
    Ok(accept(state, &routing, app, envelope, body.clone()).await?)
}

/// `POST /webhooks/meta/{app_id}`: the app is named by the URL, so the body is verified before it is
/// parsed.
async fn receive_for_app(
    State(state): State<Arc<IngressState>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<&'static str, ApiError> {
    let size = body_size(&headers, &body);
    let result = receive_app(&state, &app_id, &headers, body).await;
    answer(&state, Route::App, size, result).await
}

async fn receive_app(
    state: &IngressState,
    app_id: &str,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<&'static str, Refused> {
    let routing = state.routing.snapshot();
    // The app id in the URL is anyone's to choose: only a registered app's is kept with a refusal.
    let app = routing.app(app_id).ok_or(ApiError::NotFound("Meta app"))?;
    let refused = |error: ApiError| Refused {
        error,
        app_id: Some(app.app_id.clone()),
    };
    let body = body.map_err(|e| refused(e.into()))?;
    let signature = signature_header(headers).map_err(refused)?;
    let proof = signature
        .verify_any(app.app_secrets(state.clock.now_ms()), &body)
        .map_err(|e| refused(reject_signature(e)))?;
    let envelope = VerifiedEnvelope::parse(proof).map_err(|e| refused(reject_envelope(e)))?;
    accept(state, &routing, app, envelope, body.clone())
        .await
        .map_err(refused)
}

/// Normalizes a verified POST, routes each event to its tenant, and waits for the commit.
async fn accept(
    state: &IngressState,
    routing: &Routing,
    app: &AppRoute,
    envelope: VerifiedEnvelope<'_>,
    body: Bytes,
) -> Result<&'static str, ApiError> {
    let received_at = state.clock.now_ms();
    let inbound_id = InboundId::at(received_at);

    // An entry is routed when its Page is onboarded under the app that signed the POST.
    let routed = |entry_id: Option<&str>| {
        entry_id
            .and_then(|id| routing.page(id))
            .filter(|page| page.app_id == app.app_id)
    };
    let unroutable: Vec<UnroutableEntry> = envelope
        .envelope()
        .entries()
        .iter()
        .filter(|entry| routed(entry.id()).is_none())
        .map(|entry| UnroutableEntry {
            entry: entry.index(),
            page_id: entry.id().map(str::to_owned),
        })
        .collect();

    let items = envelope.normalize();
    let mut events = Vec::with_capacity(items.len());
    for mut item in items {
        let Some(page) = routed(item.entry_id.as_deref()) else {
            continue;
        };
        let route_id = item.entry_id.as_deref().unwrap_or_default();
        let facts = EventFacts {
            event_type: &item.event_type,
            page_ids: &[&item.page_id, route_id],
            standby: item.standby,
        };
        let endpoints = routing.endpoints_for(&page.tenant_id, &facts);
        let dedup_key = std::mem::take(&mut item.dedup_key);
        // The item's bytes are in the POST's body, which is stored anyway: the stored payload holds
        // `null` in their place, and reads put them back (a third fewer bytes written per event).
        let raw = std::mem::replace(&mut item.raw, RawValue::NULL);
        let start = offset_in(&body, raw);
        let text = item.text.and_then(|text| Some((text, offset_in(&body, text)?)));
        let mut event = item.into_event(
            EventId::at(received_at),
            page.tenant_id.clone(),
            inbound_id.clone(),
            received_at,
        );
        // Serialized once; the routing fields then move out of the event rather than being copied.
        let mut payload = event.to_json();
        // The text, like the item's bytes, is in the body: `null` in its place (before the item's,
        // whose place is found after).
        let text_span = text.and_then(|(text, start)| cut_text(&mut payload, &event.data, text, start));
        // `source` comes last and holds no raw text, so the last `"raw":null` before it is the
        // item's place.
        let at = payload.rfind(RAW_PLACE).map(|at| at + ",\"raw\":".len());
        let (raw_span, text_span) = match (start, at) {
            (Some(start), Some(at)) => (
                Some(RawSpan {
                    at,
                    start,
                    len: raw.get().len(),
                }),
                text_span,
            ),
            _ => {
                event.raw = raw.to_owned();
                payload = event.to_json();
                (None, None)
            }
        };
        events.push(NewEvent {
            id: event.id,
            tenant_id: event.tenant_id,
            page_id: event.page_id,
            event_type: event.event_type,
            dedup_key,
            timestamp_ms: event.timestamp_ms,
            conversation_id: event.conversation_id,
            payload,
            raw: raw_span,
            text: text_span,
            endpoints,
        });
    }
    if !unroutable.is_empty() {
        tracing::warn!(%inbound_id, app_id = %app.app_id, entries = unroutable.len(), "kept entries for Pages no tenant has onboarded");
    }

    let request = IngestRequest {
        inbound_id: inbound_id.clone(),
        received_at,
        app_id: Some(app.app_id.clone()),
        object: envelope.envelope().object().to_owned(),
        entries: u32::try_from(envelope.envelope().entries().len()).unwrap_or(u32::MAX),
        body,
        unroutable,
        events,
    };
    match state.writer.submit(request).await {
        Ok(receipt) => {
            // At debug, not info: a node takes tens of thousands of webhooks a second, and a line
            // for each cost 3-4 % of its ingest written to a file (docs/benchmarks.md). Every
            // webhook is kept in the database and shown in the dashboard;
            // `RUST_LOG=info,pagewire_server::ingress=debug` logs them as well.
            tracing::debug!(
                %inbound_id,
                app_id = %app.app_id,
                events = receipt.events,
                duplicates = receipt.duplicates,
                deliveries = receipt.deliveries,
                "webhook accepted"
            );
            Ok("EVENT_RECEIVED")
        }
        Err(IngestError::Stopped) => Err(ApiError::Unavailable),
        Err(IngestError::Overloaded) => Err(ApiError::Overloaded),
        Err(IngestError::Store(err)) => match err.as_ref() {
            pagewire_store::StoreError::Unavailable(_) => Err(ApiError::Unavailable),
            _ => Err(ApiError::Internal(Box::new(IngestError::Store(err)))),
        },
    }
}

/// Where `part`, borrowed from `body`, starts in it.
fn offset_in(body: &[u8], part: &RawValue) -> Option<usize> {
    (part.get().as_ptr() as usize)
        .checked_sub(body.as_ptr() as usize)
        .filter(|start| start + part.get().len() <= body.len())
}

/// Puts `null` in the serialized `payload` in place of `data.text`, which was decoded from the JSON
/// string `text` at byte `start` of the body, and answers the span that puts it back (as
/// serde_json writes it, which is how the payload held it). `None`, the payload unchanged, when
/// `data.text` is not a string.
fn cut_text(payload: &mut String, data: &serde_json::Value, text: &RawValue, start: usize) -> Option<RawSpan> {
    let serde_json::Value::String(decoded) = data.get("text")? else {
        return None;
    };
    let written = serde_json::to_string(decoded).ok()?;
    // The first `"text":` key followed by these bytes; any such place gives the same payload back.
    // (Searching for the key, not for the text: a searcher for a needle of hundreds of bytes took
    // 6 % of the node's CPU.)
    const KEY: &str = r#""text":"#;
    let at = payload
        .match_indices(KEY)
        .map(|(at, _)| at + KEY.len())
        .find(|at| payload[*at..].starts_with(written.as_str()))?;
    payload.replace_range(at..at + written.len(), "null");
    Some(RawSpan {
        at,
        start,
        len: text.get().len(),
    })
}
