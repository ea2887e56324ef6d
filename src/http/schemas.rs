//! `/schemas/`: the JSON Schema of every event type and version and of every command
//! (`schema::wire`, the same files as `schemas/` in the repository). Public: they describe
//! the wire, not the catalog.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;

use super::contract::problems;
use super::ApiError;
use crate::schema::wire;

/// The index of `/schemas/`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SchemaIndex {
    /// Paths under `/schemas/`: `events/v<N>/<EventType>.json`, `commands/<CommandType>.json`.
    pub schemas: Vec<String>,
}

/// Every schema's path.
#[utoipa::path(tag = "schemas", operation_id = "list_schemas",
    responses((status = 200, description = "The schemas served", body = SchemaIndex), problems::RateLimit),
    security(()))]
#[get("/schemas/")]
pub async fn index() -> HttpResponse {
    let schemas = wire::all().into_iter().map(|f| f.path).collect();
    HttpResponse::Ok().json(SchemaIndex { schemas })
}

/// One schema (JSON Schema draft 2020-12).
#[utoipa::path(tag = "schemas", operation_id = "get_schema",
    params(("path" = String, Path, description = "e.g. `events/v2/ProductCreated.json`")),
    responses((status = 200, description = "The schema", body = Object, content_type = "application/schema+json"),
        problems::RateLimit, problems::NoSuchDocument),
    security(()))]
#[get("/schemas/{path:.+}")]
pub async fn schema(path: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let s = wire::find(&path).ok_or_else(|| ApiError::NotFound(format!("no schema {path:?}; see /schemas/")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/schema+json")
        .body(wire::render(&s)))
}

/// Registers `/schemas/`.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(index).service(schema);
}
