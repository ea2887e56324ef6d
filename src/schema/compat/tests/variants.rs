//! `oneOf`/`anyOf` variants: tagged, externally tagged, unit, untagged (by title, `$ref` or
//! type), nullable references and flattened enums.

use serde_json::{json, Value};

use super::{breaking_changes, lines, paths};

/// An internally tagged enum (`#[serde(tag = "type")]`) as `schemars` writes it.
fn event(variants: &[&str]) -> Value {
    let one_of: Vec<Value> = variants
        .iter()
        .map(|name| {
            json!({
                "type": "object",
                "properties": {
                    "type": { "type": "string", "const": name },
                    "product_id": { "type": "string", "format": "uuid" }
                },
                "required": ["type", "product_id"]
            })
        })
        .collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "ProductEvent",
        "oneOf": one_of,
    })
}

#[test]
fn removing_a_tagged_one_of_variant_is_breaking() {
    let old = event(&["Created", "Renamed", "Deleted"]);
    let new = event(&["Created", "Deleted"]);
    assert_eq!(lines(&old, &new), ["/oneOf/1: variant with type = \"Renamed\" removed"]);
}

#[test]
fn adding_a_one_of_variant_is_not_breaking() {
    let old = event(&["Created", "Deleted"]);
    let new = event(&["Created", "Renamed", "Deleted"]);
    assert!(breaking_changes(&old, &new).is_empty());
}

#[test]
fn variants_are_matched_by_their_tag_not_their_position() {
    let old = event(&["Created", "Renamed"]);
    let mut new = event(&["Renamed", "Created"]);
    new["oneOf"][1]["properties"]["product_id"] = json!({ "type": "integer" });
    assert_eq!(
        paths(&old, &new),
        ["/oneOf/0/properties/product_id", "/oneOf/0/properties/product_id"]
    );
}

/// An externally tagged enum (serde's default) with unit and struct variants.
fn external(unit: Value, struct_variants: &[&str]) -> Value {
    let mut one_of = vec![json!({ "type": "string", "enum": unit })];
    one_of.extend(struct_variants.iter().map(|name| {
        json!({
            "type": "object",
            "properties": { *name: { "type": "object", "properties": { "at": { "type": "string", "format": "date-time" } }, "required": ["at"] } },
            "required": [name],
            "additionalProperties": false
        })
    }));
    json!({ "$schema": "https://json-schema.org/draft/2020-12/schema", "title": "State", "oneOf": one_of })
}

#[test]
fn removing_an_externally_tagged_variant_is_breaking() {
    let old = external(json!(["Draft"]), &["Published", "Withdrawn"]);
    let new = external(json!(["Draft"]), &["Withdrawn"]);
    assert_eq!(
        lines(&old, &new),
        ["/oneOf/1: variant with property \"Published\" removed"]
    );
    assert!(breaking_changes(&new, &old).is_empty());
}

#[test]
fn removing_a_unit_variant_is_breaking_and_adding_one_is_not() {
    let old = external(json!(["Draft", "Hidden"]), &["Published"]);
    let new = external(json!(["Draft"]), &["Published"]);
    assert_eq!(lines(&old, &new), ["/oneOf/0: value \"Hidden\" removed"]);
    assert!(breaking_changes(&new, &old).is_empty());
}

#[test]
fn a_documented_unit_variant_moving_to_its_own_const_is_not_breaking() {
    let old = json!({ "type": "string", "enum": ["Do", "Re"] });
    let new = json!({
        "oneOf": [
            { "type": "string", "enum": ["Do"] },
            { "description": "A drop of golden sun", "type": "string", "const": "Re" }
        ]
    });
    assert!(breaking_changes(&old, &new).is_empty());
    assert!(breaking_changes(&new, &old).is_empty());
}

#[test]
fn untagged_variants_are_matched_by_title() {
    let old = json!({
        "anyOf": [
            { "title": "Amount", "type": "integer", "format": "int64" },
            { "title": "Text", "type": "string" }
        ]
    });
    let new = json!({ "anyOf": [{ "title": "Text", "type": "string" }] });
    assert_eq!(lines(&old, &new), ["/anyOf/0: variant titled \"Amount\" removed"]);
    assert!(breaking_changes(&new, &old).is_empty());
}

#[test]
fn a_changed_variant_title_falls_back_to_matching_by_type() {
    let old = json!({ "anyOf": [{ "title": "Amount", "type": "integer" }, { "title": "Text", "type": "string" }] });
    let new = json!({ "anyOf": [{ "title": "Cents", "type": "integer" }, { "type": "string" }] });
    assert!(breaking_changes(&old, &new).is_empty());
    let narrowed = json!({ "anyOf": [{ "title": "Cents", "type": "integer", "minimum": 0 }, { "type": "string" }] });
    assert_eq!(
        lines(&old, &narrowed),
        ["/anyOf/0: minimum 0 added: old messages may be rejected"]
    );
}

#[test]
fn variants_without_tag_or_title_are_matched_by_ref() {
    let defs = json!({
        "Price": { "type": "object", "properties": { "cents": { "type": "integer", "format": "int64" } }, "required": ["cents"] },
        "Stock": { "type": "object", "properties": { "units": { "type": "integer", "format": "uint32", "minimum": 0 } }, "required": ["units"] }
    });
    let old = json!({ "anyOf": [{ "$ref": "#/$defs/Price" }, { "$ref": "#/$defs/Stock" }], "$defs": defs });
    let new = json!({ "anyOf": [{ "$ref": "#/$defs/Stock" }], "$defs": defs });
    assert_eq!(
        lines(&old, &new),
        ["/anyOf/0: variant referring to \"#/$defs/Price\" removed"]
    );
    assert!(breaking_changes(&new, &old).is_empty());
}

#[test]
fn ref_variants_are_matched_by_the_tag_of_their_definition() {
    let old = json!({
        "oneOf": [{ "$ref": "#/$defs/Created" }, { "$ref": "#/$defs/Deleted" }],
        "$defs": {
            "Created": { "type": "object", "properties": { "kind": { "type": "string", "const": "Created" } }, "required": ["kind"] },
            "Deleted": { "type": "object", "properties": { "kind": { "type": "string", "const": "Deleted" } }, "required": ["kind"] }
        }
    });
    let new = json!({
        "oneOf": [{ "$ref": "#/$defs/Deleted2" }],
        "$defs": {
            "Deleted2": { "type": "object", "properties": { "kind": { "type": "string", "const": "Deleted" } }, "required": ["kind"] }
        }
    });
    assert_eq!(lines(&old, &new), ["/oneOf/0: variant with kind = \"Created\" removed"]);
}

fn with_price(price: Value) -> Value {
    json!({
        "type": "object",
        "properties": { "price": price },
        "$defs": { "Price": { "type": "object", "properties": { "cents": { "type": "integer" } }, "required": ["cents"] } }
    })
}

#[test]
fn making_a_ref_property_nullable_is_breaking() {
    let plain = with_price(json!({ "$ref": "#/$defs/Price" }));
    let nullable = with_price(json!({ "anyOf": [{ "$ref": "#/$defs/Price" }, { "type": "null" }] }));
    assert_eq!(
        lines(&plain, &nullable),
        ["/properties/price: now accepts null: consumers of the old schema may not accept it"]
    );
}

#[test]
fn making_a_nullable_ref_property_non_null_is_breaking() {
    let plain = with_price(json!({ "$ref": "#/$defs/Price" }));
    let nullable = with_price(json!({ "anyOf": [{ "$ref": "#/$defs/Price" }, { "type": "null" }] }));
    assert_eq!(
        lines(&nullable, &plain),
        ["/properties/price/anyOf/1: variant of type \"null\" removed"]
    );
}

#[test]
fn a_flattened_enum_is_compared_next_to_the_struct_properties() {
    let flattened = |tags: &[&str]| {
        let one_of: Vec<Value> = tags
            .iter()
            .map(|tag| json!({ "type": "object", "properties": { "kind": { "type": "string", "const": tag } }, "required": ["kind"] }))
            .collect();
        json!({ "type": "object", "properties": { "id": { "type": "string" } }, "required": ["id"], "oneOf": one_of })
    };
    assert_eq!(
        lines(&flattened(&["A", "B"]), &flattened(&["A"])),
        ["/oneOf/1: variant with kind = \"B\" removed"]
    );
}
