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
