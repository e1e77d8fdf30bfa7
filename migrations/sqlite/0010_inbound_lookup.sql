-- The events each raw POST produced, for the inbound log (a tenant sees the POSTs that brought it
-- events). Inbound ids grow with time, so the index grows at one end.
CREATE INDEX events_inbound_id_idx ON events (inbound_id, tenant_id);
