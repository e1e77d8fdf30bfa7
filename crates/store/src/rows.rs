//! What the SQLite and PostgreSQL backends do alike with rows: the row types their queries decode
//! into, the column lists those queries select, how a row becomes a domain value (opening its sealed
//! columns with the [`MasterKey`] on the way), what a row just inserted reads back as, and the parts
//! of statements that read the same in both dialects (built with a [`QueryBuilder`], which writes
//! each dialect's placeholders).
//!
//! Both schemas give each column the same Rust type (an SQLite `INTEGER` and a PostgreSQL `BIGINT`
//! decode as `i64`, an SQLite 0/1 and a PostgreSQL `BOOLEAN` as `bool`), so one row type serves
//! both; sqlx's `FromRow` (derived or for tuples) is generic over the database. Statements stay in
//! each backend, where the dialects differ (`?` and `$1`, `json_each` and `UNNEST`, `1` and `TRUE`).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use pagewire_core::{
    ApiKeyId, AppRecordId, DeliveryControls, Ed25519Key, EndpointFilter, EndpointId, EndpointSecret, MasterKey,
    NextStep, PageRecordId, PayloadFormat, Platform, Secret, TenantId,
};
use sqlx::QueryBuilder;

use crate::{
    ApiKey, Attempt, AttemptRecord, Delivery, DeliveryStatus, Endpoint, EndpointUpdate, Idempotency, Inbound,
    InboundEvent, IngestReceipt, KeyRole, Leased, LeasedDelivery, MetaApp, NewApiKey, NewEndpoint, NewEvent,
    NewMetaApp, NewPage, Page, PageCredentials, PageMove, PageProof, Refusal, Replay, Result, SigningKey, StoreError,
    StoredEvent, SubscriptionCheck, Tenant,
};

// The purposes secrets are sealed for: the same in both databases, so a sealed value means the
// same thing in either.
pub(crate) const APP_SECRET: &str = "app_secret";
pub(crate) const VERIFY_TOKEN: &str = "verify_token";
pub(crate) const PAGE_TOKEN: &str = "page_token";
pub(crate) const ENDPOINT_SECRET: &str = "endpoint_secret";
pub(crate) const SIGNING_KEY: &str = "signing_key";
pub(crate) const IDEMPOTENT_RESPONSE: &str = "idempotent_response";
pub(crate) const ENDPOINT_ED25519: &str = "endpoint_ed25519";

pub(crate) const TENANT_COLUMNS: &str = "id, name, retention_days, auto_resubscribe, created_at";
pub(crate) const API_KEY_COLUMNS: &str = "id, tenant_id, name, role, key_prefix, created_at, last_used_at, revoked_at";
pub(crate) const SIGNING_KEY_COLUMNS: &str = "kid, secret_sealed, created_at, retired_at";
pub(crate) const APP_COLUMNS: &str = "id, app_id, tenant_id, name, app_secret_sealed, previous_app_secret_sealed, \
                                      previous_secret_expires_at, verify_token_sealed, created_at, updated_at";
pub(crate) const PAGE_COLUMNS: &str = "id, page_id, tenant_id, app_id, platform, name, \
    access_token_sealed IS NOT NULL, phone_number_ids, subscribed_fields, subscription_status, \
    subscription_detail, subscription_checked_at, created_at, proof";
pub(crate) const ENDPOINT_COLUMNS: &str = "id, tenant_id, url, description, event_types, page_ids, include_standby, \
    include_echoes, max_concurrency, rate_limit, ordered, format, headers, previous_secret_expires_at, \
    ed25519_sealed, enabled, disabled_reason, consecutive_failures, probe_at, created_at, updated_at";
/// An endpoint's sending settings: a [`TargetRow`].
pub(crate) const TARGET_COLUMNS: &str = "id, url, secret_sealed, previous_secret_sealed, previous_secret_expires_at, \
    ed25519_sealed, max_concurrency, rate_limit, ordered, format, headers";
/// An event's columns from `events` (unaliased), with where its item's bytes and text are in its
/// POST's body (see [`crate::RawSpan`]); the bodies are read once per POST ([`events_from_rows`]).
pub(crate) const EVENT_COLUMNS: &str = "id, type, page_id, received_at, payload, inbound_id, raw_at, raw_start, \
    raw_len, text_at, text_start, text_len";
pub(crate) const DELIVERY_COLUMNS: &str = "id, event_id, endpoint_id, tenant_id, status, attempts, next_attempt_at, \
                                           last_status, last_error, created_at, updated_at";
/// A delivery leased, with its event: deliveries as `d`, events as `ev`. The item's bytes are
/// not read here but from the bodies of the lease's POSTs, each read once ([`leased_deliveries`]):
/// a lease of 256 events of 100-item POSTs read a body per event.
pub(crate) const LEASED_COLUMNS: &str = "d.id, d.event_id, ev.type AS event_type, d.endpoint_id, d.tenant_id, \
    ev.payload, ev.inbound_id, ev.raw_at, ev.raw_start, ev.raw_len, ev.text_at, ev.text_start, ev.text_len, \
    d.attempts";
/// Attempts as `a`.
pub(crate) const ATTEMPT_COLUMNS: &str =
    "a.attempt, a.started_at, a.duration_ms, a.status_code, a.outcome, a.error, a.response_excerpt";
/// Inbound requests as `i`.
pub(crate) const INBOUND_COLUMNS: &str =
    "i.id, i.received_at, i.app_id, i.object, i.body, i.entries, i.events, i.unroutable_entries";

/// [`INBOUND_COLUMNS`] as one tenant sees them (the tenant is the query's parameter `tenant`, and
/// `entry` the backend's expression for an event's entry): its own entries and events, none of
/// the POST's unroutable entries.
pub(crate) fn inbound_columns_for_tenant(tenant: &str, entry: &str) -> String {
    format!(
        "i.id, i.received_at, i.app_id, i.object, i.body, \
         (SELECT COUNT(DISTINCT {entry}) FROM events e WHERE e.inbound_id = i.id AND e.tenant_id = {tenant}), \
         (SELECT COUNT(*) FROM events e WHERE e.inbound_id = i.id AND e.tenant_id = {tenant}), \
         NULL"
    )
}

/// An event of a raw POST: id, tenant, type and entry.
pub(crate) type InboundEventRow = (String, String, String, Option<i64>);

pub(crate) fn inbound_event_from_row((id, tenant, event_type, entry): InboundEventRow) -> Result<InboundEvent> {
    Ok(InboundEvent {
        id: parse_id(&id)?,
        tenant_id: parse_id(&tenant)?,
        event_type,
        entry: entry.and_then(|e| u32::try_from(e).ok()),
    })
}

#[derive(sqlx::FromRow)]
pub(crate) struct TenantRow {
    id: String,
    name: String,
    retention_days: Option<i64>,
    auto_resubscribe: bool,
    created_at: i64,
}

/// A tenant as just inserted: what reading its row back gives.
pub(crate) fn created_tenant(id: TenantId, name: &str, now: i64) -> Tenant {
    Tenant {
        id,
        name: name.to_owned(),
        retention_days: None,
        auto_resubscribe: true,
        created_at: now,
    }
}

pub(crate) fn tenant_from_row(row: TenantRow) -> Result<Tenant> {
    Ok(Tenant {
        id: parse_id(&row.id)?,
        name: row.name,
        retention_days: row.retention_days.and_then(|d| u32::try_from(d).ok()),
        auto_resubscribe: row.auto_resubscribe,
        created_at: row.created_at,
    })
}

pub(crate) type ApiKeyRow = (
    String,
    String,
    Option<String>,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
);

/// An API key as just inserted.
pub(crate) fn created_api_key(id: ApiKeyId, key: &NewApiKey<'_>, now: i64) -> ApiKey {
    ApiKey {
        id,
        tenant_id: key.tenant_id.clone(),
        name: key.name.map(str::to_owned),
        role: key.role,
        prefix: key.prefix.to_owned(),
        created_at: now,
        last_used_at: None,
        revoked_at: None,
    }
}

pub(crate) fn api_key_from_row(row: ApiKeyRow) -> Result<ApiKey> {
    let (id, tenant_id, name, role, prefix, created_at, last_used_at, revoked_at) = row;
    Ok(ApiKey {
        id: parse_id(&id)?,
        tenant_id: parse_id(&tenant_id)?,
        name,
        role: KeyRole::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("API key role {role:?}")))?,
        prefix,
        created_at,
        last_used_at,
        revoked_at,
    })
}

pub(crate) type SigningKeyRow = (String, String, i64, Option<i64>);

pub(crate) fn signing_key_from_row(key: &MasterKey, row: SigningKeyRow) -> Result<SigningKey> {
    let (kid, sealed, created_at, retired_at) = row;
    Ok(SigningKey {
        secret: open_secret(key, SIGNING_KEY, &sealed)?,
        kid,
        created_at,
        retired_at,
    })
}

pub(crate) type AppRow = (
    String,
    String,
    Option<String>,
    Option<String>,
    String,
    Option<String>,
    Option<i64>,
    String,
    i64,
    i64,
);

/// An app as just inserted, its secrets as given.
pub(crate) fn created_app(id: AppRecordId, app: NewMetaApp, now: i64) -> MetaApp {
    MetaApp {
        id,
        app_id: app.app_id,
        tenant_id: app.tenant_id,
        name: app.name,
        app_secret: app.app_secret,
        previous_secret: None,
        verify_token: app.verify_token,
        created_at: now,
        updated_at: now,
    }
}

pub(crate) fn app_from_row(key: &MasterKey, row: AppRow) -> Result<MetaApp> {
    let (id, app_id, tenant_id, name, secret, previous, previous_until, token, created_at, updated_at) = row;
    let previous_secret = match (previous, previous_until) {
        (Some(sealed), Some(until)) => Some((open_secret(key, APP_SECRET, &sealed)?, until)),
        _ => None,
    };
    Ok(MetaApp {
        id: parse_id(&id)?,
        app_id,
        tenant_id: tenant_id.as_deref().map(parse_id).transpose()?,
        name,
        app_secret: open_secret(key, APP_SECRET, &secret)?,
        previous_secret,
        verify_token: open_secret(key, VERIFY_TOKEN, &token)?,
        created_at,
        updated_at,
    })
}

/// How verify tokens are compared for uniqueness without storing them in the clear.
pub(crate) fn verify_token_hash(token: &Secret) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(token.expose().as_bytes()))
}

pub(crate) type PageRow = (
    String,
    String,
    String,
    String,
    String,
    Option<String>,
    bool,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<i64>,
    i64,
    String,
);

/// A Page as just inserted.
pub(crate) fn created_page(id: PageRecordId, page: NewPage, now: i64) -> Page {
    Page {
        id,
        page_id: page.page_id,
        tenant_id: page.tenant_id,
        app_id: page.app_id,
        platform: page.platform,
        name: page.name,
        has_access_token: page.access_token.is_some(),
        phone_number_ids: page.phone_number_ids,
        subscribed_fields: page.subscribed_fields,
        subscription: None,
        proof: page.proof,
        created_at: now,
    }
}

/// A recorded move: page, from, to, reason, time.
pub(crate) type PageMoveRow = (String, Option<String>, String, String, i64);

pub(crate) fn page_move_from_row((page_id, from, to, reason, moved_at): PageMoveRow) -> Result<PageMove> {
    Ok(PageMove {
        page_id,
        from_tenant: from.as_deref().map(parse_id).transpose()?,
        to_tenant: parse_id(&to)?,
        reason,
        moved_at,
    })
}

pub(crate) fn page_from_row(row: PageRow) -> Result<Page> {
    let (
        id,
        page_id,
        tenant_id,
        app_id,
        platform,
        name,
        has_token,
        phone_number_ids,
        fields,
        status,
        detail,
        checked_at,
        created_at,
        proof,
    ) = row;
    let subscription = match (status, checked_at) {
        (Some(status), Some(checked_at)) => Some(SubscriptionCheck {
            status,
            detail,
            checked_at,
        }),
        _ => None,
    };
    Ok(Page {
        id: parse_id(&id)?,
        page_id,
        tenant_id: parse_id(&tenant_id)?,
        app_id,
        platform: Platform::parse(&platform)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown platform `{platform}`")))?,
        name,
        has_access_token: has_token,
        phone_number_ids: parse_json_list(phone_number_ids)?.unwrap_or_default(),
        subscribed_fields: parse_json_list(fields)?,
        subscription,
        proof: PageProof::parse(&proof).ok_or_else(|| StoreError::Corrupt(format!("unknown page proof `{proof}`")))?,
        created_at,
    })
}

/// A Page's access token and its app's secret, both sealed (the token only if the Page has one).
pub(crate) type PageSecretsRow = (Option<String>, String);

pub(crate) fn page_credentials(key: &MasterKey, page: Page, row: PageSecretsRow) -> Result<PageCredentials> {
    let (token, secret) = row;
    Ok(PageCredentials {
        page,
        access_token: token.map(|t| open_secret(key, PAGE_TOKEN, &t)).transpose()?,
        app_secret: open_secret(key, APP_SECRET, &secret)?,
    })
}

#[derive(sqlx::FromRow)]
pub(crate) struct EndpointRow {
    id: String,
    tenant_id: String,
    url: String,
    description: Option<String>,
    event_types: Option<String>,
    page_ids: Option<String>,
    include_standby: bool,
    include_echoes: bool,
    max_concurrency: i64,
    rate_limit: Option<i64>,
    ordered: bool,
    format: String,
    headers: Option<String>,
    previous_secret_expires_at: Option<i64>,
    ed25519_sealed: Option<String>,
    enabled: bool,
    disabled_reason: Option<String>,
    consecutive_failures: i64,
    probe_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

/// An endpoint as just inserted (enabled, with no failures), as the API shows it.
pub(crate) fn created_endpoint(id: EndpointId, endpoint: NewEndpoint, now: i64) -> Endpoint {
    Endpoint {
        id,
        tenant_id: endpoint.tenant_id,
        url: endpoint.url,
        description: endpoint.description,
        filter: endpoint.filter,
        controls: endpoint.controls,
        format: endpoint.format,
        headers: endpoint.headers,
        previous_secret_expires_at: None,
        public_key: endpoint.ed25519.as_ref().map(Ed25519Key::public_key),
        enabled: true,
        disabled_reason: None,
        consecutive_failures: 0,
        paused_until: None,
        created_at: now,
        updated_at: now,
    }
}

/// The `SET` items of an [`EndpointUpdate`] that read the same in both dialects (each begins with
/// a comma): all but `enabled`, whose literals differ.
pub(crate) fn push_endpoint_changes<'a, DB>(
    query: &mut QueryBuilder<'a, DB>,
    key: &MasterKey,
    update: &'a EndpointUpdate,
) where
    DB: sqlx::Database,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<&'a str>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<String>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Option<i64>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    bool: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    if let Some(url) = &update.url {
        query.push(", url = ").push_bind(url.as_str());
    }
    if let Some(description) = &update.description {
        query.push(", description = ").push_bind(description.as_deref());
    }
    if let Some(filter) = &update.filter {
        query
            .push(", event_types = ")
            .push_bind(json_list(filter.event_types.as_deref()))
            .push(", page_ids = ")
            .push_bind(json_list(filter.page_ids.as_deref()))
            .push(", include_standby = ")
            .push_bind(filter.include_standby)
            .push(", include_echoes = ")
            .push_bind(filter.include_echoes);
    }
    if let Some(controls) = &update.controls {
        query
            .push(", max_concurrency = ")
            .push_bind(i64::from(controls.max_concurrency))
            .push(", rate_limit = ")
            .push_bind(controls.rate_limit.map(i64::from))
            .push(", ordered = ")
            .push_bind(controls.ordered);
    }
    if let Some(format) = update.format {
        query.push(", format = ").push_bind(format.as_str());
    }
    if let Some(headers) = &update.headers {
        query.push(", headers = ").push_bind(json_headers(headers));
    }
    if let Some(ed25519) = &update.ed25519 {
        let sealed = ed25519.as_ref().map(|k| key.seal(ENDPOINT_ED25519, &k.expose()));
        query.push(", ed25519_sealed = ").push_bind(sealed);
    }
}

/// An endpoint for routing: without its public key, so without the cost of opening its ed25519
/// key (see [`shown_endpoint_from_row`]).
pub(crate) fn endpoint_from_row(row: EndpointRow) -> Result<Endpoint> {
    Ok(Endpoint {
        id: parse_id(&row.id)?,
        tenant_id: parse_id(&row.tenant_id)?,
        url: row.url,
        description: row.description,
        filter: EndpointFilter {
            event_types: parse_json_list(row.event_types)?,
            page_ids: parse_json_list(row.page_ids)?,
            include_standby: row.include_standby,
            include_echoes: row.include_echoes,
        },
        controls: controls_from_columns(row.max_concurrency, row.rate_limit, row.ordered),
        format: parse_format(&row.format)?,
        headers: parse_headers(row.headers)?,
        previous_secret_expires_at: row.previous_secret_expires_at,
        public_key: None,
        enabled: row.enabled,
        disabled_reason: row.disabled_reason,
        consecutive_failures: u32::try_from(row.consecutive_failures).unwrap_or(0),
        paused_until: row.probe_at,
        created_at: row.created_at,
        updated_at: row.updated_at,
    })
}

/// An endpoint as the API shows it: the ed25519 key reduced to its public half.
pub(crate) fn shown_endpoint_from_row(key: &MasterKey, row: EndpointRow) -> Result<Endpoint> {
    let public_key = row
        .ed25519_sealed
        .as_deref()
        .map(|sealed| open_ed25519(key, sealed))
        .transpose()?;
    let mut endpoint = endpoint_from_row(row)?;
    endpoint.public_key = public_key.as_ref().map(Ed25519Key::public_key);
    Ok(endpoint)
}

/// A delivery just leased, with its event ([`LEASED_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(crate) struct LeasedRow {
    id: String,
    event_id: String,
    event_type: String,
    endpoint_id: String,
    tenant_id: String,
    payload: String,
    inbound_id: String,
    #[sqlx(flatten)]
    spans: Spans,
    attempts: i64,
}

impl LeasedRow {
    pub(crate) fn endpoint_id(&self) -> &str {
        &self.endpoint_id
    }

    /// The POST whose body holds bytes of the event, when its payload is not whole.
    pub(crate) fn post(&self) -> Option<&str> {
        self.spans.post(&self.inbound_id)
    }
}

/// An endpoint's sending settings as stored ([`TARGET_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(crate) struct TargetRow {
    id: String,
    url: String,
    secret_sealed: String,
    previous_secret_sealed: Option<String>,
    previous_secret_expires_at: Option<i64>,
    ed25519_sealed: Option<String>,
    max_concurrency: i64,
    rate_limit: Option<i64>,
    ordered: bool,
    format: String,
    headers: Option<String>,
}

/// An endpoint's sending settings, secrets opened.
struct Target {
    url: String,
    secrets: Vec<EndpointSecret>,
    ed25519: Option<Ed25519Key>,
    controls: DeliveryControls,
    format: PayloadFormat,
    headers: Vec<(String, String)>,
}

/// An endpoint's sending settings with its secrets opened (an ed25519 key costs a scalar
/// multiplication to open: once per lease, not once per delivery).
fn open_target(key: &MasterKey, row: TargetRow, now: i64) -> Result<Target> {
    let open = |sealed: &str| {
        EndpointSecret::parse(&key.open(ENDPOINT_SECRET, sealed)?)
            .map_err(|e| StoreError::Corrupt(format!("endpoint secret: {e}")))
    };
    let mut secrets = vec![open(&row.secret_sealed)?];
    if let (Some(previous), Some(until)) = (&row.previous_secret_sealed, row.previous_secret_expires_at) {
        if until > now {
            secrets.push(open(previous)?);
        }
    }
    Ok(Target {
        url: row.url,
        secrets,
        ed25519: row
            .ed25519_sealed
            .as_deref()
            .map(|sealed| open_ed25519(key, sealed))
            .transpose()?,
        controls: controls_from_columns(row.max_concurrency, row.rate_limit, row.ordered),
        format: parse_format(&row.format)?,
        headers: parse_headers(row.headers)?.into_iter().collect(),
    })
}

/// What to send for the deliveries of `leased`: each with its endpoint's settings, which are
/// opened once per endpoint, not once per delivery, and its item's bytes cut from its POST's body
/// in `bodies` (`(inbound id, body)`, each POST once). `deliveries` keeps its order.
pub(crate) fn leased_deliveries(
    key: &MasterKey,
    leased: &Leased,
    deliveries: Vec<LeasedRow>,
    endpoints: Vec<TargetRow>,
    bodies: Vec<(String, Vec<u8>)>,
) -> Result<Vec<LeasedDelivery>> {
    let bodies = by_post(&bodies);
    let targets = endpoints
        .into_iter()
        .map(|row| Ok((row.id.clone(), open_target(key, row, leased.now)?)))
        .collect::<Result<HashMap<String, Target>>>()?;
    let seqs: HashMap<&str, i64> = leased.taken.iter().map(|(id, seq)| (id.as_str(), *seq)).collect();
    deliveries
        .into_iter()
        .map(|row| {
            let target = targets
                .get(&row.endpoint_id)
                .ok_or_else(|| StoreError::Corrupt(format!("delivery {} has no endpoint", row.id)))?;
            let payload = row
                .spans
                .payload(row.payload, &row.event_id, &row.inbound_id, &bodies)?;
            Ok(LeasedDelivery {
                lease_seq: seqs.get(row.id.as_str()).copied().unwrap_or_default(),
                id: parse_id(&row.id)?,
                event_id: parse_id(&row.event_id)?,
                event_type: row.event_type,
                endpoint_id: parse_id(&row.endpoint_id)?,
                tenant_id: parse_id(&row.tenant_id)?,
                url: target.url.clone(),
                secrets: target.secrets.clone(),
                ed25519: target.ed25519.clone(),
                controls: target.controls,
                format: target.format,
                headers: target.headers.clone(),
                payload,
                attempts: u32::try_from(row.attempts).unwrap_or(0),
            })
        })
        .collect()
}

/// An event as stored ([`EVENT_COLUMNS`]).
#[derive(sqlx::FromRow)]
pub(crate) struct EventRow {
    id: String,
    #[sqlx(rename = "type")]
    event_type: String,
    page_id: String,
    received_at: i64,
    payload: String,
    inbound_id: String,
    #[sqlx(flatten)]
    spans: Spans,
}

impl EventRow {
    /// The POST whose body holds bytes of the event, when its payload is not whole.
    pub(crate) fn post(&self) -> Option<&str> {
        self.spans.post(&self.inbound_id)
    }
}

/// The events of `rows`, each item's bytes cut from its POST's body in `bodies` (`(inbound id,
/// body)`, each POST once: a page of events from one 1000-item POST reads its body once).
pub(crate) fn events_from_rows(rows: Vec<EventRow>, bodies: &[(String, Vec<u8>)]) -> Result<Vec<StoredEvent>> {
    let bodies = by_post(bodies);
    rows.into_iter()
        .map(|row| {
            let payload = row.spans.payload(row.payload, &row.id, &row.inbound_id, &bodies)?;
            Ok(StoredEvent {
                id: parse_id(&row.id)?,
                event_type: row.event_type,
                page_id: row.page_id,
                received_at: row.received_at,
                payload,
            })
        })
        .collect()
}

/// POSTs' bodies by inbound id.
fn by_post(bodies: &[(String, Vec<u8>)]) -> HashMap<&str, &[u8]> {
    bodies.iter().map(|(id, body)| (id.as_str(), body.as_slice())).collect()
}

/// Where an event's payload holds a `null` for bytes kept in its POST's body (see
/// [`crate::RawSpan`]): the item's raw bytes, and the JSON string its `data.text` was decoded
/// from. The columns of each are all NULL when the payload holds that part itself.
#[derive(sqlx::FromRow)]
pub(crate) struct Spans {
    raw_at: Option<i64>,
    raw_start: Option<i64>,
    raw_len: Option<i64>,
    text_at: Option<i64>,
    text_start: Option<i64>,
    text_len: Option<i64>,
}

/// A span's place in the stored payload and its bytes in the body.
#[derive(Clone, Copy)]
struct Place {
    at: usize,
    start: usize,
    len: usize,
}

impl Spans {
    /// Whether the payload needs its POST's body.
    pub(crate) fn in_body(&self) -> bool {
        self.raw_at.is_some() || self.text_at.is_some()
    }

    /// `inbound_id`, the event's POST, when the payload needs its body.
    fn post<'a>(&self, inbound_id: &'a str) -> Option<&'a str> {
        self.in_body().then_some(inbound_id)
    }

    /// Event `id`'s payload as endpoints receive it: each part put back from the body of its POST
    /// `post` in `bodies`. The item's bytes go back as they are; the text is a JSON string as Meta
    /// wrote it (with `\uXXXX` escapes), which goes back as serde_json writes it, so that the
    /// payload is the one serialized at ingest, byte for byte.
    fn payload(self, mut payload: String, id: &str, post: &str, bodies: &HashMap<&str, &[u8]>) -> Result<String> {
        if !self.in_body() {
            return Ok(payload);
        }
        let corrupt = |what: &str| StoreError::Corrupt(format!("event {id}'s {what}"));
        let place = |at: Option<i64>, start: Option<i64>, len: Option<i64>, what: &str| -> Result<Option<Place>> {
            let Some(at) = at else { return Ok(None) };
            let column = |n: Option<i64>| n.and_then(|n| usize::try_from(n).ok());
            match (usize::try_from(at).ok(), column(start), column(len)) {
                (Some(at), Some(start), Some(len)) => Ok(Some(Place { at, start, len })),
                _ => Err(corrupt(&format!("{what} has no valid place"))),
            }
        };
        let raw = place(self.raw_at, self.raw_start, self.raw_len, "raw item")?;
        let text = place(self.text_at, self.text_start, self.text_len, "text")?;
        let body = bodies.get(post).ok_or_else(|| corrupt("POST is gone"))?;
        // From the later place to the earlier, so that each is where it was stored.
        let mut parts = [(raw, "raw item", false), (text, "text", true)];
        parts.sort_by_key(|(place, ..)| std::cmp::Reverse(place.map(|place| place.at)));
        for (place, what, is_text) in parts {
            let Some(place) = place else { continue };
            let bytes = place
                .start
                .checked_add(place.len)
                .and_then(|end| body.get(place.start..end))
                .and_then(|bytes| std::str::from_utf8(bytes).ok())
                .ok_or_else(|| corrupt(&format!("{what} lies outside its POST")))?;
            // A JSON string without escapes is what serde_json writes for it already (it escapes
            // only quotes, backslashes and control characters, which such a string cannot hold).
            let bytes: Cow<'_, str> = if is_text && bytes.contains('\\') {
                let text = serde_json::from_str::<String>(bytes)
                    .and_then(|text| serde_json::to_string(&text))
                    .map_err(|_| corrupt("text in its POST is not a JSON string"))?;
                Cow::Owned(text)
            } else {
                Cow::Borrowed(bytes)
            };
            let null = place.at..place.at + NULL.len();
            if payload.get(null.clone()) != Some(NULL) {
                return Err(corrupt(&format!("{what} has no place in its payload")));
            }
            payload.replace_range(null, &bytes);
        }
        Ok(payload)
    }
}

const NULL: &str = "null";

/// `at`, `start` and `len` of a new event's span (NULLs: its payload holds that part itself).
pub(crate) fn span_columns(span: Option<crate::RawSpan>) -> [Option<i64>; 3] {
    let column = |n: usize| i64::try_from(n).ok();
    match span {
        Some(span) => [column(span.at), column(span.start), column(span.len)],
        None => [None; 3],
    }
}

pub(crate) type DeliveryRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<String>,
    i64,
    i64,
);

pub(crate) fn delivery_from_row(row: DeliveryRow) -> Result<Delivery> {
    let (
        id,
        event_id,
        endpoint_id,
        tenant_id,
        status,
        attempts,
        next_attempt_at,
        last_status,
        last_error,
        created_at,
        updated_at,
    ) = row;
    Ok(Delivery {
        id: parse_id(&id)?,
        event_id: parse_id(&event_id)?,
        endpoint_id: parse_id(&endpoint_id)?,
        tenant_id: parse_id(&tenant_id)?,
        status: DeliveryStatus::parse(&status)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery status `{status}`")))?,
        attempts: u32::try_from(attempts).unwrap_or(0),
        next_attempt_at,
        last_status: last_status.and_then(|s| u16::try_from(s).ok()),
        last_error,
        created_at,
        updated_at,
    })
}

pub(crate) type AttemptRow = (i64, i64, i64, Option<i64>, String, Option<String>, Option<String>);

pub(crate) fn attempt_from_row(row: AttemptRow) -> Attempt {
    let (attempt, started_at, duration_ms, status_code, outcome, error, response_excerpt) = row;
    Attempt {
        attempt: u32::try_from(attempt).unwrap_or(0),
        started_at,
        duration_ms,
        status_code: status_code.and_then(|s| u16::try_from(s).ok()),
        outcome,
        error,
        response_excerpt,
    }
}

pub(crate) type InboundRow = (String, i64, Option<String>, String, Vec<u8>, i64, i64, Option<String>);

pub(crate) fn inbound_from_row(row: InboundRow) -> Result<Inbound> {
    let (id, received_at, app_id, object, body, entries, events, unroutable) = row;
    Ok(Inbound {
        id: parse_id(&id)?,
        received_at,
        app_id,
        object,
        body,
        entries: u32::try_from(entries).unwrap_or(0),
        events: u32::try_from(events).unwrap_or(0),
        unroutable,
    })
}

/// An idempotency key already claimed: its request hash, and the response once there is one.
pub(crate) type IdempotencyRow = (String, Option<i64>, Option<String>);

pub(crate) fn idempotency_from_row(key: &MasterKey, row: IdempotencyRow) -> Result<Idempotency> {
    let (hash, status, sealed) = row;
    Ok(match (status, sealed) {
        (Some(status), Some(sealed)) => Idempotency::Done {
            request_hash: hash,
            status: u16::try_from(status).unwrap_or(500),
            body: open_secret(key, IDEMPOTENT_RESPONSE, &sealed)?
                .expose()
                .as_bytes()
                .to_vec(),
        },
        _ => Idempotency::InProgress,
    })
}

/// What a delivery becomes after an attempt: its status, and when it is next due.
pub(crate) fn settled(next: NextStep, now: i64) -> (DeliveryStatus, i64) {
    match next {
        NextStep::Done => (DeliveryStatus::Delivered, now),
        NextStep::RetryAt(at) => (DeliveryStatus::Pending, at),
        NextStep::GiveUp | NextStep::DisableEndpoint => (DeliveryStatus::Failed, now),
    }
}

/// What a batch of attempts says about one endpoint's health.
#[derive(Default)]
pub(crate) struct HealthTally {
    pub(crate) succeeded: bool,
    pub(crate) failed: i64,
    pub(crate) gone: bool,
}

/// A batch's attempts tallied per endpoint, in endpoint id order: one health update per endpoint,
/// not per attempt, and endpoints always visited in the same order.
pub(crate) fn tally_health(records: &[AttemptRecord]) -> BTreeMap<&str, HealthTally> {
    let mut tallies: BTreeMap<&str, HealthTally> = BTreeMap::new();
    for r in records {
        let tally = tallies.entry(r.endpoint_id.as_str()).or_default();
        match r.next {
            NextStep::Done => tally.succeeded = true,
            NextStep::DisableEndpoint => tally.gone = true,
            NextStep::RetryAt(_) | NextStep::GiveUp => tally.failed += 1,
        }
    }
    tallies
}

/// A duration as the columns keep it: whole milliseconds.
pub(crate) fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The `WHERE` clause that picks the deliveries of a [`Replay`], always within one tenant: the same
/// text in both dialects, as the builder writes the placeholders.
pub(crate) fn push_replay_scope<'a, DB>(query: &mut QueryBuilder<'a, DB>, tenant_id: &'a TenantId, what: Replay<'a>)
where
    DB: sqlx::Database,
    &'a str: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    query.push(" WHERE tenant_id = ").push_bind(tenant_id.as_str());
    match what {
        Replay::Delivery(id) => {
            query.push(" AND id = ").push_bind(id.as_str());
        }
        Replay::Event(id) => {
            query.push(" AND event_id = ").push_bind(id.as_str());
        }
        Replay::FailedSince { endpoint, since } => {
            query
                .push(" AND status = 'failed' AND endpoint_id = ")
                .push_bind(endpoint.as_str());
            query.push(" AND created_at >= ").push_bind(since);
        }
    }
}

pub(crate) fn open_secret(key: &MasterKey, purpose: &str, sealed: &str) -> Result<Secret> {
    Ok(Secret::new(key.open(purpose, sealed)?))
}

fn open_ed25519(key: &MasterKey, sealed: &str) -> Result<Ed25519Key> {
    Ed25519Key::parse(&key.open(ENDPOINT_ED25519, sealed)?)
        .map_err(|e| StoreError::Corrupt(format!("endpoint ed25519 key: {e}")))
}

pub(crate) fn parse_id<T: FromStr<Err = pagewire_core::id::InvalidId>>(s: &str) -> Result<T> {
    s.parse()
        .map_err(|e: pagewire_core::id::InvalidId| StoreError::Corrupt(e.to_string()))
}

/// A row count as the API counts: never negative.
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// A list (event types, Page ids, subscribed fields, phone number ids) as stored: a JSON array.
pub(crate) fn json_list(value: Option<&[String]>) -> Option<String> {
    value.map(|v| serde_json::to_string(v).unwrap_or_else(|_| String::from("[]")))
}

pub(crate) fn parse_json_list(value: Option<String>) -> Result<Option<Vec<String>>> {
    value
        .map(|s| serde_json::from_str(&s).map_err(|e| StoreError::Corrupt(format!("stored list: {e}"))))
        .transpose()
}

/// An endpoint's extra headers as stored: a JSON object, or nothing when there are none.
pub(crate) fn json_headers(headers: &BTreeMap<String, String>) -> Option<String> {
    (!headers.is_empty()).then(|| serde_json::to_string(headers).unwrap_or_default())
}

fn parse_headers(headers: Option<String>) -> Result<BTreeMap<String, String>> {
    headers
        .map(|h| serde_json::from_str(&h).map_err(|e| StoreError::Corrupt(format!("endpoint headers: {e}"))))
        .transpose()
        .map(Option::unwrap_or_default)
}

fn parse_format(format: &str) -> Result<PayloadFormat> {
    PayloadFormat::parse(format).ok_or_else(|| StoreError::Corrupt(format!("unknown endpoint format `{format}`")))
}

fn controls_from_columns(max_concurrency: i64, rate_limit: Option<i64>, ordered: bool) -> DeliveryControls {
    DeliveryControls {
        max_concurrency: u32::try_from(max_concurrency).unwrap_or(1).max(1),
        rate_limit: rate_limit.and_then(|r| u32::try_from(r).ok()),
        ordered,
    }
}

/// What an ingest batch makes of its events once they are inserted: a receipt per request (new
/// events, their deliveries, duplicates), and the deliveries to create as (event, endpoint).
/// `events` are (request index, event) in batch order; `inserted` tells the ids the insert kept (a
/// redelivery's id is not among them).
///
/// Each endpoint's deliveries come side by side (a stable sort keeps the order of its events, which
/// is the order they are leased in): leasing and recording them then dirty a page per run of rows,
/// not a page per row where endpoints alternate (a tenant with two endpoints, one of them dead).
pub(crate) fn new_deliveries<'a>(
    requests: usize,
    events: &[(usize, &'a NewEvent)],
    inserted: impl Fn(&str) -> bool,
) -> (Vec<IngestReceipt>, Vec<(&'a NewEvent, &'a EndpointId)>) {
    let mut receipts = vec![IngestReceipt::default(); requests];
    let mut targets = Vec::new();
    for &(i, event) in events {
        if inserted(event.id.as_str()) {
            receipts[i].events += 1;
            receipts[i].deliveries += event.endpoints.len();
            targets.extend(event.endpoints.iter().map(|endpoint| (event, endpoint)));
        } else {
            receipts[i].duplicates += 1;
        }
    }
    targets.sort_by_key(|(_, endpoint)| endpoint.as_str());
    (receipts, targets)
}

/// The bytes of an item's dedup key, unique per item in `dedup_keys`: its time (big-endian Unix
/// ms, negative times as 0), then the first 16 bytes of SHA-256 over tenant, Page and natural key.
///
/// Time first makes the index grow at one end as items arrive (each batch's keys land in the last
/// few leaves, where a key led by tenant and Page dirtied a leaf per item across the whole index),
/// and lets the window's release cut the oldest range. Hashing keeps every key 24 bytes, whatever
/// the length of Meta's ids.
pub(crate) fn dedup_key(event: &NewEvent) -> [u8; DEDUP_KEY_LEN] {
    dedup_key_of(
        event.tenant_id.as_str(),
        &event.page_id,
        &event.dedup_key,
        event.timestamp_ms,
    )
}

/// [`dedup_key`] from its parts.
pub(crate) fn dedup_key_of(
    tenant_id: &str,
    page_id: &str,
    natural_key: &str,
    timestamp_ms: i64,
) -> [u8; DEDUP_KEY_LEN] {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(tenant_id)
        .chain_update([0])
        .chain_update(page_id)
        .chain_update([0])
        .chain_update(natural_key)
        .finalize();
    let mut key = [0; DEDUP_KEY_LEN];
    key[..8].copy_from_slice(&dedup_time(timestamp_ms));
    key[8..].copy_from_slice(&digest[..DEDUP_KEY_LEN - 8]);
    key
}

pub(crate) const DEDUP_KEY_LEN: usize = 24;

/// The time prefix of dedup keys: every key of an item timed before `ms` sorts below it.
pub(crate) fn dedup_time(ms: i64) -> [u8; 8] {
    u64::try_from(ms).unwrap_or(0).to_be_bytes()
}

/// A refusal as read: id, time, route, app, size, reason, detail.
pub(crate) type RefusalRow = (String, i64, String, Option<String>, i64, String, Option<String>);

pub(crate) const REFUSAL_COLUMNS: &str = "id, received_at, route, app_id, size, reason, detail";

pub(crate) fn refusal_from_row((id, received_at, route, app_id, size, reason, detail): RefusalRow) -> Result<Refusal> {
    Ok(Refusal {
        id: parse_id(&id)?,
        received_at,
        route,
        app_id,
        size: u64::try_from(size).unwrap_or(0),
        reason,
        detail,
    })
}
