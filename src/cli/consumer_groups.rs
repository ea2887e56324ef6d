//! `aliexpress consumer-groups`: list groups, or describe one with Kafka's columns.
//!
//! Usage: aliexpress consumer-groups list | aliexpress consumer-groups describe --group G [--topic T] [--watch 2]

use std::time::Duration;

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
        /// Refresh every N seconds until interrupted.
        #[arg(long)]
        watch: Option<u64>,
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
        Action::Describe { group, topic, watch } => {
            let topics = if topic.is_empty() {
                infra.names().all_topics()
            } else {
                topic
            };
            loop {
                let (b, g, t) = (b.clone(), group.clone(), topics.clone());
                let (info, rows) = tokio::task::spawn_blocking(move || groups::describe(&b, &g, &t)).await??;
                let text = groups::render(&info, &rows);
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
