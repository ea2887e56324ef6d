//! Product endpoints. Anonymous callers read published products only: an unpublished product
//! by id is a 404 (its existence does not leak), a list without a status shows published
//! products, and asking for another status needs a token (401). Sellers also see and change
//! their own products (another seller's draft is a 404 to them, on reads and writes alike);
//! catalog admins, operators and readers see every product; writes need the seller or
//! catalog-admin role (`domain::access`).
//!
//! Each handler declares its route, parameters, bodies and every answer once (its
//! `#[utoipa::path]` beside actix's route macro; `routes` registers and documents it), turns
//! the request into one call of the application layer (`app::Catalog`: a write runs one
//! command, state + outbox in one transaction, then writes the new state through to Redis for
//! read-your-writes; a read tries Redis, then Postgres) and the outcome back into HTTP: ETag,
//! `Location`, `X-Read-Source`, the `Idempotency-Key` replay (see `http::idempotency`).

use actix_web::http::header;
use actix_web::{get, patch, post, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use uuid::Uuid;

use super::auth::{Caller, Needs, Principal, ProductWriter};
use super::bodies::{
    CreateProductBody, ProductBody, ProductPage, StatusBody, StockBody, StockDelta, StockSet, UpdateDetailsBody,
};
use super::contract::{problems, IdempotencyKey, IfMatch};
use super::idempotency::{self, REPLAYED_HEADER};
use super::json_body::JsonBody;
use super::{ApiError, AppState};
use crate::app::catalog::{Found, Once, Write, Written};
use crate::domain::product::{
    bounded_text, Money, Product, ProductCommand, ProductStatus, DEFAULT_OWNER, SHORT_TEXT_MAX_CHARS,
};
use crate::store::idempotency_repo::StoredResponse;
use crate::telemetry::trace_context::{TraceParent, TRACEPARENT};

/// Header telling where a read came from: `cache` or `database`.
pub const READ_SOURCE_HEADER: &str = "X-Read-Source";
/// Optional header carrying a correlation id onto the events.
pub const CORRELATION_HEADER: &str = "X-Correlation-Id";

/// Largest page of `GET /api/products`.
pub const MAX_LIST_LIMIT: i64 = 100;

/// `GET /api/products` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Status filter; anything but `published` needs a token, and shows a seller their own
    /// products only. Without it, anonymous callers and sellers get published products, and
    /// catalog admins, operators and readers every product.
    #[param(inline)]
    pub status: Option<StatusBody>,
    /// Category filter (exact match).
    #[param(schema_with = super::contract::fields::short_text)]
    pub category: Option<String>,
    /// The owning seller's products only.
    #[param(schema_with = super::contract::fields::short_text)]
    pub owner: Option<String>,
    /// Last id of the previous page (its `next_cursor`).
    pub cursor: Option<Uuid>,
    /// Page size.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
}

/// The ETag of a product version: `"N"`.
fn version_tag(version: i64) -> String {
    format!("\"{version}\"")
}

/// Parses `If-Match: "N"` (also bare N or W/"N").
pub fn if_match(req: &HttpRequest) -> Result<Option<i64>, ApiError> {
    let Some(v) = req.headers().get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v.to_str().unwrap_or_default().trim();
    parse_version_tag(s)
        .map(Some)
        .ok_or_else(|| ApiError::field("If-Match", "must be the product version from its ETag, e.g. \"3\""))
}

/// `[W/]["]N["]` with N an optional sign and 1 to 18 digits (`contract::fields::IF_MATCH_PATTERN`).
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
pub(super) enum Reply {
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
        body: serde_json::to_value(ProductBody::from(p)).map_err(|e| ApiError::Internal(e.to_string()))?,
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

/// Runs `command` through the catalog for a handler guarded by [`Needs<ProductWriter>`](super::auth::Needs): the caller's
/// trace, correlation id and `Idempotency-Key` in, the write's answer (or its replay) out.
#[tracing::instrument(level = "debug", skip_all,
    fields(product.id = %id, command = command.command_type(), trace_id = tracing::field::Empty))]
pub(super) async fn write(
    state: &AppState,
    req: &HttpRequest,
    caller: &Principal,
    id: Uuid,
    command: ProductCommand,
    expected_version: Option<i64>,
    reply: Reply,
) -> Result<HttpResponse, ApiError> {
    let trace = TraceParent::continue_or_start(req.headers().get(TRACEPARENT).and_then(|v| v.to_str().ok()));
    tracing::Span::current().record("trace_id", trace.trace_id());
    let once = match idempotency::key(req)? {
        None => None,
        Some(key) => Some(Once {
            scope: idempotency::scope(req, caller, key),
            fingerprint: idempotency::fingerprint(
                req,
                &crate::bus::envelope::CommandMessage::try_from(command.clone())
                    .map_err(|c| ApiError::Internal(format!("{} has no wire form", c.command_type())))?,
            )?,
            remember: Box::new(move |p: &Product| write_response(reply, p).ok()),
        }),
    };
    let w = Write {
        id,
        command,
        expected_version,
        correlation_id: correlation(req).or_else(|| Some(Uuid::now_v7())),
        traceparent: Some(trace.to_string()),
        actor: Some(caller.subject.clone()),
        scope: caller.scope(),
    };
    match state.catalog.write(w, once).await? {
        Written::Replayed(r) => http_response(&r, true),
        Written::Applied(product) => {
            let mut r = http_response(&write_response(reply, &product)?, false)?;
            // The client learns the trace its write belongs to.
            if let Ok(v) = header::HeaderValue::from_str(&trace.to_string()) {
                r.headers_mut().insert(header::HeaderName::from_static(TRACEPARENT), v);
            }
            Ok(r)
        }
    }
}

/// Create a draft product: 201, `Location` and the product with its version (`ETag`).
#[utoipa::path(tag = "products", operation_id = "create_product", request_body = CreateProductBody, params(IdempotencyKey),
    responses(
        (status = 201, description = "Created", body = ProductBody,
            headers(("Location" = String, description = "The product's URL"), ("ETag" = String, description = "Its version"))),
        problems::Limits, problems::Writer, problems::Body, problems::Conflicts),
    security(("bearer" = ["seller", "catalog-admin"])))]
#[post("/api/products")]
pub async fn create(
    auth: Needs<ProductWriter>,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody<CreateProductBody>,
) -> Result<HttpResponse, ApiError> {
    // A seller's product is theirs (the catalog stamps it); a catalog admin's the default seller's.
    let command = ProductCommand::CreateProduct(body.into_inner().into_command(DEFAULT_OWNER));
    write(&state, &req, &auth.0, Uuid::now_v7(), command, None, Reply::Created).await
}

/// Read one product, from Redis or else Postgres (`X-Read-Source` says which). Anonymous
/// callers see published products only: another is a 404.
#[utoipa::path(tag = "products", operation_id = "get_product", params(("id" = Uuid, Path, description = "Product id")),
    responses(
        (status = 200, description = "The product", body = ProductBody,
            headers(("ETag" = String, description = "Its version"), ("X-Read-Source" = String, description = "`cache` or `database`"))),
        problems::Limits, problems::OptionalToken, problems::ById),
    security((), ("bearer" = [])))]
#[get("/api/products/{id}")]
#[tracing::instrument(level = "debug", skip_all, fields(product.id = %id))]
pub async fn get(caller: Caller, state: web::Data<AppState>, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let found = state
        .catalog
        .read(id)
        .await?
        .filter(|f| caller.may_see(f.owner(), f.status()))
        .ok_or_else(|| ApiError::NotFound(format!("product {id} not found")))?;
    // Either way the bytes the cache stores: the product's JSON, which is `ProductBody`'s
    // (`bodies::tests::the_product_answer_is_the_json_the_read_model_stores`).
    let (version, source, body) = match found {
        Found::Cached(d) => (d.version, "cache", d.json),
        Found::Stored(d) => (d.version, "database", d.json),
    };
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, version_tag(version)))
        .insert_header((READ_SOURCE_HEADER, source))
        .content_type(header::ContentType::json())
        .body(body))
}

/// List products by id (keyset pagination: pass `next_cursor` as `cursor`).
#[utoipa::path(tag = "products", operation_id = "list_products", params(ListQuery),
    responses((status = 200, description = "A page of products", body = ProductPage),
        problems::Limits, problems::OptionalToken, problems::Invalid),
    security((), ("bearer" = [])))]
#[get("/api/products")]
pub async fn list(
    caller: Caller,
    state: web::Data<AppState>,
    q: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (status, owner) = visible(&caller, q.status.map(ProductStatus::from), q.owner.clone())?;
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
    let owner = owner
        .map(|o| bounded_text("owner", &o, SHORT_TEXT_MAX_CHARS))
        .transpose()?;
    let items = state
        .catalog
        .list(status, category.as_deref(), owner.as_deref(), q.cursor, limit)
        .await?;
    let next_cursor = if items.len() as i64 == limit {
        items.last().map(|p| p.id)
    } else {
        None
    };
    let items = items.iter().map(ProductBody::from).collect();
    Ok(HttpResponse::Ok().json(ProductPage { items, next_cursor }))
}

/// The status and owner a list may show `caller`: anonymous callers published products only
/// (another status is a 401); a seller's other statuses are their own products only (another
/// seller's is a 403); readers of everything what they ask.
fn visible(
    caller: &Caller,
    status: Option<ProductStatus>,
    owner: Option<String>,
) -> Result<(Option<ProductStatus>, Option<String>), ApiError> {
    let published = status.is_none_or(|s| s == ProductStatus::Published);
    match &caller.0 {
        Some(p) if p.reads_everything() => Ok((status, owner)),
        _ if published => Ok((Some(ProductStatus::Published), owner)),
        None => Err(ApiError::Unauthorized(
            "listing unpublished products needs a bearer token".into(),
        )),
        Some(p) => match (p.seller.as_deref(), owner.as_deref()) {
            (Some(own), None) if p.roles.has(super::auth::Role::Seller) => Ok((status, Some(own.to_owned()))),
            (Some(own), Some(o)) if o == own && p.roles.has(super::auth::Role::Seller) => Ok((status, owner)),
            _ => Err(ApiError::Forbidden(
                "unpublished products of other sellers are not listed to this caller".into(),
            )),
        },
    }
}

/// Change descriptive fields (absent fields stay as they are).
#[utoipa::path(tag = "products", operation_id = "update_product_details", request_body = UpdateDetailsBody,
    params(("id" = Uuid, Path, description = "Product id"), IdempotencyKey, IfMatch),
    responses((status = 200, description = "The product at its new version", body = ProductBody),
        problems::Limits, problems::Writer, problems::Body, problems::ById, problems::Conflicts, problems::Stale),
    security(("bearer" = ["seller", "catalog-admin"])))]
#[patch("/api/products/{id}")]
pub async fn update_details(
    auth: Needs<ProductWriter>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: JsonBody<UpdateDetailsBody>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let command = ProductCommand::UpdateProductDetails(body.into_inner().into());
    write(&state, &req, &auth.0, *id, command, v, Reply::Updated).await
}

/// Set the price.
#[utoipa::path(tag = "products", operation_id = "change_price", request_body = super::bodies::MoneyBody,
    params(("id" = Uuid, Path, description = "Product id"), IdempotencyKey, IfMatch),
    responses((status = 200, description = "The product at its new version", body = ProductBody),
        problems::Limits, problems::Writer, problems::Body, problems::ById, problems::Conflicts, problems::Stale),
    security(("bearer" = ["seller", "catalog-admin"])))]
#[post("/api/products/{id}/price")]
pub async fn change_price(
    auth: Needs<ProductWriter>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: JsonBody<super::bodies::MoneyBody>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let command = ProductCommand::ChangePrice {
        price: Money::from(body.into_inner()),
        variant_id: None,
    };
    write(&state, &req, &auth.0, *id, command, v, Reply::Updated).await
}

/// Change the stock: `{"delta": n}` or `{"set": n}`.
#[utoipa::path(tag = "products", operation_id = "change_stock", request_body = StockBody,
    params(("id" = Uuid, Path, description = "Product id"), IdempotencyKey, IfMatch),
    responses((status = 200, description = "The product at its new version", body = ProductBody),
        problems::Limits, problems::Writer, problems::Body, problems::ById, problems::Conflicts, problems::Stale),
    security(("bearer" = ["seller", "catalog-admin"])))]
#[post("/api/products/{id}/stock")]
pub async fn change_stock(
    auth: Needs<ProductWriter>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: JsonBody<StockBody>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let command = match body.into_inner() {
        StockBody::Delta(StockDelta { delta }) => ProductCommand::AdjustStock {
            delta,
            variant_id: None,
        },
        StockBody::Set(StockSet { set }) => ProductCommand::SetStock {
            stock: set,
            variant_id: None,
        },
    };
    write(&state, &req, &auth.0, *id, command, v, Reply::Updated).await
}

/// The status changes: publish, unpublish, archive. Each takes `If-Match` and an
/// `Idempotency-Key` and no body.
macro_rules! status_change {
    ($(#[$doc:meta])* $name:ident, $path:literal, $operation:literal, $command:expr) => {
        $(#[$doc])*
        #[utoipa::path(tag = "products", operation_id = $operation,
            params(("id" = Uuid, Path, description = "Product id"), IdempotencyKey, IfMatch),
            responses((status = 200, description = "The product at its new version", body = ProductBody),
                problems::Limits, problems::Writer, problems::ById, problems::Invalid, problems::Conflicts, problems::Stale),
            security(("bearer" = ["seller", "catalog-admin"])))]
        #[post($path)]
        pub async fn $name(
            auth: Needs<ProductWriter>,
            state: web::Data<AppState>,
            req: HttpRequest,
            id: web::Path<Uuid>,
        ) -> Result<HttpResponse, ApiError> {
            let v = if_match(&req)?;
            write(&state, &req, &auth.0, *id, $command, v, Reply::Updated).await
        }
    };
}

status_change!(
    /// Publish: the product becomes visible (it needs a price).
    publish, "/api/products/{id}/publish", "publish_product", ProductCommand::PublishProduct
);
status_change!(
    /// Unpublish: back to draft.
    unpublish, "/api/products/{id}/unpublish", "unpublish_product", ProductCommand::UnpublishProduct
);
status_change!(
    /// Archive: retired for good.
    archive, "/api/products/{id}/archive", "archive_product", ProductCommand::ArchiveProduct
);

/// The seller a product is transferred to.
#[derive(Debug, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    /// The new owning seller.
    #[schema(schema_with = super::contract::fields::seller)]
    pub owner: String,
}

/// Transfer a product to another seller (catalog admins only): one `ProductTransferred`
/// event; an ordinary update never changes the owner.
#[utoipa::path(tag = "products", operation_id = "transfer_product", request_body = TransferBody,
    params(("id" = Uuid, Path, description = "Product id"), IdempotencyKey, IfMatch),
    responses((status = 200, description = "The product at its new version", body = ProductBody),
        problems::Limits, problems::Writer, problems::Body, problems::ById, problems::Conflicts, problems::Stale),
    security(("bearer" = ["catalog-admin"])))]
#[post("/api/products/{id}/transfer")]
pub async fn transfer(
    auth: Needs<super::auth::CatalogAdmin>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: JsonBody<TransferBody>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let command = ProductCommand::TransferOwnership {
        owner: body.into_inner().owner,
    };
    write(&state, &req, &auth.0, *id, command, v, Reply::Updated).await
}

/// Registers the product endpoints (the document is collected from them).
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list)
        .service(create)
        .service(get)
        .service(update_details)
        .service(change_price)
        .service(change_stock)
        .service(publish)
        .service(unpublish)
        .service(archive)
        .service(transfer);
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
