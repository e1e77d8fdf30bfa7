-- POST ids are minted from the arrival time (`InboundId::at`; those minted before carry the time
-- they were made, the same moment), so retention finds old POSTs by id: the index on received_at
-- goes. Each commit rewrote its last leaf, and the leaves above it when it filled: about one page
-- in twenty-five of what a commit wrote.
DROP INDEX inbound_received_at_idx;
