//! `aliexpress consumer_groups` (see docs/RUNBOOK.md).

use crate::config::InfraConfig;

/// Flags of `consumer_groups`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Not available yet.
pub async fn run(_infra: &InfraConfig, _a: Args) -> anyhow::Result<()> {
    Err(super::usage("consumer_groups", "not available yet"))
}
