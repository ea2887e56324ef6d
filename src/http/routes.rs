//! Every route of the API, registered once ([`configure`]): each handler carries its route
//! (actix's macro) and its OpenAPI operation (`#[utoipa::path]`) side by side, and
//! `utoipa-actix-web` collects the operations as the handlers are registered. The served
//! document ([`document`], `/openapi.json`) is that collection, and the `Allow` header of a
//! 405 ([`allowed`]) is read from it too, so a route, its document and its methods cannot
//! drift apart.
//!
//! Each handler module lists its own handlers (`products::routes`, ...): adding an endpoint
//! is a handler with both attributes and one `.service(handler)` line in that module's
//! `routes`, nothing elsewhere.

use actix_web::{get, web, App, HttpRequest, HttpResponse};
use std::sync::LazyLock;
use utoipa::openapi::{self, PathItem};
use utoipa::OpenApi;
use utoipa_actix_web::service_config::ServiceConfig;
use utoipa_actix_web::AppExt;

use super::contract::ApiDoc;
use super::{
    categories, commands, console, error, health, product_types, products, schemas, search, variants, ApiError,
    BODY_LIMIT_BYTES,
};

/// Registers every route on `cfg`, with bodies up to `body_limit` bytes (shared by `serve`
/// and the tests through `http::run`).
pub fn configure(body_limit: usize) -> impl FnOnce(&mut ServiceConfig) {
    move |cfg| {
        cfg.app_data(
            web::JsonConfig::default()
                .limit(body_limit)
                .error_handler(error::json_error),
        )
        .app_data(web::QueryConfig::default().error_handler(error::query_error))
        .app_data(web::PathConfig::default().error_handler(error::path_error))
        .app_data(web::PayloadConfig::default().limit(body_limit))
        .service(openapi_json)
        .configure(health::routes)
        .configure(search::routes)
        .configure(commands::routes)
        .configure(products::routes)
        .configure(variants::routes)
        .configure(product_types::routes)
        .configure(categories::routes)
        .configure(schemas::routes)
        // The console's endpoints before its page scope, which claims the rest of /console.
        .configure(console::api::routes);
    }
}

/// `/metrics`, served on its own listener (`METRICS_BIND`), in the document with its server.
#[derive(OpenApi)]
#[openapi(paths(super::metrics::metrics))]
struct MetricsDoc;

/// The OpenAPI document: the operations [`configure`] registers, the shared parts of
/// [`ApiDoc`], and `/metrics` with the address it is served on.
pub fn document() -> openapi::OpenApi {
    let (_, mut doc) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(configure(BODY_LIMIT_BYTES))
        .split_for_parts();
    super::contract::with_jwt(&mut doc);
    let mut metrics = MetricsDoc::openapi();
    for item in metrics.paths.paths.values_mut() {
        item.servers = Some(vec![openapi::Server::new("http://127.0.0.1:9463")]);
    }
    doc.merge(metrics);
    doc
}

/// The document, built once, as served.
static DOCUMENT: LazyLock<String> = LazyLock::new(|| {
    document()
        .to_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
});

/// This document (OpenAPI 3.1).
#[utoipa::path(tag = "health", operation_id = "openapi", security(),
    responses((status = 200, description = "OpenAPI 3.1", content_type = "application/json", body = Object),
        super::contract::problems::RateLimit))]
#[get("/openapi.json")]
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=300"))
        .content_type("application/json")
        .body(DOCUMENT.as_str())
}

/// The methods of each documented path, as `Allow` reads them, by path template.
static ALLOW: LazyLock<Vec<(Vec<String>, String)>> = LazyLock::new(|| {
    let mut table: Vec<(Vec<String>, String)> = document()
        .paths
        .paths
        .iter()
        .filter(|(path, _)| path.as_str() != "/metrics")
        .map(|(path, item)| (segments(path), methods(item).join(", ")))
        .collect();
    table.push((segments("/health"), "GET".into()));
    table
});

fn segments(path: &str) -> Vec<String> {
    path.split('/').map(str::to_owned).collect()
}

/// The methods an item documents, in a fixed order.
pub fn methods(item: &PathItem) -> Vec<&'static str> {
    [
        ("GET", item.get.is_some()),
        ("POST", item.post.is_some()),
        ("PUT", item.put.is_some()),
        ("PATCH", item.patch.is_some()),
        ("DELETE", item.delete.is_some()),
    ]
    .into_iter()
    .filter(|(_, present)| *present)
    .map(|(name, _)| name)
    .collect()
}

/// The `Allow` header of `path` when the document has it (a template segment `{x}` matches
/// any one segment), `None` for a path the API does not serve.
pub fn allowed(path: &str) -> Option<&'static str> {
    let asked: Vec<&str> = path.split('/').collect();
    ALLOW
        .iter()
        .find(|(template, _)| {
            template.len() == asked.len()
                && template
                    .iter()
                    .zip(&asked)
                    .all(|(t, a)| t == a || (t.starts_with('{') && t.ends_with('}') && !a.is_empty()))
        })
        .map(|(_, allow)| allow.as_str())
}

/// Anything no route took: a 405 with `Allow` on a known path, else a 404.
pub async fn unrouted(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    match allowed(req.path()) {
        Some(allow) => Err(ApiError::MethodNotAllowed { allow }),
        None => Err(ApiError::NotFound("no such route".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::product::{KNOWN_CURRENCIES, REQUIRED_TEXT_PATTERN, TEXT_PATTERN, TITLE_MAX_CHARS};
    use crate::search::query::{MAX_PAGE_SIZE, MAX_WINDOW};
    use serde_json::{json, Value};

    fn doc() -> Value {
        serde_json::to_value(document()).expect("document json")
    }

    fn walk<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r);
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }

    fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
        let mut out = Vec::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                if ["get", "post", "put", "patch", "delete"].contains(&method.as_str()) {
                    out.push((method.clone(), path.clone(), op));
                }
            }
        }
        out
    }

    #[test]
    fn every_ref_resolves() {
        let doc = doc();
        let mut refs = Vec::new();
        walk(&doc, &mut refs);
        assert!(!refs.is_empty());
        for r in refs {
            let pointer = r.strip_prefix('#').unwrap_or_else(|| panic!("external ref {r}"));
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
    }

    #[test]
    fn every_api_operation_declares_its_errors_as_problem_json() {
        let doc = doc();
        let ops = operations(&doc);
        let api: Vec<_> = ops
            .iter()
            .filter(|(_, p, _)| p.starts_with("/api/") || p.starts_with("/console/api/"))
            .collect();
        assert_eq!(api.len(), 35, "every API and console operation is documented");
        for (method, path, op) in api {
            let responses = op["responses"].as_object().expect("responses");
            for status in ["401", "429", "503"] {
                assert!(responses.contains_key(status), "{method} {path} lacks {status}");
            }
            // A caller with one of the named roles, by API key or identity-provider token alike.
            let roles = &op["security"][0]["bearer"];
            let needs_token = roles.as_array().is_some_and(|r| !r.is_empty())
                && op["security"] == json!([{"bearer": roles}, {"jwt": roles}]);
            if needs_token {
                assert!(responses.contains_key("403"), "{method} {path} names roles but no 403");
            }
            if method != "get" {
                for status in ["403", "422"] {
                    assert!(responses.contains_key(status), "{method} {path} lacks {status}");
                }
                assert!(needs_token, "{method} {path} is a write without a token");
            }
            if path.contains("{id}") {
                assert!(
                    responses.contains_key("400") && responses.contains_key("404"),
                    "{method} {path}"
                );
            }
            if op.get("requestBody").is_some() {
                for status in ["400", "408", "413", "415"] {
                    assert!(responses.contains_key(status), "{method} {path} lacks {status}");
                }
            }
            if path.contains("/products/{id}") && method == "post" || method == "patch" {
                for status in ["409", "412"] {
                    assert!(responses.contains_key(status), "{method} {path} lacks {status}");
                }
            }
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        r["content"]["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
                if status == "429" || status == "503" {
                    assert!(r["headers"]["Retry-After"].is_object(), "{method} {path} {status}");
                }
            }
        }
    }

    #[test]
    fn list_and_search_parameters_are_optional_query_parameters() {
        let doc = doc();
        for path in ["/api/products", "/api/search"] {
            let params = doc["paths"][path]["get"]["parameters"].as_array().expect("parameters");
            assert!(params.len() >= 4, "{path}");
            for p in params {
                assert_eq!(p["in"], "query", "{path} {p}");
                assert_eq!(p["required"], false, "{path} {p}");
            }
        }
        let search = doc["paths"]["/api/search"]["get"]["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let size = search.iter().find(|p| p["name"] == "size").expect("size");
        assert_eq!(size["schema"]["maximum"], MAX_PAGE_SIZE);
        let page = search.iter().find(|p| p["name"] == "page").expect("page");
        assert_eq!(page["schema"]["maximum"], MAX_WINDOW);
        let q = search.iter().find(|p| p["name"] == "q").expect("q");
        assert_eq!(q["schema"]["pattern"], TEXT_PATTERN);
    }

    #[test]
    fn search_and_suggest_parameters_carry_the_limits_the_server_checks() {
        use crate::domain::product::SHORT_TEXT_MAX_CHARS;
        use crate::http::search::{name_value_pattern, MAX_VALUE_FILTERS};
        use crate::search::cursor::{CURSOR_PATTERN, MAX_CURSOR_CHARS};
        use crate::search::suggest::{MAX_PREFIX_CHARS, MAX_SUGGEST_SIZE};
        let doc = doc();
        let param = |path: &str, name: &str| -> Value {
            doc["paths"][path]["get"]["parameters"]
                .as_array()
                .and_then(|ps| ps.iter().find(|p| p["name"] == name).cloned())
                .unwrap_or_else(|| panic!("{path} {name}"))
        };
        let under = param("/api/search", "category_under");
        assert_eq!(under["schema"]["pattern"], TEXT_PATTERN);
        assert_eq!(under["schema"]["maxLength"], SHORT_TEXT_MAX_CHARS);
        let after = param("/api/search", "after");
        assert_eq!(after["schema"]["pattern"], CURSOR_PATTERN);
        assert_eq!(after["schema"]["maxLength"], MAX_CURSOR_CHARS);
        for name in ["option", "attribute"] {
            let p = param("/api/search", name);
            assert_eq!(p["schema"]["items"]["pattern"], name_value_pattern().as_str(), "{name}");
            assert_eq!(p["schema"]["maxItems"], MAX_VALUE_FILTERS, "{name}");
            assert!(p["schema"]["description"].is_string(), "{name}");
        }
        for p in [&under, &after] {
            assert!(p["description"].is_string(), "{p}");
        }
        let q = param("/api/search/suggest", "q");
        assert_eq!(
            (&q["required"], &q["schema"]["pattern"]),
            (&json!(true), &json!(REQUIRED_TEXT_PATTERN))
        );
        assert_eq!(q["schema"]["maxLength"], MAX_PREFIX_CHARS);
        assert_eq!(
            param("/api/search/suggest", "size")["schema"]["maximum"],
            MAX_SUGGEST_SIZE
        );
    }

    #[test]
    fn anonymous_calls_are_declared_where_the_server_allows_them() {
        let doc = doc();
        for (method, path, op) in operations(&doc) {
            let anonymous = op["security"]
                .as_array()
                .is_some_and(|s| s.is_empty() || s.contains(&json!({})));
            let expected = method == "get"
                && !path.starts_with("/api/commands")
                && !path.starts_with("/console/api")
                && !path.ends_with("/history");
            assert_eq!(anonymous, expected, "{method} {path}: {}", op["security"]);
        }
    }

    #[test]
    fn a_known_path_allows_the_methods_its_document_lists() {
        assert_eq!(allowed("/api/products"), Some("GET, POST"));
        assert_eq!(allowed("/api/products/0192"), Some("GET, PATCH"));
        assert_eq!(allowed("/api/products/0192/price"), Some("POST"));
        assert_eq!(allowed("/health"), Some("GET"));
        assert_eq!(allowed("/health/"), Some("GET"));
        assert_eq!(allowed("/console/api/outbox/retry"), Some("POST"));
        assert_eq!(allowed("/api/products//price"), None, "an empty id is no id");
        assert_eq!(allowed("/api/nothing"), None);
        assert_eq!(allowed("/metrics"), None, "served on its own listener");
    }

    #[test]
    fn every_product_write_documents_the_idempotency_key_header() {
        let doc = doc();
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
            let key = params
                .iter()
                .find(|p| p["name"] == "Idempotency-Key" && p["in"] == "header")
                .unwrap_or_else(|| panic!("{method} {path}: {params:?}"));
            assert_eq!(key["schema"]["maxLength"], crate::http::idempotency::MAX_KEY_LEN);
            if path != "/api/products" {
                assert!(params.iter().any(|p| p["name"] == "If-Match"), "{method} {path}");
            }
        }
    }

    #[test]
    fn text_fields_carry_the_domain_limits() {
        let doc = doc();
        let create = &doc["components"]["schemas"]["CreateProduct"]["properties"];
        assert_eq!(create["title"]["maxLength"], TITLE_MAX_CHARS);
        assert_eq!(create["title"]["pattern"], REQUIRED_TEXT_PATTERN);
        assert_eq!(create["description"]["pattern"], TEXT_PATTERN);
        assert_eq!(
            doc["components"]["schemas"]["Money"]["properties"]["currency"]["enum"]
                .as_array()
                .map(Vec::len),
            Some(KNOWN_CURRENCIES.len())
        );
        assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
        assert!(doc["paths"]["/metrics"]["get"].is_object());
        assert!(doc["paths"]["/metrics"]["servers"].is_array());
    }
}
