-- Products by the categories on their path (a category change's fan-out finds every product
-- under it). CONCURRENTLY: writes go on while it builds (outside a transaction, metadata.toml).
CREATE INDEX CONCURRENTLY IF NOT EXISTS products_category_path ON products USING gin (category_path jsonb_path_ops);
