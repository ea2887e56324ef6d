//! Tests of [`breaking_changes`] through whole documents, one submodule per kind of change,
//! and the helpers they share.

mod containers;
mod derived;
mod properties;
mod refs;
mod values;
mod variants;

use serde_json::{json, Value};

use super::{breaking_changes, Breaking};

/// The findings as `path: reason` lines, for readable assertions.
fn lines(old: &Value, new: &Value) -> Vec<String> {
    breaking_changes(old, new).iter().map(ToString::to_string).collect()
}

/// The paths of the findings.
fn paths(old: &Value, new: &Value) -> Vec<String> {
    breaking_changes(old, new)
        .into_iter()
        .map(|breaking| breaking.path)
        .collect()
}

/// A struct as `schemars` writes it, with the given properties and required names.
fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ProductCreated",
        "type": "object",
        "properties": properties,
        "required": required,
    })
}

fn product() -> Value {
    object(
        json!({
            "id": { "type": "string", "format": "uuid" },
            "title": { "type": "string" },
            "stock": { "type": "integer", "format": "uint32", "minimum": 0 },
            "note": { "type": ["string", "null"] }
        }),
        &["id", "title", "stock"],
    )
}

#[test]
fn breaking_displays_as_path_and_reason() {
    let breaking = Breaking {
        path: "/properties/sku".to_owned(),
        reason: "property removed".to_owned(),
    };
    assert_eq!(breaking.to_string(), "/properties/sku: property removed");
}
