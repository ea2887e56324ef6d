//! The category tree: `POST /api/categories`, `PATCH /api/categories/{id}` (rename, move;
//! `If-Match`), `GET` one (with its path and the progress of its fan-out) or all.
//!
//! A product names its category by slug (`category`) and carries the category's path. When a
//! category is created, renamed or moved, every product under it gets its new path through
//! its own command and event (`worker::category_fanout`, run by `serve`): `GET
//! /api/categories/{id}` shows `fanout.pending` and `products_done` until it finishes.

use actix_web::http::header;
use actix_web::{get, patch, post, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::auth::{CatalogAdmin, Needs};
use super::bodies::CategoryNodeBody;
use super::contract::{problems, IfMatch};
use super::json_body::JsonBody;
use super::products::if_match;
use super::{ApiError, AppState};
use crate::domain::category::{self, Category, CategoryChange};
use crate::store::{category_repo, pool};

/// A new category.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCategoryBody {
    /// URL-safe name, unique in the catalog: lower-case letters, digits and `-`.
    #[schema(pattern = "^[a-z0-9-]{1,100}$")]
    pub slug: String,
    /// Display name.
    #[schema(schema_with = super::contract::fields::sku)]
    pub name: String,
    /// Parent (absent: a root).
    #[serde(default)]
    pub parent_id: Option<Uuid>,
    /// Position among its siblings.
    #[serde(default)]
    pub position: i32,
}

/// A rename or move: absent fields stay; `parent_id: null` makes it a root.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(min_properties = 1)]
#[serde(deny_unknown_fields)]
pub struct CategoryChangeBody {
    /// New display name.
    #[serde(default, deserialize_with = "super::bodies::present")]
    #[schema(schema_with = super::contract::fields::sku)]
    pub name: Option<String>,
    /// New slug.
    #[serde(default, deserialize_with = "super::bodies::present")]
    #[schema(value_type = String, required = false, pattern = "^[a-z0-9-]{1,100}$")]
    pub slug: Option<String>,
    /// New parent; `null` for a root.
    #[serde(default, deserialize_with = "some")]
    #[schema(nullable)]
    pub parent_id: Option<Option<Uuid>>,
    /// New position.
    #[serde(default, deserialize_with = "super::bodies::present")]
    #[schema(value_type = i32, required = false)]
    pub position: Option<i32>,
}

/// A present field, `null` included: `Some(None)`.
fn some<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<Uuid>>, D::Error> {
    Option::<Uuid>::deserialize(d).map(Some)
}

/// Progress of the products following a change.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FanoutBody {
    /// Fan-outs not finished.
    pub pending: usize,
    /// Products given their new path so far by those.
    pub products_done: i64,
}

/// A category.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CategoryBody {
    /// Id.
    pub id: Uuid,
    /// Parent (null: a root).
    pub parent_id: Option<Uuid>,
    /// Slug.
    pub slug: String,
    /// Display name.
    pub name: String,
    /// Position among its siblings.
    pub position: i32,
    /// Version (the `ETag`).
    pub version: i64,
    /// Its path, root first.
    pub path: Vec<CategoryNodeBody>,
    /// The path for display: `Electronics › Audio › Headphones`.
    pub path_display: String,
    /// Products still to follow its last change.
    pub fanout: FanoutBody,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
}

/// Every category.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CategoryList {
    /// Roots first, siblings by position.
    pub items: Vec<CategoryBody>,
}

async fn body(conn: &mut pool::PgConn, c: &Category) -> Result<CategoryBody, ApiError> {
    let path = category_repo::path_of(conn, c.id).await?;
    let pending = category_repo::pending_fanouts(conn, c.id).await?;
    Ok(CategoryBody {
        id: c.id,
        parent_id: c.parent_id,
        slug: c.slug.clone(),
        name: c.name.clone(),
        position: c.position,
        version: c.version,
        path_display: category::display(&path),
        path: path
            .into_iter()
            .map(|n| CategoryNodeBody {
                id: n.id,
                slug: n.slug,
                name: n.name,
            })
            .collect(),
        fanout: FanoutBody {
            pending: pending.len(),
            products_done: pending.iter().map(|f| f.products_done).sum(),
        },
        created_at: c.created_at,
        updated_at: c.updated_at,
    })
}

fn tagged(status: actix_web::http::StatusCode, b: &CategoryBody) -> HttpResponse {
    let mut r = HttpResponse::build(status);
    r.insert_header((header::ETAG, format!("\"{}\"", b.version)));
    if status == actix_web::http::StatusCode::CREATED {
        r.insert_header((header::LOCATION, format!("/api/categories/{}", b.id)));
    }
    r.json(b)
}

/// Create a category; products already naming its slug are placed in it.
#[utoipa::path(tag = "categories", operation_id = "create_category", request_body = NewCategoryBody,
    responses((status = 201, description = "Created", body = CategoryBody,
            headers(("Location" = String, description = "Its URL"), ("ETag" = String, description = "Its version"))),
        problems::Limits, problems::Writer, problems::Body, problems::ById, problems::Conflicts),
    security(("bearer" = ["catalog-admin"])))]
#[post("/api/categories")]
pub async fn create(
    _auth: Needs<CatalogAdmin>,
    state: web::Data<AppState>,
    b: JsonBody<NewCategoryBody>,
) -> Result<HttpResponse, ApiError> {
    let b = b.into_inner();
    let mut conn = pool::get(&state.catalog.pool).await?;
    let c = category_repo::create(&mut conn, b.parent_id, &b.slug, &b.name, b.position).await;
    state.catalog.categories_changed();
    let c = c?;
    Ok(tagged(
        actix_web::http::StatusCode::CREATED,
        &body(&mut conn, &c).await?,
    ))
}

/// Rename or move a category; every product under it follows (see `fanout`).
#[utoipa::path(tag = "categories", operation_id = "change_category", request_body = CategoryChangeBody,
    params(("id" = Uuid, Path, description = "Category id"), IfMatch),
    responses((status = 200, description = "The category at its new version", body = CategoryBody),
        problems::Limits, problems::Writer, problems::Body, problems::ById, problems::Conflicts, problems::Stale),
    security(("bearer" = ["catalog-admin"])))]
#[patch("/api/categories/{id}")]
pub async fn change(
    _auth: Needs<CatalogAdmin>,
    state: web::Data<AppState>,
    req: HttpRequest,
    id: web::Path<Uuid>,
    b: JsonBody<CategoryChangeBody>,
) -> Result<HttpResponse, ApiError> {
    let expected = if_match(&req)?;
    let b = b.into_inner();
    let change = CategoryChange {
        name: b.name,
        slug: b.slug,
        parent_id: b.parent_id,
        position: b.position,
    };
    // Refused on its own before the version is compared.
    crate::domain::category::check_change(&change)?;
    let mut conn = pool::get(&state.catalog.pool).await?;
    let c = category_repo::change(&mut conn, *id, expected, &change).await;
    state.catalog.categories_changed();
    let c = c?;
    Ok(tagged(actix_web::http::StatusCode::OK, &body(&mut conn, &c).await?))
}

/// One category, with its path and fan-out progress.
#[utoipa::path(tag = "categories", operation_id = "get_category", params(("id" = Uuid, Path, description = "Category id")),
    responses((status = 200, description = "The category", body = CategoryBody), problems::Limits, problems::OptionalToken, problems::ById),
    security((), ("bearer" = [])))]
#[get("/api/categories/{id}")]
pub async fn get(state: web::Data<AppState>, id: web::Path<Uuid>) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::get(&state.catalog.pool).await?;
    let c = category_repo::find(&mut conn, *id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("category {id} not found")))?;
    Ok(tagged(actix_web::http::StatusCode::OK, &body(&mut conn, &c).await?))
}

/// Every category.
#[utoipa::path(tag = "categories", operation_id = "list_categories",
    responses((status = 200, description = "The tree, flat", body = CategoryList), problems::Limits, problems::OptionalToken),
    security((), ("bearer" = [])))]
#[get("/api/categories")]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let mut conn = pool::get(&state.catalog.pool).await?;
    let all = category_repo::list(&mut conn).await?;
    let mut items = Vec::with_capacity(all.len());
    for c in &all {
        items.push(body(&mut conn, c).await?);
    }
    Ok(HttpResponse::Ok().json(CategoryList { items }))
}

/// Registers the category endpoints.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list).service(create).service(get).service(change);
}
