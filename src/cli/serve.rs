//! `aliexpress serve`: the HTTP API, and its Prometheus endpoint on a separate listener.
//!
//! Usage: aliexpress serve [--bind 0.0.0.0:8000] [--metrics-bind 127.0.0.1:9463] [--workers N] [--migrate]
//!
//! Every flag is also a variable (`HTTP_BIND`, `HTTP_WORKERS`, `METRICS_BIND`, `OUTBOX_NOTIFY`,
//! `AUTO_MIGRATE`, and those of `config::http` and `config::resilience`).
//!
//! Callers authenticate with identity-provider tokens (`OIDC_*`), API keys (`aliexpress keys`)
//! or, in development, `API_TOKENS`; a bad setting is one line and exit 2.

use std::time::Duration;

use crate::app::{Catalog, CatalogSettings};
use crate::bus::producer::ProducerSettings;
use crate::cache::ProductCache;
use crate::config::{ApiConfig, ConfigError, DatabaseSettings, InfraConfig, ResilienceConfig};
use crate::http::{self, AccessControl, AppState, KafkaHandles, RateLimits, RequestLimits, ServerSettings};
use crate::store::pool;

/// `serve`'s `/metrics` address when `METRICS_BIND` is unset or empty.
pub const DEFAULT_METRICS_BIND: &str = "127.0.0.1:9463";

/// Flags of `serve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on.
    #[arg(long, env = "HTTP_BIND", default_value = "0.0.0.0:8000")]
    pub bind: String,
    /// HTTP worker threads.
    #[arg(long, env = "HTTP_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// Address of the Prometheus endpoint (`/metrics`); keep it on loopback or a private
    /// network: it is not served on the API port. Empty: the default.
    #[arg(long, visible_alias = "metrics-addr", env = "METRICS_BIND", default_value = DEFAULT_METRICS_BIND)]
    pub metrics_bind: String,
    /// NOTIFY the outbox relay on every write (a wake-up hint).
    #[arg(long, env = "OUTBOX_NOTIFY", default_value_t = true, action = clap::ArgAction::Set)]
    pub outbox_notify: bool,
    /// Apply migrations before serving.
    #[arg(long, env = "AUTO_MIGRATE")]
    pub migrate: bool,
    /// Request-path bounds (Redis, search) and idempotency keys.
    #[command(flatten)]
    pub resilience: ResilienceConfig,
    /// Tokens, rate limits and request body bounds.
    #[command(flatten)]
    pub api: ApiConfig,
}

/// Builds the shared state (checking each dependency once).
pub async fn state(infra: &InfraConfig, a: &Args) -> anyhow::Result<AppState> {
    a.resilience.validate()?;
    a.api.validate()?;
    if a.api.write_tokens().iter().any(|t| t == "dev-token") {
        tracing::warn!("API_TOKENS holds the development token `dev-token`; set your own secret outside development");
    } else if !cfg!(debug_assertions) && !a.api.write_tokens().is_empty() {
        tracing::warn!("API_TOKENS are for local development: give machines API keys (aliexpress keys create) and people identity-provider tokens");
    }
    let pool = super::connect::database(infra).await?;
    let identity = crate::identity::Identity {
        dev_tokens: crate::identity::dev_tokens(&a.api.write_tokens(), &a.api.read_tokens()),
        keys: crate::identity::KeyRing::start(pool.clone(), a.api.identity.api_key_refresh()).await?,
        oidc: crate::identity::OidcVerifier::start(&a.api.identity).await?,
    };
    // Checked once at start-up like every dependency; requests then use the bounded cache.
    super::connect::cache(infra).await?;
    let cache = ProductCache::for_requests(
        super::connect::redis_endpoint(infra)?,
        infra.names(),
        infra.redis.cache_ttl(),
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
    Ok(AppState {
        catalog: Catalog::new(
            pool,
            cache,
            CatalogSettings {
                events_topic: infra.names().events_topic(),
                outbox_notify: a.outbox_notify,
                idempotency_ttl: a.resilience.idempotency_ttl(),
                read_retry_budget: a.resilience.database_read_retry(),
            },
            Default::default(),
        ),
        search,
        kafka: KafkaHandles {
            producer,
            connection: super::connect::kafka_connection(infra)?,
        },
        names: infra.names(),
        access: AccessControl {
            identity,
            rate_limits: std::sync::Arc::new(RateLimits::new(&a.api)),
        },
        limits: RequestLimits {
            health_timeout: Duration::from_secs(1),
            search_timeout: a.resilience.search_timeout(),
            body_read_timeout: a.api.body_read_timeout(),
            deadline: a.api.request_deadline(),
            admission: crate::http::admission::Admission::new(
                a.api.http_max_in_flight,
                a.api.http_max_in_flight_per_worker,
            ),
        },
        lag_history: Default::default(),
    })
}

/// `st` with connection pools of its own for one of `workers` HTTP workers: the Postgres pool
/// is split between them (`DATABASE_POOL_SIZE` in all), plus a connection for each batched read
/// by id in flight (`catalog::BATCHES_IN_FLIGHT`, planned generically: `pool::build_generic_pool`);
/// the Redis cache gets its own pool and
/// shares the breaker and the record of missed writes. The connections open lazily, on the
/// worker's thread (see `http::run`).
fn for_worker(infra: &InfraConfig, st: &AppState, workers: usize) -> anyhow::Result<AppState> {
    let settings = DatabaseSettings {
        pool_size: infra.database.pool_size.div_ceil(workers).max(2),
        ..infra.database.clone()
    };
    // Reads by id plan once per connection: one connection for each batch in flight.
    let reads = pool::build_generic_pool(
        settings.url.expose(),
        crate::app::catalog::BATCHES_IN_FLIGHT,
        settings.statement_timeout(),
    )?;
    Ok(AppState {
        catalog: Catalog::new(
            pool::from_settings(&settings)?,
            st.catalog.cache.with_own_pool()?,
            st.catalog.settings.clone(),
            st.catalog.decorations.clone(),
        )
        .reading_from(reads),
        // The process's bound is shared; each worker gets a bound of its own.
        limits: RequestLimits {
            admission: st.limits.admission.for_worker(),
            ..st.limits.clone()
        },
        ..st.clone()
    })
}

/// Runs the API until SIGINT/SIGTERM.
pub async fn run(infra: &InfraConfig, a: Args) -> anyhow::Result<()> {
    if a.migrate {
        super::migrate::run(infra).await?;
    }
    let st = state(infra, &a).await?;
    tokio::spawn(http::idempotency::prune_periodically(
        st.catalog.pool.clone(),
        a.resilience.idempotency_prune_interval(),
    ));
    // Products follow their category's renames and moves (any `serve` takes a fan-out).
    tokio::spawn(crate::worker::category_fanout::run(
        st.catalog.pool.clone(),
        st.catalog.fanout_options(),
        std::time::Duration::from_secs(1),
    ));
    let listener = super::connect::bind("HTTP_BIND", &a.bind)?;
    let metrics_bind = match a.metrics_bind.trim() {
        "" => DEFAULT_METRICS_BIND,
        addr => addr,
    };
    let metrics_listener = super::connect::bind("METRICS_BIND", metrics_bind)?;
    tokio::spawn(http::metrics::serve_metrics(metrics_listener)?);
    let settings = ServerSettings::new(&a.api, a.workers);
    let states = (0..settings.workers)
        .map(|_| for_worker(infra, &st, settings.workers))
        .collect::<anyhow::Result<Vec<_>>>()?;
    tracing::info!(http.addr = %a.bind, metrics.addr = %metrics_bind, "API listening");
    http::run(listener, states, &settings)?.await?;
    tracing::info!("API stopped");
    Ok(())
}
