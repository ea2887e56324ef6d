//! `aliexpress serve`: the HTTP API.
//!
//! Usage: aliexpress serve [--bind 0.0.0.0:8000] [--workers N] [--migrate]

use std::time::Duration;

use crate::bus::producer::ProducerSettings;
use crate::cache::ProductCache;
use crate::config::{ConfigError, InfraConfig, ResilienceConfig};
use crate::http::{self, AppState};

/// Flags of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "HTTP_BIND", default_value = "0.0.0.0:8000")]
    pub bind: String,
    /// HTTP worker threads.
    #[arg(long, env = "HTTP_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// Bearer tokens allowed to write, comma separated.
    #[arg(
        long,
        env = "API_TOKENS",
        default_value = "dev-token",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_tokens: Vec<String>,
    /// Bearer tokens allowed admin reads only, comma separated.
    #[arg(
        long,
        env = "API_READ_TOKENS",
        default_value = "",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub api_read_tokens: Vec<String>,
    /// NOTIFY the outbox relay on every write (a wake-up hint).
    #[arg(long, env = "OUTBOX_NOTIFY", default_value_t = true, action = clap::ArgAction::Set)]
    pub outbox_notify: bool,
    /// Apply migrations before serving.
    #[arg(long, env = "AUTO_MIGRATE")]
    pub migrate: bool,
    /// Request-path bounds (Redis, search) and idempotency keys.
    #[command(flatten)]
    pub resilience: ResilienceConfig,
}

/// Builds the shared state (checking each dependency once).
pub async fn state(infra: &InfraConfig, a: &Args) -> anyhow::Result<AppState> {
    a.resilience.validate()?;
    let pool = super::connect::database(infra).await?;
    // Checked once at start-up like every dependency; requests then use the bounded cache.
    super::connect::cache(infra).await?;
    let cache = ProductCache::for_requests(
        infra.redis()?,
        infra.names(),
        Duration::from_secs(infra.redis_cache_ttl_secs),
        a.resilience.redis_bounds(),
    )
    .map_err(|e| ConfigError::new("REDIS_URL", e.to_string()))?;
    let producer = super::connect::kafka(
        infra,
        &ProducerSettings {
            linger_ms: 0,
            ..Default::default()
        },
    )
    .await?;
    let search = super::connect::search(infra).await?;
    let clean = |v: &[String]| {
        v.iter()
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
    };
    Ok(AppState {
        pool,
        cache,
        search,
        producer,
        names: infra.names(),
        write_tokens: clean(&a.api_tokens),
        read_tokens: clean(&a.api_read_tokens),
        outbox_notify: a.outbox_notify,
        health_timeout: Duration::from_secs(1),
        search_timeout: a.resilience.search_timeout(),
        idempotency_ttl: a.resilience.idempotency_ttl(),
    })
}

/// Runs the API until SIGINT/SIGTERM.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    if a.migrate {
        super::migrate::run(infra).await?;
    }
    let st = state(infra, &a).await?;
    tokio::spawn(http::idempotency::prune_periodically(
        st.pool.clone(),
        a.resilience.idempotency_prune_interval(),
    ));
    let listener = super::connect::bind("HTTP_BIND", &a.bind)?;
    tracing::info!(http.addr = %a.bind, "API listening");
    http::run(listener, st, a.workers.max(1))?.await?;
    tracing::info!("API stopped");
    Ok(())
}
