-- Webhook POSTs the ingress refused (a bad signature, a body that is not a webhook, an unknown
-- app or Pages), kept as metadata only: never the body, which is unverified. The ingress keeps at
-- most a bounded number per app and hour; retention deletes them with the raw POSTs. Ids are
-- minted from the refusal's time (`RefusalId::at`), so retention and pages go by id.
CREATE TABLE refusals (
    id          TEXT COLLATE "C" PRIMARY KEY,
    received_at BIGINT NOT NULL,
    route       TEXT NOT NULL,
    app_id      TEXT COLLATE "C",
    size        BIGINT NOT NULL,
    reason      TEXT NOT NULL,
    detail      TEXT
);
CREATE INDEX refusals_app_id_idx ON refusals (app_id, id);
