-- Pagewire's embedded schema. Times are Unix milliseconds; ids are prefixed ULIDs (see pagewire-core).
-- Secrets (`*_sealed`) are sealed with the master key; API keys are stored as SHA-256 hashes.

CREATE TABLE tenants (
    id          TEXT PRIMARY KEY NOT NULL,
    name        TEXT NOT NULL,
    created_at  INTEGER NOT NULL
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name        TEXT,
    key_hash    TEXT NOT NULL,
    key_prefix  TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);

-- A Meta app. `tenant_id` is NULL for the operator's shared apps.
CREATE TABLE meta_apps (
    id                  TEXT PRIMARY KEY NOT NULL,
    app_id              TEXT NOT NULL,
    tenant_id           TEXT REFERENCES tenants (id) ON DELETE CASCADE,
    app_secret_sealed   TEXT NOT NULL,
    verify_token_sealed TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    CONSTRAINT meta_apps_app_id_key UNIQUE (app_id)
);

-- An onboarded Page (or Instagram account, or WhatsApp Business Account): the routing key of ingress.
CREATE TABLE pages (
    id                  TEXT PRIMARY KEY NOT NULL,
    page_id             TEXT NOT NULL,
    tenant_id           TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    app_id              TEXT NOT NULL REFERENCES meta_apps (app_id),
    platform            TEXT NOT NULL,
    name                TEXT,
    access_token_sealed TEXT,
    phone_number_ids    TEXT,        -- JSON array: a WhatsApp Business Account's phone-number ids
    created_at          INTEGER NOT NULL,
    CONSTRAINT pages_page_id_key UNIQUE (page_id)
);

CREATE TABLE endpoints (
    id              TEXT PRIMARY KEY NOT NULL,
    tenant_id       TEXT NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url             TEXT NOT NULL,
    description     TEXT,
    event_types     TEXT,            -- JSON array of patterns, NULL for all
    page_ids        TEXT,            -- JSON array of Page ids, NULL for all
    secret_sealed   TEXT NOT NULL,
    enabled         INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX endpoints_tenant_id_idx ON endpoints (tenant_id);

-- Every POST that Meta made and that passed verification, byte for byte.
CREATE TABLE inbound (
    id                  TEXT PRIMARY KEY NOT NULL,
    received_at         INTEGER NOT NULL,
    app_id              TEXT,
    object              TEXT NOT NULL,
    body                BLOB NOT NULL,
    entries             INTEGER NOT NULL,
    events              INTEGER NOT NULL,
    unroutable_entries  TEXT           -- JSON array of {entry, page_id} for entries no tenant owns
);

CREATE TABLE events (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL,
    page_id     TEXT NOT NULL,
    type        TEXT NOT NULL,
    -- The natural key that recognizes Meta's redeliveries; set to NULL once the dedup window has
    -- passed (NULLs never conflict), so the uniqueness index stays the size of the window.
    dedup_key   TEXT,
    inbound_id  TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    payload     TEXT NOT NULL,       -- the event JSON exactly as endpoints receive it
    CONSTRAINT events_dedup_key UNIQUE (tenant_id, page_id, dedup_key)
);
CREATE INDEX events_tenant_id_idx ON events (tenant_id, id);
CREATE INDEX events_dedup_expiry_idx ON events (received_at) WHERE dedup_key IS NOT NULL;

-- One event on its way to one endpoint. `next_attempt_at` is also the lease: leasing moves it past
-- the lease's end, so a delivery whose worker died becomes due again.
CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY NOT NULL,
    event_id        TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    endpoint_id     TEXT NOT NULL REFERENCES endpoints (id) ON DELETE CASCADE,
    tenant_id       TEXT NOT NULL,
    status          TEXT NOT NULL,   -- pending | delivered | failed
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    lease_seq       INTEGER NOT NULL DEFAULT 0,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);
CREATE INDEX deliveries_due_idx ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_event_id_idx ON deliveries (event_id);
CREATE INDEX deliveries_tenant_id_idx ON deliveries (tenant_id, id);

CREATE TABLE delivery_attempts (
    id               TEXT PRIMARY KEY NOT NULL,
    delivery_id      TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt          INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    status_code      INTEGER,
    outcome          TEXT NOT NULL,
    error            TEXT,
    response_excerpt TEXT
);
CREATE INDEX delivery_attempts_delivery_id_idx ON delivery_attempts (delivery_id, attempt);
