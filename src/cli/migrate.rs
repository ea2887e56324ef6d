//! `aliexpress migrate`: applies the embedded migrations.
//!
//! Usage: aliexpress migrate

use anyhow::Context;

use crate::config::{redact, InfraConfig};
use crate::store::pool;

/// Applies pending migrations and prints what ran.
pub async fn run(infra: &InfraConfig) -> anyhow::Result<()> {
    let applied = pool::run_migrations(&infra.database_url)
        .await
        .map_err(|e| crate::config::ConfigError::new("DATABASE_URL", format!("{}: {e}", redact(&infra.database_url))))
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
