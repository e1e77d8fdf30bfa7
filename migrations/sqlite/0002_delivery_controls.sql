-- Delivery controls per endpoint: standby and echo opt-ins, concurrency, rate, ordering per conversation, and the health that
-- drives the circuit breaker.

ALTER TABLE endpoints ADD COLUMN include_standby INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN include_echoes INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN max_concurrency INTEGER NOT NULL DEFAULT 16;
ALTER TABLE endpoints ADD COLUMN rate_limit INTEGER;                 -- events per second; NULL: no limit
ALTER TABLE endpoints ADD COLUMN ordered INTEGER NOT NULL DEFAULT 0; -- one event per conversation at a time
ALTER TABLE endpoints ADD COLUMN consecutive_failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN failing_since INTEGER;              -- first failure since the last success
ALTER TABLE endpoints ADD COLUMN probe_at INTEGER;                   -- breaker open: nothing is sent before this

-- The conversation an event belongs to, for endpoints that deliver in order per conversation.
ALTER TABLE deliveries ADD COLUMN ordering_key TEXT;
CREATE INDEX deliveries_ordering_idx ON deliveries (endpoint_id, ordering_key) WHERE status = 'pending';

-- What the endpoint receives: the normalized event (`standard`) or Meta's own body (`meta`), with
-- the endpoint's own extra headers (a JSON object).
ALTER TABLE endpoints ADD COLUMN format TEXT NOT NULL DEFAULT 'standard';
ALTER TABLE endpoints ADD COLUMN headers TEXT;

-- Secret rotation: the previous secret keeps signing until it expires.
ALTER TABLE endpoints ADD COLUMN previous_secret_sealed TEXT;
ALTER TABLE endpoints ADD COLUMN previous_secret_expires_at INTEGER;
