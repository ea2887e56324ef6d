//! Start-up connections. Each one is checked once with a bound; failure is a
//! [`ConfigError`] naming the setting (exit code 2), never a panic.

use std::net::TcpListener;
use std::time::Duration;

use crate::bus::{admin, producer, FutureProducer, KafkaConnection};
use crate::cache::ProductCache;
use crate::config::{redact, ConfigError, InfraConfig};
use crate::search::SearchClient;
use crate::store::{pool, PgPool};

const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// A Postgres pool whose first connection succeeded.
pub async fn database(infra: &InfraConfig) -> Result<PgPool, ConfigError> {
    let p = pool::build_pool(&infra.database_url, infra.database_pool_size, infra.statement_timeout())
        .map_err(|e| ConfigError::new("DATABASE_URL", e.to_string()))?;
    match tokio::time::timeout(STARTUP_TIMEOUT, p.get()).await {
        Ok(Ok(_)) => {
            let behind = pool::pending_migrations(&infra.database_url)
                .await
                .map_err(|e| ConfigError::new("DATABASE_URL", e.to_string()))?;
            if behind > 0 {
                return Err(ConfigError::new(
                    "DATABASE_URL",
                    format!(
                        "the schema of {} is {behind} migration(s) behind this binary: run `aliexpress migrate`",
                        redact(&infra.database_url)
                    ),
                ));
            }
            Ok(p)
        }
        Ok(Err(e)) => Err(ConfigError::new(
            "DATABASE_URL",
            format!("cannot connect to {}: {e}", redact(&infra.database_url)),
        )),
        Err(_) => Err(ConfigError::new(
            "DATABASE_URL",
            format!("no answer from {} within 5s", redact(&infra.database_url)),
        )),
    }
}

/// A Redis cache that answered PING.
pub async fn cache(infra: &InfraConfig) -> Result<ProductCache, ConfigError> {
    let endpoint = infra.redis()?;
    let c = ProductCache::new(
        &endpoint,
        infra.names(),
        Duration::from_secs(infra.redis_cache_ttl_secs),
    )
    .map_err(|e| ConfigError::new("REDIS_URL", e.to_string()))?;
    c.ping(STARTUP_TIMEOUT)
        .await
        .map_err(|e| ConfigError::new("REDIS_URL", format!("cannot reach {}: {e}", endpoint.redacted())))?;
    Ok(c)
}

/// An idempotent producer whose broker answered a metadata request.
pub async fn kafka(infra: &InfraConfig, settings: &producer::ProducerSettings) -> Result<FutureProducer, ConfigError> {
    let kafka = infra.kafka()?;
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
    let c = SearchClient::with_access(&infra.opensearch_url, &infra.search_access()?, Duration::from_secs(30))
        .map_err(|e| ConfigError::new("OPENSEARCH_URL", e.to_string()))?;
    c.health(STARTUP_TIMEOUT).await.map_err(|e| {
        ConfigError::new(
            "OPENSEARCH_URL",
            format!("cannot reach {}: {e}", redact(&infra.opensearch_url)),
        )
    })?;
    Ok(c)
}

/// Binds a listener, naming the flag on failure.
pub fn bind(setting: &'static str, addr: &str) -> Result<TcpListener, ConfigError> {
    TcpListener::bind(addr).map_err(|e| ConfigError::new(setting, format!("cannot listen on {addr}: {e}")))
}

/// Starts the `/metrics` endpoint of a worker role when an address is given.
pub fn metrics_server(addr: Option<&str>) -> Result<(), ConfigError> {
    let Some(addr) = addr else { return Ok(()) };
    let listener = bind("--metrics-addr", addr)?;
    tracing::info!(metrics.addr = %addr, "serving /metrics");
    let server =
        crate::http::metrics::serve_metrics(listener).map_err(|e| ConfigError::new("--metrics-addr", e.to_string()))?;
    tokio::spawn(server);
    Ok(())
}

/// Creates the platform's topics if missing, then a consumer in `group` subscribed to `topic`.
pub async fn subscribed_consumer(
    infra: &InfraConfig,
    group: &str,
    topic: &str,
) -> anyhow::Result<crate::bus::StreamConsumer> {
    let kafka = infra.kafka()?;
    admin::ensure_topics(
        &kafka,
        &infra.names().all_topics(),
        infra.kafka_topic_partitions,
        infra.kafka_topic_replication_factor,
    )
    .await?;
    Ok(crate::bus::consumer::subscribed(&kafka, group, topic)?)
}
