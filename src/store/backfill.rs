//! Backfills after an expand migration, in small batches so no statement holds row locks
//! the API waits on for long (`aliexpress migrate` runs them after the migrations).
//!
//! Catalog v2: rows written before it have no `variants`; each gets its single variant from
//! the legacy columns and its SKU row in `product_skus`. Readers meanwhile derive the same
//! variant from the legacy columns, so nothing waits for the backfill to finish.

use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::StoreError;

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// One batch: up to `batch` rows without variants get them (rows locked by a writer are
/// skipped and taken by a later batch). Returns how many rows it filled.
pub async fn variants_batch(conn: &mut AsyncPgConnection, batch: i64) -> Result<i64, StoreError> {
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let filled: Vec<Count> = diesel::sql_query(
            "WITH picked AS (SELECT id FROM products WHERE variants IS NULL LIMIT $1 FOR UPDATE SKIP LOCKED), \
                  skus AS (INSERT INTO product_skus (sku, product_id, variant_id) \
                           SELECT p.sku, p.id, 1 FROM products p JOIN picked USING (id) ON CONFLICT (sku) DO NOTHING), \
                  done AS (UPDATE products p SET variants = jsonb_build_array(products_legacy_variant(p)), \
                           next_variant_id = 2 FROM picked WHERE p.id = picked.id RETURNING 1) \
             SELECT count(*) AS n FROM done",
        )
        .bind::<BigInt, _>(batch)
        .load(conn)
        .await?;
        Ok(<[Count]>::first(&filled).map_or(0, |c| c.n))
    })
    .await
}

/// Runs [`variants_batch`] until no row is left; `progress` hears the running total.
pub async fn variants(
    conn: &mut AsyncPgConnection,
    batch: i64,
    mut progress: impl FnMut(i64),
) -> Result<i64, StoreError> {
    let mut total = 0;
    loop {
        let n = variants_batch(conn, batch).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n;
        progress(total);
    }
}
