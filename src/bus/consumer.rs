//! Consumer helpers: at-least-once configuration (offsets stored by the application only
//! after an effect is durable; librdkafka auto-commits what was stored) and a lag probe.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

use super::producer::base_config;
use super::{BusError, KafkaConnection};

/// Builds a consumer in `group` with `enable.auto.offset.store=false`.
pub fn build(kafka: &KafkaConnection, group: &str) -> Result<StreamConsumer, BusError> {
    Ok(base_config(kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        // A member that died without leaving (kill -9, a lost host) holds its partitions until
        // the session times out: 6 s is the broker's default minimum, so a crash costs at
        // most that before its partitions move.
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("max.poll.interval.ms", "300000")
        // A fetch waits at most this long for new data (it returns at once when there is
        // some): a partition resumed after a pause is fetched again within it, not after
        // the default 500 ms. Costs at most 10 empty fetches per second per broker when idle.
        .set("fetch.wait.max.ms", "100")
        // Members joining or leaving move only the partitions that change hands; the others
        // keep being processed through the rebalance (no stop-the-world revoke of all).
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()?)
}

/// [`build`], subscribed to `topic`.
pub fn subscribed(kafka: &KafkaConnection, group: &str, topic: &str) -> Result<StreamConsumer, BusError> {
    let c = build(kafka, group)?;
    c.subscribe(&[topic])?;
    Ok(c)
}

/// The fatal error librdkafka reported on `consumer`, if any. Such a client consumes nothing
/// more: for example a static member whose group coordinator's broker died, whose session timed
/// out and whose rejoin fenced its own instance id (librdkafka issue 3437). The role must then
/// exit so that it is started again and resumes from the committed offsets.
pub fn fatal_error<C: Consumer>(consumer: &C) -> Option<String> {
    consumer
        .client()
        .fatal_error()
        .map(|(code, reason)| format!("{code:?}: {reason}"))
}

/// A header's value as UTF-8 text.
pub fn header_str<'a, M: Message>(msg: &'a M, name: &str) -> Option<&'a str> {
    msg.headers()?
        .iter()
        .find(|h| h.key == name)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// Lag of one partition of a group.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset, if any.
    pub committed: Option<i64>,
    /// Log start offset.
    pub log_start: i64,
    /// Log end offset (high watermark).
    pub log_end: i64,
    /// log_end - committed (log_end - log_start when nothing is committed).
    pub lag: i64,
}

/// Committed offsets and watermarks of every partition of `topic` for `consumer`'s group.
/// Blocking: call from `spawn_blocking`.
pub fn lag_blocking<C: Consumer>(consumer: &C, topic: &str, timeout: Duration) -> Result<Vec<PartitionLag>, BusError> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut tpl = TopicPartitionList::new();
    for t in md.topics() {
        for p in t.partitions() {
            tpl.add_partition(topic, p.id());
        }
    }
    let committed = consumer.committed_offsets(tpl.clone(), timeout)?;
    let mut out = Vec::new();
    for e in tpl.elements() {
        let (lo, hi) = consumer.fetch_watermarks(topic, e.partition(), timeout)?;
        let c = committed
            .find_partition(topic, e.partition())
            .and_then(|x| match x.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            });
        out.push(PartitionLag {
            topic: topic.to_owned(),
            partition: e.partition(),
            committed: c,
            log_start: lo,
            log_end: hi,
            lag: hi - c.unwrap_or(lo).max(lo),
        });
    }
    out.sort_by_key(|p| p.partition);
    Ok(out)
}
