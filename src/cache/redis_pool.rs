//! Redis connections: a deadpool pool of multiplexed connections to a [`RedisEndpoint`].
//!
//! `redis://` is plain TCP, `rediss://` is TLS (rustls) checked against the system's roots or,
//! when given, the CA of `REDIS_CA_FILE`. A password (`redis://:pass@host`) or an ACL user
//! (`redis://user:pass@host`) in the URL is sent with AUTH on every new connection. deadpool-redis's
//! own manager cannot carry a custom CA (its config drops the TLS parameters), hence this small
//! manager; recycling does what deadpool-redis's does (a PING).

use deadpool::managed::{self, Metrics, RecycleResult};
use redis::aio::MultiplexedConnection;
use redis::{Client, RedisResult, TlsCertificates};
use std::fmt;

/// Pool of Redis connections.
pub type RedisPool = managed::Pool<RedisManager>;
/// A connection checked out of [`RedisPool`].
pub type RedisConn = managed::Object<RedisManager>;

/// A Redis URL and the CA trusted for `rediss://`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisEndpoint {
    url: String,
    ca_pem: Option<Vec<u8>>,
}

impl RedisEndpoint {
    /// `url` (`redis://` or `rediss://`), trusting the system's roots for TLS.
    pub fn new(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            ca_pem: None,
        }
    }

    /// Trusts the CA certificates of `pem` (instead of the system's roots) for `rediss://`.
    #[must_use]
    pub fn with_ca_pem(mut self, pem: Option<Vec<u8>>) -> Self {
        self.ca_pem = pem;
        self
    }

    /// The URL, password redacted, for messages.
    pub fn redacted(&self) -> String {
        crate::config::redact(&self.url)
    }

    /// A client for this endpoint (connects lazily).
    pub fn client(&self) -> RedisResult<Client> {
        // rediss:// builds a rustls config, which needs the process's crypto provider.
        crate::tls::ensure_crypto_provider();
        match &self.ca_pem {
            Some(pem) => Client::build_with_tls(
                self.url.as_str(),
                TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem.clone()),
                },
            ),
            None => Client::open(self.url.as_str()),
        }
    }
}

impl From<&str> for RedisEndpoint {
    fn from(url: &str) -> Self {
        Self::new(url)
    }
}

impl From<&String> for RedisEndpoint {
    fn from(url: &String) -> Self {
        Self::new(url)
    }
}

impl From<&RedisEndpoint> for RedisEndpoint {
    fn from(e: &RedisEndpoint) -> Self {
        e.clone()
    }
}

impl fmt::Debug for RedisEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisEndpoint")
            .field("url", &self.redacted())
            .field("custom_ca", &self.ca_pem.is_some())
            .finish()
    }
}

/// Creates multiplexed connections and checks them with PING when recycled.
pub struct RedisManager {
    client: Client,
}

impl RedisManager {
    /// A manager for `endpoint`.
    pub fn new(endpoint: &RedisEndpoint) -> RedisResult<Self> {
        Ok(Self {
            client: endpoint.client()?,
        })
    }
}

impl fmt::Debug for RedisManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RedisManager")
    }
}

impl managed::Manager for RedisManager {
    type Type = MultiplexedConnection;
    type Error = redis::RedisError;

    async fn create(&self) -> Result<MultiplexedConnection, redis::RedisError> {
        self.client.get_multiplexed_async_connection().await
    }

    async fn recycle(&self, conn: &mut MultiplexedConnection, _: &Metrics) -> RecycleResult<redis::RedisError> {
        let pong: String = redis::cmd("PING").query_async(conn).await?;
        if pong == "PONG" {
            Ok(())
        } else {
            Err(managed::RecycleError::message("unexpected PING answer"))
        }
    }
}
