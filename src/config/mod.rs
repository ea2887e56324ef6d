//! Configuration: one struct per area, read from flags or environment variables (clap `env`),
//! with defaults pointing at the local stack (`deploy/local/stack`). `aliexpress --help` and
//! `aliexpress <command> --help` list every variable.
//!
//! | variable | default |
//! |---|---|
//! | DATABASE_URL | postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress |
//! | DATABASE_POOL_SIZE | 16 |
//! | DATABASE_STATEMENT_TIMEOUT_MS | 10000 |
//! | REDIS_URL | redis://127.0.0.1:6379 |
//! | REDIS_CACHE_TTL_SECS | 86400 |
//! | KAFKA_BOOTSTRAP_SERVERS | 127.0.0.1:9092 |
//! | OPENSEARCH_URL | http://127.0.0.1:9200 |
//! | ALIEXPRESS_NAMESPACE | (empty) prefix of topics, groups, index and Redis keys |
//! | LOG_FORMAT | pretty (or json) |
//! | RUST_LOG | info |
//!
//! `serve` adds the request-path bounds and idempotency settings of [`ResilienceConfig`]
//! (see `config::resilience`):
//!
//! | variable | default |
//! |---|---|
//! | REDIS_REQUEST_TIMEOUT_MS | 50 |
//! | REDIS_BREAKER_FAILURES | 5 |
//! | REDIS_BREAKER_OPEN_MS | 1000 |
//! | SEARCH_REQUEST_TIMEOUT_MS | 2000 |
//! | IDEMPOTENCY_KEY_TTL_SECS | 86400 |
//! | IDEMPOTENCY_PRUNE_INTERVAL_SECS | 300 |
//!
//! `serve` also reads who may call the API and how much, [`ApiConfig`] (see `config::api`):
//!
//! | variable | default |
//! |---|---|
//! | API_TOKENS | none in release builds (required); `dev-token` in debug builds |
//! | API_READ_TOKENS | (empty) |
//! | RATE_LIMIT_PER_SECOND | 500 per client IP (0: off) |
//! | RATE_LIMIT_BURST | 1000 |
//! | AUTH_FAILURES_PER_MINUTE | 30 per client IP (0: off) |
//! | HTTP_BODY_LIMIT_BYTES | 65536 |
//! | HTTP_CLIENT_REQUEST_TIMEOUT_MS | 5000 |
//! | HTTP_BODY_READ_TIMEOUT_MS | 10000 |
//!
//! and `METRICS_BIND` (127.0.0.1:9463), the address of its `/metrics` listener.
//!
//! A malformed URL is a [`ConfigError`]: the binary prints one line naming the setting and
//! exits 2.

pub mod api;
pub mod names;
pub mod resilience;

use clap::Args;
use std::time::Duration;

pub use api::ApiConfig;
pub use names::Names;
pub use resilience::ResilienceConfig;

/// A setting that is malformed or names a service that cannot be reached at start-up.
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct ConfigError {
    /// Environment variable (and flag) at fault.
    pub setting: &'static str,
    /// What is wrong, secrets redacted.
    pub message: String,
}

impl ConfigError {
    /// Builds an error for `setting`.
    pub fn new(setting: &'static str, message: impl Into<String>) -> Self {
        Self {
            setting,
            message: message.into(),
        }
    }
}

/// Connection settings shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct InfraConfig {
    /// PostgreSQL URL (write model, outbox, commands).
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        default_value = "postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress"
    )]
    pub database_url: String,
    /// Maximum connections in the PostgreSQL pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", global = true, default_value_t = 16)]
    pub database_pool_size: usize,
    /// Statement timeout set on every PostgreSQL connection, in milliseconds.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", global = true, default_value_t = 10_000)]
    pub database_statement_timeout_ms: u64,
    /// Redis URL (product read cache).
    #[arg(long, env = "REDIS_URL", global = true, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// Time to live of cached products, in seconds.
    #[arg(long, env = "REDIS_CACHE_TTL_SECS", global = true, default_value_t = 86_400)]
    pub redis_cache_ttl_secs: u64,
    /// Kafka bootstrap servers, comma separated host:port.
    #[arg(
        long,
        env = "KAFKA_BOOTSTRAP_SERVERS",
        global = true,
        default_value = "127.0.0.1:9092"
    )]
    pub kafka_bootstrap_servers: String,
    /// OpenSearch URL (product search).
    #[arg(long, env = "OPENSEARCH_URL", global = true, default_value = "http://127.0.0.1:9200")]
    pub opensearch_url: String,
    /// Prefix for every topic, consumer group, index and Redis key (isolates tests and
    /// parallel environments; empty in production so names match the operations guide).
    #[arg(long, env = "ALIEXPRESS_NAMESPACE", global = true, default_value = "")]
    pub namespace: String,
}

impl InfraConfig {
    /// Checks the shape of every URL without connecting anywhere.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url("DATABASE_URL", &self.database_url, &["postgres", "postgresql"])?;
        check_url("REDIS_URL", &self.redis_url, &["redis", "rediss"])?;
        check_url("OPENSEARCH_URL", &self.opensearch_url, &["http", "https"])?;
        if self.kafka_bootstrap_servers.split(',').any(|s| {
            let s = s.trim();
            s.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        }) {
            return Err(ConfigError::new(
                "KAFKA_BOOTSTRAP_SERVERS",
                format!("expected host:port[,host:port], got {:?}", self.kafka_bootstrap_servers),
            ));
        }
        if self.database_pool_size == 0 {
            return Err(ConfigError::new("DATABASE_POOL_SIZE", "must be at least 1"));
        }
        Ok(())
    }

    /// Names of topics, groups, index and keys under this namespace.
    pub fn names(&self) -> Names {
        Names::new(&self.namespace)
    }

    /// Statement timeout as a duration.
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.database_statement_timeout_ms)
    }
}

fn check_url(setting: &'static str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    let url = url::Url::parse(value)
        .map_err(|e| ConfigError::new(setting, format!("not a valid URL ({e}): {}", redact(value))))?;
    if !schemes.contains(&url.scheme()) {
        return Err(ConfigError::new(
            setting,
            format!(
                "scheme must be one of {schemes:?}, got {:?} in {}",
                url.scheme(),
                redact(value)
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(setting, format!("missing host in {}", redact(value))));
    }
    Ok(())
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable>".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        infra: InfraConfig,
    }

    fn parse(args: &[&str]) -> InfraConfig {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        T::parse_from(v).infra
    }

    #[test]
    fn defaults_point_at_the_local_stack_and_validate() {
        let c = parse(&[]);
        assert!(c.validate().is_ok());
        assert_eq!(c.kafka_bootstrap_servers, "127.0.0.1:9092");
    }

    #[test]
    fn malformed_urls_name_their_setting() {
        let e = parse(&["--database-url", "mysql://x/y"]).validate().unwrap_err();
        assert_eq!(e.setting, "DATABASE_URL");
        let e = parse(&["--redis-url", "not a url"]).validate().unwrap_err();
        assert_eq!(e.setting, "REDIS_URL");
        let e = parse(&["--kafka-bootstrap-servers", "localhost"])
            .validate()
            .unwrap_err();
        assert_eq!(e.setting, "KAFKA_BOOTSTRAP_SERVERS");
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
    }
}
