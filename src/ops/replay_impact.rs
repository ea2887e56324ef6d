//! What a replay of the projection group will do, before it is done: per partition, how many
//! records it re-reads (already consumed) and reads in all; how many documents it would change,
//! from a sample of those records projected in memory and compared with the index (the sample
//! size is part of the answer); and when it would be done at a measured rate.
//!
//! A record "would change" its document when the index has no document for the product, an
//! older version, or the same version with other content (the projection writes
//! `external_gte`, so an equal version is rewritten: a replay after a change of the projection's
//! code shows up here). A record older than the document is skipped by the version guard and
//! changes nothing. Read-only: nothing is committed, nothing written.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::HashSet;
use std::time::{Duration, Instant};
use uuid::Uuid;

use super::replay::PlanRow;
use super::{reconcile, OpsError};
use crate::bus::KafkaConnection;
use crate::domain::product::EventEnvelope;
use crate::search::SearchClient;

/// Longest wait for one sampled record.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// One partition's share of the replay.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PartitionImpact {
    /// Partition.
    pub partition: i32,
    /// Already-consumed records read again.
    pub re_read: i64,
    /// Records read in all (from the new offset to the log end).
    pub to_read: i64,
    /// Records of this partition in the sample.
    pub sampled: usize,
    /// Of those, records that would change their document.
    pub would_change: usize,
}

/// The replay's impact.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Impact {
    /// Per partition.
    pub partitions: Vec<PartitionImpact>,
    /// Records sampled (read, decoded and compared).
    pub sampled: usize,
    /// Sampled records that would change their document.
    pub would_change: usize,
    /// Distinct documents (products) the sampled records would change.
    pub documents_changed: usize,
    /// Distinct products in the sample.
    pub products_sampled: usize,
    /// Sampled records that do not decode (the projection dead-letters them).
    pub undecodable: usize,
    /// Records per second the ETA assumes, and where that figure comes from.
    pub rate: Option<(f64, String)>,
    /// Seconds to read every record at that rate.
    pub eta_secs: Option<f64>,
}

/// Offsets to sample in `[from, to)`: `k` spread evenly.
pub fn spread(from: i64, to: i64, k: usize) -> Vec<i64> {
    let n = (to - from).max(0);
    let k = (k as i64).min(n);
    (0..k).map(|i| from + i * n / k).collect()
}

/// How many of `sample` records each row gets, in proportion to what it reads (at least one
/// where it reads any).
pub fn shares(rows: &[PlanRow], sample: usize) -> Vec<usize> {
    let total: i64 = rows.iter().map(|r| (r.log_end - r.new).max(0)).sum();
    rows.iter()
        .map(|r| {
            let n = (r.log_end - r.new).max(0);
            if n == 0 || total == 0 {
                0
            } else {
                ((sample as i64 * n / total).max(1)) as usize
            }
        })
        .collect()
}

/// Reads the records at `offsets` of `topic`/`partition` (the nearest at or after each).
/// Blocking.
fn read_at(c: &BaseConsumer, topic: &str, partition: i32, offsets: &[i64]) -> Result<Vec<Vec<u8>>, OpsError> {
    let mut out = Vec::new();
    for o in offsets {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, partition, Offset::Offset(*o))?;
        c.assign(&tpl)?;
        let until = Instant::now() + READ_TIMEOUT;
        while Instant::now() < until {
            match c.poll(Duration::from_millis(200)) {
                Some(Ok(m)) if m.offset() >= *o => {
                    out.push(m.payload().unwrap_or_default().to_vec());
                    break;
                }
                Some(Err(e)) => return Err(e.into()),
                _ => {}
            }
        }
    }
    Ok(out)
}

/// Reads a sample of about `sample` records of the plan's ranges. Blocking.
pub fn read_sample(kafka: &KafkaConnection, rows: &[PlanRow], sample: usize) -> Result<Vec<(i32, Vec<u8>)>, OpsError> {
    let c: BaseConsumer = super::groups::client(kafka, "aliexpress-replay-impact")?;
    let mut out = Vec::new();
    for (r, k) in rows.iter().zip(shares(rows, sample)) {
        for payload in read_at(&c, &r.topic, r.partition, &spread(r.new, r.log_end, k))? {
            out.push((r.partition, payload));
        }
    }
    Ok(out)
}

/// Compares the sampled records with the index `alias`.
pub async fn compare(
    search: &SearchClient,
    alias: &str,
    rows: &[PlanRow],
    records: &[(i32, Vec<u8>)],
) -> Result<Impact, OpsError> {
    let mut impact = Impact {
        partitions: rows
            .iter()
            .map(|r| PartitionImpact {
                partition: r.partition,
                re_read: (r.current.unwrap_or(r.log_start).max(r.log_start) - r.new).max(0),
                to_read: (r.log_end - r.new).max(0),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let decoded: Vec<(i32, Option<EventEnvelope>)> = records
        .iter()
        .map(|(p, b)| (*p, crate::bus::envelope::decode_event(Some(b)).ok()))
        .collect();
    let ids: Vec<Uuid> = decoded
        .iter()
        .filter_map(|(_, e)| e.as_ref().map(|e| e.aggregate_id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let docs = reconcile::indexed_documents(search, alias, &ids).await?;
    let mut changed = HashSet::new();
    for (p, e) in &decoded {
        impact.sampled += 1;
        let Some(e) = e else {
            impact.undecodable += 1;
            continue;
        };
        let change = would_change(docs.get(&e.aggregate_id), e);
        if let Some(row) = impact.partitions.iter_mut().find(|r| r.partition == *p) {
            row.sampled += 1;
            row.would_change += usize::from(change);
        }
        if change {
            impact.would_change += 1;
            changed.insert(e.aggregate_id);
        }
    }
    impact.products_sampled = ids.len();
    impact.documents_changed = changed.len();
    Ok(impact)
}

/// Whether projecting `e` would change the document `doc` (see the module doc).
pub fn would_change(doc: Option<&serde_json::Value>, e: &EventEnvelope) -> bool {
    match doc.and_then(|d| d["version"].as_i64()) {
        None => true,
        Some(v) if v < e.aggregate_version => true,
        Some(v) if v == e.aggregate_version => !doc.is_some_and(|d| reconcile::same_document(d, &e.state)),
        Some(_) => false,
    }
}

/// The group's consumption rate now, from two samples `gap` apart, when it has lag (a caught-up
/// group consumes only what is produced: no measure of what it can do). Blocking.
pub fn live_rate(kafka: &KafkaConnection, group: &str, topic: &str, gap: Duration) -> Option<f64> {
    let sample = || {
        super::groups::describe(kafka, group, &[topic.to_owned()])
            .ok()
            .map(|(_, rows)| rows)
    };
    let before = sample()?;
    std::thread::sleep(gap);
    let after = sample()?;
    let consumed: i64 = after
        .iter()
        .filter_map(|a| {
            let b = before.iter().find(|b| b.partition == a.partition)?;
            Some(a.current? - b.current?)
        })
        .sum();
    let lagging = after.iter().any(|r| r.lag > 0);
    (lagging && consumed > 0).then(|| consumed as f64 / gap.as_secs_f64())
}

/// Sets the ETA from `rate`.
pub fn with_rate(mut impact: Impact, rate: Option<(f64, String)>) -> Impact {
    let total: i64 = impact.partitions.iter().map(|p| p.to_read).sum();
    impact.eta_secs = rate.as_ref().map(|(r, _)| total as f64 / r);
    impact.rate = rate;
    impact
}

/// The impact as text under the plan.
pub fn render(i: &Impact) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "\n{:>9} {:>10} {:>10} {:>8} {:>13}\n",
        "PARTITION", "RE-READ", "TO-READ", "SAMPLED", "WOULD-CHANGE"
    );
    for p in &i.partitions {
        let _ = writeln!(
            s,
            "{:>9} {:>10} {:>10} {:>8} {:>13}",
            p.partition, p.re_read, p.to_read, p.sampled, p.would_change
        );
    }
    let pct = if i.sampled == 0 {
        0.0
    } else {
        100.0 * i.would_change as f64 / i.sampled as f64
    };
    let _ = writeln!(
        s,
        "Sample: {} record(s) of {} product(s) projected and compared with the index: {} would change a document ({pct:.1}%), {} document(s) in all{}.",
        i.sampled,
        i.products_sampled,
        i.would_change,
        i.documents_changed,
        if i.undecodable > 0 { format!("; {} do not decode (dead letters)", i.undecodable) } else { String::new() }
    );
    let total: i64 = i.partitions.iter().map(|p| p.to_read).sum();
    match (&i.rate, i.eta_secs) {
        (Some((r, from)), Some(eta)) => {
            let _ = writeln!(
                s,
                "ETA: {total} record(s) in {} at {r:.0} records/s ({from}).",
                crate::bus::catch_up::render_eta(Some(eta))
            );
        }
        _ => {
            let _ = writeln!(
                s,
                "ETA: - ({total} record(s); the group consumes nothing with lag now, so no rate is measured: give --assume-rate N)."
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(partition: i32, new: i64, end: i64) -> PlanRow {
        PlanRow {
            group: "g".into(),
            topic: "t".into(),
            partition,
            current: Some(end),
            new,
            log_start: 0,
            log_end: end,
            note: None,
        }
    }

    #[test]
    fn the_sample_is_spread_over_the_ranges_in_proportion() {
        assert_eq!(spread(10, 20, 5), vec![10, 12, 14, 16, 18]);
        assert_eq!(spread(0, 3, 10), vec![0, 1, 2]);
        assert!(spread(5, 5, 3).is_empty());
        let rows = [row(0, 0, 900), row(1, 0, 100), row(2, 50, 50)];
        assert_eq!(shares(&rows, 100), vec![90, 10, 0]);
        assert_eq!(
            shares(&[row(0, 0, 1000), row(1, 0, 1)], 10),
            vec![9, 1],
            "at least one where it reads any"
        );
    }
}
