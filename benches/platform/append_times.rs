//! Rates read from the broker's append times (`message.timestamp.type=LogAppendTime`), the
//! same way for our publisher and a baseline: the relay vs ProducerPerformance, the relay vs
//! Debezium. The first 10 % of the records (JVM start, connections, batches filling) are
//! left out of every rate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aliexpress::bus::producer;
use aliexpress::bus::KafkaConnection;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::harness::watermarks;

/// Partitions of a timed topic.
pub(super) const PARTITIONS: i32 = 6;

/// A topic whose records carry the broker's append time.
pub(super) async fn timed_topic(kafka: &KafkaConnection, name: &str) {
    let admin: AdminClient<DefaultClientContext> = producer::base_config(kafka).create().expect("admin");
    let topic =
        NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(1)).set("message.timestamp.type", "LogAppendTime");
    let r = admin
        .create_topics(
            [&topic],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .expect("create topic");
    for t in r {
        if let Err((n, e)) = t {
            assert!(
                e == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                "topic {n}: {e}"
            );
        }
    }
}

/// Records (key, append time in ms) of `topic` from `from` up to the watermarks now.
pub(super) async fn records(
    kafka: &KafkaConnection,
    reader: &Arc<BaseConsumer>,
    topic: &str,
    from: &[i64],
) -> Vec<(String, i64)> {
    let to = watermarks(reader, topic).await;
    let (k, t, from) = (kafka.clone(), topic.to_owned(), from.to_vec());
    tokio::task::spawn_blocking(move || {
        let c: BaseConsumer = producer::base_config(&k)
            .set("group.id", "aliexpress-bench-peer")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        let mut left = 0;
        for (p, (a, b)) in (0i32..).zip(from.iter().zip(&to)) {
            if b > a {
                tpl.add_partition_offset(&t, p, Offset::Offset(*a)).expect("offset");
                left += b - a;
            }
        }
        let mut out = Vec::with_capacity(usize::try_from(left).unwrap_or(0));
        if left == 0 {
            return out;
        }
        c.assign(&tpl).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(120);
        while left > 0 {
            assert!(
                Instant::now() < deadline,
                "read {} records of {topic}; {left} left",
                out.len(),
                topic = t
            );
            let Some(m) = c.poll(Duration::from_millis(500)) else {
                continue;
            };
            let m = m.expect("record");
            if m.offset() >= to[m.partition() as usize] {
                continue;
            }
            left -= 1;
            let ts = match m.timestamp() {
                rdkafka::Timestamp::LogAppendTime(ms) => ms,
                other => panic!("{t}: expected LogAppendTime, got {other:?}"),
            };
            out.push((String::from_utf8_lossy(m.key().unwrap_or_default()).into_owned(), ts));
        }
        out
    })
    .await
    .expect("join")
}

/// Events/s from the broker's append times: the records after the first 10 % over the time
/// from the one at 10 % to the last.
pub(super) fn backlog_rate(recs: &[(String, i64)]) -> f64 {
    let mut ts: Vec<i64> = recs.iter().map(|r| r.1).collect();
    ts.sort_unstable();
    if ts.len() < 10 {
        return 0.0;
    }
    let first = ts.len() / 10;
    let span_ms = (ts[ts.len() - 1] - ts[first]).max(1) as f64;
    (ts.len() - 1 - first) as f64 / (span_ms / 1000.0)
}
