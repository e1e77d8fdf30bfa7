-- Dedup keys leave the events table for one of their own, `dedup_keys`, whose key is led by the
-- item's time (24 bytes: big-endian Unix ms, then 16 bytes of SHA-256 over tenant, Page and the
-- natural key, NUL between them; see the store's `rows::dedup_key`). The unique index on
-- (tenant, Page, key) took a random leaf for every event ingested; keys in time order land at the
-- index's end, and the window's release deletes its oldest range instead of walking an index of
-- arrival times. The keys still in the window move over, timed as their events are.
CREATE TABLE dedup_keys (key BYTEA PRIMARY KEY);

INSERT INTO dedup_keys (key)
    SELECT int8send(GREATEST(coalesce((payload::jsonb ->> 'timestamp_ms')::bigint, received_at), 0))
           || substring(sha256(convert_to(tenant_id, 'UTF8') || '\x00'::bytea || convert_to(page_id, 'UTF8')
                               || '\x00'::bytea || convert_to(dedup_key, 'UTF8')) FROM 1 FOR 16)
    FROM events WHERE dedup_key IS NOT NULL
    ON CONFLICT DO NOTHING;

ALTER TABLE events DROP CONSTRAINT events_dedup_key;
DROP INDEX events_dedup_expiry_idx;
ALTER TABLE events DROP COLUMN dedup_key;
