//! A thin JSON client over the `opensearch` crate's transport, with a timeout per request.
//!
//! Credentials come from [`SearchAccess`] (`OPENSEARCH_USERNAME`/`OPENSEARCH_PASSWORD`) or
//! from the URL's user info; either way they are sent as basic auth and taken out of the URL,
//! so a transport error (which quotes the URL) never carries the password. Certificates are
//! always verified (system roots, or the CA of `OPENSEARCH_CA_FILE`) unless
//! `OPENSEARCH_DANGER_ACCEPT_INVALID_CERTS` says otherwise, which is logged as a warning.

use opensearch::auth::Credentials;
use opensearch::cert::{Certificate, CertificateValidation};
use opensearch::http::headers::HeaderMap;
use opensearch::http::request::JsonBody;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::http::Method;
use opensearch::OpenSearch;
use serde_json::Value;
use std::time::Duration;

use super::SearchError;
use crate::config::Secret;

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

/// OpenSearch client shared by the API and the projection.
#[derive(Clone)]
pub struct SearchClient {
    inner: OpenSearch,
    timeout: Duration,
}

impl SearchClient {
    /// A client for `url` (connects lazily), credentials only from the URL, system roots.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, SearchError> {
        Self::with_access(url, &SearchAccess::default(), timeout)
    }

    /// A client for `url` with `access`'s credentials and trusted CAs (connects lazily).
    pub fn with_access(url: &str, access: &SearchAccess, timeout: Duration) -> Result<Self, SearchError> {
        let mut url = url::Url::parse(url).map_err(|e| SearchError::Transport(format!("invalid URL: {e}")))?;
        let from_url = (!url.username().is_empty()).then(|| {
            let user = percent_decode(url.username());
            let pass = url.password().map(percent_decode).unwrap_or_default();
            (user, pass)
        });
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let credentials = match (&access.username, &access.password, from_url) {
            (Some(u), p, _) => Some((u.clone(), p.as_ref().map(|p| p.expose().to_owned()).unwrap_or_default())),
            (None, _, Some(pair)) => Some(pair),
            (None, _, None) => None,
        };
        let mut builder = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(timeout)
            .disable_proxy();
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
        })
    }

    /// Sends a JSON request; returns the status and the parsed body (Null when empty).
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        timeout: Option<Duration>,
    ) -> Result<(u16, Value), SearchError> {
        let resp = self
            .inner
            .send(
                method,
                path,
                HeaderMap::new(),
                Option::<&()>::None,
                body.map(JsonBody::new),
                Some(timeout.unwrap_or(self.timeout)),
            )
            .await
            .map_err(|e| SearchError::Transport(e.to_string()))?;
        read(resp).await
    }

    /// Sends an NDJSON bulk body.
    pub async fn bulk(&self, lines: Vec<Value>) -> Result<Value, SearchError> {
        let mut body = Vec::with_capacity(lines.len() * 256);
        for l in &lines {
            serde_json::to_writer(&mut body, l).map_err(|e| SearchError::Decode(e.to_string()))?;
            body.push(b'\n');
        }
        let resp = self
            .inner
            .send(
                Method::Post,
                "/_bulk",
                HeaderMap::new(),
                Option::<&()>::None,
                Some(body),
                Some(self.timeout),
            )
            .await
            .map_err(|e| SearchError::Transport(e.to_string()))?;
        let (status, v) = read(resp).await?;
        if status >= 300 {
            return Err(SearchError::Status {
                status,
                body: truncate(&v.to_string()),
            });
        }
        Ok(v)
    }

    /// Like [`request`](Self::request) but a non-2xx status is an error.
    pub async fn ok(&self, method: Method, path: &str, body: Option<Value>) -> Result<Value, SearchError> {
        let (status, v) = self.request(method, path, body, None).await?;
        if status >= 300 {
            return Err(SearchError::Status {
                status,
                body: truncate(&v.to_string()),
            });
        }
        Ok(v)
    }

    /// Cluster health with a server-side and client-side bound.
    pub async fn health(&self, timeout: Duration) -> Result<String, SearchError> {
        let path = format!("/_cluster/health?timeout={}ms", timeout.as_millis());
        let v = tokio::time::timeout(timeout, self.ok(Method::Get, &path, None))
            .await
            .map_err(|_| SearchError::Transport(format!("timed out after {timeout:?}")))??;
        Ok(v.get("status").and_then(Value::as_str).unwrap_or("unknown").to_owned())
    }
}

async fn read(resp: opensearch::http::response::Response) -> Result<(u16, Value), SearchError> {
    let status = resp.status_code().as_u16();
    let text = resp.text().await.map_err(|e| SearchError::Transport(e.to_string()))?;
    if text.is_empty() {
        return Ok((status, Value::Null));
    }
    let v = serde_json::from_str(&text).map_err(|e| SearchError::Decode(format!("{e}: {}", truncate(&text))))?;
    Ok((status, v))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

fn truncate(s: &str) -> String {
    s.chars().take(2000).collect()
}
