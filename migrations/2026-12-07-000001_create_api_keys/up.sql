-- Named, scoped API keys for machines (`aliexpress keys create|list|revoke`). Only the SHA-256
-- of a key's secret is stored: the secret is shown once, at creation. A key has one role and,
-- with the seller role, the seller it acts for.
CREATE TABLE api_keys (
    id            bigserial PRIMARY KEY,
    name          text NOT NULL,
    role          text NOT NULL CHECK (role IN ('seller', 'catalog-admin', 'operator', 'reader')),
    seller        text,
    secret_sha256 bytea NOT NULL UNIQUE,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    text NOT NULL,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    CHECK (role <> 'seller' OR seller IS NOT NULL)
);
-- One live key per name (a revoked key's name may be given again).
CREATE UNIQUE INDEX api_keys_live_name ON api_keys (name) WHERE revoked_at IS NULL;

-- Who moved offsets and who redrove dead letters (a key's name or a token's subject, or the
-- CLI's user@host); older rows have none.
ALTER TABLE replay_audit ADD COLUMN actor text;
ALTER TABLE dlq_redrives ADD COLUMN actor text;
