-- Attempts are read by their delivery, never by an id of their own: the TEXT primary key, one more
-- index written with every recorded attempt, goes.
CREATE TABLE delivery_attempts_new (
    delivery_id      TEXT NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt          INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
    status_code      INTEGER,
    outcome          TEXT NOT NULL,
    error            TEXT,
    response_excerpt TEXT
);
INSERT INTO delivery_attempts_new (delivery_id, attempt, started_at, duration_ms, status_code, outcome, error,
                                   response_excerpt)
    SELECT delivery_id, attempt, started_at, duration_ms, status_code, outcome, error, response_excerpt
    FROM delivery_attempts;
DROP TABLE delivery_attempts;
ALTER TABLE delivery_attempts_new RENAME TO delivery_attempts;
CREATE INDEX delivery_attempts_delivery_id_idx ON delivery_attempts (delivery_id, attempt);
