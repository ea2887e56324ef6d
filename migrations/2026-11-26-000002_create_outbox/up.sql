-- Transactional outbox: rows are written in the same transaction as the state they describe
-- and published to Kafka by `aliexpress process-outbox`. Published rows are kept for audit and
-- rebuilds until pruned.
CREATE TABLE outbox (
    id                bigserial PRIMARY KEY,
    event_id          uuid NOT NULL UNIQUE,
    aggregate_type    text NOT NULL,
    aggregate_id      uuid NOT NULL,
    aggregate_version bigint NOT NULL,
    topic             text NOT NULL,
    key               text NOT NULL,
    event_type        text NOT NULL,
    schema_version    integer NOT NULL,
    payload           jsonb NOT NULL,
    headers           jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at        timestamptz NOT NULL DEFAULT now(),
    published_at      timestamptz,
    attempts          integer NOT NULL DEFAULT 0,
    last_error        text,
    next_attempt_at   timestamptz,
    parked_at         timestamptz
);
-- The relay claims pending rows in id order; this partial index holds only those.
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL AND parked_at IS NULL;
-- Holding back later rows of a product whose earlier row is waiting for a retry: only rows in
-- backoff are indexed, so the anti-join stays tiny however large the backlog is.
CREATE INDEX outbox_backoff ON outbox (aggregate_id, id)
    WHERE published_at IS NULL AND parked_at IS NULL AND next_attempt_at IS NOT NULL;
CREATE INDEX outbox_published_at ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX outbox_parked ON outbox (id) WHERE parked_at IS NOT NULL AND published_at IS NULL;
