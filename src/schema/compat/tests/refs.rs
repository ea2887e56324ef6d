//! `$ref`s: percent-encoded names, findings at the path of use, new or missing `$defs`,
//! recursive types.

use serde_json::{json, Value};

use super::{breaking_changes, lines, paths};

#[test]
fn refs_to_names_with_spaces_are_percent_decoded() {
    let doc = |kind: &str| {
        json!({
            "oneOf": [{ "$ref": "#/$defs/custom%20name%20variant" }],
            "$defs": { "custom name variant": { "type": "object", "properties": { "n": { "type": kind } }, "required": ["n"] } }
        })
    };
    assert!(breaking_changes(&doc("string"), &doc("string")).is_empty());
    assert_eq!(paths(&doc("string"), &doc("integer")), ["/oneOf/0/properties/n"]);
}

/// A document where `state.variants[].sku` is reached through two `$defs`.
fn nested(sku: Value, extra_def: Option<(&str, Value)>) -> Value {
    let mut doc = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ProductUpdated",
        "type": "object",
        "properties": { "state": { "$ref": "#/$defs/State" } },
        "required": ["state"],
        "$defs": {
            "State": { "type": "object", "properties": { "variants": { "type": "array", "items": { "$ref": "#/$defs/Variant" } } }, "required": ["variants"] },
            "Variant": { "type": "object", "properties": { "sku": sku }, "required": ["sku"] }
        }
    });
    if let Some((name, schema)) = extra_def {
        doc["$defs"][name] = schema;
    }
    doc
}

#[test]
fn a_change_behind_refs_is_reported_at_the_path_of_its_use() {
    let old = nested(json!({ "type": "string" }), None);
    let new = nested(json!({ "type": ["string", "null"] }), None);
    assert_eq!(
        paths(&old, &new),
        ["/properties/state/properties/variants/items/properties/sku"]
    );
}

#[test]
fn adding_a_defs_entry_is_not_breaking() {
    let old = nested(json!({ "type": "string" }), None);
    let new = nested(
        json!({ "type": "string" }),
        Some(("Unused", json!({ "type": "integer" }))),
    );
    assert!(breaking_changes(&old, &new).is_empty());
}

#[test]
fn an_unresolvable_ref_in_the_new_schema_is_breaking() {
    let old = nested(json!({ "type": "string" }), None);
    let mut new = old.clone();
    new["$defs"].as_object_mut().map(|defs| defs.remove("Variant"));
    assert_eq!(
        lines(&old, &new),
        ["/properties/state/properties/variants/items: `$ref` \"#/$defs/Variant\" does not resolve in the new schema"]
    );
}

/// A tree of categories: a recursive type through `$defs` and through the root (`#`).
fn category(child_id: Value) -> Value {
    json!({
        "title": "Tree",
        "type": "object",
        "properties": {
            "root": { "$ref": "#/$defs/Category" },
            "parent": { "anyOf": [{ "$ref": "#" }, { "type": "null" }] }
        },
        "required": ["root"],
        "$defs": {
            "Category": {
                "type": "object",
                "properties": {
                    "id": child_id,
                    "children": { "type": "array", "items": { "$ref": "#/$defs/Category" } }
                },
                "required": ["id", "children"]
            }
        }
    })
}

#[test]
fn recursive_schemas_are_compared_once_and_terminate() {
    let old = category(json!({ "type": "integer", "format": "int64" }));
    assert!(breaking_changes(&old, &old).is_empty());
    let new = category(json!({ "type": "string" }));
    // `parent` leads back to the root (`#`), which is being compared already.
    let id = "/properties/root/properties/id";
    assert_eq!(paths(&old, &new), [id, id]);
}
