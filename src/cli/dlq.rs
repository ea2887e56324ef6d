//! `aliexpress dlq`: inspect dead letters and redrive them once the cause is fixed.
//!
//! Usage: aliexpress dlq list [--topic T] [--limit N] [--reason CLASS] | dlq show P:O |
//!        dlq triage [--json] |
//!        dlq redrive (--offsets P:O,... | --fingerprint F | --all) [--execute [--canary N]]

use crate::bus::producer::ProducerSettings;
use crate::config::InfraConfig;
use crate::ops::dlq::{self, DlqRecord, Redrive, Selection};
use crate::store::pool;
use rdkafka::Message;

/// Flags of `dlq`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// DLQ topic (default: dlq.product.events).
    #[arg(long, global = true)]
    pub topic: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// One line per dead letter.
    List {
        /// Most records to show (newest last).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Only this error class.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Dead letters grouped by cause (fingerprint), largest group first.
    Triage {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Headers and payload of one record, by PARTITION:OFFSET (or OFFSET on partition 0).
    Show {
        /// PARTITION:OFFSET.
        at: String,
    },
    /// Republish records to their original topic (dry run unless --execute).
    Redrive {
        /// PARTITION:OFFSET list.
        #[arg(long, value_delimiter = ',', conflicts_with_all = ["all", "fingerprint"])]
        offsets: Vec<String>,
        /// Every record of one cause (a fingerprint of `dlq triage`).
        #[arg(long, conflicts_with = "all")]
        fingerprint: Option<String>,
        /// Every record not redriven yet.
        #[arg(long)]
        all: bool,
        /// Actually republish.
        #[arg(long)]
        execute: bool,
        /// With --execute: redrive the first N, wait until their consumer group has consumed
        /// them, and stop (exit 1) if any was dead-lettered again; otherwise redrive the rest.
        #[arg(long, default_value_t = 0)]
        canary: usize,
        /// Longest wait for the canaries to be consumed.
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        canary_timeout: std::time::Duration,
    },
}

fn parse_at(s: &str) -> anyhow::Result<(i32, i64)> {
    let (p, o) = s.split_once(':').unwrap_or(("0", s));
    let p = p
        .trim()
        .parse()
        .map_err(|_| super::usage("dlq", format!("bad partition in {s:?}; expected PARTITION:OFFSET")))?;
    let o = o
        .trim()
        .parse()
        .map_err(|_| super::usage("dlq", format!("bad offset in {s:?}; expected PARTITION:OFFSET")))?;
    Ok((p, o))
}

/// Runs the action.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    let topic = a.topic.clone().unwrap_or_else(|| infra.names().events_dlq_topic());
    let (b, t) = (super::connect::kafka_connection(infra)?, topic.clone());
    let msgs = tokio::task::spawn_blocking(move || dlq::read_all(&b, &t)).await??;
    match a.action {
        Action::List { limit, reason } => list(&msgs, &topic, limit, reason.as_deref()),
        Action::Show { at } => {
            let (p, o) = parse_at(&at)?;
            let text = dlq::show(&msgs, &topic, p, o)
                .ok_or_else(|| super::usage("dlq show", format!("no record at {p}:{o} in {topic}")))?;
            println!("{text}");
        }
        Action::Triage { json } => triage(&msgs, &topic, json)?,
        Action::Redrive {
            offsets,
            fingerprint,
            all,
            execute,
            canary,
            canary_timeout,
        } => {
            let offsets = match fingerprint {
                None => offsets,
                Some(f) => {
                    let picked: Vec<String> = msgs
                        .iter()
                        .filter(|m| crate::ops::triage::fingerprint_of(m) == f.trim())
                        .map(|m| format!("{}:{}", rdkafka::Message::partition(m), rdkafka::Message::offset(m)))
                        .collect();
                    if picked.is_empty() {
                        return Err(super::usage(
                            "--fingerprint",
                            format!("no dead letter of {topic} has fingerprint {f:?} (see dlq triage)"),
                        ));
                    }
                    picked
                }
            };
            let how = How {
                execute,
                canary,
                canary_timeout,
            };
            redrive(infra, &msgs, &topic, &offsets, all, how).await?
        }
    }
    Ok(())
}

/// `dlq list`: the newest `limit` records (of one error class with `--reason`), one a line.
fn list(msgs: &[rdkafka::message::OwnedMessage], topic: &str, limit: usize, reason: Option<&str>) {
    let recs: Vec<DlqRecord> = msgs
        .iter()
        .map(DlqRecord::from_message)
        .filter(|r| reason.is_none_or(|c| r.error_class == c))
        .collect();
    println!(
        "{:<12} {:<32} {:<28} {:<40} {:<36} REASON",
        "AT", "FAILED-AT", "ERROR-CLASS", "ORIGINAL", "KEY"
    );
    let skip = recs.len().saturating_sub(limit);
    for r in recs.iter().skip(skip) {
        let reason: String = r.reason.chars().take(100).collect();
        println!(
            "{:<12} {:<32} {:<28} {:<40} {:<36} {}",
            format!("{}:{}", r.partition, r.offset),
            r.failed_at,
            r.error_class,
            format!("{}[{}]@{}", r.original_topic, r.original_partition, r.original_offset),
            r.key,
            reason
        );
    }
    println!("{} record(s) in {topic}", recs.len());
}

/// `dlq triage`: one line per cause.
fn triage(msgs: &[rdkafka::message::OwnedMessage], topic: &str, json: bool) -> anyhow::Result<()> {
    let groups = crate::ops::triage::triage(msgs);
    if json {
        println!("{}", serde_json::to_string_pretty(&groups)?);
        return Ok(());
    }
    println!(
        "{:<12} {:>7} {:>8} {:>9} {:<10} {:<24} {:<28} {:<28} {:<10} REASON",
        "FINGERPRINT", "COUNT", "PRODUCTS", "REDRIVEN", "STAGE", "ERROR-CLASS", "FIRST-SEEN", "LAST-SEEN", "VERSIONS"
    );
    for g in &groups {
        println!(
            "{:<12} {:>7} {:>8} {:>9} {:<10} {:<24} {:<28} {:<28} {:<10} {}",
            g.fingerprint,
            g.count,
            g.products,
            g.failed_after_redrive,
            g.stage,
            g.error_class,
            g.first_seen,
            g.last_seen,
            g.app_versions.join(","),
            g.reason
        );
    }
    println!(
        "{} cause(s), {} record(s) in {topic}; REDRIVEN: failed again after a redrive; redrive one cause: \
         dlq redrive --fingerprint F --execute [--canary 5]",
        groups.len(),
        msgs.len()
    );
    Ok(())
}

/// How `dlq redrive` republishes.
struct How {
    execute: bool,
    canary: usize,
    canary_timeout: std::time::Duration,
}

/// `dlq redrive`: a dry run unless `execute`; each record republished once, ever; with a
/// canary, the first `canary` records first, and the rest only if none failed again.
async fn redrive(
    infra: &InfraConfig,
    msgs: &[rdkafka::message::OwnedMessage],
    topic: &str,
    offsets: &[String],
    all: bool,
    how: How,
) -> anyhow::Result<()> {
    if offsets.is_empty() && !all {
        return Err(super::usage(
            "dlq redrive",
            "give --offsets P:O,..., --fingerprint F or --all",
        ));
    }
    if how.canary > 0 && !how.execute {
        return Err(super::usage("--canary", "a canary redrives records: add --execute"));
    }
    let p = super::connect::database(infra).await?;
    let mut conn = pool::get(&p).await?;
    let done = crate::store::audit_repo::redriven(&mut conn, topic).await?;
    let mut wanted: Vec<(i32, i64)> = if all {
        msgs.iter().map(|m| (m.partition(), m.offset())).collect()
    } else {
        offsets.iter().map(|s| parse_at(s)).collect::<anyhow::Result<_>>()?
    };
    wanted.retain(|at| !done.contains(at));
    let producer = if how.execute {
        Some(super::connect::kafka(infra, &ProducerSettings::default()).await?)
    } else {
        None
    };
    let actor = crate::store::audit_repo::cli_actor();
    let mut n = 0;
    if how.canary > 0 && wanted.len() > how.canary {
        let rest = wanted.split_off(how.canary);
        let dlq_ends = {
            let (b, t) = (super::connect::kafka_connection(infra)?, topic.to_owned());
            tokio::task::spawn_blocking(move || dlq::log_ends(&b, &t)).await??
        };
        let sel = Selection::Only(wanted);
        let canaries = dlq::redrive(&mut conn, producer.as_ref(), topic, msgs, &sel, &actor).await?;
        n += print_redriven(&canaries, true);
        canary_verdict(infra, topic, &canaries, dlq_ends, how.canary_timeout).await?;
        wanted = rest;
    }
    let sel = Selection::Only(wanted);
    let out = dlq::redrive(&mut conn, producer.as_ref(), topic, msgs, &sel, &actor).await?;
    n += print_redriven(&out, how.execute);
    if how.execute {
        println!("{n} record(s) redriven.");
    } else {
        println!("Dry run: {n} record(s) would be redriven. Add --execute to republish.");
    }
    Ok(())
}

/// One line per record; how many were (or would be) republished.
fn print_redriven(done: &[Redrive], execute: bool) -> usize {
    let mut n = 0;
    for r in done {
        match r {
            Redrive::NoOriginalTopic { partition, offset } => {
                eprintln!("skipping {partition}:{offset}: no original topic header");
            }
            Redrive::To {
                partition,
                offset,
                topic,
                key,
                error_class,
                ..
            } => {
                n += 1;
                if execute {
                    println!("redrove {partition}:{offset} -> {topic}");
                } else {
                    println!("would redrive {partition}:{offset} -> {topic} (key {key}, {error_class})");
                }
            }
        }
    }
    n
}

/// Waits for the canaries' consumer group and fails (exit 1) if any canary was dead-lettered
/// again or was not consumed in time.
async fn canary_verdict(
    infra: &InfraConfig,
    dlq_topic: &str,
    canaries: &[Redrive],
    dlq_ends: std::collections::HashMap<i32, i64>,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
    let names = infra.names();
    let landed: Vec<(String, i32, i64)> = canaries
        .iter()
        .filter_map(|r| match r {
            Redrive::To {
                topic,
                delivered: Some((p, o)),
                ..
            } => Some((topic.clone(), *p, *o)),
            _ => None,
        })
        .collect();
    let Some(first) = landed.first() else {
        return Ok(());
    };
    let group = if first.0 == names.events_topic() {
        names.projection_group()
    } else if first.0 == names.commands_topic() {
        names.command_group()
    } else {
        anyhow::bail!(
            "no consumer group of this platform reads {}: cannot watch the canaries",
            first.0
        )
    };
    println!(
        "canary: {} record(s) redriven; waiting for {group} to consume them...",
        landed.len()
    );
    let (b, t) = (super::connect::kafka_connection(infra)?, dlq_topic.to_owned());
    let outcome =
        tokio::task::spawn_blocking(move || dlq::await_canaries(&b, &group, &landed, &t, &dlq_ends, timeout)).await??;
    match outcome {
        dlq::CanaryOutcome::Passed => {
            println!("canary passed: none dead-lettered again; redriving the rest");
            Ok(())
        }
        dlq::CanaryOutcome::FailedAgain(failed) => {
            for (p, o, reason) in &failed {
                println!("canary failed again: dead letter {p}:{o}: {reason}");
            }
            anyhow::bail!(
                "canary failed: {} of {} dead-lettered again; nothing else redriven (the cause is not fixed)",
                failed.len(),
                canaries.len()
            )
        }
        dlq::CanaryOutcome::NotConsumed => anyhow::bail!(
            "canary: not consumed within {}; nothing else redriven (is the consumer running? aliexpress status)",
            humantime::format_duration(timeout)
        ),
    }
}
