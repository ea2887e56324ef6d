//! Every Prometheus metric of the platform, registered once in the default registry.
//! Names follow `aliexpress_<subsystem>_<noun>_<unit|total>`.
//!
//! Besides the platform's own, every role that serves `/metrics` exports (registered on the
//! first [`render`]):
//! - `aliexpress_build_info{version, git_sha}` = 1: the crate version, and the commit when the
//!   binary was built with `ALIEXPRESS_GIT_SHA` set (`git_sha` is empty otherwise);
//! - the standard process metrics of the `prometheus` crate's `ProcessCollector`
//!   (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`,
//!   `process_max_fds`, `process_virtual_memory_bytes`, `process_start_time_seconds`,
//!   `process_threads`);
//! - the connection pools' gauges (`aliexpress_pool_*{pool="postgres"|"redis"}`, see
//!   [`super::pools`]).

use prometheus::{
    register_gauge, register_gauge_vec, register_histogram, register_histogram_vec, register_int_counter,
    register_int_counter_vec, register_int_gauge, register_int_gauge_vec, Encoder, Gauge, GaugeVec, Histogram,
    HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, TextEncoder,
};
use std::sync::{LazyLock, Once};

macro_rules! metric {
    ($name:ident: $ty:ty = $reg:ident!($($arg:tt)*)) => {
        /// See the metric's help text.
        pub static $name: LazyLock<$ty> = LazyLock::new(|| {
            $reg!($($arg)*).expect("metric registers")
        });
    };
}

const LATENCY_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const BATCH_BUCKETS: &[f64] = &[1.0, 5.0, 10.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0];

metric!(HTTP_REQUESTS: IntCounterVec = register_int_counter_vec!(
    "aliexpress_http_requests_total", "HTTP requests by method, route and status", &["method", "route", "status"]));
metric!(HTTP_DURATION: HistogramVec = register_histogram_vec!(
    "aliexpress_http_request_duration_seconds", "HTTP request latency by method, route and status",
    &["method", "route", "status"], LATENCY_BUCKETS.to_vec()));

metric!(CATALOG_BATCH_SIZE: HistogramVec = register_histogram_vec!(
    "aliexpress_catalog_batch_size",
    "Products per batched read from Postgres (postgres_read) or write to Redis (redis_write) of the API",
    &["batch"], vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]));

metric!(OUTBOX_PENDING: IntGauge = register_int_gauge!(
    "aliexpress_outbox_pending_rows", "Outbox rows not yet published and not parked"));
metric!(OUTBOX_PARKED: IntGauge = register_int_gauge!(
    "aliexpress_outbox_parked_rows", "Outbox rows parked after too many failed attempts"));
metric!(OUTBOX_OLDEST_AGE: Gauge = register_gauge!(
    "aliexpress_outbox_oldest_pending_age_seconds", "Age of the oldest pending outbox row"));
metric!(OUTBOX_PUBLISHED: IntCounter = register_int_counter!(
    "aliexpress_outbox_published_total", "Outbox rows published to Kafka"));
metric!(OUTBOX_PUBLISH_LATENCY: Histogram = register_histogram!(
    "aliexpress_outbox_publish_latency_seconds", "From outbox row creation to Kafka delivery",
    LATENCY_BUCKETS.to_vec()));
metric!(OUTBOX_BATCH_SIZE: Histogram = register_histogram!(
    "aliexpress_outbox_batch_size", "Rows per published batch", BATCH_BUCKETS.to_vec()));
metric!(OUTBOX_ERRORS: IntCounterVec = register_int_counter_vec!(
    "aliexpress_outbox_errors_total", "Relay errors by kind", &["kind"]));
metric!(OUTBOX_SLICES_OWNED: IntGauge = register_int_gauge!(
    "aliexpress_outbox_slices_owned", "Outbox slices this relay owns"));
metric!(OUTBOX_SLICE_TAKEOVERS: IntCounterVec = register_int_counter_vec!(
    "aliexpress_outbox_slice_takeovers_total",
    "Slices this relay took, by how the previous owner let go: clean, lost_owner (waited out the grace), lost_owner_gone (its process had ended)", &["previous"]));

metric!(COMMANDS_PROCESSED: IntCounterVec = register_int_counter_vec!(
    "aliexpress_commands_processed_total", "Commands consumed by result", &["result"]));

metric!(PROJECTION_EVENTS: IntCounterVec = register_int_counter_vec!(
    "aliexpress_projection_events_total", "Events projected by type and result", &["event_type", "result"]));
metric!(PROJECTION_BULK_DURATION: Histogram = register_histogram!(
    "aliexpress_projection_bulk_duration_seconds", "OpenSearch bulk request latency", LATENCY_BUCKETS.to_vec()));
metric!(PROJECTION_BATCH_SIZE: Histogram = register_histogram!(
    "aliexpress_projection_batch_size", "Events per projection batch", BATCH_BUCKETS.to_vec()));
metric!(PROJECTION_REFRESHES: IntCounterVec = register_int_counter_vec!(
    "aliexpress_projection_refreshes_total",
    "Index refreshes the projection asked for after writes at less than a full batch (result: ok, failed)", &["result"]));
metric!(PROJECTION_VERSION_GAPS: IntCounter = register_int_counter!(
    "aliexpress_projection_version_gaps_total", "Events whose version skipped past stored version + 1"));
metric!(PROJECTION_CACHE_DEFERRED: IntGauge = register_int_gauge!(
    "aliexpress_projection_cache_deferred_products", "Products whose Redis write waits for Redis to answer again"));
metric!(PROJECTION_UNFINISHED: IntCounter = register_int_counter!(
    "aliexpress_projection_unfinished_total", "Messages a projection batch left unfinished (retried later, never committed past)"));
metric!(PROJECTION_PIPELINES: IntGauge = register_int_gauge!(
    "aliexpress_projection_partition_pipelines", "Partition pipelines this projection process runs (one per assigned partition that had messages)"));
metric!(PROJECTION_PARTITION_PAUSES: IntCounter = register_int_counter!(
    "aliexpress_projection_partition_pauses_total", "Times a partition was paused because its pipeline's queue was full"));
metric!(PROJECTION_PARTITIONS_PAUSED: IntGauge = register_int_gauge!(
    "aliexpress_projection_partitions_paused", "Partitions paused because their pipeline's queue is full (a slow partition, held alone)"));
metric!(DLQ_MESSAGES: IntCounterVec = register_int_counter_vec!(
    "aliexpress_dlq_messages_total", "Messages sent to a dead-letter topic", &["topic", "error_class"]));
metric!(CONSUMER_LAG: IntGaugeVec = register_int_gauge_vec!(
    "aliexpress_consumer_lag_messages", "Log end offset minus committed position, of a partition this process is assigned",
    &["group", "topic", "partition"]));
metric!(CONSUMER_COMMITTED_OFFSET: IntGaugeVec = register_int_gauge_vec!(
    "aliexpress_consumer_committed_offset", "Committed offset of a partition this process is assigned", &["group", "topic", "partition"]));
metric!(CONSUMER_CATCH_UP_SECONDS: GaugeVec = register_gauge_vec!(
    "aliexpress_consumer_catch_up_seconds",
    "Seconds until this partition's lag is zero at the rate it drained between the last two lag exports (0 caught up, +Inf not catching up, absent unknown)",
    &["group", "topic", "partition"]));
metric!(CONSUMER_LAG_SECONDS: GaugeVec = register_gauge_vec!(
    "aliexpress_consumer_lag_seconds", "Now minus occurred_at of the last applied event", &["group", "topic", "partition"]));

metric!(HTTP_SHED: IntCounterVec = register_int_counter_vec!(
    "aliexpress_http_shed_total",
    "Requests answered 503 overloaded at once because the bound of requests in flight was reached, by bound (process, worker)",
    &["bound"]));
metric!(HTTP_DEADLINE_EXCEEDED: IntCounterVec = register_int_counter_vec!(
    "aliexpress_http_deadline_exceeded_total",
    "Requests answered 503 because their work outlasted HTTP_REQUEST_DEADLINE_MS, by kind (read, write)",
    &["kind"]));
metric!(HTTP_IN_FLIGHT: IntGauge = register_int_gauge!(
    "aliexpress_http_requests_in_flight", "Admitted API requests in progress (health, metrics, console and docs not counted)"));
metric!(RECONCILE_DRIFT: IntGaugeVec = register_int_gauge_vec!(
    "aliexpress_reconcile_drift",
    "Entries the projection's last scheduled drift check confirmed differ from Postgres, by store (opensearch, redis) and kind (missing, stale, newer, mismatched)",
    &["store", "kind"]));
metric!(RECONCILE_COMPARED: IntGauge = register_int_gauge!(
    "aliexpress_reconcile_compared_products", "Products the last scheduled drift check compared"));
metric!(RECONCILE_LAST_RUN: Gauge = register_gauge!(
    "aliexpress_reconcile_last_run_timestamp_seconds", "When the last scheduled drift check finished (Unix seconds)"));
metric!(RECONCILE_FAILURES: IntCounter = register_int_counter!(
    "aliexpress_reconcile_failures_total", "Scheduled drift checks that could not finish (a store did not answer)"));

metric!(CACHE_BREAKER_STATE: IntGauge = register_int_gauge!(
    "aliexpress_cache_breaker_state", "Redis circuit breaker of the API: 0 closed, 1 open, 2 half-open"));
metric!(CACHE_BREAKER_TRANSITIONS: IntCounterVec = register_int_counter_vec!(
    "aliexpress_cache_breaker_transitions_total", "Redis circuit breaker state changes by new state", &["state"]));
metric!(CACHE_REQUEST_FAILURES: IntCounterVec = register_int_counter_vec!(
    "aliexpress_cache_request_failures_total",
    "Redis calls on the request path that failed, by operation and kind (timeout, error, rejected)",
    &["operation", "kind"]));
metric!(CACHE_MISSED_WRITES: IntGauge = register_int_gauge!(
    "aliexpress_cache_missed_writes_pending",
    "Products whose write-through failed and whose cached entry is not trusted until refreshed"));
metric!(CACHE_NEAR_READS: IntCounterVec = register_int_counter_vec!(
    "aliexpress_cache_near_reads_total",
    "Cache reads of the API answered by the in-process near cache (hit) or sent to Redis (miss)",
    &["result"]));
metric!(CACHE_READ_THROUGH_PUTS: IntCounterVec = register_int_counter_vec!(
    "aliexpress_cache_read_through_puts_total",
    "Products read from Postgres and written back to Redis by the API: carried by a cache read (with_read) or sent on their own (alone)",
    &["sent"]));
metric!(CACHE_NEAR_INVALIDATIONS: IntCounter = register_int_counter!(
    "aliexpress_cache_near_invalidations_total",
    "Keys Redis said changed, on the API's tracked read connections (client-side caching)"));
metric!(CACHE_NEAR_ENTRIES: IntGauge = register_int_gauge!(
    "aliexpress_cache_near_entries", "Products held by the API's near cache, as of its last fill"));
metric!(HTTP_UNAVAILABLE: IntCounterVec = register_int_counter_vec!(
    "aliexpress_http_unavailable_total", "503 answers by the dependency that was unavailable", &["dependency"]));
metric!(HTTP_RATE_LIMITED: IntCounterVec = register_int_counter_vec!(
    "aliexpress_http_rate_limited_total", "429 answers by the limit that was reached (requests, auth_failures)",
    &["limit"]));
metric!(IDEMPOTENCY_KEYS: IntCounterVec = register_int_counter_vec!(
    "aliexpress_idempotency_requests_total",
    "Writes carrying an Idempotency-Key by result (executed, replayed, mismatch, in_flight)", &["result"]));
metric!(IDEMPOTENCY_PRUNED: IntCounter = register_int_counter!(
    "aliexpress_idempotency_pruned_total", "Expired idempotency records deleted"));

metric!(CATEGORY_FANOUT_PRODUCTS: IntCounter = register_int_counter!(
    "aliexpress_category_fanout_products_total",
    "Products given a new category path after a category was created, renamed or moved"));

metric!(BUILD_INFO: IntGaugeVec = register_int_gauge_vec!(
    "aliexpress_build_info", "Always 1: the version and commit of the running binary", &["version", "git_sha"]));

/// The commit the binary was built from, when the build set `ALIEXPRESS_GIT_SHA` (the
/// Dockerfile passes it as a build argument); empty otherwise.
pub const GIT_SHA: &str = match option_env!("ALIEXPRESS_GIT_SHA") {
    Some(s) => s,
    None => "",
};

/// Registers what every exporting role adds to its own metrics: build info, process metrics
/// and the pool gauges. Idempotent; [`render`] calls it.
pub fn register_process_metrics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        BUILD_INFO
            .with_label_values(&[env!("CARGO_PKG_VERSION"), GIT_SHA])
            .set(1);
        let collectors: [Box<dyn prometheus::core::Collector>; 2] = [
            Box::new(prometheus::process_collector::ProcessCollector::for_self()),
            Box::new(super::pools::PoolCollector::new()),
        ];
        for c in collectors {
            if let Err(e) = prometheus::register(c) {
                tracing::warn!(error = %e, "metrics collector not registered");
            }
        }
    });
}

/// The default registry in Prometheus text format.
pub fn render() -> String {
    register_process_metrics();
    let mut buf = Vec::new();
    // Encoding gathered families into a Vec cannot fail.
    let _ = TextEncoder::new().encode(&prometheus::gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_exporting_role_has_build_info_process_and_pool_metrics() {
        // A pool of each kind, as the roles build them (connections open lazily: none here).
        let pg = crate::store::pool::build_pool("postgres://u:p@127.0.0.1:1/db", 3, std::time::Duration::from_secs(1))
            .expect("pool");
        let text = render();
        let build = format!(
            "aliexpress_build_info{{git_sha=\"{GIT_SHA}\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build), "{build} in:\n{text}");
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_start_time_seconds",
            "aliexpress_pool_max_connections{pool=\"postgres\"}",
            "aliexpress_pool_connections{pool=\"postgres\"}",
            "aliexpress_pool_idle_connections{pool=\"postgres\"}",
            "aliexpress_pool_waiting_requests{pool=\"postgres\"}",
        ] {
            assert!(text.contains(name), "{name} is exported");
        }
        drop(pg);
    }
}
