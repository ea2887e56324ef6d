//! Adaptive refresh: documents searchable within about `every` of being indexed while the
//! projection keeps up, and the index's own `refresh_interval` alone under a backlog.
//!
//! A refresh makes what was indexed visible to search; OpenSearch does one per
//! `refresh_interval` (1 s shipped: `OPENSEARCH_REFRESH_INTERVAL_MS`), and a shorter interval
//! costs indexing throughput all the time (each refresh writes a small segment that merges
//! later). The projection knows when freshness is what matters: when its batches are not full
//! it is keeping up, a user is waiting for a write to show, and one `_refresh` per `every`
//! (100 ms shipped, `PROJECTION_REFRESH_EVERY`) costs little. When a batch is full it is
//! working through a backlog, throughput is what matters, and it leaves refreshes to the index
//! for [`BACKLOG_HOLD`].
//!
//! One [`Refresher`] serves all of a process's lanes: at most one refresh is pending at a time,
//! sent no sooner than `every` after the previous one; it is scheduled by the first write after
//! the previous was sent, so every write is followed by a refresh that started after it was
//! indexed. A failed refresh is counted and logged, never retried: the index's interval
//! refreshes anyway.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use super::{index, SearchClient};
use crate::telemetry::metrics::PROJECTION_REFRESHES;

/// How long a full batch (a backlog) leaves refreshes to the index's own interval.
pub const BACKLOG_HOLD: Duration = Duration::from_secs(1);

/// Bound of one refresh request.
const REFRESH_TIMEOUT: Duration = Duration::from_secs(2);

/// The process's refresher (cheap to clone: one shared state).
#[derive(Clone)]
pub struct Refresher {
    inner: Arc<Inner>,
}

struct Inner {
    client: SearchClient,
    index: String,
    every: Duration,
    /// A refresh is scheduled and not yet sent.
    scheduled: AtomicBool,
    /// When the last refresh was sent, and until when a backlog holds refreshes off.
    times: Mutex<Times>,
}

#[derive(Default)]
struct Times {
    last_sent: Option<Instant>,
    backlog_until: Option<Instant>,
}

/// What to do after a batch (pure, see [`Refresher::after_batch`]).
#[derive(Debug, PartialEq, Eq)]
enum Plan {
    /// Nothing: no change, a backlog, or a refresh already pending.
    Nothing,
    /// Send a refresh after this delay.
    RefreshIn(Duration),
}

fn plan(changed: usize, full: bool, pending: bool, now: Instant, every: Duration, t: &mut Times) -> Plan {
    if full {
        t.backlog_until = Some(now + BACKLOG_HOLD);
        return Plan::Nothing;
    }
    if changed == 0 || pending || t.backlog_until.is_some_and(|u| now < u) {
        return Plan::Nothing;
    }
    let wait = t
        .last_sent
        .map_or(Duration::ZERO, |l| (l + every).saturating_duration_since(now));
    Plan::RefreshIn(wait)
}

impl Refresher {
    /// A refresher of `index` at most once per `every`; `None` when `every` is zero (the index's
    /// interval alone).
    pub fn new(client: SearchClient, index: String, every: Duration) -> Option<Self> {
        (!every.is_zero()).then(|| Self {
            inner: Arc::new(Inner {
                client,
                index,
                every,
                scheduled: AtomicBool::new(false),
                times: Mutex::new(Times::default()),
            }),
        })
    }

    /// After a lane indexed a batch: `changed` documents written, `full` when the batch was full
    /// (a backlog). Schedules a refresh when one is due (see the module docs); never waits.
    pub fn after_batch(&self, changed: usize, full: bool) {
        let now = Instant::now();
        let pending = self.inner.scheduled.load(Ordering::Acquire);
        let decided = {
            let mut t = self
                .inner
                .times
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            plan(changed, full, pending, now, self.inner.every, &mut t)
        };
        let Plan::RefreshIn(wait) = decided else { return };
        if self.inner.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let inner = self.inner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(wait).await;
            // Writes indexed from here on schedule the next refresh; those before are in this one.
            inner.scheduled.store(false, Ordering::Release);
            inner
                .times
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .last_sent = Some(Instant::now());
            let sent = tokio::time::timeout(REFRESH_TIMEOUT, index::refresh(&inner.client, &inner.index)).await;
            let result = match sent {
                Ok(Ok(())) => "ok",
                Ok(Err(e)) => {
                    tracing::debug!(index = %inner.index, error = %e, "refresh failed; the index's interval refreshes anyway");
                    "failed"
                }
                Err(_) => {
                    tracing::debug!(index = %inner.index, "refresh timed out; the index's interval refreshes anyway");
                    "failed"
                }
            };
            PROJECTION_REFRESHES.with_label_values(&[result]).inc();
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EVERY: Duration = Duration::from_millis(100);

    #[test]
    fn a_change_at_less_than_a_full_batch_is_refreshed_at_once_then_no_sooner_than_every() {
        let now = Instant::now();
        let mut t = Times::default();
        assert_eq!(
            plan(3, false, false, now, EVERY, &mut t),
            Plan::RefreshIn(Duration::ZERO)
        );
        t.last_sent = Some(now);
        let later = now + Duration::from_millis(30);
        assert_eq!(
            plan(3, false, false, later, EVERY, &mut t),
            Plan::RefreshIn(Duration::from_millis(70))
        );
        assert_eq!(
            plan(3, false, true, later, EVERY, &mut t),
            Plan::Nothing,
            "one pending at a time"
        );
        assert_eq!(
            plan(0, false, false, later, EVERY, &mut t),
            Plan::Nothing,
            "nothing changed"
        );
    }

    #[test]
    fn a_full_batch_leaves_refreshes_to_the_index_for_a_while() {
        let now = Instant::now();
        let mut t = Times::default();
        assert_eq!(plan(500, true, false, now, EVERY, &mut t), Plan::Nothing);
        let soon = now + Duration::from_millis(500);
        assert_eq!(
            plan(3, false, false, soon, EVERY, &mut t),
            Plan::Nothing,
            "still a backlog"
        );
        let after = now + BACKLOG_HOLD + Duration::from_millis(1);
        assert_eq!(
            plan(3, false, false, after, EVERY, &mut t),
            Plan::RefreshIn(Duration::ZERO)
        );
    }
}
