-- Apps get a name, a previous secret that still verifies during a rotation's overlap, and a hash
-- of the verify token so that tokens are unique across the system (the token itself stays sealed;
-- the hash of rows written before this migration is filled in when the store opens).
ALTER TABLE meta_apps ADD COLUMN name TEXT;
ALTER TABLE meta_apps ADD COLUMN previous_app_secret_sealed TEXT;
ALTER TABLE meta_apps ADD COLUMN previous_secret_expires_at INTEGER;
ALTER TABLE meta_apps ADD COLUMN verify_token_hash TEXT;
CREATE UNIQUE INDEX meta_apps_verify_token_hash_key ON meta_apps (verify_token_hash);
