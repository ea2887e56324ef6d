//! HTTP API (actix-web): products, commands, search, health, metrics, OpenAPI.
//!
//! Writes run the product aggregate and commit state + outbox in one transaction through
//! `store::product_repo`; nothing here produces product events to Kafka. `POST /api/commands`
//! hands a command to the write side through `product.commands`.
//!
//! A dependency a request can do without never fails or holds it: Redis calls are bounded and
//! behind a circuit breaker, search is bounded and answers 503 with `Retry-After`, and a
//! transient database failure is a 503 with `Retry-After` too (`error`). Product writes
//! accept an `Idempotency-Key` (`idempotency`).

pub mod auth;
pub mod commands;
pub mod error;
pub mod health;
pub mod idempotency;
pub mod metrics;
pub mod openapi;
pub mod products;
pub mod search;

use actix_web::{web, App, HttpServer};
use rdkafka::producer::FutureProducer;
use std::net::TcpListener;
use std::time::Duration;

use crate::cache::ProductCache;
use crate::config::Names;
use crate::search::SearchClient;
use crate::store::PgPool;

pub use error::ApiError;

/// Largest request body accepted.
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
    pub producer: FutureProducer,
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
    /// Lifetime of an `Idempotency-Key` record (`IDEMPOTENCY_KEY_TTL_SECS`).
    pub idempotency_ttl: Duration,
}

/// Registers every route on an actix `ServiceConfig` (shared by `serve` and tests).
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::JsonConfig::default()
            .limit(BODY_LIMIT_BYTES)
            .error_handler(error::json_error),
    )
    .app_data(web::QueryConfig::default().error_handler(error::query_error))
    .app_data(web::PathConfig::default().error_handler(error::path_error))
    .app_data(web::PayloadConfig::default().limit(BODY_LIMIT_BYTES))
    .service(
        web::scope("/health")
            .route("/", web::get().to(health::health))
            .route("", web::get().to(health::health))
            .route("/live", web::get().to(health::live))
            .route("/ready", web::get().to(health::ready)),
    )
    .route("/metrics", web::get().to(metrics::metrics))
    .route("/openapi.json", web::get().to(openapi::openapi_json))
    .service(
        web::scope("/api")
            .route("/search", web::get().to(search::search))
            .route("/commands", web::post().to(commands::submit))
            .route("/commands/{id}", web::get().to(commands::status))
            .route("/products", web::post().to(products::create))
            .route("/products", web::get().to(products::list))
            .route("/products/{id}", web::get().to(products::get))
            .route("/products/{id}", web::patch().to(products::update_details))
            .route("/products/{id}/price", web::post().to(products::change_price))
            .route("/products/{id}/stock", web::post().to(products::change_stock))
            .route("/products/{id}/publish", web::post().to(products::publish))
            .route("/products/{id}/unpublish", web::post().to(products::unpublish))
            .route("/products/{id}/archive", web::post().to(products::archive)),
    )
    .default_service(web::to(not_found));
}

async fn not_found() -> Result<actix_web::HttpResponse, ApiError> {
    Err(ApiError::NotFound("no such route".into()))
}

/// Starts the API on `listener`; the returned server runs until stopped.
pub fn run(listener: TcpListener, state: AppState, workers: usize) -> std::io::Result<actix_web::dev::Server> {
    let data = web::Data::new(state);
    Ok(HttpServer::new(move || {
        App::new()
            .wrap(actix_web::middleware::from_fn(metrics::record))
            .app_data(data.clone())
            .configure(configure)
    })
    .workers(workers)
    .shutdown_timeout(10)
    .listen(listener)?
    .run())
}
