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
//! tracked read connection keep it right, and this process's writes empty their keys. A
//! product the API read from Postgres is written back by a put that rides on the worker's next
//! read ([`ProductCache::put_later`], `cache::read_through`).

use deadpool::managed::Timeouts;
use deadpool::Runtime;

use super::near::{Invalidations, NearCache};
use super::read_through::{Join, Riders, LINGER};
use super::redis_pool::{RedisConn, RedisEndpoint, RedisManager, RedisPool, SharedConnection};
use super::versioned::PUT_SCRIPT;
pub use super::versioned::{PutOutcome, Writer};
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

use super::breaker::CircuitBreaker;
pub use super::document::CachedDocument;
use super::CacheError;
pub use crate::config::redis::RequestBounds;
use crate::domain::product::Product;
use crate::names::Names;
use crate::telemetry::metrics;

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
    /// Reads share one multiplexed connection (pipelined), and so do the request path's writes;
    /// the projection's writes and the tools use the pool.
    reads: Arc<SharedConnection>,
    /// The request path's copies of recently read products (shared by every worker's clone).
    near: Option<Arc<NearCache<CachedDocument>>>,
    /// Read-through puts waiting for this worker's next read (`cache::read_through`).
    riders: Arc<Riders<(Uuid, CachedDocument)>>,
    /// How long they wait for one ([`LINGER`]).
    linger: Duration,
    /// Redis was seen to hold the put script, so a carrying read need not send its body.
    script_loaded: Arc<AtomicBool>,
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
            riders: Arc::default(),
            linger: LINGER,
            script_loaded: Arc::default(),
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
            riders: Arc::default(),
            linger: self.linger,
            script_loaded: Arc::default(),
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

    /// The same cache whose read-through puts wait up to `linger` for a read to carry them
    /// (instead of [`LINGER`]).
    #[must_use]
    pub fn with_read_through_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Products held by the near cache; `None` when it is off (not asked for, or the server
    /// refused client tracking).
    pub fn near_entries(&self) -> Option<usize> {
        self.near.as_ref().filter(|_| self.reads.is_tracked()).map(|n| n.len())
    }

    /// Drops these products from the near cache, so this process next reads them from Redis.
    fn forget_near(&self, ids: impl Iterator<Item = Uuid>) {
        if let Some(near) = &self.near {
            for id in ids {
                near.invalidate(self.names.product_cache_key(&id).as_bytes());
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
        let mut riders = Vec::new();
        let mut carried = Vec::new();
        let read = self
            .bounded("get", async {
                // The ticket is taken before the read is sent (and after the connection is
                // open, which empties the near cache): an invalidation meanwhile refuses it.
                let ticket = match near {
                    Some(near) => {
                        self.reads.ready().await?;
                        Some(near.ticket())
                    }
                    None => None,
                };
                // The worker's queued read-through puts go first, in the same write; the
                // script's body only when this worker has not seen Redis take it.
                riders = self.riders.take();
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                if !riders.is_empty() && !self.script_loaded.load(Ordering::Relaxed) {
                    pipe.load_script(&PUT_SCRIPT).ignore();
                }
                for (rider_id, d) in &riders {
                    self.push_put(&mut pipe, rider_id, d.version, &d.json, Writer::WriteThrough);
                }
                pipe.cmd("HGET").arg(&key).arg("d");
                if near.is_some() {
                    pipe.cmd("PTTL").arg(&key);
                }
                let mut replies: Vec<redis::Value> = self.reads.query_pipeline(&pipe).await?;
                let read = replies.split_off(riders.len().min(replies.len()));
                carried = replies.into_iter().map(PutOutcome::from_reply).collect();
                let mut read = read.into_iter();
                let doc: Option<String> = redis::from_redis_value(read.next().unwrap_or(redis::Value::Nil))
                    .map_err(redis::RedisError::from)?;
                let doc = doc.map(|json| CachedDocument::read(id, json)).transpose()?;
                if let (Some(d), Some(near), Some(ticket)) = (&doc, near, ticket) {
                    // PTTL is -1 for a key without expiry: the near cache's own bound applies.
                    let pttl: i64 = redis::from_redis_value(read.next().unwrap_or(redis::Value::Int(-1)))
                        .map_err(redis::RedisError::from)?;
                    let ttl = u64::try_from(pttl).ok().map(Duration::from_millis);
                    near.insert(key.as_bytes(), d.clone(), ttl, ticket);
                    metrics::CACHE_NEAR_ENTRIES.set(near.len() as i64);
                }
                Ok(doc)
            })
            .await;
        if !riders.is_empty() {
            self.carried(&riders, &carried);
        }
        read
    }

    /// Settles the read-through puts a read carried, after the read's own near entry is in.
    fn carried(&self, riders: &[(Uuid, CachedDocument)], outcomes: &[Result<PutOutcome, CacheError>]) {
        metrics::CACHE_READ_THROUGH_PUTS
            .with_label_values(&["with_read"])
            .inc_by(riders.len() as u64);
        let unknown_script = |r: &Result<PutOutcome, CacheError>| matches!(r, Err(CacheError::Redis(e)) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript));
        // Redis lost its scripts (a restart, SCRIPT FLUSH): the next carrying read loads it.
        let lost = outcomes.iter().any(unknown_script);
        self.script_loaded
            .store(!lost && outcomes.len() == riders.len(), Ordering::Relaxed);
        for (i, (id, d)) in riders.iter().enumerate() {
            self.settle(*id, d.version, outcomes.get(i).and_then(|r| r.as_ref().ok()));
        }
        self.forget_near(riders.iter().map(|(id, _)| *id));
    }

    /// Writes product `id`, just read from Postgres as `doc`, back to Redis without waiting for
    /// it: the put rides on this worker's next cache read, or goes on its own after [`LINGER`]
    /// (see `cache::read_through`).
    pub fn put_later(&self, id: Uuid, doc: CachedDocument) {
        match self.riders.push((id, doc)) {
            Join::Queued => {}
            Join::StartTimer => {
                let me = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(me.linger).await;
                    let due = me.riders.expire();
                    me.put_alone(due).await;
                });
            }
            Join::SendNow(full) => {
                let me = self.clone();
                tokio::spawn(async move { me.put_alone(full).await });
            }
        }
    }

    /// Read-through puts that no read carried, in one round trip.
    async fn put_alone(&self, riders: Vec<(Uuid, CachedDocument)>) {
        if riders.is_empty() {
            return;
        }
        metrics::CACHE_READ_THROUGH_PUTS
            .with_label_values(&["alone"])
            .inc_by(riders.len() as u64);
        let puts: Vec<(Uuid, i64, &str)> = riders.iter().map(|(id, d)| (*id, d.version, d.json.as_str())).collect();
        let r = self.send_puts(&puts, Writer::WriteThrough).await;
        self.settle_all(&puts, &r);
        if let Err(e) = r {
            // Bounded and behind the breaker; each product is remembered as a missed write.
            tracing::debug!(products = riders.len(), error = %e, "read-through puts skipped");
        }
    }

    /// Appends product `id`'s versioned put to `pipe` (an EVALSHA answering `(applied, v, pv)`;
    /// the pipeline loads the script first, or knows Redis has it).
    fn push_put(&self, pipe: &mut redis::Pipeline, id: &Uuid, version: i64, json: &str, writer: Writer) {
        let ttl_ms = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let mut inv = PUT_SCRIPT.key(self.names.product_cache_key(id));
        inv.arg(version)
            .arg(json)
            .arg(ttl_ms)
            .arg(if writer == Writer::Projection { "1" } else { "0" });
        pipe.invoke_script(&inv);
    }

    /// What a put's outcome (`None`: failed or unknown) means on the request path: Redis holds
    /// that version or a newer one, or this process serves no copy older than it.
    fn settle(&self, id: Uuid, version: i64, outcome: Option<&PutOutcome>) {
        if let Some(g) = &self.guard {
            match outcome {
                Some(o) => g.refreshed(id, if o.applied { version } else { o.cached }),
                None => g.note_missed(id, version),
            }
        }
    }

    fn settle_all(&self, puts: &[(Uuid, i64, &str)], r: &Result<Vec<PutOutcome>, CacheError>) {
        for (i, (id, version, _)) in puts.iter().enumerate() {
            self.settle(*id, *version, r.as_ref().ok().and_then(|o| o.get(i)));
        }
    }

    /// Writes `products` if newer-or-equal, in one round trip; outcomes in input order.
    pub async fn put_many(&self, products: &[&Product], writer: Writer) -> Result<Vec<PutOutcome>, CacheError> {
        let docs = products
            .iter()
            .map(|p| serde_json::to_string(p).map_err(|e| CacheError::Corrupt(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let puts: Vec<(Uuid, i64, &str)> = products
            .iter()
            .zip(&docs)
            .map(|(p, d)| (p.id, p.version, d.as_str()))
            .collect();
        self.send_puts(&puts, writer).await
    }

    /// Sends `(id, version, document)` puts in one pipeline: the script's body once (SCRIPT
    /// LOAD), then one EVALSHA each; outcomes in input order.
    async fn send_puts(&self, puts: &[(Uuid, i64, &str)], writer: Writer) -> Result<Vec<PutOutcome>, CacheError> {
        if puts.is_empty() {
            return Ok(Vec::new());
        }
        let written = self
            .bounded("put", async {
                let mut pipe = redis::pipe();
                pipe.load_script(&PUT_SCRIPT).ignore();
                for (id, version, json) in puts {
                    self.push_put(&mut pipe, id, *version, json, writer);
                }
                let raw: Vec<(i64, i64, i64)> = if self.guard.is_some() {
                    // The request path writes on the worker's shared connection, in the same
                    // writes and reads as its cache reads; on a tracked one Redis does not push
                    // back invalidations for these keys (NOLOOP): `forget_near` below drops them.
                    self.reads.query_pipeline(&pipe).await?
                } else {
                    pipe.query_async(&mut *self.conn().await?).await?
                };
                Ok(raw.into_iter().map(PutOutcome::from).collect())
            })
            .await;
        // Written or not (a timed-out or failed write may still land), this process's copies
        // of these products are older than Redis's now.
        self.forget_near(puts.iter().map(|(id, _, _)| *id));
        written
    }

    /// Writes one product if newer-or-equal (the API's write-through). On the
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

    /// Writes each of `products` if newer-or-equal (the API's write-through), in
    /// one round trip; outcomes in input order. On the request path a failure remembers each
    /// product as a missed write.
    pub async fn put_all(&self, products: &[&Product]) -> Result<Vec<PutOutcome>, CacheError> {
        let r = self.put_many(products, Writer::WriteThrough).await;
        for (i, p) in products.iter().enumerate() {
            self.settle(p.id, p.version, r.as_ref().ok().and_then(|o| o.get(i)));
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
