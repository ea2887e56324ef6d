//! HTTP API (actix-web): products, commands, search, health, OpenAPI, Swagger UI (`/docs/`) and
//! the operations console (`/console/`, `console`); `/metrics` on its own listener
//! (`metrics::serve_metrics`, `METRICS_BIND`), never on the public port.
//!
//! Writes run the product aggregate and commit state + outbox in one transaction through
//! `store::product_repo`; nothing here produces product events to Kafka. `POST /api/commands`
//! hands a command to the write side through `product.commands`.
//!
//! A dependency a request can do without never fails or holds it: Redis calls are bounded and
//! behind a circuit breaker, search is bounded and answers 503 with `Retry-After`, and a
//! transient database failure is a 503 with `Retry-After` too (`error`). Product writes
//! accept an `Idempotency-Key` (`idempotency`).
//!
//! Access rules (`auth`): anonymous callers read published products only; tokens read
//! everything; write tokens write. Every answer carries the security headers of
//! [`security_headers`]; every error is problem+json, including 404 for an unknown path, 405
//! with `Allow` for a known path with another method, 408 for a body that does not arrive
//! within `HTTP_BODY_READ_TIMEOUT_MS` (`body_timeout`), 413 past `HTTP_BODY_LIMIT_BYTES` and
//! 429 with `Retry-After` past a per-client rate limit (`rate_limit`).

pub mod admission;
pub mod auth;
pub mod bodies;
pub mod body_timeout;
pub mod categories;
pub mod commands;
pub mod console;
pub mod contract;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod json_body;
pub mod metrics;
pub mod problem;
pub mod product_types;
pub mod products;
pub mod rate_limit;
pub mod routes;
pub mod schemas;
pub mod search;
pub mod server_span;
pub mod state;
pub mod variants;

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;
use utoipa_actix_web::AppExt;

use crate::config::ApiConfig;

pub use error::ApiError;
pub use rate_limit::RateLimits;
pub use state::{AccessControl, AppState, KafkaHandles, RequestLimits};

/// Default largest request body (`HTTP_BODY_LIMIT_BYTES`).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Settings of the HTTP server itself.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Worker threads.
    pub workers: usize,
    /// Largest request body (`HTTP_BODY_LIMIT_BYTES`).
    pub body_limit_bytes: usize,
    /// Time to receive a request head (`HTTP_CLIENT_REQUEST_TIMEOUT_MS`).
    pub client_request_timeout: Duration,
}

impl ServerSettings {
    /// The server settings of `c` with `workers` threads.
    pub fn new(c: &ApiConfig, workers: usize) -> Self {
        Self {
            workers: workers.max(1),
            body_limit_bytes: c.http_body_limit_bytes,
            client_request_timeout: c.client_request_timeout(),
        }
    }
}

/// Headers on every answer: no MIME sniffing, no framing, no referrer, a content security
/// policy that lets a browser run or load nothing from a JSON answer, and `no-store` unless a
/// handler chose another `Cache-Control`.
pub fn security_headers() -> DefaultHeaders {
    DefaultHeaders::new()
        .add(("X-Content-Type-Options", "nosniff"))
        .add(("X-Frame-Options", "DENY"))
        .add(("Referrer-Policy", "no-referrer"))
        .add(("Content-Security-Policy", "default-src 'none'; frame-ancestors 'none'"))
        .add(("Cache-Control", "no-store"))
}

/// Swagger UI at `/docs/` over `/openapi.json` (assets compiled in: nothing downloaded at
/// build or run time). Its pages load their own scripts, styles and images, so they get a
/// content security policy of their own (still nothing from elsewhere, no framing).
fn docs() -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::scope("/docs")
        .wrap(DefaultHeaders::new().add((
            "Content-Security-Policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; \
             script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
        )))
        .service(
            utoipa_swagger_ui::SwaggerUi::new("/{_:.*}")
                // No call to the public validator: the page loads nothing from elsewhere.
                .config(utoipa_swagger_ui::Config::from("/openapi.json").validator_url("none")),
        )
}

/// Starts the API on `listener`; the returned server runs until stopped. Middleware, outermost
/// first: the request's server span (`server_span`), request metrics, security headers, the
/// per-client rate limit, admission (load shedding and the request's deadline, `admission`),
/// the body read bound.
///
/// `states` holds one state per worker, each with its own connection pools (`serve` builds
/// them): a connection is then opened, driven and awaited on its worker's thread, instead of
/// waking another thread at every round trip. Workers beyond the states given share the first.
pub fn run(
    listener: TcpListener,
    states: Vec<AppState>,
    settings: &ServerSettings,
) -> std::io::Result<actix_web::dev::Server> {
    let states: Vec<web::Data<AppState>> = states.into_iter().map(web::Data::new).collect();
    let shared = states
        .first()
        .cloned()
        .ok_or_else(|| std::io::Error::other("no state to serve with"))?;
    let unclaimed = Arc::new(std::sync::Mutex::new(states));
    let body_limit = settings.body_limit_bytes;
    Ok(HttpServer::new(move || {
        // Called once on each worker's thread.
        let data = unclaimed
            .lock()
            .ok()
            .and_then(|mut s| s.pop())
            .unwrap_or_else(|| shared.clone());
        App::new()
            .wrap(actix_web::middleware::from_fn(body_timeout::bound_body))
            .wrap(actix_web::middleware::from_fn(admission::admit))
            .wrap(actix_web::middleware::from_fn(rate_limit::limit_requests))
            .wrap(security_headers())
            .wrap(actix_web::middleware::from_fn(metrics::record))
            .wrap(server_span::tracing_logger())
            .app_data(data.clone())
            .into_utoipa_app()
            .configure(routes::configure(body_limit))
            .into_app()
            .service(docs())
            .service(console::page())
            .default_service(web::to(routes::unrouted))
    })
    .workers(settings.workers)
    .client_request_timeout(settings.client_request_timeout)
    .shutdown_timeout(10)
    .listen(listener)?
    .run())
}
