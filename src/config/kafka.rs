//! Kafka settings: where every Kafka client of the binary (producer, consumers, admin clients,
//! the start-up probe, the ops tools) connects, with which security, and the layout of the
//! topics the binary creates. The clients' configuration is built from them by
//! `bus::KafkaConnection::from_settings`.
//!
//! | variable | librdkafka property | default |
//! |---|---|---|
//! | KAFKA_BOOTSTRAP_SERVERS | bootstrap.servers (host:port, comma separated) | 127.0.0.1:9092 |
//! | KAFKA_SECURITY_PROTOCOL | security.protocol (plaintext, ssl, sasl_plaintext, sasl_ssl) | plaintext |
//! | KAFKA_SASL_MECHANISM | sasl.mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER) | |
//! | KAFKA_SASL_USERNAME | sasl.username | |
//! | KAFKA_SASL_PASSWORD | sasl.password (secret) | |
//! | KAFKA_SSL_CA_LOCATION | ssl.ca.location (PEM file of trusted CAs; system roots if unset) | |
//! | KAFKA_SSL_CERTIFICATE_LOCATION | ssl.certificate.location (client certificate, mTLS) | |
//! | KAFKA_SSL_KEY_LOCATION | ssl.key.location (client key, mTLS) | |
//! | KAFKA_SSL_KEY_PASSWORD | ssl.key.password (secret) | |
//! | KAFKA_PROPERTIES_FILE | any property, Java-style `key=value` lines | |
//! | KAFKA_PROPERTY_<NAME> | any property: `KAFKA_PROPERTY_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=none` sets `ssl.endpoint.identification.algorithm` (`_` for `.`, `__` for `_`) | |
//!
//! Precedence, lowest first: the binary's own defaults, `KAFKA_PROPERTIES_FILE`,
//! `KAFKA_PROPERTY_<NAME>` variables, then the named settings above. A properties file may
//! carry a Java client's `sasl.jaas.config`; librdkafka does not understand it, so it is
//! refused with a hint to use `sasl.username`/`sasl.password`.
//!
//! Topics the consumers create when they are missing (an existing topic keeps its own):
//!
//! | variable | default | meaning |
//! |---|---|---|
//! | KAFKA_TOPIC_PARTITIONS | 12 | partitions of each topic: the most consumer pipelines that can work in parallel |
//! | KAFKA_TOPIC_REPLICATION_FACTOR | 1 | replication factor (-1: the broker's `default.replication.factor`) |

use clap::Args;
use std::path::PathBuf;

use super::ConfigError;
use crate::secret::Secret;

/// Prefix of the pass-through variables `KAFKA_PROPERTY_<NAME>`.
pub const PROPERTY_ENV_PREFIX: &str = "KAFKA_PROPERTY_";

/// Default partitions of every topic the platform creates (`KAFKA_TOPIC_PARTITIONS`).
/// Ordering is per product key, so partitions are the unit of consumer parallelism: one
/// pipeline per partition in each projection process, and no more busy consumers in a group
/// than partitions. 12 lets 1, 2, 3, 4, 6 or 12 processes share them evenly and leaves room
/// to grow without re-partitioning (which would move products to other partitions and break
/// their order while old events are still unread); each partition costs the brokers a few
/// files and a little memory, nothing like the cost of too few.
pub const DEFAULT_TOPIC_PARTITIONS: i32 = 12;

/// Default `KAFKA_BOOTSTRAP_SERVERS`: the local stack's broker.
pub const DEFAULT_BOOTSTRAP_SERVERS: &str = "127.0.0.1:9092";

/// Where and how every Kafka client connects, and the layout of topics the binary creates.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Kafka")]
pub struct KafkaSettings {
    /// Kafka bootstrap servers, comma separated host:port.
    #[arg(
        id = "kafka_bootstrap_servers",
        value_name = "KAFKA_BOOTSTRAP_SERVERS",
        long = "kafka-bootstrap-servers",
        env = "KAFKA_BOOTSTRAP_SERVERS",
        global = true,
        default_value = DEFAULT_BOOTSTRAP_SERVERS
    )]
    pub bootstrap_servers: String,
    /// Kafka security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(
        id = "kafka_security_protocol",
        value_name = "KAFKA_SECURITY_PROTOCOL",
        long = "kafka-security-protocol",
        env = "KAFKA_SECURITY_PROTOCOL",
        global = true,
        value_parser = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"],
        ignore_case = true,
        help_heading = "Kafka security (TLS, SASL)"
    )]
    pub security_protocol: Option<String>,
    /// Kafka sasl.mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.
    #[arg(
        id = "kafka_sasl_mechanism",
        value_name = "KAFKA_SASL_MECHANISM",
        long = "kafka-sasl-mechanism",
        env = "KAFKA_SASL_MECHANISM",
        global = true,
        help_heading = "Kafka security (TLS, SASL)"
    )]
    pub sasl_mechanism: Option<String>,
    /// Kafka sasl.username.
    #[arg(
        id = "kafka_sasl_username",
        value_name = "KAFKA_SASL_USERNAME",
        long = "kafka-sasl-username",
        env = "KAFKA_SASL_USERNAME",
        global = true,
        help_heading = "Kafka security (TLS, SASL)"
    )]
    pub sasl_username: Option<String>,
    /// Kafka sasl.password (never shown).
    #[arg(
        id = "kafka_sasl_password",
        value_name = "KAFKA_SASL_PASSWORD",
        long = "kafka-sasl-password",
        env = "KAFKA_SASL_PASSWORD",
        global = true,
        hide_env_values = true,
        help_heading = "Kafka security (TLS, SASL)"
    )]
    pub sasl_password: Option<Secret>,
    /// Kafka ssl.ca.location: PEM file of the CA(s) that signed the brokers' certificates
    /// (the system's roots when unset).
    #[arg(
        id = "kafka_ssl_ca_location",
        value_name = "KAFKA_SSL_CA_LOCATION",
        long = "kafka-ssl-ca-location",
        env = "KAFKA_SSL_CA_LOCATION",
        global = true,
        help_heading = "Kafka security (TLS, SASL)"
    )]
    pub ssl_ca_location: Option<PathBuf>,
    /// Kafka ssl.certificate.location: client certificate (PEM) for mutual TLS.
    #[arg(
        id = "kafka_ssl_certificate_location",
        value_name = "KAFKA_SSL_CERTIFICATE_LOCATION",
        long = "kafka-ssl-certificate-location",
        env = "KAFKA_SSL_CERTIFICATE_LOCATION",
        global = true,
        help_heading = "Kafka security (TLS, SASL)"
    )]
    pub ssl_certificate_location: Option<PathBuf>,
    /// Kafka ssl.key.location: client private key (PEM) for mutual TLS.
    #[arg(
        id = "kafka_ssl_key_location",
        value_name = "KAFKA_SSL_KEY_LOCATION",
        long = "kafka-ssl-key-location",
        env = "KAFKA_SSL_KEY_LOCATION",
        global = true,
        help_heading = "Kafka security (TLS, SASL)"
    )]
    pub ssl_key_location: Option<PathBuf>,
    /// Kafka ssl.key.password: password of an encrypted client key (never shown).
    #[arg(
        id = "kafka_ssl_key_password",
        value_name = "KAFKA_SSL_KEY_PASSWORD",
        long = "kafka-ssl-key-password",
        env = "KAFKA_SSL_KEY_PASSWORD",
        global = true,
        hide_env_values = true,
        help_heading = "Kafka security (TLS, SASL)"
    )]
    pub ssl_key_password: Option<Secret>,
    /// File of extra librdkafka properties (`key=value` lines); KAFKA_PROPERTY_<NAME>
    /// variables and the settings above override it.
    #[arg(
        id = "kafka_properties_file",
        value_name = "KAFKA_PROPERTIES_FILE",
        long = "kafka-properties-file",
        env = "KAFKA_PROPERTIES_FILE",
        global = true,
        help_heading = "Kafka security (TLS, SASL)"
    )]
    pub properties_file: Option<PathBuf>,
    /// librdkafka properties from this process's `KAFKA_PROPERTY_<NAME>` variables, sorted by
    /// property (values treated as secrets: any of them may be a password).
    #[arg(skip = properties_from_env(std::env::vars()))]
    pub properties: Vec<(String, Secret)>,
    /// Partitions of each topic the consumers create when it is missing; an existing topic
    /// keeps its own (adding partitions moves keys to other partitions, see DEPLOYMENT.md).
    /// It caps the projection's parallelism: one pipeline per partition, in however many
    /// processes.
    #[arg(
        id = "kafka_topic_partitions",
        value_name = "KAFKA_TOPIC_PARTITIONS",
        long = "kafka-topic-partitions",
        env = "KAFKA_TOPIC_PARTITIONS",
        global = true,
        default_value_t = DEFAULT_TOPIC_PARTITIONS,
        value_parser = clap::value_parser!(i32).range(1..=10_000)
    )]
    pub topic_partitions: i32,
    /// Replication factor of the topics the consumers create when they are missing (-1: the
    /// broker's `default.replication.factor`); an existing topic is left as it is.
    #[arg(
        id = "kafka_topic_replication_factor",
        value_name = "KAFKA_TOPIC_REPLICATION_FACTOR",
        long = "kafka-topic-replication-factor",
        env = "KAFKA_TOPIC_REPLICATION_FACTOR",
        global = true,
        default_value_t = 1,
        allow_negative_numbers = true
    )]
    pub topic_replication_factor: i32,
}

impl Default for KafkaSettings {
    /// The local stack's broker over plaintext, no pass-through properties.
    fn default() -> Self {
        Self {
            bootstrap_servers: DEFAULT_BOOTSTRAP_SERVERS.to_owned(),
            security_protocol: None,
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password: None,
            ssl_ca_location: None,
            ssl_certificate_location: None,
            ssl_key_location: None,
            ssl_key_password: None,
            properties_file: None,
            properties: Vec::new(),
            topic_partitions: DEFAULT_TOPIC_PARTITIONS,
            topic_replication_factor: 1,
        }
    }
}

impl KafkaSettings {
    /// Checks the bootstrap list and the replication factor, without connecting. What depends
    /// on the properties file (SASL completeness, readable TLS files) is checked when the
    /// connection is built.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.bootstrap_servers.split(',').any(|s| {
            let s = s.trim();
            s.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        }) {
            return Err(ConfigError::new(
                "KAFKA_BOOTSTRAP_SERVERS",
                format!("expected host:port[,host:port], got {:?}", self.bootstrap_servers),
            ));
        }
        if self.topic_replication_factor == 0 || self.topic_replication_factor < -1 {
            return Err(ConfigError::new(
                "KAFKA_TOPIC_REPLICATION_FACTOR",
                format!(
                    "must be at least 1, or -1 for the broker's default, got {}",
                    self.topic_replication_factor
                ),
            ));
        }
        Ok(())
    }
}

/// The librdkafka properties named by `KAFKA_PROPERTY_<NAME>` variables among `env`, sorted by
/// property.
pub fn properties_from_env(env: impl IntoIterator<Item = (String, String)>) -> Vec<(String, Secret)> {
    let mut props: Vec<(String, Secret)> = env
        .into_iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(PROPERTY_ENV_PREFIX)
                .filter(|s| !s.is_empty())
                .map(|s| (property_from_env_suffix(s), Secret::new(v)))
        })
        .collect();
    props.sort_by(|a, b| a.0.cmp(&b.0));
    props
}

/// librdkafka property named by a `KAFKA_PROPERTY_<NAME>` variable: the suffix lowercased,
/// `_` read as `.` (`SSL_ENDPOINT_IDENTIFICATION_ALGORITHM` → `ssl.endpoint.identification.algorithm`);
/// a double underscore stands for a literal `_` (no common property needs it).
pub fn property_from_env_suffix(suffix: &str) -> String {
    suffix
        .to_ascii_lowercase()
        .split("__")
        .map(|part| part.replace('_', "."))
        .collect::<Vec<_>>()
        .join("_")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn env_suffixes_become_dotted_property_names() {
        assert_eq!(
            property_from_env_suffix("SSL_ENDPOINT_IDENTIFICATION_ALGORITHM"),
            "ssl.endpoint.identification.algorithm"
        );
        assert_eq!(property_from_env_suffix("LINGER_MS"), "linger.ms");
        assert_eq!(property_from_env_suffix("SOME__ODD_NAME"), "some_odd.name");
    }

    #[test]
    fn pass_through_variables_name_their_property() {
        let props = properties_from_env(env(&[
            ("KAFKA_PROPERTY_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "none"),
            ("KAFKA_PROPERTY_LINGER_MS", "9"),
            ("KAFKA_PROPERTY_", "ignored"),
            ("OTHER", "x"),
        ]));
        let named: Vec<(&str, &str)> = props.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(
            named,
            vec![("linger.ms", "9"), ("ssl.endpoint.identification.algorithm", "none")]
        );
    }
}
