//! PostgreSQL settings (write model, outbox, command records, audit tables). The pool is built
//! from them by `store::pool::from_settings`.
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | DATABASE_URL | postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress | the database; takes libpq's TLS parameters `sslmode=disable\|prefer\|require\|verify-ca\|verify-full`, `sslrootcert=FILE` (or `system`), `sslcert=FILE`, `sslkey=FILE` (see `store::pg_tls`) |
//! | DATABASE_POOL_SIZE | 16 | most connections of the pool (`serve` splits them between its HTTP workers) |
//! | DATABASE_STATEMENT_TIMEOUT_MS | 10000 | statement timeout set on every connection |
//!
//! The URL is a [`SecretUrl`]: its password never shows in `Debug`, messages or `--help`.

use clap::Args;
use std::time::Duration;

use super::{check_url, ConfigError};
use crate::secret::SecretUrl;

/// Default `DATABASE_URL`: the local stack's role (password auth).
pub const DEFAULT_DATABASE_URL: &str = "postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress";

/// Where the PostgreSQL pool connects and how big it is.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database (PostgreSQL)")]
pub struct DatabaseSettings {
    /// PostgreSQL URL (write model, outbox, commands); takes sslmode, sslrootcert, sslcert,
    /// sslkey [default: postgres://aliexpress:***@127.0.0.1:5432/aliexpress].
    #[arg(
        id = "database_url",
        value_name = "DATABASE_URL",
        long = "database-url",
        env = "DATABASE_URL",
        global = true,
        default_value = DEFAULT_DATABASE_URL,
        hide_default_value = true,
        hide_env_values = true
    )]
    pub url: SecretUrl,
    /// Maximum connections in the PostgreSQL pool.
    #[arg(
        id = "database_pool_size",
        value_name = "DATABASE_POOL_SIZE",
        long = "database-pool-size",
        env = "DATABASE_POOL_SIZE",
        global = true,
        default_value_t = 16
    )]
    pub pool_size: usize,
    /// Statement timeout set on every PostgreSQL connection, in milliseconds.
    #[arg(
        id = "database_statement_timeout_ms",
        value_name = "DATABASE_STATEMENT_TIMEOUT_MS",
        long = "database-statement-timeout-ms",
        env = "DATABASE_STATEMENT_TIMEOUT_MS",
        global = true,
        default_value_t = 10_000
    )]
    pub statement_timeout_ms: u64,
}

impl Default for DatabaseSettings {
    /// The values a command line without these flags and variables gets.
    fn default() -> Self {
        Self {
            url: SecretUrl::new(DEFAULT_DATABASE_URL),
            pool_size: 16,
            statement_timeout_ms: 10_000,
        }
    }
}

impl DatabaseSettings {
    /// Checks the URL's shape and the pool size, without connecting.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url("DATABASE_URL", self.url.expose(), &["postgres", "postgresql"])?;
        if self.pool_size == 0 {
            return Err(ConfigError::new("DATABASE_POOL_SIZE", "must be at least 1"));
        }
        Ok(())
    }

    /// Statement timeout as a duration.
    pub fn statement_timeout(&self) -> Duration {
        Duration::from_millis(self.statement_timeout_ms)
    }
}
