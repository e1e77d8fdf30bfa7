-- Answers to POSTs made with an `Idempotency-Key`, per caller, so a retried request gets the first
-- answer instead of doing the work twice. `status` is NULL while the first request runs. The
-- answer is sealed (it can hold a secret shown once, such as a new API key). Kept for 24 hours.
CREATE TABLE idempotency_keys (
    scope           TEXT NOT NULL,
    key             TEXT NOT NULL,
    request_hash    TEXT NOT NULL,
    status          INTEGER,
    response_sealed TEXT,
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_at_idx ON idempotency_keys (created_at);
