//! Operator tools: consumer-group inspection and lag, replay (offset moves with Kafka's own
//! reset-offsets semantics), DLQ inspection and redrive, parked outbox rows, the one-screen
//! status, and the lag history behind the console's chart.
//! Kafka calls here are blocking (librdkafka admin/metadata); callers run them on a blocking
//! thread.

pub mod dlq;
pub mod groups;
pub mod lag_history;
pub mod outbox;
pub mod post_restore;
pub mod rebuild;
pub mod reconcile;
pub mod replay;
pub mod replay_impact;
pub mod status;
pub mod trace;
pub mod triage;

/// Failures of operator tools, with wording meant for a terminal.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The request cannot be carried out as asked (exit code 2).
    #[error("{0}")]
    Refused(String),
    /// Kafka failed.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// Postgres failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// Something else failed.
    #[error("{0}")]
    Other(String),
}
