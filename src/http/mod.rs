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

pub mod auth;
pub mod body_timeout;
pub mod commands;
pub mod console;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod json_body;
pub mod metrics;
pub mod openapi;
pub mod products;
pub mod rate_limit;
pub mod schemas;
pub mod search;

use actix_web::middleware::DefaultHeaders;
use actix_web::{web, App, HttpServer};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use crate::bus::KafkaConnection;
use crate::cache::ProductCache;
use crate::config::{ApiConfig, Names};
use crate::ops::lag_history::LagHistory;
use crate::search::SearchClient;
use crate::store::PgPool;

pub use error::ApiError;
pub use rate_limit::RateLimits;

/// Default largest request body (`HTTP_BODY_LIMIT_BYTES`).
pub const BODY_LIMIT_BYTES: usize = 64 * 1024;

/// Everything handlers share; cheap to clone (pools and clients are handles).
#[derive(Clone)]
pub struct AppState {
    /// Postgres pool.
    pub pool: PgPool,
    /// Redis product cache.
    pub cache: ProductCache,
    /// OpenSearch client.
    pub search: SearchClient,
    /// Producer for `product.commands` (and the Kafka health probe).
    pub producer: crate::bus::FutureProducer,
    /// Topic, group, index and key names.
    pub names: Names,
    /// Bearer tokens that may write.
    pub write_tokens: Vec<String>,
    /// Bearer tokens that may only read admin views.
    pub read_tokens: Vec<String>,
    /// NOTIFY the relay on each outbox insert.
    pub outbox_notify: bool,
    /// Bound of each health check.
    pub health_timeout: Duration,
    /// Bound of a search query (`SEARCH_REQUEST_TIMEOUT_MS`); past it, 503.
    pub search_timeout: Duration,
    /// How long a product read retries a lost database connection.
    pub read_retry_budget: Duration,
    /// Lifetime of an `Idempotency-Key` record (`IDEMPOTENCY_KEY_TTL_SECS`).
    pub idempotency_ttl: Duration,
    /// Per-client request and failed-authentication limits.
    pub rate_limits: Arc<RateLimits>,
    /// Bound of reading a request body (`HTTP_BODY_READ_TIMEOUT_MS`).
    pub body_read_timeout: Duration,
    /// Kafka connection settings, for the console's group and DLQ reads.
    pub kafka: KafkaConnection,
    /// Lag samples behind the console's chart (taken while someone looks).
    pub lag_history: Arc<tokio::sync::Mutex<LagHistory>>,
}

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

/// Every path and the methods it answers; any other method on it is a 405 with this `Allow`.
pub const ROUTES: &[(&str, &str)] = &[
    ("/health/", "GET"),
    ("/health", "GET"),
    ("/health/live", "GET"),
    ("/health/ready", "GET"),
    ("/openapi.json", "GET"),
    ("/api/search", "GET"),
    ("/api/commands", "POST"),
    ("/api/commands/{id}", "GET"),
    ("/api/products", "GET, POST"),
    ("/api/products/{id}", "GET, PATCH"),
    ("/api/products/{id}/price", "POST"),
    ("/api/products/{id}/stock", "POST"),
    ("/api/products/{id}/publish", "POST"),
    ("/api/products/{id}/unpublish", "POST"),
    ("/api/products/{id}/archive", "POST"),
    ("/console/api/overview", "GET"),
    ("/console/api/lag", "GET"),
    ("/console/api/dead-letters", "GET"),
    ("/console/api/dead-letters/redrive", "POST"),
    ("/console/api/outbox/parked", "GET"),
    ("/console/api/outbox/retry", "POST"),
];

/// A resource at `path` whose other methods answer 405 with `Allow` from [`ROUTES`].
fn resource(path: &'static str) -> actix_web::Resource {
    #[expect(clippy::expect_used, reason = "start-up: every registered path is listed in ROUTES")]
    let allow = ROUTES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, m)| *m)
        .expect("path listed in ROUTES");
    web::resource(path).default_service(web::to(move || async move {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed { allow })
    }))
}

/// Registers every route on an actix `ServiceConfig` (shared by `serve` and tests); bodies up to
/// `body_limit` bytes.
pub fn configure(body_limit: usize) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        cfg.app_data(
            web::JsonConfig::default()
                .limit(body_limit)
                .error_handler(error::json_error),
        )
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .app_data(web::PayloadConfig::default().limit(body_limit))
        .service(resource("/health/").route(web::get().to(health::health)))
        .service(resource("/health").route(web::get().to(health::health)))
        .service(resource("/health/live").route(web::get().to(health::live)))
        .service(resource("/health/ready").route(web::get().to(health::ready)))
        .service(resource("/openapi.json").route(web::get().to(openapi::openapi_json)))
        .service(docs())
        .service(resource("/api/search").route(web::get().to(search::search)))
        .service(resource("/api/commands").route(web::post().to(commands::submit)))
        .service(resource("/api/commands/{id}").route(web::get().to(commands::status)))
        .service(
            resource("/api/products")
                .route(web::get().to(products::list))
                .route(web::post().to(products::create)),
        )
        .service(
            resource("/api/products/{id}")
                .route(web::get().to(products::get))
                .route(web::patch().to(products::update_details)),
        )
        .service(resource("/api/products/{id}/price").route(web::post().to(products::change_price)))
        .service(resource("/api/products/{id}/stock").route(web::post().to(products::change_stock)))
        .service(resource("/api/products/{id}/publish").route(web::post().to(products::publish)))
        .service(resource("/api/products/{id}/unpublish").route(web::post().to(products::unpublish)))
        .service(resource("/api/products/{id}/archive").route(web::post().to(products::archive)))
        // The console's endpoints before its page scope, which claims the rest of /console.
        .service(resource("/console/api/overview").route(web::get().to(console::api::overview)))
        .service(resource("/console/api/lag").route(web::get().to(console::api::lag)))
        .service(resource("/console/api/dead-letters").route(web::get().to(console::api::dead_letters)))
        .service(resource("/console/api/dead-letters/redrive").route(web::post().to(console::api::redrive)))
        .service(resource("/console/api/outbox/parked").route(web::get().to(console::api::parked)))
        .service(resource("/console/api/outbox/retry").route(web::post().to(console::api::retry)))
        .service(console::page())
        .default_service(web::to(not_found));
    }
}

async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}

/// Starts the API on `listener`; the returned server runs until stopped. Middleware, outermost
/// first: request metrics, security headers, the per-client rate limit, the body read bound.
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
            .wrap(actix_web::middleware::from_fn(rate_limit::limit_requests))
            .wrap(security_headers())
            .wrap(actix_web::middleware::from_fn(metrics::record))
            .app_data(data.clone())
            .configure(configure(body_limit))
    })
    .workers(settings.workers)
    .client_request_timeout(settings.client_request_timeout)
    .shutdown_timeout(10)
    .listen(listener)?
    .run())
}
