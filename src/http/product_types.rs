//! Product types: `POST /api/product-types`, `PUT /api/product-types/{key}` (with `If-Match`
//! and `Idempotency-Key`, like product writes), `GET` one or all (public: a type describes
//! what products may say, nothing about any product).
//!
//! A product naming a type (`product_type` on create) is checked against it on every write:
//! a 422 names the attribute and the rule. A change of a type that would make a stored
//! product invalid (a new required attribute, a value no longer allowed, another kind) is
//! refused with a 409 naming the products: change them first, then the type. Refusing, rather
//! than applying a default to every product through the outbox, keeps every product's history
//! made of its own commands, and a type change a single fast statement.

use actix_web::http::header;
use actix_web::{get, post, put, web, HttpRequest, HttpResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::auth::{CatalogAdmin, Needs};
use super::contract::{problems, IdempotencyKey, IfMatch};
use super::idempotency::{self, REPLAYED_HEADER};
use super::json_body::JsonBody;
use super::products::if_match;
use super::{ApiError, AppState};
use crate::app::catalog::Once;
use crate::app::types::{TypeWrite, TypeWritten};
use crate::domain::product_type::{AttributeDef, AttributeKind, ProductType, TypeDefinition};
use crate::store::idempotency_repo::StoredResponse;

/// The kind of an attribute's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum KindBody {
    /// Text up to 100 characters.
    Text,
    /// A number (with an optional `unit`).
    Number,
    /// `true` or `false`.
    Boolean,
    /// One of `values`.
    OneOf,
}

/// One attribute of a type.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = AttributeDefinition)]
#[serde(deny_unknown_fields)]
pub struct AttributeBody {
    /// Name: the key in a product's `attributes`, or in its variants' `options`.
    #[schema(schema_with = super::contract::fields::sku)]
    pub name: String,
    /// Kind of its values.
    pub kind: KindBody,
    /// Unit of a number (`g`, `cm`, `W`); only with `number`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::contract::fields::sku)]
    pub unit: Option<String>,
    /// The allowed values of `one_of` (1 to 200); only with `one_of`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::contract::fields::one_of_values)]
    pub values: Option<Vec<String>>,
    /// A product of the type must have it (a variant attribute: every variant must).
    #[serde(default)]
    pub required: bool,
    /// Search counts its values (a facet).
    #[serde(default)]
    pub facet: bool,
    /// It varies per variant: an option of the variants (size, colour), not an attribute.
    #[serde(default)]
    pub variant: bool,
}

impl AttributeBody {
    fn into_def(self) -> Result<AttributeDef, ApiError> {
        let kind = match (self.kind, self.unit, self.values) {
            (KindBody::Text, None, None) => AttributeKind::Text,
            (KindBody::Boolean, None, None) => AttributeKind::Boolean,
            (KindBody::Number, unit, None) => AttributeKind::Number { unit },
            (KindBody::OneOf, None, Some(values)) => AttributeKind::OneOf { values },
            (KindBody::OneOf, _, None) => return Err(ApiError::field("attributes.values", "one_of needs values")),
            (_, Some(_), _) => return Err(ApiError::field("attributes.unit", "only a number has a unit")),
            (_, _, Some(_)) => return Err(ApiError::field("attributes.values", "only one_of has values")),
        };
        Ok(AttributeDef {
            name: self.name,
            kind,
            required: self.required,
            facet: self.facet,
            variant: self.variant,
        })
    }

    fn from_def(d: &AttributeDef) -> Self {
        let (kind, unit, values) = match &d.kind {
            AttributeKind::Text => (KindBody::Text, None, None),
            AttributeKind::Boolean => (KindBody::Boolean, None, None),
            AttributeKind::Number { unit } => (KindBody::Number, unit.clone(), None),
            AttributeKind::OneOf { values } => (KindBody::OneOf, None, Some(values.clone())),
        };
        Self {
            name: d.name.clone(),
            kind,
            unit,
            values,
            required: d.required,
            facet: d.facet,
            variant: d.variant,
        }
    }
}

/// A type's definition: its name and attributes.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TypeDefinitionBody {
    /// Display name.
    #[schema(schema_with = super::contract::fields::sku)]
    pub name: String,
    /// The attributes, at most 50.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub attributes: Vec<AttributeBody>,
}

impl TypeDefinitionBody {
    fn into_definition(self) -> Result<TypeDefinition, ApiError> {
        Ok(TypeDefinition {
            name: self.name,
            attributes: self
                .attributes
                .into_iter()
                .map(AttributeBody::into_def)
                .collect::<Result<_, _>>()?,
        })
    }
}

/// A new type: its key and definition.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTypeBody {
    /// Key: lower-case letters, digits and `-`; products name their type by it.
    #[schema(pattern = "^[a-z0-9-]{1,100}$")]
    pub key: String,
    /// Display name.
    #[schema(schema_with = super::contract::fields::sku)]
    pub name: String,
    /// The attributes, at most 50.
    #[serde(default)]
    #[schema(max_items = 50)]
    pub attributes: Vec<AttributeBody>,
}

/// A product type.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = ProductType)]
pub struct TypeBody {
    /// Key.
    pub key: String,
    /// Display name.
    pub name: String,
    /// The attributes.
    pub attributes: Vec<AttributeBody>,
    /// Version: 1 on creation, +1 per change (the `ETag`).
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
}

impl From<&ProductType> for TypeBody {
    fn from(t: &ProductType) -> Self {
        Self {
            key: t.key.clone(),
            name: t.name.clone(),
            attributes: t.attributes.iter().map(AttributeBody::from_def).collect(),
            version: t.version,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// Every product type.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TypeList {
    /// Types by key.
    pub items: Vec<TypeBody>,
}

fn stored(t: &ProductType, created: bool) -> Option<StoredResponse> {
    let mut headers = serde_json::Map::new();
    headers.insert(header::ETAG.as_str().to_owned(), format!("\"{}\"", t.version).into());
    if created {
        headers.insert(
            header::LOCATION.as_str().to_owned(),
            format!("/api/product-types/{}", t.key).into(),
        );
    }
    Some(StoredResponse {
        status: if created { 201 } else { 200 },
        headers,
        body: serde_json::to_value(TypeBody::from(t)).ok()?,
    })
}

fn answer(r: &StoredResponse, replayed: bool) -> HttpResponse {
    let mut b = HttpResponse::build(actix_web::http::StatusCode::from_u16(r.status).unwrap_or_default());
    for (name, value) in &r.headers {
        if let Some(v) = value.as_str() {
            b.insert_header((name.as_str(), v));
        }
    }
    if replayed {
        b.insert_header((REPLAYED_HEADER, "true"));
    }
    b.json(&r.body)
}

async fn write(
    state: &AppState,
    req: &HttpRequest,
    caller: &super::auth::Principal,
    w: TypeWrite,
    body: &impl Serialize,
) -> Result<HttpResponse, ApiError> {
    let created = matches!(w, TypeWrite::Create { .. });
    let once = match idempotency::key(req)? {
        None => None,
        Some(key) => Some(Once {
            scope: idempotency::scope(req, caller, key),
            fingerprint: idempotency::fingerprint(req, body)?,
            remember: Box::new(move |t: &ProductType| stored(t, created)),
        }),
    };
    match state.catalog.write_type(w, once).await? {
        TypeWritten::Replayed(r) => Ok(answer(&r, true)),
        TypeWritten::Applied(t) => {
            let r = stored(&t, created).ok_or_else(|| ApiError::Internal("type answer".into()))?;
            Ok(answer(&r, false))
        }
    }
}

/// Create a product type.
#[utoipa::path(tag = "product-types", operation_id = "create_product_type", request_body = NewTypeBody,
    params(IdempotencyKey),
    responses((status = 201, description = "Created", body = TypeBody,
            headers(("Location" = String, description = "The type's URL"), ("ETag" = String, description = "Its version"))),
        problems::Limits, problems::Writer, problems::Body, problems::Conflicts),
    security(("bearer" = ["catalog-admin"])))]
#[post("/api/product-types")]
pub async fn create(
    auth: Needs<CatalogAdmin>,
    state: web::Data<AppState>,
    req: HttpRequest,
    body: JsonBody<NewTypeBody>,
) -> Result<HttpResponse, ApiError> {
    let b = body.into_inner();
    let definition = TypeDefinitionBody {
        name: b.name.clone(),
        attributes: b.attributes.clone(),
    }
    .into_definition()?;
    write(
        &state,
        &req,
        &auth.0,
        TypeWrite::Create {
            key: b.key.clone(),
            definition,
        },
        &b,
    )
    .await
}

/// Replace a product type's definition. Refused (409) when a product of the type would no
/// longer fit it; the answer names such products.
#[utoipa::path(tag = "product-types", operation_id = "change_product_type", request_body = TypeDefinitionBody,
    params(("key" = String, Path, description = "Type key"), IdempotencyKey, IfMatch),
    responses((status = 200, description = "The type at its new version", body = TypeBody),
        problems::Limits, problems::Writer, problems::Body, problems::ById, problems::Conflicts, problems::Stale),
    security(("bearer" = ["catalog-admin"])))]
#[put("/api/product-types/{key}")]
pub async fn change(
    auth: Needs<CatalogAdmin>,
    state: web::Data<AppState>,
    req: HttpRequest,
    key: web::Path<String>,
    body: JsonBody<TypeDefinitionBody>,
) -> Result<HttpResponse, ApiError> {
    let expected = if_match(&req)?;
    let b = body.into_inner();
    let w = TypeWrite::Change {
        key: key.into_inner(),
        expected,
        definition: b.clone().into_definition()?,
    };
    write(&state, &req, &auth.0, w, &b).await
}

/// One product type.
#[utoipa::path(tag = "product-types", operation_id = "get_product_type",
    params(("key" = String, Path, description = "Type key")),
    responses((status = 200, description = "The type", body = TypeBody,
            headers(("ETag" = String, description = "Its version"))),
        problems::Limits, problems::OptionalToken, problems::ById),
    security((), ("bearer" = [])))]
#[get("/api/product-types/{key}")]
pub async fn get(state: web::Data<AppState>, key: web::Path<String>) -> Result<HttpResponse, ApiError> {
    let t = state
        .catalog
        .find_type(&key)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("product type {:?} not found", key.as_str())))?;
    Ok(HttpResponse::Ok()
        .insert_header((header::ETAG, format!("\"{}\"", t.version)))
        .json(TypeBody::from(&t)))
}

/// Every product type.
#[utoipa::path(tag = "product-types", operation_id = "list_product_types",
    responses((status = 200, description = "The types", body = TypeList), problems::Limits, problems::OptionalToken),
    security((), ("bearer" = [])))]
#[get("/api/product-types")]
pub async fn list(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let items = state.catalog.list_types().await?.iter().map(TypeBody::from).collect();
    Ok(HttpResponse::Ok().json(TypeList { items }))
}

/// Registers the product type endpoints.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list).service(create).service(get).service(change);
}
