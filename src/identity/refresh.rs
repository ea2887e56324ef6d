//! A value reloaded in the background ([`Refreshed`]): every `every`, and sooner when a
//! caller asks ([`Refreshed::fresher`]) but never more often than `min_gap`, so a flood of
//! unknown credentials cannot turn into a flood of reloads. Readers never wait for a reload
//! except the caller who asked, and that one only up to its own bound.
//!
//! The loader runs on the runtime that built the value (serve's main runtime), never on an
//! HTTP worker's, so its connections stay on one runtime.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify};

/// The latest loaded value and a way to ask for a fresher one.
#[derive(Clone)]
pub struct Refreshed<T> {
    rx: watch::Receiver<Arc<T>>,
    wake: Arc<Notify>,
}

impl<T: Send + Sync + 'static> Refreshed<T> {
    /// Starts reloading: `initial` now, then `load()` every `every`, or when asked but at most
    /// once per `min_gap`. A failed load keeps the previous value (and is logged as `what`).
    pub fn spawn<F, Fut>(what: &'static str, initial: T, every: Duration, min_gap: Duration, mut load: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<T>> + Send,
    {
        let (tx, rx) = watch::channel(Arc::new(initial));
        let wake = Arc::new(Notify::new());
        let woken = wake.clone();
        tokio::spawn(async move {
            let mut last = Instant::now();
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = woken.notified() => {
                        let since = last.elapsed();
                        if since < min_gap {
                            tokio::time::sleep(min_gap - since).await;
                        }
                    }
                    () = tx.closed() => return,
                }
                last = Instant::now();
                match load().await {
                    Ok(v) => {
                        if tx.send(Arc::new(v)).is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::warn!(what, error = %e, "reload failed; keeping the previous value"),
                }
            }
        });
        Self { rx, wake }
    }

    /// The value as last loaded.
    pub fn current(&self) -> Arc<T> {
        self.rx.borrow().clone()
    }

    /// Asks for a reload and waits for it up to `within`; the value then (reloaded or not).
    pub async fn fresher(&self, within: Duration) -> Arc<T> {
        let mut rx = self.rx.clone();
        rx.mark_unchanged();
        self.wake.notify_one();
        let _ = tokio::time::timeout(within, rx.changed()).await;
        let v = rx.borrow().clone();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn reloads_when_asked_but_never_faster_than_the_gap() {
        let loads = Arc::new(AtomicU32::new(0));
        let counted = loads.clone();
        let gap = Duration::from_millis(300);
        let r = Refreshed::spawn("test", 0u32, Duration::from_secs(3600), gap, move || {
            let n = counted.fetch_add(1, Ordering::SeqCst) + 1;
            async move { Ok(n) }
        });
        assert_eq!(*r.current(), 0);
        // Asked right after the start: the gap is waited out, then one load.
        assert_eq!(*r.fresher(Duration::from_secs(10)).await, 1);
        // Asked again at once, with a bound well inside the gap: no new value yet.
        assert_eq!(*r.fresher(Duration::from_millis(20)).await, 1);
        // The pending ask is served once the gap has passed, and only once.
        tokio::time::sleep(gap * 3).await;
        assert_eq!(loads.load(Ordering::SeqCst), 2);
        assert_eq!(*r.current(), 2);
    }
}
