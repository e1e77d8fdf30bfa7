-- Retention: how long a tenant's events, deliveries and attempts are kept once final (NULL: the
-- operator's default), and the index the pruning pass walks.
ALTER TABLE tenants ADD COLUMN retention_days INTEGER;
CREATE INDEX events_received_at_idx ON events (received_at);
CREATE INDEX inbound_received_at_idx ON inbound (received_at);
