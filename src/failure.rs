//! The one failure policy of every consumer and the relay.
//!
//! Each adapter classifies its own errors ([`Classify`]): *transient* failures can succeed
//! later without any change to the message (connection lost, timeout, 429/503, broker down);
//! *permanent* ones never will (undecodable payload, a value the store or the index refuses,
//! a rule violation); *ambiguous* ones are errors the adapter cannot place (an unrecognised
//! database error, a garbled response), retried a few times and then treated as permanent.
//!
//! A worker runs each unit of work through [`RetryPolicy::run`]: exponential backoff with
//! jitter (the `backon` crate), a bounded number of attempts, and shutdown-aware sleeps. What
//! comes out is an error the caller must place:
//! - [`Failed::Permanent`]: reject the message (recorded outcome) or dead-letter it, at once;
//! - [`Failed::Exhausted`] / [`Failed::Cancelled`]: the message stays *unfinished*. Its offset
//!   is not stored, the consumer seeks back to it, and the role backs off before polling
//!   again ([`RetryPolicy::backoff`]). Nothing is committed past an unfinished message and
//!   nothing is retried for ever inside one batch.
//!
//! Every message therefore ends as one of [`Disposition`]'s states.

use backon::{BackoffBuilder, ExponentialBuilder};
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// An error and its causes, each once (`error sending request ...: operation timed out`): the
/// transports' own messages name the request but keep the reason in the source chain.
pub fn with_causes(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let cause = c.to_string();
        if !out.contains(&cause) {
            out.push_str(": ");
            out.push_str(&cause);
        }
        source = c.source();
    }
    out
}

/// Whether a failure can succeed later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Will likely succeed later unchanged (connection lost, timeout, 429/5xx, broker down).
    Transient,
    /// Not recognised: retried a bounded number of times, then permanent.
    Ambiguous,
    /// Will never succeed for this input.
    Permanent,
}

/// Errors that know which [`FailureClass`] they belong to.
pub trait Classify {
    /// The class of this failure.
    fn failure_class(&self) -> FailureClass;
}

/// How one message ended. Only the first three let its offset be stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Its effect is durable (or was already, for a duplicate).
    Done,
    /// Refused for good, and the refusal is recorded where the sender can read it.
    Rejected(String),
    /// Sent to the dead-letter topic with the reason in its headers.
    DeadLettered(&'static str),
    /// Not finished (transient failure outlasted its retries, or shutdown): not committed
    /// past; delivered again.
    Unfinished,
}

/// Why [`RetryPolicy::run`] gave up.
#[derive(Debug)]
pub enum Failed<E> {
    /// Permanent (or ambiguous past its bound): handle the message as poison now.
    Permanent(E),
    /// Transient, but still failing after every attempt: leave the message unfinished.
    Exhausted(E),
    /// Shutdown came while waiting to retry.
    Cancelled,
}

impl<E: std::fmt::Display> std::fmt::Display for Failed<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Permanent(e) => write!(f, "permanent failure: {e}"),
            Self::Exhausted(e) => write!(f, "still failing after retries: {e}"),
            Self::Cancelled => f.write_str("cancelled by shutdown"),
        }
    }
}

/// Retry bounds shared by the workers.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// First delay.
    pub min_delay: Duration,
    /// Longest delay.
    pub max_delay: Duration,
    /// Attempts after the first for a transient failure, within one unit of work.
    pub transient_retries: usize,
    /// Attempts after the first for an ambiguous failure before it counts as permanent.
    pub ambiguous_retries: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            transient_retries: 6,
            ambiguous_retries: 2,
        }
    }
}

impl RetryPolicy {
    /// A policy with the given delays and attempt bounds.
    pub fn new(min_delay: Duration, max_delay: Duration, transient_retries: usize, ambiguous_retries: usize) -> Self {
        Self {
            min_delay,
            max_delay,
            transient_retries,
            ambiguous_retries,
        }
    }

    /// An endless jittered exponential schedule, for a role backing off between batches that
    /// could not finish (make a new one to reset it after a success).
    pub fn backoff(&self) -> impl Iterator<Item = Duration> + Send {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_jitter()
            .without_max_times()
            .build()
    }

    /// Runs `op` until it succeeds, fails permanently, runs out of attempts, or `cancel`
    /// fires. Each failed attempt is logged at warn with `what`.
    pub async fn run<T, E, F, Fut>(&self, cancel: &CancellationToken, what: &str, mut op: F) -> Result<T, Failed<E>>
    where
        E: Classify + std::fmt::Display,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let mut delays = self.backoff();
        let (mut transient, mut ambiguous) = (0usize, 0usize);
        loop {
            let err = match op().await {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            match err.failure_class() {
                FailureClass::Permanent => return Err(Failed::Permanent(err)),
                FailureClass::Ambiguous if ambiguous >= self.ambiguous_retries => return Err(Failed::Permanent(err)),
                FailureClass::Transient if transient >= self.transient_retries => return Err(Failed::Exhausted(err)),
                FailureClass::Ambiguous => ambiguous += 1,
                FailureClass::Transient => transient += 1,
            }
            let delay = delays.next().unwrap_or(self.max_delay);
            tracing::warn!(error = %err, attempt = transient + ambiguous, retry_in_ms = delay.as_millis() as u64,
                "{what} failed; retrying");
            if sleep_or_cancel(cancel, delay).await {
                return Err(Failed::Cancelled);
            }
        }
    }
}

/// The delay before attempt `attempt + 1` of work whose attempts are counted where it is
/// stored (an outbox row's `attempts`): `base * 2^attempt`, at most `max`. Deterministic, so a
/// stored row's next attempt time is a function of its count; the in-process schedules
/// ([`RetryPolicy::backoff`]) add jitter instead.
pub fn delay_for_attempt(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(max)
}

/// Sleeps `d` unless `cancel` fires first; true when cancelled.
pub async fn sleep_or_cancel(cancel: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = cancel.cancelled() => true,
        () = tokio::time::sleep(d) => cancel.is_cancelled(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_attempt_count_doubles_the_delay_then_caps() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(5);
        assert_eq!(delay_for_attempt(b, m, 0), b);
        assert_eq!(delay_for_attempt(b, m, 3), Duration::from_millis(800));
        assert_eq!(delay_for_attempt(b, m, 30), m);
    }

    #[test]
    fn an_error_reads_with_each_cause_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error sending request for url (http://x/_search)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(std::io::ErrorKind::TimedOut, "operation timed out"));
        assert_eq!(
            with_causes(&e),
            "error sending request for url (http://x/_search): operation timed out"
        );
    }
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug)]
    struct E(FailureClass);
    impl Classify for E {
        fn failure_class(&self) -> FailureClass {
            self.0
        }
    }
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "{:?}", self.0)
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy::new(Duration::from_millis(1), Duration::from_millis(2), 3, 1)
    }

    async fn count_calls(class: FailureClass) -> (usize, Failed<E>) {
        let calls = AtomicUsize::new(0);
        let r: Result<(), _> = fast()
            .run(&CancellationToken::new(), "op", || {
                calls.fetch_add(1, Ordering::SeqCst);
                async move { Err(E(class)) }
            })
            .await;
        (calls.load(Ordering::SeqCst), r.unwrap_err())
    }

    #[tokio::test]
    async fn permanent_failures_are_not_retried() {
        let (calls, r) = count_calls(FailureClass::Permanent).await;
        assert_eq!(calls, 1);
        assert!(matches!(r, Failed::Permanent(_)));
    }

    #[tokio::test]
    async fn ambiguous_failures_become_permanent_after_their_bound() {
        let (calls, r) = count_calls(FailureClass::Ambiguous).await;
        assert_eq!(calls, 2);
        assert!(matches!(r, Failed::Permanent(_)));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_then_left_unfinished() {
        let (calls, r) = count_calls(FailureClass::Transient).await;
        assert_eq!(calls, 4);
        assert!(matches!(r, Failed::Exhausted(_)));
    }

    #[tokio::test]
    async fn a_transient_failure_that_clears_succeeds() {
        let calls = AtomicUsize::new(0);
        let r = fast()
            .run(&CancellationToken::new(), "op", || {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 2 {
                        Err(E(FailureClass::Transient))
                    } else {
                        Ok(n)
                    }
                }
            })
            .await;
        assert_eq!(r.ok(), Some(2));
    }

    #[tokio::test]
    async fn shutdown_stops_the_retries() {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let slow = RetryPolicy::new(Duration::from_secs(60), Duration::from_secs(60), 5, 5);
        let r: Result<(), _> = slow
            .run(&cancel, "op", || async { Err(E(FailureClass::Transient)) })
            .await;
        assert!(matches!(r, Err(Failed::Cancelled)));
    }

    #[test]
    fn the_backoff_grows_with_jitter_and_stays_under_its_cap() {
        let p = RetryPolicy::new(Duration::from_millis(100), Duration::from_secs(1), 0, 0);
        let d: Vec<Duration> = p.backoff().take(20).collect();
        assert!(d.iter().all(|x| *x <= Duration::from_secs(2)), "{d:?}");
        assert!(d[10] >= Duration::from_secs(1), "{d:?}");
    }
}
