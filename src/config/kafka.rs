//! Kafka client security: the settings every Kafka client of the binary (producer, consumers,
//! admin clients, the start-up probe, the ops tools) is built with.
//!
//! | variable | librdkafka property | default |
//! |---|---|---|
//! | KAFKA_SECURITY_PROTOCOL | security.protocol (plaintext, ssl, sasl_plaintext, sasl_ssl) | plaintext |
//! | KAFKA_SASL_MECHANISM | sasl.mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, OAUTHBEARER) | |
//! | KAFKA_SASL_USERNAME | sasl.username | |
//! | KAFKA_SASL_PASSWORD | sasl.password (secret) | |
//! | KAFKA_SSL_CA_LOCATION | ssl.ca.location (PEM file of trusted CAs; system roots if unset) | |
//! | KAFKA_SSL_CERTIFICATE_LOCATION | ssl.certificate.location (client certificate, mTLS) | |
//! | KAFKA_SSL_KEY_LOCATION | ssl.key.location (client key, mTLS) | |
//! | KAFKA_SSL_KEY_PASSWORD | ssl.key.password (secret) | |
//! | KAFKA_PROPERTIES_FILE | any property, Java-style `key=value` lines | |
//! | KAFKA_PROPERTY_<NAME> | any property: `KAFKA_PROPERTY_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=none` sets `ssl.endpoint.identification.algorithm` | |
//!
//! Precedence, lowest first: the binary's own defaults, `KAFKA_PROPERTIES_FILE`,
//! `KAFKA_PROPERTY_<NAME>` variables, then the named settings above. A properties file may
//! carry a Java client's `sasl.jaas.config`; librdkafka does not understand it, so it is
//! refused with a hint to use `sasl.username`/`sasl.password`.

use clap::Args;
use std::path::PathBuf;

use super::{ConfigError, Secret};
use crate::bus::connection::{parse_properties, property_from_env_suffix, KafkaConnection};

/// Prefix of the pass-through variables.
pub const PROPERTY_ENV_PREFIX: &str = "KAFKA_PROPERTY_";

/// Security settings of every Kafka client.
#[derive(Debug, Clone, Default, Args)]
pub struct KafkaSecurityConfig {
    /// Kafka security.protocol: plaintext, ssl, sasl_plaintext or sasl_ssl.
    #[arg(
        long,
        env = "KAFKA_SECURITY_PROTOCOL",
        global = true,
        value_parser = ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"],
        ignore_case = true
    )]
    pub kafka_security_protocol: Option<String>,
    /// Kafka sasl.mechanism: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER.
    #[arg(long, env = "KAFKA_SASL_MECHANISM", global = true)]
    pub kafka_sasl_mechanism: Option<String>,
    /// Kafka sasl.username.
    #[arg(long, env = "KAFKA_SASL_USERNAME", global = true)]
    pub kafka_sasl_username: Option<String>,
    /// Kafka sasl.password (never shown).
    #[arg(long, env = "KAFKA_SASL_PASSWORD", global = true, hide_env_values = true)]
    pub kafka_sasl_password: Option<Secret>,
    /// Kafka ssl.ca.location: PEM file of the CA(s) that signed the brokers' certificates
    /// (the system's roots when unset).
    #[arg(long, env = "KAFKA_SSL_CA_LOCATION", global = true)]
    pub kafka_ssl_ca_location: Option<PathBuf>,
    /// Kafka ssl.certificate.location: client certificate (PEM) for mutual TLS.
    #[arg(long, env = "KAFKA_SSL_CERTIFICATE_LOCATION", global = true)]
    pub kafka_ssl_certificate_location: Option<PathBuf>,
    /// Kafka ssl.key.location: client private key (PEM) for mutual TLS.
    #[arg(long, env = "KAFKA_SSL_KEY_LOCATION", global = true)]
    pub kafka_ssl_key_location: Option<PathBuf>,
    /// Kafka ssl.key.password: password of an encrypted client key (never shown).
    #[arg(long, env = "KAFKA_SSL_KEY_PASSWORD", global = true, hide_env_values = true)]
    pub kafka_ssl_key_password: Option<Secret>,
    /// File of extra librdkafka properties (`key=value` lines); KAFKA_PROPERTY_<NAME>
    /// variables and the settings above override it.
    #[arg(long, env = "KAFKA_PROPERTIES_FILE", global = true)]
    pub kafka_properties_file: Option<PathBuf>,
}

impl KafkaSecurityConfig {
    /// The connection to `bootstrap` with every property, reading `KAFKA_PROPERTY_<NAME>`
    /// from `env` (the process environment in production).
    pub fn connection(
        &self,
        bootstrap: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<KafkaConnection, ConfigError> {
        let mut c = KafkaConnection::new(bootstrap);
        if let Some(path) = &self.kafka_properties_file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("KAFKA_PROPERTIES_FILE", format!("cannot read {}: {e}", path.display()))
            })?;
            let props = parse_properties(&text).map_err(|line| {
                ConfigError::new(
                    "KAFKA_PROPERTIES_FILE",
                    format!("{} line {line}: expected key=value", path.display()),
                )
            })?;
            for (k, v) in props {
                if k == "sasl.jaas.config" {
                    return Err(ConfigError::new(
                        "KAFKA_PROPERTIES_FILE",
                        format!(
                            "{}: sasl.jaas.config is a Java client setting; give sasl.username and sasl.password \
                             (or KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD) instead",
                            path.display()
                        ),
                    ));
                }
                c.set(k, v);
            }
        }
        let mut from_env: Vec<(String, String)> = env
            .into_iter()
            .filter_map(|(k, v)| {
                k.strip_prefix(PROPERTY_ENV_PREFIX)
                    .filter(|s| !s.is_empty())
                    .map(|s| (property_from_env_suffix(s), v))
            })
            .collect();
        from_env.sort();
        for (k, v) in from_env {
            c.set(k, v);
        }
        let named: [(&str, Option<String>); 8] = [
            (
                "security.protocol",
                self.kafka_security_protocol.as_ref().map(|p| p.to_ascii_lowercase()),
            ),
            ("sasl.mechanism", self.kafka_sasl_mechanism.clone()),
            ("sasl.username", self.kafka_sasl_username.clone()),
            (
                "sasl.password",
                self.kafka_sasl_password.as_ref().map(|s| s.expose().to_owned()),
            ),
            ("ssl.ca.location", path_str(self.kafka_ssl_ca_location.as_ref())),
            (
                "ssl.certificate.location",
                path_str(self.kafka_ssl_certificate_location.as_ref()),
            ),
            ("ssl.key.location", path_str(self.kafka_ssl_key_location.as_ref())),
            (
                "ssl.key.password",
                self.kafka_ssl_key_password.as_ref().map(|s| s.expose().to_owned()),
            ),
        ];
        for (k, v) in named {
            if let Some(v) = v {
                c.set(k, v);
            }
        }
        check_files(&c)?;
        Ok(c)
    }
}

fn path_str(p: Option<&PathBuf>) -> Option<String> {
    p.map(|p| p.display().to_string())
}

/// Refuses a TLS file setting that names a file that cannot be read, naming the setting
/// (librdkafka's own message for this is vague and comes late).
fn check_files(c: &KafkaConnection) -> Result<(), ConfigError> {
    let files: [(&str, &'static str); 3] = [
        ("ssl.ca.location", "KAFKA_SSL_CA_LOCATION"),
        ("ssl.certificate.location", "KAFKA_SSL_CERTIFICATE_LOCATION"),
        ("ssl.key.location", "KAFKA_SSL_KEY_LOCATION"),
    ];
    for (prop, setting) in files {
        // `probe` asks librdkafka to find the system's CA store.
        if let Some(path) = c.property(prop).filter(|p| *p != "probe") {
            if let Err(e) = std::fs::File::open(path) {
                return Err(ConfigError::new(setting, format!("cannot read {path}: {e}")));
            }
        }
    }
    let protocol = c.security_protocol();
    if protocol.starts_with("sasl") {
        let mechanism = c.property("sasl.mechanism").or_else(|| c.property("sasl.mechanisms"));
        let needs_password = mechanism.is_some_and(|m| m.eq_ignore_ascii_case("PLAIN") || m.starts_with("SCRAM"));
        if needs_password && c.property("sasl.username").is_none() {
            return Err(ConfigError::new(
                "KAFKA_SASL_USERNAME",
                format!(
                    "security protocol {protocol} with {} needs a user name",
                    mechanism.unwrap_or("?")
                ),
            ));
        }
        if needs_password && c.property("sasl.password").is_none() {
            return Err(ConfigError::new(
                "KAFKA_SASL_PASSWORD",
                format!(
                    "security protocol {protocol} with {} needs a password",
                    mechanism.unwrap_or("?")
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn named_settings_override_variables_which_override_the_file() {
        let dir = std::env::temp_dir().join(format!("kprops-{}", uuid::Uuid::new_v4()));
        std::fs::write(&dir, "security.protocol=ssl\nlinger.ms=7\nsasl.username=file-user\n").expect("write");
        let cfg = KafkaSecurityConfig {
            kafka_security_protocol: Some("SASL_SSL".into()),
            kafka_sasl_mechanism: Some("SCRAM-SHA-512".into()),
            kafka_sasl_password: Some(Secret::new("pw")),
            kafka_properties_file: Some(dir.clone()),
            ..Default::default()
        };
        let c = cfg
            .connection(
                "h:9094",
                env(&[
                    ("KAFKA_PROPERTY_LINGER_MS", "9"),
                    ("KAFKA_PROPERTY_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM", "none"),
                    ("OTHER", "x"),
                ]),
            )
            .expect("valid");
        let _ = std::fs::remove_file(&dir);
        assert_eq!(c.property("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.property("linger.ms"), Some("9"));
        assert_eq!(c.property("ssl.endpoint.identification.algorithm"), Some("none"));
        assert_eq!(c.property("sasl.username"), Some("file-user"));
        assert_eq!(c.property("sasl.password"), Some("pw"));
    }

    #[test]
    fn scram_without_a_password_names_the_setting() {
        let cfg = KafkaSecurityConfig {
            kafka_security_protocol: Some("sasl_ssl".into()),
            kafka_sasl_mechanism: Some("SCRAM-SHA-512".into()),
            kafka_sasl_username: Some("u".into()),
            ..Default::default()
        };
        assert_eq!(
            cfg.connection("h:1", vec![]).unwrap_err().setting,
            "KAFKA_SASL_PASSWORD"
        );
    }

    #[test]
    fn a_missing_ca_file_names_the_setting() {
        let cfg = KafkaSecurityConfig {
            kafka_ssl_ca_location: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            cfg.connection("h:1", vec![]).unwrap_err().setting,
            "KAFKA_SSL_CA_LOCATION"
        );
    }

    #[test]
    fn a_java_jaas_line_is_refused_with_a_hint() {
        let path = std::env::temp_dir().join(format!("kprops-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "sasl.jaas.config=x required;\n").expect("write");
        let cfg = KafkaSecurityConfig {
            kafka_properties_file: Some(path.clone()),
            ..Default::default()
        };
        let e = cfg.connection("h:1", vec![]).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert_eq!(e.setting, "KAFKA_PROPERTIES_FILE");
        assert!(e.message.contains("sasl.username"));
    }
}
