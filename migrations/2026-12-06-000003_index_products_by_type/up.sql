-- The products of a type, for a type change's check. CONCURRENTLY: writes to products go on
-- while it builds (this migration runs outside a transaction, metadata.toml, and alone: one statement).
CREATE INDEX CONCURRENTLY IF NOT EXISTS products_product_type ON products (product_type, id)
    WHERE product_type IS NOT NULL;
