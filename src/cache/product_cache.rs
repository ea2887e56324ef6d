//! Versioned product cache. Each product is a hash `{v: version, d: json}` under
//! `<namespace>product:<id>` with a TTL. Writes go through a Lua script that applies the new
//! state only when its version is >= the cached one (`>=`, so a replay rewrites the same
//! version after a projection fix), making duplicates and out-of-order delivery harmless.

use deadpool_redis::redis;
use deadpool_redis::{Config, Pool, Runtime};
use std::future::Future;
use std::time::Duration;
use uuid::Uuid;

use super::CacheError;
use crate::config::Names;
use crate::domain::product::Product;

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

/// The product read model in Redis.
#[derive(Clone)]
pub struct ProductCache {
    pool: Pool,
    names: Names,
    ttl: Duration,
    timeout: Duration,
}

impl ProductCache {
    /// A cache on `url`; connects lazily.
    pub fn new(url: &str, names: Names, ttl: Duration) -> Result<Self, CacheError> {
        let mut cfg = Config::from_url(url);
        cfg.pool = Some(deadpool_redis::PoolConfig {
            max_size: 16,
            timeouts: deadpool_redis::Timeouts {
                wait: Some(Duration::from_secs(2)),
                create: Some(Duration::from_secs(2)),
                recycle: Some(Duration::from_secs(2)),
            },
            ..Default::default()
        });
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| CacheError::Pool(e.to_string()))?;
        Ok(Self {
            pool,
            names,
            ttl,
            timeout: Duration::from_secs(3),
        })
    }

    async fn conn(&self) -> Result<deadpool_redis::Connection, CacheError> {
        self.pool.get().await.map_err(|e| CacheError::Pool(e.to_string()))
    }

    async fn bounded<T>(&self, fut: impl Future<Output = Result<T, CacheError>>) -> Result<T, CacheError> {
        tokio::time::timeout(self.timeout, fut)
            .await
            .map_err(|_| CacheError::Timeout)?
    }

    /// PING, bounded by `timeout`.
    pub async fn ping(&self, timeout: Duration) -> Result<(), CacheError> {
        tokio::time::timeout(timeout, async {
            let mut c = self.conn().await?;
            let _: String = redis::cmd("PING").query_async(&mut c).await?;
            Ok(())
        })
        .await
        .map_err(|_| CacheError::Timeout)?
    }

    /// Reads a cached product.
    pub async fn get(&self, id: Uuid) -> Result<Option<Product>, CacheError> {
        self.bounded(async {
            let mut c = self.conn().await?;
            let doc: Option<String> = redis::cmd("HGET")
                .arg(self.names.product_cache_key(&id))
                .arg("d")
                .query_async(&mut c)
                .await?;
            doc.map(|d| serde_json::from_str(&d).map_err(|e| CacheError::Corrupt(e.to_string())))
                .transpose()
        })
        .await
    }

    /// Writes `products` if newer-or-equal, in one round trip; outcomes in input order.
    pub async fn put_many(&self, products: &[&Product], writer: Writer) -> Result<Vec<PutOutcome>, CacheError> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        self.bounded(async {
            let mut c = self.conn().await?;
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
            let raw: Vec<(i64, i64, i64)> = pipe.query_async(&mut c).await?;
            Ok(raw
                .into_iter()
                .map(|(applied, cached, projected)| PutOutcome {
                    applied: applied == 1,
                    cached,
                    projected,
                })
                .collect())
        })
        .await
    }

    /// Writes one product if newer-or-equal (API write-through).
    pub async fn put(&self, product: &Product) -> Result<PutOutcome, CacheError> {
        let mut v = self.put_many(&[product], Writer::WriteThrough).await?;
        v.pop()
            .ok_or_else(|| CacheError::Corrupt("empty pipeline reply".into()))
    }

    /// Removes a cached product (used when a write-through failed half way).
    pub async fn evict(&self, id: Uuid) -> Result<(), CacheError> {
        self.bounded(async {
            let mut c = self.conn().await?;
            let _: i64 = redis::cmd("DEL")
                .arg(self.names.product_cache_key(&id))
                .query_async(&mut c)
                .await?;
            Ok(())
        })
        .await
    }
}
