//! `aliexpress replay`: moves a consumer group's offsets so the projection re-reads events.
//! Dry run by default; `--execute` applies, reads back and audits.
//!
//! Usage: aliexpress replay [--group G] [--topic T] (--to-earliest | --to-latest | --to-offset N |
//!        --shift-by N | --to-datetime T | --by-duration PnDTnHnMnS | --from-file F)
//!        [--partitions 0,2] [--export F] [--execute] [--wait-inactive 60s]
//!        [--impact-sample 200] [--assume-rate N]
//!        | --rebuild [--from-postgres] [--max-rate N] | --rollback
//!
//! The dry run also says what the replay would do: per partition the records re-read and read
//! in all, how many documents a sample of them would change, and the ETA at a measured rate
//! (`ops::replay_impact`).

use anyhow::Context;
use std::time::{Duration, Instant};

use crate::config::InfraConfig;
use crate::ops::replay::{self, PlanRow, ResetSpec};
use crate::ops::{groups, OpsError};

/// Flags of `replay`: the position first, then what it applies to, then how.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("mode").required(true).args(["to_earliest", "to_latest", "to_offset", "shift_by", "to_datetime", "by_duration", "from_file", "rebuild", "rollback"])))]
pub struct Args {
    /// Each partition's log start offset: re-project the whole history.
    #[arg(long, help_heading = POSITION)]
    pub to_earliest: bool,
    /// Each partition's log end offset: skip everything not consumed yet.
    #[arg(long, help_heading = POSITION)]
    pub to_latest: bool,
    /// An absolute offset (clamped to the log).
    #[arg(long, allow_negative_numbers = true, help_heading = POSITION)]
    pub to_offset: Option<i64>,
    /// Move by N from the committed offset (negative rewinds).
    #[arg(long, allow_negative_numbers = true, help_heading = POSITION)]
    pub shift_by: Option<i64>,
    /// The first offset at or after this time: RFC 3339 or YYYY-MM-DDTHH:mm:SS.sss (UTC).
    #[arg(long, help_heading = POSITION)]
    pub to_datetime: Option<String>,
    /// The first offset at or after now minus this ISO 8601 duration, PnDTnHnMnS.
    #[arg(long, help_heading = POSITION)]
    pub by_duration: Option<String>,
    /// The offsets of a plan exported with --export.
    #[arg(long, help_heading = POSITION)]
    pub from_file: Option<std::path::PathBuf>,
    /// Consumer group (default: product-event-projection-group).
    #[arg(long, help_heading = SCOPE)]
    pub group: Option<String>,
    /// Topic (default: product.events).
    #[arg(long, help_heading = SCOPE)]
    pub topic: Option<String>,
    /// Only these partitions, comma separated.
    #[arg(long, value_delimiter = ',', help_heading = SCOPE)]
    pub partitions: Option<Vec<i32>>,
    /// Apply the plan (default: dry run).
    #[arg(long, help_heading = APPLY)]
    pub execute: bool,
    /// Write the plan as CSV.
    #[arg(long, help_heading = APPLY)]
    pub export: Option<std::path::PathBuf>,
    /// Records of the replayed range the dry run reads, projects in memory and compares with
    /// the index to say how many documents would change (0: skip).
    #[arg(long, default_value_t = 200, help_heading = APPLY)]
    pub impact_sample: usize,
    /// Records per second the dry run's ETA assumes (default: the group's rate measured now,
    /// when it is consuming with lag).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..), help_heading = APPLY)]
    pub assume_rate: Option<u32>,
    /// Wait this long for the group to become inactive before refusing, e.g. 60s.
    #[arg(long, value_parser = humantime::parse_duration, help_heading = APPLY)]
    pub wait_inactive: Option<Duration>,
    /// Build a fresh index from the topic (or Postgres) and swap the alias when it matches.
    #[arg(long, help_heading = REBUILD)]
    pub rebuild: bool,
    /// With --rebuild: load the current state from Postgres instead of the topic's history.
    #[arg(long, requires = "rebuild", help_heading = REBUILD)]
    pub from_postgres: bool,
    /// With --rebuild: keep consuming this long after the swap.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration, help_heading = REBUILD)]
    pub grace: Duration,
    /// With --rebuild: give up when count and checksum do not match Postgres in this time.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration, help_heading = REBUILD)]
    pub verify_timeout: Duration,
    /// With --rebuild: write at most N events (documents, from Postgres) per second, so live
    /// writes stay fresh while it runs (see docs/RUNBOOK.md for the measured bound).
    #[arg(long, requires = "rebuild", value_parser = clap::value_parser!(u32).range(1..), help_heading = REBUILD)]
    pub max_rate: Option<u32>,
    /// Point the alias back at the index the last rebuild replaced.
    #[arg(long, help_heading = REBUILD)]
    pub rollback: bool,
}

const POSITION: &str = "Position (exactly one)";
const SCOPE: &str = "Group, topic, partitions";
const APPLY: &str = "Dry run or apply";
const REBUILD: &str = "Instead of moving offsets: rebuild the search index";

fn refused(e: OpsError) -> anyhow::Error {
    match e {
        OpsError::Refused(m) => super::usage("replay", m),
        other => anyhow::Error::new(other),
    }
}

pub(super) async fn rebuild_deps(infra: &InfraConfig) -> anyhow::Result<crate::ops::rebuild::RebuildDeps> {
    Ok(crate::ops::rebuild::RebuildDeps {
        infra: infra.clone(),
        kafka: super::connect::kafka_connection(infra)?,
        pool: super::connect::database(infra).await?,
        search: super::connect::search(infra).await?,
        cache: super::connect::cache(infra).await?,
        producer: super::connect::kafka(infra, &Default::default()).await?,
    })
}

/// A rebuild's progress as a bar on stderr (a spinner when the total is not known).
#[derive(Default)]
pub(super) struct RebuildBar(std::sync::OnceLock<indicatif::ProgressBar>);

impl crate::ops::rebuild::RebuildProgress for RebuildBar {
    fn start(&self, index: &str, events: Option<u64>) {
        let bar = indicatif::ProgressBar::new(events.unwrap_or(0));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} rebuilding {msg} [{bar:40}] {pos}/{len} events {per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(index.to_owned());
        let _ = self.0.set(bar);
    }

    fn advance(&self, n: u64) {
        if let Some(b) = self.0.get() {
            b.inc(n);
        }
    }

    fn finish(&self) {
        if let Some(b) = self.0.get() {
            b.finish_and_clear();
        }
    }
}

pub(super) fn refused_any(e: anyhow::Error) -> anyhow::Error {
    match e.downcast::<OpsError>() {
        Ok(o) => refused(o),
        Err(e) => e,
    }
}

/// Plans and (with --execute) applies a reset; or rebuilds / rolls back the search index.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    if a.rebuild || a.rollback {
        return rebuild_or_rollback(infra, &a).await;
    }
    let names = infra.names();
    let group = a.group.clone().unwrap_or_else(|| names.projection_group());
    let topic = a.topic.clone().unwrap_or_else(|| names.events_topic());
    let spec = reset_spec(&a)?;
    let described = spec.as_ref().map(ResetSpec::describe);
    let rows = plan(infra, &a, &group, &topic, spec).await?;
    print!("{}", replay::render(&rows));
    let n = replay::reprojected(&rows);
    if let Some(f) = &a.export {
        std::fs::write(f, replay::to_csv(&rows)).with_context(|| format!("writing {}", f.display()))?;
        println!("Plan written to {}", f.display());
    }
    if !a.execute {
        if topic == names.events_topic() && a.impact_sample > 0 {
            // What the replay would do is advice: a store that cannot say is named, and the
            // plan above stands.
            match impact(infra, &a, &group, &topic, &rows).await {
                Ok(i) => print!("{}", crate::ops::replay_impact::render(&i)),
                Err(e) => println!("\nImpact: unavailable ({e:#}); the plan above is unchanged."),
            }
        }
        println!("Dry run: nothing changed. {n} already-consumed events would be reprojected. Add --execute to apply.");
        return Ok(());
    }
    if topic == names.events_topic() {
        let p = super::connect::database(infra).await?;
        let mut c = p.get().await?;
        let fence = crate::store::restore_repo::latest(&mut c, &topic).await?;
        if let Some(refusal) = fence.and_then(|f| crate::ops::post_restore::crosses_fence(&f, &rows)) {
            return Err(super::usage("replay", refusal));
        }
    }
    if let Some(wait) = a.wait_inactive {
        wait_inactive(infra, &group, wait).await?;
    }
    let (b, plan) = (super::connect::kafka_connection(infra)?, rows.clone());
    tokio::task::spawn_blocking(move || replay::apply(&b, &plan))
        .await?
        .map_err(refused)?;
    let mode = match (&described, &a.from_file) {
        (Some(d), _) => d.clone(),
        (None, Some(f)) => format!("from-file {}", f.display()),
        (None, None) => String::new(),
    };
    let p = super::connect::database(infra).await?;
    replay::record_execution(&p, &rows, &mode)
        .await
        .context("writing the replay audit")?;
    println!(
        "Offsets reset for group {group}: {n} already-consumed events will be reprojected when the consumer restarts."
    );
    Ok(())
}

/// The dry run's impact: a sample compared with the index, and the ETA.
async fn impact(
    infra: &InfraConfig,
    a: &Args,
    group: &str,
    topic: &str,
    rows: &[PlanRow],
) -> anyhow::Result<crate::ops::replay_impact::Impact> {
    use crate::ops::replay_impact as ri;
    let kafka = super::connect::kafka_connection(infra)?;
    let (k, r, n) = (kafka.clone(), rows.to_vec(), a.impact_sample);
    eprintln!("reading a sample of {n} record(s) of the replayed range...");
    let records = tokio::task::spawn_blocking(move || ri::read_sample(&k, &r, n)).await??;
    let search = super::connect::search_client(infra, Duration::from_secs(10))?;
    let found = ri::compare(&search, &infra.names().index_alias(), rows, &records).await?;
    let rate = match a.assume_rate {
        Some(r) => Some((f64::from(r), "--assume-rate".to_owned())),
        None => {
            let (g, t) = (group.to_owned(), topic.to_owned());
            let gap = Duration::from_secs(2);
            tokio::task::spawn_blocking(move || ri::live_rate(&kafka, &g, &t, gap))
                .await?
                .map(|r| (r, format!("{group}'s rate now, measured over 2 s")))
        }
    };
    Ok(ri::with_rate(found, rate))
}

/// `--rebuild` (a fresh index, the alias swapped) or `--rollback` (the alias swapped back).
async fn rebuild_or_rollback(infra: &InfraConfig, a: &Args) -> anyhow::Result<()> {
    let d = rebuild_deps(infra).await?;
    if a.rollback {
        let (from, to) = crate::ops::rebuild::rollback(&d).await.map_err(refused_any)?;
        println!("Alias {} moved back from {from} to {to}", infra.names().index_alias());
        return Ok(());
    }
    let o = crate::ops::rebuild::RebuildOptions {
        from_postgres: a.from_postgres,
        grace: a.grace,
        verify_timeout: a.verify_timeout,
        max_rate: a.max_rate,
    };
    let r = crate::ops::rebuild::rebuild(&d, &o, &RebuildBar::default())
        .await
        .map_err(refused_any)?;
    println!(
        "Rebuilt {} from {} with {} documents; alias {} now points at it (previous: {}). Roll back with: aliexpress replay --rollback",
        r.new_index, r.source, r.documents, infra.names().index_alias(), r.old_index.as_deref().unwrap_or("none")
    );
    Ok(())
}

/// The position asked for, if any (`--from-file` is the other way to give one).
fn reset_spec(a: &Args) -> anyhow::Result<Option<ResetSpec>> {
    Ok(if a.to_earliest {
        Some(ResetSpec::Earliest)
    } else if a.to_latest {
        Some(ResetSpec::Latest)
    } else if let Some(o) = a.to_offset {
        Some(ResetSpec::ToOffset(o))
    } else if let Some(n) = a.shift_by {
        Some(ResetSpec::ShiftBy(n))
    } else if let Some(t) = &a.to_datetime {
        Some(ResetSpec::ToDatetime(replay::parse_datetime(t).map_err(refused)?))
    } else if let Some(d) = &a.by_duration {
        Some(ResetSpec::ByDuration(replay::parse_iso_duration(d).map_err(refused)?))
    } else {
        None
    })
}

/// The plan: per partition, the current and the new offset (Kafka's calls run off the runtime).
async fn plan(
    infra: &InfraConfig,
    a: &Args,
    group: &str,
    topic: &str,
    spec: Option<ResetSpec>,
) -> anyhow::Result<Vec<PlanRow>> {
    let bootstrap = super::connect::kafka_connection(infra)?;
    let from_file = match &a.from_file {
        Some(f) => Some(
            replay::from_csv(
                &std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
                group,
            )
            .map_err(refused)?,
        ),
        None => None,
    };
    let (g, t, parts) = (group.to_owned(), topic.to_owned(), a.partitions.clone());
    let rows = tokio::task::spawn_blocking(move || -> Result<Vec<PlanRow>, OpsError> {
        match (spec, from_file) {
            (Some(spec), _) => replay::plan(&bootstrap, &g, &t, parts.as_deref(), &spec),
            (None, Some(entries)) => {
                let mut rows = Vec::new();
                for (topic, p, o) in entries {
                    rows.extend(replay::plan(&bootstrap, &g, &topic, Some(&[p]), &ResetSpec::ToOffset(o))?);
                }
                Ok(rows)
            }
            (None, None) => Err(OpsError::Refused("give one of --to-earliest, --to-latest, --to-offset, --shift-by, --to-datetime, --by-duration, --from-file".into())),
        }
    })
    .await?;
    rows.map_err(refused)
}

/// Waits (up to `wait`) for the group to have no active member (`--wait-inactive`).
async fn wait_inactive(infra: &InfraConfig, group: &str, wait: Duration) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        let (b, g) = (super::connect::kafka_connection(infra)?, group.to_owned());
        let info = tokio::task::spawn_blocking(move || groups::info(&b, &g)).await??;
        if info.is_inactive() || started.elapsed() > wait {
            return Ok(());
        }
        eprintln!(
            "group {group} is {} with {} member(s); waiting",
            info.state,
            info.members.len()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
