//! A thin JSON client over the `opensearch` crate's transport, with a timeout per request.

use opensearch::http::headers::HeaderMap;
use opensearch::http::request::JsonBody;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::http::Method;
use opensearch::OpenSearch;
use serde_json::Value;
use std::time::Duration;

use super::SearchError;

/// OpenSearch client shared by the API and the projection.
#[derive(Clone)]
pub struct SearchClient {
    inner: OpenSearch,
    timeout: Duration,
}

impl SearchClient {
    /// A client for `url` (connects lazily).
    pub fn new(url: &str, timeout: Duration) -> Result<Self, SearchError> {
        let url = url::Url::parse(url).map_err(|e| SearchError::Transport(e.to_string()))?;
        let transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(timeout)
            .disable_proxy()
            .build()
            .map_err(|e| SearchError::Transport(e.to_string()))?;
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

fn truncate(s: &str) -> String {
    s.chars().take(2000).collect()
}
