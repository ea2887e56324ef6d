-- Current state of every product (the write model). `version` is the aggregate version and
-- guards every update (optimistic concurrency).
CREATE TABLE products (
    id           uuid PRIMARY KEY,
    sku          text NOT NULL UNIQUE,
    title        text NOT NULL,
    description  text NOT NULL DEFAULT '',
    category     text NOT NULL DEFAULT '',
    brand        text NOT NULL DEFAULT '',
    attributes   jsonb NOT NULL DEFAULT '{}'::jsonb,
    price_minor  bigint CHECK (price_minor IS NULL OR price_minor > 0),
    currency     text CHECK (currency IS NULL OR currency ~ '^[A-Z]{3}$'),
    stock        bigint NOT NULL CHECK (stock >= 0),
    status       text NOT NULL CHECK (status IN ('draft', 'published', 'archived')),
    version      bigint NOT NULL CHECK (version >= 1),
    created_at   timestamptz NOT NULL,
    updated_at   timestamptz NOT NULL,
    CHECK ((price_minor IS NULL) = (currency IS NULL))
);
CREATE INDEX products_status_id ON products (status, id);
CREATE INDEX products_category_id ON products (category, id);
