//! A circuit breaker for Redis calls on the request path, so that while Redis is down or
//! stalled a request does not wait for it at all.
//!
//! Closed: calls run; `failure_threshold` consecutive failures open it. Open: calls are
//! refused at once for `open_for`. Then half-open: exactly one trial call runs (the others are
//! refused); its success closes the breaker, its failure (or its cancellation) opens it again.
//! Each state change is logged once and counted in `aliexpress_cache_breaker_*` metrics.

use std::sync::Mutex;
use std::time::Instant;

pub use crate::config::redis::BreakerSettings;
use crate::telemetry::metrics;

/// The breaker's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls run.
    Closed,
    /// Calls are refused until the open period ends.
    Open,
    /// One trial call is running; the others are refused.
    HalfOpen,
}

impl BreakerState {
    /// Value of the `aliexpress_cache_breaker_state` gauge.
    pub fn gauge(self) -> i64 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
}

/// A circuit breaker shared by every clone of a cache (wrap it in an `Arc`).
#[derive(Debug)]
pub struct CircuitBreaker {
    name: &'static str,
    settings: BreakerSettings,
    inner: Mutex<Inner>,
}

/// Leave to make one call. Report its result with [`Permit::succeeded`] or
/// [`Permit::failed`]; dropping it unreported (the call was cancelled) counts as a failure.
#[must_use = "report the call's result on the permit"]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a CircuitBreaker,
    reported: bool,
}

impl Permit<'_> {
    /// The call succeeded.
    pub fn succeeded(mut self) {
        self.reported = true;
        self.breaker.on_result(true, Instant::now());
    }

    /// The call failed (timed out, connection refused, ...).
    pub fn failed(mut self) {
        self.reported = true;
        self.breaker.on_result(false, Instant::now());
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.reported {
            self.breaker.on_result(false, Instant::now());
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker named `name` (the dependency, for logs).
    pub fn new(name: &'static str, settings: BreakerSettings) -> Self {
        let settings = BreakerSettings {
            failure_threshold: settings.failure_threshold.max(1),
            ..settings
        };
        metrics::CACHE_BREAKER_STATE.set(BreakerState::Closed.gauge());
        Self {
            name,
            settings,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                consecutive_failures: 0,
                opened_at: None,
            }),
        }
    }

    /// Current state (an open breaker whose period has ended still reads `Open` until a call
    /// asks for a permit).
    pub fn state(&self) -> BreakerState {
        self.lock().state
    }

    /// A permit to call, or `None` when the breaker refuses the call.
    pub fn try_acquire(&self) -> Option<Permit<'_>> {
        self.acquire_at(Instant::now()).then_some(Permit {
            breaker: self,
            reported: false,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave the state inconsistent: every update
        // is a plain assignment.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn acquire_at(&self, now: Instant) -> bool {
        let mut g = self.lock();
        match g.state {
            BreakerState::Closed => true,
            BreakerState::HalfOpen => false,
            BreakerState::Open => {
                let opened = g.opened_at.unwrap_or(now);
                if now.saturating_duration_since(opened) >= self.settings.open_for {
                    self.transition(&mut g, BreakerState::HalfOpen);
                    true
                } else {
                    false
                }
            }
        }
    }

    fn on_result(&self, ok: bool, now: Instant) {
        let mut g = self.lock();
        if ok {
            g.consecutive_failures = 0;
            if g.state != BreakerState::Closed {
                self.transition(&mut g, BreakerState::Closed);
            }
            return;
        }
        g.consecutive_failures = g.consecutive_failures.saturating_add(1);
        let open = match g.state {
            BreakerState::Closed => g.consecutive_failures >= self.settings.failure_threshold,
            BreakerState::HalfOpen => true,
            // A call admitted before the breaker opened; it keeps it open from now.
            BreakerState::Open => false,
        };
        if open {
            g.opened_at = Some(now);
            self.transition(&mut g, BreakerState::Open);
        }
    }

    fn transition(&self, g: &mut Inner, to: BreakerState) {
        let from = g.state;
        g.state = to;
        metrics::CACHE_BREAKER_STATE.set(to.gauge());
        metrics::CACHE_BREAKER_TRANSITIONS
            .with_label_values(&[to.as_str()])
            .inc();
        match to {
            BreakerState::Open if from == BreakerState::Closed => tracing::warn!(
                breaker.name = self.name,
                breaker.state = to.as_str(),
                failures = g.consecutive_failures,
                open_for_ms = self.settings.open_for.as_millis() as u64,
                "{} circuit opened after {} consecutive failures; calls skip it",
                self.name,
                g.consecutive_failures
            ),
            BreakerState::Closed => tracing::info!(
                breaker.name = self.name,
                breaker.state = to.as_str(),
                "{} circuit closed; calls go through again",
                self.name
            ),
            // Open <-> half-open repeats every `open_for` while the dependency stays down.
            _ => tracing::debug!(
                breaker.name = self.name,
                breaker.state = to.as_str(),
                "{} circuit {}",
                self.name,
                to.as_str()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker(threshold: u32, open_ms: u64) -> CircuitBreaker {
        CircuitBreaker::new(
            "test",
            BreakerSettings {
                failure_threshold: threshold,
                open_for: Duration::from_millis(open_ms),
            },
        )
    }

    #[test]
    fn consecutive_failures_open_it_and_a_success_resets_the_count() {
        let b = breaker(3, 1000);
        let t = Instant::now();
        b.on_result(false, t);
        b.on_result(false, t);
        b.on_result(true, t);
        b.on_result(false, t);
        b.on_result(false, t);
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_result(false, t);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.acquire_at(t + Duration::from_millis(999)));
    }

    #[test]
    fn after_the_open_period_one_trial_runs_and_its_success_closes() {
        let b = breaker(1, 100);
        let t = Instant::now();
        b.on_result(false, t);
        let later = t + Duration::from_millis(100);
        assert!(b.acquire_at(later), "the trial call");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.acquire_at(later), "only one trial at a time");
        b.on_result(true, later);
        assert_eq!(b.state(), BreakerState::Closed);
        assert!(b.acquire_at(later));
    }

    #[test]
    fn a_failed_trial_opens_it_for_another_period() {
        let b = breaker(1, 100);
        let t = Instant::now();
        b.on_result(false, t);
        let t2 = t + Duration::from_millis(150);
        assert!(b.acquire_at(t2));
        b.on_result(false, t2);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(!b.acquire_at(t2 + Duration::from_millis(99)));
        assert!(b.acquire_at(t2 + Duration::from_millis(100)));
    }

    #[test]
    fn a_dropped_permit_counts_as_a_failure_so_a_cancelled_trial_cannot_wedge_it() {
        let b = breaker(1, 0);
        b.on_result(false, Instant::now());
        let trial = b.try_acquire().expect("trial after a zero open period");
        assert_eq!(b.state(), BreakerState::HalfOpen);
        drop(trial);
        assert_eq!(b.state(), BreakerState::Open);
        let next = b.try_acquire().expect("next trial");
        next.succeeded();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn late_failures_of_calls_admitted_before_opening_do_not_extend_the_period() {
        let b = breaker(1, 100);
        let t = Instant::now();
        b.on_result(false, t);
        b.on_result(false, t + Duration::from_millis(90));
        assert!(b.acquire_at(t + Duration::from_millis(100)));
    }
}
