-- A Page is its tenant's when proven: by an access token the Graph API confirmed is for it
-- (`access_token`), or by the operator (`operator`). A claim without proof (`none`) receives no
-- events and gives way to a proven one. Pages onboarded before proof was asked for stay routed
-- (`legacy`), and are listed to the operator as unproven.
ALTER TABLE pages ADD COLUMN proof TEXT NOT NULL DEFAULT 'legacy';

-- Every time a Page changes tenants: a proven claim taking it from an unproven one, or the
-- operator moving it.
CREATE TABLE page_moves (
    id          INTEGER PRIMARY KEY,
    page_id     TEXT NOT NULL,
    from_tenant TEXT,
    to_tenant   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    moved_at    INTEGER NOT NULL
);
CREATE INDEX page_moves_page_id_idx ON page_moves (page_id, id);
