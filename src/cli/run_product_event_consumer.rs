//! `aliexpress run-product-event-consumer`: the read-side projection into OpenSearch and Redis.
//!
//! Usage: aliexpress run-product-event-consumer [--batch-size 500] [--metrics-bind 127.0.0.1:9466]
//! [--reconcile-every 60s --reconcile-sample 200]

use std::sync::Arc;
use std::time::Duration;

use crate::bus::dlq::DlqWriter;
use crate::bus::producer::ProducerSettings;
use crate::config::InfraConfig;
use crate::ops::reconcile::ReconcileDeps;
use crate::search::index;
use crate::worker::drift_watch::DriftWatch;
use crate::worker::projection::{ProductEventConsumer, ProjectionSettings};
use crate::worker::Shutdown;

/// Flags of `run-product-event-consumer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Consumer group (default: product-event-projection-group).
    #[arg(long, env = "PRODUCT_PROJECTION_GROUP")]
    pub group: Option<String>,
    /// Most events per bulk request.
    #[arg(long, env = "PROJECTION_BATCH_SIZE", default_value_t = 500)]
    pub batch_size: usize,
    /// Longest wait to fill a batch after its first event, e.g. 50ms (docs/BENCHMARKS.md,
    /// freshness: 25 ms made more, smaller bulks than a saturated box could index at 500/s).
    #[arg(long, env = "PROJECTION_BATCH_WAIT", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub batch_wait: Duration,
    /// At less than a full batch, refresh the index at most this often so that writes are
    /// searchable within about this long (0: the index's refresh interval alone), e.g. 100ms.
    #[arg(long, env = "PROJECTION_REFRESH_EVERY", default_value = "100ms", value_parser = humantime::parse_duration)]
    pub refresh_every: Duration,
    /// Index or alias to write (default: the products alias).
    #[arg(long, env = "PROJECTION_INDEX")]
    pub index: Option<String>,
    /// Most bulk requests this process has in flight at once across its partition pipelines
    /// (0: one per partition it owns).
    #[arg(long, env = "PROJECTION_MAX_CONCURRENT_BULKS", default_value_t = 0)]
    pub max_concurrent_bulks: usize,
    /// Do not log one indexing_product line per event.
    #[arg(long, env = "PROJECTION_QUIET_EVENTS")]
    pub quiet_events: bool,
    /// Serve Prometheus metrics here (e.g. 127.0.0.1:9466); unset or empty: none. (The old
    /// name --metrics-addr / METRICS_ADDR still works.)
    #[arg(long, visible_alias = "metrics-addr", env = "METRICS_BIND")]
    pub metrics_bind: Option<String>,
    /// Compare a sample of products with OpenSearch and Redis this often (e.g. 60s) and export
    /// the drift as aliexpress_reconcile_drift; 0s: never (the default; `make up` turns it on).
    #[arg(long, env = "RECONCILE_EVERY", default_value = "0s", value_parser = humantime::parse_duration)]
    pub reconcile_every: Duration,
    /// Products each scheduled drift check compares.
    #[arg(long, env = "RECONCILE_SAMPLE", default_value_t = 200, value_parser = clap::value_parser!(i64).range(1..=100_000))]
    pub reconcile_sample: i64,
    /// Wait before a second look at what differed (a product written a moment ago is not
    /// projected yet: only what still differs is drift).
    #[arg(long, env = "RECONCILE_GRACE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub reconcile_grace: Duration,
}

/// Runs the projection until SIGINT/SIGTERM.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    let names = infra.names();
    let search = super::connect::search(infra).await?;
    let cache = super::connect::cache(infra).await?;
    let producer = super::connect::kafka(infra, &ProducerSettings::default()).await?;
    let target = match a.index {
        Some(i) => i,
        None => {
            let alias = names.index_alias();
            index::ensure_alias(&search, &alias, index::IndexLayout::from_settings(&infra.opensearch)).await?;
            alias
        }
    };
    let group = a.group.unwrap_or_else(|| names.projection_group());
    let c = super::connect::subscribed_consumer(infra, &group, &names.events_topic()).await?;
    super::connect::metrics_server(super::worker_metrics_bind(a.metrics_bind.as_deref()).as_deref())?;
    let settings = ProjectionSettings {
        batch_size: a.batch_size.max(1),
        batch_wait: a.batch_wait,
        log_each_event: !a.quiet_events,
        max_concurrent_bulks: a.max_concurrent_bulks,
        refresh_every: a.refresh_every,
        ..Default::default()
    };
    let p = ProductEventConsumer::new(
        Arc::new(c),
        search,
        target,
        cache,
        DlqWriter::new(producer, names.events_dlq_topic(), group.clone()),
        group,
        settings,
    );
    let shutdown = Shutdown::new();
    shutdown.install_signal_handlers();
    if !a.reconcile_every.is_zero() {
        let (pool, cache, search) = super::connect::ops_clients(infra, Duration::from_secs(10))?;
        let deps = ReconcileDeps {
            pool,
            cache,
            search,
            names: names.clone(),
        };
        let watch = DriftWatch {
            every: a.reconcile_every,
            sample: a.reconcile_sample,
            grace: a.reconcile_grace,
        };
        tokio::spawn(watch.run(deps, shutdown.clone()));
    }
    p.run_until_stopped(&names.events_topic(), shutdown).await
}
