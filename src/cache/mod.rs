//! Redis adapter: the product read model, versioned so an older state never overwrites a
//! newer one. Failures are I/O (retryable) by nature; callers decide how to retry.
//!
//! Redis is a cache, never a source of truth. On the request path
//! ([`ProductCache::for_requests`]) every call (pool checkout and connection creation
//! included) is bounded by a short timeout and goes through a [`breaker::CircuitBreaker`], so
//! while Redis is down a request skips it at once and reads Postgres instead.

pub mod breaker;
pub mod deferred;
pub mod document;
pub mod near;
pub mod product_cache;
pub mod read_through;
pub mod redis_pool;
pub mod versioned;

pub use breaker::{BreakerSettings, CircuitBreaker};
pub use near::NearSettings;
pub use product_cache::{CachedDocument, ProductCache, RequestBounds};
pub use redis_pool::RedisEndpoint;

/// Failures talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// No connection from the pool.
    #[error("redis unavailable: {0}")]
    Pool(String),
    /// A command failed.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A cached value could not be decoded.
    #[error("corrupt cache entry: {0}")]
    Corrupt(String),
    /// The call did not finish in time.
    #[error("redis: timed out")]
    Timeout,
    /// The circuit breaker is open: Redis failed recently, the call was not attempted.
    #[error("redis: circuit open, call skipped")]
    CircuitOpen,
}

impl CacheError {
    /// Says something about Redis's health (counts against the breaker); a corrupt entry
    /// does not.
    pub fn is_availability(&self) -> bool {
        !matches!(self, Self::Corrupt(_))
    }

    /// Short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::CircuitOpen => "rejected",
            Self::Corrupt(_) => "corrupt",
            Self::Pool(_) | Self::Redis(_) => "error",
        }
    }
}

impl crate::failure::Classify for CacheError {
    /// Connection, I/O and timeouts are transient; a corrupt entry permanent; any other
    /// Redis error (a script error, a wrong type) ambiguous.
    fn failure_class(&self) -> crate::failure::FailureClass {
        use crate::failure::FailureClass;
        match self {
            Self::Pool(_) | Self::Timeout | Self::CircuitOpen => FailureClass::Transient,
            Self::Redis(e)
                if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() =>
            {
                FailureClass::Transient
            }
            Self::Redis(_) => FailureClass::Ambiguous,
            Self::Corrupt(_) => FailureClass::Permanent,
        }
    }
}
