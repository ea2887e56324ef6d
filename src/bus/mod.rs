//! Kafka adapter: client configuration, the producer, consumer helpers, the dead-letter
//! writer and admin calls (topic creation, metadata probe). librdkafka does its own
//! reconnecting; every blocking admin call here runs off the async runtime with a timeout.

pub mod admin;
pub mod consumer;
pub mod dlq;
pub mod envelope;
pub mod producer;

/// Failures of the Kafka adapter.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// librdkafka reported an error.
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// A call did not finish in time.
    #[error("kafka: timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// Anything else (join errors, bad input).
    #[error("kafka: {0}")]
    Other(String),
}

/// Header names on every product event message.
pub mod headers {
    /// Event id (UUID).
    pub const EVENT_ID: &str = "event_id";
    /// Event type, e.g. ProductCreated.
    pub const EVENT_TYPE: &str = "event_type";
    /// Schema version of the envelope.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// Product version after the event.
    pub const AGGREGATE_VERSION: &str = "aggregate_version";
    /// Correlation id of the flow.
    pub const CORRELATION_ID: &str = "correlation_id";
}
