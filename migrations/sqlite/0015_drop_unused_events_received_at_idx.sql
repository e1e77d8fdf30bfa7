-- No query reads events by arrival time alone any more: retention walks each tenant's events
-- through (tenant_id, received_at), dedup release through events_dedup_expiry_idx. The index only
-- cost an entry per ingested event.
DROP INDEX events_received_at_idx;
