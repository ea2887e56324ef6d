//! Dead-letter writer. A DLQ record keeps the original key, value, headers and timestamp and
//! adds context headers (names mirror Kafka Connect's `__connect.errors.*`, see docs/EVENTS.md).
//! The send is awaited: an offset is stored only once its DLQ record is durable. Each send is
//! a `publish` span (OpenTelemetry messaging conventions, [`super::span`]).

use chrono::Utc;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use std::time::Duration;

use super::BusError;
use crate::telemetry::metrics::DLQ_MESSAGES;

/// Header names added to every DLQ record.
pub mod dlq_headers {
    /// Topic the message came from (`__connect.errors.topic`).
    pub const ORIGINAL_TOPIC: &str = "dlq.original.topic";
    /// Partition it came from.
    pub const ORIGINAL_PARTITION: &str = "dlq.original.partition";
    /// Offset it had.
    pub const ORIGINAL_OFFSET: &str = "dlq.original.offset";
    /// Its timestamp (ms since epoch).
    pub const ORIGINAL_TIMESTAMP: &str = "dlq.original.timestamp";
    /// Consumer group that gave up on it.
    pub const CONSUMER_GROUP: &str = "dlq.consumer.group";
    /// Stage that failed: decode, validate, index.
    pub const STAGE: &str = "dlq.stage";
    /// Error class, e.g. `invalid_json`.
    pub const ERROR_CLASS: &str = "dlq.error.class";
    /// Human-readable reason.
    pub const ERROR_MESSAGE: &str = "dlq.error.message";
    /// Attempts made.
    pub const ATTEMPTS: &str = "dlq.attempts";
    /// When it was dead-lettered (RFC 3339).
    pub const FAILED_AT: &str = "dlq.failed.at";
    /// Version of the binary that dead-lettered it.
    pub const APP_VERSION: &str = "dlq.app.version";
    /// Every context header, plus the redrive count a redriven record carries.
    pub const ALL: [&str; 12] = [
        ORIGINAL_TOPIC,
        ORIGINAL_PARTITION,
        ORIGINAL_OFFSET,
        ORIGINAL_TIMESTAMP,
        CONSUMER_GROUP,
        STAGE,
        ERROR_CLASS,
        ERROR_MESSAGE,
        ATTEMPTS,
        FAILED_AT,
        APP_VERSION,
        super::REDRIVE_COUNT,
    ];
}

/// Why a message is dead-lettered.
#[derive(Debug, Clone)]
pub struct DlqReason {
    /// Stage that failed.
    pub stage: &'static str,
    /// Stable error class.
    pub class: &'static str,
    /// Details.
    pub message: String,
    /// Attempts made.
    pub attempts: u32,
}

/// Writes dead letters for one consumer group.
#[derive(Clone)]
pub struct DlqWriter {
    producer: FutureProducer,
    topic: String,
    group: String,
}

impl DlqWriter {
    /// A writer to `topic` on behalf of `group`.
    pub fn new(producer: FutureProducer, topic: String, group: String) -> Self {
        Self { producer, topic, group }
    }

    /// The consumer group the writer dead-letters for.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Sends `msg` to the DLQ with `reason`; returns once the broker acknowledged it.
    pub async fn send<M: Message>(&self, msg: &M, reason: &DlqReason) -> Result<(), BusError> {
        let mut headers = OwnedHeaders::new();
        if let Some(orig) = msg.headers() {
            for h in orig.iter() {
                headers = headers.insert(Header {
                    key: h.key,
                    value: h.value,
                });
            }
        }
        let ts = msg.timestamp().to_millis().map(|t| t.to_string()).unwrap_or_default();
        let ctx: [(&str, String); 11] = [
            (dlq_headers::ORIGINAL_TOPIC, msg.topic().to_owned()),
            (dlq_headers::ORIGINAL_PARTITION, msg.partition().to_string()),
            (dlq_headers::ORIGINAL_OFFSET, msg.offset().to_string()),
            (dlq_headers::ORIGINAL_TIMESTAMP, ts),
            (dlq_headers::CONSUMER_GROUP, self.group.clone()),
            (dlq_headers::STAGE, reason.stage.to_owned()),
            (dlq_headers::ERROR_CLASS, reason.class.to_owned()),
            (dlq_headers::ERROR_MESSAGE, truncate(&reason.message, 4000)),
            (dlq_headers::ATTEMPTS, reason.attempts.to_string()),
            (dlq_headers::FAILED_AT, Utc::now().to_rfc3339()),
            (dlq_headers::APP_VERSION, env!("CARGO_PKG_VERSION").to_owned()),
        ];
        for (k, v) in &ctx {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_bytes()),
            });
        }
        let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic).headers(headers);
        if let Some(k) = msg.key() {
            rec = rec.key(k);
        }
        if let Some(v) = msg.payload() {
            rec = rec.payload(v);
        }
        if let Some(t) = msg.timestamp().to_millis() {
            rec = rec.timestamp(t);
        }
        // A child of the consumer's span for the message: the dead letter is part of its story.
        let span = super::span::publish(&self.topic, || None);
        let delivery = tracing::Instrument::instrument(self.producer.send(rec, Duration::from_secs(30)), span.clone())
            .await
            .map_err(|(e, _)| {
                super::span::record_failure(&span, &super::span::error_type(&e));
                BusError::Kafka(e)
            })?;
        super::span::record_delivery(&span, delivery.partition, delivery.offset);
        DLQ_MESSAGES.with_label_values(&[&self.topic, reason.class]).inc();
        Ok(())
    }
}

/// Header a redrive adds to the record it republishes: how many times this record has been
/// redriven (1 the first time). It travels with the record; if it fails again, its new dead
/// letter carries it, so `dlq triage` counts letters that already failed after a redrive and
/// nothing redrives them by itself (exactly one new dead letter per failed redrive, no loop).
pub const REDRIVE_COUNT: &str = "redrive.count";

/// Republishes the original message of a DLQ record to `topic`: same key, value and headers
/// without the `dlq.*` ones. Returns once the broker acknowledged it.
///
/// Adds [`REDRIVE_COUNT`] (one more than the record had) and returns where the copy landed
/// (partition, offset).
pub async fn republish<M: Message>(producer: &FutureProducer, m: &M, topic: &str) -> Result<(i32, i64), BusError> {
    let mut headers = OwnedHeaders::new();
    let mut count = 0u32;
    if let Some(hs) = m.headers() {
        for x in hs.iter() {
            if x.key == REDRIVE_COUNT {
                count = x
                    .value
                    .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
                    .unwrap_or(0);
            } else if !x.key.starts_with("dlq.") {
                headers = headers.insert(Header {
                    key: x.key,
                    value: x.value,
                });
            }
        }
    }
    let count = (count + 1).to_string();
    headers = headers.insert(Header {
        key: REDRIVE_COUNT,
        value: Some(count.as_bytes()),
    });
    let mut rec: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
    if let Some(k) = m.key() {
        rec = rec.key(k);
    }
    if let Some(v) = m.payload() {
        rec = rec.payload(v);
    }
    producer
        .send(rec, Duration::from_secs(30))
        .await
        .map(|d| (d.partition, d.offset))
        .map_err(|(e, _)| BusError::Kafka(e))
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
