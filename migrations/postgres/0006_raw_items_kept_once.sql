-- An item's raw bytes are kept once, in its POST's body, instead of also inside its event's
-- payload (which held them twice over with the decoded `data`): the payload stores `null` at byte
-- `raw_at`, and readers put back `raw_len` bytes of the body from `raw_start`. Events ingested
-- before keep their payloads whole (NULLs).
ALTER TABLE events ADD COLUMN raw_at BIGINT, ADD COLUMN raw_start BIGINT, ADD COLUMN raw_len BIGINT;
