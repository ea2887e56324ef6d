//! `aliexpress reconcile`: are search and the cache still equal to Postgres?
//!
//! For a sample of products (or all of them) it compares each store's entry with the product
//! in Postgres: absent, older (`stale`), newer than Postgres (`newer`), or at the same version
//! but with other content (`mismatched`: the document OpenSearch holds is not the one the
//! projection makes of the row, or the Redis entry is not the row). With `--all` it also looks
//! for documents of products Postgres does not have (`extra`).
//!
//! A product missing from Redis is counted (`absent`) but is no drift: Redis is a cache whose
//! entries expire (`REDIS_CACHE_TTL_SECS`) and are filled again on read.
//!
//! `--repair` sends each drifted product again as a snapshot event through the outbox
//! (`store::snapshot_repo`): the projection rewrites its document and cache entry like any
//! event, in the product's order, and its version guards keep the snapshot from overwriting
//! anything newer. Each repair is recorded in `reconcile_repairs`. The index versions documents
//! externally (`external_gte` at the product's version), so a snapshot repairs what was lost or
//! left behind on that version line (a lost write, a restored or partly rebuilt index, a deleted
//! document once its tombstone is past `index.gc_deletes`); a document some other writer
//! indexed with OpenSearch's own versioning stays drifted after the repair, and a second run
//! says so: rebuild the index then (`replay --rebuild`).

use serde::Serialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use uuid::Uuid;

use super::OpsError;
use crate::cache::ProductCache;
use crate::config::Names;
use crate::domain::product::Product;
use crate::search::document::product_document;
use crate::search::SearchClient;
use crate::store::{pool, product_repo, snapshot_repo, PgPool};

/// Products per OpenSearch `_mget`, and per page of the full walk.
const CHUNK: usize = 500;

/// The clients reconcile reads with.
pub struct ReconcileDeps {
    /// Postgres.
    pub pool: PgPool,
    /// Redis.
    pub cache: ProductCache,
    /// OpenSearch.
    pub search: SearchClient,
    /// Topic, index and key names.
    pub names: Names,
}

/// Which products to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A random sample of this many.
    Sample(i64),
    /// Every product, and documents of products that do not exist.
    All,
}

/// One store's entry that differs from Postgres.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// `opensearch` or `redis`.
    pub store: &'static str,
    /// `missing`, `stale`, `newer`, `mismatched` or `extra`.
    pub kind: &'static str,
    /// The product.
    pub product_id: Uuid,
    /// Its version in Postgres (none for `extra`).
    pub postgres_version: Option<i64>,
    /// Its version in the store (none when absent).
    pub store_version: Option<i64>,
}

/// What a run found (and repaired).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Products compared.
    pub compared: usize,
    /// Products not in Redis (not drift: the cache expires entries).
    pub absent_from_cache: usize,
    /// Every drift.
    pub drift: Vec<Drift>,
    /// Counts by store and kind.
    pub counts: BTreeMap<String, usize>,
    /// Products sent again as snapshots (with `--repair`).
    pub repaired: Vec<Uuid>,
}

impl Report {
    /// The products to repair: those with a drift other than `extra` (no product to send).
    pub fn to_repair(&self) -> Vec<Uuid> {
        let mut seen = HashSet::new();
        self.drift
            .iter()
            .filter(|d| d.kind != "extra" && seen.insert(d.product_id))
            .map(|d| d.product_id)
            .collect()
    }

    /// Keeps only the drift `later` (a second look at the same products) still sees, of the
    /// same store and kind: what was in flight the first time is not drift.
    pub fn confirm(&mut self, later: &Report) {
        self.drift.retain(|d| {
            later
                .drift
                .iter()
                .any(|l| l.product_id == d.product_id && l.store == d.store && l.kind == d.kind)
        });
        self.count();
    }

    fn count(&mut self) {
        self.counts.clear();
        for d in &self.drift {
            *self.counts.entry(format!("{}/{}", d.store, d.kind)).or_default() += 1;
        }
    }
}

/// How a store's entry stands against the product: `None` when equal.
pub fn compare(p: &Product, store_version: Option<i64>, same_content: bool) -> Option<&'static str> {
    match store_version {
        None => Some("missing"),
        Some(v) if v < p.version => Some("stale"),
        Some(v) if v > p.version => Some("newer"),
        Some(_) if !same_content => Some("mismatched"),
        Some(_) => None,
    }
}

/// The documents OpenSearch holds for `ids` (absent ones left out).
async fn documents(d: &ReconcileDeps, ids: &[Uuid]) -> Result<HashMap<Uuid, Value>, OpsError> {
    indexed_documents(&d.search, &d.names.index_alias(), ids).await
}

/// The documents `alias` holds for `ids` (absent ones left out), by id.
pub async fn indexed_documents(
    search: &SearchClient,
    alias: &str,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Value>, OpsError> {
    let body = json!({ "ids": ids });
    let resp = search
        .call(|os| {
            let body = body.clone();
            async move { os.mget(opensearch::MgetParts::Index(alias)).body(body).send().await }
        })
        .await
        .map_err(|e| OpsError::Other(format!("opensearch: {e}")))?;
    // No index yet: no documents.
    if resp.status_code().as_u16() == 404 {
        return Ok(HashMap::new());
    }
    let v: Value = crate::search::client::decode(resp)
        .await
        .map_err(|e| OpsError::Other(format!("opensearch: {e}")))?;
    Ok(v["docs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|doc| doc["found"] == json!(true))
        .filter_map(|doc| Some((doc["_id"].as_str()?.parse().ok()?, doc["_source"].clone())))
        .collect())
}

/// Timestamps are left out of the content compared: Postgres keeps microseconds, the event's
/// state (what the projection wrote) the clock's full precision; at one version they name the
/// same instant.
const TIMESTAMPS: [&str; 2] = ["created_at", "updated_at"];

/// Whether the document `doc` is the one the projection makes of `p` (timestamps aside).
pub fn same_document(doc: &Value, p: &Product) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            for t in TIMESTAMPS {
                o.remove(t);
            }
        }
        v
    };
    strip(doc) == strip(&product_document(p))
}

/// Whether the cached `json` is product `p` (timestamps aside).
fn same_entry(json: &str, p: &Product) -> bool {
    serde_json::from_str::<Product>(json).is_ok_and(|mut q| {
        q.created_at = p.created_at;
        q.updated_at = p.updated_at;
        q == *p
    })
}

/// Compares `products` with OpenSearch and Redis, adding to `r`.
async fn compare_chunk(d: &ReconcileDeps, products: &[Product], r: &mut Report) -> Result<(), OpsError> {
    let ids: Vec<Uuid> = products.iter().map(|p| p.id).collect();
    let docs = documents(d, &ids).await?;
    for p in products {
        r.compared += 1;
        let doc = docs.get(&p.id);
        let version = doc.and_then(|d| d["version"].as_i64());
        let same = doc.is_some_and(|d| same_document(d, p));
        if let Some(kind) = compare(p, version, same) {
            r.drift.push(Drift {
                store: "opensearch",
                kind,
                product_id: p.id,
                postgres_version: Some(p.version),
                store_version: version,
            });
        }
        let cached = d
            .cache
            .get_document(p.id)
            .await
            .map_err(|e| OpsError::Other(format!("redis: {e}")))?;
        let Some(c) = cached else {
            r.absent_from_cache += 1;
            continue;
        };
        let same = same_entry(&c.json, p);
        if let Some(kind) = compare(p, Some(c.version), same) {
            r.drift.push(Drift {
                store: "redis",
                kind,
                product_id: p.id,
                postgres_version: Some(p.version),
                store_version: Some(c.version),
            });
        }
    }
    Ok(())
}

/// Ids of a random sample of `n` products.
async fn sample_ids(d: &ReconcileDeps, n: i64) -> Result<Vec<Uuid>, OpsError> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::Uuid)]
        id: Uuid,
    }
    let mut conn = pool::get(&d.pool).await?;
    let rows: Vec<Row> = diesel_async::RunQueryDsl::load(
        diesel::sql_query("SELECT id FROM products ORDER BY random() LIMIT $1").bind::<diesel::sql_types::BigInt, _>(n),
        &mut conn,
    )
    .await
    .map_err(crate::store::StoreError::from)?;
    Ok(rows.into_iter().map(|r| r.id).collect())
}

/// Ids of the documents in the index, in id order, a page at a time.
async fn indexed_ids(d: &ReconcileDeps) -> Result<Vec<Uuid>, OpsError> {
    let alias = d.names.index_alias();
    let alias = alias.as_str();
    let mut out = Vec::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body =
            json!({ "size": CHUNK, "_source": false, "sort": [{ "id": "asc" }], "query": { "match_all": {} } });
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let resp = d
            .search
            .call(|os| {
                let body = body.clone();
                async move {
                    os.search(opensearch::SearchParts::Index(&[alias]))
                        .body(body)
                        .send()
                        .await
                }
            })
            .await
            .map_err(|e| OpsError::Other(format!("opensearch: {e}")))?;
        let v: Value = crate::search::client::decode(resp)
            .await
            .map_err(|e| OpsError::Other(format!("opensearch: {e}")))?;
        let hits = v["hits"]["hits"].as_array().cloned().unwrap_or_default();
        out.extend(hits.iter().filter_map(|h| h["_id"].as_str()?.parse::<Uuid>().ok()));
        match hits.last() {
            Some(last) if hits.len() == CHUNK => after = Some(last["sort"].clone()),
            _ => return Ok(out),
        }
    }
}

/// Compares the products `scope` names with OpenSearch and Redis.
pub async fn check(
    d: &ReconcileDeps,
    scope: Scope,
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Report, OpsError> {
    let mut r = Report::default();
    match scope {
        Scope::Sample(n) => {
            let ids = sample_ids(d, n).await?;
            return check_ids(d, &ids, progress).await;
        }
        Scope::All => {
            let mut conn = pool::get(&d.pool).await?;
            let mut cursor = None;
            let mut known = HashSet::new();
            loop {
                let page = product_repo::list(&mut conn, None, None, None, cursor, CHUNK as i64).await?;
                known.extend(page.iter().map(|p| p.id));
                compare_chunk(d, &page, &mut r).await?;
                progress(r.compared);
                match page.last() {
                    Some(last) if page.len() == CHUNK => cursor = Some(last.id),
                    _ => break,
                }
            }
            for id in indexed_ids(d).await?.into_iter().filter(|id| !known.contains(id)) {
                r.drift.push(Drift {
                    store: "opensearch",
                    kind: "extra",
                    product_id: id,
                    postgres_version: None,
                    store_version: None,
                });
            }
        }
    }
    r.count();
    Ok(r)
}

/// Compares the products `ids` (those that exist) with OpenSearch and Redis.
pub async fn check_ids(
    d: &ReconcileDeps,
    ids: &[Uuid],
    progress: &mut (dyn FnMut(usize) + Send),
) -> Result<Report, OpsError> {
    let mut r = Report::default();
    let mut conn = pool::get(&d.pool).await?;
    for chunk in ids.chunks(CHUNK) {
        let products: Vec<_> = product_repo::find_many(&mut conn, chunk)
            .await?
            .into_iter()
            .flatten()
            .collect();
        compare_chunk(d, &products, &mut r).await?;
        progress(r.compared);
    }
    r.count();
    Ok(r)
}

/// Sends every drifted product of `r` again as a snapshot event (audited as `actor`).
pub async fn repair(d: &ReconcileDeps, r: &mut Report, actor: &str) -> Result<(), OpsError> {
    let mut conn = pool::get(&d.pool).await?;
    let topic = d.names.events_topic();
    for id in r.to_repair() {
        let kinds: Vec<String> = r
            .drift
            .iter()
            .filter(|x| x.product_id == id)
            .map(|x| format!("{} {}", x.store, x.kind))
            .collect();
        if snapshot_repo::emit(&mut conn, id, &topic, &kinds.join(", "), actor)
            .await?
            .is_some()
        {
            r.repaired.push(id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::product::{execute, CreateProduct, ProductCommand};

    #[test]
    fn an_entry_is_missing_stale_newer_mismatched_or_equal() {
        let (p, _) = execute(
            None,
            Uuid::nil(),
            &ProductCommand::CreateProduct(CreateProduct::simple("A-1", "Lamp", None, 1)),
            chrono::Utc::now(),
        )
        .expect("created");
        assert_eq!(compare(&p, None, false), Some("missing"));
        assert_eq!(compare(&p, Some(0), true), Some("stale"));
        assert_eq!(compare(&p, Some(2), true), Some("newer"));
        assert_eq!(compare(&p, Some(1), false), Some("mismatched"));
        assert_eq!(compare(&p, Some(1), true), None);
    }

    #[test]
    fn each_drifted_product_is_repaired_once_and_extras_never() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let drift = |store, kind, id| Drift {
            store,
            kind,
            product_id: id,
            postgres_version: Some(1),
            store_version: None,
        };
        let mut r = Report {
            drift: vec![
                drift("opensearch", "missing", a),
                drift("redis", "stale", a),
                drift("opensearch", "extra", b),
            ],
            ..Default::default()
        };
        r.count();
        assert_eq!(r.to_repair(), vec![a]);
        assert_eq!(r.counts.get("opensearch/extra"), Some(&1));
    }
}
