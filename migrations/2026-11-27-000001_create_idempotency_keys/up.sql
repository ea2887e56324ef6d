-- One row per completed HTTP write that carried an Idempotency-Key, written in the same
-- transaction as the write, so a retry after a commit the client never heard of is answered
-- from here and never applied twice. The scope is (principal, route, key): principal is a
-- SHA-256 of the caller's bearer token (never the token), route is "METHOD /path".
CREATE TABLE idempotency_keys (
    principal           TEXT        NOT NULL,
    route               TEXT        NOT NULL,
    idempotency_key     TEXT        NOT NULL,
    request_fingerprint TEXT        NOT NULL,
    response_status     SMALLINT    NOT NULL,
    response_headers    JSONB       NOT NULL DEFAULT '{}'::jsonb,
    response_body       JSONB       NOT NULL,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at          TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (principal, route, idempotency_key)
);

-- The pruner deletes by expiry.
CREATE INDEX idempotency_keys_expires_at_idx ON idempotency_keys (expires_at);
