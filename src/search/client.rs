//! The OpenSearch client: the `opensearch` crate's typed request builders, sent through
//! [`SearchClient::call`], with answers decoded into structs by [`decode`]. Every request has
//! a timeout (the client's, or the builder's `.request_timeout(..)`).
//!
//! Credentials come from [`SearchAccess`] (`OPENSEARCH_USERNAME`/`OPENSEARCH_PASSWORD`) or
//! from the URL's user info; either way they are sent as basic auth and taken out of the URL,
//! so a transport error (which quotes the URL) never carries the password. Certificates are
//! always verified (system roots, or the CA of `OPENSEARCH_CA_FILE`) unless
//! `OPENSEARCH_DANGER_ACCEPT_INVALID_CERTS` says otherwise, which is logged as a warning.
//!
//! `OPENSEARCH_URL` may list several nodes of one cluster, comma separated: requests go to
//! them in turn (any node coordinates any request), and a request whose connection a node
//! refuses is sent at once to the next one, so losing a node costs no request. The cluster
//! itself keeps the data on the surviving nodes (replicas); nothing here tracks membership.

use opensearch::auth::Credentials;
use opensearch::cert::{Certificate, CertificateValidation};
use opensearch::cluster::ClusterHealthParts;
use opensearch::http::response::Response;
use opensearch::http::transport::{Connection, ConnectionPool, SingleNodeConnectionPool, TransportBuilder};
use opensearch::OpenSearch;
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::SearchError;
use crate::config::OpenSearchSettings;
use crate::secret::Secret;
use crate::tls::TlsError;

/// Who the client is and which certificates it trusts.
#[derive(Debug, Clone, Default)]
pub struct SearchAccess {
    /// Basic-auth user (overrides the URL's).
    pub username: Option<String>,
    /// Basic-auth password (overrides the URL's).
    pub password: Option<Secret>,
    /// PEM of the CA(s) trusted instead of the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// Accept any certificate (no verification at all).
    pub danger_accept_invalid_certs: bool,
}

impl SearchAccess {
    /// The credentials and certificate checks of `settings`, the CA of `OPENSEARCH_CA_FILE`
    /// read now.
    pub fn from_settings(settings: &OpenSearchSettings) -> Result<Self, TlsError> {
        Ok(Self {
            username: settings.username.clone(),
            password: settings.password.clone(),
            ca_pem: settings.ca_file.as_deref().map(crate::tls::read_ca_pem).transpose()?,
            danger_accept_invalid_certs: settings.danger_accept_invalid_certs,
        })
    }
}

/// The nodes of `OPENSEARCH_URL`, taken in turn.
#[derive(Debug, Clone)]
struct RoundRobin {
    nodes: Arc<[Connection]>,
    next: Arc<AtomicUsize>,
}

impl ConnectionPool for RoundRobin {
    fn next(&self) -> Connection {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.nodes.len();
        self.nodes[i].clone()
    }
}

/// OpenSearch client shared by the API and the projection.
#[derive(Clone)]
pub struct SearchClient {
    inner: OpenSearch,
    timeout: Duration,
    /// Nodes in `OPENSEARCH_URL`: how many a refused connection may be tried on.
    nodes: usize,
}

impl SearchClient {
    /// A client for `url` (connects lazily), credentials only from the URL, system roots.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, SearchError> {
        Self::with_access(url, &SearchAccess::default(), timeout)
    }

    /// A client for `url` with `access`'s credentials and trusted CAs (connects lazily).
    /// `urls` may list several nodes, comma separated (credentials from the first that has
    /// them).
    pub fn with_access(urls: &str, access: &SearchAccess, timeout: Duration) -> Result<Self, SearchError> {
        crate::tls::ensure_crypto_provider();
        let mut nodes = Vec::new();
        let mut from_url = None;
        for u in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            let mut url = url::Url::parse(u).map_err(|e| SearchError::Transport(format!("invalid URL: {e}")))?;
            if from_url.is_none() && !url.username().is_empty() {
                let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
                let user = decode(url.username());
                let pass = url.password().map(decode).unwrap_or_default();
                from_url = Some((user, pass));
            }
            let _ = url.set_username("");
            let _ = url.set_password(None);
            nodes.push(url);
        }
        let node_count = nodes.len();
        let mut builder = match nodes.len() {
            0 => return Err(SearchError::Transport("invalid URL: no OpenSearch URL given".into())),
            1 => TransportBuilder::new(SingleNodeConnectionPool::new(nodes.remove(0))),
            _ => TransportBuilder::new(RoundRobin {
                nodes: nodes.into_iter().map(Connection::new).collect(),
                next: Arc::new(AtomicUsize::new(0)),
            }),
        }
        .timeout(timeout)
        .disable_proxy();
        let credentials = match (&access.username, &access.password, from_url) {
            (Some(u), p, _) => Some((u.clone(), p.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default())),
            (None, _, Some(pair)) => Some(pair),
            (None, _, None) => None,
        };
        if let Some((user, pass)) = credentials {
            builder = builder.auth(Credentials::Basic(user, pass));
        }
        if access.danger_accept_invalid_certs {
            tracing::warn!("OPENSEARCH_DANGER_ACCEPT_INVALID_CERTS is set: OpenSearch certificates are not verified");
            builder = builder.cert_validation(CertificateValidation::None);
        } else if let Some(pem) = &access.ca_pem {
            let ca =
                Certificate::from_pem(pem).map_err(|e| SearchError::Transport(format!("OPENSEARCH_CA_FILE: {e}")))?;
            builder = builder.cert_validation(CertificateValidation::Full(ca));
        }
        let transport = builder.build().map_err(|e| SearchError::Transport(e.to_string()))?;
        Ok(Self {
            inner: OpenSearch::new(transport),
            timeout,
            nodes: node_count,
        })
    }

    /// Sends the typed request `send` builds (`|os| async move { os.search(..).send().await }`)
    /// and returns OpenSearch's answer, whatever its status. When a node refuses the
    /// connection nothing was sent, so `send` is called again and the request goes at once to
    /// the next node (at most once per node). Per-request bounds are the builder's
    /// `.request_timeout(..)`; without one the client's timeout applies.
    pub async fn call<'c, F, Fut>(&'c self, send: F) -> Result<Response, SearchError>
    where
        F: Fn(&'c OpenSearch) -> Fut,
        Fut: Future<Output = Result<Response, opensearch::Error>>,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match send(&self.inner).await {
                Ok(resp) => return Ok(resp),
                Err(e) if tries < self.nodes && refused(&e) => {
                    tracing::warn!(error = %e, "an OpenSearch node refused the connection; trying the next");
                }
                Err(e) => return Err(SearchError::Transport(crate::failure::with_causes(&e))),
            }
        }
    }

    /// Runs the `_search` `body` against `index` (an alias) within `timeout`; `None` when the
    /// index does not exist (yet), else the decoded answer (a refusal is an error).
    pub async fn search_in<T: DeserializeOwned>(
        &self,
        index: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<Option<T>, SearchError> {
        let resp = self
            .call(|os| async move {
                os.search(opensearch::SearchParts::Index(&[index]))
                    .body(body)
                    .request_timeout(timeout)
                    .send()
                    .await
            })
            .await?;
        if resp.status_code().as_u16() == 404 {
            return Ok(None);
        }
        decode(resp).await.map(Some)
    }

    /// The client's timeout for one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Cluster health (`green`, `yellow`, `red`) with a server-side and client-side bound.
    pub async fn health(&self, timeout: Duration) -> Result<String, SearchError> {
        let server_side = format!("{}ms", timeout.as_millis());
        let server_side = server_side.as_str();
        let answer = async {
            let resp = self
                .call(|os| async move {
                    os.cluster()
                        .health(ClusterHealthParts::None)
                        .timeout(server_side)
                        .request_timeout(timeout)
                        .send()
                        .await
                })
                .await?;
            decode::<ClusterHealth>(resp).await
        };
        let health = tokio::time::timeout(timeout, answer)
            .await
            .map_err(|_| SearchError::Transport(format!("timed out after {timeout:?}")))??;
        Ok(health.status.unwrap_or_else(|| "unknown".to_owned()))
    }
}

/// The part of `GET /_cluster/health` the client reads.
#[derive(Debug, Deserialize)]
struct ClusterHealth {
    #[serde(default)]
    status: Option<String>,
}

/// A 2xx answer's body decoded as `T`; any other status is [`SearchError::Status`] with the
/// (truncated) body.
pub async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T, SearchError> {
    let status = resp.status_code().as_u16();
    let text = resp.text().await.map_err(|e| SearchError::Transport(e.to_string()))?;
    if status >= 300 {
        return Err(SearchError::Status {
            status,
            body: truncate(&text),
        });
    }
    serde_json::from_str(&text).map_err(|e| SearchError::Decode(format!("{e}: {}", truncate(&text))))
}

/// A 2xx answer, body ignored; any other status is [`SearchError::Status`].
pub async fn accepted(resp: Response) -> Result<(), SearchError> {
    if resp.status_code().as_u16() >= 300 {
        return Err(status_error(resp).await);
    }
    Ok(())
}

/// The error a non-2xx answer stands for, with its (truncated) body.
pub async fn status_error(resp: Response) -> SearchError {
    let status = resp.status_code().as_u16();
    match resp.text().await {
        Ok(text) => SearchError::Status {
            status,
            body: truncate(&text),
        },
        Err(e) => SearchError::Transport(e.to_string()),
    }
}

/// The `error.type` of an OpenSearch error body (`resource_already_exists_exception`, ...).
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    /// The error, when the body is one of OpenSearch's.
    #[serde(default)]
    pub error: Option<ErrorCause>,
}

/// One error cause of an [`ErrorBody`].
#[derive(Debug, Default, Deserialize)]
pub struct ErrorCause {
    /// The exception's type.
    #[serde(default, rename = "type")]
    pub kind: String,
}

/// True when the error is a connection the node refused or reset before the request went
/// out (found in the error's sources).
fn refused(e: &opensearch::Error) -> bool {
    use std::io::ErrorKind as K;
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable | K::AddrNotAvailable
            );
        }
        source = s.source();
    }
    false
}

fn truncate(s: &str) -> String {
    s.chars().take(2000).collect()
}
