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
    Ok(())
}
