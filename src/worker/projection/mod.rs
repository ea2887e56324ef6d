//! The read-side projection behind `run-product-event-consumer`: reads `product.events` and
//! writes each event's full product state into OpenSearch (bulk, external_gte versioning) and
//! Redis (compare-by-version script).
//!
//! One batch runs through named stages (in `stages`): `decode` (poison to the DLQ) → `index`
//! (OpenSearch, `search::index_step`) beside `fold_for_cache` (Redis, `cache::deferred`) →
//! `commit` (mark finished in the offset ledger, store what it allows, seek back or keep what
//! is unfinished). Every message ends as one
//! [`Disposition`](crate::failure::Disposition):
//! - undecodable, unknown type or schema, or a document OpenSearch refuses for good (mapping
//!   or parse errors, any 4xx; a whole bulk request refused is retried item by item to find
//!   the culprit) → dead-lettered with the reason;
//! - 429, 5xx, timeouts, connection errors → retried with jittered backoff a bounded number
//!   of times (partitions paused, the consumer still polled so it stays in the group); if
//!   still failing, the message is unfinished: not committed past, its partition sought back.
//!
//! The stages are a [`Handler`] of the consumer engine (`worker::engine`): its [`Lane`] keeps
//! the offset ledger, the unfinished messages (they head the next batch, never sought past)
//! and the backoff; `run-product-event-consumer` runs one lane per assigned partition
//! ([`Dispatcher`]), so partitions do not wait for each other.
//! [`process_once`](ProductEventConsumer::process_once) drives one lane over the consumer
//! read as one stream (a rebuild, tests): the same stages, the same lane.
//!
//! Redis is a cache and never holds the index back: states Redis could not take are kept
//! (the newest per product, bounded) and written as soon as it answers again, while
//! OpenSearch keeps up. Until they are written, offsets of their partitions are not committed
//! past the first of them, so a crash meanwhile re-delivers them (effects are versioned, so
//! re-applying is harmless).

use crate::telemetry::trace_context::{TraceParent, TRACEPARENT};
use chrono::Utc;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{Message, OwnedMessage};
use std::sync::Arc;
use std::time::Duration;

use crate::worker::engine::{Dispatcher, Handler, HandlerLanes, Lane, LaneSettings};
use crate::worker::Shutdown;

mod stages;
use crate::bus::dlq::{DlqReason, DlqWriter};
use crate::bus::envelope::decode_event;
use crate::bus::offset_ledger::OffsetLedger;
use crate::cache::deferred::{DeferredWrites, Entry as DeferredEntry};
use crate::cache::ProductCache;
use crate::domain::product::EventEnvelope;
use crate::failure::RetryPolicy;
use crate::search::bulk::{BulkItem, ItemResult};
use crate::search::document::product_document;
use crate::search::index_step::{BulkAnswer, IndexStep};
use crate::search::refresher::Refresher;
use crate::search::SearchClient;
use crate::telemetry::metrics::{
    CONSUMER_LAG_SECONDS, PROJECTION_BATCH_SIZE, PROJECTION_EVENTS, PROJECTION_UNFINISHED,
};

pub use crate::cache::deferred::CACHE_WRITE_BOUND;
pub use crate::search::index_step::refusal_of_documents;

/// Projection tuning.
#[derive(Debug, Clone)]
pub struct ProjectionSettings {
    /// Most events per bulk request.
    pub batch_size: usize,
    /// Longest wait to fill a batch.
    pub batch_wait: Duration,
    /// First retry delay for transient failures.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Retries of a transient failure within one batch before its messages are left
    /// unfinished (sought back and delivered again after a backoff).
    pub retries: usize,
    /// Most products whose Redis write may wait for Redis to come back; past it, the
    /// projection stops taking new messages until Redis answers.
    pub max_deferred_cache: usize,
    /// Log one `indexing_product` line per event.
    pub log_each_event: bool,
    /// Most bulk requests one process has in flight at once, across its partition pipelines
    /// (0: one per pipeline). Bounds what one process asks of OpenSearch's write queue.
    pub max_concurrent_bulks: usize,
    /// At less than a full batch, ask OpenSearch to refresh at most this often, so that writes
    /// are searchable within about this long while the projection keeps up (zero: the index's
    /// `refresh_interval` alone). See `search::refresher`.
    pub refresh_every: Duration,
    /// Benchmark only (0 in production): added to every bulk request, a modelled round trip
    /// to a remote cluster, so that benchmarks can measure scaling that this machine's cores
    /// do not bound.
    pub modelled_bulk_latency: Duration,
}

impl Default for ProjectionSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            batch_wait: Duration::from_millis(50),
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            retries: 5,
            max_deferred_cache: 100_000,
            log_each_event: true,
            max_concurrent_bulks: 0,
            refresh_every: Duration::from_millis(100),
            modelled_bulk_latency: Duration::ZERO,
        }
    }
}

impl ProjectionSettings {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.retry_base, self.retry_max, self.retries, 2)
    }

    fn lane(&self) -> LaneSettings {
        LaneSettings {
            batch_size: self.batch_size,
            batch_wait: self.batch_wait,
            retry: self.retry_policy(),
        }
    }
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProjectionOutcome {
    /// Messages received.
    pub received: usize,
    /// Events applied (written to the index).
    pub applied: usize,
    /// Events already applied (older or equal version present).
    pub already_applied: usize,
    /// Messages dead-lettered.
    pub dead_lettered: usize,
    /// Messages left unfinished (delivered again later).
    pub unfinished: usize,
    /// Version gaps seen.
    pub gaps: usize,
}

/// One decoded event and the index of its message in the batch.
struct Decoded {
    at: usize,
    event: EventEnvelope,
    /// The message's `traceparent` header: its trace id is logged when the event is
    /// projected, and the exported span of the projection continues it.
    trace: Option<TraceParent>,
}

/// The projection's stages: the [`Handler`] each lane runs.
pub struct Projection {
    /// OpenSearch.
    pub search: SearchClient,
    /// Index or alias written to.
    pub index: String,
    /// Redis read model.
    pub cache: ProductCache,
    /// DLQ writer for `dlq.product.events`.
    pub dlq: DlqWriter,
    /// Consumer group (for lag metrics).
    pub group: String,
    /// Tuning.
    pub settings: ProjectionSettings,
    /// Shared by a process's lanes when `max_concurrent_bulks` is set.
    bulk_permits: Option<Arc<tokio::sync::Semaphore>>,
    /// Redis writes waiting for Redis, newest state per product.
    deferred: DeferredWrites,
    /// Refreshes the index after writes at less than a full batch (shared by the lanes).
    refresher: Option<Refresher>,
    /// What the last batch did (read by [`ProductEventConsumer::process_once`]).
    last: ProjectionOutcome,
}

impl Projection {
    /// The stages over these dependencies.
    pub fn new(
        search: SearchClient,
        index: String,
        cache: ProductCache,
        dlq: DlqWriter,
        group: String,
        settings: ProjectionSettings,
    ) -> Self {
        Self {
            refresher: Refresher::new(search.clone(), index.clone(), settings.refresh_every),
            search,
            index,
            cache,
            dlq,
            group,
            deferred: DeferredWrites::new(settings.retry_policy()),
            bulk_permits: (settings.max_concurrent_bulks > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent_bulks))),
            settings,
            last: ProjectionOutcome::default(),
        }
    }

    /// Stages with the same dependencies (and bulk permits) for another lane, nothing waiting.
    fn for_another_lane(&self) -> Self {
        Self {
            search: self.search.clone(),
            index: self.index.clone(),
            cache: self.cache.clone(),
            dlq: self.dlq.clone(),
            group: self.group.clone(),
            settings: self.settings.clone(),
            bulk_permits: self.bulk_permits.clone(),
            deferred: DeferredWrites::new(self.settings.retry_policy()),
            refresher: self.refresher.clone(),
            last: ProjectionOutcome::default(),
        }
    }

    fn retry(&self) -> RetryPolicy {
        self.settings.retry_policy()
    }

    /// One batch through the stages: decode → index beside the Redis writes → what finished.
    async fn project(
        &mut self,
        batch: &[OwnedMessage],
        finished: &mut [bool],
        ledger: &mut OffsetLedger,
        shutdown: &Shutdown,
    ) -> ProjectionOutcome {
        let mut out = ProjectionOutcome {
            received: batch.len(),
            ..Default::default()
        };
        PROJECTION_BATCH_SIZE.observe(batch.len() as f64);
        let events = self.decode(batch, finished, &mut out, shutdown).await;
        // Redis is written while OpenSearch indexes: the two stores are independent (each
        // keeps only the newest version), and nothing is stored before both are done.
        self.fold_for_cache(batch, &events, &mut out, ledger);
        let put = self.deferred.put(&self.cache, false);
        let (_indexed, put) = tokio::join!(self.index(batch, events, finished, &mut out, shutdown), async move {
            match put {
                Some(put) => Some(put.await),
                None => None,
            }
        });
        if let Some(r) = &self.refresher {
            r.after_batch(out.applied, batch.len() >= self.settings.batch_size);
        }
        if let Some((taken, result)) = put {
            let (gaps, written) = self.deferred.after_put(taken, result);
            out.gaps += gaps;
            release(ledger, &written);
        }
        out.unfinished = finished.iter().filter(|f| !**f).count();
        PROJECTION_UNFINISHED.inc_by(out.unfinished as u64);
        out
    }
}

impl Handler for Projection {
    async fn handle<'a>(
        &'a mut self,
        batch: &'a [OwnedMessage],
        done: &'a mut [bool],
        ledger: &'a mut OffsetLedger,
        shutdown: &'a Shutdown,
    ) -> anyhow::Result<()> {
        self.last = self.project(batch, done, ledger, shutdown).await;
        Ok(())
    }

    async fn before_batch<'a>(&'a mut self, ledger: &'a mut OffsetLedger) -> bool {
        self.flush_deferred(false, ledger).await;
        // Redis has been away for long: hold the stream rather than grow without bound.
        self.deferred.len() < self.settings.max_deferred_cache
    }

    async fn on_stop<'a>(&'a mut self, ledger: &'a mut OffsetLedger) {
        self.flush_deferred(true, ledger).await;
        // Whatever still waits for Redis is delivered again to the partition's next owner
        // (its offsets stay held, so they are not stored).
        self.deferred.clear();
    }
}

/// Releases the offsets held by deferred writes Redis took.
fn release(ledger: &mut OffsetLedger, written: &[DeferredEntry]) {
    for e in written {
        ledger.release(&e.topic, e.partition, e.first_offset);
    }
}

/// The projection over a subscribed consumer: one lane of [`Projection`] stages.
pub struct ProductEventConsumer {
    /// Subscribed consumer.
    pub consumer: Arc<StreamConsumer>,
    lane: Lane<Projection>,
}

impl ProductEventConsumer {
    /// A projector over a subscribed consumer.
    pub fn new(
        consumer: Arc<StreamConsumer>,
        search: SearchClient,
        index: String,
        cache: ProductCache,
        dlq: DlqWriter,
        group: String,
        settings: ProjectionSettings,
    ) -> Self {
        let lane_settings = settings.lane();
        let stages = Projection::new(search, index, cache, dlq, group, settings);
        Self {
            lane: Lane::new(stages, consumer.clone(), lane_settings),
            consumer,
        }
    }

    /// The stages (their dependencies and settings).
    pub fn projection(&self) -> &Projection {
        &self.lane.handler
    }

    /// The stages, to change a dependency or setting.
    pub fn projection_mut(&mut self) -> &mut Projection {
        &mut self.lane.handler
    }

    /// Products whose Redis write is waiting for Redis.
    pub fn deferred_cache_writes(&self) -> usize {
        self.lane.handler.deferred.len()
    }

    /// Receives one batch from the consumer read as one stream (waiting up to `wait` for its
    /// first message; messages left unfinished by the last batch head it) and projects it.
    pub async fn process_once(
        &mut self,
        wait: Duration,
        shutdown: &Shutdown,
    ) -> Result<ProjectionOutcome, anyhow::Error> {
        self.lane.handler.last = ProjectionOutcome::default();
        let batch_size = self.lane.handler.settings.batch_size;
        let p = self.lane.poll(batch_size, wait, shutdown).await?;
        let mut out = self.lane.handler.last;
        out.received = p.received;
        out.unfinished = p.unfinished;
        Ok(out)
    }

    /// Publishes consumer lag of the partitions assigned to this process as metrics (see
    /// [`export_lag`](crate::bus::consumer::export_lag)).
    pub async fn update_lag(&self, topic: &str) {
        let group = &self.lane.handler.group;
        crate::bus::consumer::export_lag(self.consumer.clone(), |c| c, group, topic).await;
    }

    /// Consumes until shutdown with one lane per assigned partition (see [`Dispatcher`]);
    /// commits what was stored and leaves the group.
    pub async fn run_until_stopped(self, topic: &str, shutdown: Shutdown) -> Result<(), anyhow::Error> {
        let template = self.lane.handler;
        tracing::info!(topic, group = %template.group, index = %template.index,
            "Product Event Consumer started and polling Kafka...");
        let lanes = HandlerLanes {
            consumer: self.consumer.clone(),
            settings: template.settings.lane(),
            group: template.group.clone(),
            make: move || template.for_another_lane(),
        };
        let batch_size = lanes.settings.batch_size;
        let result = Dispatcher::new(lanes, self.consumer, batch_size)
            .run(topic, shutdown)
            .await;
        tracing::info!("Product Event Consumer stopped");
        result
    }
}
