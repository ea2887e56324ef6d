//! Dead-letter topics: read every record with its context headers, and redrive records to
//! their original topic once the cause is fixed (each redrive recorded, so running it twice
//! redrives nothing twice).

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

use super::groups::{self, CALL_TIMEOUT};
use super::OpsError;
use crate::bus::consumer::header_str;
use crate::bus::dlq::dlq_headers;
use crate::bus::producer::base_config;
use crate::bus::KafkaConnection;

/// A DLQ record as operators see it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DlqRecord {
    /// DLQ partition.
    pub partition: i32,
    /// DLQ offset.
    pub offset: i64,
    /// When it was dead-lettered.
    pub failed_at: String,
    /// Error class.
    pub error_class: String,
    /// Reason.
    pub reason: String,
    /// Original topic.
    pub original_topic: String,
    /// Original partition.
    pub original_partition: String,
    /// Original offset.
    pub original_offset: String,
    /// Message key (the product id).
    pub key: String,
}

impl DlqRecord {
    /// Summary of a raw DLQ message.
    pub fn from_message(m: &OwnedMessage) -> Self {
        let h = |n| header_str(m, n).unwrap_or("").to_owned();
        Self {
            partition: m.partition(),
            offset: m.offset(),
            failed_at: h(dlq_headers::FAILED_AT),
            error_class: h(dlq_headers::ERROR_CLASS),
            reason: h(dlq_headers::ERROR_MESSAGE),
            original_topic: h(dlq_headers::ORIGINAL_TOPIC),
            original_partition: h(dlq_headers::ORIGINAL_PARTITION),
            original_offset: h(dlq_headers::ORIGINAL_OFFSET),
            key: m
                .key()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .unwrap_or_default(),
        }
    }
}

/// Reads every record of `topic` from the log start to the current log end.
pub fn read_all(kafka: &KafkaConnection, topic: &str) -> Result<Vec<OwnedMessage>, OpsError> {
    let c: BaseConsumer = base_config(kafka)
        .set("group.id", "aliexpress-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let parts = groups::partitions(&c, topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining = 0i64;
    let mut ends = std::collections::HashMap::new();
    for p in &parts {
        let (lo, hi) = c.fetch_watermarks(topic, *p, CALL_TIMEOUT)?;
        if hi > lo {
            tpl.add_partition_offset(topic, *p, Offset::Offset(lo))?;
            ends.insert(*p, hi);
            remaining += hi - lo;
        }
    }
    let mut out = Vec::new();
    if remaining == 0 {
        return Ok(out);
    }
    c.assign(&tpl)?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() && Instant::now() < deadline {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let p = m.partition();
                let off = m.offset();
                out.push(m.detach());
                if ends.get(&p).is_some_and(|hi| off + 1 >= *hi) {
                    ends.remove(&p);
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    out.sort_by_key(|m| (m.partition(), m.offset()));
    Ok(out)
}

/// The original message of a DLQ record: same key, value and headers without the `dlq.*` ones.
pub fn original_headers(m: &OwnedMessage) -> OwnedHeaders {
    let mut h = OwnedHeaders::new();
    if let Some(hs) = m.headers() {
        for x in hs.iter() {
            if !x.key.starts_with("dlq.") {
                h = h.insert(Header {
                    key: x.key,
                    value: x.value,
                });
            }
        }
    }
    h
}
