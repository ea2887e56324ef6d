//! The outbox relay behind `process-outbox`: claims due outbox rows in id order, produces them
//! to Kafka keyed by product id, awaits every delivery report, then marks the delivered rows
//! published in one statement.
//!
//! Scale-out: the outbox is cut into slices by product id (`store::outbox_slices`); any
//! number of relays share them, each owning about `slices / relays` through one advisory
//! lock per slice on the connection it claims with (the relay's lease: [`lease`]). Relays rebalance between batches (let go
//! of extras only once the batch in flight is marked; take free slices). A product's rows
//! all belong to one slice, so one relay at a time sends them. Within a batch, a row that
//! fails holds back the later rows of the same product, which are re-sent after it, so the
//! first delivery of each product's events is in version order. A crash between produce and
//! mark re-sends the batch: at-least-once, duplicates are harmless to the versioned
//! projection.
//!
//! Fencing: a relay that lost its Postgres session (its locks end with it) may still have a
//! batch in flight. Every batch's produce is bounded by `batch_deadline` (past it the
//! relay purges its producer's queue and retries the batch later), and a relay that takes a
//! slice from an owner that did not let go cleanly waits `takeover_grace` (longer than the
//! deadline) before producing for it, so two relays never produce for one slice at once.
//!
//! Failures: broker-level errors (timeouts, brokers down) do not count against rows; the batch
//! is retried with backoff. Row-level errors (message too large, invalid record) count
//! attempts with backoff and park the row after `max_attempts`, without blocking other
//! products.

use chrono::Utc;
use diesel_async::AsyncPgConnection;
use futures::future::join_all;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

mod drive;
mod lease;

pub use drive::{DriveError, Tally, Until};

use lease::SliceLease;

use super::Shutdown;
use crate::bus::producer::{self, ProducerSettings};
use crate::bus::KafkaConnection;
use crate::store::outbox_marker::OutboxMarker;
use crate::store::{outbox_repo, StoreError};
use crate::telemetry::metrics::{
    OUTBOX_BATCH_SIZE, OUTBOX_ERRORS, OUTBOX_OLDEST_AGE, OUTBOX_PARKED, OUTBOX_PENDING, OUTBOX_PUBLISHED,
    OUTBOX_PUBLISH_LATENCY,
};

/// Relay tuning.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Rows claimed per batch.
    pub batch_size: i64,
    /// Attempts before a row is parked.
    pub max_attempts: i32,
    /// First retry delay of a failed row (doubles per attempt).
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// Poll interval when no NOTIFY arrives (covers notifications lost while disconnected).
    pub poll_interval: Duration,
    /// How long a relay waits before producing for a slice whose previous owner did not let
    /// go cleanly. Each batch's produce is bounded by half of it (see the module docs).
    pub takeover_grace: Duration,
    /// How often the relay checks its share of slices.
    pub rebalance_interval: Duration,
    /// Added to every batch's produce. Zero in production (no flag sets it): benchmarks use it
    /// to model the round trip of a remote, replicated cluster, so that relay scaling is
    /// measured on work not bound by this machine's cores.
    pub modelled_batch_latency: Duration,
}

impl RelaySettings {
    /// Bound of one batch's produce: half the takeover grace.
    pub fn batch_deadline(&self) -> Duration {
        self.takeover_grace / 2
    }
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 5000,
            max_attempts: 10,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
            takeover_grace: Duration::from_secs(5),
            rebalance_interval: Duration::from_secs(1),
            modelled_batch_latency: Duration::ZERO,
        }
    }
}

/// Relay errors.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Postgres failed; the claim connection (and every slice with it) is dropped, and the
    /// relay joins again.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Kafka could not take the batch (brokers down, timeouts); nothing was marked.
    #[error("kafka unavailable: {0}")]
    Broker(String),
}

/// What one batch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    /// Rows claimed.
    pub claimed: usize,
    /// Rows delivered and marked published.
    pub published: usize,
    /// Rows that failed (attempt recorded).
    pub failed: usize,
    /// Rows parked in this batch.
    pub parked: usize,
    /// Delivered rows held back behind a failed row of the same product.
    pub held_back: usize,
}

/// The relay: its lease on a share of the slices (the connection holding their locks), plus
/// the producer.
pub struct OutboxRelay {
    database_url: String,
    producer: FutureProducer,
    settings: RelaySettings,
    /// The claim connection and the owned slices.
    lease: SliceLease,
    rebuild: Option<(KafkaConnection, ProducerSettings)>,
    /// Commits "published" marks on a second connection while the next batch is claimed.
    marker: OutboxMarker,
}

/// Row-specific produce errors (the failure policy's permanent Kafka errors): retrying the
/// same bytes will not help, so they count attempts against the row and park it.
fn is_row_error(e: &KafkaError) -> bool {
    use crate::failure::{Classify, FailureClass};
    crate::bus::BusError::Kafka(e.clone()).failure_class() == FailureClass::Permanent
}

fn headers_of(raw: &str) -> OwnedHeaders {
    let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw).unwrap_or_default();
    let mut h = OwnedHeaders::new_with_capacity(map.len());
    for (k, v) in &map {
        let s = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        h = h.insert(Header {
            key: k,
            value: Some(s.as_bytes()),
        });
    }
    h
}

impl OutboxRelay {
    /// A relay that has not joined yet (see [`try_acquire`](Self::try_acquire)).
    pub fn new(database_url: String, producer: FutureProducer, settings: RelaySettings) -> Self {
        Self {
            marker: OutboxMarker::new(database_url.clone()),
            lease: SliceLease::new(database_url.clone(), settings.takeover_grace),
            database_url,
            producer,
            settings,
            rebuild: None,
        }
    }

    /// Lets the relay replace its producer after a fatal librdkafka error (for example an
    /// idempotence sequence failure after a broker crash).
    pub fn with_producer_rebuild(mut self, kafka: KafkaConnection, settings: ProducerSettings) -> Self {
        self.rebuild = Some((kafka, settings));
        self
    }

    /// Replaces the producer if librdkafka reported a fatal error.
    fn heal_producer(&mut self) {
        if let Some((kafka, settings)) = &self.rebuild {
            if let Some(p) = producer::replacement_if_fatal(&self.producer, kafka, settings) {
                self.producer = p;
            }
        }
    }

    /// True while this relay owns slices.
    pub fn is_active(&self) -> bool {
        self.lease.is_active()
    }

    /// This relay's name (in `outbox_slice_owners` and its logs).
    pub fn owner(&self) -> &str {
        self.lease.owner()
    }

    /// The slices this relay owns, as they change.
    pub fn slices(&self) -> tokio::sync::watch::Receiver<Vec<i16>> {
        self.lease.slices()
    }

    /// How long until every owned slice may be produced for (slices taken from a lost owner
    /// wait out the takeover grace); `None` when none waits.
    pub fn fenced_for(&self) -> Option<Duration> {
        self.lease.fenced_for()
    }

    /// Joins the relays if needed and takes this relay's share of the slices now; true when
    /// it owns at least one.
    pub async fn try_acquire(&mut self) -> Result<bool, StoreError> {
        if let Err(e) = self.lease.rebalance(&mut self.marker).await {
            self.lease.lose();
            return Err(e);
        }
        Ok(self.lease.owns_any())
    }

    /// Takes every slice that no relay holds and that has rows publishable now, beyond this
    /// relay's share if need be; returns how many it took.
    ///
    /// A one-shot run calls it before it exits, once its own slices have nothing left to
    /// claim: a slice another relay let go of after this relay's last rebalance (its extras,
    /// at a rebalance that counted this relay; every slice, when it lost its session) has
    /// nobody left to publish it otherwise, and the other relay may be a one-shot run that
    /// has finished meanwhile. Slices held by live relays stay theirs. The next rebalance is a
    /// full interval away, so the rows are claimed before an extra can be let go again.
    pub async fn take_unowned_publishable(&mut self) -> Result<usize, StoreError> {
        self.lease.take_unowned_publishable(&mut self.marker).await
    }

    /// Pending rows no relay may publish yet (retry backoff), for a one-shot run's summary.
    pub async fn waiting_for_retry(&mut self) -> Result<outbox_repo::RetryWait, StoreError> {
        let Some(conn) = self.lease.conn() else {
            return Ok(Default::default());
        };
        outbox_repo::waiting_for_retry(conn).await
    }

    /// Waits for the "published" mark in progress, if any; returns the rows it marked.
    pub async fn flush(&mut self) -> Result<usize, StoreError> {
        self.marker.flush().await
    }

    /// Lets go of every slice cleanly, after the mark in progress (dropping the connection
    /// would release the locks too, but the next owners would wait out the grace).
    pub async fn release(&mut self) {
        self.lease.release(&mut self.marker).await;
    }

    /// Claims and publishes one batch from the owned slices. Needs
    /// [`try_acquire`](Self::try_acquire) first; rebalances every `rebalance_interval`.
    ///
    /// The "published" mark of a full batch is committed on a second connection while the
    /// next batch is claimed and produced (its rows are excluded from that claim); a partial
    /// batch is marked before returning. [`flush`](Self::flush) waits for a mark in progress.
    #[tracing::instrument(level = "debug", name = "relay_batch", skip_all)]
    pub async fn process_once(&mut self) -> Result<BatchOutcome, RelayError> {
        if self.lease.conn().is_none() {
            return Err(RelayError::Store(StoreError::Pool("the relay has not joined".into())));
        }
        if self.lease.rebalance_due(self.settings.rebalance_interval) {
            if let Err(e) = self.lease.rebalance(&mut self.marker).await {
                let _ = self.flush().await;
                self.lease.lose();
                return Err(e.into());
            }
        }
        let slices = self.lease.producible();
        if slices.as_ref().is_some_and(Vec::is_empty) {
            return Ok(BatchOutcome::default());
        }
        let Some(conn) = self.lease.conn() else {
            return Err(RelayError::Store(StoreError::Pool("the relay has not joined".into())));
        };
        let result = Self::publish_batch(
            conn,
            &self.producer,
            &self.settings,
            slices.as_deref(),
            self.marker.in_flight_ids(),
        )
        .await;
        let result = match result {
            Ok((out, delivered)) => self.finish_batch(out, delivered).await,
            Err(e) => {
                let _ = self.flush().await;
                Err(e)
            }
        };
        match &result {
            // The session may be gone, and the slices with it: join again.
            Err(RelayError::Store(_)) => self.lease.lose(),
            Err(RelayError::Broker(_)) => self.heal_producer(),
            Ok(_) => {}
        }
        result
    }

    async fn finish_batch(&mut self, out: BatchOutcome, delivered: Vec<i64>) -> Result<BatchOutcome, RelayError> {
        // The previous mark must be committed before the next one starts (one marker conn).
        self.flush().await?;
        if (out.claimed as i64) < self.settings.batch_size {
            if let Some(conn) = self.lease.conn() {
                outbox_repo::mark_published(conn, &delivered).await?;
            }
        } else if !delivered.is_empty() {
            self.marker.start(delivered).await?;
        }
        Ok(out)
    }

    /// Claims, produces and awaits one batch; returns the outcome and the delivered ids to mark.
    async fn publish_batch(
        conn: &mut AsyncPgConnection,
        producer: &FutureProducer,
        s: &RelaySettings,
        slices: Option<&[i16]>,
        in_flight: &[i64],
    ) -> Result<(BatchOutcome, Vec<i64>), RelayError> {
        let t_claim = Instant::now();
        let rows = outbox_repo::claim_batch(conn, s.batch_size, slices, in_flight).await?;
        let claim_ms = t_claim.elapsed().as_millis() as u64;
        let mut out = BatchOutcome {
            claimed: rows.len(),
            ..Default::default()
        };
        if rows.is_empty() {
            return Ok((out, Vec::new()));
        }
        let t_produce = Instant::now();
        let results = Self::produce_all(producer, s, &rows).await?;
        let produce_ms = t_produce.elapsed().as_millis() as u64;
        let now = Utc::now();
        let (delivered, broker_error) = Self::settle_rows(conn, s, &rows, results, &mut out).await?;
        let ids: Vec<i64> = delivered.iter().map(|r| r.id).collect();
        out.published = ids.len();
        for r in &delivered {
            OUTBOX_PUBLISH_LATENCY.observe((now - r.created_at).num_milliseconds().max(0) as f64 / 1000.0);
        }
        OUTBOX_PUBLISHED.inc_by(out.published as u64);
        OUTBOX_BATCH_SIZE.observe(rows.len() as f64);
        tracing::debug!(rows = rows.len(), claim_ms, produce_ms, "outbox batch timings");
        match broker_error {
            Some(e) if out.published == 0 => Err(RelayError::Broker(e)),
            _ => Ok((out, ids)),
        }
    }

    /// Enqueues every row, then awaits every delivery report within the batch deadline
    /// (past it, what is still queued is purged and the batch is a broker error).
    async fn produce_all(
        producer: &FutureProducer,
        s: &RelaySettings,
        rows: &[outbox_repo::PendingRow],
    ) -> Result<Vec<Result<(), KafkaError>>, RelayError> {
        let mut pending = Vec::with_capacity(rows.len());
        for row in rows {
            // One publish span per row, in the trace of the write that stored it.
            let span = crate::bus::span::publish(&row.topic, || crate::bus::span::traceparent_in_json(&row.headers));
            let rec = FutureRecord::to(&row.topic)
                .key(row.key.as_bytes())
                .payload(row.payload.as_bytes())
                .headers(headers_of(&row.headers));
            // Enqueue failures (size over the producer's limit, queue full) keep their own
            // error so they are classified like delivery failures.
            pending.push((producer.send_result(rec).map_err(|(e, _)| e), span));
        }
        let deliveries = join_all(pending.into_iter().map(|(f, span)| async move {
            let r = match f {
                Err(e) => Err(e),
                Ok(f) => match f.await {
                    Ok(Ok(d)) => Ok((d.partition, d.offset)),
                    Ok(Err((e, _))) => Err(e),
                    Err(_canceled) => Err(KafkaError::Canceled),
                },
            };
            crate::bus::span::settle(&span, r)
        }));
        // Bounded, so that a relay whose session ended meanwhile stops producing before the
        // next owner's grace is over: past the deadline nothing more of this batch goes out.
        let deliveries = async {
            let r = deliveries.await;
            if !s.modelled_batch_latency.is_zero() {
                tokio::time::sleep(s.modelled_batch_latency).await;
            }
            r
        };
        tokio::time::timeout(s.batch_deadline(), deliveries).await.map_err(|_| {
            producer.purge(rdkafka::producer::PurgeConfig::default().queue().inflight());
            OUTBOX_ERRORS.with_label_values(&["deadline"]).inc();
            RelayError::Broker(format!(
                "the batch was not delivered within {} ms; purged, will retry",
                s.batch_deadline().as_millis()
            ))
        })
    }

    /// Books each row's delivery: delivered rows to mark (none of a product after its first
    /// failure: they wait behind it), a row's own failure counted and retried later (parked
    /// past its attempts), a broker failure returned.
    async fn settle_rows<'r>(
        conn: &mut AsyncPgConnection,
        s: &RelaySettings,
        rows: &'r [outbox_repo::PendingRow],
        results: Vec<Result<(), KafkaError>>,
        out: &mut BatchOutcome,
    ) -> Result<(Vec<&'r outbox_repo::PendingRow>, Option<String>), RelayError> {
        let mut blocked: HashSet<Uuid> = HashSet::new();
        let mut delivered = Vec::with_capacity(rows.len());
        let mut broker_error: Option<String> = None;
        for (row, res) in rows.iter().zip(results) {
            match res {
                Ok(()) if blocked.contains(&row.aggregate_id) => out.held_back += 1,
                Ok(()) => delivered.push(row),
                Err(e) => {
                    blocked.insert(row.aggregate_id);
                    if is_row_error(&e) {
                        let delay = crate::failure::delay_for_attempt(
                            s.retry_base,
                            s.retry_max,
                            u32::try_from(row.attempts).unwrap_or(0),
                        );
                        let parked =
                            outbox_repo::mark_failed(conn, row.id, &e.to_string(), delay, s.max_attempts).await?;
                        out.failed += 1;
                        OUTBOX_ERRORS.with_label_values(&["row"]).inc();
                        if parked {
                            out.parked += 1;
                            tracing::error!(outbox.id = row.id, product.id = %row.aggregate_id, error = %e, "outbox row parked after {} attempts", row.attempts + 1);
                        } else {
                            tracing::warn!(outbox.id = row.id, product.id = %row.aggregate_id, error = %e, retry_in_ms = delay.as_millis() as u64, "outbox row failed to publish");
                        }
                    } else {
                        OUTBOX_ERRORS.with_label_values(&["broker"]).inc();
                        broker_error.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }
        Ok((delivered, broker_error))
    }

    /// Refreshes backlog gauges.
    pub async fn update_gauges(&mut self) -> Result<outbox_repo::OutboxStats, StoreError> {
        let Some(conn) = self.lease.conn() else {
            return Ok(Default::default());
        };
        let st = outbox_repo::stats(conn).await?;
        OUTBOX_PENDING.set(st.pending);
        OUTBOX_PARKED.set(st.parked);
        OUTBOX_OLDEST_AGE.set(st.oldest_pending_age_secs);
        Ok(st)
    }

    /// Daemon loop: publish while there is work, otherwise wait for NOTIFY or the poll
    /// interval; stand by while other relays own every slice; survive outages of both sides.
    pub async fn run_until_stopped(&mut self, shutdown: Shutdown) {
        let mut log = |o: &BatchOutcome| {
            if o.published > 0 || o.failed > 0 {
                tracing::info!(
                    published = o.published,
                    failed = o.failed,
                    parked = o.parked,
                    held_back = o.held_back,
                    "outbox batch published"
                );
            }
        };
        // Following, the drive ends only at shutdown and never with an error.
        let _ = self.drive(Until::Stopped, &shutdown, &mut log).await;
        let _ = self.producer.flush(Duration::from_secs(10));
        self.release().await;
        tracing::info!("outbox relay stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_bounded_by_half_the_grace() {
        let s = RelaySettings::default();
        assert_eq!(s.batch_deadline() * 2, s.takeover_grace);
    }
}
