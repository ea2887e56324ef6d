//! Per-client rate limits: a bucket per client IP (the TCP peer address) for every request,
//! and another one for failed authentications. An empty bucket is a 429 problem+json with
//! `Retry-After` (whole seconds until the next token, from the limiter's wait time).
//!
//! The request limit is governor's keyed GCRA limiter ([`RequestLimiter`]): a sharded map of
//! atomic states, so requests of different clients never wait on one lock. Its memory stays
//! bounded without ever forgetting a limited client: every [`HOUSEKEEPING_EVERY`] requests,
//! once past [`MAX_KEYS`] clients, governor drops the states that are indistinguishable from
//! a new client (`retain_recent`, then `shrink_to_fit`), so what stays beyond that bound are
//! clients seen within the time their burst takes to refill (2 s with the default settings).
//! Nothing is cleared wholesale.
//!
//! The failed-authentication limit stays a small token bucket of ours ([`FailureBuckets`]),
//! because it has to *look* whether an address has budget left before its credentials are
//! read, and charge only the failures: a locked-out address must get a 429 even for a correct
//! token (else every guess is still an answer), while successful authentications cost nothing.
//! governor has no check that does not consume (boinkor-net/governor#152, PR #211 unmerged),
//! and charging every attempt would limit authenticated traffic to the failure budget. Only
//! requests that carry credentials take its lock. Past [`MAX_KEYS`] addresses, the buckets of
//! addresses idle long enough to be full again are dropped, and if that is not enough the map
//! is cleared (the limit fails open for a moment rather than grow without bound).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ApiError, AppState};
use crate::config::ApiConfig;
use crate::telemetry::metrics;

/// Most client states kept per limiter before idle ones are dropped.
pub const MAX_KEYS: usize = 100_000;

/// Requests between two looks at the size of the request limiter's map.
pub const HOUSEKEEPING_EVERY: u64 = 1024;

/// A GCRA bucket per client (governor): `burst` requests at once, refilled at `per_second`.
#[derive(Debug)]
pub struct RequestLimiter<C: Clock = DefaultClock> {
    limiter: RateLimiter<IpAddr, DefaultKeyedStateStore<IpAddr>, C, NoOpMiddleware<C::Instant>>,
    requests: AtomicU64,
}

impl RequestLimiter {
    /// A limiter, or `None` when `per_second` is 0 (no limit); a `burst` of 0 counts as 1.
    pub fn new(per_second: u32, burst: u32) -> Option<Self> {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock> RequestLimiter<C> {
    fn with_clock(per_second: u32, burst: u32, clock: C) -> Option<Self> {
        let quota = Quota::per_second(NonZeroU32::new(per_second)?)
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        Some(Self {
            limiter: RateLimiter::dashmap_with_clock(quota, clock),
            requests: AtomicU64::new(0),
        })
    }

    /// Takes a token for `key`, or tells how long until one is there.
    pub fn acquire(&self, key: IpAddr) -> Result<(), Duration> {
        if self
            .requests
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(HOUSEKEEPING_EVERY)
            && self.limiter.len() >= MAX_KEYS
        {
            self.limiter.retain_recent();
            self.limiter.shrink_to_fit();
        }
        self.limiter
            .check_key(&key)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per address that can be looked at without taking a token: `burst` tokens
/// at most, refilled at `per_second`.
#[derive(Debug)]
pub struct FailureBuckets {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl FailureBuckets {
    /// Buckets, or `None` when `per_second` is 0 (no limit).
    pub fn new(per_second: f64, burst: u32) -> Option<Self> {
        (per_second > 0.0).then(|| Self {
            per_second,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    fn with_bucket<T>(&self, key: IpAddr, now: Instant, f: impl FnOnce(&mut Bucket) -> T) -> T {
        // A poisoned lock only means another thread panicked mid-update of plain numbers.
        let mut map = self.buckets.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_KEYS && !map.contains_key(&key) {
            let (rate, burst) = (self.per_second, self.burst);
            map.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < burst);
            if map.len() >= MAX_KEYS {
                map.clear();
            }
        }
        let b = map.entry(key).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * self.per_second).min(self.burst);
        b.at = now;
        f(b)
    }

    /// Whether `key` has a token, without taking it.
    pub fn check(&self, key: IpAddr, now: Instant) -> Result<(), Duration> {
        self.with_bucket(key, now, |b| {
            if b.tokens >= 1.0 {
                Ok(())
            } else {
                Err(Duration::from_secs_f64(((1.0 - b.tokens) / self.per_second).max(0.0)))
            }
        })
    }

    /// Takes a token if there is one (a failure is counted even when the bucket is empty).
    pub fn spend(&self, key: IpAddr, now: Instant) {
        self.with_bucket(key, now, |b| b.tokens = (b.tokens - 1.0).max(0.0));
    }
}

/// The limits of one API process.
#[derive(Debug, Default)]
pub struct RateLimits {
    requests: Option<RequestLimiter>,
    auth_failures: Option<FailureBuckets>,
}

impl RateLimits {
    /// Limits from the settings (`RATE_LIMIT_*`, `AUTH_FAILURES_PER_MINUTE`).
    pub fn new(c: &ApiConfig) -> Self {
        Self {
            requests: RequestLimiter::new(c.rate_limit_per_second, c.rate_limit_burst),
            auth_failures: FailureBuckets::new(
                f64::from(c.auth_failures_per_minute) / 60.0,
                c.auth_failures_per_minute,
            ),
        }
    }

    /// No limits at all.
    pub fn unlimited() -> Self {
        Self::default()
    }

    /// 429 when `ip` failed to authenticate too often lately.
    pub fn check_auth(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(l), Some(ip)) = (&self.auth_failures, ip) else {
            return Ok(());
        };
        l.check(ip, Instant::now()).map_err(|wait| {
            metrics::HTTP_RATE_LIMITED.with_label_values(&["auth_failures"]).inc();
            ApiError::TooManyRequests {
                detail: "too many failed authentications from this address; retry later".into(),
                retry_after: wait,
            }
        })
    }

    /// Counts a failed authentication of `ip`.
    pub fn auth_failed(&self, ip: Option<IpAddr>) {
        if let (Some(l), Some(ip)) = (&self.auth_failures, ip) {
            l.spend(ip, Instant::now());
        }
    }

    fn acquire_request(&self, ip: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(l), Some(ip)) = (&self.requests, ip) else {
            return Ok(());
        };
        l.acquire(ip).map_err(|wait| {
            metrics::HTTP_RATE_LIMITED.with_label_values(&["requests"]).inc();
            ApiError::TooManyRequests {
                detail: "request rate limit exceeded for this address; retry later".into(),
                retry_after: wait,
            }
        })
    }
}

/// Middleware: one token per request and client IP; `/health` is exempt so that probes from a
/// busy address never take a healthy process out of rotation.
pub async fn limit_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<actix_web::body::BoxBody>, actix_web::Error> {
    let exempt = req.path() == "/health" || req.path().starts_with("/health/");
    if !exempt {
        if let Some(state) = req.app_data::<web::Data<AppState>>() {
            let ip = req.peer_addr().map(|a| a.ip());
            if let Err(e) = state.access.rate_limits.acquire_request(ip) {
                let resp = e.error_response();
                return Ok(req.into_response(resp));
            }
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::FakeRelativeClock;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_bucket_allows_its_burst_then_waits_for_the_refill() {
        let clock = FakeRelativeClock::default();
        let l = RequestLimiter::with_clock(2, 3, clock.clone()).expect("limiter");
        for _ in 0..3 {
            assert!(l.acquire(ip(1)).is_ok());
        }
        let wait = l.acquire(ip(1)).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(l.acquire(ip(2)).is_ok(), "another client has its own bucket");
        clock.advance(Duration::from_millis(500));
        assert!(l.acquire(ip(1)).is_ok());
    }

    #[test]
    fn check_does_not_take_a_token_and_spend_never_goes_below_zero() {
        let l = FailureBuckets::new(1.0, 1).expect("limiter");
        let t0 = Instant::now();
        assert!(l.check(ip(1), t0).is_ok());
        assert!(l.check(ip(1), t0).is_ok());
        l.spend(ip(1), t0);
        l.spend(ip(1), t0);
        assert!(l.check(ip(1), t0).is_err());
        assert!(l.check(ip(1), t0 + Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn zero_per_second_means_no_limiter() {
        assert!(RequestLimiter::new(0, 10).is_none());
        assert!(FailureBuckets::new(0.0, 10).is_none());
    }

    #[test]
    fn the_request_limiter_stays_bounded_by_dropping_idle_clients() {
        let clock = FakeRelativeClock::default();
        let l = RequestLimiter::with_clock(1000, 1, clock.clone()).expect("limiter");
        for i in 0..MAX_KEYS as u32 {
            let _ = l.acquire(IpAddr::from(i.to_be_bytes()));
        }
        clock.advance(Duration::from_secs(1));
        assert!(l.acquire(IpAddr::from([255, 255, 255, 255])).is_ok());
        // The size is looked at every HOUSEKEEPING_EVERY requests.
        for _ in 0..HOUSEKEEPING_EVERY {
            let _ = l.acquire(IpAddr::from([255, 255, 255, 255]));
        }
        assert!(l.limiter.len() < MAX_KEYS, "{}", l.limiter.len());
    }

    #[test]
    fn the_failure_buckets_stay_bounded_by_dropping_idle_clients() {
        let l = FailureBuckets::new(1000.0, 1).expect("limiter");
        let t0 = Instant::now();
        for i in 0..MAX_KEYS as u32 {
            l.spend(IpAddr::from(i.to_be_bytes()), t0);
        }
        let later = t0 + Duration::from_secs(1);
        assert!(l.check(IpAddr::from([255, 255, 255, 255]), later).is_ok());
        let len = l.buckets.lock().map(|m| m.len()).unwrap_or(usize::MAX);
        assert!(len < MAX_KEYS, "{len}");
    }
}
