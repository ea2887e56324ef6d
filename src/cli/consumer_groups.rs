//! `aliexpress consumer-groups`: list groups, or describe one with Kafka's columns.
//!
//! Usage: aliexpress consumer-groups list | aliexpress consumer-groups describe --group G [--topic T] [--watch 2]
//! [--eta-sample 2]
//!
//! `describe` samples twice `--eta-sample` seconds apart (or, with `--watch`, compares with the
//! previous refresh) and adds each partition's catch-up ETA and one line per topic: when the
//! slowest partition will be at zero lag, or "not catching up" when its lag grows.

use std::time::{Duration, Instant};

use crate::config::InfraConfig;
use crate::ops::groups;

/// Flags of `consumer-groups`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Every consumer group.
    List,
    /// Offsets, log end and lag per partition, and the owning members.
    Describe {
        /// Group to describe.
        #[arg(long)]
        group: String,
        /// Topics to look at (default: the platform's topics).
        #[arg(long)]
        topic: Vec<String>,
        /// Refresh every N seconds until interrupted (each refresh's ETA from the one before).
        #[arg(long)]
        watch: Option<u64>,
        /// Seconds between the two samples the ETA column compares (0: one sample, no ETA).
        #[arg(long, default_value_t = 2)]
        eta_sample: u64,
    },
}

/// Runs the action.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    let b = super::connect::kafka_connection(infra)?;
    match a.action {
        Action::List => {
            for g in tokio::task::spawn_blocking(move || groups::list(&b)).await?? {
                println!("{g}");
            }
        }
        Action::Describe {
            group,
            topic,
            watch,
            eta_sample,
        } => {
            let topics = if topic.is_empty() {
                infra.names().all_topics()
            } else {
                topic
            };
            let describe = || {
                let (b, g, t) = (b.clone(), group.clone(), topics.clone());
                async move {
                    let r = tokio::task::spawn_blocking(move || groups::describe(&b, &g, &t)).await??;
                    anyhow::Ok((r.1, r.0, Instant::now()))
                }
            };
            let mut before: Option<(Vec<groups::DescribeRow>, Instant)> = None;
            if eta_sample > 0 {
                let (rows, _, at) = describe().await?;
                before = Some((rows, at));
                tokio::time::sleep(Duration::from_secs(eta_sample)).await;
            }
            loop {
                let (rows, info, at) = describe().await?;
                let catch_up = before
                    .as_ref()
                    .map(|(b, t)| groups::catch_up_by_topic(b, &rows, at - *t));
                let text = groups::render(&info, &rows, catch_up.as_deref());
                if eta_sample > 0 {
                    before = Some((rows, at));
                }
                match watch {
                    Some(secs) => {
                        print!(
                            "\x1b[2J\x1b[H{}  (every {secs}s, Ctrl-C to stop)\n{text}",
                            chrono::Utc::now().format("%H:%M:%S")
                        );
                        tokio::time::sleep(Duration::from_secs(secs.max(1))).await;
                    }
                    None => {
                        print!("{text}");
                        break;
                    }
                }
            }
        }
    }
    Ok(())
}
