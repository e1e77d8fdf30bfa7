-- A delivery carries its conversation as ordering key only when its endpoint asked for order
-- (`ordered`), and only those deliveries are in the ordering index: endpoints that never consult
-- it no longer pay an index entry per delivery.
DROP INDEX deliveries_ordering_idx;
CREATE INDEX deliveries_ordering_idx ON deliveries (endpoint_id, ordering_key, seq)
    WHERE status = 'pending' AND ordering_key IS NOT NULL;
