//! Properties removed, added, renamed, made required or optional; types, formats and bounds
//! changed; annotations that do not matter.

use serde_json::json;

use super::{breaking_changes, lines, object, paths, product};

#[test]
fn an_identical_schema_is_compatible() {
    assert!(breaking_changes(&product(), &product()).is_empty());
}

#[test]
fn removing_a_property_is_breaking() {
    let mut new = product();
    new["properties"].as_object_mut().map(|p| p.remove("title"));
    new["required"] = json!(["id", "stock"]);
    assert_eq!(
        lines(&product(), &new),
        ["/properties/title: property removed: consumers of the old schema may rely on it"]
    );
}

#[test]
fn removing_an_optional_property_is_breaking_too() {
    let mut new = product();
    new["properties"].as_object_mut().map(|p| p.remove("note"));
    assert_eq!(paths(&product(), &new), ["/properties/note"]);
}

#[test]
fn adding_an_optional_property_is_not_breaking() {
    let mut new = product();
    new["properties"]["brand"] = json!({ "type": ["string", "null"] });
    assert!(breaking_changes(&product(), &new).is_empty());
}

#[test]
fn renaming_a_property_is_a_removal_and_a_new_required_property() {
    let mut new = product();
    let properties = new["properties"].as_object_mut().expect("properties");
    let title = properties.remove("title").expect("title");
    properties.insert("name".to_owned(), title);
    new["required"] = json!(["id", "name", "stock"]);
    assert_eq!(
        lines(&product(), &new),
        [
            "/properties/title: property removed: consumers of the old schema may rely on it",
            "/properties/name: new required property: messages of old producers lack it",
        ]
    );
}

#[test]
fn adding_a_required_property_is_breaking() {
    let mut new = product();
    new["properties"]["brand"] = json!({ "type": "string" });
    new["required"] = json!(["id", "title", "stock", "brand"]);
    assert_eq!(
        lines(&product(), &new),
        ["/properties/brand: new required property: messages of old producers lack it"]
    );
}

#[test]
fn making_an_optional_property_required_is_breaking() {
    let mut new = product();
    new["properties"]["note"] = json!({ "type": "string" });
    new["required"] = json!(["id", "title", "stock", "note"]);
    let found = lines(&product(), &new);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("/properties/note: optional property became required"));
    assert!(found[1].starts_with("/properties/note: type narrowed from [\"null\",\"string\"] to \"string\""));
}

#[test]
fn making_a_required_property_optional_is_breaking() {
    let mut new = product();
    new["required"] = json!(["id", "stock"]);
    assert_eq!(
        lines(&product(), &new),
        ["/properties/title: required property became optional: consumers of the old schema expect it"]
    );
}

#[test]
fn changing_a_property_type_is_breaking() {
    let mut new = product();
    new["properties"]["title"] = json!({ "type": "integer", "format": "int64" });
    assert_eq!(
        lines(&product(), &new),
        [
            "/properties/title: type changed from \"string\" to \"integer\"",
            "/properties/title: format changed from none to \"int64\"",
        ]
    );
}

#[test]
fn narrowing_a_type_array_is_breaking() {
    let old = object(json!({ "note": { "type": ["string", "null"] } }), &[]);
    let new = object(json!({ "note": { "type": "string" } }), &[]);
    assert_eq!(
        lines(&old, &new),
        ["/properties/note: type narrowed from [\"null\",\"string\"] to \"string\": messages of the old schema may be rejected"]
    );
}

#[test]
fn widening_a_type_to_nullable_is_breaking() {
    let old = object(json!({ "note": { "type": "string" } }), &[]);
    let new = object(json!({ "note": { "type": ["string", "null"] } }), &[]);
    assert_eq!(
        lines(&old, &new),
        ["/properties/note: type widened from \"string\" to [\"null\",\"string\"]: consumers of the old schema may not accept the new values"]
    );
}

#[test]
fn changing_a_format_is_breaking() {
    let mut new = product();
    new["properties"]["stock"]["format"] = json!("uint64");
    assert_eq!(
        lines(&product(), &new),
        ["/properties/stock: format changed from \"uint32\" to \"uint64\""]
    );
}

#[test]
fn raising_a_minimum_is_breaking_and_lowering_it_is_not() {
    let mut raised = product();
    raised["properties"]["stock"]["minimum"] = json!(1);
    assert_eq!(
        lines(&product(), &raised),
        ["/properties/stock: minimum raised from 0 to 1: old messages may be rejected"]
    );
    assert!(breaking_changes(&raised, &product()).is_empty());
}

#[test]
fn adding_a_max_length_or_a_pattern_is_breaking() {
    let mut new = product();
    new["properties"]["title"] = json!({ "type": "string", "maxLength": 80, "pattern": "^\\S" });
    assert_eq!(paths(&product(), &new), ["/properties/title", "/properties/title"]);
}

#[test]
fn changing_descriptions_titles_and_examples_is_not_breaking() {
    let mut new = product();
    new["title"] = json!("ProductCreatedV2");
    new["description"] = json!("A product was created.");
    new["properties"]["title"]["description"] = json!("Shown in listings");
    new["properties"]["title"]["examples"] = json!(["Kettle"]);
    new["properties"]["id"]["title"] = json!("Product id");
    assert!(breaking_changes(&product(), &new).is_empty());
}
