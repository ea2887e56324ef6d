//! Settings of `serve` that keep a request bounded when a dependency it can do without is
//! slow or down, and of `Idempotency-Key` records.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | REDIS_REQUEST_TIMEOUT_MS | 50 | bound of each Redis call on the request path (pool checkout and connect included) |
//! | REDIS_BREAKER_FAILURES | 5 | consecutive Redis failures that open the circuit breaker |
//! | REDIS_BREAKER_OPEN_MS | 1000 | how long the breaker skips Redis before one trial call |
//! | SEARCH_REQUEST_TIMEOUT_MS | 2000 | bound of an OpenSearch query of `GET /api/search` (then 503) |
//! | DATABASE_READ_RETRY_MS | 2000 | how long a product read retries a lost PostgreSQL connection (then 503) |
//! | IDEMPOTENCY_KEY_TTL_SECS | 86400 | how long a write's `Idempotency-Key` record answers retries |
//! | IDEMPOTENCY_PRUNE_INTERVAL_SECS | 300 | how often `serve` deletes expired records |

use clap::Args;
use std::time::Duration;

use super::redis::{BreakerSettings, RequestBounds};
use super::ConfigError;

/// Request-path bounds and idempotency settings of `serve`.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Request bounds and idempotency")]
pub struct ResilienceConfig {
    /// Bound of each Redis call made while a request waits (pool checkout and connection
    /// creation included), in milliseconds. Past it the request reads PostgreSQL.
    #[arg(long, env = "REDIS_REQUEST_TIMEOUT_MS", default_value_t = 50)]
    pub redis_request_timeout_ms: u64,
    /// Consecutive failed Redis calls that open the circuit breaker (calls then skip Redis).
    #[arg(long, env = "REDIS_BREAKER_FAILURES", default_value_t = 5)]
    pub redis_breaker_failures: u32,
    /// How long an open breaker skips Redis before one trial call, in milliseconds.
    #[arg(long, env = "REDIS_BREAKER_OPEN_MS", default_value_t = 1000)]
    pub redis_breaker_open_ms: u64,
    /// Bound of the OpenSearch query behind `GET /api/search`, in milliseconds; past it the
    /// search answers 503 with Retry-After.
    #[arg(long, env = "SEARCH_REQUEST_TIMEOUT_MS", default_value_t = 2000)]
    pub search_request_timeout_ms: u64,
    /// How long a product read (`GET /api/products/{id}`) may keep retrying when PostgreSQL
    /// drops its connection (terminated sessions, a restart), in milliseconds; then 503.
    #[arg(long, env = "DATABASE_READ_RETRY_MS", default_value_t = 2000)]
    pub database_read_retry_ms: u64,
    /// How long an `Idempotency-Key` record answers retries of the write it guards, in
    /// seconds.
    #[arg(long, env = "IDEMPOTENCY_KEY_TTL_SECS", default_value_t = 86_400)]
    pub idempotency_key_ttl_secs: u64,
    /// How often expired `Idempotency-Key` records are deleted, in seconds.
    #[arg(long, env = "IDEMPOTENCY_PRUNE_INTERVAL_SECS", default_value_t = 300)]
    pub idempotency_prune_interval_secs: u64,
}

impl ResilienceConfig {
    /// Rejects zero bounds, which would make every call fail.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive: [(&'static str, u64); 5] = [
            ("REDIS_REQUEST_TIMEOUT_MS", self.redis_request_timeout_ms),
            ("REDIS_BREAKER_FAILURES", u64::from(self.redis_breaker_failures)),
            ("SEARCH_REQUEST_TIMEOUT_MS", self.search_request_timeout_ms),
            ("IDEMPOTENCY_KEY_TTL_SECS", self.idempotency_key_ttl_secs),
            ("IDEMPOTENCY_PRUNE_INTERVAL_SECS", self.idempotency_prune_interval_secs),
        ];
        match positive.iter().find(|(_, v)| *v == 0) {
            Some((setting, _)) => Err(ConfigError::new(setting, "must be at least 1")),
            None => Ok(()),
        }
    }

    /// Bounds of the API's Redis calls.
    pub fn redis_bounds(&self) -> RequestBounds {
        RequestBounds {
            timeout: Duration::from_millis(self.redis_request_timeout_ms),
            breaker: BreakerSettings {
                failure_threshold: self.redis_breaker_failures,
                open_for: Duration::from_millis(self.redis_breaker_open_ms),
            },
        }
    }

    /// Bound of a search query.
    pub fn search_timeout(&self) -> Duration {
        Duration::from_millis(self.search_request_timeout_ms)
    }

    /// How long a product read retries a lost database connection.
    pub fn database_read_retry(&self) -> Duration {
        Duration::from_millis(self.database_read_retry_ms)
    }

    /// Lifetime of an idempotency record.
    pub fn idempotency_ttl(&self) -> Duration {
        Duration::from_secs(self.idempotency_key_ttl_secs)
    }

    /// Pause between prunes of expired idempotency records.
    pub fn idempotency_prune_interval(&self) -> Duration {
        Duration::from_secs(self.idempotency_prune_interval_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        r: ResilienceConfig,
    }

    #[test]
    fn defaults_are_tens_of_milliseconds_for_redis_and_a_day_for_keys() {
        let c = T::parse_from(["t"]).r;
        assert!(c.validate().is_ok());
        assert_eq!(c.redis_bounds().timeout, Duration::from_millis(50));
        assert_eq!(c.idempotency_ttl(), Duration::from_secs(86_400));
    }

    #[test]
    fn a_zero_bound_names_its_setting() {
        let c = T::parse_from(["t", "--redis-request-timeout-ms", "0"]).r;
        assert_eq!(c.validate().unwrap_err().setting, "REDIS_REQUEST_TIMEOUT_MS");
    }
}
