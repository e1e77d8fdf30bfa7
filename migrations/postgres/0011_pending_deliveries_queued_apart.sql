-- Pending deliveries wait in a narrow queue of their own, `delivery_queue`: one row per delivery
-- still to be sent, which leases take (`lease_seq`, `next_attempt_at` the lease's end) and
-- settling deletes, or moves to its retry's time. Before, the lease and the outcome each wrote a
-- new version of the wide `deliveries` row with an entry in every one of its indexes, the due and
-- ordering indexes among them; now the lease writes the narrow row (two index entries), and the
-- outcome changes no indexed column of `deliveries`, so it can stay on its page (HOT, below).
--
-- `deliveries.status`, `next_attempt_at` and `attempts` still tell a delivery's state; the queue
-- only drives leasing. A delivery inserted pending is queued by `deliveries_enqueue`, whatever
-- statement inserts it, and a deleted one leaves the queue by `deliveries_dequeue` (deleted with
-- its event, endpoint or tenant): each is one statement per statement, not per row.
CREATE TABLE delivery_queue (
    delivery_id     TEXT COLLATE "C" PRIMARY KEY,
    endpoint_id     TEXT COLLATE "C" NOT NULL,
    -- The delivery's insertion order: due deliveries are leased in it.
    seq             BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    lease_seq       BIGINT NOT NULL DEFAULT 0,
    ordering_key    TEXT
);
CREATE INDEX delivery_queue_due_idx ON delivery_queue (endpoint_id, next_attempt_at, seq);
CREATE INDEX delivery_queue_ordering_idx ON delivery_queue (endpoint_id, ordering_key, seq)
    WHERE ordering_key IS NOT NULL;

INSERT INTO delivery_queue (delivery_id, endpoint_id, seq, next_attempt_at, lease_seq, ordering_key)
    SELECT id, endpoint_id, seq, next_attempt_at, lease_seq, ordering_key FROM deliveries WHERE status = 'pending';

CREATE FUNCTION deliveries_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO delivery_queue (delivery_id, endpoint_id, seq, next_attempt_at, ordering_key)
        SELECT id, endpoint_id, seq, next_attempt_at, ordering_key FROM added WHERE status = 'pending'
        ORDER BY seq;
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_enqueue AFTER INSERT ON deliveries REFERENCING NEW TABLE AS added
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_enqueue();

CREATE FUNCTION deliveries_dequeue() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM delivery_queue q USING removed WHERE q.delivery_id = removed.id;
    RETURN NULL;
END $$;
CREATE TRIGGER deliveries_dequeue AFTER DELETE ON deliveries REFERENCING OLD TABLE AS removed
    FOR EACH STATEMENT EXECUTE FUNCTION deliveries_dequeue();

DROP INDEX deliveries_endpoint_due_idx;
DROP INDEX deliveries_ordering_idx;
-- Fences moved to the queue.
ALTER TABLE deliveries DROP COLUMN lease_seq;
-- Room on each page for every row's new version, so that an outcome stays on its page (HOT):
-- a page's deliveries are leased and settled together, in one transaction, which cannot prune
-- their old versions to make room. It costs a delivery about 250 more bytes of its table's pages
-- (the event and its POST's body it belongs to take several KiB) and saved a fifth of the server's
-- CPU per delivery (`docs/benchmarks.md`).
ALTER TABLE deliveries SET (fillfactor = 45);
