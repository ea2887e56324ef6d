//! The outbox relay behind `process-outbox`: claims due outbox rows in id order, produces them
//! to Kafka keyed by product id, awaits every delivery report, then marks the delivered rows
//! published in one statement.
//!
//! Ordering: one relay is active at a time (session advisory lock on the connection it claims
//! and marks with; others stand by). Within a batch, a row that fails holds back the later
//! rows of the same product, which are re-sent after it, so the first delivery of each
//! product's events is in version order. A crash between produce and mark re-sends the batch:
//! at-least-once, duplicates are harmless to the versioned projection.
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
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use uuid::Uuid;

use super::{backoff, Shutdown};
use crate::bus::producer::{self, ProducerSettings};
use crate::bus::KafkaConnection;
use crate::config::names::OUTBOX_NOTIFY_CHANNEL;
use crate::store::{outbox_repo, pool, StoreError};
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
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            max_attempts: 10,
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
            poll_interval: Duration::from_secs(1),
        }
    }
}

/// Relay errors.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Postgres failed; the lock connection is dropped and re-acquired.
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

/// The relay: a lock-holding connection plus the producer.
pub struct OutboxRelay {
    database_url: String,
    producer: FutureProducer,
    settings: RelaySettings,
    conn: Option<AsyncPgConnection>,
    rebuild: Option<(KafkaConnection, ProducerSettings)>,
    /// Second connection that commits "published" marks while the next batch is claimed.
    marker: Option<AsyncPgConnection>,
    /// The mark in progress, and the ids it covers (excluded from the next claim).
    in_flight: Option<tokio::task::JoinHandle<(AsyncPgConnection, Result<usize, StoreError>)>>,
    in_flight_ids: Vec<i64>,
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
    /// A relay that has not yet taken the lock.
    pub fn new(database_url: String, producer: FutureProducer, settings: RelaySettings) -> Self {
        Self {
            database_url,
            producer,
            settings,
            conn: None,
            rebuild: None,
            marker: None,
            in_flight: None,
            in_flight_ids: Vec::new(),
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
        let Some(fatal) = self.producer.client().fatal_error() else {
            return;
        };
        let Some((kafka, settings)) = &self.rebuild else {
            return;
        };
        tracing::error!(error = ?fatal, "producer hit a fatal error; building a new one");
        match producer::build(kafka, settings) {
            Ok(p) => self.producer = p,
            Err(e) => tracing::error!(error = %e, "could not rebuild the producer"),
        }
    }

    /// True while this relay holds the lock.
    pub fn is_active(&self) -> bool {
        self.conn.is_some()
    }

    /// Tries once to become the active relay.
    pub async fn try_acquire(&mut self) -> Result<bool, StoreError> {
        if self.conn.is_some() {
            return Ok(true);
        }
        let mut conn = pool::connect(&self.database_url, Duration::from_secs(60)).await?;
        if outbox_repo::try_lock_relay(&mut conn).await? {
            self.conn = Some(conn);
            tracing::info!("outbox relay is active (holds the relay lock)");
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Waits for the "published" mark in progress, if any; returns the rows it marked.
    pub async fn flush(&mut self) -> Result<usize, StoreError> {
        let Some(handle) = self.in_flight.take() else {
            return Ok(0);
        };
        self.in_flight_ids.clear();
        let (conn, result) = handle
            .await
            .map_err(|e| StoreError::Pool(format!("mark task failed: {e}")))?;
        if result.is_ok() {
            self.marker = Some(conn);
        }
        result
    }

    /// Commits the "published" mark of `ids` on the marker connection, in the background.
    async fn start_mark(&mut self, ids: Vec<i64>) -> Result<(), StoreError> {
        let mut conn = match self.marker.take() {
            Some(c) => c,
            None => pool::connect(&self.database_url, Duration::from_secs(60)).await?,
        };
        self.in_flight_ids = ids.clone();
        self.in_flight = Some(tokio::spawn(async move {
            let r = outbox_repo::mark_published(&mut conn, &ids).await;
            (conn, r)
        }));
        Ok(())
    }

    /// Releases the lock (dropping the connection would too), after the mark in progress.
    pub async fn release(&mut self) {
        if let Err(e) = self.flush().await {
            tracing::warn!(error = %e, "last published mark failed; those rows will be sent again");
        }
        if let Some(mut c) = self.conn.take() {
            let _ = outbox_repo::unlock_relay(&mut c).await;
        }
    }

    /// Claims and publishes one batch. Needs the lock ([`try_acquire`](Self::try_acquire)).
    ///
    /// The "published" mark of a full batch is committed on a second connection while the
    /// next batch is claimed and produced (its rows are excluded from that claim); a partial
    /// batch is marked before returning. [`flush`](Self::flush) waits for a mark in progress.
    #[tracing::instrument(level = "debug", name = "relay_batch", skip_all)]
    pub async fn process_once(&mut self) -> Result<BatchOutcome, RelayError> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(RelayError::Store(StoreError::Pool("relay lock not held".into())));
        };
        let result = Self::publish_batch(conn, &self.producer, &self.settings, &self.in_flight_ids).await;
        let result = match result {
            Ok((out, delivered)) => self.finish_batch(out, delivered).await,
            Err(e) => {
                let _ = self.flush().await;
                Err(e)
            }
        };
        match &result {
            // The connection may be gone, and the lock with it: start over.
            Err(RelayError::Store(_)) => self.conn = None,
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
            self.start_mark(delivered).await?;
        }
        Ok(out)
    }

    /// Claims, produces and awaits one batch; returns the outcome and the delivered ids to mark.
    async fn publish_batch(
        conn: &mut AsyncPgConnection,
        producer: &FutureProducer,
        s: &RelaySettings,
        in_flight: &[i64],
    ) -> Result<(BatchOutcome, Vec<i64>), RelayError> {
        let t_claim = Instant::now();
        let rows = outbox_repo::claim_batch(conn, s.batch_size, in_flight).await?;
        let claim_ms = t_claim.elapsed().as_millis() as u64;
        let mut out = BatchOutcome {
            claimed: rows.len(),
            ..Default::default()
        };
        if rows.is_empty() {
            return Ok((out, Vec::new()));
        }
        // Enqueue everything, then await every delivery report.
        let t_produce = Instant::now();
        let mut pending = Vec::with_capacity(rows.len());
        for row in &rows {
            let rec = FutureRecord::to(&row.topic)
                .key(row.key.as_bytes())
                .payload(row.payload.as_bytes())
                .headers(headers_of(&row.headers));
            // Enqueue failures (size over the producer's limit, queue full) keep their own
            // error so they are classified like delivery failures.
            pending.push(producer.send_result(rec).map_err(|(e, _)| e));
        }
        let results = join_all(pending.into_iter().map(|f| async move {
            match f {
                Err(e) => Err(e),
                Ok(f) => match f.await {
                    Ok(Ok(_delivery)) => Ok(()),
                    Ok(Err((e, _))) => Err(e),
                    Err(_canceled) => Err(KafkaError::Canceled),
                },
            }
        }))
        .await;

        let produce_ms = t_produce.elapsed().as_millis() as u64;
        let now = Utc::now();
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
    /// interval; stand by while another relay is active; survive outages of both sides.
    pub async fn run_until_stopped(&mut self, shutdown: Shutdown) {
        let wake = Arc::new(Notify::new());
        let listener = tokio::spawn(listen_for_notifications(
            self.database_url.clone(),
            wake.clone(),
            shutdown.clone(),
        ));
        let policy = crate::failure::RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(10), 0, 0);
        let mut delays = policy.backoff();
        let mut last_gauges = Instant::now() - Duration::from_secs(60);
        while !shutdown.is_triggered() {
            if !self.is_active() {
                match self.try_acquire().await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::debug!("another relay holds the lock; standing by");
                        shutdown.sleep(Duration::from_secs(1)).await;
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
                    tokio::select! {
                        () = wake.notified() => {}
                        () = tokio::time::sleep(self.settings.poll_interval) => {}
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

/// Keeps a LISTEN connection open and turns notifications into wake-ups; reconnects after
/// failures. Lost notifications are covered by the poll interval.
async fn listen_for_notifications(url: String, wake: Arc<Notify>, shutdown: Shutdown) {
    use diesel_async::RunQueryDsl;
    use futures::StreamExt;
    while !shutdown.is_triggered() {
        let mut conn = match pool::connect(&url, Duration::from_secs(0)).await {
            Ok(c) => c,
            Err(_) => {
                shutdown.sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        if diesel::sql_query(format!("LISTEN {OUTBOX_NOTIFY_CHANNEL}"))
            .execute(&mut conn)
            .await
            .is_err()
        {
            shutdown.sleep(Duration::from_secs(2)).await;
            continue;
        }
        let mut stream = std::pin::pin!(conn.notifications_stream());
        loop {
            tokio::select! {
                n = stream.next() => match n {
                    Some(Ok(_)) => wake.notify_one(),
                    _ => break,
                },
                () = shutdown.wait() => return,
            }
        }
    }
}
