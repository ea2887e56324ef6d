//! The OpenAPI document, generated from the handlers' annotations (utoipa).

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "aliexpress catalog API", description = "Products, commands and search. Errors are RFC 9457 problem+json."),
    paths(
        super::products::create, super::products::get, super::products::list, super::products::update_details,
        super::products::change_price, super::products::change_stock, super::products::publish,
        super::products::unpublish, super::products::archive, super::commands::submit, super::commands::status,
        super::search::search,
    ),
    components(schemas(super::error::Problem, super::error::FieldError, super::health::HealthReport)),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// `GET /openapi.json`.
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok().json(ApiDoc::openapi())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_product_write_documents_the_idempotency_key_header() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        let writes = [
            ("/api/products", "post"),
            ("/api/products/{id}", "patch"),
            ("/api/products/{id}/price", "post"),
            ("/api/products/{id}/stock", "post"),
            ("/api/products/{id}/publish", "post"),
            ("/api/products/{id}/unpublish", "post"),
            ("/api/products/{id}/archive", "post"),
        ];
        for (path, method) in writes {
            let params = doc["paths"][path][method]["parameters"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == "Idempotency-Key" && p["in"] == "header"),
                "{method} {path}: {params:?}"
            );
        }
    }
}
