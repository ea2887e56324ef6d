//! Per-client rate limits: a token bucket per client IP (the TCP peer address) for every
//! request, and another one for failed authentications. An empty bucket is a 429
//! problem+json with `Retry-After` (whole seconds until the next token).
//!
//! Buckets live in memory, per process. The map is bounded: past [`MAX_KEYS`] clients, the
//! buckets of clients that have been idle long enough to be full again are dropped (they are
//! indistinguishable from new clients), and if that is not enough the map is cleared (the
//! limit fails open for a moment rather than grow without bound).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::{ApiError, AppState};
use crate::config::ApiConfig;
use crate::telemetry::metrics;

/// Most client buckets kept per limiter before idle ones are dropped.
pub const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per key: `burst` tokens at most, refilled at `per_second`.
#[derive(Debug)]
pub struct KeyedLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

impl KeyedLimiter {
    /// A limiter, or `None` when `per_second` is 0 (no limit).
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

    fn wait(&self, b: &Bucket) -> Duration {
        Duration::from_secs_f64(((1.0 - b.tokens) / self.per_second).max(0.0))
    }

    /// Takes a token for `key`, or tells how long until one is there.
    pub fn acquire(&self, key: IpAddr, now: Instant) -> Result<(), Duration> {
        self.with_bucket(key, now, |b| {
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                Ok(())
            } else {
                Err(self.wait(b))
            }
        })
    }

    /// Whether `key` has a token, without taking it.
    pub fn check(&self, key: IpAddr, now: Instant) -> Result<(), Duration> {
        self.with_bucket(key, now, |b| if b.tokens >= 1.0 { Ok(()) } else { Err(self.wait(b)) })
    }

    /// Takes a token if there is one (a failure is counted even when the bucket is empty).
    pub fn spend(&self, key: IpAddr, now: Instant) {
        self.with_bucket(key, now, |b| b.tokens = (b.tokens - 1.0).max(0.0));
    }
}

/// The limits of one API process.
#[derive(Debug, Default)]
pub struct RateLimits {
    requests: Option<KeyedLimiter>,
    auth_failures: Option<KeyedLimiter>,
}

impl RateLimits {
    /// Limits from the settings (`RATE_LIMIT_*`, `AUTH_FAILURES_PER_MINUTE`).
    pub fn new(c: &ApiConfig) -> Self {
        Self {
            requests: KeyedLimiter::new(f64::from(c.rate_limit_per_second), c.rate_limit_burst),
            auth_failures: KeyedLimiter::new(f64::from(c.auth_failures_per_minute) / 60.0, c.auth_failures_per_minute),
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
        l.acquire(ip, Instant::now()).map_err(|wait| {
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

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn a_bucket_allows_its_burst_then_waits_for_the_refill() {
        let l = KeyedLimiter::new(2.0, 3).expect("limiter");
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.acquire(ip(1), t0).is_ok());
        }
        let wait = l.acquire(ip(1), t0).unwrap_err();
        assert!(
            wait > Duration::from_millis(400) && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(l.acquire(ip(2), t0).is_ok(), "another client has its own bucket");
        assert!(l.acquire(ip(1), t0 + Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn check_does_not_take_a_token_and_spend_never_goes_below_zero() {
        let l = KeyedLimiter::new(1.0, 1).expect("limiter");
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
        assert!(KeyedLimiter::new(0.0, 10).is_none());
    }

    #[test]
    fn the_map_stays_bounded_by_dropping_idle_clients() {
        let l = KeyedLimiter::new(1000.0, 1).expect("limiter");
        let t0 = Instant::now();
        for i in 0..MAX_KEYS as u32 {
            let _ = l.acquire(IpAddr::from(i.to_be_bytes()), t0);
        }
        let later = t0 + Duration::from_secs(1);
        assert!(l.acquire(IpAddr::from([255, 255, 255, 255]), later).is_ok());
        let len = l.buckets.lock().map(|m| m.len()).unwrap_or(usize::MAX);
        assert!(len < MAX_KEYS, "{len}");
    }
}
