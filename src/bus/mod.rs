//! Kafka adapter: client configuration, the producer, consumer helpers, the dead-letter
//! writer and admin calls (topic creation, metadata probe). librdkafka does its own
//! reconnecting; every blocking admin call here runs off the async runtime with a timeout.

pub mod admin;
pub mod catch_up;
pub mod connection;
pub mod consumer;
pub mod dlq;
pub mod envelope;
pub mod offset_ledger;
pub mod producer;
pub mod span;

pub use connection::KafkaConnection;
/// The clients callers hold (built by [`producer::build`] and [`consumer::build`]).
pub use rdkafka::consumer::StreamConsumer;
pub use rdkafka::producer::FutureProducer;

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

impl crate::failure::Classify for BusError {
    /// Errors about one record (too large, invalid, not authorised for the topic) are
    /// permanent; everything else (brokers down, timeouts, queue full) is transient.
    fn failure_class(&self) -> crate::failure::FailureClass {
        use crate::failure::FailureClass;
        use rdkafka::error::RDKafkaErrorCode as C;
        match self {
            Self::Kafka(e) => match e.rdkafka_error_code() {
                Some(
                    C::MessageSizeTooLarge
                    | C::InvalidMessageSize
                    | C::InvalidMessage
                    | C::InvalidRecord
                    | C::InvalidTopic
                    | C::TopicAuthorizationFailed
                    | C::InvalidArgument,
                ) => FailureClass::Permanent,
                _ => FailureClass::Transient,
            },
            Self::Timeout(_) => FailureClass::Transient,
            Self::Other(_) => FailureClass::Ambiguous,
        }
    }
}
