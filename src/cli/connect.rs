//! Start-up connections, built by the adapters from their settings (`config`). Each one is
//! checked once with a bound; failure is a [`ConfigError`] naming the setting (exit code 2),
//! never a panic. [`check`] builds every connection target without connecting, so a bad
//! setting of any service stops every subcommand before it does anything.

use std::net::TcpListener;
use std::time::Duration;

use crate::bus::{admin, producer, FutureProducer, KafkaConnection};
use crate::cache::{ProductCache, RedisEndpoint};
use crate::config::{ConfigError, InfraConfig};
use crate::search::{SearchAccess, SearchClient};
use crate::store::{pg_tls, pool, PgPool};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Checks every setting of `infra`: their shape (`config`), then what the adapters make of
/// them (the URL's TLS parameters, Kafka's properties and files, the CA files), without
/// connecting anywhere.
pub fn check(infra: &InfraConfig) -> Result<(), ConfigError> {
    infra.validate()?;
    pg_tls::PgTarget::parse(infra.database.url.expose())
        .map_err(|e| ConfigError::new("DATABASE_URL", e.to_string()))?;
    kafka_connection(infra)?;
    redis_endpoint(infra)?;
    search_access(infra)?;
    Ok(())
}

/// Where and how every Kafka client connects (see `bus::connection`).
pub fn kafka_connection(infra: &InfraConfig) -> Result<KafkaConnection, ConfigError> {
    KafkaConnection::from_settings(&infra.kafka).map_err(|e| ConfigError::new(e.setting, e.message))
}

/// The Redis URL with its trusted CA.
pub fn redis_endpoint(infra: &InfraConfig) -> Result<RedisEndpoint, ConfigError> {
    RedisEndpoint::from_settings(&infra.redis).map_err(|e| ConfigError::new("REDIS_CA_FILE", e.to_string()))
}

/// Credentials and certificate checks of the OpenSearch client.
pub fn search_access(infra: &InfraConfig) -> Result<SearchAccess, ConfigError> {
    SearchAccess::from_settings(&infra.opensearch).map_err(|e| ConfigError::new("OPENSEARCH_CA_FILE", e.to_string()))
}

/// An OpenSearch client with calls bounded by `timeout` (connects lazily).
pub fn search_client(infra: &InfraConfig, timeout: Duration) -> Result<SearchClient, ConfigError> {
    SearchClient::with_access(infra.opensearch.url.expose(), &search_access(infra)?, timeout)
        .map_err(|e| ConfigError::new("OPENSEARCH_URL", e.to_string()))
}

/// A Postgres pool whose first connection succeeded.
pub async fn database(infra: &InfraConfig) -> Result<PgPool, ConfigError> {
    let url = &infra.database.url;
    let p = pool::from_settings(&infra.database).map_err(|e| ConfigError::new("DATABASE_URL", e.to_string()))?;
    match tokio::time::timeout(STARTUP_TIMEOUT, p.get()).await {
        Ok(Ok(_)) => {
            let behind = pool::pending_migrations(url.expose())
                .await
                .map_err(|e| ConfigError::new("DATABASE_URL", e.to_string()))?;
            if behind > 0 {
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    format!(
                        "the schema of {url} is {behind} migration(s) behind this binary: run `aliexpress migrate`"
                    ),
                ));
            }
            Ok(p)
        }
        Ok(Err(e)) => Err(ConfigError::new(
            "DATABASE_URL",
            format!("cannot connect to {url}: {e}"),
        )),
        Err(_) => Err(ConfigError::new(
            "DATABASE_URL",
            format!("no answer from {url} within 5s"),
        )),
    }
}

/// A Redis cache that answered PING.
pub async fn cache(infra: &InfraConfig) -> Result<ProductCache, ConfigError> {
    let endpoint = redis_endpoint(infra)?;
    let c = ProductCache::new(&endpoint, infra.names(), infra.redis.cache_ttl())
        .map_err(|e| ConfigError::new("REDIS_URL", e.to_string()))?;
    c.ping(STARTUP_TIMEOUT)
        .await
        .map_err(|e| ConfigError::new("REDIS_URL", format!("cannot reach {}: {e}", endpoint.redacted())))?;
    Ok(c)
}

/// An idempotent producer whose broker answered a metadata request.
pub async fn kafka(infra: &InfraConfig, settings: &producer::ProducerSettings) -> Result<FutureProducer, ConfigError> {
    let kafka = kafka_connection(infra)?;
    admin::probe_connection(&kafka, STARTUP_TIMEOUT)
        .await
        .map_err(|e| kafka_error(&kafka, e))?;
    let p =
        producer::build(&kafka, settings).map_err(|e| ConfigError::new("KAFKA_BOOTSTRAP_SERVERS", e.to_string()))?;
    admin::probe(&p, STARTUP_TIMEOUT)
        .await
        .map_err(|e| kafka_error(&kafka, admin::ConnectFailure::Other(e.to_string())))?;
    Ok(p)
}

/// The setting most likely at fault for a failed connection, with librdkafka's reason.
fn kafka_error(kafka: &KafkaConnection, failure: admin::ConnectFailure) -> ConfigError {
    let target = kafka.describe();
    match failure {
        admin::ConnectFailure::Authentication(reason) => ConfigError::new(
            "KAFKA_SASL_PASSWORD",
            format!("authentication refused by {target}: check KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD and KAFKA_SASL_MECHANISM ({reason})"),
        ),
        admin::ConnectFailure::Tls(reason) => ConfigError::new(
            "KAFKA_SSL_CA_LOCATION",
            format!("TLS handshake with {target} failed: check KAFKA_SSL_CA_LOCATION (and the client certificate for mTLS) ({reason})"),
        ),
        admin::ConnectFailure::Other(reason) => {
            ConfigError::new("KAFKA_BOOTSTRAP_SERVERS", format!("cannot reach {target}: {reason}"))
        }
    }
}

/// An OpenSearch client whose cluster answered.
pub async fn search(infra: &InfraConfig) -> Result<SearchClient, ConfigError> {
    let c = search_client(infra, Duration::from_secs(30))?;
    c.health(STARTUP_TIMEOUT)
        .await
        .map_err(|e| ConfigError::new("OPENSEARCH_URL", format!("cannot reach {}: {e}", infra.opensearch.url)))?;
    Ok(c)
}

/// Binds a listener, naming the setting on failure.
pub fn bind(setting: &'static str, addr: &str) -> Result<TcpListener, ConfigError> {
    TcpListener::bind(addr).map_err(|e| ConfigError::new(setting, format!("cannot listen on {addr}: {e}")))
}

/// Starts the `/metrics` endpoint of a worker role when an address is given.
pub fn metrics_server(addr: Option<&str>) -> Result<(), ConfigError> {
    let Some(addr) = addr else { return Ok(()) };
    let listener = bind("METRICS_BIND", addr)?;
    tracing::info!(metrics.addr = %addr, "serving /metrics");
    let server =
        crate::http::metrics::serve_metrics(listener).map_err(|e| ConfigError::new("METRICS_BIND", e.to_string()))?;
    tokio::spawn(server);
    Ok(())
}

/// Creates the platform's topics if missing, then a consumer in `group` subscribed to `topic`.
pub async fn subscribed_consumer(
    infra: &InfraConfig,
    group: &str,
    topic: &str,
) -> anyhow::Result<crate::bus::StreamConsumer> {
    let kafka = kafka_connection(infra)?;
    admin::ensure_topics(
        &kafka,
        &infra.names().all_topics(),
        infra.kafka.topic_partitions,
        infra.kafka.topic_replication_factor,
    )
    .await?;
    Ok(crate::bus::consumer::subscribed(&kafka, group, topic)?)
}

/// The clients the operations commands (`status`, `trace`, `reconcile`) read the stores with:
/// a small Postgres pool, the Redis cache (no write-through guard) and OpenSearch bounded by
/// `search_timeout`.
pub fn ops_clients(
    infra: &InfraConfig,
    search_timeout: Duration,
) -> anyhow::Result<(PgPool, ProductCache, SearchClient)> {
    Ok((
        pool::build_pool(infra.database.url.expose(), 2, Duration::from_secs(5))?,
        ProductCache::new(redis_endpoint(infra)?, infra.names(), Duration::from_secs(60))?,
        search_client(infra, search_timeout)?,
    ))
}
