//! Values that must never be printed: [`Secret`] (a password or key) and [`SecretUrl`] (a
//! connection URL that may carry one). Both print redacted in `Debug` and `Display`, so a
//! settings struct holding them derives `Debug` and can be logged or shown in an error safely;
//! only `expose()` reads the value, to hand it to a client library.
//!
//! [`redact`] is the one rule for URLs: the password of the user info, and any query parameter
//! whose name holds `password`, `secret` or `token`, become `***`.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;

/// A password or key given as a setting. Only [`Secret::expose`] reads it; `Debug` and
/// `Display` print `***`, so a config struct can be logged or shown in an error safely.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for handing to a client library. Never log what this returns.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for Secret {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A connection URL (or a comma-separated list of them) that may carry a password. `Debug`
/// and `Display` show it through [`redact`]; [`SecretUrl::expose`] gives the value itself.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps a URL.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its password, for handing to a client library. Never log what this
    /// returns; format the `SecretUrl` itself instead.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl FromStr for SecretUrl {
    type Err = Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for SecretUrl {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretUrl({:?})", redact(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&redact(&self.0))
    }
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

    #[test]
    fn a_secret_is_never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s} {s:?}"), "*** Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn a_secret_url_prints_redacted_and_exposes_the_password() {
        let u = SecretUrl::new("postgres://u:hunter2@h/db");
        assert_eq!(u.to_string(), "postgres://u:***@h/db");
        assert!(!format!("{u:?}").contains("hunter2"));
        assert_eq!(u.expose(), "postgres://u:hunter2@h/db");
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
