//! The read-side projection behind `run-product-event-consumer`: reads `product.events` and
//! writes each event's full product state into OpenSearch (bulk, external_gte versioning) and
//! Redis (compare-by-version script).
//!
//! A batch is up to N messages or M ms. Offsets are stored only after every event of the batch
//! was applied, found already applied, or dead-lettered. Poison messages (undecodable, unknown
//! type or schema, documents OpenSearch rejects) go to `dlq.product.events` with the reason.
//! Transient failures (OpenSearch/Redis down, 429, 5xx, timeouts) are retried with capped
//! backoff, only the failed items, with the partitions paused so the consumer stays in the
//! group; nothing is committed past an item that is neither applied nor dead-lettered.

use chrono::Utc;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{backoff, Shutdown};
use crate::bus::consumer::lag_blocking;
use crate::bus::dlq::{DlqReason, DlqWriter};
use crate::bus::envelope::decode_event;
use crate::cache::product_cache::Writer;
use crate::cache::ProductCache;
use crate::domain::product::EventEnvelope;
use crate::search::bulk::{index_items, BulkItem, ItemResult};
use crate::search::document::product_document;
use crate::search::SearchClient;
use crate::telemetry::metrics::{
    CONSUMER_LAG, CONSUMER_LAG_SECONDS, PROJECTION_BATCH_SIZE, PROJECTION_BULK_DURATION, PROJECTION_EVENTS,
    PROJECTION_VERSION_GAPS,
};

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
    /// Log one `indexing_product` line per event.
    pub log_each_event: bool,
}

impl Default for ProjectionSettings {
    fn default() -> Self {
        Self {
            batch_size: 500,
            batch_wait: Duration::from_millis(100),
            retry_base: Duration::from_millis(200),
            retry_max: Duration::from_secs(30),
            log_each_event: true,
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
    /// Version gaps seen.
    pub gaps: usize,
}

/// Dependencies of the projection.
pub struct Projector {
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
    /// Messages received while paused, processed in the next batch.
    carry: Vec<OwnedMessage>,
}

enum Step {
    Done,
    Interrupted,
}

impl Projector {
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
        Self {
            consumer,
            search,
            index,
            cache,
            dlq,
            group,
            settings,
            carry: Vec::new(),
        }
    }

    async fn collect_batch(&mut self, first_wait: Duration) -> Result<Vec<OwnedMessage>, anyhow::Error> {
        let mut batch = std::mem::take(&mut self.carry);
        let deadline_first = Instant::now() + first_wait;
        if batch.is_empty() {
            match tokio::time::timeout_at(deadline_first.into(), self.consumer.recv()).await {
                Err(_) => return Ok(batch),
                Ok(Err(e)) => return Err(anyhow::anyhow!("kafka consumer error: {e}")),
                Ok(Ok(m)) => batch.push(m.detach()),
            }
        }
        let deadline = Instant::now() + self.settings.batch_wait;
        while batch.len() < self.settings.batch_size {
            match tokio::time::timeout_at(deadline.into(), self.consumer.recv()).await {
                Err(_) => break,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "kafka consumer error while filling a batch");
                    break;
                }
                Ok(Ok(m)) => batch.push(m.detach()),
            }
        }
        Ok(batch)
    }

    /// Sleeps `d` while keeping the consumer polled (so it stays in the group); messages that
    /// still arrive are kept for the next batch. True when shutdown fired.
    async fn wait_polling(&mut self, d: Duration, shutdown: &Shutdown) -> bool {
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

    fn pause(&self) {
        if let Ok(a) = self.consumer.assignment() {
            let _ = self.consumer.pause(&a);
        }
    }

    fn resume(&self) {
        if let Ok(a) = self.consumer.assignment() {
            let _ = self.consumer.resume(&a);
        }
    }

    /// Receives one batch (waiting up to `wait` for its first message) and projects it.
    pub async fn process_once(
        &mut self,
        wait: Duration,
        shutdown: &Shutdown,
    ) -> Result<ProjectionOutcome, anyhow::Error> {
        let batch = self.collect_batch(wait).await?;
        let mut out = ProjectionOutcome {
            received: batch.len(),
            ..Default::default()
        };
        if batch.is_empty() {
            return Ok(out);
        }
        PROJECTION_BATCH_SIZE.observe(batch.len() as f64);
        match self.project(&batch, &mut out, shutdown).await? {
            Step::Interrupted => {
                return Ok(ProjectionOutcome {
                    received: batch.len(),
                    ..Default::default()
                })
            }
            Step::Done => {}
        }
        // Every message is now applied, already applied or dead-lettered: store offsets.
        let mut last: HashMap<(String, i32), i64> = HashMap::new();
        for m in &batch {
            let e = last.entry((m.topic().to_owned(), m.partition())).or_insert(m.offset());
            *e = (*e).max(m.offset());
        }
        for ((topic, partition), offset) in last {
            if let Err(e) = self.consumer.store_offset(&topic, partition, offset) {
                // Partition revoked meanwhile: its new owner re-applies (idempotent).
                tracing::debug!(kafka.partition = partition, error = %e, "offset not stored");
            }
        }
        Ok(out)
    }

    async fn project(
        &mut self,
        batch: &[OwnedMessage],
        out: &mut ProjectionOutcome,
        shutdown: &Shutdown,
    ) -> Result<Step, anyhow::Error> {
        // 1. Decode; poison goes to the DLQ.
        let mut events: Vec<(usize, EventEnvelope)> = Vec::with_capacity(batch.len());
        for (i, m) in batch.iter().enumerate() {
            match decode_event(m.payload()) {
                Ok(ev) => events.push((i, ev)),
                Err(e) => {
                    tracing::warn!(kafka.partition = m.partition(), kafka.offset = m.offset(), error = %e, "undecodable event sent to the DLQ");
                    let reason = DlqReason {
                        stage: "decode",
                        class: e.class,
                        message: e.message,
                        attempts: 1,
                    };
                    if let Step::Interrupted = self.dead_letter(m, &reason, shutdown).await {
                        return Ok(Step::Interrupted);
                    }
                    PROJECTION_EVENTS.with_label_values(&["unknown", "dead_lettered"]).inc();
                    out.dead_lettered += 1;
                }
            }
        }
        if events.is_empty() {
            return Ok(Step::Done);
        }
        // 2. OpenSearch bulk, retrying only retryable items, in order.
        let mut todo: Vec<usize> = (0..events.len()).collect();
        let mut rejected: Vec<(usize, String)> = Vec::new();
        let mut attempt = 0u32;
        while !todo.is_empty() {
            let items: Vec<BulkItem> = todo
                .iter()
                .map(|&k| {
                    let ev = &events[k].1;
                    BulkItem {
                        id: ev.aggregate_id,
                        version: ev.aggregate_version,
                        doc: product_document(&ev.state),
                    }
                })
                .collect();
            let started = Instant::now();
            let result = index_items(&self.search, &self.index, &items).await;
            PROJECTION_BULK_DURATION.observe(started.elapsed().as_secs_f64());
            let retry: Vec<usize> = match result {
                Ok(results) => {
                    let mut retry = Vec::new();
                    for (&k, r) in todo.iter().zip(results) {
                        let ev = &events[k].1;
                        match r {
                            ItemResult::Applied => {
                                out.applied += 1;
                                PROJECTION_EVENTS.with_label_values(&[&ev.event_type, "applied"]).inc();
                            }
                            ItemResult::AlreadyApplied => {
                                out.already_applied += 1;
                                PROJECTION_EVENTS
                                    .with_label_values(&[&ev.event_type, "already_applied"])
                                    .inc();
                            }
                            ItemResult::Retryable(e) => {
                                tracing::warn!(product.id = %ev.aggregate_id, error = %e, "index item will be retried");
                                retry.push(k);
                            }
                            ItemResult::Rejected(body) => rejected.push((k, body)),
                        }
                    }
                    retry
                }
                Err(e) if e.is_retryable() => {
                    tracing::warn!(error = %e, "bulk request failed; will retry");
                    todo.clone()
                }
                Err(e) => {
                    // The whole request was refused (e.g. a mapping conflict on the index):
                    // that is not about one message, so retry rather than dead-letter them all.
                    tracing::error!(error = %e, "bulk request refused; will retry");
                    todo.clone()
                }
            };
            if retry.is_empty() {
                break;
            }
            if attempt == 0 {
                self.pause();
            }
            attempt += 1;
            let d = backoff(self.settings.retry_base, self.settings.retry_max, attempt);
            if self.wait_polling(d, shutdown).await {
                self.resume();
                return Ok(Step::Interrupted);
            }
            todo = retry;
        }
        // 3. Documents OpenSearch rejects go to the DLQ with its error body.
        let rejected_idx: std::collections::HashSet<usize> = rejected.iter().map(|(k, _)| *k).collect();
        for (k, body) in &rejected {
            let (i, ev) = &events[*k];
            tracing::warn!(product.id = %ev.aggregate_id, error = %body, "document rejected by OpenSearch; sent to the DLQ");
            let reason = DlqReason {
                stage: "index",
                class: "document_rejected",
                message: body.clone(),
                attempts: attempt + 1,
            };
            if let Step::Interrupted = self.dead_letter(&batch[*i], &reason, shutdown).await {
                self.resume();
                return Ok(Step::Interrupted);
            }
            PROJECTION_EVENTS
                .with_label_values(&[&ev.event_type, "dead_lettered"])
                .inc();
            out.dead_lettered += 1;
        }
        // 4. Redis read model (versioned), retried until it answers.
        let good: Vec<&(usize, EventEnvelope)> = events
            .iter()
            .enumerate()
            .filter(|(k, _)| !rejected_idx.contains(k))
            .map(|(_, e)| e)
            .collect();
        let states: Vec<&crate::domain::product::Product> = good.iter().map(|(_, e)| &e.state).collect();
        let mut attempt_cache = 0u32;
        let outcomes = loop {
            match self.cache.put_many(&states, Writer::Projection).await {
                Ok(o) => break o,
                Err(e) => {
                    if attempt_cache == 0 && attempt == 0 {
                        self.pause();
                    }
                    attempt_cache += 1;
                    let d = backoff(self.settings.retry_base, self.settings.retry_max, attempt_cache);
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "redis write failed; retrying");
                    if self.wait_polling(d, shutdown).await {
                        self.resume();
                        return Ok(Step::Interrupted);
                    }
                }
            }
        };
        if attempt > 0 || attempt_cache > 0 {
            self.resume();
        }
        // 5. Logs, gap detection, lag in time.
        let now = Utc::now();
        for ((i, ev), put) in good.iter().zip(outcomes) {
            let m = &batch[*i];
            if put.projected > 0 && ev.aggregate_version > put.projected + 1 {
                out.gaps += 1;
                PROJECTION_VERSION_GAPS.inc();
                tracing::warn!(product.id = %ev.aggregate_id, product.version = ev.aggregate_version, previous_version = put.projected,
                    "version gap: applied full state past missing versions");
            }
            if self.settings.log_each_event {
                tracing::info!(product.id = %ev.aggregate_id, product.version = ev.aggregate_version, event.r#type = %ev.event_type,
                    kafka.partition = m.partition(), kafka.offset = m.offset(), "indexing_product");
            }
            CONSUMER_LAG_SECONDS
                .with_label_values(&[&self.group, m.topic(), &m.partition().to_string()])
                .set((now - ev.occurred_at).num_milliseconds().max(0) as f64 / 1000.0);
        }
        Ok(Step::Done)
    }

    async fn dead_letter(&mut self, m: &OwnedMessage, reason: &DlqReason, shutdown: &Shutdown) -> Step {
        let mut attempt = 0;
        loop {
            match self.dlq.send(m, reason).await {
                Ok(()) => return Step::Done,
                Err(e) => {
                    attempt += 1;
                    let d = backoff(self.settings.retry_base, self.settings.retry_max, attempt);
                    tracing::warn!(error = %e, "DLQ write failed; retrying");
                    if self.wait_polling(d, shutdown).await {
                        return Step::Interrupted;
                    }
                }
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

    /// Consumes until shutdown; commits what was stored and leaves the group.
    pub async fn run_until_stopped(&mut self, topic: &str, shutdown: Shutdown) -> Result<(), anyhow::Error> {
        tracing::info!(topic, group = %self.group, index = %self.index, "Product Event Consumer started and polling Kafka...");
        let mut last_lag = Instant::now() - Duration::from_secs(60);
        while !shutdown.is_triggered() {
            match self.process_once(Duration::from_millis(500), &shutdown).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "projection error");
                    shutdown.sleep(Duration::from_secs(1)).await;
                }
            }
            if last_lag.elapsed() > Duration::from_secs(5) {
                self.update_lag(topic).await;
                last_lag = Instant::now();
            }
        }
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit (nothing stored?)");
        }
        self.consumer.unsubscribe();
        tracing::info!("Product Event Consumer stopped");
        Ok(())
    }
}
