//! `aliexpress status`: the operations guide's golden rule in one command: health of each
//! dependency with latency, outbox backlog, lag per group with a verdict, DLQ depth, and the
//! last replay (gathered by [`crate::ops::status`]).
//!
//! Usage: aliexpress status [--json] [--watch SECONDS]
//!
//! `--json` prints one JSON object per sample, on one line (for scripts; with `--watch`, one
//! line per sample); `--watch` samples every SECONDS until Ctrl-C (SIGINT or SIGTERM, exit 0).
//! Without `--watch` the exit code is 1 when a dependency is down or a group is stalled or
//! stopped with lag.
//!
//! The JSON shape (version 1; fields are only ever added, a change of meaning bumps
//! `schema_version`), as documented in RUNBOOK.md:
//! `{"schema_version": 1, "sampled_at": RFC 3339, "healthy": bool,
//!   "health": [{"name", "ok", "latency_ms"|null, "error"|null}],
//!   "outbox": {"pending", "parked", "oldest_pending_age_secs", "relays": {name: slices},
//!              "slices_owned"} | null,
//!   "last_replay": {"executed_at", "group", "mode", "host"} | null,
//!   "last_reconcile": {"ran_at", "host", "compared", "absent_from_cache", "drift": {"store/kind": n},
//!                      "examples": [...]} | null,
//!   "groups": [{"group", "topic", "lag", "members", "verdict", "eta_secs"|null, "trend",
//!               "slowest_partition"|null, "partitions": [{"partition", "lag"|null,
//!               "rate_per_sec"|null, "eta_secs"|null, "trend"}]}],
//!   "dead_letters": [{"topic", "records"|null}]}`

use std::io::Write;
use std::time::Duration;

use crate::bus::catch_up::render_eta;
use crate::config::InfraConfig;
use crate::ops::status::{self, Status, StatusDeps};

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
    let (pool, cache, search) = super::connect::ops_clients(infra, status::PROBE_TIMEOUT)?;
    let deps = StatusDeps {
        pool,
        cache,
        producer: crate::bus::producer::build(&super::connect::kafka_connection(infra)?, &Default::default())?,
        search,
        kafka: super::connect::kafka_connection(infra)?,
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
    let every = Duration::from_secs(every);
    while !shutdown.is_triggered() {
        let started = std::time::Instant::now();
        let s = status::gather(&deps).await;
        if !a.json {
            // Clear the screen and go home, like `watch`.
            println!("\x1b[2J\x1b[H{}", chrono::Utc::now().to_rfc3339());
        }
        print(&s, a.json)?;
        // Samples start every `every`, however long gathering took.
        shutdown.sleep(every.saturating_sub(started.elapsed())).await;
    }
    Ok(())
}

/// Version of the `--json` shape: bumped when a field changes meaning or goes away.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// One `--json` sample: the status with its version, time and overall verdict.
#[derive(serde::Serialize)]
struct JsonSample<'a> {
    schema_version: u32,
    sampled_at: chrono::DateTime<chrono::Utc>,
    /// What the exit code says without `--watch` (true: 0).
    healthy: bool,
    #[serde(flatten)]
    status: &'a Status,
}

fn print(s: &Status, json: bool) -> anyhow::Result<()> {
    if json {
        let sample = JsonSample {
            schema_version: JSON_SCHEMA_VERSION,
            sampled_at: chrono::Utc::now(),
            healthy: s.healthy(),
            status: s,
        };
        // One line per sample, flushed at once, so a reader of a pipe gets each as it comes.
        let mut out = std::io::stdout().lock();
        serde_json::to_writer(&mut out, &sample)?;
        writeln!(out)?;
        out.flush()?;
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
    print_drift(s);
    print_groups(s);
    println!("== dead letters");
    for d in &s.dead_letters {
        match d.records {
            Some(n) => println!("  {:<34} {n} record(s)", d.topic),
            None => println!("  {:<34} unavailable", d.topic),
        }
    }
    Ok(())
}

/// The `== drift` section: the projection's last scheduled check.
fn print_drift(s: &Status) {
    println!("== drift (the projection's scheduled check)");
    match &s.last_reconcile {
        Some(r) => {
            let drift = r
                .drift
                .as_object()
                .map(|o| o.iter().map(|(k, v)| format!("{k} {v}")).collect::<Vec<_>>().join(", "));
            let drift = drift.filter(|d| !d.is_empty()).unwrap_or_else(|| "none".into());
            println!(
                "  {} on {}: {} products compared, drift: {drift}",
                r.ran_at, r.host, r.compared
            );
        }
        None => println!("  no run recorded (run-product-event-consumer --reconcile-every 60s turns it on)"),
    }
}

/// The `== consumer groups` section: lag, verdict and catch-up of each group, and the
/// partitions still behind.
fn print_groups(s: &Status) {
    println!("== consumer groups");
    for g in &s.groups {
        let eta = match (g.trend.as_str(), g.eta_secs) {
            ("catching up", Some(e)) => format!(
                "ETA {e:.0} s (partition {})",
                g.slowest_partition.map_or("-".into(), |p| p.to_string())
            ),
            ("caught up", _) => "caught up".to_owned(),
            ("not catching up", _) => format!(
                "not catching up (partition {})",
                g.slowest_partition.map_or("-".into(), |p| p.to_string())
            ),
            _ => "ETA -".to_owned(),
        };
        println!(
            "  {:<34} {:<20} lag {:>8}  members {}  {:<6} {eta}",
            g.group, g.topic, g.lag, g.members, g.verdict
        );
        let behind: Vec<String> = g
            .partitions
            .iter()
            .filter(|p| p.lag != Some(0))
            .take(8)
            .map(|p| {
                let lag = p.lag.map_or("-".into(), |l| l.to_string());
                format!("{}:{lag} {}", p.partition, render_eta(p.eta_secs))
            })
            .collect();
        if !behind.is_empty() {
            println!("    behind (partition:lag eta): {}", behind.join("  "));
        }
    }
}
