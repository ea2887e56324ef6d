//! The one-screen status: health of each dependency with latency, outbox backlog, lag per
//! consumer group with a Burrow-style verdict from two samples taken a moment apart, DLQ
//! depth, and the last replay. Every probe is bounded; a failing one is reported, never fatal.

use std::time::{Duration, Instant};

pub use super::groups::catch_up;
use super::groups::{self, DescribeRow};
use crate::bus::catch_up::PartitionCatchUp;
use crate::cache::ProductCache;
use crate::search::SearchClient;
use crate::store::reconcile_run_repo::{self, ReconcileRun};
use crate::store::{audit_repo, outbox_repo, outbox_slices, pool, PgPool};

/// How long one health probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// Time between the two lag samples a verdict compares.
pub const SAMPLE_GAP: Duration = Duration::from_secs(1);

/// Clients the status probes with (built by the caller from its settings).
pub struct StatusDeps {
    /// Postgres.
    pub pool: PgPool,
    /// Redis.
    pub cache: ProductCache,
    /// Kafka producer (metadata probe).
    pub producer: rdkafka::producer::FutureProducer,
    /// OpenSearch.
    pub search: SearchClient,
    /// Kafka connection settings (group and watermark calls).
    pub kafka: crate::bus::KafkaConnection,
    /// (group, topic) pairs to report.
    pub groups: Vec<(String, String)>,
    /// Dead-letter topics to report.
    pub dlq_topics: Vec<String>,
}

/// One dependency's health.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// database, redis, kafka, opensearch.
    pub name: &'static str,
    /// Answered in time.
    pub ok: bool,
    /// Latency when ok.
    pub latency_ms: Option<u64>,
    /// Short error when not ok.
    pub error: Option<String>,
}

/// One consumer group's lag and verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupStatus {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Total lag (messages).
    pub lag: i64,
    /// Active members.
    pub members: usize,
    /// OK, WARN, STALL, STOP or REWIND; or the error.
    pub verdict: String,
    /// Seconds until the group's slowest partition has caught up at the rate measured
    /// between the two samples; `None` when unknown or not catching up.
    pub eta_secs: Option<f64>,
    /// `caught up`, `catching up`, `not catching up` or `unknown` (a partition with records
    /// and nothing committed: its lag is unknown, never 0).
    pub trend: String,
    /// The partition the ETA waits for.
    pub slowest_partition: Option<i32>,
    /// Each partition's lag, rate, ETA and trend.
    pub partitions: Vec<PartitionCatchUp>,
}

/// The outbox backlog.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OutboxStatus {
    /// Pending rows.
    pub pending: i64,
    /// Parked rows.
    pub parked: i64,
    /// Age of the oldest pending row.
    pub oldest_pending_age_secs: f64,
    /// Relays owning slices now, with how many slices each (by relay name).
    pub relays: std::collections::BTreeMap<String, usize>,
    /// Slices owned by some relay (of `OUTBOX_SLICES`): fewer means rows nobody publishes.
    pub slices_owned: usize,
}

/// The last offset reset.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LastReplay {
    /// When.
    pub executed_at: chrono::DateTime<chrono::Utc>,
    /// Group.
    pub group: String,
    /// Mode, e.g. to-earliest.
    pub mode: String,
    /// From which host.
    pub host: String,
}

/// Depth of one dead-letter topic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DlqDepth {
    /// Topic.
    pub topic: String,
    /// Records (log end - log start), None when it could not be read.
    pub records: Option<i64>,
}

/// Everything `aliexpress status` shows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// Health per dependency.
    pub health: Vec<Check>,
    /// Outbox backlog (None when Postgres is unavailable).
    pub outbox: Option<OutboxStatus>,
    /// Last replay recorded.
    pub last_replay: Option<LastReplay>,
    /// Consumer groups.
    pub groups: Vec<GroupStatus>,
    /// Dead letters.
    pub dead_letters: Vec<DlqDepth>,
    /// The projection's last scheduled drift check (None: never ran, or Postgres is down).
    pub last_reconcile: Option<ReconcileRun>,
}

impl Status {
    /// True when every dependency answered and no group is stalled or stopped with lag.
    pub fn healthy(&self) -> bool {
        self.health.iter().all(|c| c.ok) && self.groups.iter().all(|g| matches!(g.verdict.as_str(), "OK" | "WARN"))
    }
}

/// Burrow-style verdict from two samples taken a moment apart.
pub fn verdict(before: &[DescribeRow], after: &[DescribeRow], members: usize) -> &'static str {
    let lag: i64 = after.iter().map(|r| r.lag).sum();
    let moved = |f: fn(i64, i64) -> bool| {
        before.iter().zip(after).any(|(a, b)| match (a.current, b.current) {
            (Some(x), Some(y)) => f(x, y),
            _ => false,
        })
    };
    if moved(|x, y| y < x) {
        "REWIND"
    } else if lag == 0 {
        "OK"
    } else if members == 0 {
        "STOP"
    } else if moved(|x, y| y > x) {
        "WARN"
    } else {
        "STALL"
    }
}

async fn check<T, E: std::fmt::Display>(
    name: &'static str,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Check {
    let t = Instant::now();
    let (ok, error) = match tokio::time::timeout(PROBE_TIMEOUT, f).await {
        Ok(Ok(_)) => (true, None),
        Ok(Err(e)) => (false, Some(e.to_string().chars().take(120).collect())),
        Err(_) => (false, Some(format!("no answer in {}s", PROBE_TIMEOUT.as_secs()))),
    };
    Check {
        name,
        ok,
        latency_ms: ok.then(|| u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)),
        error,
    }
}

/// Probes everything once (takes about [`SAMPLE_GAP`] plus the probes).
pub async fn gather(d: &StatusDeps) -> Status {
    let (health, (outbox, last_replay), groups, dead_letters, last_reconcile) = tokio::join!(
        health(d),
        backlog(d),
        group_statuses(d),
        dead_letters(d),
        last_reconcile(&d.pool)
    );
    Status {
        health,
        outbox,
        last_replay,
        groups,
        dead_letters,
        last_reconcile,
    }
}

/// The projection's last scheduled drift check, if any (None when Postgres does not answer).
pub async fn last_reconcile(pool: &PgPool) -> Option<ReconcileRun> {
    let probe = async {
        let mut conn = pool::get(pool).await?;
        reconcile_run_repo::latest(&mut conn).await
    };
    tokio::time::timeout(PROBE_TIMEOUT, probe).await.ok()?.ok().flatten()
}

/// Health of each dependency (database, redis, kafka, opensearch), probed concurrently.
pub async fn health(d: &StatusDeps) -> Vec<Check> {
    let (db, redis, kafka, opensearch) = tokio::join!(
        check("database", async {
            let mut c = pool::get(&d.pool).await?;
            pool::ping(&mut c).await
        }),
        check("redis", d.cache.ping(PROBE_TIMEOUT)),
        check("kafka", crate::bus::admin::probe(&d.producer, PROBE_TIMEOUT)),
        check("opensearch", d.search.health(PROBE_TIMEOUT)),
    );
    vec![db, redis, kafka, opensearch]
}

/// The outbox backlog and the last replay (both None when Postgres is unavailable).
pub async fn backlog(d: &StatusDeps) -> (Option<OutboxStatus>, Option<LastReplay>) {
    let Ok(mut conn) = pool::get(&d.pool).await else {
        return (None, None);
    };
    let owners = outbox_slices::current_owners(&mut conn).await.unwrap_or_default();
    let mut relays = std::collections::BTreeMap::new();
    for o in &owners {
        *relays.entry(o.owner.clone()).or_insert(0) += 1;
    }
    let outbox = outbox_repo::stats(&mut conn).await.ok().map(|s| OutboxStatus {
        pending: s.pending,
        parked: s.parked,
        oldest_pending_age_secs: s.oldest_pending_age_secs,
        relays,
        slices_owned: owners.len(),
    });
    let last = audit_repo::last_offset_move(&mut conn)
        .await
        .ok()
        .flatten()
        .map(|(executed_at, group, mode, host)| LastReplay {
            executed_at,
            group,
            mode,
            host,
        });
    (outbox, last)
}

/// Lag and verdict of each group, from two samples [`SAMPLE_GAP`] apart.
pub async fn group_statuses(d: &StatusDeps) -> Vec<GroupStatus> {
    let first = sample_groups(d).await;
    tokio::time::sleep(SAMPLE_GAP).await;
    let second = sample_groups(d).await;
    d.groups
        .iter()
        .zip(first.into_iter().zip(second))
        .map(|((group, topic), (a, b))| match (a, b) {
            (Ok((_, before)), Ok((info, after))) => {
                let c = catch_up(&before, &after, SAMPLE_GAP);
                GroupStatus {
                    group: group.clone(),
                    topic: topic.clone(),
                    lag: after.iter().map(|r| r.lag).sum(),
                    members: info.members.len(),
                    verdict: verdict(&before, &after, info.members.len()).to_owned(),
                    eta_secs: c.eta_secs,
                    trend: c.trend.to_owned(),
                    slowest_partition: c.slowest_partition,
                    partitions: c.partitions,
                }
            }
            (Err(e), _) | (_, Err(e)) => GroupStatus {
                group: group.clone(),
                topic: topic.clone(),
                lag: 0,
                members: 0,
                verdict: format!("ERROR: {e}"),
                eta_secs: None,
                trend: "unknown".into(),
                slowest_partition: None,
                partitions: Vec::new(),
            },
        })
        .collect()
}

/// Depth of each dead-letter topic.
pub async fn dead_letters(d: &StatusDeps) -> Vec<DlqDepth> {
    let (b, topics) = (d.kafka.clone(), d.dlq_topics.clone());
    tokio::task::spawn_blocking(move || dlq_depths(&b, &topics))
        .await
        .unwrap_or_default()
}

type Sample = Result<(groups::GroupInfo, Vec<DescribeRow>), String>;

async fn sample_groups(d: &StatusDeps) -> Vec<Sample> {
    let (b, gs) = (d.kafka.clone(), d.groups.clone());
    tokio::task::spawn_blocking(move || {
        gs.iter()
            .map(|(g, t)| groups::describe(&b, g, std::slice::from_ref(t)).map_err(|e| e.to_string()))
            .collect()
    })
    .await
    .unwrap_or_else(|e| d.groups.iter().map(|_| Err(e.to_string())).collect())
}

fn dlq_depths(kafka: &crate::bus::KafkaConnection, topics: &[String]) -> Vec<DlqDepth> {
    let c = groups::client(kafka, "aliexpress-status").ok();
    topics
        .iter()
        .map(|t| DlqDepth {
            topic: t.clone(),
            records: c.as_ref().and_then(|c| {
                groups::partitions(c, t).ok().map(|ps| {
                    ps.iter()
                        .filter_map(|p| {
                            rdkafka::consumer::Consumer::fetch_watermarks(c, t, *p, groups::CALL_TIMEOUT).ok()
                        })
                        .map(|(lo, hi)| hi - lo)
                        .sum()
                })
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prow(partition: i32, current: Option<i64>, lag: i64) -> DescribeRow {
        DescribeRow {
            group: "g".into(),
            topic: "t".into(),
            partition,
            current,
            log_start: 0,
            log_end: current.unwrap_or(0) + lag,
            lag,
            consumer_id: None,
            host: None,
            client_id: None,
        }
    }

    #[test]
    fn the_group_catches_up_when_its_slowest_partition_does() {
        let gap = Duration::from_secs(1);
        // Partition 0: 100 behind at 50/s (2 s); partition 1: 900 behind at 100/s (9 s).
        let before = [prow(0, Some(0), 150), prow(1, Some(0), 1000)];
        let after = [prow(0, Some(50), 100), prow(1, Some(100), 900)];
        let c = catch_up(&before, &after, gap);
        assert_eq!((c.trend, c.slowest_partition), ("catching up", Some(1)));
        assert!((c.eta_secs.expect("eta") - 9.0).abs() < 1e-9);
        // Lag growing although consumed: not catching up.
        let growing = [prow(0, Some(50), 300), prow(1, Some(100), 900)];
        assert_eq!(catch_up(&before, &growing, gap).trend, "not catching up");
        // A partition with lag that did not move.
        let stuck = [prow(0, Some(0), 150), prow(1, Some(100), 900)];
        let c = catch_up(&before, &stuck, gap);
        assert_eq!(
            (c.eta_secs, c.trend, c.slowest_partition),
            (None, "not catching up", Some(0))
        );
        assert_eq!(c.partitions.len(), 2);
        // Nothing committed on a partition: unknown, never 0.
        assert_eq!(
            catch_up(&before, &[prow(0, None, 5), prow(1, Some(100), 0)], gap).trend,
            "unknown"
        );
        assert_eq!(
            catch_up(&after, &[prow(0, Some(150), 0), prow(1, Some(1000), 0)], gap).trend,
            "caught up"
        );
    }
    fn row(current: Option<i64>, lag: i64) -> DescribeRow {
        DescribeRow {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            current,
            log_start: 0,
            log_end: 100,
            lag,
            consumer_id: None,
            host: None,
            client_id: None,
        }
    }

    #[test]
    fn verdicts_follow_burrow() {
        assert_eq!(verdict(&[row(Some(100), 0)], &[row(Some(100), 0)], 1), "OK");
        assert_eq!(verdict(&[row(Some(10), 90)], &[row(Some(20), 80)], 1), "WARN");
        assert_eq!(verdict(&[row(Some(10), 90)], &[row(Some(10), 90)], 1), "STALL");
        assert_eq!(verdict(&[row(Some(10), 90)], &[row(Some(10), 90)], 0), "STOP");
        assert_eq!(verdict(&[row(Some(50), 50)], &[row(Some(0), 100)], 0), "REWIND");
    }
}
