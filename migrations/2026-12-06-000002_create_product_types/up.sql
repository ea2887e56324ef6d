-- Product types: the attributes a kind of product has (src/domain/product_type.rs). Products
-- name their type by key (`products.product_type`); a product write reads its type FOR SHARE,
-- a type change locks it FOR UPDATE and checks every product of the type first.
CREATE TABLE product_types (
    key         text PRIMARY KEY,
    name        text NOT NULL,
    attributes  jsonb NOT NULL,
    version     bigint NOT NULL CHECK (version >= 1),
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
