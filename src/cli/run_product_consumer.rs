//! `aliexpress run-product-consumer`: the write side's command consumer.
//!
//! Usage: aliexpress run-product-consumer [--metrics-bind 127.0.0.1:9465]

use crate::bus::dlq::DlqWriter;
use crate::bus::producer::ProducerSettings;
use crate::config::InfraConfig;
use crate::failure::RetryPolicy;
use crate::worker::commands::ProductConsumer;
use crate::worker::Shutdown;

/// Flags of `run-product-consumer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Consumer group (default: product-command-consumer-group).
    #[arg(long, env = "PRODUCT_COMMAND_GROUP")]
    pub group: Option<String>,
    /// NOTIFY the outbox relay on every applied command.
    #[arg(long, env = "OUTBOX_NOTIFY", default_value_t = true, action = clap::ArgAction::Set)]
    pub outbox_notify: bool,
    /// Serve Prometheus metrics here (e.g. 127.0.0.1:9465); unset or empty: none. (The old
    /// name --metrics-addr / METRICS_ADDR still works.)
    #[arg(long, visible_alias = "metrics-addr", env = "METRICS_BIND")]
    pub metrics_bind: Option<String>,
}

/// Runs the command consumer until SIGINT/SIGTERM.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    let names = infra.names();
    let pool = super::connect::database(infra).await?;
    let producer = super::connect::kafka(infra, &ProducerSettings::default()).await?;
    let group = a.group.unwrap_or_else(|| names.command_group());
    let c = super::connect::subscribed_consumer(infra, &group, &names.commands_topic()).await?;
    super::connect::metrics_server(super::worker_metrics_bind(a.metrics_bind.as_deref()).as_deref())?;
    crate::telemetry::metrics::COMMANDS_PROCESSED
        .with_label_values(&["applied"])
        .inc_by(0);
    let worker = ProductConsumer::new(
        c,
        pool,
        DlqWriter::new(producer, names.commands_dlq_topic(), group.clone()),
        names.events_topic(),
        a.outbox_notify,
        RetryPolicy::default(),
    );
    let shutdown = Shutdown::new();
    shutdown.install_signal_handlers();
    // Lag of the partitions this member owns (`aliexpress_consumer_lag_messages`) is exported
    // by the engine's dispatcher.
    worker.run_until_stopped(&names.commands_topic(), shutdown).await
}
