//! The versioned put: the Lua script every writer of a cached product goes through, and what
//! it answers. A state is applied only when its version is >= the cached one, so duplicates,
//! replays and out-of-order delivery never make an entry older (`cache::product_cache`).

use super::CacheError;

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

pub(super) static PUT_SCRIPT: std::sync::LazyLock<redis::Script> =
    std::sync::LazyLock::new(|| redis::Script::new(PUT_IF_NEWER));

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

impl From<(i64, i64, i64)> for PutOutcome {
    /// The script's answer `{applied, previous v, previous pv}`.
    fn from((applied, cached, projected): (i64, i64, i64)) -> Self {
        Self {
            applied: applied == 1,
            cached,
            projected,
        }
    }
}

impl PutOutcome {
    /// One put's answer in a pipeline that ignores errors: an error reply is an error.
    pub(super) fn from_reply(v: redis::Value) -> Result<Self, CacheError> {
        let answer: (i64, i64, i64) = redis::from_redis_value(v).map_err(redis::RedisError::from)?;
        Ok(answer.into())
    }
}
