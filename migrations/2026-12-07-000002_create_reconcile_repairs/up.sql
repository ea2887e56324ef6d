-- Products `aliexpress reconcile --repair` re-sent to the read side as a snapshot event: which,
-- at which version, for what drift, by whom.
CREATE TABLE reconcile_repairs (
    id          bigserial PRIMARY KEY,
    repaired_at timestamptz NOT NULL DEFAULT now(),
    product_id  uuid NOT NULL,
    version     bigint NOT NULL,
    event_id    uuid NOT NULL,
    drift       text NOT NULL,
    actor       text NOT NULL
);
CREATE INDEX reconcile_repairs_product ON reconcile_repairs (product_id);
