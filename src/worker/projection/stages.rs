//! The projection's stages on one batch: decode (poison to the DLQ), index (OpenSearch through
//! `search::index_step`, retryable items retried in order, refused ones dead-lettered) and
//! cache (the deferred Redis writes of `cache::deferred`, their offsets held in the ledger).

use super::*;

impl Projection {
    /// Stage 1: decode; poison goes to the DLQ.
    #[tracing::instrument(level = "debug", name = "decode", skip_all, fields(batch.size = batch.len()))]
    pub(super) async fn decode(
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
    pub(super) async fn index(
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
        let mut delays = self.retry().backoff();
        let mut attempt = 0usize;
        let mut one_by_one = false;
        while !todo.is_empty() {
            let answer = self.bulk(&todo, one_by_one).await;
            let whole_request_refused = answer.whole_request_refused;
            let results = answer.results;
            let retry = sort_results(batch, &self.group, todo, results, out, &mut indexed, &mut rejected);
            todo = retry;
            if todo.is_empty() {
                break;
            }
            if todo.len() > 1 && !one_by_one && whole_request_refused {
                // The request as a whole was refused (not about one item): find the culprit.
                one_by_one = true;
                continue;
            }
            if attempt >= self.settings.retries {
                tracing::warn!(events = todo.len(), "index still failing; events left unfinished");
                break;
            }
            attempt += 1;
            let d = delays.next().unwrap_or(self.settings.retry_max);
            // The lane's queue fills meanwhile and the dispatcher pauses the partition.
            if shutdown.sleep(d).await {
                break;
            }
        }
        let attempts = u32::try_from(attempt + 1).unwrap_or(u32::MAX);
        self.dead_letter_rejected(batch, rejected, attempts, finished, out, shutdown)
            .await;
        for d in &indexed {
            finished[d.at] = true;
        }
        indexed
    }

    /// Dead-letters the events OpenSearch refused for good (after `attempts` requests).
    pub(super) async fn dead_letter_rejected(
        &mut self,
        batch: &[OwnedMessage],
        rejected: Vec<(Decoded, String)>,
        attempts: u32,
        finished: &mut [bool],
        out: &mut ProjectionOutcome,
        shutdown: &Shutdown,
    ) {
        for (d, body) in rejected {
            tracing::warn!(product.id = %d.event.aggregate_id, error = %body, "document rejected by OpenSearch; sent to the DLQ");
            let reason = DlqReason {
                stage: "index",
                class: "document_rejected",
                message: body,
                attempts,
            };
            if self
                .dead_letter(&batch[d.at], &reason, &d.event.event_type, shutdown)
                .await
            {
                finished[d.at] = true;
                out.dead_lettered += 1;
            }
        }
    }

    /// One bulk request for `todo` (or one request per item): see [`IndexStep::bulk`].
    pub(super) async fn bulk(&self, todo: &[Decoded], one_by_one: bool) -> BulkAnswer {
        let items: Vec<BulkItem> = todo
            .iter()
            .map(|d| BulkItem {
                id: d.event.aggregate_id,
                version: d.event.aggregate_version,
                doc: product_document(&d.event.state),
            })
            .collect();
        IndexStep {
            search: &self.search,
            index: &self.index,
            permits: self.bulk_permits.as_deref(),
            bench_modelled_bulk_latency: self.settings.modelled_bulk_latency,
        }
        .bulk(&items, one_by_one)
        .await
    }

    /// Stage 3 (beside stage 2): Redis. Folds the batch's events into the deferred writes
    /// (newest state per product), which [`put_deferred`](Self::put_deferred) writes while the
    /// batch is indexed; if Redis does not answer they wait, and the index goes on. An event
    /// the index refuses (dead-lettered) is still a valid state of its product: it is cached.
    #[tracing::instrument(level = "debug", name = "cache", skip_all, fields(events = events.len()))]
    pub(super) fn fold_for_cache(
        &mut self,
        batch: &[OwnedMessage],
        events: &[Decoded],
        out: &mut ProjectionOutcome,
        ledger: &mut OffsetLedger,
    ) {
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
            let folded = self.deferred.fold(ev, (m.topic(), m.partition(), m.offset()));
            if folded.gap {
                out.gaps += 1;
            }
            if let Some(o) = folded.hold {
                // Its partition is not stored past this offset until Redis took the state.
                ledger.hold(m.topic(), m.partition(), o);
            }
            if let Some(o) = folded.release {
                ledger.release(m.topic(), m.partition(), o);
            }
        }
    }

    /// Writes the deferred states to Redis unless a recent failure says to wait (`force`
    /// tries anyway). Returns the version gaps seen.
    pub(super) async fn flush_deferred(&mut self, force: bool, ledger: &mut OffsetLedger) -> usize {
        let (gaps, written) = self.deferred.flush(&self.cache, force).await;
        release(ledger, &written);
        gaps
    }

    /// Dead-letters `m`; false when the DLQ could not be written (the message stays unfinished).
    pub(super) async fn dead_letter(
        &mut self,
        m: &OwnedMessage,
        reason: &DlqReason,
        event_type: &str,
        shutdown: &Shutdown,
    ) -> bool {
        let dlq = self.dlq.clone();
        match self
            .retry()
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
}

/// Books one bulk answer: applied and already-applied events go to `indexed` (counted and
/// logged), refused ones to `rejected`; returns those to retry, in order.
fn sort_results(
    batch: &[OwnedMessage],
    group: &str,
    todo: Vec<Decoded>,
    results: Vec<ItemResult>,
    out: &mut ProjectionOutcome,
    indexed: &mut Vec<Decoded>,
    rejected: &mut Vec<(Decoded, String)>,
) -> Vec<Decoded> {
    let mut retry = Vec::new();
    for (d, r) in todo.into_iter().zip(results) {
        match r {
            ItemResult::Applied => {
                out.applied += 1;
                let m = &batch[d.at];
                // OpenTelemetry messaging conventions (see `bus::span`).
                let span = tracing::debug_span!("project event", product.id = %d.event.aggregate_id,
                    product.version = d.event.aggregate_version,
                    otel.name = %format_args!("process {}", m.topic()), otel.kind = "consumer",
                    messaging.system = crate::bus::span::MESSAGING_SYSTEM, messaging.operation.type = "process",
                    messaging.destination.name = m.topic(), messaging.consumer.group.name = %group,
                    messaging.kafka.destination.partition = m.partition(), messaging.kafka.message.offset = m.offset());
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
    retry
}
