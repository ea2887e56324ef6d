//! Array items, map values and keys, and objects closed to other properties.

use serde_json::{json, Value};

use super::{breaking_changes, lines, object, paths, product};

fn with_lines(item: Value) -> Value {
    object(json!({ "lines": { "type": "array", "items": item } }), &["lines"])
}

#[test]
fn a_change_inside_array_items_is_breaking() {
    let old =
        with_lines(json!({ "type": "object", "properties": { "sku": { "type": "string" } }, "required": ["sku"] }));
    let new =
        with_lines(json!({ "type": "object", "properties": { "sku": { "type": "integer" } }, "required": ["sku"] }));
    assert_eq!(
        lines(&old, &new),
        ["/properties/lines/items/properties/sku: type changed from \"string\" to \"integer\""]
    );
}

#[test]
fn a_new_optional_field_inside_array_items_is_not_breaking() {
    let old =
        with_lines(json!({ "type": "object", "properties": { "sku": { "type": "string" } }, "required": ["sku"] }));
    let new = with_lines(
        json!({ "type": "object", "properties": { "sku": { "type": "string" }, "qty": { "type": ["integer", "null"] } }, "required": ["sku"] }),
    );
    assert!(breaking_changes(&old, &new).is_empty());
}

fn with_map(values: Value) -> Value {
    object(
        json!({ "attributes": { "type": "object", "additionalProperties": values } }),
        &["attributes"],
    )
}

#[test]
fn a_change_of_map_values_is_breaking() {
    let old = with_map(json!({ "type": "string" }));
    let new = with_map(json!({ "type": "array", "items": { "type": "string" } }));
    assert_eq!(paths(&old, &new), ["/properties/attributes/additionalProperties"]);
    assert!(breaking_changes(&old, &with_map(json!({ "type": "string" }))).is_empty());
}

#[test]
fn closing_an_object_is_breaking_and_opening_it_is_not() {
    let open = product();
    let mut closed = product();
    closed["additionalProperties"] = json!(false);
    assert_eq!(
        lines(&open, &closed),
        [": other properties no longer accepted: old messages with other keys are rejected"]
    );
    assert!(breaking_changes(&closed, &open).is_empty());
}

#[test]
fn changing_the_key_type_of_a_map_is_breaking() {
    let old = json!({ "type": "object", "additionalProperties": false, "patternProperties": { "^-?\\d+$": { "type": "boolean" } } });
    let new = json!({ "type": "object", "additionalProperties": false, "patternProperties": { "^\\d+$": { "type": "boolean" } } });
    assert_eq!(paths(&old, &new), ["/patternProperties/^-?\\d+$"]);
}
