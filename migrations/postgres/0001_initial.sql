-- Pagewire's PostgreSQL schema: the final state of migrations/sqlite/0001 … 0013 in one step.
--
-- Times are Unix milliseconds (BIGINT), as in SQLite; ids are prefixed ULIDs (see pagewire-core).
-- Secrets (`*_sealed`) are sealed with the master key: the sealed form is a versioned ASCII
-- envelope (`v1:` and base64), kept as TEXT so that it is byte for byte what SQLite stores. API keys
-- are stored as SHA-256 hashes. JSON that the code reads back whole (filters, headers, lists) is
-- TEXT too: `events.payload` must stay exactly as endpoints receive it (JSONB would reorder keys
-- and drop whitespace), and the others are never queried inside.
--
-- Every integer column is BIGINT so that the code reads them all as i64, as it does on SQLite.
-- Ids compare bytewise (`COLLATE "C"`), as SQLite compares them: lists page by `id < cursor` and
-- ULIDs sort by time only bytewise, whatever the database's locale.
-- Constraints carry the names the code matches on (`…_key` for uniqueness, `…_fkey` for
-- references), which are PostgreSQL's own default names.
--
-- SQLite orders by `rowid`, which every index carries at its end. Deliveries keep that insertion
-- order in `seq`, and the indexes that leasing walks end with it.

CREATE TABLE tenants (
    id               TEXT COLLATE "C" PRIMARY KEY,
    name             TEXT NOT NULL,
    created_at       BIGINT NOT NULL,
    -- Days final events are kept; NULL: the operator's default.
    retention_days   BIGINT,
    auto_resubscribe BOOLEAN NOT NULL DEFAULT TRUE
);

CREATE TABLE api_keys (
    id           TEXT COLLATE "C" PRIMARY KEY,
    tenant_id    TEXT COLLATE "C" NOT NULL CONSTRAINT api_keys_tenant_id_fkey REFERENCES tenants (id) ON DELETE CASCADE,
    name         TEXT,
    key_hash     TEXT NOT NULL,
    key_prefix   TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    revoked_at   BIGINT,
    role         TEXT NOT NULL DEFAULT 'admin',   -- admin | read_only
    last_used_at BIGINT,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);
CREATE INDEX api_keys_tenant_id_idx ON api_keys (tenant_id, id);

-- The keys that sign the dashboard's short-lived tokens. The newest unretired key signs; a retired
-- key still verifies the tokens it signed until they expire.
CREATE TABLE signing_keys (
    kid           TEXT COLLATE "C" PRIMARY KEY,
    secret_sealed TEXT NOT NULL,
    created_at    BIGINT NOT NULL,
    retired_at    BIGINT
);

-- A Meta app. `tenant_id` is NULL for the operator's shared apps. The verify token is sealed; its
-- hash keeps tokens unique across the system.
CREATE TABLE meta_apps (
    id                         TEXT COLLATE "C" PRIMARY KEY,
    app_id                     TEXT NOT NULL,
    tenant_id                  TEXT COLLATE "C" CONSTRAINT meta_apps_tenant_id_fkey REFERENCES tenants (id) ON DELETE CASCADE,
    app_secret_sealed          TEXT NOT NULL,
    verify_token_sealed        TEXT NOT NULL,
    created_at                 BIGINT NOT NULL,
    updated_at                 BIGINT NOT NULL,
    name                       TEXT,
    -- The secret before the last rotation, which still verifies until it expires.
    previous_app_secret_sealed TEXT,
    previous_secret_expires_at BIGINT,
    verify_token_hash          TEXT NOT NULL,
    CONSTRAINT meta_apps_app_id_key UNIQUE (app_id),
    CONSTRAINT meta_apps_verify_token_hash_key UNIQUE (verify_token_hash)
);

-- An onboarded Page (or Instagram account, or WhatsApp Business Account): the routing key of ingress.
CREATE TABLE pages (
    id                      TEXT COLLATE "C" PRIMARY KEY,
    page_id                 TEXT NOT NULL,
    tenant_id               TEXT COLLATE "C" NOT NULL CONSTRAINT pages_tenant_id_fkey REFERENCES tenants (id) ON DELETE CASCADE,
    app_id                  TEXT NOT NULL CONSTRAINT pages_app_id_fkey REFERENCES meta_apps (app_id),
    platform                TEXT NOT NULL,
    name                    TEXT,
    access_token_sealed     TEXT,
    phone_number_ids        TEXT,   -- JSON array: a WhatsApp Business Account's phone-number ids
    created_at              BIGINT NOT NULL,
    subscribed_fields       TEXT,   -- JSON array; NULL: the platform's defaults
    subscription_status     TEXT,   -- ok | repaired | lost | error
    subscription_detail     TEXT,
    subscription_checked_at BIGINT,
    CONSTRAINT pages_page_id_key UNIQUE (page_id)
);
-- A Page's app is referenced: deleting an app checks (and PostgreSQL's reference check reads) it.
CREATE INDEX pages_app_id_idx ON pages (app_id);

CREATE TABLE endpoints (
    id                         TEXT COLLATE "C" PRIMARY KEY,
    tenant_id                  TEXT COLLATE "C" NOT NULL CONSTRAINT endpoints_tenant_id_fkey REFERENCES tenants (id) ON DELETE CASCADE,
    url                        TEXT NOT NULL,
    description                TEXT,
    event_types                TEXT,      -- JSON array of patterns, NULL for all
    page_ids                   TEXT,      -- JSON array of Page ids, NULL for all
    secret_sealed              TEXT NOT NULL,
    enabled                    BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason            TEXT,
    created_at                 BIGINT NOT NULL,
    updated_at                 BIGINT NOT NULL,
    -- Delivery controls: standby and echo opt-ins, concurrency, rate, ordering per conversation.
    include_standby            BOOLEAN NOT NULL DEFAULT FALSE,
    include_echoes             BOOLEAN NOT NULL DEFAULT FALSE,
    max_concurrency            BIGINT NOT NULL DEFAULT 16,
    rate_limit                 BIGINT,    -- events per second; NULL: no limit
    ordered                    BOOLEAN NOT NULL DEFAULT FALSE,  -- one event per conversation at a time
    -- Health, which drives the circuit breaker.
    consecutive_failures       BIGINT NOT NULL DEFAULT 0,
    failing_since              BIGINT,    -- first failure since the last success
    probe_at                   BIGINT,    -- breaker open: nothing is sent before this
    -- What the endpoint receives (`standard` or `meta`) and its own extra headers (a JSON object).
    format                     TEXT NOT NULL DEFAULT 'standard',
    headers                    TEXT,
    -- Secret rotation: the previous secret keeps signing until it expires.
    previous_secret_sealed     TEXT,
    previous_secret_expires_at BIGINT,
    -- The optional ed25519 key (sealed), for Standard Webhooks `v1a` signatures.
    ed25519_sealed             TEXT
);
CREATE INDEX endpoints_tenant_id_idx ON endpoints (tenant_id);

-- Every POST that Meta made and that passed verification, byte for byte.
CREATE TABLE inbound (
    id                 TEXT COLLATE "C" PRIMARY KEY,
    received_at        BIGINT NOT NULL,
    app_id             TEXT,
    object             TEXT NOT NULL,
    body               BYTEA NOT NULL,
    entries            BIGINT NOT NULL,
    events             BIGINT NOT NULL,
    unroutable_entries TEXT   -- JSON array of {entry, page_id} for entries no tenant owns
);
CREATE INDEX inbound_received_at_idx ON inbound (received_at);

CREATE TABLE events (
    id          TEXT COLLATE "C" PRIMARY KEY,
    tenant_id   TEXT COLLATE "C" NOT NULL,
    page_id     TEXT NOT NULL,
    type        TEXT NOT NULL,
    -- The natural key that recognizes Meta's redeliveries; set to NULL once the dedup window has
    -- passed (NULLs never conflict), so the uniqueness index stays the size of the window.
    dedup_key   TEXT,
    inbound_id  TEXT COLLATE "C" NOT NULL,
    received_at BIGINT NOT NULL,
    payload     TEXT NOT NULL,   -- the event JSON exactly as endpoints receive it
    CONSTRAINT events_dedup_key UNIQUE (tenant_id, page_id, dedup_key)
);
CREATE INDEX events_tenant_id_idx ON events (tenant_id, id);
CREATE INDEX events_dedup_expiry_idx ON events (received_at) WHERE dedup_key IS NOT NULL;
CREATE INDEX events_received_at_idx ON events (received_at);
-- The events each raw POST produced, for the inbound log.
CREATE INDEX events_inbound_id_idx ON events (inbound_id, tenant_id);
-- Retention is per tenant: pruning walks each tenant's events from the oldest.
CREATE INDEX events_tenant_received_idx ON events (tenant_id, received_at);

-- One event on its way to one endpoint. `next_attempt_at` is also the lease: leasing moves it past
-- the lease's end, so a delivery whose worker died becomes due again. `lease_seq` fences the
-- outcome of a lease that was taken over.
CREATE TABLE deliveries (
    id              TEXT COLLATE "C" PRIMARY KEY,
    -- Insertion order (SQLite's rowid): deliveries are leased in the order of their events.
    seq             BIGINT GENERATED ALWAYS AS IDENTITY,
    event_id        TEXT COLLATE "C" NOT NULL CONSTRAINT deliveries_event_id_fkey REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id     TEXT COLLATE "C" NOT NULL CONSTRAINT deliveries_endpoint_id_fkey REFERENCES endpoints (id) ON DELETE CASCADE,
    tenant_id       TEXT COLLATE "C" NOT NULL,
    status          TEXT NOT NULL,   -- pending | delivered | failed
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_seq       BIGINT NOT NULL DEFAULT 0,
    last_status     BIGINT,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    -- The conversation an event belongs to, for endpoints that deliver in order per conversation.
    ordering_key    TEXT
);
CREATE INDEX deliveries_event_id_idx ON deliveries (event_id);
CREATE INDEX deliveries_tenant_id_idx ON deliveries (tenant_id, id);
-- Leasing walks the due deliveries of one endpoint at a time, in due order then insertion order,
-- so that an endpoint with a deep backlog that is paused or busy costs nothing to skip.
CREATE INDEX deliveries_endpoint_due_idx ON deliveries (endpoint_id, next_attempt_at, seq) WHERE status = 'pending';
-- An ordered endpoint takes only the first pending delivery of each conversation.
CREATE INDEX deliveries_ordering_idx ON deliveries (endpoint_id, ordering_key, seq) WHERE status = 'pending';

-- Attempts are read by their delivery, never by an id of their own.
CREATE TABLE delivery_attempts (
    delivery_id      TEXT COLLATE "C" NOT NULL CONSTRAINT delivery_attempts_delivery_id_fkey
                         REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt          BIGINT NOT NULL,
    started_at       BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    status_code      BIGINT,
    outcome          TEXT NOT NULL,
    error            TEXT,
    response_excerpt TEXT
);
CREATE INDEX delivery_attempts_delivery_id_idx ON delivery_attempts (delivery_id, attempt);

-- Answers to POSTs made with an `Idempotency-Key`, per caller, so a retried request gets the first
-- answer instead of doing the work twice. `status` is NULL while the first request runs. The
-- answer is sealed (it can hold a secret shown once, such as a new API key). Kept for 24 hours.
CREATE TABLE idempotency_keys (
    scope           TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    status          BIGINT,
    response_sealed TEXT,
    created_at      BIGINT NOT NULL,
    CONSTRAINT idempotency_keys_pkey PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
