//! Product endpoints. Reads are public; writes need a write token. Each write runs one command
//! through `store::product_repo::execute` (state + outbox in one transaction), then writes the
//! new state through to the Redis read model so a GET right after it sees that version or a
//! later one (read-your-writes).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::WriteAccess;
use super::{ApiError, AppState};
use crate::domain::product::{CreateProduct, Money, Product, ProductCommand, ProductStatus, UpdateProductDetails};
use crate::store::pool;
use crate::store::product_repo::{self, ExecuteOptions, ExecuteOutcome};

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

/// `POST /api/products/{id}/stock` body: exactly one of `delta` or `set`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockBody {
    /// Relative change.
    pub delta: Option<i64>,
    /// Absolute level.
    pub set: Option<i64>,
}

/// `GET /api/products` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Status filter.
    pub status: Option<String>,
    /// Category filter.
    pub category: Option<String>,
    /// Last id of the previous page.
    pub cursor: Option<Uuid>,
    /// Page size (1..=100, default 20).
    pub limit: Option<i64>,
}

/// A page of products.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    /// Products in id order.
    pub items: Vec<Product>,
    /// Cursor of the next page, absent on the last page.
    pub next_cursor: Option<Uuid>,
}

fn product_response(status: actix_web::http::StatusCode, p: &Product) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::ETAG, format!("\"{}\"", p.version)))
        .json(p)
}

/// Parses `If-Match: "N"` (also bare N or W/"N").
fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or_default().trim();
    let s = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    s.parse::<i64>()
        .map(Some)
        .map_err(|_| ApiError::field("If-Match", "must be the product version from its ETag, e.g. \"3\""))
}

fn correlation(req: &HttpRequest) -> Option<Uuid> {
    req.headers()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| Uuid::parse_str(s).ok())
}

/// Runs a command for the API and writes the result through to the cache. Every caller is a
/// handler guarded by [`WriteAccess`].
async fn run(
    state: &AppState,
    req: &HttpRequest,
    id: Uuid,
    command: ProductCommand,
    expected_version: Option<i64>,
) -> Result<Product, ApiError> {
    let opts = ExecuteOptions {
        command_id: None,
        correlation_id: correlation(req).or_else(|| Some(Uuid::now_v7())),
        expected_version,
        events_topic: state.names.events_topic(),
        notify: state.outbox_notify,
    };
    let mut conn = pool::get(&state.pool).await?;
    match product_repo::execute(&mut conn, id, &command, &opts).await? {
        ExecuteOutcome::Applied(applied) => {
            let (product, _event) = *applied;
            if let Err(e) = state.cache.put(&product).await {
                tracing::warn!(product.id = %id, error = %e, "cache write-through failed; evicting");
                let _ = state.cache.evict(id).await;
            }
            Ok(product)
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
#[utoipa::path(post, path = "/api/products", request_body = CreateProduct,
    responses((status = 201, body = Product), (status = 422, body = super::error::Problem), (status = 409, body = super::error::Problem)),
    security(("bearer" = [])))]
pub async fn create(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: web::Json<CreateProduct>,
) -> Result<HttpResponse, ApiError> {
    let id = Uuid::now_v7();
    let p = run(&state, &req, id, ProductCommand::CreateProduct(body.into_inner()), None).await?;
    let mut resp = product_response(actix_web::http::StatusCode::CREATED, &p);
    resp.headers_mut().insert(
        header::LOCATION,
        header::HeaderValue::from_str(&format!("/api/products/{id}")).map_err(|e| ApiError::Internal(e.to_string()))?,
    );
    Ok(resp)
}

/// `GET /api/products/{id}`: from Redis, falling back to Postgres; `X-Read-Source` tells which.
#[utoipa::path(get, path = "/api/products/{id}", params(("id" = Uuid, Path)),
    responses((status = 200, body = Product), (status = 404, body = super::error::Problem)))]
pub async fn get(state: web::Data<AppState>, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    match state.cache.get(id).await {
        Ok(Some(p)) => {
            let mut r = product_response(actix_web::http::StatusCode::OK, &p);
            r.headers_mut().insert(
                header::HeaderName::from_static("x-read-source"),
                header::HeaderValue::from_static("cache"),
            );
            return Ok(r);
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(product.id = %id, error = %e, "cache read failed; reading the database")
        }
    }
    let mut conn = pool::get(&state.pool).await?;
    let p = product_repo::find(&mut conn, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("product {id} not found")))?;
    let _ = state.cache.put(&p).await;
    let mut r = product_response(actix_web::http::StatusCode::OK, &p);
    r.headers_mut().insert(
        header::HeaderName::from_static("x-read-source"),
        header::HeaderValue::from_static("database"),
    );
    Ok(r)
}

/// `GET /api/products?status=&category=&cursor=&limit=`: keyset pagination by id.
#[utoipa::path(get, path = "/api/products", responses((status = 200, body = ProductPage)))]
pub async fn list(state: web::Data<AppState>, q: web::Query<ListQuery>) -> Result<HttpResponse, ApiError> {
    let status = match q.status.as_deref() {
        None => None,
        Some(s) => Some(
            ProductStatus::parse(s).ok_or_else(|| ApiError::field("status", "must be draft, published or archived"))?,
        ),
    };
    let limit = q.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::field("limit", "must be between 1 and 100"));
    }
    let mut conn = pool::get(&state.pool).await?;
    let items = product_repo::list(&mut conn, status, q.category.as_deref(), q.cursor, limit).await?;
    let next_cursor = if items.len() as i64 == limit {
        items.last().map(|p| p.id)
    } else {
        None
    };
    Ok(HttpResponse::Ok().json(ProductPage { items, next_cursor }))
}

/// `PATCH /api/products/{id}`: descriptive fields; `If-Match` → 412 on mismatch.
#[utoipa::path(patch, path = "/api/products/{id}", request_body = UpdateProductDetails, params(("id" = Uuid, Path)),
    responses((status = 200, body = Product), (status = 412, body = super::error::Problem)), security(("bearer" = [])))]
pub async fn update_details(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: web::Json<UpdateProductDetails>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let p = run(
        &state,
        &req,
        *id,
        ProductCommand::UpdateProductDetails(body.into_inner()),
        v,
    )
    .await?;
    Ok(product_response(actix_web::http::StatusCode::OK, &p))
}

/// `POST /api/products/{id}/price`.
#[utoipa::path(post, path = "/api/products/{id}/price", request_body = PriceBody, params(("id" = Uuid, Path)),
    responses((status = 200, body = Product)), security(("bearer" = [])))]
pub async fn change_price(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: web::Json<PriceBody>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let b = body.into_inner();
    let cmd = ProductCommand::ChangePrice {
        price: Money {
            amount_minor: b.amount_minor,
            currency: b.currency,
        },
    };
    let p = run(&state, &req, *id, cmd, v).await?;
    Ok(product_response(actix_web::http::StatusCode::OK, &p))
}

/// `POST /api/products/{id}/stock`: `{"delta": n}` or `{"set": n}`.
#[utoipa::path(post, path = "/api/products/{id}/stock", request_body = StockBody, params(("id" = Uuid, Path)),
    responses((status = 200, body = Product)), security(("bearer" = [])))]
pub async fn change_stock(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: web::Json<StockBody>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let cmd = match (body.delta, body.set) {
        (Some(delta), None) => ProductCommand::AdjustStock { delta },
        (None, Some(stock)) => ProductCommand::SetStock { stock },
        _ => return Err(ApiError::field("body", "give exactly one of delta or set")),
    };
    let p = run(&state, &req, *id, cmd, v).await?;
    Ok(product_response(actix_web::http::StatusCode::OK, &p))
}

async fn status_change(
    state: web::Data<AppState>,
    req: HttpRequest,
    id: Uuid,
    cmd: ProductCommand,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let p = run(&state, &req, id, cmd, v).await?;
    Ok(product_response(actix_web::http::StatusCode::OK, &p))
}

/// `POST /api/products/{id}/publish`.
#[utoipa::path(post, path = "/api/products/{id}/publish", params(("id" = Uuid, Path)),
    responses((status = 200, body = Product)), security(("bearer" = [])))]
pub async fn publish(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    status_change(state, req, *id, ProductCommand::PublishProduct).await
}

/// `POST /api/products/{id}/unpublish`.
#[utoipa::path(post, path = "/api/products/{id}/unpublish", params(("id" = Uuid, Path)),
    responses((status = 200, body = Product)), security(("bearer" = [])))]
pub async fn unpublish(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    status_change(state, req, *id, ProductCommand::UnpublishProduct).await
}

/// `POST /api/products/{id}/archive`.
#[utoipa::path(post, path = "/api/products/{id}/archive", params(("id" = Uuid, Path)),
    responses((status = 200, body = Product)), security(("bearer" = [])))]
pub async fn archive(
    _auth: WriteAccess,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    status_change(state, req, *id, ProductCommand::ArchiveProduct).await
}
