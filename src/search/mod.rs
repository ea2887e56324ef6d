//! OpenSearch adapter: client, index mapping and alias, product documents, the bulk indexer
//! with per-item classification, and the search query.

pub mod bulk;
pub mod client;
pub mod cursor;
pub mod document;
pub mod facets;
pub mod index;
pub mod index_step;
pub mod query;
pub mod refresher;
pub mod request;
pub mod suggest;

pub use client::{SearchAccess, SearchClient};

/// Failures talking to OpenSearch.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// Transport failure (connection refused, timeout).
    #[error("opensearch unreachable: {0}")]
    Transport(String),
    /// A non-success answer.
    #[error("opensearch answered {status}: {body}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Error body (truncated).
        body: String,
    },
    /// The answer was not what the API documents.
    #[error("unexpected opensearch answer: {0}")]
    Decode(String),
}

impl SearchError {
    /// Worth retrying: transport errors, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport(_) => true,
            Self::Status { status, .. } => *status == 429 || *status >= 500,
            Self::Decode(_) => false,
        }
    }
}

impl crate::failure::Classify for SearchError {
    /// Transport errors, 429 and 5xx are transient; other statuses permanent; an answer that
    /// cannot be decoded (a proxy page, a cut connection) ambiguous.
    fn failure_class(&self) -> crate::failure::FailureClass {
        use crate::failure::FailureClass;
        match self {
            Self::Decode(_) => FailureClass::Ambiguous,
            e if e.is_retryable() => FailureClass::Transient,
            _ => FailureClass::Permanent,
        }
    }
}
