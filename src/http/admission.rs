//! Admission: what `serve` takes on, and for how long.
//!
//! - **Load shedding.** A request takes a permit of its worker's bound
//!   (`HTTP_MAX_IN_FLIGHT_PER_WORKER`) and one of the process's (`HTTP_MAX_IN_FLIGHT`) without
//!   waiting; when either is spent it is answered at once with 503 `overloaded` and
//!   `Retry-After`, so the requests already accepted keep their latency instead of every request
//!   getting slower together. A client over its own share is the rate limiter's 429, before
//!   this (`rate_limit`).
//! - **A deadline per request.** Once admitted, a request's work has `HTTP_REQUEST_DEADLINE_MS`;
//!   past it the work is dropped (its database transaction is rolled back when the connection
//!   is discarded) and the answer is 503 `dependency_unavailable` with `Retry-After`. A write
//!   says that it may have been committed (the commit may have been on its way when the
//!   deadline came): its `Idempotency-Key` replay answers with the real outcome. Reads the
//!   cache answers never wait on the database, so they keep being answered through a stall.
//!
//! Never shed and never cut: `/health/*`, the console (`/console/*`, whose dead-letter reads
//! have their own bounds) and the docs. Metrics have their own listener.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use std::sync::Arc;
use tokio::sync::Semaphore;

use super::error::ApiError;
use super::AppState;
use crate::telemetry::metrics::{HTTP_DEADLINE_EXCEEDED, HTTP_IN_FLIGHT, HTTP_SHED};

/// The bounds of requests in flight: the process's (shared by every worker) and a worker's.
#[derive(Debug, Clone)]
pub struct Admission {
    total: Arc<Semaphore>,
    total_bound: usize,
    worker: Arc<Semaphore>,
    worker_bound: usize,
}

impl Admission {
    /// `total` requests in the process, `per_worker` in a worker.
    pub fn new(total: usize, per_worker: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(total)),
            total_bound: total,
            worker: Arc::new(Semaphore::new(per_worker)),
            worker_bound: per_worker,
        }
    }

    /// The same process bound, and a worker bound of the worker's own.
    pub fn for_worker(&self) -> Self {
        Self {
            worker: Arc::new(Semaphore::new(self.worker_bound)),
            ..self.clone()
        }
    }

    /// Both permits, or the bound that is spent.
    fn admit(&self) -> Result<(tokio::sync::OwnedSemaphorePermit, tokio::sync::OwnedSemaphorePermit), ApiError> {
        let worker = self.worker.clone().try_acquire_owned().map_err(|_| {
            HTTP_SHED.with_label_values(&["worker"]).inc();
            ApiError::Overloaded(self.worker_bound)
        })?;
        let total = self.total.clone().try_acquire_owned().map_err(|_| {
            HTTP_SHED.with_label_values(&["process"]).inc();
            ApiError::Overloaded(self.total_bound)
        })?;
        Ok((worker, total))
    }
}

/// Paths never shed nor cut.
fn exempt(path: &str) -> bool {
    ["/health", "/console", "/docs", "/metrics"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// Counts a request in flight while it lives.
struct InFlight;

impl InFlight {
    fn enter() -> Self {
        HTTP_IN_FLIGHT.inc();
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        HTTP_IN_FLIGHT.dec();
    }
}

/// Middleware: sheds past the bounds, and cuts a request's work at its deadline.
pub async fn admit(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    let limits = req.app_data::<web::Data<AppState>>().map(|s| s.limits.clone());
    let Some(limits) = limits.filter(|_| !exempt(req.path())) else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let _permits = match limits.admission.admit() {
        Ok(p) => p,
        Err(e) => {
            let resp = e.error_response();
            return Ok(req.into_response(resp).map_into_right_body());
        }
    };
    let _in_flight = InFlight::enter();
    let Some(deadline) = limits.deadline else {
        return next.call(req).await.map(ServiceResponse::map_into_left_body);
    };
    let write = !matches!(
        *req.method(),
        actix_web::http::Method::GET | actix_web::http::Method::HEAD
    );
    match tokio::time::timeout(deadline, next.call(req)).await {
        Ok(r) => r.map(ServiceResponse::map_into_left_body),
        Err(_) => {
            HTTP_DEADLINE_EXCEEDED
                .with_label_values(&[if write { "write" } else { "read" }])
                .inc();
            tracing::warn!(
                deadline_ms = deadline.as_millis() as u64,
                write,
                "request cut at its deadline"
            );
            Err(ApiError::DeadlineExceeded {
                deadline_ms: deadline.as_millis(),
                write,
            }
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spent_bound_refuses_at_once_and_a_returned_permit_admits_again() {
        let a = Admission::new(3, 2);
        let first = a.admit().expect("admitted");
        let second = a.admit().expect("admitted");
        assert!(matches!(a.admit(), Err(ApiError::Overloaded(2))), "the worker's bound");
        let other = a.for_worker();
        let third = other.admit().expect("another worker, the process has room");
        assert!(
            matches!(other.admit(), Err(ApiError::Overloaded(3))),
            "the process's bound"
        );
        drop(first);
        assert!(a.admit().is_ok());
        drop((second, third));
    }

    #[test]
    fn health_console_and_docs_are_exempt_and_the_api_is_not() {
        for p in ["/health", "/health/live", "/console/", "/console/api/lag", "/docs/"] {
            assert!(exempt(p), "{p}");
        }
        for p in ["/api/products", "/healthz", "/openapi.json", "/"] {
            assert!(!exempt(p), "{p}");
        }
    }
}
