//! The read-side projection behind `run-product-event-consumer`: reads `product.events` and
//! writes each event's full product state into OpenSearch (bulk, external_gte versioning) and
//! Redis (compare-by-version script).
//!
//! One batch runs through named stages: [`decode`](ProductEventConsumer::decode) (poison to the DLQ) →
//! [`index`](ProductEventConsumer::index) (OpenSearch bulk) → [`cache`](ProductEventConsumer::cache) (Redis) →
//! [`commit`](ProductEventConsumer::commit) (store offsets, seek back). Every message ends as one
//! [`Disposition`](crate::failure::Disposition):
//! - undecodable, unknown type or schema, or a document OpenSearch refuses for good (mapping
//!   or parse errors, any 4xx; a whole bulk request refused is retried item by item to find
//!   the culprit) → dead-lettered with the reason;
//! - 429, 5xx, timeouts, connection errors → retried with jittered backoff a bounded number
//!   of times (partitions paused, the consumer still polled so it stays in the group); if
//!   still failing, the message is unfinished: not committed past, its partition sought back.
//!
//! `run-product-event-consumer` runs one such pipeline per assigned partition
//! ([`PartitionPipelines`](super::partition_pipelines::PartitionPipelines)): partitions do not
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
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use rdkafka::Offset;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use uuid::Uuid;

use super::Shutdown;
use crate::bus::consumer::lag_blocking;
use crate::bus::dlq::{DlqReason, DlqWriter};
use crate::bus::envelope::decode_event;
use crate::bus::offset_ledger::{self, OffsetLedger};
use crate::cache::product_cache::Writer;
use crate::cache::ProductCache;
use crate::domain::product::{EventEnvelope, Product};
use crate::failure::{Classify, FailureClass, RetryPolicy};
use crate::search::bulk::{index_items, BulkItem, ItemResult};
use crate::search::document::product_document;
use crate::search::SearchClient;
use crate::telemetry::metrics::{
    CONSUMER_LAG, CONSUMER_LAG_SECONDS, PROJECTION_BATCH_SIZE, PROJECTION_BULK_DURATION, PROJECTION_CACHE_DEFERRED,
    PROJECTION_EVENTS, PROJECTION_UNFINISHED, PROJECTION_VERSION_GAPS,
};

/// True when OpenSearch refused a bulk request as a whole for what it carries (400 bad
/// request, 413 too large): a document's fault, found by sending items one by one. Other
/// refusals (401, 403, 404, ...) are about the endpoint, credentials or index.
pub fn refusal_of_documents(e: &crate::search::SearchError) -> bool {
    matches!(e, crate::search::SearchError::Status { status: 400 | 413, .. })
}

/// Longest a Redis write of the projection may take before it is deferred.
pub const CACHE_WRITE_BOUND: Duration = Duration::from_millis(500);

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
    /// Added to every bulk request (0 in production): a modelled round trip to a remote
    /// cluster, so that benchmarks can measure scaling that this machine's cores do not bound.
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

/// Redis writes waiting for Redis, newest state per product.
type Deferred = HashMap<Uuid, DeferredCache>;

/// What a Redis write of the deferred states answered, per state.
type PutResult = Result<Vec<crate::cache::product_cache::PutOutcome>, crate::cache::CacheError>;

/// A Redis write waiting for Redis: the newest state of one product and where it came from.
#[derive(Debug, Clone)]
struct DeferredCache {
    state: Product,
    /// Lowest version folded into this entry (for gap detection).
    first_version: i64,
    topic: String,
    partition: i32,
    /// Lowest offset folded into this entry: its partition is not committed past it.
    first_offset: i64,
    event_type: String,
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
    /// Deferred Redis writes last added to the process-wide gauge.
    deferred_reported: usize,
    /// Redis writes waiting for Redis, by product.
    deferred: Deferred,
    /// No Redis attempt before this instant (after a failure), so the index is not slowed.
    cache_retry_at: Option<Instant>,
    cache_backoff: Box<dyn Iterator<Item = Duration> + Send + Sync>,
    /// Set by `bulk` when OpenSearch refused a whole multi-item request.
    whole_request_refused: bool,
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
            cache_backoff: Box::new(retry.backoff()),
            retry,
            bulk_permits: (settings.max_concurrent_bulks > 0)
                .then(|| Arc::new(tokio::sync::Semaphore::new(settings.max_concurrent_bulks))),
            settings,
            feed: Feed::Consumer,
            carry: Vec::new(),
            deferred_reported: 0,
            deferred: HashMap::new(),
            cache_retry_at: None,
            whole_request_refused: false,
            ledger: OffsetLedger::new(),
        }
    }

    /// A pipeline with this projector's dependencies fed by `rx` (one partition's messages).
    pub(super) fn partition_pipeline(&self, rx: mpsc::Receiver<OwnedMessage>) -> Self {
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

    /// The next message within `deadline`, from the consumer or the partition queue.
    async fn next_message(&mut self, deadline: Instant) -> Option<OwnedMessage> {
        match &mut self.feed {
            Feed::Consumer => loop {
                match tokio::time::timeout_at(deadline.into(), self.consumer.recv()).await {
                    Err(_) => return None,
                    // Brokers unreachable and the like: librdkafka reconnects; keep polling.
                    Ok(Err(e)) => tracing::warn!(error = %e, "kafka consumer error"),
                    Ok(Ok(m)) => return Some(m.detach()),
                }
            },
            Feed::Partition { rx, closed } => match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
                Err(_) => None,
                Ok(None) => {
                    *closed = true;
                    None
                }
                Ok(Some(m)) => Some(m),
            },
        }
    }

    /// True once a partition pipeline's queue is closed and drained.
    pub(super) fn feed_closed(&self) -> bool {
        matches!(self.feed, Feed::Partition { closed: true, .. })
    }

    async fn collect_batch(&mut self, first_wait: Duration) -> Vec<OwnedMessage> {
        let mut batch = std::mem::take(&mut self.carry);
        if batch.is_empty() {
            match self.next_message(Instant::now() + first_wait).await {
                Some(m) => batch.push(m),
                None => return batch,
            }
        }
        let deadline = Instant::now() + self.settings.batch_wait;
        while batch.len() < self.settings.batch_size {
            match self.next_message(deadline).await {
                Some(m) => batch.push(m),
                None => break,
            }
        }
        batch
    }

    /// Sleeps `d`; a projector reading the consumer keeps it polled meanwhile (so it stays in
    /// the group) and keeps what still arrives for the next batch (a partition pipeline's
    /// queue simply fills, and its dispatcher pauses the partition). True when shutdown fired.
    async fn wait_polling(&mut self, d: Duration, shutdown: &Shutdown) -> bool {
        if matches!(self.feed, Feed::Partition { .. }) {
            return shutdown.sleep(d).await;
        }
        let until = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(until) => return shutdown.is_triggered(),
                () = shutdown.wait() => return true,
                m = self.consumer.recv() => {
                    if let Ok(m) = m { self.carry.push(m.detach()); }
                }
            }
        }
    }

    fn set_paused(&self, paused: bool) {
        if matches!(self.feed, Feed::Partition { .. }) {
            return;
        }
        if let Ok(a) = self.consumer.assignment() {
            let r = if paused {
                self.consumer.pause(&a)
            } else {
                self.consumer.resume(&a)
            };
            if let Err(e) = r {
                tracing::debug!(error = %e, paused, "pause/resume failed");
            }
        }
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
        let put = self.put_deferred(false);
        let (_indexed, put) = tokio::join!(
            self.index(&batch, events, &mut finished, &mut out, shutdown),
            async move {
                match put {
                    Some(put) => Some(put.await),
                    None => None,
                }
            }
        );
        if let Some((written, result)) = put {
            out.gaps += self.after_put(written, result);
        }
        out.unfinished = finished.iter().filter(|f| !**f).count();
        PROJECTION_UNFINISHED.inc_by(out.unfinished as u64);
        self.commit(&batch, &finished);
        Ok(out)
    }

    /// Stage 1: decode; poison goes to the DLQ.
    #[tracing::instrument(level = "debug", name = "decode", skip_all, fields(batch.size = batch.len()))]
    async fn decode(
        &mut self,
        batch: &[OwnedMessage],
        finished: &mut [bool],
        out: &mut ProjectionOutcome,
        shutdown: &Shutdown,
    ) -> Vec<Decoded> {
        let mut events = Vec::with_capacity(batch.len());
        for (at, m) in batch.iter().enumerate() {
            match decode_event(m.payload()) {
                Ok(event) => events.push(Decoded {
                    at,
                    event,
                    trace: crate::bus::consumer::header_str(m, TRACEPARENT).and_then(TraceParent::parse),
                }),
                Err(e) => {
                    tracing::warn!(kafka.partition = m.partition(), kafka.offset = m.offset(), error = %e, "undecodable event sent to the DLQ");
                    let reason = DlqReason {
                        stage: "decode",
                        class: e.class,
                        message: e.message,
                        attempts: 1,
                    };
                    if self.dead_letter(m, &reason, "unknown", shutdown).await {
                        finished[at] = true;
                        out.dead_lettered += 1;
                    }
                }
            }
        }
        events
    }

    /// Stage 2: OpenSearch. Retries only retryable items, in order; dead-letters what is
    /// refused for good. Returns the events that are in the index (applied or already there).
    #[tracing::instrument(level = "debug", name = "index", skip_all, fields(events = events.len()))]
    async fn index(
        &mut self,
        batch: &[OwnedMessage],
        events: Vec<Decoded>,
        finished: &mut [bool],
        out: &mut ProjectionOutcome,
        shutdown: &Shutdown,
    ) -> Vec<Decoded> {
        let mut todo: Vec<Decoded> = events;
        let mut indexed = Vec::with_capacity(todo.len());
        let mut rejected: Vec<(Decoded, String)> = Vec::new();
        let mut delays = self.retry.backoff();
        let mut attempt = 0usize;
        let mut one_by_one = false;
        while !todo.is_empty() {
            let results = self.bulk(&todo, one_by_one).await;
            let mut retry = Vec::new();
            for (d, r) in todo.into_iter().zip(results) {
                match r {
                    ItemResult::Applied => {
                        out.applied += 1;
                        let span = tracing::debug_span!("project event", product.id = %d.event.aggregate_id,
                            product.version = d.event.aggregate_version);
                        if let Some(tp) = &d.trace {
                            crate::telemetry::trace_context::set_parent(&span, tp);
                        }
                        span.in_scope(|| {
                            tracing::debug!(
                                product.id = %d.event.aggregate_id,
                                product.version = d.event.aggregate_version,
                                trace_id = d.trace.as_ref().map_or("-", TraceParent::trace_id),
                                "event projected"
                            );
                        });
                        PROJECTION_EVENTS
                            .with_label_values(&[&d.event.event_type, "applied"])
                            .inc();
                        indexed.push(d);
                    }
                    ItemResult::AlreadyApplied => {
                        out.already_applied += 1;
                        PROJECTION_EVENTS
                            .with_label_values(&[&d.event.event_type, "already_applied"])
                            .inc();
                        indexed.push(d);
                    }
                    ItemResult::Retryable(e) => {
                        tracing::warn!(product.id = %d.event.aggregate_id, error = %e, "index item will be retried");
                        retry.push(d);
                    }
                    ItemResult::Rejected(body) => rejected.push((d, body)),
                }
            }
            todo = retry;
            if todo.is_empty() {
                break;
            }
            if todo.len() > 1 && !one_by_one && self.whole_request_refused {
                // The request as a whole was refused (not about one item): find the culprit.
                one_by_one = true;
                continue;
            }
            if attempt >= self.settings.retries {
                tracing::warn!(events = todo.len(), "index still failing; events left unfinished");
                break;
            }
            if attempt == 0 {
                self.set_paused(true);
            }
            attempt += 1;
            let d = delays.next().unwrap_or(self.settings.retry_max);
            if self.wait_polling(d, shutdown).await {
                break;
            }
        }
        if attempt > 0 {
            self.set_paused(false);
        }
        for (d, body) in rejected {
            tracing::warn!(product.id = %d.event.aggregate_id, error = %body, "document rejected by OpenSearch; sent to the DLQ");
            let reason = DlqReason {
                stage: "index",
                class: "document_rejected",
                message: body,
                attempts: u32::try_from(attempt + 1).unwrap_or(u32::MAX),
            };
            if self
                .dead_letter(&batch[d.at], &reason, &d.event.event_type, shutdown)
                .await
            {
                finished[d.at] = true;
                out.dead_lettered += 1;
            }
        }
        for d in &indexed {
            finished[d.at] = true;
        }
        indexed
    }

    /// One bulk request for `todo` (or one request per item), classified per item. A request
    /// that fails as a whole gives every item the same result: retryable when the failure
    /// is transient, otherwise rejected only when the request held a single item (else the
    /// caller splits it; see `whole_request_refused`).
    async fn bulk(&mut self, todo: &[Decoded], one_by_one: bool) -> Vec<ItemResult> {
        self.whole_request_refused = false;
        let items: Vec<BulkItem> = todo
            .iter()
            .map(|d| BulkItem {
                id: d.event.aggregate_id,
                version: d.event.aggregate_version,
                doc: product_document(&d.event.state),
            })
            .collect();
        let chunks: Vec<&[BulkItem]> = if one_by_one {
            items.chunks(1).collect()
        } else {
            vec![&items[..]]
        };
        let mut results = Vec::with_capacity(items.len());
        for chunk in chunks {
            let _permit = match &self.bulk_permits {
                Some(p) => Some(p.clone().acquire_owned().await.expect("the semaphore is never closed")),
                None => None,
            };
            let started = Instant::now();
            let r = index_items(&self.search, &self.index, chunk).await;
            if !self.settings.modelled_bulk_latency.is_zero() {
                tokio::time::sleep(self.settings.modelled_bulk_latency).await;
            }
            PROJECTION_BULK_DURATION.observe(started.elapsed().as_secs_f64());
            match r {
                Ok(rs) => results.extend(rs),
                Err(e) => {
                    let about_documents = refusal_of_documents(&e);
                    if about_documents && chunk.len() == 1 {
                        results.push(ItemResult::Rejected(e.to_string()));
                    } else {
                        if about_documents {
                            tracing::warn!(error = %e, "bulk request refused as a whole; retrying item by item");
                            self.whole_request_refused = true;
                        } else if e.failure_class() == FailureClass::Permanent {
                            // 401/403/404/405...: the endpoint, credentials or index are wrong,
                            // not the documents; dead-lettering would empty the stream.
                            tracing::error!(error = %e, "OpenSearch refuses the projection's requests (check OPENSEARCH_URL, credentials, the index); will retry");
                        } else {
                            tracing::warn!(error = %e, "bulk request failed; will retry");
                        }
                        results.extend(chunk.iter().map(|_| ItemResult::Retryable(e.to_string())));
                    }
                }
            }
        }
        results
    }

    /// Stage 3 (beside stage 2): Redis. Folds the batch's events into the deferred writes
    /// (newest state per product), which [`put_deferred`](Self::put_deferred) writes while the
    /// batch is indexed; if Redis does not answer they wait, and the index goes on. An event
    /// the index refuses (dead-lettered) is still a valid state of its product: it is cached.
    #[tracing::instrument(level = "debug", name = "cache", skip_all, fields(events = events.len()))]
    fn fold_for_cache(&mut self, batch: &[OwnedMessage], events: &[Decoded], out: &mut ProjectionOutcome) {
        let now = Utc::now();
        for d in events {
            let m = &batch[d.at];
            let ev = &d.event;
            if self.settings.log_each_event {
                tracing::info!(product.id = %ev.aggregate_id, product.version = ev.aggregate_version, event.r#type = %ev.event_type,
                    kafka.partition = m.partition(), kafka.offset = m.offset(), "indexing_product");
            }
            CONSUMER_LAG_SECONDS
                .with_label_values(&[&self.group, m.topic(), &m.partition().to_string()])
                .set((now - ev.occurred_at).num_milliseconds().max(0) as f64 / 1000.0);
            if let Some(prev) = self.deferred.get(&ev.aggregate_id) {
                // Two versions of one product waiting together: the gap check against Redis
                // only sees the first, so check this step here.
                if ev.aggregate_version > prev.state.version + 1 {
                    out.gaps += 1;
                    PROJECTION_VERSION_GAPS.inc();
                    tracing::warn!(product.id = %ev.aggregate_id, product.version = ev.aggregate_version, previous_version = prev.state.version,
                        "version gap: applied full state past missing versions");
                }
            }
            let ledger = &mut self.ledger;
            let entry = self.deferred.entry(ev.aggregate_id).or_insert_with(|| {
                // Its partition is not stored past this offset until Redis took the state.
                ledger.hold(m.topic(), m.partition(), m.offset());
                DeferredCache {
                    state: ev.state.clone(),
                    first_version: ev.aggregate_version,
                    topic: m.topic().to_owned(),
                    partition: m.partition(),
                    first_offset: m.offset(),
                    event_type: ev.event_type.clone(),
                }
            });
            entry.first_version = entry.first_version.min(ev.aggregate_version);
            if m.offset() < entry.first_offset {
                // Delivered again after a seek back: the hold moves to the earlier offset.
                ledger.hold(&entry.topic, entry.partition, m.offset());
                ledger.release(&entry.topic, entry.partition, entry.first_offset);
                entry.first_offset = m.offset();
            }
            if ev.state.version >= entry.state.version {
                entry.state = ev.state.clone();
                entry.event_type = ev.event_type.clone();
            }
        }
    }

    /// Writes the deferred states to Redis unless a recent failure says to wait (`force`
    /// tries anyway). Each attempt is bounded by [`CACHE_WRITE_BOUND`], so a stalled Redis
    /// costs the index little. Returns the version gaps seen.
    async fn flush_deferred(&mut self, force: bool) -> usize {
        match self.put_deferred(force) {
            Some(put) => {
                let (written, result) = put.await;
                self.after_put(written, result)
            }
            None => 0,
        }
    }

    /// The write of the deferred states. It takes them (so that it can run beside the index,
    /// which does not touch them) and gives them back for [`after_put`](Self::after_put).
    /// `None` when there is nothing to write or a recent failure says to wait (`force` tries
    /// anyway).
    fn put_deferred(
        &mut self,
        force: bool,
    ) -> Option<impl std::future::Future<Output = (Deferred, PutResult)> + use<>> {
        if self.deferred.is_empty() || (!force && self.cache_retry_at.is_some_and(|t| Instant::now() < t)) {
            return None;
        }
        let written = std::mem::take(&mut self.deferred);
        let cache = self.cache.clone();
        Some(async move {
            let result = {
                let states: Vec<&Product> = written.values().map(|e| &e.state).collect();
                tokio::time::timeout(CACHE_WRITE_BOUND, cache.put_many(&states, Writer::Projection))
                    .await
                    .unwrap_or(Err(crate::cache::CacheError::Timeout))
            };
            (written, result)
        })
    }

    /// Books the outcome of [`put_deferred`](Self::put_deferred): gaps, the deferred writes
    /// done (or the backoff before the next try). Returns the version gaps seen.
    fn after_put(&mut self, written: Deferred, put: PutResult) -> usize {
        let mut gaps = 0;
        match put {
            Ok(puts) => {
                for (e, put) in written.values().zip(puts) {
                    if put.projected > 0 && e.first_version > put.projected + 1 {
                        gaps += 1;
                        PROJECTION_VERSION_GAPS.inc();
                        tracing::warn!(product.id = %e.state.id, product.version = e.first_version, previous_version = put.projected,
                            event.r#type = %e.event_type, "version gap: applied full state past missing versions");
                    }
                }
                for e in written.values() {
                    self.ledger.release(&e.topic, e.partition, e.first_offset);
                }
                if self.cache_retry_at.take().is_some() {
                    tracing::info!(written = written.len(), "redis answers again; deferred writes done");
                }
                self.cache_backoff = Box::new(self.retry.backoff());
                self.store_progress();
            }
            Err(e) => {
                // They wait for the next try (nothing was deferred meanwhile: the index does
                // not touch them).
                self.deferred = written;
                let d = self.cache_backoff.next().unwrap_or(self.settings.retry_max);
                if self.cache_retry_at.is_none() {
                    tracing::warn!(error = %e, deferred = self.deferred.len(),
                        "redis write failed; search goes on, cache writes wait for redis");
                }
                self.cache_retry_at = Some(Instant::now() + d);
            }
        }
        self.report_deferred();
        gaps
    }

    /// Adds this projector's change in deferred Redis writes to the process-wide gauge (one
    /// process runs a projector per partition).
    fn report_deferred(&mut self) {
        let now = self.deferred.len();
        let delta = i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(self.deferred_reported).unwrap_or(i64::MAX);
        PROJECTION_CACHE_DEFERRED.add(delta);
        self.deferred_reported = now;
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

    /// Dead-letters `m`; false when the DLQ could not be written (the message stays unfinished).
    async fn dead_letter(
        &mut self,
        m: &OwnedMessage,
        reason: &DlqReason,
        event_type: &str,
        shutdown: &Shutdown,
    ) -> bool {
        let dlq = self.dlq.clone();
        match self
            .retry
            .run(shutdown.token(), "DLQ write", || dlq.send(m, reason))
            .await
        {
            Ok(()) => {
                PROJECTION_EVENTS
                    .with_label_values(&[event_type, "dead_lettered"])
                    .inc();
                true
            }
            Err(e) => {
                tracing::warn!(kafka.partition = m.partition(), kafka.offset = m.offset(), error = %e, "could not dead-letter; message unfinished");
                false
            }
        }
    }

    /// Publishes consumer lag per partition as metrics.
    pub async fn update_lag(&self, topic: &str) {
        let c = self.consumer.clone();
        let t = topic.to_owned();
        let r = tokio::task::spawn_blocking(move || lag_blocking(c.as_ref(), &t, Duration::from_secs(2))).await;
        if let Ok(Ok(parts)) = r {
            for p in parts {
                CONSUMER_LAG
                    .with_label_values(&[&self.group, &p.topic, &p.partition.to_string()])
                    .set(p.lag);
            }
        }
    }

    /// Consumes until shutdown with one pipeline per assigned partition (see
    /// [`PartitionPipelines`](super::partition_pipelines::PartitionPipelines)); commits what was
    /// stored and leaves the group.
    pub async fn run_until_stopped(self, topic: &str, shutdown: Shutdown) -> Result<(), anyhow::Error> {
        super::partition_pipelines::PartitionPipelines::new(self)
            .run(topic, shutdown)
            .await
    }

    /// A partition pipeline's loop: batches from its queue until the queue is closed and
    /// drained or shutdown fires. After a batch that left messages unfinished, waits a
    /// growing, jittered delay (its queue fills meanwhile and the partition is paused); then
    /// writes what waits for Redis and stores its progress.
    pub(super) async fn run_partition(mut self, shutdown: Shutdown) -> Result<(), anyhow::Error> {
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
        self.report_deferred();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::SearchError;

    fn status(status: u16) -> SearchError {
        SearchError::Status {
            status,
            body: String::new(),
        }
    }

    #[test]
    fn only_bad_request_and_too_large_blame_the_documents() {
        // Issue 9, defect 3: a permanent refusal went round the retry loop like a 429; now a
        // document's refusal is found item by item and dead-lettered, while an endpoint's
        // refusal (wrong URL, credentials) never dead-letters the stream.
        assert!(refusal_of_documents(&status(400)));
        assert!(refusal_of_documents(&status(413)));
        for s in [401, 403, 404, 405, 429, 500, 503] {
            assert!(!refusal_of_documents(&status(s)), "{s}");
        }
        assert!(!refusal_of_documents(&SearchError::Transport("refused".into())));
    }
}
