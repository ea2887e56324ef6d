//! `aliexpress post-restore`: brings the read side back to a Postgres restored from backup.
//!
//! A restore to a point in time (or a WAL archive that missed the last records) leaves events
//! on product.events that the restored database never had: they were published after the
//! restore point. Left alone they keep search and the cache ahead of the truth, and a replay
//! would bring them back later. So, once Postgres is restored:
//!
//! 1. **Find them**: product.events is read from a little before the restored database's
//!    newest change (`--margin`, 10 minutes) to its end; every event whose id the database
//!    does not hold (history or outbox) is lost ([`lost_by_product`]).
//! 2. **Outrank them**: each product that still exists is moved past its highest lost version
//!    (same state, version + 1, a `ProductSnapshot` through the outbox: [`remedies`]), so
//!    the version guards of the index and the cache refuse every lost event, now and in any
//!    later replay. Products that no longer exist at all are listed as vanished.
//! 3. **Fence**: the projection's group is moved to the topic's end as scanned, and the fence
//!    is recorded (`restore_fences`); `replay` refuses to move the projection before it while
//!    vanished products exist (a rebuild from Postgres is the way back then).
//! 4. **Rebuild**: the cache's products are cleared, and a fresh index is built from Postgres
//!    and swapped in (`replay --rebuild --from-postgres`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use uuid::Uuid;

use super::rebuild::RebuildDeps;
use super::replay::{self, PlanRow, ResetSpec};
use super::OpsError;
use crate::bus::KafkaConnection;
use crate::store::restore_repo::{self, Fence};

/// One event seen on the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenEvent {
    /// Its event id.
    pub event_id: Uuid,
    /// The product.
    pub product: Uuid,
    /// The product's version it carries.
    pub version: i64,
}

/// The lost events of one product: their versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Lost {
    /// Lowest lost version.
    pub first: i64,
    /// Highest lost version.
    pub last: i64,
    /// How many lost events (duplicates included).
    pub events: u32,
}

/// What is done for one product with lost events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Remedy {
    /// Moved from `current` to `past + 1`.
    Advance {
        /// The product.
        id: Uuid,
        /// Its version in the restored database.
        current: i64,
        /// The highest lost version.
        past: i64,
    },
    /// Already at a version past every lost one (written again since the restore).
    AlreadyPast {
        /// The product.
        id: Uuid,
        /// Its version.
        current: i64,
    },
    /// Not in the restored database at all.
    Vanished {
        /// The product.
        id: Uuid,
    },
}

/// Groups the events the database does not know by product.
pub fn lost_by_product(events: &[SeenEvent], known: &HashSet<Uuid>) -> BTreeMap<Uuid, Lost> {
    let mut out: BTreeMap<Uuid, Lost> = BTreeMap::new();
    for e in events.iter().filter(|e| !known.contains(&e.event_id)) {
        let l = out.entry(e.product).or_insert(Lost {
            first: e.version,
            last: e.version,
            events: 0,
        });
        l.first = l.first.min(e.version);
        l.last = l.last.max(e.version);
        l.events += 1;
    }
    out
}

/// The remedy of each product with lost events, given the restored database's versions.
pub fn remedies(lost: &BTreeMap<Uuid, Lost>, current: &HashMap<Uuid, i64>) -> Vec<Remedy> {
    lost.iter()
        .map(|(id, l)| match current.get(id) {
            None => Remedy::Vanished { id: *id },
            Some(v) if *v > l.last => Remedy::AlreadyPast { id: *id, current: *v },
            Some(v) => Remedy::Advance {
                id: *id,
                current: *v,
                past: l.last,
            },
        })
        .collect()
}

/// What the scan found and what would be done.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The restored database's newest change.
    pub horizon: Option<DateTime<Utc>>,
    /// Where the scan started.
    pub scanned_from: DateTime<Utc>,
    /// Per partition: `new` where the scan started, `log_end` where it stopped, `current` the
    /// projection group's committed offset.
    pub partitions: Vec<PlanRow>,
    /// Records read.
    pub records: u64,
    /// Records that are not events at all (the projection dead-letters them anyway).
    pub undecodable: u64,
    /// Lost events by product.
    pub lost: BTreeMap<Uuid, Lost>,
    /// One remedy per product in `lost`.
    pub remedies: Vec<Remedy>,
}

impl Plan {
    /// Lost events in all.
    pub fn lost_events(&self) -> u64 {
        self.lost.values().map(|l| u64::from(l.events)).sum()
    }

    /// Products of each remedy: (advance, already past, vanished).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for r in &self.remedies {
            match r {
                Remedy::Advance { .. } => c.0 += 1,
                Remedy::AlreadyPast { .. } => c.1 += 1,
                Remedy::Vanished { .. } => c.2 += 1,
            }
        }
        c
    }
}

/// How long the scan waits for a partition to deliver its next record.
const READ_STALL: Duration = Duration::from_secs(30);

/// Reads every record of `rows`' ranges (`new` to `log_end`). Blocking.
fn read_ranges(
    kafka: &KafkaConnection,
    rows: &[PlanRow],
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<(Vec<SeenEvent>, u64, u64), OpsError> {
    let c: BaseConsumer = super::groups::client(kafka, "aliexpress-post-restore")?;
    let mut tpl = TopicPartitionList::new();
    let mut todo: HashMap<i32, i64> = HashMap::new();
    for r in rows.iter().filter(|r| r.new < r.log_end) {
        tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.new))?;
        todo.insert(r.partition, r.log_end);
    }
    if todo.is_empty() {
        return Ok((Vec::new(), 0, 0));
    }
    c.assign(&tpl)?;
    let (mut events, mut records, mut undecodable) = (Vec::new(), 0u64, 0u64);
    let mut last_progress = Instant::now();
    while !todo.is_empty() {
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last_progress = Instant::now();
                let Some(end) = todo.get(&m.partition()).copied() else {
                    continue;
                };
                if m.offset() >= end {
                    todo.remove(&m.partition());
                    continue;
                }
                records += 1;
                match crate::bus::envelope::decode_event(m.payload()) {
                    Ok(e) => events.push(SeenEvent {
                        event_id: e.event_id,
                        product: e.aggregate_id,
                        version: e.aggregate_version,
                    }),
                    Err(_) => undecodable += 1,
                }
                if m.offset() + 1 >= end {
                    todo.remove(&m.partition());
                }
                if records % 10_000 == 0 {
                    progress(records);
                }
            }
            Some(Err(e)) => return Err(e.into()),
            None if last_progress.elapsed() > READ_STALL => {
                return Err(OpsError::Other(format!(
                    "no record for {}s from partitions {:?} before their end",
                    READ_STALL.as_secs(),
                    todo.keys().collect::<Vec<_>>()
                )))
            }
            None => {}
        }
    }
    progress(records);
    Ok((events, records, undecodable))
}

/// Reads the topic and the restored database; changes nothing.
pub async fn plan(
    d: &RebuildDeps,
    group: &str,
    margin: Duration,
    progress: &'static (dyn Fn(u64) + Send + Sync),
) -> anyhow::Result<Plan> {
    let topic = d.infra.names().events_topic();
    let mut conn = d.pool.get().await?;
    let horizon = restore_repo::horizon(&mut conn).await?;
    let scanned_from = match horizon {
        Some(h) => h - chrono::Duration::from_std(margin)?,
        None => DateTime::<Utc>::UNIX_EPOCH,
    };
    let (k, g, t) = (d.kafka.clone(), group.to_owned(), topic.clone());
    let (partitions, (events, records, undecodable)) = tokio::task::spawn_blocking(move || {
        let rows = replay::plan(&k, &g, &t, None, &ResetSpec::ToDatetime(scanned_from))?;
        let read = read_ranges(&k, &rows, progress)?;
        Ok::<_, OpsError>((rows, read))
    })
    .await??;
    let ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let known = restore_repo::known_events(&mut conn, &ids).await?;
    let lost = lost_by_product(&events, &known);
    let products: Vec<Uuid> = lost.keys().copied().collect();
    let current = restore_repo::versions(&mut conn, &products).await?;
    let remedies = remedies(&lost, &current);
    Ok(Plan {
        horizon,
        scanned_from,
        partitions,
        records,
        undecodable,
        lost,
        remedies,
    })
}

/// What `execute` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Done {
    /// Products moved past their lost versions.
    pub advanced: usize,
    /// Cache entries cleared.
    pub cache_cleared: u64,
}

/// Applies the plan up to the fence (the rebuild is the caller's next step): refuses while
/// the projection's group has members.
pub async fn execute(d: &RebuildDeps, plan: &Plan, group: &str, actor: &str) -> anyhow::Result<Done> {
    let (k, g) = (d.kafka.clone(), group.to_owned());
    tokio::task::spawn_blocking(move || replay::ensure_inactive(&k, &g)).await??;
    let topic = d.infra.names().events_topic();
    let mut conn = d.pool.get().await?;
    let mut advanced = Vec::new();
    for r in &plan.remedies {
        if let Remedy::Advance { id, past, .. } = r {
            let l = plan.lost.get(id).copied().unwrap_or(Lost {
                first: *past,
                last: *past,
                events: 0,
            });
            let reason = format!("restore: versions {}..{} were lost with the database", l.first, l.last);
            if let Some((from, to)) = restore_repo::advance(&mut conn, *id, *past, &topic, &reason, actor).await? {
                advanced.push(serde_json::json!({"id": id, "from": from, "to": to}));
            }
        }
    }
    let fenced: Vec<PlanRow> = plan
        .partitions
        .iter()
        .map(|r| PlanRow {
            group: group.to_owned(),
            new: r.log_end,
            note: Some("post-restore fence".into()),
            ..r.clone()
        })
        .collect();
    let vanished: Vec<Uuid> = plan
        .remedies
        .iter()
        .filter_map(|r| match r {
            Remedy::Vanished { id } => Some(*id),
            _ => None,
        })
        .collect();
    let fence = Fence {
        created_at: Utc::now(),
        horizon: plan.horizon,
        scanned_from: plan.scanned_from,
        topic: topic.clone(),
        offsets: fenced
            .iter()
            .map(|r| (r.partition.to_string(), serde_json::Value::from(r.new)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        lost_events: i32::try_from(plan.lost_events()).unwrap_or(i32::MAX),
        advanced: advanced.clone().into(),
        vanished: serde_json::to_value(&vanished)?,
        actor: actor.to_owned(),
    };
    restore_repo::record(&mut conn, &fence).await?;
    drop(conn);
    let (k, rows) = (d.kafka.clone(), fenced.clone());
    tokio::task::spawn_blocking(move || replay::apply(&k, &rows)).await??;
    replay::record_execution(&d.pool, &fenced, "post-restore fence").await?;
    let cache_cleared = d.cache.clear_products().await?;
    Ok(Done {
        advanced: advanced.len(),
        cache_cleared,
    })
}

/// Whether moving the projection to `rows` would cross the latest fence while it names
/// vanished products: the refusal's text, or `None`.
pub fn crosses_fence(fence: &Fence, rows: &[PlanRow]) -> Option<String> {
    if fence.vanished_count() == 0 {
        return None;
    }
    let crossing: Vec<String> = rows
        .iter()
        .filter(|r| r.topic == fence.topic)
        .filter_map(|r| {
            fence
                .offset(r.partition)
                .filter(|f| r.new < *f)
                .map(|f| format!("{}:{} < {f}", r.partition, r.new))
        })
        .collect();
    (!crossing.is_empty()).then(|| {
        format!(
            "{} before the restore fence of {} (partition:offset {}) holds events of {} product(s) lost with that restore; \
             replaying them would bring them back into search. Rebuild from Postgres instead: aliexpress replay --rebuild --from-postgres --execute",
            fence.topic,
            fence.created_at.to_rfc3339(),
            crossing.join(", "),
            fence.vanished_count()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(product: Uuid, version: i64) -> SeenEvent {
        SeenEvent {
            event_id: Uuid::new_v4(),
            product,
            version,
        }
    }

    #[test]
    fn only_events_the_database_does_not_hold_are_lost_and_they_are_grouped_by_product() {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let events = vec![seen(a, 1), seen(a, 2), seen(a, 3), seen(a, 3), seen(b, 1)];
        let known: HashSet<Uuid> = [events[0].event_id, events[1].event_id].into_iter().collect();
        let lost = lost_by_product(&events, &known);
        assert_eq!(
            lost.get(&a),
            Some(&Lost {
                first: 3,
                last: 3,
                events: 2
            })
        );
        assert_eq!(
            lost.get(&b),
            Some(&Lost {
                first: 1,
                last: 1,
                events: 1
            })
        );
        assert!(lost_by_product(&events, &events.iter().map(|e| e.event_id).collect()).is_empty());
    }

    #[test]
    fn a_product_is_advanced_past_its_lost_versions_unless_written_past_them_or_gone() {
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let lost: BTreeMap<Uuid, Lost> = [a, b, c]
            .into_iter()
            .map(|id| {
                (
                    id,
                    Lost {
                        first: 4,
                        last: 5,
                        events: 2,
                    },
                )
            })
            .collect();
        let current: HashMap<Uuid, i64> = [(a, 3), (b, 6)].into_iter().collect();
        let r = remedies(&lost, &current);
        assert!(r.contains(&Remedy::Advance {
            id: a,
            current: 3,
            past: 5
        }));
        assert!(r.contains(&Remedy::AlreadyPast { id: b, current: 6 }));
        assert!(r.contains(&Remedy::Vanished { id: c }));
        // Equal to the highest lost version is not past it: that version was lost.
        let r = remedies(&lost, &[(a, 5)].into_iter().collect());
        assert!(r.contains(&Remedy::Advance {
            id: a,
            current: 5,
            past: 5
        }));
    }

    fn fence(vanished: serde_json::Value) -> Fence {
        Fence {
            created_at: Utc::now(),
            horizon: None,
            scanned_from: Utc::now(),
            topic: "product.events".into(),
            offsets: serde_json::json!({"0": 10, "1": 4}),
            lost_events: 3,
            advanced: serde_json::json!([]),
            vanished,
            actor: "test".into(),
        }
    }

    fn row(partition: i32, new: i64) -> PlanRow {
        PlanRow {
            group: "g".into(),
            topic: "product.events".into(),
            partition,
            current: Some(12),
            new,
            log_start: 0,
            log_end: 12,
            note: None,
        }
    }

    #[test]
    fn a_replay_before_the_fence_is_refused_only_while_vanished_products_exist() {
        let id = Uuid::new_v4();
        let f = fence(serde_json::json!([id]));
        let refusal = crosses_fence(&f, &[row(0, 9), row(1, 4)]).expect("refused");
        assert!(
            refusal.contains("0:9 < 10") && refusal.contains("--rebuild --from-postgres"),
            "{refusal}"
        );
        assert_eq!(
            crosses_fence(&f, &[row(0, 10), row(1, 7)]),
            None,
            "at or past the fence"
        );
        assert_eq!(
            crosses_fence(&fence(serde_json::json!([])), &[row(0, 0)]),
            None,
            "nothing vanished"
        );
    }
}
