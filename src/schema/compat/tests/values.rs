//! `const` and `enum` values removed, added or restricted.

use serde_json::{json, Value};

use super::{breaking_changes, lines, object};

fn with_status(values: Value) -> Value {
    object(json!({ "status": { "type": "string", "enum": values } }), &["status"])
}

#[test]
fn removing_an_enum_value_is_breaking() {
    let old = with_status(json!(["Draft", "Active", "Archived"]));
    let new = with_status(json!(["Draft", "Active"]));
    assert_eq!(lines(&old, &new), ["/properties/status: value \"Archived\" removed"]);
}

#[test]
fn adding_an_enum_value_is_not_breaking() {
    let old = with_status(json!(["Draft", "Active"]));
    let new = with_status(json!(["Draft", "Active", "Archived"]));
    assert!(breaking_changes(&old, &new).is_empty());
}

#[test]
fn changing_a_const_is_breaking() {
    let old = object(json!({ "v": { "type": "integer", "const": 1 } }), &["v"]);
    let new = object(json!({ "v": { "type": "integer", "const": 2 } }), &["v"]);
    assert_eq!(lines(&old, &new), ["/properties/v: value 1 removed"]);
}

#[test]
fn restricting_a_free_string_to_values_is_breaking_and_freeing_it_is_not() {
    let free = object(json!({ "status": { "type": "string" } }), &["status"]);
    let listed = with_status(json!(["Draft", "Active"]));
    assert_eq!(
        lines(&free, &listed),
        ["/properties/status: restricted to the values [\"Draft\",\"Active\"]"]
    );
    assert!(breaking_changes(&listed, &free).is_empty());
}
