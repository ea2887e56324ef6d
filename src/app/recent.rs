//! [`Recent`]: a value read from the database kept for a short while, for reads that only
//! decorate an answer and change rarely (the product types a search counts facets of, the
//! category tree its paths are labelled from): every search read them twice from Postgres.
//!
//! A write through this process forgets the value at once ([`Recent::forget`]), so a search
//! after a type or category change here sees it; a change through another process shows
//! within the time to live. A load that started before a forget does not store what it read.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the decorations of a search are kept: a change through another `serve` process
/// shows in search facets within it.
pub const DECORATION_TTL: Duration = Duration::from_secs(1);

/// A value loaded at most once per time to live, shared by every HTTP worker.
pub struct Recent<T> {
    ttl: Duration,
    slot: Mutex<Slot<T>>,
}

struct Slot<T> {
    /// Bumped by every forget: a load that saw another generation keeps its value to itself.
    generation: u64,
    value: Option<(Instant, Arc<T>)>,
}

impl<T> Recent<T> {
    /// An empty cell keeping values for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            slot: Mutex::new(Slot {
                generation: 0,
                value: None,
            }),
        }
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Slot<T>> {
        // The lock is never held across a panic that leaves the slot half written.
        self.slot.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value loaded less than the time to live ago, else what `load` reads now (kept
    /// unless forgotten meanwhile). Loads that miss together each read: nothing waits on
    /// another caller's load.
    pub async fn get_or_load<E, Fut>(&self, load: impl FnOnce() -> Fut) -> Result<Arc<T>, E>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        let generation = {
            let slot = self.slot();
            if let Some((at, v)) = &slot.value {
                if at.elapsed() < self.ttl {
                    return Ok(v.clone());
                }
            }
            slot.generation
        };
        let loaded = Arc::new(load().await?);
        let mut slot = self.slot();
        if slot.generation == generation {
            slot.value = Some((Instant::now(), loaded.clone()));
        }
        Ok(loaded)
    }

    /// Forgets the value: the next read loads it.
    pub fn forget(&self) {
        let mut slot = self.slot();
        slot.generation += 1;
        slot.value = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    async fn load(r: &Recent<u32>, loads: &AtomicU32) -> u32 {
        *r.get_or_load(|| async { Ok::<_, ()>(loads.fetch_add(1, Ordering::SeqCst) + 1) })
            .await
            .expect("loads")
    }

    #[tokio::test]
    async fn a_value_is_loaded_once_per_time_to_live_and_again_after_a_forget() {
        let r = Recent::new(Duration::from_secs(60));
        let loads = AtomicU32::new(0);
        assert_eq!(load(&r, &loads).await, 1);
        assert_eq!(load(&r, &loads).await, 1, "kept");
        r.forget();
        assert_eq!(load(&r, &loads).await, 2, "loaded again");
        let expired = Recent::new(Duration::ZERO);
        assert_eq!(load(&expired, &loads).await, 3);
        assert_eq!(load(&expired, &loads).await, 4, "expired at once");
    }

    #[tokio::test]
    async fn a_load_that_overlapped_a_forget_is_not_kept_and_a_failed_load_keeps_nothing() {
        let r = Recent::new(Duration::from_secs(60));
        let v = r
            .get_or_load(|| async {
                r.forget();
                Ok::<_, ()>(7)
            })
            .await;
        assert_eq!(v.map(|v| *v), Ok(7), "the caller gets what it read");
        let loads = AtomicU32::new(10);
        assert_eq!(load(&r, &loads).await, 11, "the overlapped load was not kept");
        r.forget();
        let failed = r.get_or_load(|| async { Err::<u32, _>("down") }).await;
        assert_eq!(failed.err(), Some("down"));
        assert_eq!(load(&r, &loads).await, 12);
    }
}
