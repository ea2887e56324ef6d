//! Product endpoints. Anonymous callers read published products only: an unpublished product
//! by id is a 404 (its existence does not leak), a list without a status shows published
//! products, and asking for another status needs a token (401). Read and write tokens see
//! every product; writes need a write token. Each write runs one command
//! through `store::product_repo::execute` (state + outbox in one transaction), releases its
//! Postgres connection, then writes the new state through to the Redis read model so a GET
//! right after it sees that version or a later one (read-your-writes).
//!
//! Redis never fails or holds a request: its calls are bounded and behind a circuit breaker
//! (`cache::ProductCache::for_requests`), a failed read falls back to Postgres, a failed
//! write-through is remembered so this process does not serve the stale entry, and no Postgres
//! connection is held while Redis is called. Writes accept an `Idempotency-Key`
//! (see `http::idempotency`).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{Caller, WriteAccess};
use super::idempotency::{self, IDEMPOTENCY_KEY_HEADER, REPLAYED_HEADER};
use super::json_body::JsonBody;
use super::{ApiError, AppState};
use crate::cache::CachedDocument;
use crate::domain::product::{
    bounded_text, CreateProduct, Money, Product, ProductCommand, ProductStatus, UpdateProductDetails,
    SHORT_TEXT_MAX_CHARS,
};
use crate::store::idempotency_repo::{self, Guarded, StoredResponse};
use crate::store::pool::{self, PgPool};
use crate::store::product_repo::{self, ExecuteOptions, ExecuteOutcome};
use crate::store::StoreError;
use crate::telemetry::trace_context::{TraceParent, TRACEPARENT};

/// Header telling where a read came from: `cache` or `database`.
pub const READ_SOURCE_HEADER: &str = "X-Read-Source";
/// Optional header carrying a correlation id onto the events.
pub const CORRELATION_HEADER: &str = "X-Correlation-Id";

/// `POST /api/products/{id}/price` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    /// Amount in minor units.
    pub amount_minor: i64,
    /// ISO 4217 currency.
    pub currency: String,
}

/// `POST /api/products/{id}/stock` body: exactly one of `{"delta": n}` (n != 0) or
/// `{"set": n}` (n >= 0); anything else, `null` values included, is a 422.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged, expecting = "exactly one of {\"delta\": n} or {\"set\": n}")]
pub enum StockBody {
    /// Relative change.
    Delta(StockDelta),
    /// Absolute level.
    Set(StockSet),
}

/// `{"delta": n}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockDelta {
    /// Relative change, not 0.
    pub delta: i64,
}

/// `{"set": n}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockSet {
    /// Absolute level, >= 0.
    pub set: i64,
}

/// Largest page of `GET /api/products`.
pub const MAX_LIST_LIMIT: i64 = 100;

/// `GET /api/products` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Status filter; anything but `published` needs a token. Without it, anonymous callers
    /// get published products and token holders every product.
    #[param(value_type = Option<super::schemas::ProductStatusSchema>, inline)]
    pub status: Option<String>,
    /// Category filter (exact match).
    #[param(max_length = 100)]
    pub category: Option<String>,
    /// Last id of the previous page (its `next_cursor`).
    pub cursor: Option<Uuid>,
    /// Page size.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
}

/// A page of products.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    /// Products in id order.
    #[schema(value_type = Vec<super::schemas::ProductSchema>)]
    pub items: Vec<Product>,
    /// Cursor of the next page, absent on the last page.
    pub next_cursor: Option<Uuid>,
}

fn product_response(status: actix_web::http::StatusCode, p: &Product) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::ETAG, version_tag(p.version)))
        .json(p)
}

/// The ETag of a product version: `"N"`.
fn version_tag(version: i64) -> String {
    format!("\"{version}\"")
}

/// Parses `If-Match: "N"` (also bare N or W/"N").
fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or_default().trim();
    parse_version_tag(s)
        .map(Some)
        .ok_or_else(|| ApiError::field("If-Match", "must be the product version from its ETag, e.g. \"3\""))
}

/// `[W/]["]N["]` with N an optional sign and 1 to 18 digits (the OpenAPI document's pattern).
fn parse_version_tag(s: &str) -> Option<i64> {
    let s = s.strip_prefix("W/").unwrap_or(s);
    let s = s.strip_prefix('"').unwrap_or(s);
    let s = s.strip_suffix('"').unwrap_or(s);
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn correlation(req: &HttpRequest) -> Option<Uuid> {
    req.headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// How a successful write answers.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// 201 with `Location`.
    Created,
    /// 200.
    Updated,
}

/// The response of a successful write, in the form an idempotency record keeps it.
fn write_response(reply: Reply, p: &Product) -> Result<StoredResponse, ApiError> {
    let mut headers = serde_json::Map::new();
    headers.insert(header::ETAG.as_str().to_owned(), version_tag(p.version).into());
    let status = match reply {
        Reply::Created => {
            headers.insert(
                header::LOCATION.as_str().to_owned(),
                format!("/api/products/{}", p.id).into(),
            );
            actix_web::http::StatusCode::CREATED
        }
        Reply::Updated => actix_web::http::StatusCode::OK,
    };
    Ok(StoredResponse {
        status: status.as_u16(),
        headers,
        body: serde_json::to_value(p).map_err(|e| ApiError::Internal(e.to_string()))?,
    })
}

/// The HTTP answer of a write, fresh or replayed: the same status, headers and body either way.
fn http_response(r: &StoredResponse, replayed: bool) -> Result<HttpResponse, ApiError> {
    let status = actix_web::http::StatusCode::from_u16(r.status).map_err(|e| ApiError::Internal(e.to_string()))?;
    let mut b = HttpResponse::build(status);
    for (name, value) in &r.headers {
        if let Some(v) = value.as_str() {
            b.insert_header((name.as_str(), v));
        }
    }
    if replayed {
        b.insert_header((REPLAYED_HEADER, "true"));
    }
    Ok(b.json(&r.body))
}

/// Runs a command for the API, then writes the result through to the cache once the Postgres
/// connection is back in the pool. With an `Idempotency-Key` the command runs at most once
/// per key and the record of its answer commits with it. Every caller is a handler guarded by
/// [`WriteAccess`].
#[tracing::instrument(level = "debug", skip_all,
    fields(product.id = %id, command = command.command_type(), trace_id = tracing::field::Empty))]
async fn apply_command(
    state: &AppState,
    req: &HttpRequest,
    id: Uuid,
    command: ProductCommand,
    expected_version: Option<i64>,
    reply: Reply,
) -> Result<HttpResponse, ApiError> {
    // Input that breaks a rule whatever the product's state is a 422 before any precondition
    // (If-Match, existence) is looked at.
    crate::domain::product::validate(&command)?;
    let trace = TraceParent::continue_or_start(req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()));
    tracing::Span::current().record("trace_id", trace.trace_id());
    let opts = ExecuteOptions {
        command_id: None,
        correlation_id: correlation(req).or_else(|| Some(Uuid::now_v7())),
        traceparent: Some(trace.to_string()),
        expected_version,
        events_topic: state.names.events_topic(),
        notify: state.outbox_notify,
        // Only `create` runs CreateProduct here, always on an id it has just made.
        fresh_id: matches!(command, ProductCommand::CreateProduct(_)),
    };
    let key = idempotency::key(req)?;
    let outcome = {
        let mut conn = pool::get(&state.pool).await?;
        match key {
            None => product_repo::run_command(&mut conn, id, &command, &opts).await?,
            Some(key) => {
                let scope = idempotency::scope(req, key);
                let fingerprint =
                    idempotency::fingerprint(req, &crate::bus::envelope::CommandMessage::from(command.clone()))?;
                let remember = move |o: &ExecuteOutcome| match o {
                    ExecuteOutcome::Applied(applied) => write_response(reply, &applied.0).ok(),
                    _ => None,
                };
                let guarded = idempotency_repo::execute_once(
                    &mut conn,
                    &scope,
                    &fingerprint,
                    state.idempotency_ttl,
                    id,
                    &command,
                    &opts,
                    remember,
                )
                .await?;
                match guarded {
                    Guarded::Executed(o) => {
                        idempotency::count("executed");
                        o
                    }
                    Guarded::Replayed(r) => {
                        idempotency::count("replayed");
                        tracing::debug!(product.id = %id, route = %scope.route, "replayed an idempotent write");
                        return http_response(&r, true);
                    }
                    Guarded::KeyReused => {
                        idempotency::count("mismatch");
                        return Err(ApiError::field(
                            IDEMPOTENCY_KEY_HEADER,
                            "was already used for a request with another body",
                        ));
                    }
                    Guarded::InFlight => {
                        idempotency::count("in_flight");
                        return Err(ApiError::Conflict(format!(
                            "a request with this {IDEMPOTENCY_KEY_HEADER} is still in progress"
                        )));
                    }
                }
            }
        }
        // The connection goes back to the pool here, before any Redis call.
    };
    match outcome {
        ExecuteOutcome::Applied(applied) => {
            let (product, _event) = *applied;
            if let Err(e) = state.cache.put(&product).await {
                // Bounded and behind the breaker; the entry is marked stale in this process and
                // the projection rewrites it. The breaker logs state changes.
                tracing::debug!(product.id = %id, error = %e, "cache write-through skipped");
            }
            let mut r = http_response(&write_response(reply, &product)?, false)?;
            // The client learns the trace its write belongs to.
            if let Ok(v) = header::HeaderValue::from_str(&trace.to_string()) {
                r.headers_mut().insert(header::HeaderName::from_static(TRACEPARENT), v);
            }
            Ok(r)
        }
        ExecuteOutcome::Rejected(rule) => {
            if matches!(rule, crate::domain::product::DomainError::NotCreated) {
                return Err(ApiError::NotFound(format!("product {id} not found")));
            }
            Err(rule.into())
        }
        ExecuteOutcome::Duplicate { .. } => Err(ApiError::Conflict("command already processed".into())),
    }
}

/// `POST /api/products`: 201, Location and the product with its version.
#[utoipa::path(post, path = "/api/products", request_body = super::schemas::CreateProductSchema, params(("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key with the same body within 24 h returns the first response without applying again; another body is a 422, a request still in flight with the key a 409")),
    responses((status = 201, body = super::schemas::ProductSchema), (status = 422, body = super::error::Problem), (status = 409, body = super::error::Problem),
        (status = 503, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody<CreateProduct>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::now_v7();
    apply_command(
        &state,
        &req,
        id,
        ProductCommand::CreateProduct(body.into_inner()),
        None,
        Reply::Created,
    )
    .await
}

/// `GET /api/products/{id}`: from Redis, falling back to Postgres; `X-Read-Source` tells which.
#[utoipa::path(get, path = "/api/products/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = super::schemas::ProductSchema), (status = 404, body = super::error::Problem)))]
#[tracing::instrument(level = "debug", skip_all, fields(product.id = %id))]
pub async fn get(caller: Caller, state: web::Data<AppState>, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let not_found = || ApiError::NotFound(format!("product {id} not found"));
    let visible = |status: ProductStatus| caller.0.sees_unpublished() || status == ProductStatus::Published;
    // A cache hit is served as the bytes the writer stored: only its status and version are
    // read from it (the same JSON `product_response` would write).
    let from_cache = |d: CachedDocument| {
        if !visible(d.status) {
            return Err(not_found());
        }
        Ok(HttpResponse::Ok()
            .insert_header((header::ETAG, version_tag(d.version)))
            .insert_header((
                header::HeaderName::from_static("x-read-source"),
                header::HeaderValue::from_static("cache"),
            ))
            .content_type(header::ContentType::json())
            .body(d.json))
    };
    let cache_failed = match state.cache.get_document(id).await {
        Ok(Some(d)) => return from_cache(d),
        Ok(None) => false,
        Err(e) => {
            // Bounded and behind the breaker; the breaker logs state changes.
            tracing::debug!(product.id = %id, error = %e, "cache read skipped; reading the database");
            true
        }
    };
    // The connection goes back to the pool before the read-through below.
    let found = match find_product(&state.pool, id, state.read_retry_budget).await {
        Ok(found) => found,
        // Neither answered in time: when the cache only ran out of its short bound (a busy
        // moment, not a miss) and the database is unavailable, the cache gets a second try
        // before the caller sees a 503.
        Err(e) if cache_failed && e.is_transient() => match state.cache.get_document(id).await {
            Ok(Some(d)) => return from_cache(d),
            _ => return Err(e.into()),
        },
        Err(e) => return Err(e.into()),
    };
    let p = found.ok_or_else(not_found)?;
    let _ = state.cache.put(&p).await;
    if !visible(p.status) {
        return Err(not_found());
    }
    let mut r = product_response(actix_web::http::StatusCode::OK, &p);
    r.headers_mut().insert(
        header::HeaderName::from_static("x-read-source"),
        header::HeaderValue::from_static("database"),
    );
    Ok(r)
}

/// Reads a product. A read that lost its connection (session terminated under it, or a new
/// connection closed while being set up) runs again, a few times with a short jittered
/// pause, while the read is younger than `budget` (`DATABASE_READ_RETRY_MS`): a read has no effect to repeat, and
/// the pool verifies the connection it hands out next. A failure that took its time (a pool
/// or statement timeout) is not repeated: it has already waited its bound.
#[tracing::instrument(level = "debug", skip(pool, budget))]
async fn find_product(pool: &PgPool, id: Uuid, budget: std::time::Duration) -> Result<Option<Product>, StoreError> {
    use backon::Retryable;
    let started = std::time::Instant::now();
    let read = || async {
        let mut conn = pool::get(pool).await?;
        product_repo::find(&mut conn, id).await
    };
    read.retry(
        backon::ExponentialBuilder::default()
            .with_min_delay(std::time::Duration::from_millis(40))
            .with_max_times(8)
            .with_jitter(),
    )
    .when(|e: &StoreError| e.is_transient() && started.elapsed() < budget)
    .notify(|e, pause| {
        tracing::debug!(product.id = %id, error = %e, retry_in_ms = pause.as_millis() as u64,
            "database read lost its connection; reading again");
    })
    .await
}

/// `GET /api/products?status=&category=&cursor=&limit=`: keyset pagination by id.
#[utoipa::path(get, path = "/api/products", params(ListQuery), responses((status = 200, body = ProductPage)))]
pub async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            ProductStatus::parse(s).ok_or_else(|| ApiError::field("status", "must be draft, published or archived"))?,
        ),
    };
    let status = match (status, caller.0.sees_unpublished()) {
        (Some(s), false) if s != ProductStatus::Published => {
            return Err(ApiError::Unauthorized(
                "listing unpublished products needs a bearer token".into(),
            ))
        }
        (None, false) => Some(ProductStatus::Published),
        (s, _) => s,
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=MAX_LIST_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be between 1 and {MAX_LIST_LIMIT}"),
        ));
    }
    // Text that cannot be stored cannot match; refuse it rather than send it to the database.
    let category = q
        .category
        .as_deref()
        .map(|c| bounded_text("category", c, SHORT_TEXT_MAX_CHARS))
        .transpose()?;
    let mut conn = pool::get(&state.pool).await?;
    let items = product_repo::list(&mut conn, status, category.as_deref(), q.cursor, limit).await?;
    let next_cursor = if items.len() as i64 == limit {
        items.last().map(|p| p.id)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(ProductPage { items, next_cursor }))
}

/// `PATCH /api/products/{id}`: descriptive fields; `If-Match` → 412 on mismatch.
#[utoipa::path(patch, path = "/api/products/{id}", request_body = super::schemas::UpdateProductDetailsSchema, params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key with the same body within 24 h returns the first response without applying again; another body is a 422, a request still in flight with the key a 409")),
    responses((status = 200, body = super::schemas::ProductSchema), (status = 412, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn update_details(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: JsonBody<UpdateProductDetails>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    apply_command(
        &state,
        &req,
        *id,
        ProductCommand::UpdateProductDetails(body.into_inner()),
        v,
        Reply::Updated,
    )
    .await
}

/// `POST /api/products/{id}/price`.
#[utoipa::path(post, path = "/api/products/{id}/price", request_body = PriceBody, params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key with the same body within 24 h returns the first response without applying again; another body is a 422, a request still in flight with the key a 409")),
    responses((status = 200, body = super::schemas::ProductSchema)), security(("bearer" = [])))]
pub async fn change_price(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: JsonBody<PriceBody>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let b = body.into_inner();
    let cmd = ProductCommand::ChangePrice {
        price: Money {
            amount_minor: b.amount_minor,
            currency: b.currency,
        },
    };
    apply_command(&state, &req, *id, cmd, v, Reply::Updated).await
}

/// `POST /api/products/{id}/stock`: `{"delta": n}` or `{"set": n}`.
#[utoipa::path(post, path = "/api/products/{id}/stock", request_body = StockBody, params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key with the same body within 24 h returns the first response without applying again; another body is a 422, a request still in flight with the key a 409")),
    responses((status = 200, body = super::schemas::ProductSchema)), security(("bearer" = [])))]
pub async fn change_stock(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: JsonBody<StockBody>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let cmd = match body.into_inner() {
        StockBody::Delta(StockDelta { delta }) => ProductCommand::AdjustStock { delta },
        StockBody::Set(StockSet { set }) => ProductCommand::SetStock { stock: set },
    };
    apply_command(&state, &req, *id, cmd, v, Reply::Updated).await
}

async fn status_change(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: Uuid,
    cmd: ProductCommand,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    apply_command(&state, &req, id, cmd, v, Reply::Updated).await
}

/// `POST /api/products/{id}/publish`.
#[utoipa::path(post, path = "/api/products/{id}/publish", params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key with the same body within 24 h returns the first response without applying again; another body is a 422, a request still in flight with the key a 409")),
    responses((status = 200, body = super::schemas::ProductSchema)), security(("bearer" = [])))]
pub async fn publish(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    status_change(state, req, *id, ProductCommand::PublishProduct).await
}

/// `POST /api/products/{id}/unpublish`.
#[utoipa::path(post, path = "/api/products/{id}/unpublish", params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key with the same body within 24 h returns the first response without applying again; another body is a 422, a request still in flight with the key a 409")),
    responses((status = 200, body = super::schemas::ProductSchema)), security(("bearer" = [])))]
pub async fn unpublish(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    status_change(state, req, *id, ProductCommand::UnpublishProduct).await
}

/// `POST /api/products/{id}/archive`.
#[utoipa::path(post, path = "/api/products/{id}/archive", params(("id" = Uuid, Path), ("Idempotency-Key" = Option<String>, Header, description = "Makes a retry safe: the same key with the same body within 24 h returns the first response without applying again; another body is a 422, a request still in flight with the key a 409")),
    responses((status = 200, body = super::schemas::ProductSchema)), security(("bearer" = [])))]
pub async fn archive(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    status_change(state, req, *id, ProductCommand::ArchiveProduct).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_tags_follow_the_documented_pattern() {
        for (tag, v) in [("3", 3), ("\"3\"", 3), ("W/\"3\"", 3), ("-1", -1), ("+7", 7)] {
            assert_eq!(parse_version_tag(tag), Some(v), "{tag}");
        }
        for tag in ["", "\"\"", "\"\"3\"\"", "3.0", "W/ 3", "1234567890123456789", "abc"] {
            assert_eq!(parse_version_tag(tag), None, "{tag}");
        }
    }
}
