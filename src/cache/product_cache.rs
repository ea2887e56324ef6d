//! Versioned product cache. Each product is a hash `{v: version, d: json}` under
//! `<namespace>product:<id>` with a TTL. Writes go through a Lua script that applies the new
//! state only when its version is >= the cached one (`>=`, so a replay rewrites the same
//! version after a projection fix), making duplicates and out-of-order delivery harmless.
//!
//! Built with [`ProductCache::for_requests`] (the API), every call is bounded by a short
//! timeout that covers pool checkout and connection creation, and passes a circuit breaker.
//! A write-through that fails leaves the product's id and version in a bounded in-process
//! set of missed writes: until a later write-through or read-through refreshes the entry, a
//! cached copy older than that version is not served (the read goes to Postgres), so a Redis
//! that comes back having missed writes never answers stale reads from this process. Other
//! processes rely on the projection, which rewrites every version it consumes.
//!
//! On the request path, when the endpoint has one, a near cache (`cache::near`) in front of
//! Redis answers repeated reads of a product without a round trip; Redis's invalidations on the
//! tracked read connection keep it right, and this process's writes empty their keys.

use deadpool::managed::Timeouts;
use deadpool::Runtime;

use super::near::{Invalidations, NearCache};
use super::redis_pool::{RedisConn, RedisEndpoint, RedisManager, RedisPool, SharedConnection};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

use super::breaker::CircuitBreaker;
use super::CacheError;
pub use crate::config::redis::RequestBounds;
use crate::domain::product::{Product, ProductStatus};
use crate::names::Names;
use crate::telemetry::metrics;

/// A cached product document: the JSON as written, and the fields a reader decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedDocument {
    /// Aggregate version of the document.
    pub version: i64,
    /// Lifecycle status (who may see it).
    pub status: ProductStatus,
    /// The owning seller (who may see it unpublished).
    pub owner: String,
    /// The product's JSON, exactly as the writer serialized it.
    pub json: String,
}

impl CachedDocument {
    /// Reads the id, version and status of `json` (other fields are skipped, not parsed);
    /// a document that lacks them or names another product is corrupt.
    fn read(id: Uuid, json: String) -> Result<Self, CacheError> {
        #[derive(serde::Deserialize)]
        struct Head {
            id: Uuid,
            version: i64,
            status: ProductStatus,
            #[serde(default = "default_owner")]
            owner: String,
        }
        fn default_owner() -> String {
            crate::domain::product::DEFAULT_OWNER.to_owned()
        }
        let head: Head = serde_json::from_str(&json).map_err(|e| CacheError::Corrupt(e.to_string()))?;
        if head.id != id {
            return Err(CacheError::Corrupt(format!("entry of {id} holds product {}", head.id)));
        }
        Ok(Self {
            version: head.version,
            status: head.status,
            owner: head.owner,
            json,
        })
    }
}

/// Bound of Redis calls made by workers and tools ([`ProductCache::new`]).
const BACKGROUND_TIMEOUT: Duration = Duration::from_secs(3);
/// Most products remembered as missed writes; beyond it the projection alone repairs.
const MAX_MISSED_WRITES: usize = 100_000;

/// Breaker and missed writes, shared by every clone of a request-path cache.
struct RequestGuard {
    breaker: CircuitBreaker,
    missed: Mutex<HashMap<Uuid, i64>>,
}

impl RequestGuard {
    fn missed(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, i64>> {
        // Entries are plain inserts and removals; a panic elsewhere cannot corrupt them.
        self.missed.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn note_missed(&self, id: Uuid, version: i64) {
        let mut m = self.missed();
        if m.len() >= MAX_MISSED_WRITES && !m.contains_key(&id) {
            tracing::warn!(product.id = %id, "too many missed cache writes remembered; the projection will repair this one");
            return;
        }
        let v = m.entry(id).or_insert(version);
        *v = (*v).max(version);
        metrics::CACHE_MISSED_WRITES.set(m.len() as i64);
    }

    /// True when a write of a version newer than `cached` missed the cache.
    fn is_stale(&self, id: Uuid, cached: i64) -> bool {
        self.missed().get(&id).is_some_and(|&v| v > cached)
    }

    /// Redis now holds `version` (or newer) for `id`.
    fn refreshed(&self, id: Uuid, version: i64) {
        let mut m = self.missed();
        if m.get(&id).is_some_and(|&v| v <= version) {
            m.remove(&id);
            metrics::CACHE_MISSED_WRITES.set(m.len() as i64);
        }
    }
}

/// Writes `{v, d}` when ARGV[1] >= the cached `v`; when called by the projection (ARGV[4] =
/// "1") it also records the highest projected version in `pv`, so version gaps in the event
/// stream can be told apart from API write-through. Returns {applied, previous v, previous pv}.
const PUT_IF_NEWER: &str = r"
local cur = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
local pv = tonumber(redis.call('HGET', KEYS[1], 'pv') or '0')
local v = tonumber(ARGV[1])
if ARGV[4] == '1' and v > pv then redis.call('HSET', KEYS[1], 'pv', ARGV[1]) end
if cur > v then return {0, cur, pv} end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {1, cur, pv}
";

static PUT_SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(PUT_IF_NEWER));

/// A worker's read connection: tracked, feeding `near`, when there is one.
fn reads_on(manager: &RedisManager, near: Option<&Arc<NearCache<CachedDocument>>>) -> SharedConnection {
    match near {
        Some(near) => SharedConnection::tracked(manager.clone(), near.clone() as Arc<dyn Invalidations>),
        None => SharedConnection::new(manager.clone()),
    }
}

static NEAR_HITS: std::sync::LazyLock<prometheus::IntCounter> =
    std::sync::LazyLock::new(|| metrics::CACHE_NEAR_READS.with_label_values(&["hit"]));
static NEAR_MISSES: std::sync::LazyLock<prometheus::IntCounter> =
    std::sync::LazyLock::new(|| metrics::CACHE_NEAR_READS.with_label_values(&["miss"]));

/// Who writes: the projection records the versions it saw, the API's write-through does not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    /// `run-product-event-consumer`.
    Projection,
    /// The API after a committed write.
    WriteThrough,
}

/// Result of a versioned write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    /// The state was written (its version >= the cached one).
    pub applied: bool,
    /// Version cached before (0 when none).
    pub cached: i64,
    /// Highest version the projection had seen before (0 when none).
    pub projected: i64,
}

/// A pool of `manager`'s connections (opened lazily, on the runtime that first uses them),
/// exported as `aliexpress_pool_*{pool="redis"}` while it lives.
fn pool_of(manager: RedisManager, max_size: usize, timeouts: Timeouts) -> Result<RedisPool, CacheError> {
    let pool = RedisPool::builder(manager)
        .max_size(max_size)
        .timeouts(timeouts)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| CacheError::Pool(e.to_string()))?;
    crate::telemetry::pools::watch(crate::telemetry::pools::REDIS, &pool);
    Ok(pool)
}

/// The product read model in Redis.
#[derive(Clone)]
pub struct ProductCache {
    pool: RedisPool,
    /// Reads share one multiplexed connection (pipelined); writes and scripts use the pool.
    reads: Arc<SharedConnection>,
    /// The request path's copies of recently read products (shared by every worker's clone).
    near: Option<Arc<NearCache<CachedDocument>>>,
    names: Names,
    ttl: Duration,
    timeout: Duration,
    guard: Option<Arc<RequestGuard>>,
}

impl ProductCache {
    /// A cache for workers and tools on `url`: calls bounded by 3 s, no breaker. Connects
    /// lazily.
    pub fn new(endpoint: impl Into<RedisEndpoint>, names: Names, ttl: Duration) -> Result<Self, CacheError> {
        Self::build(
            &endpoint.into(),
            names,
            ttl,
            BACKGROUND_TIMEOUT,
            Duration::from_secs(2),
            None,
        )
    }

    /// A cache for the request path: every call bounded by `bounds.timeout` and guarded by a
    /// circuit breaker, failed write-throughs remembered (see the module docs).
    pub fn for_requests(
        endpoint: impl Into<RedisEndpoint>,
        names: Names,
        ttl: Duration,
        bounds: RequestBounds,
    ) -> Result<Self, CacheError> {
        let guard = RequestGuard {
            breaker: CircuitBreaker::new("redis", bounds.breaker),
            missed: Mutex::new(HashMap::new()),
        };
        Self::build(
            &endpoint.into(),
            names,
            ttl,
            bounds.timeout,
            bounds.timeout,
            Some(Arc::new(guard)),
        )
    }

    fn build(
        endpoint: &RedisEndpoint,
        names: Names,
        ttl: Duration,
        timeout: Duration,
        pool_timeout: Duration,
        guard: Option<Arc<RequestGuard>>,
    ) -> Result<Self, CacheError> {
        let bound = Some(pool_timeout);
        let timeouts = Timeouts {
            wait: bound,
            create: bound,
            recycle: bound,
        };
        let manager = RedisManager::new(endpoint)?;
        let near = guard
            .as_ref()
            .and(endpoint.near_cache())
            .map(|settings| Arc::new(NearCache::new(settings)));
        Ok(Self {
            reads: Arc::new(reads_on(&manager, near.as_ref())),
            near,
            pool: pool_of(manager, 16, timeouts)?,
            names,
            ttl,
            timeout,
            guard,
        })
    }

    /// The same cache (endpoint, names, bounds, breaker, missed writes) with a pool of its own,
    /// whose connections open where they are first used (one per HTTP worker in `serve`).
    pub fn with_own_pool(&self) -> Result<Self, CacheError> {
        Ok(Self {
            reads: Arc::new(reads_on(self.pool.manager(), self.near.as_ref())),
            near: self.near.clone(),
            pool: pool_of(
                self.pool.manager().clone(),
                self.pool.status().max_size,
                self.pool.timeouts(),
            )?,
            names: self.names.clone(),
            ttl: self.ttl,
            timeout: self.timeout,
            guard: self.guard.clone(),
        })
    }

    /// Products held by the near cache; `None` when it is off (not asked for, or the server
    /// refused client tracking).
    pub fn near_entries(&self) -> Option<usize> {
        self.near.as_ref().filter(|_| self.reads.is_tracked()).map(|n| n.len())
    }

    /// Drops `products` from the near cache, so this process next reads them from Redis.
    fn forget_near(&self, products: &[&Product]) {
        if let Some(near) = &self.near {
            for p in products {
                near.invalidate(self.names.product_cache_key(&p.id).as_bytes());
            }
        }
    }

    async fn conn(&self) -> Result<RedisConn, CacheError> {
        self.pool.get().await.map_err(|e| CacheError::Pool(e.to_string()))
    }

    /// Runs `fut` within the timeout and, on the request path, through the breaker.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        fut: impl Future<Output = Result<T, CacheError>>,
    ) -> Result<T, CacheError> {
        let Some(guard) = &self.guard else {
            return tokio::time::timeout(self.timeout, fut)
                .await
                .map_err(|_| CacheError::Timeout)?;
        };
        let Some(permit) = guard.breaker.try_acquire() else {
            metrics::CACHE_REQUEST_FAILURES
                .with_label_values(&[operation, CacheError::CircuitOpen.kind()])
                .inc();
            return Err(CacheError::CircuitOpen);
        };
        let r = tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| CacheError::Timeout)
            .and_then(|r| r);
        match &r {
            Err(e) if e.is_availability() => {
                metrics::CACHE_REQUEST_FAILURES
                    .with_label_values(&[operation, e.kind()])
                    .inc();
                permit.failed();
            }
            _ => permit.succeeded(),
        }
        r
    }

    /// State of the request-path breaker (`None` for a worker's cache).
    pub fn breaker_state(&self) -> Option<super::breaker::BreakerState> {
        self.guard.as_ref().map(|g| g.breaker.state())
    }

    /// PING, bounded by `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), CacheError> {
        tokio::time::timeout(timeout, async {
            let mut c = self.conn().await?;
            let _: String = redis::cmd("PING").query_async(&mut *c).await?;
            Ok(())
        })
        .await
        .map_err(|_| CacheError::Timeout)?
    }

    /// Reads a cached product. On the request path a copy older than a write that missed
    /// the cache reads as absent.
    pub async fn get(&self, id: Uuid) -> Result<Option<Product>, CacheError> {
        self.get_document(id)
            .await?
            .map(|d| serde_json::from_str(&d.json).map_err(|e| CacheError::Corrupt(e.to_string())))
            .transpose()
    }

    /// The cached product as stored (the JSON the writer serialized), with its id, version
    /// and status read from it; the rest of the document is not parsed. The API serves these
    /// bytes as they are.
    pub async fn get_document(&self, id: Uuid) -> Result<Option<CachedDocument>, CacheError> {
        let cached = self.get_raw(id).await?;
        if let (Some(d), Some(g)) = (&cached, &self.guard) {
            if g.is_stale(id, d.version) {
                return Ok(None);
            }
            g.refreshed(id, d.version);
        }
        Ok(cached)
    }

    async fn get_raw(&self, id: Uuid) -> Result<Option<CachedDocument>, CacheError> {
        let key = self.names.product_cache_key(&id);
        let near = self.near.as_ref().filter(|_| self.reads.is_tracked());
        if let Some(near) = near {
            if let Some(d) = near.get(key.as_bytes()) {
                NEAR_HITS.inc();
                return Ok(Some(d));
            }
            NEAR_MISSES.inc();
        }
        self.bounded("get", async {
            let Some(near) = near else {
                let doc: Option<String> = self.reads.query(redis::cmd("HGET").arg(&key).arg("d")).await?;
                return doc.map(|json| CachedDocument::read(id, json)).transpose();
            };
            // The ticket is taken before the read is sent (and after the connection is open,
            // which empties the near cache): an invalidation meanwhile refuses the read.
            self.reads.ready().await?;
            let ticket = near.ticket();
            let mut pipe = redis::pipe();
            pipe.cmd("HGET").arg(&key).arg("d").cmd("PTTL").arg(&key);
            let (doc, pttl): (Option<String>, i64) = self.reads.query_pipeline(&pipe).await?;
            let doc = doc.map(|json| CachedDocument::read(id, json)).transpose()?;
            if let Some(d) = &doc {
                // PTTL is -1 for a key without expiry: the near cache's own bound applies.
                let ttl = u64::try_from(pttl).ok().map(Duration::from_millis);
                near.insert(key.as_bytes(), d.clone(), ttl, ticket);
                metrics::CACHE_NEAR_ENTRIES.set(near.len() as i64);
            }
            Ok(doc)
        })
        .await
    }

    /// Writes `products` if newer-or-equal, in one round trip; outcomes in input order.
    pub async fn put_many(&self, products: &[&Product], writer: Writer) -> Result<Vec<PutOutcome>, CacheError> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let written = self
            .bounded("put", async {
                let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
                // The script body travels once per round trip (SCRIPT LOAD), then EVALSHA per product.
                let mut pipe = redis::pipe();
                pipe.load_script(&PUT_SCRIPT).ignore();
                for p in products {
                    let doc = serde_json::to_string(p).map_err(|e| CacheError::Corrupt(e.to_string()))?;
                    let mut inv = PUT_SCRIPT.key(self.names.product_cache_key(&p.id));
                    inv.arg(p.version)
                        .arg(doc)
                        .arg(ttl_ms)
                        .arg(if writer == Writer::Projection { "1" } else { "0" });
                    pipe.invoke_script(&inv);
                }
                let raw: Vec<(i64, i64, i64)> = pipe.query_async(&mut *self.conn().await?).await?;
                Ok(raw
                    .into_iter()
                    .map(|(applied, cached, projected)| PutOutcome {
                        applied: applied == 1,
                        cached,
                        projected,
                    })
                    .collect())
            })
            .await;
        // Written or not (a timed-out or failed write may still land), this process's copies
        // of these products are older than Redis's now.
        self.forget_near(products);
        written
    }

    /// Writes one product if newer-or-equal (API write-through and read-through). On the
    /// request path a failure remembers the product as a missed write.
    pub async fn put(&self, product: &Product) -> Result<PutOutcome, CacheError> {
        self.put_all(&[product]).await.and_then(|mut v| {
            v.pop()
                .ok_or_else(|| CacheError::Corrupt("empty pipeline reply".into()))
        })
    }

    /// Remembers `product` as a write this process may have missed (see the module docs): on
    /// the request path, a cached copy older than it reads as absent.
    pub fn note_missed(&self, product: &Product) {
        if let Some(g) = &self.guard {
            g.note_missed(product.id, product.version);
        }
    }

    /// Writes each of `products` if newer-or-equal (API write-through and read-through), in
    /// one round trip; outcomes in input order. On the request path a failure remembers each
    /// product as a missed write.
    pub async fn put_all(&self, products: &[&Product]) -> Result<Vec<PutOutcome>, CacheError> {
        let r = self.put_many(products, Writer::WriteThrough).await;
        if let Some(g) = &self.guard {
            match &r {
                Ok(outcomes) => {
                    for (p, o) in products.iter().zip(outcomes) {
                        g.refreshed(p.id, if o.applied { p.version } else { o.cached });
                    }
                }
                Err(_) => products.iter().for_each(|p| g.note_missed(p.id, p.version)),
            }
        }
        r
    }

    /// Removes every cached product of this namespace (after Postgres was restored from
    /// backup); returns how many. SCAN and UNLINK in batches: Redis is never blocked.
    pub async fn clear_products(&self) -> Result<u64, CacheError> {
        let mut c = self.conn().await?;
        let pattern = format!("{}*", self.names.product_cache_key_prefix());
        let (mut cursor, mut cleared) = (0u64, 0u64);
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut *c)
                .await?;
            if !keys.is_empty() {
                let n: u64 = redis::cmd("UNLINK").arg(&keys).query_async(&mut *c).await?;
                cleared += n;
            }
            if next == 0 {
                return Ok(cleared);
            }
            cursor = next;
        }
    }

    /// Removes a cached product (used when a write-through failed half way).
    pub async fn evict(&self, id: Uuid) -> Result<(), CacheError> {
        self.bounded("evict", async {
            let mut c = self.conn().await?;
            let _: i64 = redis::cmd("DEL")
                .arg(self.names.product_cache_key(&id))
                .query_async(&mut *c)
                .await?;
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_document_is_served_as_stored_and_only_its_head_is_read() {
        let id = Uuid::new_v4();
        let json = serde_json::json!({"id": id, "sku": "S", "version": 3, "status": "published",
                                      "attributes": {"a": "b"}, "price": null})
        .to_string();
        let d = CachedDocument::read(id, json.clone()).expect("read");
        assert_eq!(
            (d.version, d.status, d.json.as_str()),
            (3, ProductStatus::Published, json.as_str())
        );
        let corrupt = |r: Result<CachedDocument, CacheError>| matches!(r, Err(CacheError::Corrupt(_)));
        assert!(
            corrupt(CachedDocument::read(Uuid::new_v4(), json)),
            "another product's entry"
        );
        assert!(
            corrupt(CachedDocument::read(
                id,
                format!("{{\"id\":\"{id}\",\"status\":\"draft\"}}")
            )),
            "no version"
        );
        assert!(corrupt(CachedDocument::read(id, "{".into())), "not JSON");
    }
}
