-- Dedup keys leave the events table for one of their own, `dedup_keys`, whose key is led by the
-- item's time (24 bytes: big-endian Unix ms, then 16 bytes of SHA-256 over tenant, Page and the
-- natural key; see the store's `rows::dedup_key`). The unique index on (tenant, Page, key) took a
-- random leaf for every event ingested; keys in time order land at the index's end, and the
-- window's release deletes its oldest range instead of walking an index of arrival times.
--
-- The events table is rebuilt without `dedup_key` (SQLite cannot drop a table constraint); the
-- store runs migrations with foreign keys off, so dropping the old table does not cascade into
-- deliveries. SQLite cannot compute SHA-256, so the keys still in the window wait in
-- `legacy_dedup_keys` for the store, which hashes them into `dedup_keys` when it opens.

CREATE TABLE dedup_keys (key BLOB PRIMARY KEY NOT NULL) WITHOUT ROWID;

CREATE TABLE legacy_dedup_keys AS
    SELECT tenant_id, page_id, dedup_key,
           coalesce(CASE WHEN json_valid(payload) THEN json_extract(payload, '$.timestamp_ms') END,
                    received_at) AS timestamp_ms
    FROM events WHERE dedup_key IS NOT NULL;

CREATE TABLE events_new (
    id          TEXT PRIMARY KEY NOT NULL,
    tenant_id   TEXT NOT NULL,
    page_id     TEXT NOT NULL,
    type        TEXT NOT NULL,
    inbound_id  TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    payload     TEXT NOT NULL       -- the event JSON exactly as endpoints receive it
);
INSERT INTO events_new (id, tenant_id, page_id, type, inbound_id, received_at, payload)
    SELECT id, tenant_id, page_id, type, inbound_id, received_at, payload FROM events ORDER BY rowid;
DROP TABLE events;
ALTER TABLE events_new RENAME TO events;
CREATE INDEX events_tenant_id_idx ON events (tenant_id, id);
CREATE INDEX events_inbound_id_idx ON events (inbound_id, tenant_id);
CREATE INDEX events_tenant_received_idx ON events (tenant_id, received_at);
