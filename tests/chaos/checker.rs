//! The checker: reads every store of one scenario (Postgres products, outbox and commands;
//! the OpenSearch index; the Redis read model; consumer-group offsets and DLQ topics) and counts
//! anomalies against Postgres and against what the workload saw acknowledged. Postgres is the
//! truth: a document or cache entry is compared with the product row field by field.

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

use crate::sut::{pg, Sut, PARTITIONS};

/// What the scenario injected on purpose, so the DLQ can be explained.
#[derive(Debug, Default, Clone, Copy)]
pub struct Expect {
    /// Messages that must end in the commands DLQ.
    pub dlq_commands: i64,
    /// Messages that must end in the events DLQ.
    pub dlq_events: i64,
}

/// Anomalies found in the stores (every count is 0 on a healthy run).
#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// Acknowledged writes (product, version) without that version in Postgres or its outbox
    /// row, and commands recorded as applied without the event they caused.
    pub lost: usize,
    /// Products whose search document is missing or differs from Postgres.
    pub search_diff: usize,
    /// Products whose Redis entry differs from Postgres (a missing entry is a cache miss, fine).
    pub cache_diff: usize,
    /// Documents or cache entries with a version above Postgres's (or for no product).
    pub newer: usize,
    /// Accepted commands without a terminal outcome (pending or unknown).
    pub cmds_stuck: usize,
    /// Duplicate effects: outbox rows for the same (product, version), or several events caused
    /// by one command.
    pub dup_effects: usize,
    /// Outbox rows neither published nor parked.
    pub outbox_stuck: usize,
    /// Sum of the lag of both consumer groups.
    pub lag: i64,
    /// DLQ messages beyond (or short of) the poison the scenario injected.
    pub dlq_unexplained: i64,
    /// Examples and context.
    pub notes: Vec<String>,
}

impl Findings {
    /// Sum of the store columns.
    pub fn anomalies(&self) -> i64 {
        (self.lost
            + self.search_diff
            + self.cache_diff
            + self.newer
            + self.cmds_stuck
            + self.dup_effects
            + self.outbox_stuck) as i64
            + self.lag
            + self.dlq_unexplained
    }

    fn note(&mut self, column: &str, msg: String) {
        let n = self.notes.iter().filter(|m| m.starts_with(column)).count();
        if n < 3 {
            self.notes.push(format!("{column}: {msg}"));
        }
    }
}

/// The fields compared across stores (timestamps are not: each store formats them its own way).
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per compared field, in the table's order"
)]
fn canonical(
    skus: Vec<String>,
    title: &str,
    description: &str,
    category: &str,
    brand: &str,
    attributes: Value,
    price: (Option<i64>, Option<String>),
    stock: i64,
    status: &str,
    version: i64,
) -> Value {
    json!({
        "sku": skus, "title": title, "description": description, "category": category, "brand": brand,
        "attributes": attributes, "price_minor": price.0, "currency": price.1, "stock": stock,
        "status": status, "version": version,
    })
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_default()
}

/// A product's variants (its JSON `variants`) as the search document folds them: every SKU,
/// the first variant's first price, the stock of all.
fn folded(variants: &Value) -> (Vec<String>, (Option<i64>, Option<String>), i64) {
    let vs = variants.as_array().cloned().unwrap_or_default();
    let skus = vs.iter().map(|v| s(v, "sku").to_owned()).collect();
    let price = &vs.first().cloned().unwrap_or(Value::Null)["prices"][0];
    let stock = vs.iter().map(|v| v["stock"].as_i64().unwrap_or(-1)).sum();
    (
        skus,
        (
            price["amount_minor"].as_i64(),
            price["currency"].as_str().map(str::to_owned),
        ),
        stock,
    )
}

/// A cached product (`d` of the Redis hash, the Product JSON) in canonical form.
fn from_cache(d: &Value) -> Value {
    let (skus, price, stock) = folded(&d["variants"]);
    canonical(
        skus,
        s(d, "title"),
        s(d, "description"),
        s(d, "category"),
        s(d, "brand"),
        d["attributes"].clone(),
        price,
        stock,
        s(d, "status"),
        d["version"].as_i64().unwrap_or(-1),
    )
}

/// A search document's `_source` in canonical form.
fn from_doc(d: &Value) -> Value {
    let skus = d["sku"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap_or_default().to_owned()).collect())
        .unwrap_or_default();
    canonical(
        skus,
        s(d, "title"),
        s(d, "description"),
        s(d, "category"),
        s(d, "brand"),
        d["attributes"].clone(),
        (d["price_minor"].as_i64(), d["currency"].as_str().map(str::to_owned)),
        d["stock"].as_i64().unwrap_or(-1),
        s(d, "status"),
        d["version"].as_i64().unwrap_or(-1),
    )
}

fn diff_fields(a: &Value, b: &Value) -> String {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return String::new();
    };
    a.iter()
        .filter(|(k, v)| b.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}: pg {v} vs {}", b.get(k).cloned().unwrap_or(Value::Null)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Products in Postgres, canonical, by id.
async fn products(db: &tokio_postgres::Client) -> Result<HashMap<Uuid, Value>, String> {
    let rows = db
        .query(
            "SELECT id::text, variants::text, title, description, category, brand, attributes::text, status, version \
             FROM products",
            &[],
        )
        .await
        .map_err(|e| format!("read products: {}", crate::sut::pg_error(&e)))?;
    let mut out = HashMap::new();
    for r in rows {
        let id: String = r.get(0);
        let attrs: String = r.get(6);
        let variants: Option<String> = r.get(1);
        let (skus, price, stock) = folded(&serde_json::from_str(&variants.unwrap_or_default()).unwrap_or(Value::Null));
        out.insert(
            Uuid::parse_str(&id).map_err(|e| e.to_string())?,
            canonical(
                skus,
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                serde_json::from_str(&attrs).unwrap_or(Value::Null),
                price,
                stock,
                r.get(7),
                r.get(8),
            ),
        );
    }
    Ok(out)
}

/// A consumer of `group` (it joins nothing) and the offsets the group committed on `topic`.
fn committed_offsets(bootstrap: &str, group: &str, topic: &str) -> Result<(BaseConsumer, TopicPartitionList), String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition(topic, p);
    }
    let committed = c
        .committed_offsets(tpl, Duration::from_secs(10))
        .map_err(|e| format!("committed offsets of {group}: {e}"))?;
    Ok((c, committed))
}

/// Committed offsets and log ends of `group` on `topic`: summed lag.
pub fn lag(bootstrap: &str, group: &str, topic: &str) -> Result<i64, String> {
    let (c, committed) = committed_offsets(bootstrap, group, topic)?;
    let mut total = 0;
    for p in 0..PARTITIONS {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
        let cur = committed
            .find_partition(topic, p)
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o),
                _ => None,
            })
            .unwrap_or(low);
        total += (high - cur).max(0);
    }
    Ok(total)
}

/// Sum of the offsets `group` committed on `topic` (0 for a partition without one): grows as
/// the group's consumer makes progress.
pub fn committed(bootstrap: &str, group: &str, topic: &str) -> Result<i64, String> {
    let (_, committed) = committed_offsets(bootstrap, group, topic)?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(o),
            _ => None,
        })
        .sum())
}

/// Messages in `topic` (log end minus log start, all partitions).
pub fn depth(bootstrap: &str, topic: &str) -> Result<i64, String> {
    let c: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "chaos-checker")
        .create()
        .map_err(|e| e.to_string())?;
    let mut n = 0;
    for p in 0..PARTITIONS {
        let (low, high) = c
            .fetch_watermarks(topic, p, Duration::from_secs(10))
            .map_err(|e| format!("watermarks of {topic}/{p}: {e}"))?;
        n += high - low;
    }
    Ok(n)
}

/// Compares every store; `acked` and `commands` come from the workload (and the scenario).
pub async fn check(
    sut: &Sut,
    acked: &HashMap<Uuid, Vec<i64>>,
    commands: &HashSet<Uuid>,
    expect: Expect,
) -> Result<Findings, String> {
    let mut f = Findings::default();
    let db = pg(&sut.db_url).await?;
    let pg_products = products(&db).await?;
    let (events, causes) = check_outbox(&db, &mut f).await?;
    check_acked(acked, &pg_products, &events, &mut f);
    check_commands(&db, commands, &causes, &mut f).await?;
    check_search(sut, &pg_products, &mut f).await?;
    check_cache(sut, &pg_products, &mut f).await?;
    check_kafka(sut, expect, &mut f).await?;
    Ok(f)
}

/// Events in the outbox per (product, version), and per causing command id.
type OutboxEvents = (HashMap<(Uuid, i64), usize>, HashMap<String, usize>);

/// The outbox: which (product, version) exist, duplicates, unfinished rows.
async fn check_outbox(db: &tokio_postgres::Client, f: &mut Findings) -> Result<OutboxEvents, String> {
    let rows = db
        .query(
            "SELECT aggregate_id::text, aggregate_version, payload->>'causation_id', published_at IS NOT NULL, \
             parked_at IS NOT NULL FROM outbox",
            &[],
        )
        .await
        .map_err(|e| format!("read outbox: {}", crate::sut::pg_error(&e)))?;
    let mut events: HashMap<(Uuid, i64), usize> = HashMap::new();
    let mut causes: HashMap<String, usize> = HashMap::new();
    let mut parked = 0;
    for r in &rows {
        let id = Uuid::parse_str(r.get::<_, &str>(0)).map_err(|e| e.to_string())?;
        // Version 0 rows are commands on their way to product.commands (POST /api/commands
        // queues them in the outbox), not events: they are checked as commands.
        let version: i64 = r.get(1);
        if version > 0 {
            *events.entry((id, version)).or_default() += 1;
            if let Some(c) = r.get::<_, Option<String>>(2) {
                *causes.entry(c).or_default() += 1;
            }
        }
        let (published, is_parked): (bool, bool) = (r.get(3), r.get(4));
        if !published && !is_parked {
            f.outbox_stuck += 1;
        }
        if is_parked && !published {
            parked += 1;
        }
    }
    if parked > 0 {
        f.notes.push(format!("outbox: {parked} parked rows"));
    }
    if f.outbox_stuck > 0 {
        let n = f.outbox_stuck;
        f.note("outbox", format!("{n} rows neither published nor parked"));
    }
    for ((id, v), n) in &events {
        if *n > 1 {
            f.dup_effects += n - 1;
            f.note("dup", format!("{n} outbox rows for product {id} version {v}"));
        }
    }
    for (c, n) in &causes {
        if *n > 1 {
            f.dup_effects += n - 1;
            f.note("dup", format!("command {c} caused {n} events"));
        }
    }
    Ok((events, causes))
}

/// Every acknowledged write is in Postgres and the outbox.
fn check_acked(
    acked: &HashMap<Uuid, Vec<i64>>,
    pg_products: &HashMap<Uuid, Value>,
    events: &HashMap<(Uuid, i64), usize>,
    f: &mut Findings,
) {
    for (id, versions) in acked {
        let current = pg_products.get(id).and_then(|p| p["version"].as_i64()).unwrap_or(0);
        for v in versions {
            if current < *v || !events.contains_key(&(*id, *v)) {
                f.lost += 1;
                f.note(
                    "lost",
                    format!(
                        "product {id} version {v} acknowledged; postgres at {current}, outbox row {}",
                        events.contains_key(&(*id, *v))
                    ),
                );
            }
        }
    }
}

/// Every command ended applied (with exactly one event) or rejected.
async fn check_commands(
    db: &tokio_postgres::Client,
    commands: &HashSet<Uuid>,
    causes: &HashMap<String, usize>,
    f: &mut Findings,
) -> Result<(), String> {
    let ids: Vec<String> = commands.iter().map(Uuid::to_string).collect();
    let rows = db
        .query(
            "SELECT command_id::text, status FROM commands WHERE command_id::text = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(|e| format!("read commands: {}", crate::sut::pg_error(&e)))?;
    let status: HashMap<String, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for id in &ids {
        match status.get(id).map(String::as_str) {
            // An applied command must have caused exactly one event; none means its effect is
            // gone (counted with the lost writes), more is a duplicate effect (counted above).
            Some("applied") => {
                if !causes.contains_key(id) {
                    f.lost += 1;
                    f.note(
                        "lost",
                        format!("command {id} applied but no outbox row was caused by it"),
                    );
                }
            }
            Some("rejected") => {}
            other => {
                f.cmds_stuck += 1;
                f.note("commands", format!("{id} is {}", other.unwrap_or("unknown")));
            }
        }
    }
    Ok(())
}

/// OpenSearch holds every product as Postgres has it.
async fn check_search(sut: &Sut, pg_products: &HashMap<Uuid, Value>, f: &mut Findings) -> Result<(), String> {
    let http = reqwest::Client::new();
    let alias = sut.names.index_alias();
    let os = &sut.stack.opensearch_url;
    let _ = http
        .post(format!("{os}/{alias}/_refresh"))
        .timeout(Duration::from_secs(30))
        .send()
        .await;
    let resp = http
        .post(format!("{os}/{alias}/_search"))
        .json(&json!({"size": 10000, "query": {"match_all": {}}}))
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map_err(|e| format!("search {alias}: {e}"))?;
    let docs: HashMap<Uuid, Value> = if resp.status().as_u16() == 404 {
        HashMap::new()
    } else {
        let v: Value = resp.json().await.map_err(|e| format!("search {alias}: {e}"))?;
        v["hits"]["hits"]
            .as_array()
            .ok_or_else(|| format!("search {alias}: unexpected answer {v}"))?
            .iter()
            .filter_map(|h| Some((Uuid::parse_str(h["_id"].as_str()?).ok()?, h["_source"].clone())))
            .collect()
    };
    for (id, p) in pg_products {
        let pv = p["version"].as_i64().unwrap_or(0);
        match docs.get(id).map(from_doc) {
            None => {
                f.search_diff += 1;
                f.note("search", format!("{id} (v{pv}) has no document"));
            }
            Some(d) if d != *p => {
                f.search_diff += 1;
                if d["version"].as_i64().unwrap_or(0) > pv {
                    f.newer += 1;
                }
                f.note("search", format!("{id}: {}", diff_fields(p, &d)));
            }
            Some(_) => {}
        }
    }
    for id in docs.keys().filter(|id| !pg_products.contains_key(id)) {
        f.newer += 1;
        f.note("newer", format!("document {id} has no product in postgres"));
    }
    Ok(())
}

/// Redis holds no product other than Postgres has it (misses are allowed).
async fn check_cache(sut: &Sut, pg_products: &HashMap<Uuid, Value>, f: &mut Findings) -> Result<(), String> {
    let client = redis::Client::open(sut.stack.redis_url.as_str()).map_err(|e| e.to_string())?;
    let mut conn = tokio::time::timeout(Duration::from_secs(10), client.get_multiplexed_async_connection())
        .await
        .map_err(|_| "redis: connect timed out".to_string())?
        .map_err(|e| format!("redis: {e}"))?;
    let ids: Vec<Uuid> = pg_products.keys().copied().collect();
    let mut cached: Vec<(Option<i64>, Option<String>)> = Vec::new();
    for chunk in ids.chunks(500) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("HMGET").arg(sut.names.product_cache_key(id)).arg("v").arg("d");
        }
        let part: Vec<(Option<i64>, Option<String>)> =
            tokio::time::timeout(Duration::from_secs(10), pipe.query_async(&mut conn))
                .await
                .map_err(|_| "redis: read timed out".to_string())?
                .map_err(|e| format!("redis: {e}"))?;
        cached.extend(part);
    }
    let mut misses = 0;
    for (id, (v, d)) in ids.iter().zip(cached) {
        let p = &pg_products[id];
        let pv = p["version"].as_i64().unwrap_or(0);
        let Some(d) = d else {
            misses += 1;
            continue;
        };
        let c = serde_json::from_str::<Value>(&d)
            .map(|d| from_cache(&d))
            .unwrap_or(Value::Null);
        if c != *p || v != Some(pv) {
            f.cache_diff += 1;
            if v.unwrap_or(0) > pv {
                f.newer += 1;
            }
            f.note("cache", format!("{id}: v {v:?} vs pg {pv}; {}", diff_fields(p, &c)));
        }
    }
    if misses > 0 {
        f.notes.push(format!(
            "cache: {misses} of {} products not cached (misses are allowed)",
            ids.len()
        ));
    }
    Ok(())
}

/// Kafka: lag of both groups, and DLQ depth against what the scenario expects.
async fn check_kafka(sut: &Sut, expect: Expect, f: &mut Findings) -> Result<(), String> {
    let bootstrap = sut.stack.kafka.clone();
    let names = sut.names.clone();
    let kafka = tokio::task::spawn_blocking(move || -> Result<(i64, i64, i64, i64), String> {
        Ok((
            lag(&bootstrap, &names.command_group(), &names.commands_topic())?,
            lag(&bootstrap, &names.projection_group(), &names.events_topic())?,
            depth(&bootstrap, &names.commands_dlq_topic())?,
            depth(&bootstrap, &names.events_dlq_topic())?,
        ))
    })
    .await
    .map_err(|e| e.to_string())??;
    let (cmd_lag, ev_lag, dlq_c, dlq_e) = kafka;
    f.lag = cmd_lag + ev_lag;
    if f.lag > 0 {
        f.note("lag", format!("commands group {cmd_lag}, projection group {ev_lag}"));
    }
    f.dlq_unexplained = (dlq_c - expect.dlq_commands).abs() + (dlq_e - expect.dlq_events).abs();
    if f.dlq_unexplained > 0 {
        f.note(
            "dlq",
            format!(
                "commands DLQ {dlq_c} (expected {}), events DLQ {dlq_e} (expected {})",
                expect.dlq_commands, expect.dlq_events
            ),
        );
    }
    Ok(())
}
