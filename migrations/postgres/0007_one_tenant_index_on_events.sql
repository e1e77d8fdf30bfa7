-- Event ids are minted from the arrival time (`EventId::at`), so retention walks each tenant's
-- events through (tenant_id, id), the index listing uses: the index on (tenant_id, received_at)
-- goes. Each index led by the tenant costs a commit a leaf page per tenant in it; with many tenants
-- that is close to a page per event.
DROP INDEX events_tenant_received_idx;
