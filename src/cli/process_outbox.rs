//! `aliexpress process-outbox`: publishes pending outbox rows to Kafka, then exits with a
//! summary; `--follow` keeps doing it as a daemon; `--prune-published-older-than` deletes old
//! published rows in small batches.
//!
//! Usage: aliexpress process-outbox [--follow] [--batch-size N] [--metrics-bind ADDR]
//!
//! Every flag but `--prune-published-older-than` is also a variable (`OUTBOX_*`, `METRICS_BIND`).

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use std::time::{Duration, Instant};

use crate::bus::producer::ProducerSettings;
use crate::config::InfraConfig;
use crate::store::outbox_repo;
use crate::worker::outbox_relay::{DriveError, OutboxRelay, RelaySettings, Tally, Until};
use crate::worker::Shutdown;

/// Flags of `process-outbox`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Keep running: wake on NOTIFY, poll as a fallback, survive outages.
    #[arg(long, env = "OUTBOX_FOLLOW")]
    pub follow: bool,
    /// Rows per batch.
    #[arg(long, env = "OUTBOX_BATCH_SIZE", default_value_t = 5000, value_parser = clap::value_parser!(i64).range(1..=50_000))]
    pub batch_size: i64,
    /// Producer linger.ms.
    #[arg(long, env = "OUTBOX_LINGER_MS", default_value_t = 5)]
    pub linger_ms: u64,
    /// Producer compression: none, gzip, snappy, lz4, zstd.
    #[arg(long, env = "OUTBOX_COMPRESSION", default_value = "lz4", value_parser = ["none", "gzip", "snappy", "lz4", "zstd"])]
    pub compression: String,
    /// How long the producer retries a message before reporting it failed, e.g. 30s.
    #[arg(long, env = "OUTBOX_MESSAGE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub message_timeout: Duration,
    /// Failed attempts before a row is parked.
    #[arg(long, env = "OUTBOX_MAX_ATTEMPTS", default_value_t = 10)]
    pub max_attempts: i32,
    /// First retry delay of a failed row (doubles per attempt), e.g. 1s.
    #[arg(long, env = "OUTBOX_RETRY_BASE", default_value = "1s", value_parser = humantime::parse_duration)]
    pub retry_base: Duration,
    /// Poll interval when following (NOTIFY usually wakes it sooner).
    #[arg(long, env = "OUTBOX_POLL_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// One-shot: how long to wait for a slice while other relays own them all.
    #[arg(long, env = "OUTBOX_LOCK_WAIT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub lock_wait: Duration,
    /// How long a relay waits before publishing for a slice whose previous owner died holding
    /// it (each batch is bounded by half of it, so the old owner has stopped by then).
    #[arg(long, env = "OUTBOX_TAKEOVER_GRACE", default_value = "5s", value_parser = parse_grace)]
    pub takeover_grace: Duration,
    /// One-shot: give up after Kafka refused every batch for this long.
    #[arg(long, env = "OUTBOX_BROKER_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub broker_timeout: Duration,
    /// Delete published rows older than this (e.g. 7d), in small batches, then exit. An
    /// operator's action, not a setting: a flag only.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub prune_published_older_than: Option<Duration>,
    /// Serve Prometheus metrics here when following (e.g. 127.0.0.1:9464); unset or empty:
    /// none. (The old name --metrics-addr / METRICS_ADDR still works.)
    #[arg(long, visible_alias = "metrics-addr", env = "METRICS_BIND")]
    pub metrics_bind: Option<String>,
}

/// Runs the relay.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    let pool = super::connect::database(infra).await?;
    if let Some(age) = a.prune_published_older_than {
        let mut conn = crate::store::pool::get(&pool).await?;
        let mut total = 0;
        loop {
            let n = outbox_repo::prune_published(&mut conn, age, 1000)
                .await
                .context("pruning the outbox")?;
            total += n;
            if n == 0 {
                break;
            }
            eprintln!("pruned {total} rows so far");
        }
        println!(
            "Pruned {total} published outbox rows older than {}",
            humantime::format_duration(age)
        );
        return Ok(());
    }
    let producer_settings = ProducerSettings {
        linger_ms: a.linger_ms,
        compression: a.compression.clone(),
        message_timeout_ms: u64::try_from(a.message_timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1000),
    };
    let producer = super::connect::kafka(infra, &producer_settings).await?;
    let settings = RelaySettings {
        batch_size: a.batch_size,
        max_attempts: a.max_attempts,
        retry_base: a.retry_base,
        poll_interval: a.poll_interval,
        takeover_grace: a.takeover_grace,
        ..Default::default()
    };
    let mut relay = OutboxRelay::new(infra.database.url.expose().to_owned(), producer, settings)
        .with_producer_rebuild(super::connect::kafka_connection(infra)?, producer_settings);
    let shutdown = Shutdown::new();
    shutdown.install_signal_handlers();
    if a.follow {
        super::connect::metrics_server(super::worker_metrics_bind(a.metrics_bind.as_deref()).as_deref())?;
        tracing::info!(batch_size = a.batch_size, "outbox publisher following");
        relay.run_until_stopped(shutdown).await;
        return Ok(());
    }
    one_shot(&mut relay, &a, &shutdown).await
}

/// A takeover grace: at least 200 ms (each batch gets half of it).
fn parse_grace(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| e.to_string())?;
    if d < Duration::from_millis(200) {
        return Err("must be at least 200ms".into());
    }
    Ok(d)
}

/// Joins the relays and publishes what is pending (see the module docs), then prints a summary.
async fn one_shot(relay: &mut OutboxRelay, a: &Args, shutdown: &Shutdown) -> anyhow::Result<()> {
    if !join(relay, a, shutdown).await? {
        return Ok(());
    }
    let before = relay.update_gauges().await?;
    if before.pending == 0 {
        println!("Nothing pending in the outbox ({} parked).", before.parked);
        relay.release().await;
        return Ok(());
    }
    let bar = ProgressBar::new(u64::try_from(before.pending).unwrap_or(0));
    bar.set_style(
        ProgressStyle::with_template("{spinner} publishing [{bar:40}] {pos}/{len} events {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let tally = match publish_until_done(relay, a, shutdown, &bar).await {
        Ok(tally) => tally,
        Err(e) => {
            bar.abandon();
            relay.release().await;
            return Err(e);
        }
    };
    bar.finish_and_clear();
    summarize(relay, &tally, started.elapsed()).await;
    Ok(())
}

/// Waits (up to `--lock-wait`) for a share of the slices; false when none came or shutdown
/// fired (nothing to do then).
async fn join(relay: &mut OutboxRelay, a: &Args, shutdown: &Shutdown) -> anyhow::Result<bool> {
    let waited = Instant::now();
    while !relay.try_acquire().await.context("joining the outbox relays")? {
        if waited.elapsed() > a.lock_wait {
            println!("Other outbox publishers own every slice; they publish the pending rows. Nothing done.");
            return Ok(false);
        }
        if shutdown.sleep(Duration::from_millis(500)).await {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Publishes until this run's slices (and any slice left free with publishable rows) have
/// nothing to claim: the relay's own loop, until drained; Kafka refusing every batch for
/// `--broker-timeout` is an error.
async fn publish_until_done(
    relay: &mut OutboxRelay,
    a: &Args,
    shutdown: &Shutdown,
    bar: &ProgressBar,
) -> anyhow::Result<Tally> {
    let until = Until::Drained {
        broker_timeout: a.broker_timeout,
    };
    relay
        .drive(until, shutdown, &mut |o| bar.inc(o.published as u64))
        .await
        .map_err(|e| match e {
            DriveError::Store(e) => anyhow::Error::new(e).context("publishing the outbox"),
            refused => anyhow::Error::new(refused),
        })
}

/// Prints what the run published, what waits for a retry or is parked, and what other relays
/// own; releases the slices.
async fn summarize(relay: &mut OutboxRelay, t: &Tally, took: Duration) {
    let after = relay.update_gauges().await.unwrap_or_default();
    let waiting = relay.waiting_for_retry().await.unwrap_or_default();
    let owned = relay.slices().borrow().len();
    relay.release().await;
    let secs = took.as_secs_f64();
    println!(
        "Published {} events in {} batches in {secs:.2}s ({:.0} events/s)",
        t.published,
        t.batches,
        if secs > 0.0 { t.published as f64 / secs } else { 0.0 }
    );
    if t.failed > 0 || after.parked > 0 {
        println!(
            "{} failed attempts, {} rows parked now, {} parked in total (`aliexpress outbox list --parked`)",
            t.failed, t.parked, after.parked
        );
    }
    if waiting.rows > 0 {
        let next = waiting.next_at.map_or_else(String::new, |at| {
            let d = (at - chrono::Utc::now()).to_std().unwrap_or_default();
            format!(
                "; the next is due at {} (in {})",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                humantime::format_duration(Duration::from_secs(d.as_secs()))
            )
        });
        println!(
            "{} rows wait for a retry after a failed attempt (with the later rows of their products){next}: \
             not published by this run; run it again then, or keep a --follow relay running",
            waiting.rows
        );
    }
    let all = usize::try_from(crate::store::outbox_slices::OUTBOX_SLICES).unwrap_or(0);
    if owned < all {
        let elsewhere = after.pending - waiting.rows;
        if elsewhere > 0 {
            println!("This run owned {owned} of {all} outbox slices; {elsewhere} pending rows are in slices other live relays own, they publish them.");
        } else {
            println!("This run owned {owned} of {all} outbox slices; the relays owning the others publish their rows.");
        }
    }
}
