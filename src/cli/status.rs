//! `aliexpress status` (see docs/RUNBOOK.md).

use crate::config::InfraConfig;

/// Flags of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Not available yet.
pub async fn run(_infra: &InfraConfig, _a: Args) -> anyhow::Result<()> {
    Err(super::usage("status", "not available yet"))
}
