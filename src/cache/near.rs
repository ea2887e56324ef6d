//! Near cache: the most recently read cached products kept in the process, so a repeated read
//! of a popular product costs no round trip to Redis. It is kept right by Redis itself
//! (server-assisted client-side caching, `CLIENT TRACKING` on RESP3): Redis remembers which
//! keys a tracked connection read and pushes an invalidation on that connection when one is
//! written, expired, evicted or flushed.
//!
//! The rules that keep an entry from outliving the value it copies:
//! - **Only a tracked read fills it**: the value came from a connection Redis will tell about
//!   the key's next change.
//! - **A read fills it only if nothing was invalidated while it was in flight**: every
//!   invalidation and clear bumps a sequence number, a read takes a [`Ticket`] before it is
//!   sent, and [`NearCache::insert`] refuses a ticket that is no longer current (the invalidation
//!   can be handled by the connection's task before the reply's reader inserts).
//! - **Any doubt empties it**: a tracked connection that closed, was dropped or reconnects takes
//!   every entry with it (the invalidations it would have carried are lost); so does a flush.
//! - **This process's own writes empty their keys** once written (or failed), so a caller that
//!   wrote reads what it wrote on any worker.
//! - **An entry lives no longer than its Redis key's TTL, and never longer than `max_age`**:
//!   the bound on staleness if invalidations stop arriving without the connection closing (a
//!   silent network partition).
//!
//! Pure: no I/O here; `redis_pool::SharedConnection` feeds it invalidations and
//! `product_cache::ProductCache` reads and fills it.

use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How big the near cache is and how long an entry may live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NearSettings {
    /// Most entries (least recently used go first).
    pub entries: NonZeroUsize,
    /// Longest an entry is served without asking Redis again.
    pub max_age: Duration,
}

impl Default for NearSettings {
    fn default() -> Self {
        Self {
            entries: NonZeroUsize::new(4096).unwrap_or(NonZeroUsize::MIN),
            max_age: Duration::from_secs(2),
        }
    }
}

/// Receives the invalidations a tracked connection is pushed.
pub trait Invalidations: Send + Sync + 'static {
    /// `key` was changed in Redis.
    fn invalidate(&self, key: &[u8]);
    /// Everything may have changed (a flush, a lost connection).
    fn invalidate_all(&self);
}

/// Taken before a read is sent; the read may fill the cache only while it is current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket(u64);

struct Entry<V> {
    value: V,
    expires: Instant,
}

struct Inner<V> {
    lru: lru::LruCache<Vec<u8>, Entry<V>>,
    /// Bumped by every invalidation and clear.
    seq: u64,
}

/// A bounded map from Redis key to a copy of its value, kept right by invalidations.
pub struct NearCache<V> {
    inner: Mutex<Inner<V>>,
    max_age: Duration,
}

impl<V: Clone + Send + 'static> NearCache<V> {
    /// An empty cache of `settings`.
    pub fn new(settings: NearSettings) -> Self {
        Self {
            inner: Mutex::new(Inner {
                lru: lru::LruCache::new(settings.entries),
                seq: 0,
            }),
            max_age: settings.max_age,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V>> {
        // Every change is a whole insert, removal or clear: a panic elsewhere leaves no
        // half-made entry.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value of `key`, unless absent or expired.
    pub fn get(&self, key: &[u8]) -> Option<V> {
        self.get_at(key, Instant::now())
    }

    fn get_at(&self, key: &[u8], now: Instant) -> Option<V> {
        let mut inner = self.lock();
        match inner.lru.get(key) {
            Some(e) if e.expires > now => Some(e.value.clone()),
            Some(_) => {
                inner.lru.pop(key);
                None
            }
            None => None,
        }
    }

    /// A ticket for a read about to be sent.
    pub fn ticket(&self) -> Ticket {
        Ticket(self.lock().seq)
    }

    /// Keeps `value` for `key`, read with `ticket`, for `ttl` (capped at the max age) when no
    /// invalidation came since the ticket was taken; says whether it was kept.
    pub fn insert(&self, key: &[u8], value: V, ttl: Option<Duration>, ticket: Ticket) -> bool {
        let mut inner = self.lock();
        if inner.seq != ticket.0 {
            return false;
        }
        let life = ttl.map_or(self.max_age, |t| t.min(self.max_age));
        if life.is_zero() {
            return false;
        }
        inner.lru.put(
            key.to_vec(),
            Entry {
                value,
                expires: Instant::now() + life,
            },
        );
        true
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.lock().lru.len()
    }

    /// True when no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V: Clone + Send + 'static> Invalidations for NearCache<V> {
    fn invalidate(&self, key: &[u8]) {
        let mut inner = self.lock();
        inner.seq += 1;
        inner.lru.pop(key);
    }

    fn invalidate_all(&self) {
        let mut inner = self.lock();
        inner.seq += 1;
        inner.lru.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache(entries: usize, max_age_ms: u64) -> NearCache<String> {
        NearCache::new(NearSettings {
            entries: NonZeroUsize::new(entries).expect("entries"),
            max_age: Duration::from_millis(max_age_ms),
        })
    }

    #[test]
    fn a_read_fills_it_and_an_invalidation_empties_the_key_only() {
        let c = cache(8, 60_000);
        assert!(c.insert(b"a", "1".into(), None, c.ticket()));
        assert!(c.insert(b"b", "2".into(), None, c.ticket()));
        assert_eq!(c.get(b"a").as_deref(), Some("1"));
        c.invalidate(b"a");
        assert_eq!(c.get(b"a"), None);
        assert_eq!(c.get(b"b").as_deref(), Some("2"));
        c.invalidate_all();
        assert!(c.is_empty());
    }

    #[test]
    fn a_read_in_flight_during_an_invalidation_does_not_fill_it() {
        let c = cache(8, 60_000);
        let ticket = c.ticket();
        // The invalidation is handled before the reply's reader inserts the older value.
        c.invalidate(b"a");
        assert!(!c.insert(b"a", "old".into(), None, ticket), "a stale value is refused");
        assert_eq!(c.get(b"a"), None);
        let cleared = c.ticket();
        c.invalidate_all();
        assert!(!c.insert(b"a", "old".into(), None, cleared));
        assert!(c.insert(b"a", "new".into(), None, c.ticket()));
        assert_eq!(c.get(b"a").as_deref(), Some("new"));
    }

    #[test]
    fn an_entry_lives_no_longer_than_its_ttl_or_the_max_age() {
        let c = cache(8, 60_000);
        assert!(c.insert(b"short", "v".into(), Some(Duration::from_secs(1)), c.ticket()));
        assert_eq!(c.get(b"short").as_deref(), Some("v"), "within its TTL");
        assert!(
            !c.insert(b"gone", "v".into(), Some(Duration::ZERO), c.ticket()),
            "an expired key is not kept"
        );
        let capped = cache(8, 1_000);
        assert!(capped.insert(b"k", "v".into(), Some(Duration::from_secs(3600)), capped.ticket()));
        let later = Instant::now() + Duration::from_millis(1_500);
        assert_eq!(c.get_at(b"short", later), None, "past the key's TTL");
        assert_eq!(capped.get_at(b"k", later), None, "past the max age");
        assert!(capped.is_empty(), "an expired entry is dropped when found");
    }

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let c = cache(2, 60_000);
        assert!(c.insert(b"a", "1".into(), None, c.ticket()));
        assert!(c.insert(b"b", "2".into(), None, c.ticket()));
        assert_eq!(c.get(b"a").as_deref(), Some("1"));
        assert!(c.insert(b"c", "3".into(), None, c.ticket()));
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(b"b"), None, "b was the least recently used");
        assert_eq!(c.get(b"a").as_deref(), Some("1"));
    }
}
