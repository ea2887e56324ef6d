//! The command line: one binary, many subcommands sharing one set of modules. Each
//! subcommand's module is wiring only: build config, pools and clients, handle shutdown, call
//! into `worker`, `http` or `ops`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration (including a
//! dependency that cannot be reached at start-up).

pub mod connect;
pub mod consumer_groups;
pub mod dlq;
pub mod migrate;
pub mod outbox;
pub mod process_outbox;
pub mod replay;
pub mod run_product_consumer;
pub mod run_product_event_consumer;
pub mod serve;
pub mod status;

use clap::{Parser, Subcommand};

use crate::config::{ConfigError, InfraConfig, TelemetrySettings};

/// aliexpress: product catalog platform (CQRS + events).
#[derive(Debug, Parser)]
#[command(name = "aliexpress", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// Connection settings (flags or environment variables).
    #[command(flatten)]
    pub infra: InfraConfig,
    /// Logs and span export.
    #[command(flatten)]
    pub telemetry: TelemetrySettings,
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP API: products, commands, search, health, metrics.
    Serve(serve::Args),
    /// Apply database migrations (embedded in the binary).
    Migrate,
    /// Publish pending outbox rows to Kafka (one-shot, or --follow as a daemon).
    ProcessOutbox(process_outbox::Args),
    /// Inspect or retry outbox rows (parked rows after repeated publish failures).
    Outbox(outbox::Args),
    /// Write side: consume product.commands, run them through the aggregate.
    RunProductConsumer(run_product_consumer::Args),
    /// Read side: consume product.events, project into OpenSearch and Redis.
    RunProductEventConsumer(run_product_event_consumer::Args),
    /// Rewind (or move) a consumer group's offsets so projections are rebuilt.
    Replay(replay::Args),
    /// List consumer groups or describe one (offsets and lag).
    ConsumerGroups(consumer_groups::Args),
    /// Inspect and redrive dead-letter topics.
    Dlq(dlq::Args),
    /// One screen: health, outbox backlog, lag per group, DLQ depth.
    Status(status::Args),
}

/// Runs the parsed command line.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    connect::check(&cli.infra)?;
    match cli.command {
        Command::Serve(a) => serve::run(&cli.infra, a).await,
        Command::Migrate => migrate::run(&cli.infra).await,
        Command::ProcessOutbox(a) => process_outbox::run(&cli.infra, a).await,
        Command::Outbox(a) => outbox::run(&cli.infra, a).await,
        Command::RunProductConsumer(a) => run_product_consumer::run(&cli.infra, a).await,
        Command::RunProductEventConsumer(a) => run_product_event_consumer::run(&cli.infra, a).await,
        Command::Replay(a) => replay::run(&cli.infra, a).await,
        Command::ConsumerGroups(a) => consumer_groups::run(&cli.infra, a).await,
        Command::Dlq(a) => dlq::run(&cli.infra, a).await,
        Command::Status(a) => status::run(&cli.infra, a).await,
    }
}

/// A usage error found after parsing (exit code 2).
pub fn usage(setting: &'static str, message: impl Into<String>) -> anyhow::Error {
    ConfigError::new(setting, message).into()
}
