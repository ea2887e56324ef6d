//! Admin calls: create topics, probe the broker.

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, Producer};
use std::time::Duration;

use super::producer::base_config;
use super::BusError;

/// Partitions of every topic the platform creates (product ordering is per key).
pub const DEFAULT_PARTITIONS: i32 = 6;

/// Creates `topics` if missing (an existing topic is fine).
pub async fn ensure_topics(bootstrap: &str, topics: &[String], partitions: i32) -> Result<(), BusError> {
    let admin: AdminClient<DefaultClientContext> = base_config(bootstrap).create()?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
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
