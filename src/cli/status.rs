//! `aliexpress status`: the operations guide's golden rule in one command: health of each
//! dependency with latency, outbox backlog, lag per group with a verdict, DLQ depth, and the
//! last replay (gathered by [`crate::ops::status`]).
//!
//! Usage: aliexpress status [--json] [--watch SECONDS]
//!
//! `--json` prints one JSON object per sample (for scripts); `--watch` repeats every
//! SECONDS until Ctrl-C. Without `--watch` the exit code is 1 when a dependency is down or a
//! group is stalled or stopped with lag.

use std::time::Duration;

use crate::config::InfraConfig;
use crate::ops::status::{self, Status, StatusDeps};
use crate::store::pool;

/// Flags of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON (one object per sample) instead of the screen.
    #[arg(long)]
    pub json: bool,
    /// Repeat every SECONDS until interrupted.
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub watch: Option<u64>,
}

/// Prints the status once, or every `--watch` seconds.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    let names = infra.names();
    let deps = StatusDeps {
        pool: pool::build_pool(&infra.database_url, 2, Duration::from_secs(5))?,
        cache: crate::cache::ProductCache::new(infra.redis()?, names.clone(), Duration::from_secs(60))?,
        producer: crate::bus::producer::build(&infra.kafka()?, &Default::default())?,
        search: crate::search::SearchClient::with_access(
            &infra.opensearch_url,
            &infra.search_access()?,
            status::PROBE_TIMEOUT,
        )?,
        kafka: infra.kafka()?,
        groups: vec![
            (names.projection_group(), names.events_topic()),
            (names.command_group(), names.commands_topic()),
        ],
        dlq_topics: vec![names.events_dlq_topic(), names.commands_dlq_topic()],
    };
    let Some(every) = a.watch else {
        let s = status::gather(&deps).await;
        print(&s, a.json)?;
        if !s.healthy() {
            std::process::exit(1);
        }
        return Ok(());
    };
    let shutdown = crate::worker::Shutdown::new();
    shutdown.install_signal_handlers();
    while !shutdown.is_triggered() {
        let s = status::gather(&deps).await;
        if !a.json {
            // Clear the screen and go home, like `watch`.
            println!("\x1b[2J\x1b[H{}", chrono::Utc::now().to_rfc3339());
        }
        print(&s, a.json)?;
        shutdown.sleep(Duration::from_secs(every)).await;
    }
    Ok(())
}

fn print(s: &Status, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(s)?);
        return Ok(());
    }
    println!("== health");
    for c in &s.health {
        match (&c.error, c.latency_ms) {
            (None, Some(ms)) => println!("  {:<11} ok ({ms} ms)", c.name),
            (e, _) => println!("  {:<11} DOWN: {}", c.name, e.as_deref().unwrap_or("")),
        }
    }
    println!("== outbox");
    match &s.outbox {
        Some(o) => {
            println!(
                "  pending {}  parked {}  oldest pending {:.1}s",
                o.pending, o.parked, o.oldest_pending_age_secs
            );
            println!(
                "  relays {}  slices owned {}/{}",
                o.relays.len(),
                o.slices_owned,
                crate::store::outbox_slices::OUTBOX_SLICES
            );
            for (relay, n) in &o.relays {
                println!("    {relay:<40} {n} slices");
            }
        }
        None => println!("  unavailable"),
    }
    println!("== last replay");
    match &s.last_replay {
        Some(r) => println!("  {} group {} {} from {}", r.executed_at, r.group, r.mode, r.host),
        None => println!("  none recorded"),
    }
    println!("== consumer groups");
    for g in &s.groups {
        println!(
            "  {:<34} {:<20} lag {:>8}  members {}  {}",
            g.group, g.topic, g.lag, g.members, g.verdict
        );
    }
    println!("== dead letters");
    for d in &s.dead_letters {
        match d.records {
            Some(n) => println!("  {:<34} {n} record(s)", d.topic),
            None => println!("  {:<34} unavailable", d.topic),
        }
    }
    Ok(())
}
