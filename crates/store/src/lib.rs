//! `pagewire-store`: everything Pagewire keeps, behind one [`Store`] trait that speaks in use cases
//! (onboard a Page, ingest a batch of webhooks, lease due deliveries), not tables.
//!
//! The embedded backend is SQLite ([`SqliteStore`]): WAL mode, `synchronous = FULL`, one writer
//! connection and a pool of readers. Several nodes share PostgreSQL ([`PgStore`]), whose leases
//! (`FOR UPDATE SKIP LOCKED`) keep them from taking the same delivery. Secrets are sealed with the
//! [`MasterKey`] on the way in and opened on the way out, so no caller ever handles ciphertext and
//! no row holds a plaintext secret.
//!
//! This crate must not depend on HTTP types: handlers map its errors, it never sees a request.

use std::collections::BTreeMap;

use async_trait::async_trait;
use bytes::Bytes;
use pagewire_core::{
    ApiKeyId, AppRecordId, DeliveryControls, DeliveryId, Ed25519Key, EndpointFilter, EndpointId, EndpointSecret,
    EventId, HealthPolicy, InboundId, NextStep, OperationalEvent, PageRecordId, PayloadFormat, Platform, RefusalId,
    Secret, TenantId,
};

mod error;
mod postgres;
mod rows;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

pub use error::StoreError;
pub use pagewire_core::MasterKey;
pub use postgres::{PgStore, PgStoreOptions};
pub use sqlite::{SqlitePragmas, SqliteStore, SqliteStoreOptions};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: TenantId,
    pub name: String,
    /// Days final events are kept; `None` for the operator's default.
    pub retention_days: Option<u32>,
    /// Whether a Page subscription found missing is subscribed again (else only reported).
    pub auto_resubscribe: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub tenant_id: TenantId,
    pub name: Option<String>,
    pub role: KeyRole,
    /// The first characters of the key, to tell keys apart in lists.
    pub prefix: String,
    pub created_at: i64,
    pub last_used_at: Option<i64>,
    pub revoked_at: Option<i64>,
}

/// What a tenant API key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyRole {
    /// Everything the tenant may do.
    #[default]
    Admin,
    /// Reads only.
    ReadOnly,
}

impl KeyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::ReadOnly => "read_only",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "read_only" => Some(Self::ReadOnly),
            _ => None,
        }
    }
}

/// A new API key, stored by its hash.
#[derive(Debug, Clone)]
pub struct NewApiKey<'a> {
    pub tenant_id: &'a TenantId,
    pub name: Option<&'a str>,
    pub role: KeyRole,
    /// SHA-256 of the key, hex.
    pub key_hash: &'a str,
    pub prefix: &'a str,
}

/// A key that signs the dashboard's tokens (HMAC-SHA256), opened.
#[derive(Debug, Clone)]
pub struct SigningKey {
    pub kid: String,
    pub secret: Secret,
    pub created_at: i64,
    /// When it stopped signing; it verifies until the tokens it signed expire.
    pub retired_at: Option<i64>,
}

/// A Meta app with its secrets opened. `tenant_id` is `None` for the operator's shared apps.
#[derive(Debug, Clone)]
pub struct MetaApp {
    pub id: AppRecordId,
    pub app_id: String,
    pub tenant_id: Option<TenantId>,
    pub name: Option<String>,
    pub app_secret: Secret,
    /// The secret before the last rotation and until when it still verifies.
    pub previous_secret: Option<(Secret, i64)>,
    pub verify_token: Secret,
    pub created_at: i64,
    pub updated_at: i64,
}

/// Changes to an app; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AppUpdate {
    pub name: Option<Option<String>>,
    pub verify_token: Option<Secret>,
}

#[derive(Debug, Clone)]
pub struct NewMetaApp {
    pub app_id: String,
    pub tenant_id: Option<TenantId>,
    pub name: Option<String>,
    pub app_secret: Secret,
    pub verify_token: Secret,
}

/// What shows that a Page (Instagram account, WhatsApp Business Account) is its tenant's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageProof {
    /// An access token that the Graph API confirmed is for the Page (or sees the account).
    AccessToken,
    /// The operator assigned it.
    Operator,
    /// Onboarded before proof was asked for: routed, but listed to the operator as unproven.
    Legacy,
    /// Claimed without proof: receives nothing, and gives way to a proven claim.
    Unproven,
}

impl PageProof {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::AccessToken => "access_token",
            Self::Operator => "operator",
            Self::Legacy => "legacy",
            Self::Unproven => "none",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "access_token" => Some(Self::AccessToken),
            "operator" => Some(Self::Operator),
            "legacy" => Some(Self::Legacy),
            "none" => Some(Self::Unproven),
            _ => None,
        }
    }

    /// Whether the Page's events are routed to its tenant.
    pub const fn is_routed(self) -> bool {
        !matches!(self, Self::Unproven)
    }

    /// Whether the claim is proven (and so cannot be taken by another tenant's proof).
    pub const fn is_proven(self) -> bool {
        matches!(self, Self::AccessToken | Self::Operator)
    }
}

/// A Page changing tenants, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageMove {
    pub page_id: String,
    /// `None` when it had no tenant before.
    pub from_tenant: Option<TenantId>,
    pub to_tenant: TenantId,
    /// `proven_claim` (a tenant proved it, taking it from an unproven claim) or `operator`.
    pub reason: String,
    pub moved_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub id: PageRecordId,
    pub page_id: String,
    pub tenant_id: TenantId,
    pub app_id: String,
    pub platform: Platform,
    pub name: Option<String>,
    pub has_access_token: bool,
    /// For WhatsApp: the account's phone-number ids (the `page_id` of its events). Empty otherwise.
    pub phone_number_ids: Vec<String>,
    /// The webhook fields the Page subscribes to, when not its platform's defaults.
    pub subscribed_fields: Option<Vec<String>>,
    /// What the last subscription check found, and when.
    pub subscription: Option<SubscriptionCheck>,
    pub proof: PageProof,
    pub created_at: i64,
}

/// The outcome of checking a Page's subscription against the Graph API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionCheck {
    /// `ok`, `repaired`, `lost` or `error`.
    pub status: String,
    pub detail: Option<String>,
    pub checked_at: i64,
}

/// A Page with what calling the Graph API for it takes.
#[derive(Debug, Clone)]
pub struct PageCredentials {
    pub page: Page,
    pub access_token: Option<Secret>,
    pub app_secret: Secret,
}

#[derive(Debug, Clone)]
pub struct NewPage {
    pub page_id: String,
    pub tenant_id: TenantId,
    pub app_id: String,
    pub platform: Platform,
    pub name: Option<String>,
    pub access_token: Option<Secret>,
    pub phone_number_ids: Vec<String>,
    pub subscribed_fields: Option<Vec<String>>,
    pub proof: PageProof,
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: EndpointId,
    pub tenant_id: TenantId,
    pub url: String,
    pub description: Option<String>,
    pub filter: EndpointFilter,
    pub controls: DeliveryControls,
    pub format: PayloadFormat,
    /// Extra headers sent with every delivery.
    pub headers: BTreeMap<String, String>,
    /// While a rotated-out secret still signs: until when.
    pub previous_secret_expires_at: Option<i64>,
    /// The public key (`whpk_…`) when the endpoint also gets ed25519 (`v1a`) signatures.
    pub public_key: Option<String>,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// Consecutive failed attempts since the last success.
    pub consecutive_failures: u32,
    /// While set and in the future, the breaker is open: nothing is sent before it.
    pub paused_until: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewEndpoint {
    pub tenant_id: TenantId,
    pub url: String,
    pub description: Option<String>,
    pub filter: EndpointFilter,
    pub controls: DeliveryControls,
    pub format: PayloadFormat,
    pub headers: BTreeMap<String, String>,
    pub secret: EndpointSecret,
    pub ed25519: Option<Ed25519Key>,
}

/// Changes to an endpoint; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct EndpointUpdate {
    pub url: Option<String>,
    pub description: Option<Option<String>>,
    pub filter: Option<EndpointFilter>,
    pub controls: Option<DeliveryControls>,
    pub format: Option<PayloadFormat>,
    pub headers: Option<BTreeMap<String, String>>,
    /// `Some(Some(key))` adds (or replaces) the ed25519 key, `Some(None)` removes it.
    pub ed25519: Option<Option<Ed25519Key>>,
    /// Enabling clears the disabled reason and the endpoint's failure history.
    pub enabled: Option<bool>,
}

/// What ingress needs to route and verify without touching the database: every app, Page and
/// endpoint. Loaded whole; the tables are small next to the event stream.
#[derive(Debug, Clone, Default)]
pub struct RoutingData {
    pub apps: Vec<MetaApp>,
    pub pages: Vec<Page>,
    pub endpoints: Vec<Endpoint>,
}

/// An entry of a verified POST whose Page no tenant has registered: kept for the operator.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct UnroutableEntry {
    pub entry: u32,
    pub page_id: Option<String>,
}

/// One verified POST and what it became, for [`Store::ingest`].
#[derive(Debug, Clone)]
pub struct IngestRequest {
    pub inbound_id: InboundId,
    pub received_at: i64,
    pub app_id: Option<String>,
    pub object: String,
    pub body: Bytes,
    pub entries: u32,
    pub unroutable: Vec<UnroutableEntry>,
    pub events: Vec<NewEvent>,
}

/// A normalized event, serialized once, and the endpoints it goes to.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Minted from the request's `received_at` ([`EventId::at`]): retention finds a tenant's
    /// events older than a time by their ids.
    pub id: EventId,
    pub tenant_id: TenantId,
    pub page_id: String,
    pub event_type: String,
    /// What recognizes a redelivery of the item (its type and `mid`, a watermark, a hash of its
    /// bytes, …), unique per tenant and Page.
    pub dedup_key: String,
    /// The item's time in Unix ms: Meta's (the item's own, else its entry's), else its arrival. A
    /// redelivery carries the same time, and keys are kept in the order of it (see
    /// [`Store::release_dedup_keys`]).
    pub timestamp_ms: i64,
    /// Orders the event's deliveries to endpoints that deliver in order per conversation.
    pub conversation_id: Option<String>,
    /// The event's JSON; with [`NewEvent::raw`] and [`NewEvent::text`], with a `null` where each
    /// goes.
    pub payload: String,
    /// Where the item's bytes are in its POST's body, which is stored anyway: kept once instead of
    /// also inside the payload. `None`: the payload holds them.
    pub raw: Option<RawSpan>,
    /// Where the JSON string that `data.text` was decoded from is in its POST's body (most of a
    /// chat event's bytes): kept once, too. Only with `raw`; `None`: the payload holds the text.
    pub text: Option<RawSpan>,
    pub endpoints: Vec<EndpointId>,
}

/// Bytes of an event in its POST's body: `len` bytes from `start`, to be put in the payload in
/// place of the `null` at byte `at` of the payload as stored (for a text, the JSON string they
/// hold, as serde_json writes it). Readers of the event get the payload whole; the POST is kept as
/// long as any of its events is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawSpan {
    pub at: usize,
    pub start: usize,
    pub len: usize,
}

/// What [`Store::ingest`] did with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct IngestReceipt {
    pub events: usize,
    pub duplicates: usize,
    pub deliveries: usize,
}

/// What to lease, for [`Store::lease_due`].
///
/// Per endpoint, the worker holds at most `max_concurrency × per_endpoint_rounds` deliveries (one
/// while its breaker probes), counting the ones it already `held`; an endpoint is leased only when
/// at least one round of its concurrency fits, so a busy endpoint is refilled in rounds rather than
/// a delivery at a time. Endpoints that deliver in order get only the first pending delivery of each
/// conversation, and paused endpoints none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub now: i64,
    /// Most deliveries in all.
    pub limit: u32,
    /// How many full rounds of its concurrency one endpoint may have leased at once.
    pub per_endpoint_rounds: u32,
    /// How long the lease lasts.
    pub lease_ms: i64,
    /// Deliveries of each endpoint the worker already holds, queued or in flight.
    pub held: Vec<(EndpointId, u32)>,
}

/// Deliveries a [`Store::settle`] leased, before [`Store::load_leased`] reads what to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Leased {
    /// The lease's clock: a rotated-out secret still signs if its overlap ends after it.
    pub(crate) now: i64,
    /// (delivery id, lease_seq), in the order the deliveries are to be sent.
    pub(crate) taken: Vec<(String, i64)>,
    /// How many of them each endpoint has.
    pub(crate) per_endpoint: Vec<(EndpointId, u32)>,
}

impl Leased {
    /// How many of the deliveries each endpoint has: what the worker holds of each endpoint's
    /// share while it reads them ([`Lease::held`]).
    pub fn per_endpoint(&self) -> &[(EndpointId, u32)] {
        &self.per_endpoint
    }

    pub fn len(&self) -> usize {
        self.taken.len()
    }

    pub fn is_empty(&self) -> bool {
        self.taken.is_empty()
    }
}

/// What a pruning pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    pub events: u64,
    pub inbound: u64,
    pub refusals: u64,
}

/// A webhook POST the ingress refused: what the operator needs to say why, never the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub id: RefusalId,
    pub received_at: i64,
    /// `shared` (`/webhooks/meta`) or `app` (`/webhooks/meta/{app_id}`).
    pub route: String,
    /// The registered app the POST was for, when that is known.
    pub app_id: Option<String>,
    /// The body's size in bytes (as declared, when it was too large to read).
    pub size: u64,
    /// A stable code: `invalid_signature`, `invalid_json`, `duplicate_key`, `payload_too_large`,
    /// `unknown_app`, `unknown_pages`.
    pub reason: String,
    /// What was wrong, in words; never a secret or the body.
    pub detail: Option<String>,
}

/// Which refusals to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct RefusalQuery {
    pub limit: u32,
    pub before: Option<String>,
    /// Only refusals of these apps; `None` for every refusal (the operator's view).
    pub app_ids: Option<Vec<String>>,
}

/// Which deliveries to replay, for [`Store::replay`].
#[derive(Debug, Clone, Copy)]
pub enum Replay<'a> {
    /// One delivery, whatever its state.
    Delivery(&'a DeliveryId),
    /// Every delivery of one event.
    Event(&'a EventId),
    /// An endpoint's deliveries that failed (gave up) and were created at or after `since`.
    FailedSince { endpoint: &'a EndpointId, since: i64 },
}

/// What recording a batch of attempts changed about endpoints, for the operational events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthReport {
    /// Endpoints disabled by this batch: gone (410), or failing for longer than the policy allows.
    pub disabled: Vec<(EndpointId, TenantId, String)>,
    /// Endpoints that had been failing and succeeded again.
    pub recovered: Vec<(EndpointId, TenantId)>,
}

/// A delivery leased to this worker: everything needed to send it.
#[derive(Debug, Clone)]
pub struct LeasedDelivery {
    pub id: DeliveryId,
    pub lease_seq: i64,
    pub event_id: EventId,
    pub event_type: String,
    pub endpoint_id: EndpointId,
    pub tenant_id: TenantId,
    pub url: String,
    /// The secrets that sign: the current one first, then a rotated-out one still in its overlap.
    pub secrets: Vec<EndpointSecret>,
    /// Signs `v1a` too when set.
    pub ed25519: Option<Ed25519Key>,
    pub controls: DeliveryControls,
    pub format: PayloadFormat,
    pub headers: Vec<(String, String)>,
    pub payload: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// The outcome of one attempt and the decision that follows, for [`Store::record_attempts`].
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub delivery_id: DeliveryId,
    pub endpoint_id: EndpointId,
    pub tenant_id: TenantId,
    pub event_id: EventId,
    pub event_type: String,
    pub lease_seq: i64,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub started_at: i64,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    pub outcome: &'static str,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
    pub next: NextStep,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "delivered" => Some(Self::Delivered),
            "failed" => Some(Self::Failed),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub event_id: EventId,
    pub endpoint_id: EndpointId,
    pub tenant_id: TenantId,
    pub status: DeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub attempt: u32,
    pub started_at: i64,
    pub duration_ms: i64,
    pub status_code: Option<u16>,
    pub outcome: String,
    pub error: Option<String>,
    pub response_excerpt: Option<String>,
}

/// A stored event, as listed to its tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub id: EventId,
    pub event_type: String,
    pub page_id: String,
    pub received_at: i64,
    pub payload: String,
}

/// A raw POST as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inbound {
    pub id: InboundId,
    pub received_at: i64,
    pub app_id: Option<String>,
    pub object: String,
    pub body: Vec<u8>,
    pub entries: u32,
    pub events: u32,
    pub unroutable: Option<String>,
}

/// An event a raw POST produced, for [`Store::events_of_inbound`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundEvent {
    pub id: EventId,
    pub tenant_id: TenantId,
    pub event_type: String,
    /// The position in the POST's `entry[]` of the entry the event came from.
    pub entry: Option<u32>,
}

/// Where a request with an `Idempotency-Key` stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Idempotency {
    /// First seen: the caller runs the request and records its answer.
    Started,
    /// The first request with this key is still running.
    InProgress,
    /// Answered before: the request's hash, and the answer to give again.
    Done {
        request_hash: String,
        status: u16,
        body: Vec<u8>,
    },
}

/// Which events to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub limit: u32,
    /// Only events with ids before this one (the cursor).
    pub before: Option<String>,
    /// An exact type, or a family as `messenger.*`.
    pub event_type: Option<String>,
    pub page_id: Option<String>,
    pub sender_id: Option<String>,
    /// Received at or after (ms).
    pub since: Option<i64>,
    /// Received before (ms).
    pub until: Option<i64>,
}

/// Which deliveries to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct DeliveryQuery {
    pub limit: u32,
    pub before: Option<String>,
    pub status: Option<DeliveryStatus>,
    pub endpoint_id: Option<EndpointId>,
    pub event_id: Option<EventId>,
}

/// Which raw POSTs to list, newest first: all of them, or those that brought a tenant events.
#[derive(Debug, Clone, Default)]
pub struct InboundQuery {
    pub limit: u32,
    pub before: Option<String>,
    /// Only the POSTs that brought this tenant events, counted as the tenant sees them: `entries`
    /// and `events` are its own, and no unroutable entries (they are other Pages').
    pub tenant_id: Option<TenantId>,
}

/// A tenant's numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TenantStats {
    pub pages: u64,
    pub endpoints_enabled: u64,
    pub endpoints_disabled: u64,
    pub events_total: u64,
    pub events_since: u64,
    pub deliveries_pending: u64,
    pub deliveries_delivered: u64,
    pub deliveries_failed: u64,
}

/// Pagewire's storage, in use cases.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    async fn create_tenant(&self, name: &str, now: i64) -> Result<Tenant>;
    async fn list_tenants(&self) -> Result<Vec<Tenant>>;
    async fn get_tenant(&self, id: &TenantId) -> Result<Tenant>;

    /// Stores a new API key by its hash; the key itself is never stored.
    async fn create_api_key(&self, key: NewApiKey<'_>, now: i64) -> Result<ApiKey>;
    /// The unrevoked key with this hash.
    async fn find_api_key(&self, key_hash: &str) -> Result<Option<ApiKey>>;
    /// The tenant's keys, revoked ones included, newest first.
    async fn list_api_keys(&self, tenant_id: &TenantId) -> Result<Vec<ApiKey>>;
    /// Revokes one of the tenant's keys (again is a no-op); `NotFound` if it is not the tenant's.
    async fn revoke_api_key(&self, tenant_id: &TenantId, id: &ApiKeyId, now: i64) -> Result<ApiKey>;
    /// Notes that a key was used.
    async fn touch_api_key(&self, id: &ApiKeyId, now: i64) -> Result<()>;

    /// Every signing key that still signs or verifies, newest first.
    async fn signing_keys(&self) -> Result<Vec<SigningKey>>;
    /// Adds a signing key that signs from now on, retires the one before it at `now`, then forgets
    /// keys retired before `forget_before` (their tokens have expired). A `forget_before` after
    /// `now` forgets the key just retired too: the tokens it signed stop verifying at once.
    async fn rotate_signing_key(&self, kid: &str, secret: &Secret, now: i64, forget_before: i64) -> Result<()>;

    async fn create_app(&self, app: NewMetaApp, now: i64) -> Result<MetaApp>;
    /// The tenant's own apps and the shared apps (with `tenant_id == None`).
    async fn list_apps(&self, tenant_id: Option<&TenantId>) -> Result<Vec<MetaApp>>;
    async fn get_app(&self, app_id: &str) -> Result<MetaApp>;
    /// `Conflict` if the new verify token is another app's.
    async fn update_app(&self, app_id: &str, update: AppUpdate, now: i64) -> Result<MetaApp>;
    /// Makes `secret` the app's secret; the one it replaces verifies until `previous_valid_until`.
    async fn rotate_app_secret(
        &self,
        app_id: &str,
        secret: &Secret,
        previous_valid_until: i64,
        now: i64,
    ) -> Result<MetaApp>;
    /// `Conflict` while Pages are onboarded under the app.
    async fn delete_app(&self, app_id: &str) -> Result<()>;

    /// Onboards a Page; `Conflict` if anyone has it.
    async fn create_page(&self, page: NewPage, now: i64) -> Result<Page>;
    /// Onboards a Page with a proven claim: a Page nobody has is created, an unproven or legacy
    /// claim (the tenant's own or another's) is replaced, and a move to another tenant recorded;
    /// `Conflict` when a proven claim has it. Answers the Page and the tenant it was taken from.
    async fn take_over_page(&self, page: NewPage, now: i64) -> Result<(Page, Option<TenantId>)>;
    /// The operator gives a Page to `tenant_id` under `app_id`, proven by the operator: its access
    /// token and subscription state go (they were another tenant's), and a move is recorded when
    /// the tenant changes. Answers the Page and the tenant it was taken from.
    async fn assign_page(
        &self,
        page_id: &str,
        tenant_id: &TenantId,
        app_id: &str,
        now: i64,
    ) -> Result<(Page, Option<TenantId>)>;
    /// Every tenant's Pages, for the operator.
    async fn all_pages(&self) -> Result<Vec<Page>>;
    /// Recorded moves of Pages between tenants (of one Page, or all), newest first.
    async fn page_moves(&self, page_id: Option<&str>) -> Result<Vec<PageMove>>;
    async fn list_pages(&self, tenant_id: &TenantId) -> Result<Vec<Page>>;
    /// One of the tenant's Pages, by its Meta id.
    async fn get_page(&self, tenant_id: &TenantId, page_id: &str) -> Result<Page>;
    /// The tenant that onboarded a Page, and its proof, whoever asks.
    async fn page_owner(&self, page_id: &str) -> Result<Option<(TenantId, PageProof)>>;
    /// The Page with its access token and its app's secret, for Graph API calls.
    async fn page_credentials(&self, tenant_id: &TenantId, page_id: &str) -> Result<PageCredentials>;
    /// Every Page with an access token, for the subscription check.
    async fn pages_with_tokens(&self) -> Result<Vec<PageCredentials>>;
    async fn set_page_fields(&self, tenant_id: &TenantId, page_id: &str, fields: Option<&[String]>) -> Result<Page>;
    async fn record_subscription_check(&self, page_id: &str, check: &SubscriptionCheck) -> Result<()>;
    /// Offboards a Page: its events stop being routed; what was stored stays until retention.
    async fn delete_page(&self, tenant_id: &TenantId, page_id: &str) -> Result<()>;
    async fn set_tenant_auto_resubscribe(&self, id: &TenantId, on: bool) -> Result<Tenant>;

    async fn create_endpoint(&self, endpoint: NewEndpoint, now: i64) -> Result<Endpoint>;
    async fn list_endpoints(&self, tenant_id: &TenantId) -> Result<Vec<Endpoint>>;
    async fn get_endpoint(&self, tenant_id: &TenantId, id: &EndpointId) -> Result<Endpoint>;
    /// Deletes an endpoint with its deliveries and their attempts.
    async fn delete_endpoint(&self, tenant_id: &TenantId, id: &EndpointId) -> Result<()>;
    async fn update_endpoint(
        &self,
        tenant_id: &TenantId,
        id: &EndpointId,
        update: EndpointUpdate,
        now: i64,
    ) -> Result<Endpoint>;
    /// Makes `secret` the signing secret; the current one keeps signing too until `previous_until`.
    async fn rotate_endpoint_secret(
        &self,
        tenant_id: &TenantId,
        id: &EndpointId,
        secret: EndpointSecret,
        previous_until: i64,
        now: i64,
    ) -> Result<Endpoint>;

    /// Everything ingress routes by, secrets opened.
    async fn load_routing(&self) -> Result<RoutingData>;

    /// Writes a batch of verified POSTs in one transaction: each raw body, its unroutable entries, its
    /// events (an event whose dedup key the tenant's Page already has is a duplicate and skipped), and
    /// one pending delivery per new event and endpoint. Returns one receipt per request, in order.
    async fn ingest(&self, batch: &[IngestRequest], now: i64) -> Result<Vec<IngestReceipt>>;

    /// Deletes what retention no longer keeps, in bounded batches: events older than their tenant's
    /// retention (`retention_days`, else `default_retention_ms`) whose deliveries are all final,
    /// with those deliveries and their attempts; and raw POSTs and refusals older than the default.
    async fn prune(&self, now: i64, default_retention_ms: i64) -> Result<PruneReport>;
    /// Sets a tenant's retention; `None` returns it to the operator's default.
    async fn set_tenant_retention(&self, id: &TenantId, days: Option<u32>) -> Result<Tenant>;

    /// Keeps refused POSTs' metadata (the caller bounds how many per app and hour).
    async fn record_refusals(&self, refusals: &[Refusal]) -> Result<()>;
    async fn query_refusals(&self, query: &RefusalQuery) -> Result<Vec<Refusal>>;

    /// Forgets the dedup keys of items timed before `before` (Unix ms, by [`NewEvent::timestamp_ms`]),
    /// so that the dedup index stays the size of the window; returns how many were released.
    /// Releases in bounded steps so that ingest is never blocked for long.
    async fn release_dedup_keys(&self, before: i64) -> Result<u64>;

    /// Stores an example event and one pending delivery of it to one endpoint: a test send.
    async fn send_test_event(&self, event: &NewEvent, endpoint: &EndpointId, now: i64) -> Result<DeliveryId>;

    /// Stores operational events (`endpoint.disabled`, …) with one pending delivery to each enabled
    /// endpoint of their tenant that asked for them; returns how many deliveries were created.
    async fn emit_operational(&self, events: &[OperationalEvent], now: i64) -> Result<usize>;

    /// Leases due deliveries of enabled endpoints, committing the lease before returning. A lease
    /// that ends unrecorded makes the delivery due again. Deliveries come in the order of their
    /// events.
    async fn lease_due(&self, lease: Lease) -> Result<Vec<LeasedDelivery>>;

    /// Records attempts and applies their next steps, in one transaction. A record whose lease was
    /// taken over meanwhile is kept in the attempt log but does not change the delivery. Updates
    /// each endpoint's health: a success closes its breaker; failures open it after
    /// `health.threshold` in a row, for a pause that doubles with each further failure; an endpoint
    /// failing for longer than `health.disable_after` is disabled.
    async fn record_attempts(&self, records: &[AttemptRecord], now: i64, health: &HealthPolicy)
        -> Result<HealthReport>;

    /// Whether transactions that write run side by side (each on its own connection), rather than
    /// taking turns on one writer. The dispatcher then leases in a transaction of its own, not held
    /// up by the outcomes it would otherwise record with it.
    fn writes_in_parallel(&self) -> bool {
        false
    }

    /// Records `records` and, with `lease`, leases what is due next, in one transaction (one commit
    /// per dispatcher round). What was leased is read afterwards with [`Store::load_leased`], beside
    /// the writer, so the next round's transaction need not wait for it.
    async fn settle(
        &self,
        records: &[AttemptRecord],
        now: i64,
        health: &HealthPolicy,
        lease: Option<Lease>,
    ) -> Result<(HealthReport, Leased)>;

    /// What to send for deliveries a [`Store::settle`] leased (and committed).
    async fn load_leased(&self, leased: Leased) -> Result<Vec<LeasedDelivery>>;

    async fn list_events(&self, tenant_id: &TenantId, limit: u32) -> Result<Vec<StoredEvent>>;
    async fn deliveries_of_event(&self, tenant_id: &TenantId, event_id: &EventId) -> Result<Vec<Delivery>>;
    async fn list_deliveries(&self, tenant_id: &TenantId, limit: u32) -> Result<Vec<Delivery>>;
    async fn attempts_of_delivery(&self, tenant_id: &TenantId, delivery_id: &DeliveryId) -> Result<Vec<Attempt>>;
    async fn list_inbound(&self, limit: u32) -> Result<Vec<Inbound>>;
    async fn query_events(&self, tenant_id: &TenantId, query: &EventQuery) -> Result<Vec<StoredEvent>>;
    async fn get_event(&self, tenant_id: &TenantId, id: &EventId) -> Result<StoredEvent>;
    async fn query_deliveries(&self, tenant_id: &TenantId, query: &DeliveryQuery) -> Result<Vec<Delivery>>;
    async fn get_delivery(&self, tenant_id: &TenantId, id: &DeliveryId) -> Result<Delivery>;
    async fn query_inbound(&self, query: &InboundQuery) -> Result<Vec<Inbound>>;
    async fn get_inbound(&self, id: &InboundId) -> Result<Inbound>;
    /// The events a raw POST produced, with their tenants and entries.
    async fn events_of_inbound(&self, id: &InboundId) -> Result<Vec<InboundEvent>>;
    /// Claims `(scope, key)` for a request, or says how it was answered before.
    async fn idempotency_begin(&self, scope: &str, key: &str, request_hash: &str, now: i64) -> Result<Idempotency>;
    /// Records the answer to give again.
    async fn idempotency_finish(&self, scope: &str, key: &str, status: u16, body: &[u8]) -> Result<()>;
    /// Forgets a claim whose request failed in a way worth retrying.
    async fn idempotency_abandon(&self, scope: &str, key: &str) -> Result<()>;
    /// Forgets keys claimed before `before`.
    async fn idempotency_prune(&self, before: i64) -> Result<u64>;
    /// `events_since` counts events received at or after `since`.
    async fn tenant_stats(&self, tenant_id: &TenantId, since: i64) -> Result<TenantStats>;
    /// Deliveries not yet delivered or given up.
    async fn count_pending(&self) -> Result<u64>;

    /// Replays deliveries: each chosen delivery becomes due at `now` with a fresh retry schedule
    /// (its attempt log is kept). Returns how many were replayed.
    async fn replay(&self, tenant_id: &TenantId, what: Replay<'_>, now: i64) -> Result<u64>;
    /// How many deliveries [`Store::replay`] would replay.
    async fn count_replayable(&self, tenant_id: &TenantId, what: Replay<'_>) -> Result<u64>;
}
