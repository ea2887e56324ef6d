//! Configuration: one struct per area, read from flags or environment variables (clap `env`),
//! with defaults pointing at the local stack (`deploy/local/stack`). `aliexpress --help` and
//! `aliexpress <command> --help` list every variable.
//!
//! | variable | default |
//! |---|---|
//! | DATABASE_URL | postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress |
//! | DATABASE_POOL_SIZE | 16 |
//! | DATABASE_STATEMENT_TIMEOUT_MS | 10000 |
//! | REDIS_URL | redis://:aliexpress@127.0.0.1:6379 (`rediss://` for TLS; `redis://user:pass@...` for an ACL user) |
//! | REDIS_CA_FILE | (system roots) PEM file of the CA(s) trusted for `rediss://` |
//! | REDIS_CACHE_TTL_SECS | 86400 |
//! | KAFKA_BOOTSTRAP_SERVERS | 127.0.0.1:9092 |
//! | KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*, KAFKA_PROPERTIES_FILE, KAFKA_PROPERTY_<NAME> | see `config::kafka` |
//! | KAFKA_TOPIC_PARTITIONS | 12: partitions of the topics the consumers create when missing (the most consumer pipelines that can work in parallel) |
//! | KAFKA_TOPIC_REPLICATION_FACTOR | 1: replication factor of the topics the consumers create when missing (-1: the broker's `default.replication.factor`) |
//! | OPENSEARCH_URL | http://127.0.0.1:9200 (several nodes of one cluster: comma separated) |
//! | OPENSEARCH_USERNAME, OPENSEARCH_PASSWORD | (none) basic auth; credentials in the URL work too |
//! | OPENSEARCH_CA_FILE | (system roots) PEM file of the CA(s) trusted for `https://` |
//! | OPENSEARCH_DANGER_ACCEPT_INVALID_CERTS | false: certificates are always verified unless this is true |
//! | OPENSEARCH_INDEX_SHARDS | 1: primary shards of the products index the projection (or a rebuild) creates |
//! | OPENSEARCH_INDEX_REPLICAS | 0: replicas of the products index the projection (or a rebuild) creates |
//! | OPENSEARCH_REFRESH_INTERVAL_MS | 1000: how often that index makes writes searchable |
//! | ALIEXPRESS_NAMESPACE | (empty) prefix of topics, groups, index and Redis keys |
//! | LOG_FORMAT | pretty (or json) |
//! | RUST_LOG | info |
//! | OTEL_EXPORTER_OTLP_ENDPOINT | (none) export spans over OTLP/HTTP to this collector (`/v1/traces` is appended; or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT as is); unset: nothing is exported |
//! | OTEL_EXPORTER_OTLP_PROTOCOL | http/protobuf (or http/json) |
//! | OTEL_SERVICE_NAME | aliexpress-<subcommand> (aliexpress-serve, aliexpress-run-product-event-consumer, ...) |
//! | OTEL_TRACES_FILTER | info,aliexpress=debug: which spans are exported (RUST_LOG syntax) |
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
//! `DATABASE_URL` takes libpq's TLS parameters: `sslmode=disable|prefer|require|verify-ca|verify-full`,
//! `sslrootcert=FILE` (or `system`), `sslcert=FILE` and `sslkey=FILE` (see `store::pg_tls`).
//!
//! A malformed URL is a [`ConfigError`]: the binary prints one line naming the setting and
//! exits 2. Secrets (passwords in URLs, `*_PASSWORD` settings) are never printed: URLs go
//! through [`redact`], secret settings are [`Secret`]s and `--help` hides their values.

pub mod api;
pub mod kafka;
pub mod names;
pub mod resilience;
pub mod secret;

use clap::Args;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub use api::ApiConfig;
pub use kafka::KafkaSecurityConfig;
pub use names::Names;
pub use resilience::ResilienceConfig;
pub use secret::Secret;

use crate::bus::KafkaConnection;
use crate::cache::RedisEndpoint;
use crate::search::SearchAccess;

/// Default `DATABASE_URL`: the local stack's role (password auth).
pub const DEFAULT_DATABASE_URL: &str = "postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress";
/// Default `REDIS_URL`: the local stack's Redis (`requirepass aliexpress`).
pub const DEFAULT_REDIS_URL: &str = "redis://:aliexpress@127.0.0.1:6379";

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
#[derive(Clone, Args)]
pub struct InfraConfig {
    /// PostgreSQL URL (write model, outbox, commands); takes sslmode, sslrootcert, sslcert,
    /// sslkey [default: postgres://aliexpress:***@127.0.0.1:5432/aliexpress].
    #[arg(
        long,
        env = "DATABASE_URL",
        global = true,
        default_value = DEFAULT_DATABASE_URL,
        hide_default_value = true,
        hide_env_values = true
    )]
    pub database_url: String,
    /// Maximum connections in the PostgreSQL pool.
    #[arg(long, env = "DATABASE_POOL_SIZE", global = true, default_value_t = 16)]
    pub database_pool_size: usize,
    /// Statement timeout set on every PostgreSQL connection, in milliseconds.
    #[arg(long, env = "DATABASE_STATEMENT_TIMEOUT_MS", global = true, default_value_t = 10_000)]
    pub database_statement_timeout_ms: u64,
    /// Redis URL (product read cache); rediss:// for TLS, redis://user:password@ for an ACL
    /// user [default: redis://:***@127.0.0.1:6379].
    #[arg(
        long,
        env = "REDIS_URL",
        global = true,
        default_value = DEFAULT_REDIS_URL,
        hide_default_value = true,
        hide_env_values = true
    )]
    pub redis_url: String,
    /// PEM file of the CA(s) trusted for a rediss:// URL (the system's roots when unset).
    #[arg(long, env = "REDIS_CA_FILE", global = true)]
    pub redis_ca_file: Option<PathBuf>,
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
    /// Kafka security settings of every client.
    #[command(flatten)]
    pub kafka_security: KafkaSecurityConfig,
    /// Partitions of each topic the consumers create when it is missing; an existing topic
    /// keeps its own (adding partitions moves keys to other partitions, see DEPLOYMENT.md).
    /// It caps the projection's parallelism: one pipeline per partition, in however many
    /// processes.
    #[arg(
        long,
        env = "KAFKA_TOPIC_PARTITIONS",
        global = true,
        default_value_t = crate::bus::admin::DEFAULT_PARTITIONS,
        value_parser = clap::value_parser!(i32).range(1..=10_000)
    )]
    pub kafka_topic_partitions: i32,
    /// Replication factor of the topics the consumers create when they are missing (-1: the
    /// broker's `default.replication.factor`); an existing topic is left as it is.
    #[arg(
        long,
        env = "KAFKA_TOPIC_REPLICATION_FACTOR",
        global = true,
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub kafka_topic_replication_factor: i32,
    /// OpenSearch URL (product search); several nodes of one cluster comma separated.
    #[arg(
        long,
        env = "OPENSEARCH_URL",
        global = true,
        default_value = "http://127.0.0.1:9200",
        hide_env_values = true
    )]
    pub opensearch_url: String,
    /// OpenSearch basic-auth user name (instead of credentials in the URL).
    #[arg(long, env = "OPENSEARCH_USERNAME", global = true)]
    pub opensearch_username: Option<String>,
    /// OpenSearch basic-auth password (never shown).
    #[arg(long, env = "OPENSEARCH_PASSWORD", global = true, hide_env_values = true)]
    pub opensearch_password: Option<Secret>,
    /// PEM file of the CA(s) trusted for an https:// OpenSearch URL (the system's roots when
    /// unset).
    #[arg(long, env = "OPENSEARCH_CA_FILE", global = true)]
    pub opensearch_ca_file: Option<PathBuf>,
    /// DANGER: accept any OpenSearch certificate (no chain or hostname check). For a lab
    /// only; anyone on the path can then read and change the traffic.
    #[arg(
        long,
        env = "OPENSEARCH_DANGER_ACCEPT_INVALID_CERTS",
        global = true,
        default_value_t = false
    )]
    pub opensearch_danger_accept_invalid_certs: bool,
    /// Replicas of each shard of a products index the binary creates (an existing index keeps
    /// its own).
    #[arg(long, env = "OPENSEARCH_INDEX_REPLICAS", global = true, default_value_t = 0)]
    pub opensearch_index_replicas: u32,
    /// Primary shards of a products index the binary creates (an existing index keeps its
    /// own; a rebuild creates its new index with this many).
    #[arg(
        long,
        env = "OPENSEARCH_INDEX_SHARDS",
        global = true,
        default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=1024)
    )]
    pub opensearch_index_shards: u32,
    /// How often a products index the binary creates makes writes searchable, in ms (the
    /// freshness of search against indexing throughput; an existing index keeps its own).
    #[arg(
        long,
        env = "OPENSEARCH_REFRESH_INTERVAL_MS",
        global = true,
        default_value_t = 1000,
        value_parser = clap::value_parser!(u64).range(1..=3_600_000)
    )]
    pub opensearch_refresh_interval_ms: u64,
    /// Prefix for every topic, consumer group, index and Redis key (isolates tests and
    /// parallel environments; empty in production so names match the operations guide).
    #[arg(long, env = "ALIEXPRESS_NAMESPACE", global = true, default_value = "")]
    pub namespace: String,
}

impl fmt::Debug for InfraConfig {
    /// URLs redacted, secrets hidden.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InfraConfig")
            .field("database_url", &redact(&self.database_url))
            .field("database_pool_size", &self.database_pool_size)
            .field("database_statement_timeout_ms", &self.database_statement_timeout_ms)
            .field("redis_url", &redact(&self.redis_url))
            .field("redis_ca_file", &self.redis_ca_file)
            .field("redis_cache_ttl_secs", &self.redis_cache_ttl_secs)
            .field("kafka_bootstrap_servers", &self.kafka_bootstrap_servers)
            .field("kafka_security", &self.kafka_security)
            .field("kafka_topic_replication_factor", &self.kafka_topic_replication_factor)
            .field("opensearch_url", &redact(&self.opensearch_url))
            .field("opensearch_username", &self.opensearch_username)
            .field("opensearch_password", &self.opensearch_password)
            .field("opensearch_ca_file", &self.opensearch_ca_file)
            .field(
                "opensearch_danger_accept_invalid_certs",
                &self.opensearch_danger_accept_invalid_certs,
            )
            .field("opensearch_index_replicas", &self.opensearch_index_replicas)
            .field("opensearch_index_shards", &self.opensearch_index_shards)
            .field("opensearch_refresh_interval_ms", &self.opensearch_refresh_interval_ms)
            .field("kafka_topic_partitions", &self.kafka_topic_partitions)
            .field("namespace", &self.namespace)
            .finish()
    }
}

impl InfraConfig {
    /// Shards and replicas of a products index the binary creates.
    pub fn index_layout(&self) -> crate::search::index::IndexLayout {
        crate::search::index::IndexLayout {
            shards: self.opensearch_index_shards,
            replicas: self.opensearch_index_replicas,
            refresh_interval_ms: self.opensearch_refresh_interval_ms,
        }
    }

    /// Checks the shape of every URL without connecting anywhere.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_url("DATABASE_URL", &self.database_url, &["postgres", "postgresql"])?;
        check_url("REDIS_URL", &self.redis_url, &["redis", "rediss"])?;
        for url in self.opensearch_url.split(',').map(str::trim) {
            check_url("OPENSEARCH_URL", url, &["http", "https"])?;
        }
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
        if self.kafka_topic_replication_factor == 0 || self.kafka_topic_replication_factor < -1 {
            return Err(ConfigError::new(
                "KAFKA_TOPIC_REPLICATION_FACTOR",
                format!(
                    "must be at least 1, or -1 for the broker's default, got {}",
                    self.kafka_topic_replication_factor
                ),
            ));
        }
        crate::store::pg_tls::PgTarget::parse(&self.database_url)
            .map_err(|e| ConfigError::new("DATABASE_URL", e.to_string()))?;
        self.kafka()?;
        self.redis()?;
        self.search_access()?;
        Ok(())
    }

    /// Where and how every Kafka client connects: bootstrap servers, the security settings
    /// and `KAFKA_PROPERTY_<NAME>` variables of this process (see `config::kafka`).
    pub fn kafka(&self) -> Result<KafkaConnection, ConfigError> {
        self.kafka_security
            .connection(&self.kafka_bootstrap_servers, std::env::vars())
    }

    /// The Redis URL with its trusted CA (read from `REDIS_CA_FILE`).
    pub fn redis(&self) -> Result<RedisEndpoint, ConfigError> {
        let ca = read_pem("REDIS_CA_FILE", self.redis_ca_file.as_ref())?;
        if ca.is_some() && !self.redis_url.starts_with("rediss://") {
            return Err(ConfigError::new(
                "REDIS_CA_FILE",
                format!("is set but REDIS_URL is not rediss:// ({})", redact(&self.redis_url)),
            ));
        }
        Ok(RedisEndpoint::new(&self.redis_url).with_ca_pem(ca))
    }

    /// Credentials and certificate checks of the OpenSearch client.
    pub fn search_access(&self) -> Result<SearchAccess, ConfigError> {
        if self.opensearch_password.is_some() && self.opensearch_username.is_none() {
            return Err(ConfigError::new(
                "OPENSEARCH_USERNAME",
                "OPENSEARCH_PASSWORD is set without a user name",
            ));
        }
        Ok(SearchAccess {
            username: self.opensearch_username.clone(),
            password: self.opensearch_password.clone(),
            ca_pem: read_pem("OPENSEARCH_CA_FILE", self.opensearch_ca_file.as_ref())?,
            danger_accept_invalid_certs: self.opensearch_danger_accept_invalid_certs,
        })
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

/// Reads a PEM file named by `setting`, checking that it holds at least one certificate.
fn read_pem(setting: &'static str, path: Option<&PathBuf>) -> Result<Option<Vec<u8>>, ConfigError> {
    let Some(path) = path else { return Ok(None) };
    let pem =
        std::fs::read(path).map_err(|e| ConfigError::new(setting, format!("cannot read {}: {e}", path.display())))?;
    if !String::from_utf8_lossy(&pem).contains("-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::new(
            setting,
            format!("{} holds no PEM certificate", path.display()),
        ));
    }
    Ok(Some(pem))
}

/// The URL with any password (user info, or a `password`/`sslpassword` query parameter)
/// replaced by `***`, for messages and logs.
pub fn redact(value: &str) -> String {
    // A list of URLs (several OpenSearch nodes): each one redacted.
    if value.contains(',') && value.split(',').all(|p| url::Url::parse(p.trim()).is_ok()) {
        return value
            .split(',')
            .map(|p| redact_one(p.trim()))
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one(value)
}

fn redact_one(value: &str) -> String {
    match url::Url::parse(value) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            if u.query_pairs().any(|(k, _)| is_secret_query_key(&k)) {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_query_key(&k) {
                            "***".to_owned()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => "<unparsable>".to_owned(),
    }
}

fn is_secret_query_key(k: &str) -> bool {
    let k = k.to_ascii_lowercase();
    k.contains("password") || k.contains("secret") || k.contains("token")
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

    /// The declared default of the argument `id` (the parsed value would follow this process's
    /// environment).
    fn default(id: &str) -> Option<String> {
        use clap::CommandFactory;
        T::command()
            .get_arguments()
            .find(|a| a.get_id() == id)
            .and_then(|a| a.get_default_values().first())
            .and_then(|v| v.to_str())
            .map(str::to_owned)
    }

    #[test]
    fn defaults_point_at_the_local_stack_and_validate() {
        assert_eq!(default("kafka_bootstrap_servers").as_deref(), Some("127.0.0.1:9092"));
        assert_eq!(default("redis_url").as_deref(), Some(DEFAULT_REDIS_URL));
        assert_eq!(default("database_url").as_deref(), Some(DEFAULT_DATABASE_URL));
        assert!(parse(&[]).validate().is_ok());
    }

    #[test]
    fn the_security_protocol_is_read_in_either_case() {
        let c = parse(&["--kafka-security-protocol", "SASL_SSL"]);
        assert_eq!(
            c.kafka_security
                .kafka_security_protocol
                .as_deref()
                .map(str::to_ascii_lowercase),
            Some("sasl_ssl".to_owned())
        );
    }

    #[test]
    fn help_shows_no_password_of_a_default_or_of_a_set_variable() {
        use clap::CommandFactory;
        let help = T::command().render_long_help().to_string();
        assert!(!help.contains("aliexpress:aliexpress@"), "{help}");
        assert!(!help.contains(":aliexpress@"), "{help}");
        assert!(help.contains("redis://:***@127.0.0.1:6379"), "{help}");
    }

    #[test]
    fn a_list_of_opensearch_urls_is_checked_and_redacted_url_by_url() {
        let c = parse(&["--opensearch-url", "http://a:9200, https://u:pw@b:9200"]);
        assert!(c.validate().is_ok());
        assert_eq!(redact(&c.opensearch_url), "http://a:9200/,https://u:***@b:9200/");
        let e = parse(&["--opensearch-url", "http://a:9200,ftp://b"])
            .validate()
            .unwrap_err();
        assert_eq!(e.setting, "OPENSEARCH_URL");
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
    fn a_topic_replication_factor_is_positive_or_the_brokers_default() {
        // Today's single-node behaviour by default.
        assert_eq!(default("kafka_topic_replication_factor").as_deref(), Some("1"));
        assert_eq!(default("opensearch_index_replicas").as_deref(), Some("0"));
        assert!(parse(&["--kafka-topic-replication-factor", "3"]).validate().is_ok());
        assert!(parse(&["--kafka-topic-replication-factor", "-1"]).validate().is_ok());
        for bad in ["0", "-2"] {
            let e = parse(&["--kafka-topic-replication-factor", bad])
                .validate()
                .unwrap_err();
            assert_eq!(e.setting, "KAFKA_TOPIC_REPLICATION_FACTOR");
        }
    }

    #[test]
    fn redaction_hides_passwords() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("redis://:secret@h:6379"), "redis://:***@h:6379");
        assert_eq!(
            redact("postgres://u@h/db?sslmode=require&password=secret"),
            "postgres://u@h/db?sslmode=require&password=***"
        );
    }
}
