-- The category tree (src/domain/category.rs). Slugs are unique in the catalog: products name
-- their category by slug and carry its path (root first) in their state.
CREATE TABLE categories (
    id          uuid PRIMARY KEY,
    parent_id   uuid REFERENCES categories (id),
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL,
    position    integer NOT NULL DEFAULT 0,
    version     bigint NOT NULL CHECK (version >= 1),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX categories_parent ON categories (parent_id, position);

-- A category created, renamed or moved: every product under it gets its new path through
-- its own command and event (worker/category_fanout.rs). Written in the transaction of the
-- category change; claimed FOR UPDATE SKIP LOCKED by whichever `serve` gets it first.
CREATE TABLE category_fanouts (
    id              bigserial PRIMARY KEY,
    category_id     uuid NOT NULL REFERENCES categories (id),
    requested_at    timestamptz NOT NULL DEFAULT now(),
    cursor_id       uuid,
    products_done   bigint NOT NULL DEFAULT 0,
    done_at         timestamptz
);
CREATE INDEX category_fanouts_pending ON category_fanouts (id) WHERE done_at IS NULL;
