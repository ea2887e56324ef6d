//! `aliexpress outbox`: see and retry outbox rows, parked ones in particular.
//!
//! Usage: aliexpress outbox list [--parked] [--limit N] | aliexpress outbox retry (ID... | --all-parked)

use crate::config::InfraConfig;
use crate::ops::outbox::Selection;
use crate::store::{outbox_repo, pool};

/// Flags of `outbox`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Outbox actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// List pending rows (or parked ones with --parked).
    List {
        /// Show parked rows instead of pending ones.
        #[arg(long)]
        parked: bool,
        /// Most rows to show.
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Put parked rows back in line for publishing.
    Retry {
        /// Outbox ids to retry.
        ids: Vec<i64>,
        /// Retry every parked row.
        #[arg(long, conflicts_with = "ids")]
        all_parked: bool,
    },
}

/// Runs an outbox action.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    let p = super::connect::database(infra).await?;
    let mut conn = pool::get(&p).await?;
    match a.action {
        Action::List { parked, limit } => {
            let rows = outbox_repo::list(&mut conn, parked, limit).await?;
            println!(
                "{:<10} {:<36} {:>7} {:<22} {:>8} {:<25} LAST-ERROR",
                "ID", "PRODUCT", "VERSION", "EVENT-TYPE", "ATTEMPTS", "CREATED-AT"
            );
            for r in &rows {
                println!(
                    "{:<10} {:<36} {:>7} {:<22} {:>8} {:<25} {}",
                    r.id,
                    r.aggregate_id,
                    r.aggregate_version,
                    r.event_type,
                    r.attempts,
                    r.created_at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                    r.last_error.as_deref().unwrap_or("-")
                );
            }
            println!("{} {} row(s)", rows.len(), if parked { "parked" } else { "pending" });
        }
        Action::Retry { ids, all_parked } => {
            if ids.is_empty() && !all_parked {
                return Err(super::usage("outbox retry", "give outbox ids or --all-parked"));
            }
            let selection = if all_parked {
                Selection::AllParked
            } else {
                Selection::Ids(ids)
            };
            let done = crate::ops::outbox::retry_parked(&mut conn, &selection, true).await?;
            println!("{} parked row(s) queued for publishing again", done.count);
        }
    }
    Ok(())
}
