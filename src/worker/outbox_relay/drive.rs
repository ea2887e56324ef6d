//! The relay's one loop ([`OutboxRelay::drive`]), for `process-outbox --follow` and the one-shot
//! run alike: what differs is only when it stops ([`Until`]) and what it does between batches
//! ([`OutboxRelay::after_batch`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{BatchOutcome, OutboxRelay, RelayError};
use crate::store::{outbox_listener, StoreError};
use crate::worker::Shutdown;

/// When [`OutboxRelay::drive`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Only at shutdown (`process-outbox --follow`): idle, it waits for a NOTIFY or the poll
    /// interval; owning no slice, it joins again; every failure is retried with backoff.
    Stopped,
    /// Once its slices, and any slice left free with publishable rows, have nothing to claim
    /// (the one-shot run). Kafka refusing every batch for `broker_timeout`, or Postgres
    /// failing, ends it with an error.
    Drained {
        /// How long Kafka may refuse every batch.
        broker_timeout: Duration,
    },
}

/// What a drive published.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    /// Rows published.
    pub published: usize,
    /// Batches that claimed rows.
    pub batches: usize,
    /// Failed attempts.
    pub failed: usize,
    /// Rows parked.
    pub parked: usize,
}

/// Why a drive until drained ended early.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    /// Kafka refused every batch for the drive's bound.
    #[error("Kafka refused every batch for {}: {error}; {published} events published, the rest stay pending", humantime::format_duration(*.bound))]
    BrokerRefused {
        /// The bound.
        bound: Duration,
        /// The last refusal.
        error: String,
        /// Published before.
        published: usize,
    },
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl OutboxRelay {
    /// The relay's one loop, for the daemon and the one-shot run alike: batches while there
    /// are rows, idle or done when there are none, failures backed off with jitter (at most
    /// ~2 s between attempts following, 5 s one-shot), `on_batch` told of every batch.
    pub async fn drive(
        &mut self,
        until: Until,
        shutdown: &Shutdown,
        on_batch: &mut (dyn FnMut(&BatchOutcome) + Send),
    ) -> Result<Tally, DriveError> {
        let follow = until == Until::Stopped;
        let wake = Arc::new(Notify::new());
        let listener = follow.then(|| {
            tokio::spawn(outbox_listener::listen(
                self.database_url.clone(),
                wake.clone(),
                shutdown.token().clone(),
            ))
        });
        // Following: a broker back from a stall is used within seconds (chaos stop-kafka), and
        // a down one costs an attempt per few seconds.
        let max = if follow {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(5)
        };
        let policy = crate::failure::RetryPolicy::new(Duration::from_millis(200), max, 0, 0);
        let mut delays = policy.backoff();
        let mut last_gauges = Instant::now() - Duration::from_secs(60);
        let mut last_progress = Instant::now();
        let mut tally = Tally::default();
        let ended = loop {
            if shutdown.is_triggered() {
                break Ok(());
            }
            if follow && !self.is_active() && !self.join_or_wait(shutdown, &mut delays, policy.max_delay).await {
                continue;
            }
            if follow && last_gauges.elapsed() > Duration::from_secs(5) {
                let _ = self.update_gauges().await;
                last_gauges = Instant::now();
            }
            match self.process_once().await {
                Ok(o) => {
                    delays = policy.backoff();
                    tally.add(&o);
                    on_batch(&o);
                    if o.published > 0 {
                        last_progress = Instant::now();
                    }
                    match self.after_batch(until, &o, &wake, shutdown).await {
                        Ok(true) => {}
                        Ok(false) => break Ok(()),
                        Err(e) => break Err(DriveError::Store(e)),
                    }
                }
                Err(RelayError::Store(e)) if !follow => break Err(DriveError::Store(e)),
                Err(e) => {
                    if let (Until::Drained { broker_timeout }, RelayError::Broker(error)) = (until, &e) {
                        if last_progress.elapsed() > broker_timeout {
                            break Err(DriveError::BrokerRefused {
                                bound: broker_timeout,
                                error: error.clone(),
                                published: tally.published,
                            });
                        }
                    }
                    let d = delays.next().unwrap_or(policy.max_delay);
                    tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "outbox batch failed; nothing marked, will retry");
                    shutdown.sleep(d).await;
                }
            }
        };
        if let Some(l) = listener {
            l.abort();
        }
        ended.map(|()| tally)
    }

    /// Following and owning no slice: joins (true), or waits (other relays own every slice, or
    /// Postgres cannot be reached: backed off) and says false.
    async fn join_or_wait(
        &mut self,
        shutdown: &Shutdown,
        delays: &mut (impl Iterator<Item = Duration> + Send),
        max: Duration,
    ) -> bool {
        match self.try_acquire().await {
            Ok(true) => true,
            Ok(false) => {
                tracing::debug!("other relays own every slice; standing by");
                shutdown.sleep(self.settings.rebalance_interval).await;
                false
            }
            Err(e) => {
                let d = delays.next().unwrap_or(max);
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "cannot reach PostgreSQL; retrying");
                shutdown.sleep(d).await;
                false
            }
        }
    }

    /// After a batch: go on at once (a full batch, or any rows one-shot), wait (following:
    /// for a NOTIFY, the poll interval, or a fenced slice's grace), or stop (one-shot: nothing
    /// left in its slices nor in slices left free). `Ok(false)` stops.
    async fn after_batch(
        &mut self,
        until: Until,
        o: &BatchOutcome,
        wake: &Notify,
        shutdown: &Shutdown,
    ) -> Result<bool, StoreError> {
        match until {
            Until::Stopped => {
                if o.claimed as i64 >= self.settings.batch_size {
                    return Ok(true);
                }
                let idle = self
                    .fenced_for()
                    .map_or(self.settings.poll_interval, |f| f.min(self.settings.poll_interval));
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(idle) => {}
                    () = shutdown.wait() => {}
                }
                Ok(true)
            }
            Until::Drained { .. } => {
                if o.claimed > 0 {
                    return Ok(true);
                }
                // Slices taken from a relay that died holding them wait out the grace.
                if let Some(wait) = self.fenced_for() {
                    shutdown.sleep(wait).await;
                    return Ok(true);
                }
                // Done with its own slices; a slice let go of meanwhile by another relay
                // (which may have finished too) is this run's to publish before it exits.
                Ok(self.take_unowned_publishable().await? > 0)
            }
        }
    }
}

impl Tally {
    fn add(&mut self, o: &BatchOutcome) {
        if o.claimed > 0 {
            self.batches += 1;
        }
        self.published += o.published;
        self.failed += o.failed;
        self.parked += o.parked;
    }
}
