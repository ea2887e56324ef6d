//! The projection's Redis step: states waiting to be written to Redis, the newest per product.
//!
//! Redis is a cache and never holds the index back: the projection [`fold`](DeferredWrites::fold)s
//! each event's state in, [`put`](DeferredWrites::put) writes them all (bounded by
//! [`CACHE_WRITE_BOUND`]) beside the index, and [`after_put`](DeferredWrites::after_put) books
//! the answer: on success the entries are done (their offsets may be stored); on failure they
//! wait, and the next try comes after a jittered backoff. Each entry remembers the first offset
//! folded into it, which its partition must not be stored past until Redis took it.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::cache::product_cache::{PutOutcome, Writer};
use crate::cache::{CacheError, ProductCache};
use crate::domain::product::{EventEnvelope, Product};
use crate::failure::RetryPolicy;
use crate::telemetry::metrics::{PROJECTION_CACHE_DEFERRED, PROJECTION_VERSION_GAPS};

/// Longest a Redis write of the projection may take before it is deferred.
pub const CACHE_WRITE_BOUND: Duration = Duration::from_millis(500);

/// Where a message came from: topic, partition, offset.
pub type Source<'a> = (&'a str, i32, i64);

/// A Redis write waiting for Redis: the newest state of one product and where it came from.
#[derive(Debug, Clone)]
pub struct Entry {
    state: Product,
    /// Lowest version folded into this entry (for gap detection).
    first_version: i64,
    /// Topic of its messages.
    pub topic: String,
    /// Partition of its messages.
    pub partition: i32,
    /// Lowest offset folded into this entry: its partition is not stored past it.
    pub first_offset: i64,
    event_type: String,
}

/// Deferred writes taken by [`DeferredWrites::put`], given back to
/// [`DeferredWrites::after_put`].
pub type Taken = HashMap<Uuid, Entry>;

/// What a Redis write of the deferred states answered, per state.
pub type PutResult = Result<Vec<PutOutcome>, CacheError>;

/// What folding one event changed about the offsets held.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Folded {
    /// A version gap between two states waiting together.
    pub gap: bool,
    /// Offset to hold (a new entry, or an earlier offset of an entry delivered again).
    pub hold: Option<i64>,
    /// Offset whose hold moved to `hold`.
    pub release: Option<i64>,
}

/// The states waiting for Redis, newest per product, and when to try Redis next.
pub struct DeferredWrites {
    entries: HashMap<Uuid, Entry>,
    retry: RetryPolicy,
    /// No Redis attempt before this instant (after a failure), so the index is not slowed.
    retry_at: Option<Instant>,
    backoff: Box<dyn Iterator<Item = Duration> + Send + Sync>,
    /// Entries last added to the process-wide gauge.
    reported: usize,
}

impl DeferredWrites {
    /// Empty, backing off after a failure by `retry`'s schedule.
    pub fn new(retry: RetryPolicy) -> Self {
        Self {
            entries: HashMap::new(),
            backoff: Box::new(retry.backoff()),
            retry,
            retry_at: None,
            reported: 0,
        }
    }

    /// Products whose write waits.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Folds `ev` (from `source`) in: the newest state per product waits. An event the index
    /// refuses (dead-lettered) is still a valid state of its product: it is cached too.
    pub fn fold(&mut self, ev: &EventEnvelope, (topic, partition, offset): Source<'_>) -> Folded {
        let mut folded = Folded::default();
        if let Some(prev) = self.entries.get(&ev.aggregate_id) {
            // Two versions of one product waiting together: the gap check against Redis only
            // sees the first, so check this step here.
            if ev.aggregate_version > prev.state.version + 1 {
                folded.gap = true;
                PROJECTION_VERSION_GAPS.inc();
                tracing::warn!(product.id = %ev.aggregate_id, product.version = ev.aggregate_version, previous_version = prev.state.version,
                    "version gap: applied full state past missing versions");
            }
        }
        let entry = self.entries.entry(ev.aggregate_id).or_insert_with(|| {
            folded.hold = Some(offset);
            Entry {
                state: ev.state.clone(),
                first_version: ev.aggregate_version,
                topic: topic.to_owned(),
                partition,
                first_offset: offset,
                event_type: ev.event_type.clone(),
            }
        });
        entry.first_version = entry.first_version.min(ev.aggregate_version);
        if offset < entry.first_offset {
            // Delivered again after a seek back: the hold moves to the earlier offset.
            folded.hold = Some(offset);
            folded.release = Some(entry.first_offset);
            entry.first_offset = offset;
        }
        if ev.state.version >= entry.state.version {
            entry.state = ev.state.clone();
            entry.event_type = ev.event_type.clone();
        }
        self.report();
        folded
    }

    /// The write of the waiting states to `cache`. It takes them (so that it can run beside
    /// the index, which does not touch them) and gives them back for
    /// [`after_put`](Self::after_put). `None` when nothing waits or a recent failure says to
    /// wait (`force` tries anyway).
    pub fn put(
        &mut self,
        cache: &ProductCache,
        force: bool,
    ) -> Option<impl Future<Output = (Taken, PutResult)> + use<>> {
        if self.entries.is_empty() || (!force && self.retry_at.is_some_and(|t| Instant::now() < t)) {
            return None;
        }
        let taken = std::mem::take(&mut self.entries);
        let cache = cache.clone();
        Some(async move {
            let result = {
                let states: Vec<&Product> = taken.values().map(|e| &e.state).collect();
                tokio::time::timeout(CACHE_WRITE_BOUND, cache.put_many(&states, Writer::Projection))
                    .await
                    .unwrap_or(Err(CacheError::Timeout))
            };
            (taken, result)
        })
    }

    /// Books the answer of [`put`](Self::put). Returns the version gaps seen and the entries
    /// written (whose held offsets are released), empty when Redis failed (they wait again).
    pub fn after_put(&mut self, taken: Taken, put: PutResult) -> (usize, Vec<Entry>) {
        let mut gaps = 0;
        let written = match put {
            Ok(puts) => {
                for (e, put) in taken.values().zip(puts) {
                    if put.projected > 0 && e.first_version > put.projected + 1 {
                        gaps += 1;
                        PROJECTION_VERSION_GAPS.inc();
                        tracing::warn!(product.id = %e.state.id, product.version = e.first_version, previous_version = put.projected,
                            event.r#type = %e.event_type, "version gap: applied full state past missing versions");
                    }
                }
                if self.retry_at.take().is_some() {
                    tracing::info!(written = taken.len(), "redis answers again; deferred writes done");
                }
                self.backoff = Box::new(self.retry.backoff());
                taken.into_values().collect()
            }
            Err(e) => {
                // They wait for the next try (nothing was folded meanwhile: the index does not
                // touch them).
                self.entries = taken;
                let d = self.backoff.next().unwrap_or(self.retry.max_delay);
                if self.retry_at.is_none() {
                    tracing::warn!(error = %e, deferred = self.entries.len(),
                        "redis write failed; search goes on, cache writes wait for redis");
                }
                self.retry_at = Some(Instant::now() + d);
                Vec::new()
            }
        };
        self.report();
        (gaps, written)
    }

    /// Writes what waits now (unless a recent failure says to wait; `force` tries anyway).
    /// Returns the version gaps seen and the entries written.
    pub async fn flush(&mut self, cache: &ProductCache, force: bool) -> (usize, Vec<Entry>) {
        match self.put(cache, force) {
            Some(put) => {
                let (taken, result) = put.await;
                self.after_put(taken, result)
            }
            None => (0, Vec::new()),
        }
    }

    /// Drops what waits (its messages are delivered again to the partition's next owner).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.report();
    }

    /// Adds this change in waiting writes to the process-wide gauge (one process runs a
    /// projection per partition).
    fn report(&mut self) {
        let now = self.entries.len();
        let delta = i64::try_from(now).unwrap_or(i64::MAX) - i64::try_from(self.reported).unwrap_or(i64::MAX);
        PROJECTION_CACHE_DEFERRED.add(delta);
        self.reported = now;
    }
}
