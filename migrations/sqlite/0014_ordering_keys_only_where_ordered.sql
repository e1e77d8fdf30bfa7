-- A delivery carries its conversation as ordering key only when its endpoint asked for order
-- (`ordered`), and only those deliveries are in the ordering index. Before, every pending delivery
-- had an entry, keyed by conversation: an insert at ingest and a delete at delivery, each on a
-- page of its own, for endpoints that never consult it.
DROP INDEX deliveries_ordering_idx;
CREATE INDEX deliveries_ordering_idx ON deliveries (endpoint_id, ordering_key)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
