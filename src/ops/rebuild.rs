//! `replay --rebuild`: builds a fresh index `products_vN+1` while search keeps answering from
//! the old one, then swaps the alias atomically.
//!
//! 1. One rebuild at a time (advisory lock); a second run is refused, naming the one running.
//! 2. Source: product.events from the beginning, in a group of its own. When the topic no
//!    longer holds the full history (log start > 0) or `--from-postgres` is given, the current
//!    Postgres state is bulk-loaded instead, and events from the moment of the snapshot on are
//!    then consumed into the new index.
//! 3. Swap only when caught up and the document count and an (id, version) checksum match
//!    Postgres; keep consuming for a grace period after the swap so no write made around it is
//!    lost (the live projection writes through the alias, so it follows the swap).
//! 4. The old index is kept for `replay --rollback`.

use anyhow::{bail, Context};
use opensearch::SearchParts;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

use crate::bus::dlq::DlqWriter;
use crate::bus::{consumer, KafkaConnection};
use crate::cache::ProductCache;
use crate::config::{InfraConfig, Names};
use crate::search::bulk::{index_items, BulkItem};
use crate::search::client::decode;
use crate::search::document::product_document;
use crate::search::query::SearchAnswer;
use crate::search::{index, SearchClient};
use crate::store::{pool, product_repo, rebuild_repo, PgPool};
use crate::worker::projection::{ProductEventConsumer, ProjectionSettings};
use crate::worker::Shutdown;

/// What the rebuild needs.
pub struct RebuildDeps {
    /// Connection settings (names, database URL, index layout).
    pub infra: InfraConfig,
    /// Where the Kafka clients connect.
    pub kafka: KafkaConnection,
    /// Postgres pool.
    pub pool: PgPool,
    /// OpenSearch.
    pub search: SearchClient,
    /// Redis (the projection also keeps the read model fresh).
    pub cache: ProductCache,
    /// Producer for the DLQ writer.
    pub producer: rdkafka::producer::FutureProducer,
}

/// Where the new index's documents come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebuildSource {
    /// `product.events` from the beginning (it still holds the whole history).
    Topic,
    /// The current Postgres state, then the events from the snapshot on.
    Postgres,
}

impl RebuildSource {
    /// `topic` or `postgres` (as recorded in `index_rebuilds`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::Postgres => "postgres",
        }
    }
}

impl std::fmt::Display for RebuildSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a rebuild reports its progress (the CLI draws a bar; tests need nothing).
pub trait RebuildProgress: Send + Sync {
    /// Building `index` starts; `events` is how many the topic holds when that is known.
    fn start(&self, index: &str, events: Option<u64>);
    /// `n` more events projected.
    fn advance(&self, n: u64);
    /// Caught up and verified (before the swap).
    fn finish(&self);
}

/// Reports nothing.
pub struct NoProgress;

impl RebuildProgress for NoProgress {
    fn start(&self, _: &str, _: Option<u64>) {}
    fn advance(&self, _: u64) {}
    fn finish(&self) {}
}

/// One rebuild's names and starting point, decided before it is recorded.
struct Plan<'a> {
    names: Names,
    alias: &'a str,
    old: Option<&'a str>,
    new: &'a str,
    topic: &'a str,
    /// The rebuild's own consumer group.
    group: &'a str,
    /// (partition, low, high) watermarks of the topic when the rebuild started.
    marks: &'a [(i32, i64, i64)],
    source: RebuildSource,
}

/// Rebuild options.
#[derive(Debug, Clone)]
pub struct RebuildOptions {
    /// Load from Postgres even when the topic has the full history.
    pub from_postgres: bool,
    /// Keep consuming this long after the swap.
    pub grace: Duration,
    /// Give up if count and checksum do not match within this time.
    pub verify_timeout: Duration,
    /// Most events (or, from Postgres, documents) per second the rebuild writes, so live
    /// writes keep their freshness while it runs; `None`: as fast as it can.
    pub max_rate: Option<u32>,
}

/// Keeps a loop at or under `rate` items per second: after `done` items it waits until the
/// time those items are due at that rate.
struct Pace {
    start: Instant,
    rate: Option<u32>,
}

impl Pace {
    fn new(rate: Option<u32>) -> Self {
        Self {
            start: Instant::now(),
            rate: rate.filter(|r| *r > 0),
        }
    }

    /// Items per batch that make about ten batches a second at the rate (at most `max`).
    fn batch(&self, max: usize) -> usize {
        self.rate.map_or(max, |r| (r as usize / 10).clamp(1, max))
    }

    async fn after(&self, done: u64) {
        if let Some(r) = self.rate {
            let due = self.start + Duration::from_secs_f64(done as f64 / f64::from(r));
            tokio::time::sleep_until(due.into()).await;
        }
    }
}

/// Outcome of a rebuild.
#[derive(Debug, Clone)]
pub struct RebuildReport {
    /// Index the alias pointed at before.
    pub old_index: Option<String>,
    /// Index it points at now.
    pub new_index: String,
    /// Documents in the new index.
    pub documents: usize,
    /// Where the documents came from.
    pub source: RebuildSource,
}

fn fingerprint(pairs: impl Iterator<Item = (String, i64)>) -> (usize, u64) {
    let mut n = 0;
    let mut sum = 0u64;
    for (id, v) in pairs {
        let mut h = DefaultHasher::new();
        (id.as_str(), v).hash(&mut h);
        sum = sum.wrapping_add(h.finish());
        n += 1;
    }
    (n, sum)
}

/// The `_source` fields a fingerprint reads.
#[derive(Debug, Default, serde::Deserialize)]
struct IdVersion {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    version: Option<i64>,
}

/// (count, checksum) of every (id, version) in `index`.
async fn index_fingerprint(search: &SearchClient, index: &str) -> anyhow::Result<(usize, u64)> {
    index::refresh(search, index).await?;
    let mut pairs = Vec::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body =
            json!({"size": 5000, "_source": ["id", "version"], "sort": [{"id": "asc"}], "query": {"match_all": {}}});
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let body = &body;
        let resp = search
            .call(|os| async move { os.search(SearchParts::Index(&[index])).body(body).send().await })
            .await?;
        let answer: SearchAnswer<IdVersion> = decode(resp).await?;
        let hits = answer.hits.hits;
        if hits.is_empty() {
            break;
        }
        after = hits.last().and_then(|h| h.sort.clone());
        pairs.extend(
            hits.into_iter()
                .map(|h| (h.source.id.unwrap_or_default(), h.source.version.unwrap_or(-1))),
        );
    }
    Ok(fingerprint(pairs.into_iter()))
}

async fn postgres_fingerprint(p: &PgPool) -> anyhow::Result<(usize, u64)> {
    let mut conn = pool::get(p).await?;
    let rows = rebuild_repo::product_versions(&mut conn).await?;
    Ok(fingerprint(rows.into_iter().map(|(id, v)| (id.to_string(), v))))
}

fn next_index(names: &Names, current: Option<&str>) -> String {
    let n = current
        .and_then(|c| c.rsplit_once("_v"))
        .and_then(|(_, n)| n.parse::<u32>().ok())
        .unwrap_or(1);
    names.index_version(n + 1)
}

/// Runs a rebuild (see the module docs), reporting progress to `progress`.
pub async fn rebuild(
    d: &RebuildDeps,
    o: &RebuildOptions,
    progress: &dyn RebuildProgress,
) -> anyhow::Result<RebuildReport> {
    let names = d.infra.names();
    let alias = names.index_alias();
    let mut lock_conn = pool::connect(d.infra.database.url.expose(), Duration::from_secs(60)).await?;
    if !rebuild_repo::try_lock(&mut lock_conn).await? {
        bail!(crate::ops::OpsError::Refused(format!(
            "a rebuild is already in progress: {}",
            who_rebuilds(d, &alias).await?
        )));
    }
    let old = index::alias_target(&d.search, &alias).await?;
    let new = next_index(&names, old.as_deref());
    // A leftover from a failed run (never aliased) is replaced.
    let _ = index::delete_index(&d.search, &new).await;
    index::create_index(&d.search, &new, index::IndexLayout::from_settings(&d.infra.opensearch)).await?;

    let topic = names.events_topic();
    let group = format!("{}.rebuild.{new}", names.projection_group());
    let marks = watermarks(d, &topic).await?;
    // After a restore that left events of vanished products on the topic, the topic's history
    // is not the truth any more (ops::post_restore).
    let fenced = {
        let mut c = d.pool.get().await?;
        crate::store::restore_repo::latest(&mut c, &topic)
            .await?
            .is_some_and(|f| f.vanished_count() > 0)
    };
    let source = if o.from_postgres || fenced || marks.iter().any(|(_, lo, _)| *lo > 0) {
        RebuildSource::Postgres
    } else {
        RebuildSource::Topic
    };
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let run_id = {
        let mut c = pool::get(&d.pool).await?;
        rebuild_repo::start(&mut c, &alias, old.as_deref(), &new, source.as_str(), &host).await?
    };
    tracing::info!(run = run_id, alias = %alias, old = ?old, new = %new, source = source.as_str(), "index rebuild started");
    let plan = Plan {
        names,
        alias: &alias,
        old: old.as_deref(),
        new: &new,
        topic: &topic,
        group: &group,
        marks: &marks,
        source,
    };
    let result = build_and_swap(d, o, &plan, progress).await;
    let mut c = pool::get(&d.pool).await?;
    match result {
        Ok(docs) => {
            rebuild_repo::finish(&mut c, run_id, "done", Some(docs as i64)).await?;
            tracing::info!(run = run_id, new = %new, documents = docs, "index rebuild done; alias swapped");
            Ok(RebuildReport {
                old_index: old,
                new_index: new,
                documents: docs,
                source,
            })
        }
        Err(e) => {
            rebuild_repo::finish(&mut c, run_id, "failed", None).await?;
            Err(e)
        }
    }
}

/// Who holds the rebuild lock, for the refusal: the running run's id, index, start and host.
async fn who_rebuilds(d: &RebuildDeps, alias: &str) -> anyhow::Result<String> {
    let mut c = pool::get(&d.pool).await?;
    let running = rebuild_repo::latest(&mut c, alias, "running").await?;
    Ok(running.map_or_else(
        || "another rebuild holds the lock".to_owned(),
        |r| {
            format!(
                "run {} building {} started {} on {}",
                r.id,
                r.new_index,
                r.started_at.format("%Y-%m-%dT%H:%M:%SZ"),
                r.host
            )
        },
    ))
}

/// Per partition of `topic`: (partition, low watermark, high watermark), the snapshot point.
async fn watermarks(d: &RebuildDeps, topic: &str) -> anyhow::Result<Vec<(i32, i64, i64)>> {
    let (b, t) = (d.kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<(i32, i64, i64)>> {
        let c = crate::ops::groups::client(&b, "aliexpress-rebuild")?;
        let parts = crate::ops::groups::partitions(&c, &t)?;
        parts
            .into_iter()
            .map(|p| Ok((p, c.fetch_watermarks(&t, p, crate::ops::groups::CALL_TIMEOUT)?)))
            .map(|r: anyhow::Result<_>| r.map(|(p, (lo, hi))| (p, lo, hi)))
            .collect()
    })
    .await?
}

/// Fills the new index from the plan's source, waits until it matches Postgres, swaps the
/// alias, keeps consuming for the grace period; returns the documents.
async fn build_and_swap(
    d: &RebuildDeps,
    o: &RebuildOptions,
    plan: &Plan<'_>,
    progress: &dyn RebuildProgress,
) -> anyhow::Result<usize> {
    let Plan {
        names,
        alias,
        old,
        new,
        topic,
        group,
        marks,
        source,
    } = plan;
    let (alias, old, new, topic, group, source) = (*alias, *old, *new, *topic, *group, *source);
    let total: i64 = marks.iter().map(|(_, lo, hi)| hi - lo).sum();
    let pace = Pace::new(o.max_rate);
    if source == RebuildSource::Postgres {
        // Start the topic consumer at the snapshot point, then load the current state.
        commit_at(d, group, topic, marks).await?;
        load_from_postgres(d, new, &pace).await?;
    }
    let c = consumer::build(&d.kafka, group)?;
    c.subscribe(&[topic])?;
    let mut projector = ProductEventConsumer::new(
        Arc::new(c),
        d.search.clone(),
        new.to_owned(),
        d.cache.clone(),
        DlqWriter::new(d.producer.clone(), names.events_dlq_topic(), group.to_owned()),
        group.to_owned(),
        ProjectionSettings {
            batch_size: pace.batch(1000),
            batch_wait: Duration::from_millis(50),
            log_each_event: false,
            // Nobody searches the new index before the swap; the check refreshes it itself.
            refresh_every: Duration::ZERO,
            ..Default::default()
        },
    );
    let shutdown = Shutdown::new();
    progress.start(
        new,
        (source == RebuildSource::Topic).then(|| u64::try_from(total).unwrap_or(0)),
    );
    if source == RebuildSource::Topic {
        replay_topic(&mut projector, total, progress, &pace, &shutdown).await?;
    }
    // Caught up with the snapshot: now wait until count and checksum match Postgres.
    let docs = until_matching(d, &mut projector, new, o.verify_timeout, progress, &shutdown).await?;
    progress.finish();
    index::swap_alias(&d.search, alias, old, new)
        .await
        .context("swapping the alias")?;
    eprintln!(
        "alias {alias} now points at {new} ({docs} documents); consuming for a grace period of {:?}",
        o.grace
    );
    let until = Instant::now() + o.grace;
    while Instant::now() < until {
        projector.process_once(Duration::from_millis(300), &shutdown).await?;
    }
    let _ = projector.consumer.commit_consumer_state(CommitMode::Sync);
    Ok(docs)
}

/// Commits `group`'s offsets at the high watermarks of `marks` (the snapshot point).
async fn commit_at(d: &RebuildDeps, group: &str, topic: &str, marks: &[(i32, i64, i64)]) -> anyhow::Result<()> {
    let b = d.kafka.clone();
    let (g, t, m) = (group.to_owned(), topic.to_owned(), marks.to_vec());
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        let c = crate::ops::groups::client(&b, &g)?;
        let mut tpl = TopicPartitionList::new();
        for (p, _, hi) in m {
            tpl.add_partition_offset(&t, p, Offset::Offset(hi))?;
        }
        c.commit(&tpl, CommitMode::Sync)?;
        Ok(())
    })
    .await?
}

/// Projects the topic's `total` events (up to the snapshot) into the new index.
async fn replay_topic(
    projector: &mut ProductEventConsumer,
    total: i64,
    progress: &dyn RebuildProgress,
    pace: &Pace,
    shutdown: &Shutdown,
) -> anyhow::Result<()> {
    let mut seen: i64 = 0;
    while seen < total {
        let out = projector.process_once(Duration::from_secs(10), shutdown).await?;
        if out.received == 0 {
            bail!("stopped receiving events at {seen}/{total}");
        }
        let done = out.received - out.unfinished;
        seen += done as i64;
        progress.advance(done as u64);
        pace.after(seen as u64).await;
    }
    Ok(())
}

/// Keeps projecting until the new index's count and checksum equal Postgres's (within
/// `timeout`); returns the documents.
async fn until_matching(
    d: &RebuildDeps,
    projector: &mut ProductEventConsumer,
    new: &str,
    timeout: Duration,
    progress: &dyn RebuildProgress,
    shutdown: &Shutdown,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let out = projector.process_once(Duration::from_millis(300), shutdown).await?;
        progress.advance(out.received as u64);
        if out.received > 0 {
            continue;
        }
        let (pg, ix) = (
            postgres_fingerprint(&d.pool).await?,
            index_fingerprint(&d.search, new).await?,
        );
        if pg == ix {
            return Ok(ix.0);
        }
        if Instant::now() > deadline {
            bail!(
                "index {new} does not match Postgres after {timeout:?}: {} documents vs {} products (checksums differ: {})",
                ix.0,
                pg.0,
                pg.1 != ix.1
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn load_from_postgres(d: &RebuildDeps, new: &str, pace: &Pace) -> anyhow::Result<()> {
    let mut conn = pool::get(&d.pool).await?;
    let mut cursor: Option<Uuid> = None;
    let (page_size, mut loaded) = (pace.batch(1000), 0u64);
    loop {
        let page = product_repo::list(&mut conn, None, None, None, cursor, page_size as i64).await?;
        if page.is_empty() {
            break;
        }
        let items: Vec<BulkItem> = page
            .iter()
            .map(|p| BulkItem {
                id: p.id,
                version: p.version,
                doc: product_document(p),
            })
            .collect();
        index_items(&d.search, new, &items).await?;
        cursor = page.last().map(|p| p.id);
        loaded += page.len() as u64;
        pace.after(loaded).await;
    }
    Ok(())
}

/// Points the alias back at the index the last finished rebuild replaced.
pub async fn rollback(d: &RebuildDeps) -> anyhow::Result<(String, String)> {
    let alias = d.infra.names().index_alias();
    let mut c = pool::get(&d.pool).await?;
    let Some(run) = rebuild_repo::latest(&mut c, &alias, "done").await? else {
        bail!(crate::ops::OpsError::Refused(format!(
            "no finished rebuild of {alias} to roll back"
        )));
    };
    let Some(old) = run.old_index.clone() else {
        bail!(crate::ops::OpsError::Refused(format!(
            "rebuild {} had no previous index",
            run.id
        )));
    };
    let current = index::alias_target(&d.search, &alias).await?;
    index::swap_alias(&d.search, &alias, current.as_deref(), &old).await?;
    rebuild_repo::finish(&mut c, run.id, "rolled_back", run.documents).await?;
    tracing::info!(alias = %alias, from = ?current, to = %old, "alias rolled back");
    Ok((current.unwrap_or_default(), old))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_capped_pace_waits_until_the_items_are_due_and_an_uncapped_one_never() {
        let capped = Pace::new(Some(100));
        assert_eq!(
            (
                capped.batch(1000),
                Pace::new(Some(5)).batch(1000),
                Pace::new(None).batch(1000)
            ),
            (10, 1, 1000)
        );
        capped.after(20).await;
        assert!(
            capped.start.elapsed() >= Duration::from_millis(200),
            "20 items at 100/s take 200 ms"
        );
        let free = Pace::new(None);
        free.after(1_000_000).await;
        assert!(free.start.elapsed() < Duration::from_secs(1));
    }
}
