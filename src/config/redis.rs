//! Redis settings (the product read cache). The cache's endpoint is built from them by
//! `cache::RedisEndpoint::from_settings`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | REDIS_URL | redis://:aliexpress@127.0.0.1:6379 | the server; `rediss://` for TLS, `redis://user:pass@...` for an ACL user |
//! | REDIS_CA_FILE | (system roots) | PEM file of the CA(s) trusted for `rediss://` |
//! | REDIS_CACHE_TTL_SECS | 86400 | time to live of a cached product |
//! | REDIS_NEAR_CACHE_ENTRIES | 4096 | products `serve` keeps in process in front of Redis, kept right by Redis's invalidations (client-side caching, RESP3); 0 turns it off |
//! | REDIS_NEAR_CACHE_MAX_AGE_MS | 2000 | longest a near-cache copy is served without asking Redis again (the bound if invalidations stop without the connection closing) |
//! | REDIS_CHECKOUT_CHECK | idle | when a pooled connection is checked before reuse: `idle` (after 10 s unused) or `always` (every checkout, one more round trip) |
//!
//! `serve` bounds its Redis calls with [`RequestBounds`], read from `REDIS_REQUEST_TIMEOUT_MS`,
//! `REDIS_BREAKER_FAILURES` and `REDIS_BREAKER_OPEN_MS` (see `config::resilience`).

use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

use super::{check_url, ConfigError};
use crate::secret::SecretUrl;

/// Default `REDIS_URL`: the local stack's Redis (`requirepass aliexpress`).
pub const DEFAULT_REDIS_URL: &str = "redis://:aliexpress@127.0.0.1:6379";

/// Where the Redis cache connects and how long entries live.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Redis")]
pub struct RedisSettings {
    /// Redis URL (product read cache); rediss:// for TLS, redis://user:password@ for an ACL
    /// user [default: redis://:***@127.0.0.1:6379].
    #[arg(
        id = "redis_url",
        value_name = "REDIS_URL",
        long = "redis-url",
        env = "REDIS_URL",
        global = true,
        default_value = DEFAULT_REDIS_URL,
        hide_default_value = true,
        hide_env_values = true
    )]
    pub url: SecretUrl,
    /// PEM file of the CA(s) trusted for a rediss:// URL (the system's roots when unset).
    #[arg(
        id = "redis_ca_file",
        value_name = "REDIS_CA_FILE",
        long = "redis-ca-file",
        env = "REDIS_CA_FILE",
        global = true
    )]
    pub ca_file: Option<PathBuf>,
    /// Time to live of cached products, in seconds.
    #[arg(
        id = "redis_cache_ttl_secs",
        value_name = "REDIS_CACHE_TTL_SECS",
        long = "redis-cache-ttl-secs",
        env = "REDIS_CACHE_TTL_SECS",
        global = true,
        default_value_t = 86_400
    )]
    pub cache_ttl_secs: u64,
    /// When a pooled connection is checked (UNWATCH + PING) before reuse: idle (only after
    /// 10 s unused; one that failed at the transport level is discarded at once) or always
    /// (every checkout, deadpool-redis's default: one more round trip per cache read).
    #[arg(
        id = "redis_checkout_check",
        value_name = "REDIS_CHECKOUT_CHECK",
        long = "redis-checkout-check",
        env = "REDIS_CHECKOUT_CHECK",
        global = true,
        default_value = "idle",
        value_parser = ["idle", "always"]
    )]
    pub checkout_check: String,
    /// Products serve keeps in process in front of Redis (client-side caching: Redis pushes
    /// an invalidation when one changes); 0 turns the near cache off.
    #[arg(
        id = "redis_near_cache_entries",
        value_name = "REDIS_NEAR_CACHE_ENTRIES",
        long = "redis-near-cache-entries",
        env = "REDIS_NEAR_CACHE_ENTRIES",
        global = true,
        default_value_t = 4096
    )]
    pub near_cache_entries: usize,
    /// Longest a near-cache copy is served without asking Redis again, in milliseconds.
    #[arg(
        id = "redis_near_cache_max_age_ms",
        value_name = "REDIS_NEAR_CACHE_MAX_AGE_MS",
        long = "redis-near-cache-max-age-ms",
        env = "REDIS_NEAR_CACHE_MAX_AGE_MS",
        global = true,
        default_value_t = 2000,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    pub near_cache_max_age_ms: u64,
}

impl Default for RedisSettings {
    /// The values a command line without these flags and variables gets.
    fn default() -> Self {
        Self {
            url: SecretUrl::new(DEFAULT_REDIS_URL),
            ca_file: None,
            cache_ttl_secs: 86_400,
            checkout_check: "idle".into(),
            near_cache_entries: 4096,
            near_cache_max_age_ms: 2000,
        }
    }
}

impl RedisSettings {
    /// Checks the URL's shape, and that a CA file comes with a TLS URL, without connecting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url("REDIS_URL", self.url.expose(), &["redis", "rediss"])?;
        if self.ca_file.is_some() && !self.url.expose().starts_with("rediss://") {
            return Err(ConfigError::new(
                "REDIS_CA_FILE",
                format!("is set but REDIS_URL is not rediss:// ({})", self.url),
            ));
        }
        Ok(())
    }

    /// Time to live of a cached product.
    pub fn cache_ttl(&self) -> Duration {
        Duration::from_secs(self.cache_ttl_secs)
    }

    /// The API's near cache (`None` when `REDIS_NEAR_CACHE_ENTRIES` is 0).
    pub fn near_cache(&self) -> Option<crate::cache::near::NearSettings> {
        std::num::NonZeroUsize::new(self.near_cache_entries).map(|entries| crate::cache::near::NearSettings {
            entries,
            max_age: Duration::from_millis(self.near_cache_max_age_ms),
        })
    }
}

/// When the cache's circuit breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long it stays open before one trial call is let through.
    pub open_for: Duration,
}

impl Default for BreakerSettings {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_for: Duration::from_millis(1000),
        }
    }
}

/// Bounds of Redis calls made while a request waits (see `config::ResilienceConfig`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBounds {
    /// Whole-call bound: pool checkout, connection creation and the command.
    pub timeout: Duration,
    /// When to stop calling Redis at all, and for how long.
    pub breaker: BreakerSettings,
}

impl Default for RequestBounds {
    fn default() -> Self {
        Self {
            timeout: Duration::from_millis(50),
            breaker: BreakerSettings::default(),
        }
    }
}
