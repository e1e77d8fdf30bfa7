-- Leasing walks the due deliveries of one endpoint at a time, so that an endpoint with a deep
-- backlog that is paused or busy costs nothing to skip.
CREATE INDEX deliveries_endpoint_due_idx ON deliveries (endpoint_id, next_attempt_at) WHERE status = 'pending';
