//! `aliexpress reconcile`: compare OpenSearch and Redis with Postgres, and repair the drift.
//!
//! Usage: aliexpress reconcile [--sample N | --all] [--repair [--yes]] [--json]
//!
//! A dry run by default: it reports missing, stale, newer, mismatched and extra entries per
//! store. `--repair` sends each drifted product again as a snapshot event through the outbox
//! (audited in `reconcile_repairs`); more than `--max-repairs` (100) needs `--yes`. Exit code
//! 0 when nothing drifted, 1 when something did (repaired or not), 2 for a usage error.

use std::time::Duration;

use crate::config::InfraConfig;
use crate::ops::reconcile::{self, ReconcileDeps, Scope};
use crate::store::audit_repo;

/// Flags of `reconcile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Compare a random sample of this many products.
    #[arg(long, default_value_t = 1000, conflicts_with = "all")]
    pub sample: i64,
    /// Compare every product, and look for documents of products that do not exist.
    #[arg(long)]
    pub all: bool,
    /// Send each drifted product again as a snapshot event.
    #[arg(long)]
    pub repair: bool,
    /// Repairs allowed without `--yes`.
    #[arg(long, default_value_t = 100)]
    pub max_repairs: usize,
    /// Repair more than `--max-repairs`.
    #[arg(long)]
    pub yes: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs the check (and the repair); exits 1 when something drifted.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    if !a.all && a.sample < 1 {
        return Err(super::usage("--sample", "must be at least 1"));
    }
    let names = infra.names();
    let (pool, cache, search) = super::connect::ops_clients(infra, Duration::from_secs(10))?;
    let deps = ReconcileDeps {
        pool,
        cache,
        search,
        names,
    };
    let scope = if a.all { Scope::All } else { Scope::Sample(a.sample) };
    let mut report = reconcile::check(&deps, scope, &mut |n| eprint!("\rcompared {n} products")).await?;
    eprintln!();
    let wanted = report.to_repair().len();
    if a.repair && wanted > a.max_repairs && !a.yes {
        return Err(super::usage(
            "--yes",
            format!(
                "{wanted} products to repair, over --max-repairs {}: add --yes",
                a.max_repairs
            ),
        ));
    }
    if a.repair {
        reconcile::repair(&deps, &mut report, &audit_repo::cli_actor()).await?;
    }
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "compared {} products; {} not in Redis (not drift: the cache expires entries)",
            report.compared, report.absent_from_cache
        );
        for (k, n) in &report.counts {
            println!("  {k:<24} {n}");
        }
        for d in report.drift.iter().take(20) {
            let v = |x: Option<i64>| x.map_or("-".into(), |v| v.to_string());
            println!(
                "  {} {:<10} {:<10} postgres {} store {}",
                d.product_id,
                d.store,
                d.kind,
                v(d.postgres_version),
                v(d.store_version)
            );
        }
        match (report.drift.is_empty(), a.repair) {
            (true, _) => println!("no drift"),
            (false, true) => println!(
                "repaired {} products (snapshot events through the outbox)",
                report.repaired.len()
            ),
            (false, false) => println!("{wanted} products to repair: run again with --repair"),
        }
    }
    if !report.drift.is_empty() {
        std::process::exit(1);
    }
    Ok(())
}
