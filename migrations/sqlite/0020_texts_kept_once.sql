-- The JSON string that an event's `data.text` was decoded from (a message's text: most of a chat
-- event's bytes) is kept once, in its POST's body, as the item's raw bytes are (0017): the payload
-- stores `null` at byte `text_at`, and readers put back the string held by `text_len` bytes of the
-- body from `text_start`. Events ingested before keep their texts in their payloads (NULLs).
ALTER TABLE events ADD COLUMN text_at INTEGER;
ALTER TABLE events ADD COLUMN text_start INTEGER;
ALTER TABLE events ADD COLUMN text_len INTEGER;
