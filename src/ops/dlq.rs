//! Dead-letter topics: read every record with its context headers, and redrive records to
//! their original topic once the cause is fixed (each redrive recorded, so running it twice
//! redrives nothing twice).

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Message, OwnedMessage};
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

/// Topic, partition, offset, timestamp, key, headers and payload of the record at
/// `partition:offset` of `msgs`, as text; `None` when there is none.
pub fn show(msgs: &[OwnedMessage], topic: &str, partition: i32, offset: i64) -> Option<String> {
    use rdkafka::message::Headers;
    use std::fmt::Write;
    let m = msgs
        .iter()
        .find(|m| m.partition() == partition && m.offset() == offset)?;
    let text = |b: Option<&[u8]>| b.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
    let mut out = format!(
        "topic: {topic}\npartition: {partition}\noffset: {offset}\ntimestamp: {:?}\nkey: {}\n",
        m.timestamp().to_millis(),
        text(m.key())
    );
    if let Some(h) = m.headers() {
        for x in h.iter() {
            let _ = writeln!(out, "header {}: {}", x.key, text(x.value));
        }
    }
    let _ = write!(out, "payload:\n{}", text(m.payload()));
    Some(out)
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

/// What `redrive` did (or, in a dry run, would do) with one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redrive {
    /// Republished (dry run: would be) to this topic.
    To {
        /// DLQ partition.
        partition: i32,
        /// DLQ offset.
        offset: i64,
        /// Original topic.
        topic: String,
        /// Key.
        key: String,
        /// Error class.
        error_class: String,
        /// Where the copy landed (partition, offset); none in a dry run.
        delivered: Option<(i32, i64)>,
    },
    /// Skipped: the record names no original topic.
    NoOriginalTopic {
        /// DLQ partition.
        partition: i32,
        /// DLQ offset.
        offset: i64,
    },
}

/// Which records to redrive.
#[derive(Debug, Clone)]
pub enum Selection {
    /// Every record not redriven yet.
    All,
    /// These (partition, offset) pairs, unless already redriven.
    Only(Vec<(i32, i64)>),
}

/// Republishes the selected records of `dlq_topic` (from `msgs`) to their original topics,
/// skipping those already redriven, and records each one with `actor` (who asked); with no
/// producer it is a dry run that changes nothing.
pub async fn redrive(
    conn: &mut diesel_async::AsyncPgConnection,
    producer: Option<&rdkafka::producer::FutureProducer>,
    dlq_topic: &str,
    msgs: &[OwnedMessage],
    selection: &Selection,
    actor: &str,
) -> Result<Vec<Redrive>, OpsError> {
    let done = crate::store::audit_repo::redriven(conn, dlq_topic).await?;
    let mut out = Vec::new();
    for m in msgs {
        let at = (m.partition(), m.offset());
        let wanted = match selection {
            Selection::All => true,
            Selection::Only(list) => list.contains(&at),
        };
        if !wanted || done.contains(&at) {
            continue;
        }
        let r = DlqRecord::from_message(m);
        if r.original_topic.is_empty() {
            out.push(Redrive::NoOriginalTopic {
                partition: r.partition,
                offset: r.offset,
            });
            continue;
        }
        let mut delivered = None;
        if let Some(p) = producer {
            delivered = Some(
                crate::bus::dlq::republish(p, m, &r.original_topic)
                    .await
                    .map_err(|e| OpsError::Other(format!("republishing {}:{}: {e}", r.partition, r.offset)))?,
            );
            crate::store::audit_repo::record_redrive(conn, dlq_topic, r.partition, r.offset, &r.original_topic, actor)
                .await?;
            tracing::info!(dlq.partition = r.partition, dlq.offset = r.offset, kafka.topic = %r.original_topic, "dead letter redriven");
        }
        out.push(Redrive::To {
            partition: r.partition,
            offset: r.offset,
            topic: r.original_topic,
            key: r.key,
            error_class: r.error_class,
            delivered,
        });
    }
    Ok(out)
}

/// How a canary redrive ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanaryOutcome {
    /// The group committed past every canary and none was dead-lettered again.
    Passed,
    /// These dead letters (DLQ partition, offset, reason) are canaries that failed again.
    FailedAgain(Vec<(i32, i64, String)>),
    /// The group had not committed past every canary by the deadline.
    NotConsumed,
}

/// Waits until `group` has committed past every record of `canaries` (topic, partition,
/// offset where the copy landed; a consumer commits past a record only after its effect or its
/// dead letter is durable), then reads `dlq_topic` from `dlq_ends` (its log ends before the
/// redrive) for dead letters of those records. Bounded by `deadline`. Blocking.
pub fn await_canaries(
    kafka: &KafkaConnection,
    group: &str,
    canaries: &[(String, i32, i64)],
    dlq_topic: &str,
    dlq_ends: &std::collections::HashMap<i32, i64>,
    deadline: Duration,
) -> Result<CanaryOutcome, OpsError> {
    let until = Instant::now() + deadline;
    let c = groups::client(kafka, group)?;
    loop {
        let mut all = true;
        for (topic, p, o) in canaries {
            let committed = groups::committed(&c, topic, &[*p])?;
            if committed.get(p).copied().flatten().is_none_or(|c| c <= *o) {
                all = false;
            }
        }
        if all {
            break;
        }
        if Instant::now() >= until {
            return Ok(CanaryOutcome::NotConsumed);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let failed: Vec<(i32, i64, String)> = read_all(kafka, dlq_topic)?
        .iter()
        .filter(|m| dlq_ends.get(&m.partition()).is_none_or(|end| m.offset() >= *end))
        .map(DlqRecord::from_message)
        .filter(|r| {
            canaries.iter().any(|(t, p, o)| {
                r.original_topic == *t && r.original_partition == p.to_string() && r.original_offset == o.to_string()
            })
        })
        .map(|r| (r.partition, r.offset, r.reason))
        .collect();
    Ok(if failed.is_empty() {
        CanaryOutcome::Passed
    } else {
        CanaryOutcome::FailedAgain(failed)
    })
}

/// Log end offset of each partition of `topic`. Blocking.
pub fn log_ends(kafka: &KafkaConnection, topic: &str) -> Result<std::collections::HashMap<i32, i64>, OpsError> {
    let c: BaseConsumer = base_config(kafka).set("group.id", "aliexpress-dlq-reader").create()?;
    let mut out = std::collections::HashMap::new();
    for p in groups::partitions(&c, topic)? {
        out.insert(p, c.fetch_watermarks(topic, p, CALL_TIMEOUT)?.1);
    }
    Ok(out)
}
