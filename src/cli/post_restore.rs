//! `aliexpress post-restore`: after Postgres was restored from backup (`make restore`,
//! `deploy/local/stack restore`), bring the read side back to the restored truth
//! (`ops::post_restore`: lost events found and outranked, the projection fenced, the cache
//! cleared, the index rebuilt from Postgres).
//!
//! Usage: aliexpress post-restore [--margin 10m] [--group G] [--execute] [--json]
//!
//! A dry run by default: what the topic holds that the database lost, and what would be done.
//! `--execute` needs the projection stopped (its group without members). Exit code 0 when
//! done (or nothing to do), 2 when refused.

use std::time::Duration;

use crate::config::InfraConfig;
use crate::ops::post_restore::{self, Plan, Remedy};
use crate::store::audit_repo;

/// Flags of `post-restore`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Look for lost events from this long before the restored database's newest change.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub margin: Duration,
    /// The projection's consumer group (default: product-event-projection-group).
    #[arg(long)]
    pub group: Option<String>,
    /// Do it (default: dry run).
    #[arg(long)]
    pub execute: bool,
    /// Print the plan as JSON.
    #[arg(long)]
    pub json: bool,
    /// Keep consuming this long after the rebuilt index is swapped in.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Give up the rebuild when it does not match Postgres in this time.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub verify_timeout: Duration,
}

fn scanned(n: u64) {
    eprint!("\rread {n} record(s) of the events topic");
}

/// Runs the check, and with `--execute` the whole way back.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    let group = a.group.clone().unwrap_or_else(|| infra.names().projection_group());
    let d = super::replay::rebuild_deps(infra).await?;
    let plan = post_restore::plan(&d, &group, a.margin, &scanned).await?;
    eprintln!();
    if a.json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", render(&plan, &group));
    }
    if !a.execute {
        println!("Dry run: nothing changed. Stop the projection, then run again with --execute.");
        return Ok(());
    }
    let done = post_restore::execute(&d, &plan, &group, &audit_repo::cli_actor())
        .await
        .map_err(super::replay::refused_any)?;
    println!(
        "Advanced {} product(s); projection group {group} fenced at the scanned end; {} cached product(s) cleared.",
        done.advanced, done.cache_cleared
    );
    println!("Rebuilding the index from Postgres...");
    let o = crate::ops::rebuild::RebuildOptions {
        from_postgres: true,
        grace: a.grace,
        verify_timeout: a.verify_timeout,
        max_rate: None,
    };
    let r = crate::ops::rebuild::rebuild(&d, &o, &super::replay::RebuildBar::default())
        .await
        .map_err(super::replay::refused_any)?;
    println!(
        "Rebuilt {} from Postgres with {} documents; alias {} now points at it. The read side matches the restored database.",
        r.new_index,
        r.documents,
        infra.names().index_alias()
    );
    Ok(())
}

/// The plan on screen.
fn render(p: &Plan, group: &str) -> String {
    let (advance, past, vanished) = p.counts();
    let mut s = format!(
        "Restored database: newest change {}\nScanned {} from {}: {} record(s){}\n",
        p.horizon.map_or("none".into(), |h| h.to_rfc3339()),
        p.partitions.first().map_or("the events topic", |r| r.topic.as_str()),
        p.scanned_from.to_rfc3339(),
        p.records,
        if p.undecodable > 0 {
            format!(" ({} not events)", p.undecodable)
        } else {
            String::new()
        }
    );
    s += &format!(
        "Lost with the restore: {} event(s) of {} product(s): {advance} to move past their lost versions, {past} already past them, {vanished} no longer exist\n",
        p.lost_events(),
        p.lost.len()
    );
    for r in p.remedies.iter().take(20) {
        s += &match r {
            Remedy::Advance { id, current, past } => {
                format!("  {id}  v{current} -> v{} (lost up to v{past})\n", past + 1)
            }
            Remedy::AlreadyPast { id, current } => format!("  {id}  already at v{current}\n"),
            Remedy::Vanished { id } => format!("  {id}  no longer exists: dropped from search and cache\n"),
        };
    }
    if p.remedies.len() > 20 {
        s += &format!("  ... and {} more (--json lists them all)\n", p.remedies.len() - 20);
    }
    s += &format!("Then: group {group} fenced at the end of each partition scanned, cached products cleared, the index rebuilt from Postgres.\n");
    s
}
