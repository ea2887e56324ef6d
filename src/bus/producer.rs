//! The Kafka producer: idempotent (`enable.idempotence=true` set explicitly), `acks=all`,
//! never transactional (control records would keep consumer lag above zero forever).

use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;

use super::{BusError, KafkaConnection};

/// Producer tuning.
#[derive(Debug, Clone)]
pub struct ProducerSettings {
    /// `linger.ms`.
    pub linger_ms: u64,
    /// `compression.type` (none, gzip, snappy, lz4, zstd).
    pub compression: String,
    /// `message.timeout.ms`: how long delivery is retried before reporting failure.
    pub message_timeout_ms: u64,
}

impl Default for ProducerSettings {
    fn default() -> Self {
        Self {
            linger_ms: 5,
            compression: "lz4".into(),
            message_timeout_ms: 30_000,
        }
    }
}

/// Base client configuration shared by producers, consumers and admin clients: the
/// binary's defaults, then every property of `kafka` (security settings, pass-through).
pub fn base_config(kafka: &KafkaConnection) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("client.id", format!("aliexpress-{}", env!("CARGO_PKG_VERSION")))
        .set("socket.connection.setup.timeout.ms", "5000")
        // Back within about a second of a broker's return (librdkafka's default caps at 10 s).
        .set("reconnect.backoff.ms", "100")
        .set("reconnect.backoff.max.ms", "1000")
        .set("log_level", "3");
    kafka.apply_to(&mut c);
    c
}

/// Builds the idempotent producer.
pub fn build(kafka: &KafkaConnection, s: &ProducerSettings) -> Result<FutureProducer, BusError> {
    Ok(base_config(kafka)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", s.linger_ms.to_string())
        .set("compression.type", &s.compression)
        .set("message.timeout.ms", s.message_timeout_ms.to_string())
        .set("queue.buffering.max.messages", "1000000")
        .set("batch.size", "1000000")
        .create()?)
}

/// A new producer when `producer` hit a fatal librdkafka error (for example an idempotence
/// sequence failure after a broker crash or a purge): such a producer never recovers.
pub fn replacement_if_fatal(
    producer: &FutureProducer,
    kafka: &KafkaConnection,
    settings: &ProducerSettings,
) -> Option<FutureProducer> {
    use rdkafka::producer::Producer;
    let fatal = producer.client().fatal_error()?;
    tracing::error!(error = ?fatal, "producer hit a fatal error; building a new one");
    match build(kafka, settings) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::error!(error = %e, "could not rebuild the producer");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_properties_reach_librdkafka_unmasked() {
        // rdkafka's config_map() masks secrets; copying through it once sent a placeholder
        // as the SASL password.
        let kafka = KafkaConnection::new("h:9094")
            .with_property("sasl.password", "s3cret")
            .with_property("ssl.key.password", "k3y");
        let c = base_config(&kafka);
        assert_eq!(c.get("sasl.password"), Some("s3cret"));
        assert_eq!(c.get("ssl.key.password"), Some("k3y"));
        assert_eq!(c.get("bootstrap.servers"), Some("h:9094"));
    }
}
