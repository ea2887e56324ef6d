//! Consumer helpers: at-least-once configuration (offsets stored by the application only
//! after an effect is durable; librdkafka auto-commits what was stored), a lag probe, and the
//! lag gauges every consumer role exports ([`export_assigned_lag`]).
//!
//! Lag is exported once per group and partition: each process reports only the partitions
//! currently assigned to it, and drops the series of those it no longer owns, so N members of
//! a group export one series per partition between them (two, briefly, while a partition
//! changes hands: dashboards and alerts take `max by (group, topic, partition)`). The same
//! holds for `aliexpress_consumer_catch_up_seconds`, the partition's ETA from two exports (see
//! [`super::catch_up`]); `max by (group)` of it is when the group will have caught up.

use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

use super::catch_up;
use super::producer::base_config;
use super::{BusError, KafkaConnection};
use crate::telemetry::metrics::{
    CONSUMER_CATCH_UP_SECONDS, CONSUMER_COMMITTED_OFFSET, CONSUMER_LAG, CONSUMER_LAG_SECONDS,
};

/// Builds a consumer in `group` with `enable.auto.offset.store=false`.
pub fn build(kafka: &KafkaConnection, group: &str) -> Result<StreamConsumer, BusError> {
    Ok(base_config(kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", "false")
        .set("session.timeout.ms", session_timeout_ms(kafka))
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

/// The group session's length, unless `KAFKA_PROPERTY_SESSION_TIMEOUT_MS` sets it.
///
/// A dynamic member that died without leaving (kill -9, a lost host) holds its partitions until
/// its session times out: 6 s (the broker's minimum) keeps that short. A static member
/// (`group.instance.id`, a StatefulSet pod) gets 45 s, Kafka's own default: restarted within it,
/// it takes its partitions back with no rebalance at all, and a broker or network stall shorter
/// than it costs no session. Measured: with the broker stopped 25 s (chaos `stop-kafka`), a 6 s
/// session expired during the stall and the static member's rejoin was fenced
/// (`FencedInstanceId`, a process restart); with 45 s it resumes where it was.
pub fn session_timeout_ms(kafka: &KafkaConnection) -> String {
    if let Some(set) = kafka.property("session.timeout.ms") {
        return set.to_owned();
    }
    if kafka.property("group.instance.id").is_some() {
        "45000".into()
    } else {
        "6000".into()
    }
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
    let partitions: Vec<i32> = md
        .topics()
        .iter()
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    partitions_lag_blocking(consumer, topic, &partitions, timeout)
}

/// [`lag_blocking`] for the given partitions of `topic` only. Blocking.
pub fn partitions_lag_blocking<C: Consumer>(
    consumer: &C,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<Vec<PartitionLag>, BusError> {
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition(topic, p);
    }
    if tpl.count() == 0 {
        return Ok(Vec::new());
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

/// The partitions of `topic` assigned to `consumer` now (empty while it has none).
pub fn assigned_partitions<C: Consumer>(consumer: &C, topic: &str) -> Result<Vec<i32>, BusError> {
    let mut out: Vec<i32> = consumer
        .assignment()?
        .elements_for_topic(topic)
        .iter()
        .map(|e| e.partition())
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// Sets `aliexpress_consumer_lag_messages` and `aliexpress_consumer_committed_offset` of
/// `group` for the partitions of `topic` assigned to `consumer`, and removes this process's
/// lag series (those two and `aliexpress_consumer_lag_seconds`) of every partition it no
/// longer owns. Returns the partitions exported. Blocking (watermarks and committed offsets
/// are broker round trips): call from `spawn_blocking`, or through [`export_lag`].
pub fn export_assigned_lag<C: Consumer>(
    consumer: &C,
    group: &str,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<i32>, BusError> {
    let assigned = assigned_partitions(consumer, topic)?;
    let lags = partitions_lag_blocking(consumer, topic, &assigned, timeout)?;
    publish_lag(group, topic, &lags);
    Ok(assigned)
}

/// [`export_assigned_lag`] of the consumer `consumer_of` finds in `owner`, on a blocking
/// thread. A failure is logged at debug level: the next export tries again, and the series
/// keep their last value meanwhile.
pub async fn export_lag<O, C>(owner: std::sync::Arc<O>, consumer_of: fn(&O) -> &C, group: &str, topic: &str)
where
    O: Send + Sync + 'static,
    C: Consumer + 'static,
{
    let (g, t) = (group.to_owned(), topic.to_owned());
    let r = tokio::task::spawn_blocking(move || export_assigned_lag(consumer_of(&owner), &g, &t, LAG_TIMEOUT)).await;
    match r {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(group, topic, error = %e, "consumer lag not exported"),
        Err(e) => tracing::debug!(group, topic, error = %e, "consumer lag probe did not finish"),
    }
}

/// How often a consumer role exports its lag.
pub const LAG_EXPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Bound of each broker call of a lag export.
pub const LAG_TIMEOUT: Duration = Duration::from_secs(2);

/// The previous export of each (group, topic, partition): when, committed offset, lag.
type Previous = std::collections::HashMap<(String, String, i32), (std::time::Instant, Option<i64>, i64)>;
static PREVIOUS_EXPORT: std::sync::LazyLock<std::sync::Mutex<Previous>> = std::sync::LazyLock::new(Default::default);

/// Sets `aliexpress_consumer_catch_up_seconds` of a partition from this export and the one
/// before: its ETA while catching up, 0 when caught up, +Inf when not catching up, and no
/// series while unknown (nothing committed, or no earlier export).
fn publish_catch_up(labels: &[&str; 3], l: &PartitionLag) {
    let now = std::time::Instant::now();
    let key = (labels[0].to_owned(), labels[1].to_owned(), l.partition);
    let before = PREVIOUS_EXPORT
        .lock()
        .map(|mut m| m.insert(key, (now, l.committed, l.lag)))
        .unwrap_or_default();
    let c = match before {
        Some((at, committed_before, lag_before)) => catch_up::partition(
            l.partition,
            catch_up::Observation {
                committed_before,
                lag_before,
                committed_now: l.committed,
                lag_now: l.lag,
            },
            (now - at).as_secs_f64(),
        ),
        None => return,
    };
    match (c.trend, c.eta_secs) {
        (_, Some(eta)) => CONSUMER_CATCH_UP_SECONDS.with_label_values(labels).set(eta),
        (catch_up::NOT_CATCHING_UP, None) => CONSUMER_CATCH_UP_SECONDS.with_label_values(labels).set(f64::INFINITY),
        _ => {
            let _ = CONSUMER_CATCH_UP_SECONDS.remove_label_values(labels);
        }
    }
}

/// Exports `lags` (the partitions this process owns) as `group`'s series for `topic` and
/// removes this process's series of `group` and `topic` for any other partition.
pub fn publish_lag(group: &str, topic: &str, lags: &[PartitionLag]) {
    let owned: Vec<String> = lags.iter().map(|l| l.partition.to_string()).collect();
    for (l, partition) in lags.iter().zip(&owned) {
        let labels = [group, topic, partition.as_str()];
        CONSUMER_LAG.with_label_values(&labels).set(l.lag);
        publish_catch_up(&labels, l);
        match l.committed {
            Some(c) => CONSUMER_COMMITTED_OFFSET.with_label_values(&labels).set(c),
            None => {
                let _ = CONSUMER_COMMITTED_OFFSET.remove_label_values(&labels);
            }
        }
    }
    for vec in [&*CONSUMER_LAG, &*CONSUMER_COMMITTED_OFFSET] {
        for p in exported_partitions(vec, group, topic) {
            if !owned.contains(&p) {
                let _ = vec.remove_label_values(&[group, topic, &p]);
            }
        }
    }
    for vec in [&*CONSUMER_LAG_SECONDS, &*CONSUMER_CATCH_UP_SECONDS] {
        for p in exported_partitions(vec, group, topic) {
            if !owned.contains(&p) {
                let _ = vec.remove_label_values(&[group, topic, &p]);
            }
        }
    }
}

/// The `partition` label of every series of `metric` with these `group` and `topic`.
fn exported_partitions(metric: &dyn prometheus::core::Collector, group: &str, topic: &str) -> Vec<String> {
    let mut out = Vec::new();
    for family in metric.collect() {
        for m in family.get_metric() {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_owned())
            };
            if label("group").as_deref() == Some(group) && label("topic").as_deref() == Some(topic) {
                out.extend(label("partition"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_static_member_keeps_its_session_through_a_stall_and_a_setting_wins() {
        let mut k = KafkaConnection::new("127.0.0.1:9092");
        assert_eq!(session_timeout_ms(&k), "6000", "dynamic: a crash moves partitions fast");
        k.set("group.instance.id", "projection-0");
        assert_eq!(
            session_timeout_ms(&k),
            "45000",
            "static: a 25 s broker stall costs no session"
        );
        k.set("session.timeout.ms", "20000");
        assert_eq!(
            session_timeout_ms(&k),
            "20000",
            "KAFKA_PROPERTY_SESSION_TIMEOUT_MS wins"
        );
    }

    fn lag(partition: i32, lag: i64, committed: Option<i64>) -> PartitionLag {
        PartitionLag {
            topic: "t.lag".into(),
            partition,
            committed,
            log_start: 0,
            log_end: lag + committed.unwrap_or(0),
            lag,
        }
    }

    fn series(group: &str) -> Vec<String> {
        let mut p = exported_partitions(&*CONSUMER_LAG, group, "t.lag");
        p.sort();
        p
    }

    #[test]
    fn lag_is_exported_for_owned_partitions_only_and_dropped_when_they_move() {
        let group = "lag-export-test-group";
        CONSUMER_LAG_SECONDS.with_label_values(&[group, "t.lag", "0"]).set(1.5);
        publish_lag(
            group,
            "t.lag",
            &[lag(0, 5, Some(10)), lag(1, 0, Some(3)), lag(2, 7, None)],
        );
        assert_eq!(series(group), ["0", "1", "2"]);
        assert_eq!(CONSUMER_LAG.with_label_values(&[group, "t.lag", "2"]).get(), 7);
        assert_eq!(
            CONSUMER_COMMITTED_OFFSET
                .with_label_values(&[group, "t.lag", "0"])
                .get(),
            10
        );
        assert!(!exported_partitions(&*CONSUMER_COMMITTED_OFFSET, group, "t.lag").contains(&"2".to_owned()));
        // A rebalance took partitions 0 and 2 away: their series go, those of other groups stay.
        publish_lag("lag-export-other-group", "t.lag", &[lag(0, 1, Some(1))]);
        publish_lag(group, "t.lag", &[lag(1, 4, Some(3))]);
        assert_eq!(series(group), ["1"]);
        assert_eq!(CONSUMER_LAG.with_label_values(&[group, "t.lag", "1"]).get(), 4);
        assert!(exported_partitions(&*CONSUMER_LAG_SECONDS, group, "t.lag").is_empty());
        assert_eq!(series("lag-export-other-group"), ["0"]);
        // None assigned: nothing exported.
        publish_lag(group, "t.lag", &[]);
        assert!(series(group).is_empty());
    }

    #[test]
    fn the_catch_up_eta_follows_two_exports_and_leaves_with_the_partition() {
        let (group, topic) = ("catch-up-export-test-group", "t.lag");
        let eta = |p: &str| {
            exported_partitions(&*CONSUMER_CATCH_UP_SECONDS, group, topic)
                .contains(&p.to_owned())
                .then(|| CONSUMER_CATCH_UP_SECONDS.with_label_values(&[group, topic, p]).get())
        };
        publish_lag(group, topic, &[lag(0, 100, Some(0)), lag(1, 5, None)]);
        assert_eq!(eta("0"), None, "one export: no rate yet");
        publish_lag(group, topic, &[lag(0, 50, Some(60)), lag(1, 5, None)]);
        let e = eta("0").expect("an eta after two exports");
        assert!(e.is_finite() && e > 0.0, "{e}");
        assert_eq!(eta("1"), None, "nothing committed: unknown, no series");
        publish_lag(group, topic, &[lag(0, 80, Some(60))]);
        assert_eq!(eta("0"), Some(f64::INFINITY), "lag grew: not catching up");
        publish_lag(group, topic, &[lag(0, 0, Some(140))]);
        assert_eq!(eta("0"), Some(0.0));
        publish_lag(group, topic, &[]);
        assert_eq!(eta("0"), None);
    }
}
