-- Leasing finds due work through deliveries_endpoint_due_idx; the global due-time index was kept
-- up to date on every lease and every recorded attempt and read by nothing.
DROP INDEX deliveries_due_idx;
