-- Page subscriptions: fields a Page wants instead of its platform's defaults, and what the last
-- check against the Graph API found. Tenants choose whether a lost subscription is repaired.
ALTER TABLE pages ADD COLUMN subscribed_fields TEXT;            -- JSON array; NULL: the defaults
ALTER TABLE pages ADD COLUMN subscription_status TEXT;          -- ok | repaired | lost | error
ALTER TABLE pages ADD COLUMN subscription_detail TEXT;
ALTER TABLE pages ADD COLUMN subscription_checked_at INTEGER;
ALTER TABLE tenants ADD COLUMN auto_resubscribe INTEGER NOT NULL DEFAULT 1;
