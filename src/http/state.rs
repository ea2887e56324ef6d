//! [`AppState`]: what every handler may use, grouped by what it is for. Built by
//! `cli::serve::state` (the tests build it the same way); one per HTTP worker, each with its
//! own connection pools.

use std::sync::Arc;
use std::time::Duration;

use super::RateLimits;
use crate::app::Catalog;
use crate::bus::KafkaConnection;
use crate::config::Names;
use crate::ops::lag_history::LagHistory;
use crate::search::SearchClient;

/// Everything handlers share; cheap to clone (pools and clients are handles).
#[derive(Clone)]
pub struct AppState {
    /// Product writes and reads (Postgres, outbox, Redis): the application layer.
    pub catalog: Catalog,
    /// OpenSearch client (search, health).
    pub search: SearchClient,
    /// Kafka: the producer (the health probe, the console's redrive) and the connection
    /// settings (the console's group and DLQ reads).
    pub kafka: KafkaHandles,
    /// Topic, group, index and key names.
    pub names: Names,
    /// Who may call what, and how often.
    pub access: AccessControl,
    /// Bounds of the request path.
    pub limits: RequestLimits,
    /// Lag samples behind the console's chart (taken while someone looks).
    pub lag_history: Arc<tokio::sync::Mutex<LagHistory>>,
}

/// Kafka handles of the API.
#[derive(Clone)]
pub struct KafkaHandles {
    /// Producer (health probe, redrive).
    pub producer: crate::bus::FutureProducer,
    /// Connection settings, for admin and consumer reads.
    pub connection: KafkaConnection,
}

/// Who is calling, and how often.
#[derive(Clone)]
pub struct AccessControl {
    /// Bearer tokens to principals: identity-provider tokens, API keys, development tokens.
    pub identity: crate::identity::Identity,
    /// Per-client request and failed-authentication limits.
    pub rate_limits: Arc<RateLimits>,
}

/// Bounds of the request path.
#[derive(Debug, Clone)]
pub struct RequestLimits {
    /// Bound of each health check.
    pub health_timeout: Duration,
    /// Bound of a search query (`SEARCH_REQUEST_TIMEOUT_MS`); past it, 503.
    pub search_timeout: Duration,
    /// Bound of reading a request body (`HTTP_BODY_READ_TIMEOUT_MS`).
    pub body_read_timeout: Duration,
    /// Bound of a request's work once admitted (`HTTP_REQUEST_DEADLINE_MS`); `None`: none.
    pub deadline: Option<Duration>,
    /// Bounds of the requests in flight (`HTTP_MAX_IN_FLIGHT`, per worker too).
    pub admission: super::admission::Admission,
}

impl AppState {
    /// The Postgres pool (the catalog's).
    pub fn pool(&self) -> &crate::store::PgPool {
        &self.catalog.pool
    }

    /// The Redis product cache (the catalog's).
    pub fn cache(&self) -> &crate::cache::ProductCache {
        &self.catalog.cache
    }
}
