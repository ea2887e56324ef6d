-- Catalog v2, expand step (docs/RUNBOOK.md, "Upgrading to catalog v2"): new columns and the
-- SKU table, nothing that rewrites `products` or holds a lock the API waits on. Adding a
-- column with a constant default or none changes only the catalog (PostgreSQL 11+).
--
-- The legacy columns (sku, price_minor, currency, stock) keep holding the first variant, so a
-- version-1 binary still running during the rollout reads coherent products; the trigger
-- below keeps `variants` right when such a binary writes. `aliexpress migrate` backfills
-- `variants` and `product_skus` in batches after this migration; a later contract migration
-- drops the legacy columns once no version-1 binary runs.
ALTER TABLE products
    ADD COLUMN owner text NOT NULL DEFAULT 'default',
    ADD COLUMN product_type text,
    ADD COLUMN category_path jsonb NOT NULL DEFAULT '[]'::jsonb,
    ADD COLUMN variants jsonb,
    ADD COLUMN next_variant_id integer;

-- Every variant's SKU, unique in the catalog (a unique index cannot reach into jsonb arrays).
CREATE TABLE product_skus (
    sku         text PRIMARY KEY,
    product_id  uuid NOT NULL,
    variant_id  integer NOT NULL
);
CREATE INDEX product_skus_product ON product_skus (product_id);

-- The single variant of a row written by a version-1 binary.
CREATE FUNCTION products_legacy_variant(p products) RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'id', 1, 'sku', p.sku, 'options', '{}'::jsonb, 'stock', p.stock,
        'prices', CASE WHEN p.price_minor IS NULL THEN '[]'::jsonb
                       ELSE jsonb_build_array(jsonb_build_object('amount_minor', p.price_minor,
                                                                 'currency', p.currency)) END)
$$;

-- Writes of a version-1 binary (it knows nothing of `variants`): an insert gets its single
-- variant and SKU row; an update of the legacy columns is carried into the first variant.
CREATE FUNCTION products_v1_write_sync() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' AND NEW.variants IS NULL THEN
        NEW.variants := jsonb_build_array(products_legacy_variant(NEW));
        NEW.next_variant_id := 2;
        INSERT INTO product_skus (sku, product_id, variant_id) VALUES (NEW.sku, NEW.id, 1);
    ELSIF TG_OP = 'UPDATE' AND OLD.variants IS NOT NULL AND NEW.variants IS NOT DISTINCT FROM OLD.variants
          AND (NEW.price_minor, NEW.currency, NEW.stock) IS DISTINCT FROM (OLD.price_minor, OLD.currency, OLD.stock) THEN
        NEW.variants := jsonb_set(NEW.variants, '{0}',
            (NEW.variants -> 0) || (products_legacy_variant(NEW) - 'id' - 'sku' - 'options'));
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER products_v1_write_sync BEFORE INSERT OR UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION products_v1_write_sync();

-- Every version of every product: the change history (`GET /api/products/{id}/history`),
-- written in the transaction that writes the version.
CREATE TABLE product_history (
    product_id      uuid NOT NULL,
    version         bigint NOT NULL,
    event_id        uuid NOT NULL,
    event_type      text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    actor           text,
    causation_id    uuid,
    correlation_id  uuid,
    status          text NOT NULL,
    changes         jsonb NOT NULL,
    PRIMARY KEY (product_id, version)
);
