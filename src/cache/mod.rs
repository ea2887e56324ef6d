//! Redis adapter: the product read model, versioned so an older state never overwrites a
//! newer one. Failures are I/O (retryable) by nature; callers decide how to retry.

pub mod product_cache;

pub use product_cache::ProductCache;

/// Failures talking to Redis.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// No connection from the pool.
    #[error("redis unavailable: {0}")]
    Pool(String),
    /// A command failed.
    #[error("redis: {0}")]
    Redis(#[from] deadpool_redis::redis::RedisError),
    /// A cached value could not be decoded.
    #[error("corrupt cache entry: {0}")]
    Corrupt(String),
    /// The call did not finish in time.
    #[error("redis: timed out")]
    Timeout,
}

impl crate::failure::Classify for CacheError {
    /// Connection, I/O and timeouts are transient; a corrupt entry permanent; any other
    /// Redis error (a script error, a wrong type) ambiguous.
    fn failure_class(&self) -> crate::failure::FailureClass {
        use crate::failure::FailureClass;
        match self {
            Self::Pool(_) | Self::Timeout => FailureClass::Transient,
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
