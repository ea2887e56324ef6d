//! The OpenAPI document: the contract clients and the contract test (`make contract`,
//! schemathesis) hold the server to.
//!
//! utoipa generates paths and schemas from the handlers' annotations; [`document`] then states
//! what the annotations cannot, in one place, from the same constants the server validates
//! with:
//!
//! - every error each operation can answer (400/401/403/404/408/409/412/413/415/422/429/503),
//!   as `application/problem+json` with the `Problem` schema, and the headers that go with
//!   them (`Retry-After`, `WWW-Authenticate`);
//! - who may call what: anonymous calls (`security: [{}, {bearer: []}]`) on reads of
//!   published products and search, a token elsewhere, none for health and the document;
//! - field constraints of the domain (`domain::product::value`): text lengths and the
//!   characters text may hold, currencies, quantities, non-null optional fields, and the
//!   shapes of `POST /api/commands` per command type and of the stock body;
//! - `If-Match` and `Idempotency-Key` on writes; `/health/`, `/health/live`,
//!   `/health/ready`, and `/metrics` on its own listener (`METRICS_BIND`); the operations
//!   console's endpoints (`console::api::openapi_paths`).

use actix_web::HttpResponse;
use serde_json::{json, Map, Value};
use std::sync::LazyLock;
use utoipa::OpenApi;

use crate::bus::envelope::COMMAND_TYPES;
use crate::domain::product::{
    ATTRIBUTES_MAX, DESCRIPTION_MAX_CHARS, KNOWN_CURRENCIES, MAX_QUANTITY, REQUIRED_TEXT_PATTERN, SHORT_TEXT_MAX_CHARS,
    TEXT_PATTERN, TITLE_MAX_CHARS,
};
use crate::http::idempotency::MAX_KEY_LEN;

/// The generated part of the description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "aliexpress catalog API",
        description = "Products, commands and search. Errors are RFC 9457 problem+json. Anonymous callers see published products only; a bearer token (scheme name case-insensitive) reads everything, a write token writes. Every client address is rate limited (429 with Retry-After)."
    ),
    paths(
        super::products::create,
        super::products::get,
        super::products::list,
        super::products::update_details,
        super::products::change_price,
        super::products::change_stock,
        super::products::publish,
        super::products::unpublish,
        super::products::archive,
        super::commands::submit,
        super::commands::status,
        super::search::search,
    ),
    components(schemas(
        super::error::Problem,
        super::error::FieldError,
        super::health::HealthReport,
        crate::search::query::SortOrder,
        super::schemas::ProductStatusSchema
    ))
)]
pub struct ApiDoc;

/// The document served at `/openapi.json`, built once.
static DOCUMENT: LazyLock<Value> = LazyLock::new(document);

/// `GET /openapi.json`.
pub async fn openapi_json() -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(("Cache-Control", "public, max-age=300"))
        .json(&*DOCUMENT)
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// No credentials needed (health, the document).
    Anyone,
    /// Anonymous calls allowed; a token widens what is seen.
    OptionalToken,
    /// A read or write token.
    Token,
    /// A write token.
    Writer,
}

/// What an operation takes and who may call it; everything else follows from it.
struct Operation {
    method: &'static str,
    path: &'static str,
    caller: Caller,
    /// Reads a JSON body (400/408/413/415 then apply).
    json_body: bool,
    /// Addresses one resource by id (400 for a malformed id, 404).
    by_id: bool,
    /// Takes `If-Match` (412).
    if_match: bool,
    /// Answers 409 (a state or uniqueness conflict, an idempotency key in flight).
    conflicts: bool,
    /// Has parameters or a body the server validates (422).
    validates: bool,
}

const fn op(method: &'static str, path: &'static str, caller: Caller) -> Operation {
    Operation {
        method,
        path,
        caller,
        json_body: false,
        by_id: false,
        if_match: false,
        conflicts: false,
        validates: false,
    }
}

/// Every API operation of the document.
const OPERATIONS: &[Operation] = &[
    Operation {
        validates: true,
        ..op("get", "/api/products", Caller::OptionalToken)
    },
    Operation {
        json_body: true,
        conflicts: true,
        validates: true,
        ..op("post", "/api/products", Caller::Writer)
    },
    Operation {
        by_id: true,
        ..op("get", "/api/products/{id}", Caller::OptionalToken)
    },
    Operation {
        json_body: true,
        by_id: true,
        if_match: true,
        conflicts: true,
        validates: true,
        ..op("patch", "/api/products/{id}", Caller::Writer)
    },
    Operation {
        json_body: true,
        by_id: true,
        if_match: true,
        conflicts: true,
        validates: true,
        ..op("post", "/api/products/{id}/price", Caller::Writer)
    },
    Operation {
        json_body: true,
        by_id: true,
        if_match: true,
        conflicts: true,
        validates: true,
        ..op("post", "/api/products/{id}/stock", Caller::Writer)
    },
    Operation {
        by_id: true,
        if_match: true,
        conflicts: true,
        validates: true,
        ..op("post", "/api/products/{id}/publish", Caller::Writer)
    },
    Operation {
        by_id: true,
        if_match: true,
        conflicts: true,
        validates: true,
        ..op("post", "/api/products/{id}/unpublish", Caller::Writer)
    },
    Operation {
        by_id: true,
        if_match: true,
        conflicts: true,
        validates: true,
        ..op("post", "/api/products/{id}/archive", Caller::Writer)
    },
    Operation {
        json_body: true,
        validates: true,
        ..op("post", "/api/commands", Caller::Writer)
    },
    Operation {
        by_id: true,
        ..op("get", "/api/commands/{id}", Caller::Token)
    },
    Operation {
        validates: true,
        ..op("get", "/api/search", Caller::OptionalToken)
    },
];

impl Operation {
    /// The error statuses this operation can answer, with what each means here.
    fn errors(&self) -> Vec<(u16, &'static str)> {
        let mut e = Vec::new();
        if self.json_body || self.by_id {
            e.push((400, "Malformed JSON, a malformed id or an unreadable body"));
        }
        if self.caller != Caller::Anyone {
            e.push((401, "Missing (where required), malformed or unknown bearer token"));
        }
        if self.caller == Caller::Writer {
            e.push((403, "The token may read, not write"));
        }
        if self.by_id {
            e.push((
                404,
                "No such resource (unpublished products are not found without a token)",
            ));
        }
        if self.json_body {
            e.push((408, "The body did not arrive within HTTP_BODY_READ_TIMEOUT_MS"));
        }
        if self.conflicts {
            e.push((
                409,
                "Conflicts with the current state (archived, a forbidden transition, not enough stock, a taken sku) or a request with this Idempotency-Key is in flight",
            ));
        }
        if self.if_match {
            e.push((412, "If-Match does not name the current version"));
        }
        if self.json_body {
            e.push((413, "Body over HTTP_BODY_LIMIT_BYTES"));
            e.push((415, "Content-Type is not application/json"));
        }
        if self.validates {
            e.push((422, "A parameter or field breaks a rule; `errors` names it"));
        }
        e.push((429, "Rate limit of this client address spent; see Retry-After"));
        e.push((503, "A dependency is unavailable; see Retry-After"));
        e
    }
}

/// A problem+json response with the headers its status carries.
pub(crate) fn problem_response(status: u16, description: &str) -> Value {
    let mut r = json!({
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
    });
    let retry = json!({"description": "Seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}});
    match status {
        401 => {
            r["headers"] = json!({"WWW-Authenticate": {"description": "Always `Bearer`", "schema": {"type": "string"}}})
        }
        429 | 503 => r["headers"] = json!({ "Retry-After": retry }),
        _ => {}
    }
    r
}

fn text(max: usize) -> Value {
    json!({"type": "string", "maxLength": max, "pattern": TEXT_PATTERN})
}

fn required_text(max: usize) -> Value {
    json!({"type": "string", "minLength": 1, "maxLength": max, "pattern": REQUIRED_TEXT_PATTERN})
}

fn attributes() -> Value {
    json!({
        "type": "object",
        "description": "String attributes (colour, size, ...); keys are trimmed.",
        "maxProperties": ATTRIBUTES_MAX,
        "propertyNames": required_text(SHORT_TEXT_MAX_CHARS),
        "additionalProperties": text(SHORT_TEXT_MAX_CHARS),
    })
}

fn int64(min: i64, max: i64) -> Value {
    json!({"type": "integer", "format": "int64", "minimum": min, "maximum": max})
}

fn stock_delta() -> Value {
    let mut d = int64(-MAX_QUANTITY, MAX_QUANTITY);
    d["not"] = json!({"const": 0});
    d["description"] = json!("Relative change, not 0");
    d
}

fn object(required: &[&str], properties: Value) -> Value {
    json!({"type": "object", "required": required, "properties": properties, "additionalProperties": false})
}

/// Sets `schema`'s properties (merging into what utoipa generated, keeping descriptions).
fn constrain(schemas: &mut Map<String, Value>, schema: &str, properties: Value) {
    let Some(target) = schemas.get_mut(schema).and_then(|s| s.get_mut("properties")) else {
        return;
    };
    if let (Some(target), Value::Object(props)) = (target.as_object_mut(), properties) {
        for (name, constraint) in props {
            let description = target.get(&name).and_then(|p| p.get("description")).cloned();
            let mut c = constraint;
            if let (Some(d), Some(o)) = (description, c.as_object_mut()) {
                o.entry("description").or_insert(d);
            }
            target.insert(name, c);
        }
    }
}

/// The domain's rules on the body schemas.
fn constrain_schemas(schemas: &mut Map<String, Value>) {
    let money = json!({
        "amount_minor": int64(1, i64::MAX),
        "currency": {"type": "string", "enum": KNOWN_CURRENCIES},
    });
    constrain(schemas, "Money", money.clone());
    constrain(schemas, "PriceBody", money);
    let details = json!({
        "title": required_text(TITLE_MAX_CHARS),
        "description": text(DESCRIPTION_MAX_CHARS),
        "category": text(SHORT_TEXT_MAX_CHARS),
        "brand": text(SHORT_TEXT_MAX_CHARS),
        "attributes": attributes(),
    });
    constrain(schemas, "UpdateProductDetails", details.clone());
    if let Some(u) = schemas.get_mut("UpdateProductDetails") {
        u["minProperties"] = json!(1);
    }
    constrain(schemas, "CreateProduct", details);
    constrain(
        schemas,
        "CreateProduct",
        json!({"sku": required_text(SHORT_TEXT_MAX_CHARS), "stock": int64(0, MAX_QUANTITY)}),
    );
    schemas.insert("StockDelta".into(), object(&["delta"], json!({"delta": stock_delta()})));
    schemas.insert(
        "StockSet".into(),
        object(&["set"], json!({"set": int64(0, MAX_QUANTITY)})),
    );
    schemas.insert("CommandEnvelope".into(), command_envelope());
    if let Some(p) = schemas.get_mut("Problem") {
        // `errors` is left out when empty.
        p["required"] = json!(["type", "title", "status", "detail"]);
    }
}

/// `POST /api/commands`: the envelope, and per `command_type` the payload it needs.
fn command_envelope() -> Value {
    let uuid_or_null = json!({"type": ["string", "null"], "format": "uuid"});
    let payload = |command: &str, schema: Value| {
        json!({
            "properties": {"command_type": {"const": command}, "payload": schema},
            "required": ["payload"]
        })
    };
    let no_payload = ["PublishProduct", "UnpublishProduct", "ArchiveProduct"];
    let mut expected = int64(i64::MIN, i64::MAX);
    expected["type"] = json!(["integer", "null"]);
    json!({
        "type": "object",
        "description": "A command for the write side (also the message on `product.commands`). `payload` depends on `command_type`; the status change commands take none.",
        "required": ["product_id", "command_type"],
        "properties": {
            "command_id": uuid_or_null,
            "product_id": {"type": "string", "format": "uuid"},
            "command_type": {"type": "string", "enum": COMMAND_TYPES},
            "payload": {},
            "correlation_id": uuid_or_null,
            "expected_version": expected,
        },
        "additionalProperties": false,
        "oneOf": [
            payload("CreateProduct", json!({"$ref": "#/components/schemas/CreateProduct"})),
            payload("UpdateProductDetails", json!({"$ref": "#/components/schemas/UpdateProductDetails"})),
            payload("ChangePrice", object(&["price"], json!({"price": {"$ref": "#/components/schemas/Money"}}))),
            payload("AdjustStock", object(&["delta"], json!({"delta": stock_delta()}))),
            payload("SetStock", object(&["stock"], json!({"stock": int64(0, MAX_QUANTITY)}))),
            {"properties": {"command_type": {"enum": no_payload}, "payload": {"type": "null"}}},
        ],
    })
}

/// Query parameters: the characters text may hold.
fn constrain_parameters(operation: &mut Value) {
    let Some(params) = operation.get_mut("parameters").and_then(Value::as_array_mut) else {
        return;
    };
    for p in params {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        if p["in"] == "query" && matches!(name.as_str(), "q" | "category" | "brand") {
            p["schema"]["pattern"] = json!(TEXT_PATTERN);
        }
        if name == "Idempotency-Key" {
            p["schema"] = json!({
                "type": "string", "minLength": 1, "maxLength": MAX_KEY_LEN, "pattern": "^[\\x20-\\x7E]*[\\x21\\x23-\\x7E][\\x20-\\x7E]*$"
            });
        }
    }
}

fn if_match_parameter() -> Value {
    json!({
        "name": "If-Match", "in": "header", "required": false,
        "description": "Apply only at this product version (its ETag, e.g. \"3\"); otherwise 412",
        "schema": {"type": "string", "pattern": "^(W/)?\"?[+-]?[0-9]{1,18}\"?$"}
    })
}

/// Errors, security and headers of every API operation.
fn declare_operations(paths: &mut Map<String, Value>) {
    for o in OPERATIONS {
        let Some(operation) = paths.get_mut(o.path).and_then(|p| p.get_mut(o.method)) else {
            continue;
        };
        let tag = if o.path.starts_with("/api/commands") {
            "commands"
        } else if o.path.starts_with("/api/search") {
            "search"
        } else {
            "products"
        };
        operation["tags"] = json!([tag]);
        let responses = operation["responses"].as_object_mut();
        if let Some(responses) = responses {
            for r in responses.values_mut() {
                r.as_object_mut()
                    .map(|r| r.entry("description").or_insert(json!("Success")));
            }
            for (status, description) in o.errors() {
                responses.insert(status.to_string(), problem_response(status, description));
            }
        }
        operation["security"] = match o.caller {
            Caller::Anyone => json!([]),
            Caller::OptionalToken => json!([{}, {"bearer": []}]),
            Caller::Token | Caller::Writer => json!([{"bearer": []}]),
        };
        constrain_parameters(operation);
        if o.if_match {
            if let Some(params) = operation["parameters"].as_array_mut() {
                params.push(if_match_parameter());
            }
        }
    }
}

/// `/health/`, `/health/live`, `/health/ready` and `/metrics`.
fn add_operational_paths(paths: &mut Map<String, Value>) {
    let report = json!({"application/json": {"schema": {"$ref": "#/components/schemas/HealthReport"}}});
    let limited = problem_response(429, "Rate limit of this client address spent; see Retry-After");
    let health = |summary: &str, ok: &str, unavailable: &str| {
        json!({"get": {
            "tags": ["health"], "summary": summary, "operationId": summary.split(':').next().unwrap_or(summary),
            "security": [],
            "responses": {
                "200": {"description": ok, "content": report},
                "503": {"description": unavailable, "content": report},
            }
        }})
    };
    paths.insert(
        "/health/".into(),
        health(
            "health: database, Redis, Kafka and OpenSearch, each bounded by 1 s",
            "Every dependency answers",
            "A dependency does not answer; `checks` says which",
        ),
    );
    paths.insert(
        "/health/ready".into(),
        health(
            "ready: the API can serve (PostgreSQL answers); every check reported, for readiness probes",
            "PostgreSQL answers (other checks may fail: the API rides them out)",
            "PostgreSQL does not answer",
        ),
    );
    paths.insert(
        "/health/live".into(),
        json!({"get": {
            "tags": ["health"], "summary": "live: the process is up", "operationId": "live", "security": [],
            "responses": {"200": {"description": "Up", "content": {"application/json": {"schema": {
                "type": "object", "required": ["status"], "properties": {"status": {"type": "string", "enum": ["ok"]}}
            }}}}}
        }}),
    );
    paths.insert(
        "/openapi.json".into(),
        json!({"get": {
            "tags": ["health"], "summary": "This document", "operationId": "openapi", "security": [],
            "responses": {"200": {"description": "OpenAPI 3.1", "content": {"application/json": {"schema": {"type": "object"}}}}, "429": limited}
        }}),
    );
    paths.insert(
        "/metrics".into(),
        json!({
            "servers": [{"url": "http://127.0.0.1:9463", "description": "METRICS_BIND of `serve` (never the API port)"}],
            "get": {
                "tags": ["health"], "summary": "Prometheus text exposition", "operationId": "metrics", "security": [],
                "responses": {"200": {"description": "Metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}}
            }
        }),
    );
}

/// The full document (see the module docs).
pub fn document() -> Value {
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    doc["components"]["securitySchemes"] = json!({
        "bearer": {"type": "http", "scheme": "bearer", "description": "API_TOKENS (write) or API_READ_TOKENS (read)"}
    });
    if let Some(schemas) = doc["components"]["schemas"].as_object_mut() {
        constrain_schemas(schemas);
    }
    if let Some(paths) = doc["paths"].as_object_mut() {
        declare_operations(paths);
        add_operational_paths(paths);
        paths.extend(
            super::console::api::openapi_paths()
                .into_iter()
                .map(|(p, v)| (p.to_owned(), v)),
        );
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::query::{MAX_PAGE_SIZE, MAX_WINDOW};

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
        let doc = document();
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
        let doc = document();
        let ops = operations(&doc);
        let api: Vec<_> = ops.iter().filter(|(_, p, _)| p.starts_with("/api/")).collect();
        assert_eq!(api.len(), OPERATIONS.len(), "every API operation is in OPERATIONS");
        for (method, path, op) in api {
            let responses = op["responses"].as_object().expect("responses");
            for status in ["401", "429", "503"] {
                assert!(responses.contains_key(status), "{method} {path} lacks {status}");
            }
            let needs_token = op["security"] == json!([{"bearer": []}]);
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
            for (status, r) in responses {
                if status.starts_with('4') || status.starts_with('5') {
                    assert_eq!(
                        r["content"]["application/problem+json"]["schema"]["$ref"], "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                }
            }
        }
    }

    #[test]
    fn list_and_search_parameters_are_optional_query_parameters() {
        let doc = document();
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
    }

    #[test]
    fn anonymous_calls_are_declared_where_the_server_allows_them() {
        let doc = document();
        for (method, path, op) in operations(&doc) {
            let anonymous = op["security"]
                .as_array()
                .is_some_and(|s| s.is_empty() || s.contains(&json!({})));
            let expected = method == "get" && !path.starts_with("/api/commands") && !path.starts_with("/console/api");
            assert_eq!(anonymous, expected, "{method} {path}: {}", op["security"]);
        }
    }

    #[test]
    fn every_route_is_documented_with_the_methods_it_allows() {
        let doc = document();
        for (path, allow) in super::super::ROUTES {
            if *path == "/health" {
                continue; // the same handler as /health/
            }
            let item = &doc["paths"][*path];
            let mut documented: Vec<String> = item
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| ["get", "post", "patch", "put", "delete"].contains(&k.as_str()))
                .map(|(k, _)| k.to_uppercase())
                .collect();
            documented.sort();
            let mut allowed: Vec<String> = allow.split(", ").map(str::to_owned).collect();
            allowed.sort();
            assert_eq!(documented, allowed, "{path}");
        }
        assert!(doc["paths"]["/metrics"]["get"].is_object());
    }

    #[test]
    fn every_product_write_documents_the_idempotency_key_header() {
        let doc = document();
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

    #[test]
    fn text_fields_carry_the_domain_limits() {
        let doc = document();
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
    }
}
