//! `aliexpress migrate`: applies the embedded migrations.
//!
//! Usage: aliexpress migrate

use anyhow::Context;

use crate::config::{ConfigError, InfraConfig};
use crate::store::pool;

/// Applies pending migrations and prints what ran.
pub async fn run(infra: &InfraConfig) -> anyhow::Result<()> {
    let url = &infra.database.url;
    let applied = pool::run_migrations(url.expose())
        .await
        .map_err(|e| ConfigError::new("DATABASE_URL", format!("{url}: {e}")))
        .context("migrate")?;
    if applied.is_empty() {
        println!("database is up to date");
    } else {
        for v in &applied {
            println!("applied {v}");
        }
        println!("{} migration(s) applied", applied.len());
    }
    backfill(url.expose()).await
}

/// The backfills of the expand migrations (idempotent: a second run finds nothing to do).
async fn backfill(url: &str) -> anyhow::Result<()> {
    let mut conn = pool::connect(url, std::time::Duration::from_secs(30))
        .await
        .context("migrate: connect for the backfill")?;
    let filled = crate::store::backfill::variants(&mut conn, 1000, |n| {
        println!("backfill: {n} product(s) given their variants")
    })
    .await
    .context("migrate: backfill variants")?;
    if filled > 0 {
        println!("backfill done: {filled} product(s) given their variants");
    }
    Ok(())
}
