//! Where and how every Kafka client of the binary connects: bootstrap servers plus any
//! librdkafka property (security protocol, SASL, TLS files, ...). Producers, consumers, admin
//! clients and the start-up probe all start from [`KafkaConnection::client_config`], so a
//! secured cluster needs its settings given once (see `config::kafka`).
//!
//! Values of secret properties (passwords, secrets, private keys) never appear in `Debug`
//! output or in errors made here.

use rdkafka::config::ClientConfig;
use std::fmt;

/// Bootstrap servers and client properties shared by every Kafka client.
#[derive(Clone, PartialEq, Eq)]
pub struct KafkaConnection {
    bootstrap: String,
    properties: Vec<(String, String)>,
}

impl KafkaConnection {
    /// A PLAINTEXT connection to `bootstrap` (comma separated host:port).
    pub fn new(bootstrap: impl Into<String>) -> Self {
        Self {
            bootstrap: bootstrap.into(),
            properties: Vec::new(),
        }
    }

    /// Sets librdkafka property `key` (a later value for the same key wins).
    #[must_use]
    pub fn with_property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.set(key, value);
        self
    }

    /// Sets librdkafka property `key` in place (a later value for the same key wins).
    pub fn set(&mut self, key: impl Into<String>, value: impl Into<String>) {
        let key = key.into();
        let value = value.into();
        match self.properties.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.properties.push((key, value)),
        }
    }

    /// The bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// Value of a property set on this connection.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Security protocol in use (`plaintext` unless set).
    pub fn security_protocol(&self) -> String {
        self.property("security.protocol")
            .unwrap_or("plaintext")
            .to_ascii_lowercase()
    }

    /// A librdkafka configuration with the bootstrap servers and every property; the
    /// caller adds the settings of its client type.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        self.apply_to(&mut c);
        c
    }

    /// Sets the bootstrap servers and every property on `c`, replacing values already there.
    /// (Copy from here, never from another `ClientConfig`: rdkafka's `config_map()` replaces
    /// secret values such as `sasl.password` with a placeholder.)
    pub fn apply_to(&self, c: &mut ClientConfig) {
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.properties {
            c.set(k, v);
        }
    }

    /// `bootstrap.servers=...` and the properties as Java-style `key=value` lines, secrets
    /// redacted, for messages.
    pub fn describe(&self) -> String {
        let mut out = format!("{} ({})", self.bootstrap, self.security_protocol());
        if let Some(m) = self
            .property("sasl.mechanism")
            .or_else(|| self.property("sasl.mechanisms"))
        {
            out.push_str(&format!(", sasl.mechanism={m}"));
        }
        if let Some(u) = self.property("sasl.username") {
            out.push_str(&format!(", sasl.username={u}"));
        }
        out
    }
}

/// True for a property whose value must never be shown (passwords, secrets, keys, JAAS).
pub fn is_secret_property(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    k.contains("password")
        || k.contains("secret")
        || k.contains("jaas")
        || k.contains("token")
        || k == "ssl.key.pem"
        || k == "ssl_key"
        || k.ends_with("oauthbearer.config")
}

impl fmt::Debug for KafkaConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let props: Vec<(&str, &str)> = self
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), if is_secret_property(k) { "***" } else { v.as_str() }))
            .collect();
        f.debug_struct("KafkaConnection")
            .field("bootstrap", &self.bootstrap)
            .field("properties", &props)
            .finish()
    }
}

/// Parses a Java-style properties text (`key=value` or `key: value` lines, `#`/`!`
/// comments, blank lines); returns the pairs in order or the first malformed line number.
pub fn parse_properties(text: &str) -> Result<Vec<(String, String)>, usize> {
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let Some(i) = line.find(['=', ':']) else {
            return Err(n + 1);
        };
        let (k, v) = (line[..i].trim(), line[i + 1..].trim());
        if k.is_empty() {
            return Err(n + 1);
        }
        out.push((k.to_owned(), v.to_owned()));
    }
    Ok(out)
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
    fn properties_files_read_like_java_ones() {
        let p = parse_properties("# c\n! c\n\nsecurity.protocol=SASL_SSL\nsasl.mechanism : SCRAM-SHA-512\n")
            .expect("parses");
        assert_eq!(
            p,
            vec![
                ("security.protocol".to_owned(), "SASL_SSL".to_owned()),
                ("sasl.mechanism".to_owned(), "SCRAM-SHA-512".to_owned())
            ]
        );
        assert_eq!(parse_properties("ok=1\nnot a property\n"), Err(2));
    }

    #[test]
    fn debug_output_hides_secret_values() {
        let c = KafkaConnection::new("h:9094")
            .with_property("sasl.username", "svc")
            .with_property("sasl.password", "hunter2")
            .with_property("ssl.key.password", "pem-pass");
        let shown = format!("{c:?} {}", c.describe());
        assert!(!shown.contains("hunter2") && !shown.contains("pem-pass"), "{shown}");
        assert!(shown.contains("svc"));
    }

    #[test]
    fn a_later_value_replaces_an_earlier_one() {
        let c = KafkaConnection::new("h:1")
            .with_property("security.protocol", "ssl")
            .with_property("security.protocol", "sasl_ssl");
        assert_eq!(c.security_protocol(), "sasl_ssl");
        assert_eq!(c.client_config().get("security.protocol"), Some("sasl_ssl"));
    }
}
