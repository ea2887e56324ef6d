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
//! `run-product-event-consumer` runs one such pipeline per assigned partition
//! ([`Dispatcher`](crate::worker::engine::Dispatcher)): partitions do not
//! wait for each other, and a pipeline keeps its unfinished messages and retries them
//! (instead of seeking back) while its partition is paused once its queue is full.
//! [`process_once`](ProductEventConsumer::process_once) reads the consumer as one stream
//! (a rebuild, tests) and seeks back instead.
//!
//! Redis is a cache and never holds the index back: states Redis could not take are kept
//! (the newest per product, bounded) and written as soon as it answers again, while
//! OpenSearch keeps up. Until they are written, offsets of their partitions are not committed
//! past the first of them, so a crash meanwhile re-delivers them (effects are versioned, so
//! re-applying is harmless).

use crate::telemetry::trace_context::{TraceParent, TRACEPARENT};
use chrono::Utc;
use futures::future::BoxFuture;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::Offset;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::worker::engine::{Dispatcher, Lanes};
use crate::worker::Shutdown;

mod feed;
mod stages;
use crate::bus::dlq::{DlqReason, DlqWriter};
use crate::bus::envelope::decode_event;
use crate::bus::offset_ledger::{self, OffsetLedger};
use crate::cache::deferred::{DeferredWrites, Entry as DeferredEntry};
use crate::cache::ProductCache;
use crate::domain::product::EventEnvelope;
use crate::failure::RetryPolicy;
use crate::search::bulk::{BulkItem, ItemResult};
use crate::search::document::product_document;
use crate::search::index_step::{BulkAnswer, IndexStep};
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
    /// Benchmark only (0 in production): added to every bulk request, a modelled round trip
    /// to a remote cluster, so that benchmarks can measure scaling that this machine's cores
    /// do not bound.
    pub modelled_bulk_latency: Duration,
}

impl Default for ProjectionSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            batch_wait: Duration::from_millis(100),
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            retries: 5,
            max_deferred_cache: 100_000,
            log_each_event: true,
            max_concurrent_bulks: 0,
            modelled_bulk_latency: Duration::ZERO,
        }
    }
}

impl ProjectionSettings {
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::new(self.retry_base, self.retry_max, self.retries, 2)
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

/// Where a projector's messages come from.
enum Feed {
    /// The consumer itself, every assigned partition in one stream. Unfinished messages are
    /// sought back to and delivered again.
    Consumer,
    /// One partition's messages, handed over by the partition dispatcher. Unfinished messages
    /// stay in `carry` and head the next batch (no seek: the dispatcher owns the stream).
    Partition {
        rx: mpsc::Receiver<OwnedMessage>,
        /// The dispatcher closed the queue (partition revoked, or shutdown) and it is empty.
        closed: bool,
    },
}

/// Dependencies of the projection.
pub struct ProductEventConsumer {
    /// Subscribed consumer.
    pub consumer: Arc<StreamConsumer>,
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
    retry: RetryPolicy,
    /// Shared by a process's pipelines when `max_concurrent_bulks` is set.
    bulk_permits: Option<Arc<tokio::sync::Semaphore>>,
    feed: Feed,
    /// Messages received while paused (or left unfinished by a partition pipeline), processed
    /// in the next batch.
    carry: Vec<OwnedMessage>,
    /// Redis writes waiting for Redis, newest state per product.
    deferred: DeferredWrites,
    /// Which delivered offsets are finished or held by a deferred Redis write: how far each
    /// partition may be stored.
    ledger: OffsetLedger,
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
        let retry = settings.retry_policy();
        Self {
            consumer,
            search,
            index,
            cache,
            dlq,
            group,
            deferred: DeferredWrites::new(retry.clone()),
            retry,
            bulk_permits: (settings.max_concurrent_bulks > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent_bulks))),
            settings,
            feed: Feed::Consumer,
            carry: Vec::new(),
            ledger: OffsetLedger::new(),
        }
    }

    /// A pipeline with this projector's dependencies fed by `rx` (one partition's messages).
    fn partition_pipeline(&self, rx: mpsc::Receiver<OwnedMessage>) -> Self {
        let mut p = Self::new(
            self.consumer.clone(),
            self.search.clone(),
            self.index.clone(),
            self.cache.clone(),
            self.dlq.clone(),
            self.group.clone(),
            self.settings.clone(),
        );
        p.feed = Feed::Partition { rx, closed: false };
        p.bulk_permits.clone_from(&self.bulk_permits);
        p
    }

    /// Products whose Redis write is waiting for Redis.
    pub fn deferred_cache_writes(&self) -> usize {
        self.deferred.len()
    }

    /// Receives one batch (waiting up to `wait` for its first message) and projects it.
    pub async fn process_once(
        &mut self,
        wait: Duration,
        shutdown: &Shutdown,
    ) -> Result<ProjectionOutcome, anyhow::Error> {
        self.flush_deferred(false).await;
        if self.deferred.len() >= self.settings.max_deferred_cache {
            // Redis has been away for long: hold the stream rather than grow without bound.
            shutdown.sleep(wait).await;
            return Ok(ProjectionOutcome::default());
        }
        let batch = self.collect_batch(wait).await;
        let mut out = ProjectionOutcome {
            received: batch.len(),
            ..Default::default()
        };
        if batch.is_empty() {
            return Ok(out);
        }
        PROJECTION_BATCH_SIZE.observe(batch.len() as f64);
        for m in &batch {
            self.ledger.deliver(m.topic(), m.partition(), m.offset());
        }
        let mut finished = vec![false; batch.len()];
        let events = self.decode(&batch, &mut finished, &mut out, shutdown).await;
        // Redis is written while OpenSearch indexes: the two stores are independent (each
        // keeps only the newest version), and nothing is committed before both are done.
        self.fold_for_cache(&batch, &events, &mut out);
        let put = self.deferred.put(&self.cache, false);
        let (_indexed, put) = tokio::join!(
            self.index(&batch, events, &mut finished, &mut out, shutdown),
            async move {
                match put {
                    Some(put) => Some(put.await),
                    None => None,
                }
            }
        );
        if let Some((taken, result)) = put {
            let (gaps, written) = self.deferred.after_put(taken, result);
            out.gaps += gaps;
            self.release(&written);
        }
        out.unfinished = finished.iter().filter(|f| !**f).count();
        PROJECTION_UNFINISHED.inc_by(out.unfinished as u64);
        self.commit(&batch, &finished);
        Ok(out)
    }

    /// Stage 4: marks the finished messages in the ledger; a partition pipeline keeps its
    /// unfinished messages to head its next batch, a projector reading the consumer seeks
    /// their partitions back to the first of them (dropping carried messages past it). Then
    /// stores offsets (see [`store_progress`](Self::store_progress)).
    #[tracing::instrument(level = "debug", name = "commit", skip_all)]
    fn commit(&mut self, batch: &[OwnedMessage], finished: &[bool]) {
        let mut unfinished: HashMap<(String, i32), i64> = HashMap::new();
        for (m, f) in batch.iter().zip(finished) {
            if *f {
                self.ledger.finish(m.topic(), m.partition(), m.offset());
            } else {
                let e = unfinished
                    .entry((m.topic().to_owned(), m.partition()))
                    .or_insert(m.offset());
                *e = (*e).min(m.offset());
            }
        }
        if matches!(self.feed, Feed::Partition { .. }) && !unfinished.is_empty() {
            // Kept and tried again first in the next batch; what follows it in the partition
            // is finished (or kept too), so nothing needs delivering again.
            let mut kept: Vec<OwnedMessage> = batch
                .iter()
                .zip(finished)
                .filter(|(_, f)| !**f)
                .map(|(m, _)| m.clone())
                .collect();
            kept.append(&mut self.carry);
            self.carry = kept;
        } else {
            for ((topic, partition), offset) in unfinished {
                self.carry
                    .retain(|m| !(m.topic() == topic && m.partition() == partition && m.offset() >= offset));
                if let Err(e) = self
                    .consumer
                    .seek(&topic, partition, Offset::Offset(offset), Duration::from_secs(5))
                {
                    // Revoked meanwhile: the new owner starts from the committed offset, which
                    // is not past this message.
                    tracing::warn!(kafka.partition = partition, kafka.offset = offset, error = %e, "seek back failed");
                }
            }
        }
        self.store_progress();
    }

    /// Stores, per assigned partition, what the ledger says is safe: never past an unfinished
    /// message or one whose Redis write is still deferred.
    fn store_progress(&mut self) {
        offset_ledger::store_safe(&*self.consumer, &mut self.ledger);
    }

    /// Publishes consumer lag of the partitions assigned to this process as metrics (see
    /// [`export_lag`](crate::bus::consumer::export_lag)).
    pub async fn update_lag(&self, topic: &str) {
        crate::bus::consumer::export_lag(self.consumer.clone(), |c| c, &self.group, topic).await;
    }

    /// Consumes until shutdown with one pipeline per assigned partition (see
    /// [`Dispatcher`](crate::worker::engine::Dispatcher)); commits what was
    /// stored and leaves the group.
    pub async fn run_until_stopped(self, topic: &str, shutdown: Shutdown) -> Result<(), anyhow::Error> {
        tracing::info!(topic, group = %self.group, index = %self.index,
            "Product Event Consumer started and polling Kafka...");
        let (consumer, batch_size) = (self.consumer.clone(), self.settings.batch_size);
        let result = Dispatcher::new(self, consumer, batch_size).run(topic, shutdown).await;
        tracing::info!("Product Event Consumer stopped");
        result
    }

    /// A partition pipeline's loop: batches from its queue until the queue is closed and
    /// drained or shutdown fires. After a batch that left messages unfinished, waits a
    /// growing, jittered delay (its queue fills meanwhile and the partition is paused); then
    /// writes what waits for Redis and stores its progress.
    async fn run_partition(mut self, shutdown: Shutdown) -> Result<(), anyhow::Error> {
        let mut backoff = self.retry.backoff();
        while !shutdown.is_triggered() {
            let out = self.process_once(Duration::from_millis(500), &shutdown).await?;
            if self.feed_closed() && (out.received == 0 || out.unfinished > 0) {
                // Revoked (or shutting down): what is unfinished goes to the next owner.
                break;
            }
            if out.unfinished > 0 {
                let d = backoff.next().unwrap_or(self.settings.retry_max);
                tracing::warn!(
                    unfinished = out.unfinished,
                    retry_in_ms = d.as_millis() as u64,
                    "events left unfinished; backing off"
                );
                shutdown.sleep(d).await;
            } else if out.received > 0 {
                backoff = self.retry.backoff();
            }
        }
        self.flush_deferred(true).await;
        self.store_progress();
        // Whatever still waits for Redis is delivered again to the partition's next owner.
        self.deferred.clear();
        Ok(())
    }
}

impl Lanes for ProductEventConsumer {
    fn run_lane(&self, rx: mpsc::Receiver<OwnedMessage>, shutdown: Shutdown) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(self.partition_pipeline(rx).run_partition(shutdown))
    }

    fn update_lag<'a>(&'a self, topic: &'a str) -> BoxFuture<'a, ()> {
        Box::pin(ProductEventConsumer::update_lag(self, topic))
    }
}
