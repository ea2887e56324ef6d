DROP TABLE product_history;
DROP TRIGGER products_v1_write_sync ON products;
DROP FUNCTION products_v1_write_sync();
DROP FUNCTION products_legacy_variant(products);
DROP TABLE product_skus;
ALTER TABLE products
    DROP COLUMN owner,
    DROP COLUMN product_type,
    DROP COLUMN category_path,
    DROP COLUMN variants,
    DROP COLUMN next_variant_id;
