//! Long-running loops. Each has a public `process_once` that tests drive directly and a
//! `run_until_stopped` around it that handles waiting, retries and shutdown.

pub mod category_fanout;
pub mod commands;
pub mod drift_watch;
pub mod engine;
pub mod outbox_relay;
pub mod projection;
pub mod shutdown;

pub use shutdown::Shutdown;

use std::time::Duration;

/// Capped exponential backoff: `base * 2^attempt`, at most `max`.
pub fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    base.saturating_mul(2u32.saturating_pow(attempt.min(16))).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_then_caps() {
        let b = Duration::from_millis(100);
        let m = Duration::from_secs(5);
        assert_eq!(backoff(b, m, 0), b);
        assert_eq!(backoff(b, m, 3), Duration::from_millis(800));
        assert_eq!(backoff(b, m, 30), m);
    }
}
