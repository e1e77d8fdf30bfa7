-- Retention is per tenant: pruning walks each tenant's events from the oldest through this index,
-- instead of scanning every event (which held the writer for a second per million events).
CREATE INDEX events_tenant_received_idx ON events (tenant_id, received_at);
