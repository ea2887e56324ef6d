//! Reading the stores for `trace`: Postgres (row, history, outbox row, replays), Kafka (the
//! record by its `event_id` on its key's partition, the projection group's progress there,
//! the product's dead letters; blocking calls off the runtime), OpenSearch and Redis.

use chrono::DateTime;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};
use uuid::Uuid;

use super::{
    partition_of, DeadLetter, Facts, Progress, Record, TraceDeps, Written, CALL_TIMEOUT, HISTORY_SHOWN, SCAN_LIMIT,
};
use crate::ops::{groups, OpsError};
use crate::store::outbox_repo::{self, EventRow};
use crate::store::{audit_repo, history_repo, pool, product_repo};

/// Reads every store about product `id` (what cannot be read is noted, not fatal).
pub(super) async fn gather(d: &TraceDeps, id: Uuid) -> Result<Facts, OpsError> {
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
        .map(|m| {
            format!(
                "{} {} partition {} moved {} -> {} ({})",
                m.executed_at.format("%Y-%m-%dT%H:%M:%SZ"),
                m.mode,
                m.partition,
                m.from_offset.map_or("none".into(), |o| o.to_string()),
                m.to_offset,
                m.host
            )
        })
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
        let topic = outbox
            .as_ref()
            .map_or_else(|| names.events_topic(), |o| o.topic.clone());
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
        let Some(m) = c.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m?;
        read += 1;
        if crate::bus::consumer::header_str(&m, outbox_repo::event_headers::EVENT_ID) == Some(event_id.as_str()) {
            let at = m.timestamp().to_millis().and_then(DateTime::from_timestamp_millis);
            return Ok(Some(Record {
                topic: o.topic.clone(),
                partition,
                offset: m.offset(),
                at,
            }));
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
        Ok(groups::committed(c, topic, &[partition])?
            .get(&partition)
            .copied()
            .flatten())
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
    Ok(Progress {
        partition,
        committed: second,
        end,
        rate,
    })
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
