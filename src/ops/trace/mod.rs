//! `aliexpress trace PRODUCT_ID`: one product's way through the pipeline, hop by hop, with one
//! verdict that names where it is stuck.
//!
//! What it joins, so an operator does not have to: the product's last versions in its history
//! (who wrote them, correlation ids), its Postgres row, the outbox row of its current version,
//! the Kafka record that row became (found by its `event_id` header on the partition the key
//! hashes to, from the time it was published), whether `product-event-projection-group`'s
//! committed offset has passed it (and, if not, the partition's lag and how fast it shrinks),
//! the OpenSearch document's and the Redis entry's versions, the product's dead letters (and
//! whether they were redriven), and the replays recorded since the write.
//!
//! `gather` reads those stores into [`Facts`]; [`hops`] and [`verdict`] are pure functions
//! of the facts (unit-tested here). Exit code: 0 for `ok`, 1 otherwise.

mod gather;

use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use uuid::Uuid;

use super::OpsError;
use crate::bus::KafkaConnection;
use crate::cache::ProductCache;
use crate::config::Names;
use crate::search::SearchClient;
use crate::store::outbox_repo::EventRow;
use crate::store::PgPool;

/// Bound of each Kafka call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Most records read looking for the event on its partition.
const SCAN_LIMIT: usize = 5_000;
/// History versions shown.
const HISTORY_SHOWN: i64 = 3;

/// The clients `trace` reads with.
pub struct TraceDeps {
    /// Postgres.
    pub pool: PgPool,
    /// Redis.
    pub cache: ProductCache,
    /// OpenSearch.
    pub search: SearchClient,
    /// Kafka.
    pub kafka: KafkaConnection,
    /// Topic, group, index and key names.
    pub names: Names,
}

/// A version in the product's history.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// Version.
    pub version: i64,
    /// Event type.
    pub event_type: String,
    /// When.
    pub at: DateTime<Utc>,
    /// Who (never a secret).
    pub actor: Option<String>,
    /// The request's correlation id.
    pub correlation_id: Option<Uuid>,
}

/// The Kafka record of the current version.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Broker append (or create) time.
    pub at: Option<DateTime<Utc>>,
}

/// The projection group on the record's partition.
#[derive(Debug, Clone, Serialize)]
pub struct Progress {
    /// Partition.
    pub partition: i32,
    /// Committed offset (the next record it will read).
    pub committed: Option<i64>,
    /// End of the partition.
    pub end: i64,
    /// Records consumed per second over the sample (None: not sampled or no progress).
    pub rate: Option<f64>,
}

/// A dead letter of this product.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// DLQ partition.
    pub partition: i32,
    /// DLQ offset.
    pub offset: i64,
    /// Error class.
    pub class: String,
    /// Reason.
    pub reason: String,
    /// When it was dead-lettered.
    pub failed_at: String,
    /// Republished since.
    pub redriven: bool,
}

/// Everything `trace` found (absent parts: nothing there, or not reachable).
#[derive(Debug, Clone, Serialize)]
pub struct Facts {
    /// The product.
    pub product_id: Uuid,
    /// Its row: version, status, last change.
    pub row: Option<(i64, String, DateTime<Utc>)>,
    /// Its last versions, oldest first.
    pub history: Vec<Written>,
    /// The outbox row of the current version.
    pub outbox: Option<EventRow>,
    /// The Kafka record of that row.
    pub record: Option<Record>,
    /// The projection group on the record's partition.
    pub progress: Option<Progress>,
    /// The search document's version.
    pub document_version: Option<i64>,
    /// The cache entry's version.
    pub cache_version: Option<i64>,
    /// Dead letters keyed by this product.
    pub dead_letters: Vec<DeadLetter>,
    /// Offset moves and rebuilds recorded since the current version was written.
    pub replays: Vec<String>,
    /// What could not be read (a store down), said in the verdict's stead when it matters.
    pub unreadable: Vec<String>,
}

/// One line of the trace.
#[derive(Debug, Clone, Serialize)]
pub struct Hop {
    /// Which hop.
    pub hop: &'static str,
    /// When it happened, when known.
    pub at: Option<DateTime<Utc>>,
    /// Milliseconds since the previous hop with a time.
    pub after_ms: Option<i64>,
    /// What was found.
    pub detail: String,
}

/// Where the product is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// `ok`, `waiting`, `stuck`, `dead-lettered` or `missing`.
    pub state: &'static str,
    /// One line: the hop and why.
    pub text: String,
}

impl Verdict {
    fn new(state: &'static str, text: impl Into<String>) -> Self {
        Self {
            state,
            text: text.into(),
        }
    }

    /// Exit code of `trace`: 0 for ok.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.state != "ok")
    }
}

/// The whole answer.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    /// The product.
    pub product_id: Uuid,
    /// One line per hop.
    pub hops: Vec<Hop>,
    /// Where it is.
    pub verdict: Verdict,
    /// The facts behind them.
    pub facts: Facts,
}

/// The partition librdkafka's default partitioner (`consistent_random`) gives a non-empty
/// key: CRC-32 of the key, modulo the partition count.
pub fn partition_of(key: &str, partitions: i32) -> i32 {
    let n = u32::try_from(partitions.max(1)).unwrap_or(1);
    i32::try_from(crc32fast::hash(key.as_bytes()) % n).unwrap_or(0)
}

fn ms(from: DateTime<Utc>, to: DateTime<Utc>) -> i64 {
    (to - from).num_milliseconds()
}

/// Where the product is, from the facts: the first hop that has not happened names it.
pub fn verdict(f: &Facts) -> Verdict {
    let Some((version, _, _)) = &f.row else {
        return Verdict::new("missing", format!("no product {} in Postgres", f.product_id));
    };
    let version = *version;
    let indexed = f.document_version.is_some_and(|v| v >= version);
    let cached = f.cache_version.is_none_or(|v| v >= version);
    if indexed && cached {
        let lead = match (&f.outbox, &f.record) {
            (Some(o), Some(r)) => {
                r.at.map(|at| format!(", on Kafka {} ms after its commit", ms(o.created_at, at)))
            }
            _ => None,
        };
        return Verdict::new(
            "ok",
            format!("ok: searchable at version {version}{}", lead.unwrap_or_default()),
        );
    }
    if let Some(dl) = f.dead_letters.iter().rev().find(|d| !d.redriven) {
        return Verdict::new(
            "dead-lettered",
            format!(
                "dead-lettered: {} at offset {}:{} ({})",
                dl.class, dl.partition, dl.offset, dl.reason
            ),
        );
    }
    let Some(o) = &f.outbox else {
        return Verdict::new(
            "stuck",
            format!("stuck: no outbox row for version {version} (pruned, or written around the outbox)"),
        );
    };
    if o.parked_at.is_some() {
        return Verdict::new(
            "stuck",
            format!(
                "stuck: outbox row {} parked after {} attempts: {}",
                o.id,
                o.attempts,
                o.last_error.as_deref().unwrap_or("no error recorded")
            ),
        );
    }
    if o.published_at.is_none() {
        let why = o
            .last_error
            .as_deref()
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default();
        return Verdict::new(
            "waiting",
            format!(
                "waiting: outbox row {} not published yet ({} failed attempts{why})",
                o.id, o.attempts
            ),
        );
    }
    after_publish(f, o, version)
}

/// The verdict of a published row: where its record is, and whether the projection passed it.
fn after_publish(f: &Facts, o: &EventRow, version: i64) -> Verdict {
    let Some(r) = &f.record else {
        let why = f.unreadable.first().map(|u| format!(" ({u})")).unwrap_or_default();
        return Verdict::new(
            "stuck",
            format!("stuck: published, but the record was not found on {}{why}", o.topic),
        );
    };
    match &f.progress {
        Some(p) if p.committed.is_none_or(|c| c <= r.offset) => {
            let lag = p.end - p.committed.unwrap_or(0);
            let ahead = r.offset - p.committed.unwrap_or(0) + 1;
            let eta = p
                .rate
                .filter(|r| *r > 0.0)
                .map(|rate| format!(", ETA {:.0} s", ahead as f64 / rate))
                .unwrap_or_else(|| ", not moving".into());
            Verdict::new(
                "waiting",
                format!(
                    "waiting: partition {} lag {lag}, record at offset {}{eta}",
                    r.partition, r.offset
                ),
            )
        }
        None => Verdict::new(
            "stuck",
            format!(
                "stuck: the projection group's offsets could not be read ({})",
                f.unreadable.join("; ")
            ),
        ),
        Some(_) => Verdict::new(
            "stuck",
            format!(
                "stuck: the projection passed offset {}:{} but OpenSearch holds version {} and Redis {} (of {version})",
                r.partition,
                r.offset,
                f.document_version.map_or("none".into(), |v| v.to_string()),
                f.cache_version.map_or("none".into(), |v| v.to_string()),
            ),
        ),
    }
}

/// A hop before its delay is known: name, time, detail.
type RawHop = (&'static str, Option<DateTime<Utc>>, String);

/// One line per hop, each with the delay from the previous hop that has a time.
pub fn hops(f: &Facts) -> Vec<Hop> {
    let mut raw = write_hops(f);
    raw.extend(read_side_hops(f));
    let mut out: Vec<Hop> = Vec::with_capacity(raw.len());
    for (hop, at, detail) in raw {
        let prev = out.iter().rev().find_map(|h| h.at);
        let after_ms = match (prev, at) {
            (Some(p), Some(a)) => Some(ms(p, a)),
            _ => None,
        };
        out.push(Hop {
            hop,
            at,
            after_ms,
            detail,
        });
    }
    out
}

/// The writes, the row, the outbox row, the relay's mark and the Kafka record.
fn write_hops(f: &Facts) -> Vec<RawHop> {
    let mut out: Vec<RawHop> = f
        .history
        .iter()
        .map(|w| {
            let who = w.actor.as_deref().unwrap_or("-");
            let corr = w.correlation_id.map_or("-".into(), |c| c.to_string());
            (
                "write",
                Some(w.at),
                format!("version {} {} by {who} (correlation {corr})", w.version, w.event_type),
            )
        })
        .collect();
    out.push(match &f.row {
        Some((v, status, at)) => ("postgres", Some(*at), format!("row at version {v}, {status}")),
        None => ("postgres", None, "no row".into()),
    });
    match &f.outbox {
        Some(o) => {
            let state = match (o.published_at, o.parked_at) {
                (_, Some(_)) => format!(
                    "parked after {} attempts: {}",
                    o.attempts,
                    o.last_error.as_deref().unwrap_or("-")
                ),
                (Some(_), _) => format!("published ({} failed attempts before)", o.attempts),
                (None, None) => format!("pending ({} failed attempts)", o.attempts),
            };
            out.push(("outbox", Some(o.created_at), format!("row {} {state}", o.id)));
            if let Some(p) = o.published_at {
                out.push(("relay", Some(p), format!("marked published to {}", o.topic)));
            }
        }
        None => out.push(("outbox", None, "no row for the current version".into())),
    }
    out.push(match &f.record {
        Some(r) => (
            "kafka",
            r.at,
            format!("{} partition {} offset {}", r.topic, r.partition, r.offset),
        ),
        None => ("kafka", None, "record not found".into()),
    });
    out
}

/// The projection's progress, the stores it writes, dead letters and replays.
fn read_side_hops(f: &Facts) -> Vec<RawHop> {
    let mut out: Vec<RawHop> = Vec::new();
    if let Some(p) = &f.progress {
        let passed = f
            .record
            .as_ref()
            .is_some_and(|r| p.committed.is_some_and(|c| c > r.offset));
        let committed = p.committed.map_or("none".into(), |c| c.to_string());
        let where_ = if passed {
            "past the record"
        } else {
            "not past the record yet"
        };
        out.push((
            "projection",
            None,
            format!(
                "group committed {committed} of {} on partition {}: {where_}",
                p.end, p.partition
            ),
        ));
    }
    let v = |x: Option<i64>| x.map_or("absent".into(), |v| format!("version {v}"));
    out.push(("opensearch", None, format!("document {}", v(f.document_version))));
    out.push(("redis", None, format!("entry {}", v(f.cache_version))));
    for d in &f.dead_letters {
        let redriven = if d.redriven { " (redriven)" } else { "" };
        out.push((
            "dlq",
            None,
            format!(
                "{}:{} {} at {}{redriven}: {}",
                d.partition, d.offset, d.class, d.failed_at, d.reason
            ),
        ));
    }
    out.extend(f.replays.iter().map(|r| ("replay", None, r.clone())));
    out
}

/// Traces product `id`.
pub async fn trace(d: &TraceDeps, id: Uuid) -> Result<Trace, OpsError> {
    let facts = gather::gather(d, id).await?;
    Ok(Trace {
        product_id: id,
        hops: hops(&facts),
        verdict: verdict(&facts),
        facts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).expect("time")
    }

    fn facts() -> Facts {
        Facts {
            product_id: Uuid::nil(),
            row: Some((3, "published".into(), at(0))),
            history: vec![],
            outbox: Some(EventRow {
                id: 7,
                event_id: Uuid::nil(),
                topic: "product.events".into(),
                key: Uuid::nil().to_string(),
                created_at: at(0),
                published_at: Some(at(1)),
                attempts: 0,
                last_error: None,
                parked_at: None,
            }),
            record: Some(Record {
                topic: "product.events".into(),
                partition: 2,
                offset: 40,
                at: Some(at(1)),
            }),
            progress: Some(Progress {
                partition: 2,
                committed: Some(41),
                end: 41,
                rate: None,
            }),
            document_version: Some(3),
            cache_version: Some(3),
            dead_letters: vec![],
            replays: vec![],
            unreadable: vec![],
        }
    }

    #[test]
    fn a_product_in_every_store_at_its_version_is_ok_with_the_publish_delay() {
        let v = verdict(&facts());
        assert_eq!(v.state, "ok");
        assert_eq!(v.text, "ok: searchable at version 3, on Kafka 1000 ms after its commit");
        assert_eq!(v.exit_code(), 0);
        let mut f = facts();
        f.cache_version = None;
        assert_eq!(verdict(&f).state, "ok", "an entry not cached is no fault");
    }

    #[test]
    fn the_first_hop_that_did_not_happen_names_the_verdict() {
        let mut f = facts();
        f.document_version = Some(2);
        f.progress = Some(Progress {
            partition: 2,
            committed: Some(30),
            end: 5390,
            rate: Some(2.75),
        });
        assert_eq!(
            verdict(&f).text,
            "waiting: partition 2 lag 5360, record at offset 40, ETA 4 s"
        );
        f.progress = Some(Progress {
            partition: 2,
            committed: Some(41),
            end: 41,
            rate: None,
        });
        assert!(
            verdict(&f).text.starts_with("stuck: the projection passed offset 2:40"),
            "{:?}",
            verdict(&f)
        );
        f.record = None;
        assert!(verdict(&f)
            .text
            .starts_with("stuck: published, but the record was not found"));
        let o = f.outbox.as_mut().expect("row");
        o.published_at = None;
        o.attempts = 2;
        o.last_error = Some("Message size too large".into());
        assert_eq!(verdict(&f).state, "waiting");
        f.outbox.as_mut().expect("row").parked_at = Some(at(9));
        assert_eq!(
            verdict(&f).text,
            "stuck: outbox row 7 parked after 2 attempts: Message size too large"
        );
        f.dead_letters.push(DeadLetter {
            partition: 0,
            offset: 1233,
            class: "invalid_state".into(),
            reason: "state id/version do not match".into(),
            failed_at: "-".into(),
            redriven: false,
        });
        assert_eq!(
            verdict(&f).text,
            "dead-lettered: invalid_state at offset 0:1233 (state id/version do not match)"
        );
        f.row = None;
        assert_eq!(verdict(&f).state, "missing");
        assert_eq!(verdict(&f).exit_code(), 1);
    }

    #[test]
    fn hops_carry_the_delay_from_the_previous_timed_hop() {
        let h = hops(&facts());
        let names: Vec<&str> = h.iter().map(|h| h.hop).collect();
        assert_eq!(
            names,
            [
                "postgres",
                "outbox",
                "relay",
                "kafka",
                "projection",
                "opensearch",
                "redis"
            ]
        );
        assert_eq!(h[2].after_ms, Some(1000), "published a second after the commit");
        assert_eq!(h[3].after_ms, Some(0));
        assert!(h[4].detail.contains("past the record"));
    }

    #[test]
    fn keys_hash_to_partitions_like_librdkafka_consistent_random() {
        // crc32("0") = 0xf4dbdf21; librdkafka puts the key on crc32 % partitions.
        assert_eq!(partition_of("0", 3), (0xf4db_df21_u32 % 3) as i32);
        assert_eq!(partition_of("anything", 1), 0);
    }
}
