//! After a category is created, renamed or moved, every product under it gets its new path
//! (`PlaceInCategory` → `ProductCategorized` through the product's own transaction, outbox and
//! `product.events`), so the search documents follow through the pipeline, never by a direct
//! write to the index.
//!
//! A batch is one transaction: the oldest unfinished fan-out is claimed `FOR UPDATE SKIP
//! LOCKED` (so several `serve` processes share the work), the next products under the
//! category are locked, each one's path is resolved from the tree *inside* that lock (a
//! product written meanwhile, or a second rename, cannot leave a stale path behind), products
//! whose path is already right are skipped, and the fan-out's cursor moves with the batch. A
//! crash loses at most the batch in flight, which runs again.

use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use uuid::Uuid;

use crate::app::execute::{self, ExecuteOptions, ExecuteOutcome};
use crate::domain::product::{Product, ProductCommand};
use crate::store::product_repo;
use crate::store::{category_repo, pool, PgPool, StoreError};
use crate::telemetry::metrics;

/// Products per batch (one transaction).
pub const BATCH: i64 = 200;

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Batch {
    /// A fan-out was there to work on.
    pub claimed: bool,
    /// Products given a new path.
    pub placed: i64,
    /// Products already on the right path.
    pub unchanged: i64,
}

/// Where a product belongs now: its category's current slug and path (by the category's id
/// when it has a path, else by its slug). `None`: nowhere in the tree.
async fn belongs(
    conn: &mut AsyncPgConnection,
    p: &Product,
) -> Result<Option<(String, Vec<crate::domain::product::CategoryNode>)>, StoreError> {
    let path = match p.category_path.last() {
        Some(leaf) => category_repo::path_of(conn, leaf.id).await?,
        None => category_repo::path_of_slug(conn, &p.category).await?,
    };
    Ok(path.last().map(|leaf| (leaf.slug.clone(), path.clone())))
}

/// One batch of the oldest unfinished fan-out.
pub async fn process_once(conn: &mut AsyncPgConnection, opts: &ExecuteOptions) -> Result<Batch, StoreError> {
    let opts = opts.clone();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let Some(f) = category_repo::claim_fanout(conn).await? else {
            return Ok(Batch::default());
        };
        let mut batch = Batch {
            claimed: true,
            ..Batch::default()
        };
        let Some(c) = category_repo::find(conn, f.category_id).await? else {
            category_repo::advance_fanout(conn, f.id, f.cursor, 0, true).await?;
            return Ok(batch);
        };
        let ids = category_repo::products_under(conn, &c, f.cursor, BATCH).await?;
        for id in &ids {
            batch.placed += i64::from(place(conn, *id, &opts).await?);
        }
        batch.unchanged = ids.len() as i64 - batch.placed;
        let done = (ids.len() as i64) < BATCH;
        category_repo::advance_fanout(conn, f.id, ids.last().copied().or(f.cursor), batch.placed, done).await?;
        if done {
            tracing::info!(category.id = %c.id, category.slug = %c.slug, products = f.products_done + batch.placed,
                "category fan-out finished");
        }
        Ok(batch)
    })
    .await
}

/// Locks product `id`, and gives it its current path when that differs; whether it did.
async fn place(conn: &mut AsyncPgConnection, id: Uuid, opts: &ExecuteOptions) -> Result<bool, StoreError> {
    let Some(p) = product_repo::lock(conn, id).await? else {
        return Ok(false);
    };
    let Some((category, path)) = belongs(conn, &p).await? else {
        return Ok(false);
    };
    if p.category == category && p.category_path == path {
        return Ok(false);
    }
    let command = ProductCommand::PlaceInCategory { category, path };
    let placed = matches!(
        execute::run_command(conn, id, &command, opts).await?,
        ExecuteOutcome::Applied(_)
    );
    if placed {
        metrics::CATEGORY_FANOUT_PRODUCTS.inc();
    }
    Ok(placed)
}

/// Runs batches until no fan-out is left; the products placed.
pub async fn run_until_idle(pool: &PgPool, opts: &ExecuteOptions) -> Result<i64, StoreError> {
    let mut placed = 0;
    loop {
        let mut conn = pool::get(pool).await?;
        let b = process_once(&mut conn, opts).await?;
        placed += b.placed;
        if !b.claimed {
            return Ok(placed);
        }
    }
}

/// Runs fan-outs as they come, polling every `every` when idle (the `serve` role runs it).
pub async fn run(pool: PgPool, opts: ExecuteOptions, every: Duration) {
    loop {
        match run_until_idle(&pool, &opts).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(products = n, "category fan-out placed products"),
            Err(e) => tracing::warn!(error = %e, "category fan-out failed; next try in {}s", every.as_secs()),
        }
        tokio::time::sleep(every).await;
    }
}
