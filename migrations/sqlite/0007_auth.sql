-- API keys get a role (admin or read_only) and the time they were last used.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
ALTER TABLE api_keys ADD COLUMN last_used_at INTEGER;
CREATE INDEX api_keys_tenant_id_idx ON api_keys (tenant_id, id);

-- The keys that sign the dashboard's short-lived tokens. The newest unretired key signs; a retired
-- key still verifies the tokens it signed until they expire.
CREATE TABLE signing_keys (
    kid           TEXT PRIMARY KEY NOT NULL,
    secret_sealed TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    retired_at    INTEGER
);
