//! Configuration: plain settings structs, one per area, read from flags or environment
//! variables (clap `env`), with defaults pointing at the local stack (`deploy/local/stack`).
//! `aliexpress --help` and `aliexpress <command> --help` list every variable under its area's
//! heading; `.env.example` lists them all with local values.
//!
//! A leaf: nothing here knows an adapter. The adapters build their connection objects from
//! their own area's struct (`store::pool::from_settings`, `bus::KafkaConnection::from_settings`,
//! `cache::RedisEndpoint::from_settings`, `search::SearchAccess::from_settings`), and `cli`
//! wires them.
//!
//! | area | struct | variables |
//! |---|---|---|
//! | PostgreSQL | [`DatabaseSettings`] (`config::database`) | DATABASE_URL, DATABASE_POOL_SIZE, DATABASE_STATEMENT_TIMEOUT_MS |
//! | Redis | [`RedisSettings`] (`config::redis`) | REDIS_URL, REDIS_CA_FILE, REDIS_CACHE_TTL_SECS |
//! | Kafka | [`KafkaSettings`] (`config::kafka`) | KAFKA_BOOTSTRAP_SERVERS, KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_*, KAFKA_SSL_*, KAFKA_PROPERTIES_FILE, KAFKA_PROPERTY_<NAME>, KAFKA_TOPIC_PARTITIONS, KAFKA_TOPIC_REPLICATION_FACTOR |
//! | OpenSearch | [`OpenSearchSettings`] (`config::opensearch`) | OPENSEARCH_URL, OPENSEARCH_USERNAME, OPENSEARCH_PASSWORD, OPENSEARCH_CA_FILE, OPENSEARCH_DANGER_ACCEPT_INVALID_CERTS, OPENSEARCH_INDEX_SHARDS, OPENSEARCH_INDEX_REPLICAS, OPENSEARCH_REFRESH_INTERVAL_MS |
//! | names | [`InfraConfig::namespace`] | ALIEXPRESS_NAMESPACE: (empty) prefix of topics, groups, index and Redis keys |
//! | logs, traces | [`TelemetrySettings`] (`config::telemetry`) | LOG_FORMAT, RUST_LOG, OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_PROTOCOL, OTEL_SERVICE_NAME, OTEL_TRACES_FILTER |
//! | HTTP (`serve`) | [`ApiConfig`] (`config::http`) | API_TOKENS, API_READ_TOKENS, RATE_LIMIT_PER_SECOND, RATE_LIMIT_BURST, AUTH_FAILURES_PER_MINUTE, HTTP_BODY_LIMIT_BYTES, HTTP_CLIENT_REQUEST_TIMEOUT_MS, HTTP_BODY_READ_TIMEOUT_MS |
//! | request path (`serve`) | [`ResilienceConfig`] (`config::resilience`) | REDIS_REQUEST_TIMEOUT_MS, REDIS_BREAKER_FAILURES, REDIS_BREAKER_OPEN_MS, SEARCH_REQUEST_TIMEOUT_MS, DATABASE_READ_RETRY_MS, IDEMPOTENCY_KEY_TTL_SECS, IDEMPOTENCY_PRUNE_INTERVAL_SECS |
//!
//! Each module's `//!` gives every variable's default and meaning. Each role's own settings
//! (`HTTP_BIND`, `METRICS_BIND`, `OUTBOX_*`, `PROJECTION_*`, ...) are flags of its subcommand,
//! documented in its `cli` module.
//!
//! A malformed setting is a [`ConfigError`]: the binary prints one line naming the setting and
//! exits 2. Secrets (passwords in URLs, `*_PASSWORD` settings, tokens) are never printed: URLs
//! are [`SecretUrl`]s and secret settings [`Secret`]s (both redacted in `Debug`, so every
//! settings struct derives it), and `--help` hides their values.

pub mod database;
pub mod http;
pub mod kafka;
pub mod opensearch;
pub mod redis;
pub mod resilience;
pub mod telemetry;

use clap::Args;

pub use database::{DatabaseSettings, DEFAULT_DATABASE_URL};
pub use http::ApiConfig;
pub use kafka::KafkaSettings;
pub use opensearch::OpenSearchSettings;
pub use redis::{RedisSettings, DEFAULT_REDIS_URL};
pub use resilience::ResilienceConfig;
pub use telemetry::TelemetrySettings;
// The names and secret types settings are made of, for callers above the adapters.
pub use crate::names::{self, Names};
pub use crate::secret::{redact, Secret, SecretUrl};

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

/// Connection settings shared by every subcommand, one struct per service.
#[derive(Debug, Clone, Default, Args)]
pub struct InfraConfig {
    /// PostgreSQL.
    #[command(flatten)]
    pub database: DatabaseSettings,
    /// Redis.
    #[command(flatten)]
    pub redis: RedisSettings,
    /// Kafka.
    #[command(flatten)]
    pub kafka: KafkaSettings,
    /// OpenSearch.
    #[command(flatten)]
    pub opensearch: OpenSearchSettings,
    /// Prefix for every topic, consumer group, index and Redis key (isolates tests and
    /// parallel environments; empty in production so names match the operations guide).
    #[arg(
        long,
        env = "ALIEXPRESS_NAMESPACE",
        global = true,
        default_value = "",
        help_heading = "Names"
    )]
    pub namespace: String,
}

impl InfraConfig {
    /// Checks the shape of every setting without connecting anywhere or reading any file.
    /// (What only an adapter can tell, such as a PEM file's content or an sslmode, is checked
    /// when `cli` builds the connections, before the subcommand runs.)
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.database.validate()?;
        self.redis.validate()?;
        self.kafka.validate()?;
        self.opensearch.validate()
    }

    /// Names of topics, groups, index and keys under this namespace.
    pub fn names(&self) -> Names {
        Names::new(&self.namespace)
    }
}

/// Checks that `value` parses as a URL with one of `schemes` and a host (the password never
/// quoted).
pub(crate) fn check_url(setting: &'static str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
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
    fn default_settings_match_an_empty_command_line() {
        let (parsed, built) = (T::parse_from(["t"]).infra, InfraConfig::default());
        // Compared through Debug: what differs would show there (secrets redacted alike).
        let strip_env = |c: &InfraConfig| {
            let mut c = c.clone();
            c.kafka.properties.clear();
            format!("{c:?}")
        };
        if std::env::vars().all(|(k, _)| !is_read_setting(&k)) {
            assert_eq!(strip_env(&parsed), strip_env(&built));
        }
    }

    /// True for a variable this test's parse would read (then defaults cannot be compared).
    fn is_read_setting(k: &str) -> bool {
        use clap::CommandFactory;
        T::command()
            .get_arguments()
            .any(|a| a.get_env().is_some_and(|e| e == k))
    }

    #[test]
    fn the_security_protocol_is_read_in_either_case() {
        let c = parse(&["--kafka-security-protocol", "SASL_SSL"]);
        assert_eq!(
            c.kafka.security_protocol.as_deref().map(str::to_ascii_lowercase),
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
    fn debug_output_shows_no_password() {
        let c = parse(&[
            "--database-url",
            "postgres://u:db-secret@h/db",
            "--opensearch-url",
            "https://u:os-secret@h:9200",
            "--opensearch-username",
            "u",
            "--opensearch-password",
            "os-password",
            "--kafka-sasl-password",
            "kafka-secret",
        ]);
        let shown = format!("{c:?}");
        for secret in ["db-secret", "os-secret", "os-password", "kafka-secret", ":aliexpress@"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn a_list_of_opensearch_urls_is_checked_and_redacted_url_by_url() {
        let c = parse(&["--opensearch-url", "http://a:9200, https://u:pw@b:9200"]);
        assert!(c.validate().is_ok());
        assert_eq!(
            redact(c.opensearch.url.expose()),
            "http://a:9200/,https://u:***@b:9200/"
        );
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
    fn a_ca_file_without_tls_and_a_password_without_a_user_are_refused() {
        let e = parse(&["--redis-ca-file", "/etc/ca.pem"]).validate().unwrap_err();
        assert_eq!(e.setting, "REDIS_CA_FILE");
        let e = parse(&["--opensearch-password", "pw"]).validate().unwrap_err();
        assert_eq!(e.setting, "OPENSEARCH_USERNAME");
    }
}
