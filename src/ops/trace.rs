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
//! [`gather`] reads those stores into [`Facts`]; [`hops`] and [`verdict`] are pure functions
//! of the facts (unit-tested here). Exit code: 0 for `ok`, 1 otherwise.

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use std::time::{Duration, Instant};
use uuid::Uuid;

use super::{groups, OpsError};
use crate::bus::KafkaConnection;
use crate::cache::ProductCache;
use crate::config::Names;
use crate::search::SearchClient;
use crate::store::outbox_repo::EventRow;
use crate::store::{audit_repo, history_repo, outbox_repo, pool, product_repo, PgPool};

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
        Self { state, text: text.into() }
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
            (Some(o), Some(r)) => r.at.map(|at| format!(", on Kafka {} ms after its commit", ms(o.created_at, at))),
            _ => None,
        };
        return Verdict::new("ok", format!("ok: searchable at version {version}{}", lead.unwrap_or_default()));
    }
    if let Some(dl) = f.dead_letters.iter().rev().find(|d| !d.redriven) {
        return Verdict::new(
            "dead-lettered",
            format!("dead-lettered: {} at offset {}:{} ({})", dl.class, dl.partition, dl.offset, dl.reason),
        );
    }
    let Some(o) = &f.outbox else {
        return Verdict::new("stuck", format!("stuck: no outbox row for version {version} (pruned, or written around the outbox)"));
    };
    if o.parked_at.is_some() {
        return Verdict::new(
            "stuck",
            format!("stuck: outbox row {} parked after {} attempts: {}", o.id, o.attempts, o.last_error.as_deref().unwrap_or("no error recorded")),
        );
    }
    if o.published_at.is_none() {
        let why = o.last_error.as_deref().map(|e| format!(", last error: {e}")).unwrap_or_default();
        return Verdict::new("waiting", format!("waiting: outbox row {} not published yet ({} failed attempts{why})", o.id, o.attempts));
    }
    let Some(r) = &f.record else {
        let why = f.unreadable.first().map(|u| format!(" ({u})")).unwrap_or_default();
        return Verdict::new("stuck", format!("stuck: published, but the record was not found on {}{why}", o.topic));
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
            Verdict::new("waiting", format!("waiting: partition {} lag {lag}, record at offset {}{eta}", r.partition, r.offset))
        }
        None => Verdict::new("stuck", format!("stuck: the projection group's offsets could not be read ({})", f.unreadable.join("; "))),
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

/// One line per hop, each with the delay from the previous hop that has a time.
pub fn hops(f: &Facts) -> Vec<Hop> {
    let mut out: Vec<Hop> = Vec::new();
    let mut push = |hop: &'static str, at: Option<DateTime<Utc>>, detail: String| {
        let prev = out.iter().rev().find_map(|h| h.at);
        let after_ms = match (prev, at) {
            (Some(p), Some(a)) => Some(ms(p, a)),
            _ => None,
        };
        out.push(Hop { hop, at, after_ms, detail });
    };
    for w in &f.history {
        let who = w.actor.as_deref().unwrap_or("-");
        let corr = w.correlation_id.map_or("-".into(), |c| c.to_string());
        push("write", Some(w.at), format!("version {} {} by {who} (correlation {corr})", w.version, w.event_type));
    }
    match &f.row {
        Some((v, status, at)) => push("postgres", Some(*at), format!("row at version {v}, {status}")),
        None => push("postgres", None, "no row".into()),
    }
    match &f.outbox {
        Some(o) => {
            let state = match (o.published_at, o.parked_at) {
                (_, Some(_)) => format!("parked after {} attempts: {}", o.attempts, o.last_error.as_deref().unwrap_or("-")),
                (Some(_), _) => format!("published ({} failed attempts before)", o.attempts),
                (None, None) => format!("pending ({} failed attempts)", o.attempts),
            };
            push("outbox", Some(o.created_at), format!("row {} {state}", o.id));
            if let Some(p) = o.published_at {
                push("relay", Some(p), format!("marked published to {}", o.topic));
            }
        }
        None => push("outbox", None, "no row for the current version".into()),
    }
    match &f.record {
        Some(r) => push("kafka", r.at, format!("{} partition {} offset {}", r.topic, r.partition, r.offset)),
        None => push("kafka", None, "record not found".into()),
    }
    if let Some(p) = &f.progress {
        let passed = f.record.as_ref().is_some_and(|r| p.committed.is_some_and(|c| c > r.offset));
        let committed = p.committed.map_or("none".into(), |c| c.to_string());
        push("projection", None, format!(
            "group committed {committed} of {} on partition {}: {}",
            p.end,
            p.partition,
            if passed { "past the record" } else { "not past the record yet" }
        ));
    }
    let v = |x: Option<i64>| x.map_or("absent".into(), |v| format!("version {v}"));
    push("opensearch", None, format!("document {}", v(f.document_version)));
    push("redis", None, format!("entry {}", v(f.cache_version)));
    for d in &f.dead_letters {
        push("dlq", None, format!(
            "{}:{} {} at {}{}: {}",
            d.partition, d.offset, d.class, d.failed_at, if d.redriven { " (redriven)" } else { "" }, d.reason
        ));
    }
    for r in &f.replays {
        push("replay", None, r.clone());
    }
    out
}

/// Reads every store about product `id` (what cannot be read is noted, not fatal).
pub async fn gather(d: &TraceDeps, id: Uuid) -> Result<Facts, OpsError> {
    let mut f = Facts {
        product_id: id,
        row: None,
        history: Vec::new(),
        outbox: None,
        record: None,
        progress: None,
        document_version: None,
        cache_version: None,
        dead_letters: Vec::new(),
        replays: Vec::new(),
        unreadable: Vec::new(),
    };
    postgres_facts(d, &mut f).await?;
    if f.row.is_none() {
        return Ok(f);
    }
    kafka_facts(d, &mut f).await;
    f.document_version = match document_version(d, id).await {
        Ok(v) => v,
        Err(e) => {
            f.unreadable.push(format!("opensearch: {e}"));
            None
        }
    };
    f.cache_version = match d.cache.get_document(id).await {
        Ok(doc) => doc.map(|d| d.version),
        Err(e) => {
            f.unreadable.push(format!("redis: {e}"));
            None
        }
    };
    Ok(f)
}

async fn postgres_facts(d: &TraceDeps, f: &mut Facts) -> Result<(), OpsError> {
    let mut conn = pool::get(&d.pool).await?;
    let Some(p) = product_repo::find(&mut conn, f.product_id).await? else {
        return Ok(());
    };
    f.row = Some((p.version, p.status.as_str().to_owned(), p.updated_at));
    let from = (p.version - HISTORY_SHOWN).max(0);
    f.history = history_repo::page(&mut conn, f.product_id, from, HISTORY_SHOWN)
        .await?
        .into_iter()
        .map(|e| Written {
            version: e.version,
            event_type: e.event_type,
            at: e.occurred_at,
            actor: e.actor,
            correlation_id: e.correlation_id,
        })
        .collect();
    f.outbox = outbox_repo::for_version(&mut conn, f.product_id, p.version).await?;
    let since = f.outbox.as_ref().map_or(p.updated_at, |o| o.created_at);
    f.replays = audit_repo::recent_offset_moves(&mut conn, 50)
        .await?
        .into_iter()
        .filter(|m| m.executed_at >= since && m.group == d.names.projection_group())
        .map(|m| format!("{} {} partition {} moved {} -> {} ({})", m.executed_at.format("%Y-%m-%dT%H:%M:%SZ"), m.mode, m.partition,
            m.from_offset.map_or("none".into(), |o| o.to_string()), m.to_offset, m.host))
        .collect();
    Ok(())
}

/// The record, the group's progress on its partition and the product's dead letters.
type KafkaFacts = (Option<Record>, Option<Progress>, Vec<DeadLetter>);

/// The record, the group's progress on its partition and the dead letters, off the runtime.
async fn kafka_facts(d: &TraceDeps, f: &mut Facts) {
    let (kafka, names, outbox, id) = (d.kafka.clone(), d.names.clone(), f.outbox.clone(), f.product_id);
    let dlq_pool = d.pool.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<KafkaFacts, OpsError> {
        let c = groups::client(&kafka, &names.projection_group())?;
        let record = match &outbox {
            Some(o) if o.published_at.is_some() => find_record(&c, o)?,
            _ => None,
        };
        let topic = outbox.as_ref().map_or_else(|| names.events_topic(), |o| o.topic.clone());
        let partition = record.as_ref().map_or_else(
            || groups::partitions(&c, &topic).map(|p| partition_of(&id.to_string(), p.len() as i32)),
            |r| Ok(r.partition),
        )?;
        let progress = progress(&c, &topic, partition, record.as_ref().map(|r| r.offset))?;
        let letters = crate::ops::dlq::read_all(&kafka, &names.events_dlq_topic())?
            .iter()
            .map(crate::ops::dlq::DlqRecord::from_message)
            .filter(|r| r.key == id.to_string())
            .map(|r| DeadLetter {
                partition: r.partition,
                offset: r.offset,
                class: r.error_class,
                reason: r.reason,
                failed_at: r.failed_at,
                redriven: false,
            })
            .collect();
        Ok((record, Some(progress), letters))
    })
    .await;
    match found {
        Ok(Ok((record, progress, letters))) => {
            f.record = record;
            f.progress = progress;
            f.dead_letters = letters;
        }
        Ok(Err(e)) => f.unreadable.push(format!("kafka: {e}")),
        Err(e) => f.unreadable.push(format!("kafka: {e}")),
    }
    if !f.dead_letters.is_empty() {
        if let Ok(mut conn) = pool::get(&dlq_pool).await {
            if let Ok(done) = audit_repo::redriven(&mut conn, &d.names.events_dlq_topic()).await {
                for l in &mut f.dead_letters {
                    l.redriven = done.contains(&(l.partition, l.offset));
                }
            }
        }
    }
}

/// The record of outbox row `o`: on the partition its key hashes to, from a little before it
/// was published, the first record whose `event_id` header is the row's.
fn find_record(c: &BaseConsumer, o: &EventRow) -> Result<Option<Record>, OpsError> {
    let parts = groups::partitions(c, &o.topic)?;
    let partition = partition_of(&o.key, parts.len() as i32);
    let from = o.published_at.unwrap_or(o.created_at) - chrono::Duration::seconds(30);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&o.topic, partition, Offset::Offset(from.timestamp_millis()))?;
    let start = c.offsets_for_times(tpl, CALL_TIMEOUT)?;
    let (_, end) = c.fetch_watermarks(&o.topic, partition, CALL_TIMEOUT)?;
    let begin = match start.find_partition(&o.topic, partition).map(|e| e.offset()) {
        Some(Offset::Offset(n)) => n,
        _ => return Ok(None),
    };
    let mut assign = TopicPartitionList::new();
    assign.add_partition_offset(&o.topic, partition, Offset::Offset(begin))?;
    c.assign(&assign)?;
    let event_id = o.event_id.to_string();
    let deadline = Instant::now() + CALL_TIMEOUT;
    let mut read = 0;
    while read < SCAN_LIMIT && Instant::now() < deadline {
        let Some(m) = c.poll(Duration::from_millis(500)) else { continue };
        let m = m?;
        read += 1;
        if crate::bus::consumer::header_str(&m, outbox_repo::event_headers::EVENT_ID) == Some(event_id.as_str()) {
            let at = m.timestamp().to_millis().and_then(DateTime::from_timestamp_millis);
            return Ok(Some(Record { topic: o.topic.clone(), partition, offset: m.offset(), at }));
        }
        if m.offset() + 1 >= end {
            break;
        }
    }
    Ok(None)
}

/// The projection group's committed offset on `partition`; while it has not passed the
/// record at `waiting_for`, sampled again a second later for its rate (the ETA).
fn progress(c: &BaseConsumer, topic: &str, partition: i32, waiting_for: Option<i64>) -> Result<Progress, OpsError> {
    let committed = |c: &BaseConsumer| -> Result<Option<i64>, OpsError> {
        Ok(groups::committed(c, topic, &[partition])?.get(&partition).copied().flatten())
    };
    let first = committed(c)?;
    let waiting = waiting_for.is_some_and(|o| first.is_none_or(|c| c <= o));
    let (second, rate) = if waiting {
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let second = committed(c)?;
        let rate = match (first, second) {
            (Some(a), Some(b)) if b > a => Some((b - a) as f64 / t.elapsed().as_secs_f64()),
            _ => None,
        };
        (second, rate)
    } else {
        (first, None)
    };
    let (_, end) = c.fetch_watermarks(topic, partition, CALL_TIMEOUT)?;
    Ok(Progress { partition, committed: second, end, rate })
}

async fn document_version(d: &TraceDeps, id: Uuid) -> Result<Option<i64>, crate::search::SearchError> {
    let alias = d.names.index_alias();
    let (alias, id) = (alias.as_str(), id.to_string());
    let idr = id.as_str();
    let resp = d
        .search
        .call(|os| async move { os.get(opensearch::GetParts::IndexId(alias, idr)).send().await })
        .await?;
    if resp.status_code().as_u16() == 404 {
        return Ok(None);
    }
    let v: serde_json::Value = crate::search::client::decode(resp).await?;
    Ok(v["_source"]["version"].as_i64())
}

/// Traces product `id`.
pub async fn trace(d: &TraceDeps, id: Uuid) -> Result<Trace, OpsError> {
    let facts = gather(d, id).await?;
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
            record: Some(Record { topic: "product.events".into(), partition: 2, offset: 40, at: Some(at(1)) }),
            progress: Some(Progress { partition: 2, committed: Some(41), end: 41, rate: None }),
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
        f.progress = Some(Progress { partition: 2, committed: Some(30), end: 5390, rate: Some(2.75) });
        assert_eq!(verdict(&f).text, "waiting: partition 2 lag 5360, record at offset 40, ETA 4 s");
        f.progress = Some(Progress { partition: 2, committed: Some(41), end: 41, rate: None });
        assert!(verdict(&f).text.starts_with("stuck: the projection passed offset 2:40"), "{:?}", verdict(&f));
        f.record = None;
        assert!(verdict(&f).text.starts_with("stuck: published, but the record was not found"));
        let o = f.outbox.as_mut().expect("row");
        o.published_at = None;
        o.attempts = 2;
        o.last_error = Some("Message size too large".into());
        assert_eq!(verdict(&f).state, "waiting");
        f.outbox.as_mut().expect("row").parked_at = Some(at(9));
        assert_eq!(verdict(&f).text, "stuck: outbox row 7 parked after 2 attempts: Message size too large");
        f.dead_letters.push(DeadLetter {
            partition: 0,
            offset: 1233,
            class: "invalid_state".into(),
            reason: "state id/version do not match".into(),
            failed_at: "-".into(),
            redriven: false,
        });
        assert_eq!(verdict(&f).text, "dead-lettered: invalid_state at offset 0:1233 (state id/version do not match)");
        f.row = None;
        assert_eq!(verdict(&f).state, "missing");
        assert_eq!(verdict(&f).exit_code(), 1);
    }

    #[test]
    fn hops_carry_the_delay_from_the_previous_timed_hop() {
        let h = hops(&facts());
        let names: Vec<&str> = h.iter().map(|h| h.hop).collect();
        assert_eq!(names, ["postgres", "outbox", "relay", "kafka", "projection", "opensearch", "redis"]);
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
