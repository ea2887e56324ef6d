//! A product's variants and its change history.
//!
//! Every variant write is one command of the product (`AddVariant`, `UpdateVariant`,
//! `RemoveVariant`, `SetVariantPrices`, `AdjustStock`/`SetStock` naming the variant) and runs
//! like the product's own writes (`products::write`: `If-Match`, `Idempotency-Key`, outbox,
//! read-your-writes); each answers with the product at its new version. The history reads
//! `product_history`, a page at a time, for its seller and the readers of everything (catalog
//! admins, operators, readers); to anyone else the product has no history (404).

use actix_web::{delete, get, patch, post, put, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{AnyRole, Needs, ProductWriter};
use super::bodies::{NewVariantBody, PricesBody, ProductBody, StockBody, StockDelta, StockSet, UpdateVariantBody};
use super::contract::{problems, IdempotencyKey, IfMatch};
use super::json_body::JsonBody;
use super::products::{if_match, write, Reply};
use super::{ApiError, AppState};
use crate::domain::product::{Money, ProductCommand};

/// The product and variant of a variant's path; a variant id is 1 to 2^31 - 1 (a 422 before
/// any precondition is looked at).
fn variant((id, variant_id): (Uuid, i64)) -> Result<(Uuid, u32), ApiError> {
    match u32::try_from(variant_id) {
        Ok(v) if (1..=i32::MAX as u32).contains(&v) => Ok((id, v)),
        _ => Err(ApiError::field("variant_id", "must be between 1 and 2147483647")),
    }
}

/// Add a variant: its SKU (unique in the catalog), option values, prices and stock.
#[utoipa::path(tag = "variants", operation_id = "add_variant", request_body = NewVariantBody,
    params(("id" = Uuid, Path, description = "Product id"), IdempotencyKey, IfMatch),
    responses((status = 200, description = "The product at its new version", body = ProductBody),
        problems::Limits, problems::Writer, problems::Body, problems::ById, problems::Conflicts, problems::Stale),
    security(("bearer" = ["seller", "catalog-admin"])))]
#[post("/api/products/{id}/variants")]
pub async fn add_variant(
    auth: Needs<ProductWriter>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    body: JsonBody<NewVariantBody>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let command = ProductCommand::AddVariant(body.into_inner().into());
    write(&state, &req, &auth.0, *id, command, v, Reply::Updated).await
}

/// Change a variant's SKU or option values.
#[utoipa::path(tag = "variants", operation_id = "update_variant", request_body = UpdateVariantBody,
    params(("id" = Uuid, Path, description = "Product id"), ("variant_id" = u32, Path, description = "Variant id", minimum = 1, maximum = 2147483647),
        IdempotencyKey, IfMatch),
    responses((status = 200, description = "The product at its new version", body = ProductBody),
        problems::Limits, problems::Writer, problems::Body, problems::ById, problems::Conflicts, problems::Stale),
    security(("bearer" = ["seller", "catalog-admin"])))]
#[patch("/api/products/{id}/variants/{variant_id}")]
pub async fn update_variant(
    auth: Needs<ProductWriter>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(Uuid, i64)>,
    body: JsonBody<UpdateVariantBody>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let (id, variant_id) = variant(path.into_inner())?;
    let command = ProductCommand::UpdateVariant {
        variant_id,
        change: body.into_inner().into(),
    };
    write(&state, &req, &auth.0, id, command, v, Reply::Updated).await
}

/// Remove a variant (a product keeps at least one; its id is never reused).
#[utoipa::path(tag = "variants", operation_id = "remove_variant",
    params(("id" = Uuid, Path, description = "Product id"), ("variant_id" = u32, Path, description = "Variant id", minimum = 1, maximum = 2147483647),
        IdempotencyKey, IfMatch),
    responses((status = 200, description = "The product at its new version", body = ProductBody),
        problems::Limits, problems::Writer, problems::ById, problems::Invalid, problems::Conflicts, problems::Stale),
    security(("bearer" = ["seller", "catalog-admin"])))]
#[delete("/api/products/{id}/variants/{variant_id}")]
pub async fn remove_variant(
    auth: Needs<ProductWriter>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(Uuid, i64)>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let (id, variant_id) = variant(path.into_inner())?;
    write(
        &state,
        &req,
        &auth.0,
        id,
        ProductCommand::RemoveVariant { variant_id },
        v,
        Reply::Updated,
    )
    .await
}

/// Replace a variant's prices: at most one per currency.
#[utoipa::path(tag = "variants", operation_id = "set_variant_prices", request_body = PricesBody,
    params(("id" = Uuid, Path, description = "Product id"), ("variant_id" = u32, Path, description = "Variant id", minimum = 1, maximum = 2147483647),
        IdempotencyKey, IfMatch),
    responses((status = 200, description = "The product at its new version", body = ProductBody),
        problems::Limits, problems::Writer, problems::Body, problems::ById, problems::Conflicts, problems::Stale),
    security(("bearer" = ["seller", "catalog-admin"])))]
#[put("/api/products/{id}/variants/{variant_id}/prices")]
pub async fn set_variant_prices(
    auth: Needs<ProductWriter>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(Uuid, i64)>,
    body: JsonBody<PricesBody>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let (id, variant_id) = variant(path.into_inner())?;
    let prices = body.into_inner().prices.into_iter().map(Money::from).collect();
    write(
        &state,
        &req,
        &auth.0,
        id,
        ProductCommand::SetVariantPrices { variant_id, prices },
        v,
        Reply::Updated,
    )
    .await
}

/// Change a variant's stock: `{"delta": n}` or `{"set": n}`.
#[utoipa::path(tag = "variants", operation_id = "change_variant_stock", request_body = StockBody,
    params(("id" = Uuid, Path, description = "Product id"), ("variant_id" = u32, Path, description = "Variant id", minimum = 1, maximum = 2147483647),
        IdempotencyKey, IfMatch),
    responses((status = 200, description = "The product at its new version", body = ProductBody),
        problems::Limits, problems::Writer, problems::Body, problems::ById, problems::Conflicts, problems::Stale),
    security(("bearer" = ["seller", "catalog-admin"])))]
#[post("/api/products/{id}/variants/{variant_id}/stock")]
pub async fn change_variant_stock(
    auth: Needs<ProductWriter>,
    state: web::Data<AppState>,
    req: HttpRequest,
    path: web::Path<(Uuid, i64)>,
    body: JsonBody<StockBody>,
) -> Result<HttpResponse, ApiError> {
    let v = if_match(&req)?;
    let (id, variant_id) = variant(path.into_inner())?;
    let command = match body.into_inner() {
        StockBody::Delta(StockDelta { delta }) => ProductCommand::AdjustStock {
            delta,
            variant_id: Some(variant_id),
        },
        StockBody::Set(StockSet { set }) => ProductCommand::SetStock {
            stock: set,
            variant_id: Some(variant_id),
        },
    };
    write(&state, &req, &auth.0, id, command, v, Reply::Updated).await
}

/// Largest page of a product's history.
pub const MAX_HISTORY_LIMIT: i64 = 100;

/// `GET /api/products/{id}/history` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The last version of the previous page (its `next_cursor`); the first page without it.
    #[param(minimum = 0)]
    pub cursor: Option<i64>,
    /// Page size.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<i64>,
}

/// One field that changed.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FieldChangeBody {
    /// `title`, `attributes`, `variants[2].stock` (2: the variant's id), or `variants[2]` for
    /// a variant added or removed.
    pub field: String,
    /// Value before (null: none).
    pub before: serde_json::Value,
    /// Value after (null: none).
    pub after: serde_json::Value,
}

/// One version of a product.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryEntryBody {
    /// The version this change made.
    pub version: i64,
    /// The event that recorded it (on `product.events`).
    pub event_id: Uuid,
    /// Its event type.
    pub event_type: String,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who asked: `token:` and a fingerprint of the bearer token (never the token), or
    /// `topic:product.commands`; null when unknown (versions from before the history).
    pub actor: Option<String>,
    /// The command that caused it.
    pub causation_id: Option<Uuid>,
    /// The flow it belongs to.
    pub correlation_id: Option<Uuid>,
    /// The product's status after it.
    pub status: String,
    /// The fields that changed, before → after.
    pub changes: Vec<FieldChangeBody>,
}

/// A page of a product's history, oldest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryPage {
    /// Versions in order.
    pub items: Vec<HistoryEntryBody>,
    /// Cursor of the next page, absent on the last page.
    pub next_cursor: Option<i64>,
}

/// A product's change history: every version, what changed (before → after), when, by whom
/// and why (causation and correlation ids). Paginated by version.
#[utoipa::path(tag = "variants", operation_id = "product_history",
    params(("id" = Uuid, Path, description = "Product id"), HistoryQuery),
    responses((status = 200, description = "A page of the product's history", body = HistoryPage),
        problems::Limits, problems::Token, problems::ById, problems::Invalid),
    security(("bearer" = ["seller", "catalog-admin", "operator", "reader"])))]
#[get("/api/products/{id}/history")]
pub async fn history(
    auth: Needs<AnyRole>,
    state: web::Data<AppState>,
    id: web::Path<Uuid>,
    q: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = id.into_inner();
    let limit = q.limit.unwrap_or(20);
    if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
        return Err(ApiError::field(
            "limit",
            format!("must be between 1 and {MAX_HISTORY_LIMIT}"),
        ));
    }
    let cursor = q.cursor.unwrap_or(0);
    if cursor < 0 {
        return Err(ApiError::field("cursor", "must be 0 or more"));
    }
    // Its seller and the readers of everything; to another seller it does not exist.
    let who = &auth.0;
    state
        .catalog
        .read(id)
        .await?
        .filter(|f| who.reads_everything() || who.owns(f.owner()))
        .ok_or_else(|| ApiError::NotFound(format!("product {id} not found")))?;
    let entries = state.catalog.history(id, cursor, limit).await?;
    let next_cursor = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.version))
        .flatten();
    let items = entries
        .into_iter()
        .map(|e| HistoryEntryBody {
            version: e.version,
            event_id: e.event_id,
            event_type: e.event_type,
            occurred_at: e.occurred_at,
            actor: e.actor,
            causation_id: e.causation_id,
            correlation_id: e.correlation_id,
            status: e.status,
            changes: e
                .changes
                .into_iter()
                .map(|c| FieldChangeBody {
                    field: c.field,
                    before: c.before,
                    after: c.after,
                })
                .collect(),
        })
        .collect();
    Ok(HttpResponse::Ok().json(HistoryPage { items, next_cursor }))
}

/// Registers the variant and history endpoints.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(add_variant)
        .service(update_variant)
        .service(remove_variant)
        .service(set_variant_prices)
        .service(change_variant_stock)
        .service(history);
}
