//! Where and how every Kafka client of the binary connects: bootstrap servers plus any
//! librdkafka property (security protocol, SASL, TLS files, ...). Producers, consumers, admin
//! clients and the start-up probe all start from [`KafkaConnection::client_config`], so a
//! secured cluster needs its settings given once: [`KafkaConnection::from_settings`] turns
//! `config::KafkaSettings` (the variables, documented in `config::kafka`) into properties.
//!
//! Building from settings reads `KAFKA_PROPERTIES_FILE` and checks what librdkafka would only
//! report late and vaguely: TLS files that cannot be read, SASL without a user or password. A
//! [`SettingError`] names the setting at fault.
//!
//! Values of secret properties (passwords, secrets, private keys) never appear in `Debug`
//! output or in errors made here.

use rdkafka::config::ClientConfig;
use std::fmt;
use std::path::PathBuf;

use crate::config::KafkaSettings;

/// A Kafka setting that cannot be used: the variable at fault and why (secrets never quoted).
#[derive(Debug, thiserror::Error)]
#[error("{setting}: {message}")]
pub struct SettingError {
    /// Environment variable (and flag) at fault.
    pub setting: &'static str,
    /// What is wrong.
    pub message: String,
}

impl SettingError {
    fn new(setting: &'static str, message: impl Into<String>) -> Self {
        Self {
            setting,
            message: message.into(),
        }
    }
}

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

    /// The connection `settings` describe: the properties of `KAFKA_PROPERTIES_FILE`, then the
    /// `KAFKA_PROPERTY_<NAME>` variables, then the named settings (each later one wins); TLS
    /// files and SASL credentials checked.
    pub fn from_settings(settings: &KafkaSettings) -> Result<Self, SettingError> {
        let mut c = Self::new(settings.bootstrap_servers.as_str());
        if let Some(path) = &settings.properties_file {
            for (k, v) in properties_file(path)? {
                c.set(k, v);
            }
        }
        for (k, v) in &settings.properties {
            c.set(k.as_str(), v.expose());
        }
        let path_str = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let named: [(&str, Option<String>); 8] = [
            (
                "security.protocol",
                settings.security_protocol.as_ref().map(|p| p.to_ascii_lowercase()),
            ),
            ("sasl.mechanism", settings.sasl_mechanism.clone()),
            ("sasl.username", settings.sasl_username.clone()),
            (
                "sasl.password",
                settings.sasl_password.as_ref().map(|s| s.expose().to_owned()),
            ),
            ("ssl.ca.location", path_str(&settings.ssl_ca_location)),
            ("ssl.certificate.location", path_str(&settings.ssl_certificate_location)),
            ("ssl.key.location", path_str(&settings.ssl_key_location)),
            (
                "ssl.key.password",
                settings.ssl_key_password.as_ref().map(|s| s.expose().to_owned()),
            ),
        ];
        for (k, v) in named {
            if let Some(v) = v {
                c.set(k, v);
            }
        }
        c.check()?;
        Ok(c)
    }

    /// Refuses a TLS file that cannot be read, and SASL without its credentials, naming the
    /// setting (librdkafka's own message for these is vague and comes late).
    fn check(&self) -> Result<(), SettingError> {
        let files: [(&str, &'static str); 3] = [
            ("ssl.ca.location", "KAFKA_SSL_CA_LOCATION"),
            ("ssl.certificate.location", "KAFKA_SSL_CERTIFICATE_LOCATION"),
            ("ssl.key.location", "KAFKA_SSL_KEY_LOCATION"),
        ];
        for (prop, setting) in files {
            // `probe` asks librdkafka to find the system's CA store.
            if let Some(path) = self.property(prop).filter(|p| *p != "probe") {
                if let Err(e) = std::fs::File::open(path) {
                    return Err(SettingError::new(setting, format!("cannot read {path}: {e}")));
                }
            }
        }
        let protocol = self.security_protocol();
        if protocol.starts_with("sasl") {
            let mechanism = self
                .property("sasl.mechanism")
                .or_else(|| self.property("sasl.mechanisms"));
            let needs_password = mechanism.is_some_and(|m| m.eq_ignore_ascii_case("PLAIN") || m.starts_with("SCRAM"));
            let missing = if self.property("sasl.username").is_none() {
                Some(("KAFKA_SASL_USERNAME", "a user name"))
            } else if self.property("sasl.password").is_none() {
                Some(("KAFKA_SASL_PASSWORD", "a password"))
            } else {
                None
            };
            if let Some((setting, what)) = missing.filter(|_| needs_password) {
                return Err(SettingError::new(
                    setting,
                    format!(
                        "security protocol {protocol} with {} needs {what}",
                        mechanism.unwrap_or("?")
                    ),
                ));
            }
        }
        Ok(())
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

/// The properties of the `KAFKA_PROPERTIES_FILE` at `path`; a Java client's
/// `sasl.jaas.config` is refused with a hint.
fn properties_file(path: &std::path::Path) -> Result<Vec<(String, String)>, SettingError> {
    const SETTING: &str = "KAFKA_PROPERTIES_FILE";
    let text = std::fs::read_to_string(path)
        .map_err(|e| SettingError::new(SETTING, format!("cannot read {}: {e}", path.display())))?;
    let props = parse_properties(&text)
        .map_err(|line| SettingError::new(SETTING, format!("{} line {line}: expected key=value", path.display())))?;
    if props.iter().any(|(k, _)| k == "sasl.jaas.config") {
        return Err(SettingError::new(
            SETTING,
            format!(
                "{}: sasl.jaas.config is a Java client setting; give sasl.username and sasl.password \
                 (or KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD) instead",
                path.display()
            ),
        ));
    }
    Ok(props)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

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
    fn named_settings_override_variables_which_override_the_file() {
        let dir = std::env::temp_dir().join(format!("kprops-{}", uuid::Uuid::new_v4()));
        std::fs::write(&dir, "security.protocol=ssl\nlinger.ms=7\nsasl.username=file-user\n").expect("write");
        let cfg = KafkaSettings {
            bootstrap_servers: "h:9094".into(),
            security_protocol: Some("SASL_SSL".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_password: Some(Secret::new("pw")),
            properties_file: Some(dir.clone()),
            // What KAFKA_PROPERTY_LINGER_MS=9 and
            // KAFKA_PROPERTY_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM=none give (config::kafka).
            properties: vec![
                ("linger.ms".into(), Secret::new("9")),
                ("ssl.endpoint.identification.algorithm".into(), Secret::new("none")),
            ],
            ..Default::default()
        };
        let c = KafkaConnection::from_settings(&cfg).expect("valid");
        let _ = std::fs::remove_file(&dir);
        assert_eq!(c.property("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.property("linger.ms"), Some("9"));
        assert_eq!(c.property("ssl.endpoint.identification.algorithm"), Some("none"));
        assert_eq!(c.property("sasl.username"), Some("file-user"));
        assert_eq!(c.property("sasl.password"), Some("pw"));
    }

    #[test]
    fn scram_without_a_password_names_the_setting() {
        let cfg = KafkaSettings {
            bootstrap_servers: "h:1".into(),
            security_protocol: Some("sasl_ssl".into()),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("u".into()),
            ..Default::default()
        };
        assert_eq!(
            KafkaConnection::from_settings(&cfg).unwrap_err().setting,
            "KAFKA_SASL_PASSWORD"
        );
    }

    #[test]
    fn a_missing_ca_file_names_the_setting() {
        let cfg = KafkaSettings {
            bootstrap_servers: "h:1".into(),
            ssl_ca_location: Some("/nonexistent/ca.pem".into()),
            ..Default::default()
        };
        assert_eq!(
            KafkaConnection::from_settings(&cfg).unwrap_err().setting,
            "KAFKA_SSL_CA_LOCATION"
        );
    }

    #[test]
    fn a_java_jaas_line_is_refused_with_a_hint() {
        let path = std::env::temp_dir().join(format!("kprops-{}", uuid::Uuid::new_v4()));
        std::fs::write(&path, "sasl.jaas.config=x required;\n").expect("write");
        let cfg = KafkaSettings {
            bootstrap_servers: "h:1".into(),
            properties_file: Some(path.clone()),
            ..Default::default()
        };
        let e = KafkaConnection::from_settings(&cfg).unwrap_err();
        let _ = std::fs::remove_file(&path);
        assert_eq!(e.setting, "KAFKA_PROPERTIES_FILE");
        assert!(e.message.contains("sasl.username"));
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
