//! Consumer groups: state, members and their assignments, committed offsets and lag, with the
//! same columns as Apache Kafka's `kafka-consumer-groups --describe`.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::time::Duration;

use super::OpsError;
use crate::bus::catch_up::{render_eta, GroupCatchUp, CATCHING_UP, NOT_CATCHING_UP, UNKNOWN};
use crate::bus::producer::base_config;
use crate::bus::KafkaConnection;

/// Timeout of each broker call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A member of a group and the partitions it owns.
#[derive(Debug, Clone)]
pub struct Member {
    /// Member (consumer) id.
    pub id: String,
    /// Client id.
    pub client_id: String,
    /// Host as the broker sees it.
    pub host: String,
    /// Assigned (topic, partition) pairs.
    pub assignment: Vec<(String, i32)>,
}

/// A group's state and members.
#[derive(Debug, Clone)]
pub struct GroupInfo {
    /// Group id.
    pub group: String,
    /// Broker-reported state: Empty, Stable, PreparingRebalance, CompletingRebalance, Dead.
    pub state: String,
    /// Active members.
    pub members: Vec<Member>,
}

impl GroupInfo {
    /// True when the group has no active members and is not rebalancing (Kafka's condition
    /// for resetting offsets).
    pub fn is_inactive(&self) -> bool {
        matches!(self.state.as_str(), "Empty" | "Dead" | "") && self.members.is_empty()
    }
}

/// One row of `describe`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DescribeRow {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset.
    pub current: Option<i64>,
    /// Log start offset.
    pub log_start: i64,
    /// Log end offset.
    pub log_end: i64,
    /// Lag (log end minus committed; from the log start when nothing is committed).
    pub lag: i64,
    /// Owning member, if any.
    pub consumer_id: Option<String>,
    /// Its host.
    pub host: Option<String>,
    /// Its client id.
    pub client_id: Option<String>,
}

/// A consumer that never joins: used for metadata, committed offsets and commits.
pub fn client(kafka: &KafkaConnection, group: &str) -> Result<BaseConsumer, OpsError> {
    Ok(base_config(kafka)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()?)
}

/// Parses a classic consumer-protocol assignment (version, [topic, [partition]], userdata).
pub fn parse_assignment(b: &[u8]) -> Vec<(String, i32)> {
    fn i16_at(b: &[u8], p: usize) -> Option<i16> {
        Some(i16::from_be_bytes(b.get(p..p + 2)?.try_into().ok()?))
    }
    fn i32_at(b: &[u8], p: usize) -> Option<i32> {
        Some(i32::from_be_bytes(b.get(p..p + 4)?.try_into().ok()?))
    }
    let mut out = Vec::new();
    let mut p = 2; // version
    let Some(n_topics) = i32_at(b, p) else {
        return out;
    };
    p += 4;
    for _ in 0..n_topics.max(0) {
        let Some(len) = i16_at(b, p) else { return out };
        p += 2;
        let Some(name) = b.get(p..p + len.max(0) as usize) else {
            return out;
        };
        let topic = String::from_utf8_lossy(name).into_owned();
        p += len.max(0) as usize;
        let Some(n_parts) = i32_at(b, p) else {
            return out;
        };
        p += 4;
        for _ in 0..n_parts.max(0) {
            let Some(part) = i32_at(b, p) else { return out };
            p += 4;
            out.push((topic.clone(), part));
        }
    }
    out
}

/// Lists every consumer group.
pub fn list(kafka: &KafkaConnection) -> Result<Vec<String>, OpsError> {
    let c = client(kafka, "aliexpress-ops")?;
    let groups = c.fetch_group_list(None, CALL_TIMEOUT)?;
    let mut names: Vec<String> = groups.groups().iter().map(|g| g.name().to_owned()).collect();
    names.sort();
    Ok(names)
}

/// State and members of `group`.
pub fn info(kafka: &KafkaConnection, group: &str) -> Result<GroupInfo, OpsError> {
    let c = client(kafka, group)?;
    let list = c.fetch_group_list(Some(group), CALL_TIMEOUT)?;
    let Some(g) = list.groups().first() else {
        return Ok(GroupInfo {
            group: group.to_owned(),
            state: "Dead".into(),
            members: Vec::new(),
        });
    };
    Ok(GroupInfo {
        group: group.to_owned(),
        state: g.state().to_owned(),
        members: g
            .members()
            .iter()
            .map(|m| Member {
                id: m.id().to_owned(),
                client_id: m.client_id().to_owned(),
                host: m.client_host().to_owned(),
                assignment: m.assignment().map(parse_assignment).unwrap_or_default(),
            })
            .collect(),
    })
}

/// Partitions of `topic`.
pub fn partitions(c: &BaseConsumer, topic: &str) -> Result<Vec<i32>, OpsError> {
    let md = c.fetch_metadata(Some(topic), CALL_TIMEOUT)?;
    let t = md
        .topics()
        .first()
        .ok_or_else(|| OpsError::Refused(format!("topic {topic} not found")))?;
    if t.error().is_some() || t.partitions().is_empty() {
        return Err(OpsError::Refused(format!("topic {topic} does not exist")));
    }
    let mut v: Vec<i32> = t.partitions().iter().map(|p| p.id()).collect();
    v.sort_unstable();
    Ok(v)
}

/// Committed offsets of `group` on `topic` (None where nothing is committed).
pub fn committed(c: &BaseConsumer, topic: &str, parts: &[i32]) -> Result<HashMap<i32, Option<i64>>, OpsError> {
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition(topic, *p);
    }
    let got = c.committed_offsets(tpl, CALL_TIMEOUT)?;
    Ok(got
        .elements()
        .iter()
        .map(|e| {
            (
                e.partition(),
                if let Offset::Offset(o) = e.offset() {
                    Some(o)
                } else {
                    None
                },
            )
        })
        .collect())
}

/// Describe rows of `group` for `topics` (only topics where the group has offsets or owners).
pub fn describe(
    kafka: &KafkaConnection,
    group: &str,
    topics: &[String],
) -> Result<(GroupInfo, Vec<DescribeRow>), OpsError> {
    let info = info(kafka, group)?;
    let c = client(kafka, group)?;
    let owner: HashMap<(String, i32), &Member> = info
        .members
        .iter()
        .flat_map(|m| m.assignment.iter().map(move |tp| (tp.clone(), m)))
        .collect();
    let mut rows = Vec::new();
    for topic in topics {
        if partitions(&c, topic).is_err() {
            continue;
        }
        // Offsets and watermarks come from the same probe the projection uses for its lag metric.
        let lags =
            crate::bus::consumer::lag_blocking(&c, topic, CALL_TIMEOUT).map_err(|e| OpsError::Other(e.to_string()))?;
        let owned = lags.iter().any(|l| owner.contains_key(&(topic.clone(), l.partition)));
        if !owned && lags.iter().all(|l| l.committed.is_none()) {
            continue;
        }
        for l in lags {
            let m = owner.get(&(topic.clone(), l.partition));
            rows.push(DescribeRow {
                group: group.to_owned(),
                topic: l.topic,
                partition: l.partition,
                current: l.committed,
                log_start: l.log_start,
                log_end: l.log_end,
                lag: l.lag,
                consumer_id: m.map(|m| m.id.clone()),
                host: m.map(|m| m.host.clone()),
                client_id: m.map(|m| m.client_id.clone()),
            });
        }
    }
    Ok((info, rows))
}

/// Renders describe rows like Apache Kafka's tool, with an `ETA` column and a catch-up line
/// per topic when `catch_up` (from an earlier sample) is given.
pub fn render(info: &GroupInfo, rows: &[DescribeRow], catch_up: Option<&[(String, GroupCatchUp)]>) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    if info.members.is_empty() {
        let _ = writeln!(s, "\nConsumer group '{}' has no active members.\n", info.group);
    }
    let _ = writeln!(
        s,
        "{:<34} {:<28} {:>9} {:>15} {:>15} {:>8} {:<40} {:<16} {:<32} ETA",
        "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "CONSUMER-ID", "HOST", "CLIENT-ID"
    );
    let of_topic = |t: &str| {
        catch_up
            .and_then(|c| c.iter().find(|(topic, _)| topic == t))
            .map(|(_, g)| g)
    };
    for r in rows {
        let eta = of_topic(&r.topic)
            .and_then(|g| g.partitions.iter().find(|p| p.partition == r.partition))
            .map_or("-".to_owned(), |p| render_eta(p.eta_secs));
        let _ = writeln!(
            s,
            "{:<34} {:<28} {:>9} {:>15} {:>15} {:>8} {:<40} {:<16} {:<32} {eta}",
            r.group,
            r.topic,
            r.partition,
            r.current.map_or("-".to_owned(), |c| c.to_string()),
            r.log_end,
            r.current.map_or("-".to_owned(), |_| r.lag.to_string()),
            r.consumer_id.as_deref().unwrap_or("-"),
            r.host.as_deref().unwrap_or("-"),
            r.client_id.as_deref().unwrap_or("-")
        );
    }
    for (topic, g) in catch_up.unwrap_or_default() {
        let slowest = g.slowest_partition.map_or("-".to_owned(), |p| p.to_string());
        let line = match g.trend {
            CATCHING_UP => format!(
                "catching up, ETA {} (slowest partition {slowest})",
                render_eta(g.eta_secs)
            ),
            NOT_CATCHING_UP => format!("not catching up (partition {slowest})"),
            UNKNOWN => format!("ETA unknown (partition {slowest}: nothing committed, or no earlier sample)"),
            t => t.to_owned(),
        };
        let _ = writeln!(s, "\n{topic}: {line}");
    }
    s
}

/// When a group will have caught up, from two samples `gap` apart: each partition at the rate
/// its lag drained, the group when its slowest partition is (see [`crate::bus::catch_up`]).
pub fn catch_up(before: &[DescribeRow], after: &[DescribeRow], gap: Duration) -> GroupCatchUp {
    let partitions = after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.partition == a.partition && b.topic == a.topic);
            let o = crate::bus::catch_up::Observation {
                committed_before: b.and_then(|b| b.current),
                lag_before: b.map_or(a.lag, |b| b.lag),
                committed_now: a.current,
                lag_now: a.lag,
            };
            crate::bus::catch_up::partition(a.partition, o, gap.as_secs_f64())
        })
        .collect();
    crate::bus::catch_up::group(partitions)
}

/// Each topic's catch-up between two describes of the same group `gap` apart.
pub fn catch_up_by_topic(before: &[DescribeRow], after: &[DescribeRow], gap: Duration) -> Vec<(String, GroupCatchUp)> {
    let mut topics: Vec<&str> = after.iter().map(|r| r.topic.as_str()).collect();
    topics.dedup();
    topics
        .into_iter()
        .map(|t| {
            let of = |rows: &[DescribeRow]| rows.iter().filter(|r| r.topic == t).cloned().collect::<Vec<_>>();
            (t.to_owned(), catch_up(&of(before), &of(after), gap))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_assignments_parse() {
        // version 1, 1 topic "t" with partitions [0, 2], empty userdata
        let mut b = vec![0, 1, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2];
        b.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(parse_assignment(&b), vec![("t".to_owned(), 0), ("t".to_owned(), 2)]);
        assert!(parse_assignment(&[0, 1]).is_empty());
    }
}
