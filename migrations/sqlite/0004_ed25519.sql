-- An endpoint's optional ed25519 key (sealed), for Standard Webhooks `v1a` signatures.
ALTER TABLE endpoints ADD COLUMN ed25519_sealed TEXT;
