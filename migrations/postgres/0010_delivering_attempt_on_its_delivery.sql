-- The attempt that delivers a delivery is its last, and most deliveries have no other: it is kept
-- on the delivery's own row, which its outcome rewrites anyway (`attempts` is its number,
-- `last_status` and `last_error` its status and error), instead of a row of its own in
-- `delivery_attempts` with its index entry and reference check. `delivery_attempts` keeps every
-- other attempt: the failed ones, and those whose answer came after their lease had passed on.
-- A replay moves the delivering attempt into `delivery_attempts` before the delivery goes out
-- again. Deliveries delivered before keep their attempt in `delivery_attempts` (NULLs here).
ALTER TABLE deliveries
    ADD COLUMN delivered_started_at  BIGINT,
    ADD COLUMN delivered_duration_ms BIGINT,
    ADD COLUMN delivered_outcome     TEXT,
    ADD COLUMN delivered_excerpt     TEXT;
