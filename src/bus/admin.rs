//! Admin calls: create topics, probe the broker.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, Producer};
use std::time::Duration;

use super::producer::base_config;
use super::{BusError, KafkaConnection};

/// Creates `topics` if missing with `replication_factor` copies of each partition (-1: the
/// broker's `default.replication.factor`); an existing topic is left as it is.
pub async fn ensure_topics(
    kafka: &KafkaConnection,
    topics: &[String],
    partitions: i32,
    replication_factor: i32,
) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> = base_config(kafka).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(replication_factor)))
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for r in admin.create_topics(&new, &opts).await? {
        match r {
            Ok(_) | Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, e)) => return Err(BusError::Other(format!("creating topic {t}: {e}"))),
        }
    }
    Ok(())
}

/// Why a connection attempt failed, as librdkafka told its error callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectFailure {
    /// SASL authentication refused (wrong user name, password or mechanism).
    Authentication(String),
    /// TLS handshake failed (untrusted certificate, hostname mismatch, client certificate
    /// refused).
    Tls(String),
    /// Anything else (no broker answered, timeouts).
    Other(String),
}

#[derive(Default)]
struct ProbeContext {
    errors: std::sync::Mutex<Vec<(rdkafka::error::KafkaError, String)>>,
}

impl rdkafka::ClientContext for ProbeContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if let Ok(mut v) = self.errors.lock() {
            v.push((error, reason.to_owned()));
        }
    }

    fn log(&self, _level: rdkafka::config::RDKafkaLogLevel, _fac: &str, _log_message: &str) {}
}

impl rdkafka::producer::ProducerContext for ProbeContext {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Connects with `kafka`'s settings and asks for cluster metadata, bounded by `timeout`;
/// on failure says whether authentication, TLS or reachability is at fault (librdkafka
/// reports the first two only to its error callback, which this client records).
pub async fn probe_connection(kafka: &KafkaConnection, timeout: Duration) -> Result<usize, ConnectFailure> {
    use rdkafka::producer::BaseProducer;
    let kafka = kafka.clone();
    let task = tokio::task::spawn_blocking(move || {
        let p: BaseProducer<ProbeContext> = base_config(&kafka)
            .create_with_context(ProbeContext::default())
            .map_err(|e| ConnectFailure::Other(e.to_string()))?;
        let result = p.client().fetch_metadata(None, timeout).map(|m| m.brokers().len());
        // Serve the error callbacks queued while connecting.
        p.poll(Duration::from_millis(100));
        let errors = p.context().errors.lock().map(|v| v.clone()).unwrap_or_default();
        match result {
            Ok(n) => Ok(n),
            Err(e) => Err(classify(&e, &errors)),
        }
    });
    match tokio::time::timeout(timeout + Duration::from_secs(1), task).await {
        Err(_) => Err(ConnectFailure::Other(format!("timed out after {timeout:?}"))),
        Ok(Err(join)) => Err(ConnectFailure::Other(join.to_string())),
        Ok(Ok(r)) => r,
    }
}

fn classify(e: &rdkafka::error::KafkaError, callbacks: &[(rdkafka::error::KafkaError, String)]) -> ConnectFailure {
    use rdkafka::error::RDKafkaErrorCode as C;
    for (err, reason) in callbacks {
        let code = err.rdkafka_error_code();
        let lower = reason.to_ascii_lowercase();
        if code == Some(C::Authentication)
            || lower.contains("sasl authentication")
            || lower.contains("authentication failed")
        {
            return ConnectFailure::Authentication(reason.clone());
        }
        if code == Some(C::SSL) || lower.contains("ssl handshake") || lower.contains("certificate verify") {
            return ConnectFailure::Tls(reason.clone());
        }
    }
    match callbacks.last() {
        Some((_, reason)) => ConnectFailure::Other(format!("{e}: {reason}")),
        None => ConnectFailure::Other(e.to_string()),
    }
}

/// Asks the broker for cluster metadata through an existing client, bounded by `timeout`.
pub async fn probe(producer: &FutureProducer, timeout: Duration) -> Result<usize, BusError> {
    let p = producer.clone();
    let task = tokio::task::spawn_blocking(move || p.client().fetch_metadata(None, timeout).map(|m| m.brokers().len()));
    match tokio::time::timeout(timeout + Duration::from_millis(200), task).await {
        Err(_) => Err(BusError::Timeout(timeout)),
        Ok(Err(join)) => Err(BusError::Other(join.to_string())),
        Ok(Ok(r)) => Ok(r?),
    }
}
