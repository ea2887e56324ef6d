//! The outbox relay behind `process-outbox`: claims due outbox rows in id order, produces them
//! to Kafka keyed by product id, awaits every delivery report, then marks the delivered rows
//! published in one statement.
//!
//! Scale-out: the outbox is cut into slices by product id (`store::outbox_slices`); any
//! number of relays share them, each owning about `slices / relays` through one advisory
//! lock per slice on the connection it claims with. Relays rebalance between batches (let go
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
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{backoff, Shutdown};
use crate::bus::producer::{self, ProducerSettings};
use crate::bus::KafkaConnection;
use crate::store::outbox_marker::OutboxMarker;
use crate::store::outbox_slices::{self, Takeover, OUTBOX_SLICES};
use crate::store::{outbox_listener, outbox_repo, pool, StoreError};
use crate::telemetry::metrics::{
    OUTBOX_BATCH_SIZE, OUTBOX_ERRORS, OUTBOX_OLDEST_AGE, OUTBOX_PARKED, OUTBOX_PENDING, OUTBOX_PUBLISHED,
    OUTBOX_PUBLISH_LATENCY, OUTBOX_SLICES_OWNED, OUTBOX_SLICE_TAKEOVERS,
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
            batch_size: 1000,
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

/// The relay: a connection holding its slices' locks, plus the producer.
pub struct OutboxRelay {
    database_url: String,
    producer: FutureProducer,
    settings: RelaySettings,
    /// Name in `outbox_slice_owners` and in logs: host, pid namespace, pid, random suffix.
    owner: String,
    /// Claims and marks; holds the membership lock and the slice locks.
    conn: Option<AsyncPgConnection>,
    /// Slices owned (their locks are held on `conn`).
    owned: BTreeSet<i16>,
    /// Slices taken from a lost owner: no producing for them before this instant.
    fenced_until: HashMap<i16, Instant>,
    last_rebalance: Option<Instant>,
    /// The owned slices, for observers (tests, status).
    owned_tx: tokio::sync::watch::Sender<Vec<i16>>,
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
        let owner = format!(
            "{}:{}:{}:{}",
            host_name(),
            pid_namespace(),
            std::process::id(),
            &Uuid::new_v4().simple().to_string()[..6]
        );
        Self {
            marker: OutboxMarker::new(database_url.clone()),
            database_url,
            producer,
            settings,
            owner,
            conn: None,
            owned: BTreeSet::new(),
            fenced_until: HashMap::new(),
            last_rebalance: None,
            owned_tx: tokio::sync::watch::channel(Vec::new()).0,
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
        self.conn.is_some() && !self.owned.is_empty()
    }

    /// This relay's name (in `outbox_slice_owners` and its logs).
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The slices this relay owns, as they change.
    pub fn slices(&self) -> tokio::sync::watch::Receiver<Vec<i16>> {
        self.owned_tx.subscribe()
    }

    /// How long until every owned slice may be produced for (slices taken from a lost owner
    /// wait out the takeover grace); `None` when none waits.
    pub fn fenced_for(&self) -> Option<Duration> {
        let now = Instant::now();
        self.fenced_until.values().filter(|t| **t > now).max().map(|t| *t - now)
    }

    /// Joins the relays if needed and takes this relay's share of the slices now; true when
    /// it owns at least one.
    pub async fn try_acquire(&mut self) -> Result<bool, StoreError> {
        if let Err(e) = self.rebalance().await {
            self.lose_slices();
            return Err(e);
        }
        Ok(!self.owned.is_empty())
    }

    /// Forgets the connection and every slice with it (their locks ended with the session,
    /// or will when the connection drops).
    fn lose_slices(&mut self) {
        if self.conn.take().is_some() && !self.owned.is_empty() {
            tracing::warn!(relay = %self.owner, slices = self.owned.len(), "lost the Postgres session; no longer owns its slices");
        }
        self.owned.clear();
        self.fenced_until.clear();
        self.last_rebalance = None;
        self.publish_ownership();
    }

    fn publish_ownership(&self) {
        OUTBOX_SLICES_OWNED.set(self.owned.len() as i64);
        self.owned_tx.send_replace(self.owned.iter().copied().collect());
    }

    /// Aims at `ceil(slices / live relays)` slices: lets go of extras (once the batch in
    /// flight is marked) and takes free ones.
    async fn rebalance(&mut self) -> Result<(), StoreError> {
        if self.conn.is_none() {
            let mut conn = pool::connect(&self.database_url, Duration::from_secs(60)).await?;
            outbox_slices::join(&mut conn).await?;
            self.conn = Some(conn);
            self.owned.clear();
            self.fenced_until.clear();
        }
        self.last_rebalance = Some(Instant::now());
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let relays = outbox_slices::live_relays(conn).await?.max(1);
        let target = usize::try_from((i64::from(OUTBOX_SLICES) + relays - 1) / relays).unwrap_or(1);
        let (mut taken, mut released) = (Vec::new(), Vec::new());
        if self.owned.len() > target {
            // Nothing of a slice may be in flight when another relay takes it.
            self.flush().await?;
            let extras: Vec<i16> = self
                .owned
                .iter()
                .rev()
                .take(self.owned.len() - target)
                .copied()
                .collect();
            let Some(conn) = self.conn.as_mut() else {
                return Ok(());
            };
            for slice in extras {
                // Observers see it go before another relay can take it.
                self.owned.remove(&slice);
                self.fenced_until.remove(&slice);
                self.owned_tx.send_replace(self.owned.iter().copied().collect());
                outbox_slices::release(conn, slice).await?;
                released.push(slice);
            }
        } else if self.owned.len() < target {
            let held = outbox_slices::held(conn).await?;
            let free: Vec<i16> = (0..OUTBOX_SLICES).filter(|s| !held.contains(s)).collect();
            for slice in free {
                if self.owned.len() >= target {
                    break;
                }
                if let Some(how) = outbox_slices::try_take(conn, slice, &self.owner).await? {
                    let grace = self.settings.takeover_grace;
                    Self::took(&mut self.owned, &mut self.fenced_until, grace, slice, how);
                    taken.push(slice);
                }
            }
        }
        if !taken.is_empty() && taken.len() == self.owned.len() {
            tracing::info!(relay = %self.owner, relays, "outbox relay is active (owns {} of {OUTBOX_SLICES} slices)", self.owned.len());
        }
        if !taken.is_empty() || !released.is_empty() {
            let fenced = taken.iter().filter(|s| self.fenced_until.contains_key(s)).count();
            tracing::info!(
                relay = %self.owner,
                relays,
                owned = self.owned.len(),
                taken = %ranges(&taken),
                released = %ranges(&released),
                waiting_out_grace = fenced,
                "outbox slices rebalanced"
            );
            self.publish_ownership();
        }
        Ok(())
    }

    /// Records a slice just taken (its lock is held on `conn`): owned, and fenced for the
    /// takeover grace when its previous owner may still be producing. (A function of the
    /// fields, not `&mut self`: callers hold `conn` borrowed meanwhile.)
    fn took(
        owned: &mut BTreeSet<i16>,
        fenced_until: &mut HashMap<i16, Instant>,
        grace: Duration,
        slice: i16,
        how: Takeover,
    ) {
        owned.insert(slice);
        let label = match how {
            Takeover::Clean => "clean",
            // A relay process that is gone cannot produce: no grace.
            Takeover::FromLostOwner(previous) if process_is_gone(&previous) => "lost_owner_gone",
            Takeover::FromLostOwner(_) => {
                fenced_until.insert(slice, Instant::now() + grace);
                "lost_owner"
            }
        };
        OUTBOX_SLICE_TAKEOVERS.with_label_values(&[label]).inc();
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
        let taken = match self.take_unowned_publishable_inner().await {
            Ok(t) => t,
            Err(e) => {
                let _ = self.flush().await;
                self.lose_slices();
                return Err(e);
            }
        };
        if !taken.is_empty() {
            self.last_rebalance = Some(Instant::now());
            let fenced = taken.iter().filter(|s| self.fenced_until.contains_key(s)).count();
            tracing::info!(
                relay = %self.owner,
                owned = self.owned.len(),
                taken = %ranges(&taken),
                waiting_out_grace = fenced,
                "outbox slices nobody owned had rows to publish; taken"
            );
            self.publish_ownership();
        }
        Ok(taken.len())
    }

    async fn take_unowned_publishable_inner(&mut self) -> Result<Vec<i16>, StoreError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(StoreError::Pool("the relay has not joined".into()));
        };
        let held = outbox_slices::held(conn).await?;
        let free: Vec<i16> = (0..OUTBOX_SLICES)
            .filter(|s| !held.contains(s) && !self.owned.contains(s))
            .collect();
        let mut taken = Vec::new();
        for slice in outbox_repo::publishable_slices(conn, &free).await? {
            if let Some(how) = outbox_slices::try_take(conn, slice, &self.owner).await? {
                let grace = self.settings.takeover_grace;
                Self::took(&mut self.owned, &mut self.fenced_until, grace, slice, how);
                taken.push(slice);
            }
        }
        Ok(taken)
    }

    /// Pending rows no relay may publish yet (retry backoff), for a one-shot run's summary.
    pub async fn waiting_for_retry(&mut self) -> Result<outbox_repo::RetryWait, StoreError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(Default::default());
        };
        outbox_repo::waiting_for_retry(conn).await
    }

    /// The slices to claim from now: owned and not waiting out a takeover grace (`None`
    /// when that is every slice).
    fn producible(&mut self) -> Option<Vec<i16>> {
        let now = Instant::now();
        self.fenced_until.retain(|_, t| *t > now);
        if self.fenced_until.is_empty() && self.owned.len() == OUTBOX_SLICES as usize {
            return None;
        }
        Some(
            self.owned
                .iter()
                .filter(|s| !self.fenced_until.contains_key(s))
                .copied()
                .collect(),
        )
    }

    /// Waits for the "published" mark in progress, if any; returns the rows it marked.
    pub async fn flush(&mut self) -> Result<usize, StoreError> {
        self.marker.flush().await
    }

    /// Lets go of every slice cleanly, after the mark in progress (dropping the connection
    /// would release the locks too, but the next owners would wait out the grace).
    pub async fn release(&mut self) {
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "last published mark failed; those rows will be sent again");
        }
        if let Some(mut c) = self.conn.take() {
            let owned = std::mem::take(&mut self.owned);
            self.publish_ownership();
            for slice in owned {
                if let Err(e) = outbox_slices::release(&mut c, slice).await {
                    tracing::warn!(error = %e, slice, "could not let go of a slice cleanly");
                    break;
                }
            }
        }
        self.lose_slices();
    }

    /// Claims and publishes one batch from the owned slices. Needs
    /// [`try_acquire`](Self::try_acquire) first; rebalances every `rebalance_interval`.
    ///
    /// The "published" mark of a full batch is committed on a second connection while the
    /// next batch is claimed and produced (its rows are excluded from that claim); a partial
    /// batch is marked before returning. [`flush`](Self::flush) waits for a mark in progress.
    #[tracing::instrument(level = "debug", name = "relay_batch", skip_all)]
    pub async fn process_once(&mut self) -> Result<BatchOutcome, RelayError> {
        if self.conn.is_none() {
            return Err(RelayError::Store(StoreError::Pool("the relay has not joined".into())));
        }
        if self
            .last_rebalance
            .is_none_or(|t| t.elapsed() >= self.settings.rebalance_interval)
        {
            if let Err(e) = self.rebalance().await {
                let _ = self.flush().await;
                self.lose_slices();
                return Err(e.into());
            }
        }
        let slices = self.producible();
        if slices.as_ref().is_some_and(Vec::is_empty) {
            return Ok(BatchOutcome::default());
        }
        let Some(conn) = self.conn.as_mut() else {
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
            Err(RelayError::Store(_)) => self.lose_slices(),
            Err(RelayError::Broker(_)) => self.heal_producer(),
            Ok(_) => {}
        }
        result
    }

    async fn finish_batch(&mut self, out: BatchOutcome, delivered: Vec<i64>) -> Result<BatchOutcome, RelayError> {
        // The previous mark must be committed before the next one starts (one marker conn).
        self.flush().await?;
        if (out.claimed as i64) < self.settings.batch_size {
            if let Some(conn) = self.conn.as_mut() {
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
                        let delay = backoff(s.retry_base, s.retry_max, u32::try_from(row.attempts).unwrap_or(0));
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
        let Some(conn) = self.conn.as_mut() else {
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
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(outbox_listener::listen(
            self.database_url.clone(),
            wake.clone(),
            shutdown.token().clone(),
        ));
        let policy = crate::failure::RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(10), 0, 0);
        let mut delays = policy.backoff();
        let mut last_gauges = Instant::now() - Duration::from_secs(60);
        while !shutdown.is_triggered() {
            if !self.is_active() {
                match self.try_acquire().await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!("other relays own every slice; standing by");
                        shutdown.sleep(self.settings.rebalance_interval).await;
                        continue;
                    }
                    Err(e) => {
                        let d = delays.next().unwrap_or(policy.max_delay);
                        tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "cannot reach PostgreSQL; retrying");
                        shutdown.sleep(d).await;
                        continue;
                    }
                }
            }
            if last_gauges.elapsed() > Duration::from_secs(5) {
                let _ = self.update_gauges().await;
                last_gauges = Instant::now();
            }
            match self.process_once().await {
                Ok(o) => {
                    delays = policy.backoff();
                    if o.published > 0 || o.failed > 0 {
                        tracing::info!(
                            published = o.published,
                            failed = o.failed,
                            parked = o.parked,
                            held_back = o.held_back,
                            "outbox batch published"
                        );
                    }
                    if o.claimed as i64 >= self.settings.batch_size {
                        continue;
                    }
                    let idle = self
                        .fenced_for()
                        .map_or(self.settings.poll_interval, |f| f.min(self.settings.poll_interval));
                    tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep(idle) => {}
                        () = shutdown.wait() => {}
                    }
                }
                Err(e) => {
                    let d = delays.next().unwrap_or(policy.max_delay);
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "outbox batch failed; nothing marked, will retry");
                    shutdown.sleep(d).await;
                }
            }
        }
        listener.abort();
        let _ = self.producer.flush(Duration::from_secs(10));
        self.release().await;
        tracing::info!("outbox relay stopped");
    }
}

/// This machine's name, for relay names (`HOSTNAME`, else `/etc/hostname`, else "relay").
fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "relay".to_owned())
}

/// Slices as ranges, e.g. `0-15,32,40-47` (`-` when none).
fn ranges(slices: &[i16]) -> String {
    let mut sorted = slices.to_vec();
    sorted.sort_unstable();
    let mut out: Vec<String> = Vec::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    if out.is_empty() {
        "-".to_owned()
    } else {
        out.join(",")
    }
}

/// This process's pid namespace (`/proc/self/ns/pid`, e.g. `pid:[4026531836]`), or "-".
fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().trim_start_matches("pid:").replace(['[', ']'], ""))
        .unwrap_or_else(|| "-".to_owned())
}

/// True when a relay named `owner` ran on this host, in this pid namespace, and its process
/// no longer exists: it cannot have anything in flight. Anything else (another host or
/// container, a pid in use again, this very process) counts as possibly alive.
fn process_is_gone(owner: &str) -> bool {
    let mut parts = owner.split(':');
    let (Some(host), Some(ns), Some(pid)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return false;
    };
    host == host_name()
        && ns != "-"
        && ns == pid_namespace()
        && pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(pid: u32) -> String {
        format!("{}:{}:{pid}:abcdef", host_name(), pid_namespace())
    }

    #[test]
    fn only_a_relay_process_known_to_have_ended_skips_the_grace() {
        assert!(process_is_gone(&name(u32::MAX)), "no such pid here");
        assert!(!process_is_gone(&name(std::process::id())), "this process");
        assert!(!process_is_gone(&name(1)), "a live pid");
        assert!(
            !process_is_gone(&format!("elsewhere:{}:{}:abcdef", pid_namespace(), u32::MAX)),
            "another host"
        );
        assert!(
            !process_is_gone(&format!("{}:1:{}:abcdef", host_name(), u32::MAX)),
            "another pid namespace"
        );
        assert!(!process_is_gone("garbage"));
    }

    #[test]
    fn slices_are_logged_as_ranges() {
        assert_eq!(ranges(&[3, 0, 1, 2, 7, 9, 10]), "0-3,7,9-10");
        assert_eq!(ranges(&[]), "-");
    }

    #[test]
    fn a_batch_is_bounded_by_half_the_grace() {
        let s = RelaySettings::default();
        assert_eq!(s.batch_deadline() * 2, s.takeover_grace);
    }
}
