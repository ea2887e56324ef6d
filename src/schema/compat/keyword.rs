//! Reading the keywords of one schema node: the types it accepts, its `const`/`enum` values,
//! its union alternatives, `properties`, `required` and the like. No `$ref` is followed here.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// The JSON types a schema accepts: `None` for any value. From `type`, else from the
/// `const`/`enum` values.
pub(super) fn effective_types(schema: &Value) -> Option<BTreeSet<String>> {
    match schema {
        Value::Bool(true) => return None,
        Value::Bool(false) => return Some(BTreeSet::new()),
        _ => {}
    }
    match schema.get("type") {
        Some(Value::String(name)) => Some(BTreeSet::from([name.clone()])),
        Some(Value::Array(names)) => Some(names.iter().filter_map(Value::as_str).map(str::to_owned).collect()),
        _ => literals(schema).map(|values| values.into_iter().map(|value| json_type(value).to_owned()).collect()),
    }
}

/// The values of `const` (one) or `enum`, if the schema lists its values.
pub(super) fn literals(schema: &Value) -> Option<Vec<&Value>> {
    if let Some(value) = schema.get("const") {
        return Some(vec![value]);
    }
    schema
        .get("enum")
        .and_then(Value::as_array)
        .map(|values| values.iter().collect())
}

/// The JSON Schema type name of a value.
pub(super) fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(number) if number.is_f64() => "number",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether a schema may hold a value of JSON type `kind`.
pub(super) fn may_be(schema: &Value, kind: &str) -> bool {
    effective_types(schema).is_none_or(|types| types.contains(kind))
}

/// The `oneOf` (else `anyOf`) alternatives, with the keyword.
pub(super) fn union_of(schema: &Value) -> Option<(&'static str, &Vec<Value>)> {
    ["oneOf", "anyOf"].into_iter().find_map(|keyword| {
        schema
            .get(keyword)
            .and_then(Value::as_array)
            .map(|alternatives| (keyword, alternatives))
    })
}

/// Whether `ref_side` is a `$ref` that `union_side` lists as one of its alternatives.
pub(super) fn ref_among_variants(union_side: &Value, ref_side: &Value) -> bool {
    let Some(reference) = ref_side.get("$ref") else {
        return false;
    };
    union_of(union_side).is_some_and(|(_, alternatives)| {
        alternatives
            .iter()
            .any(|alternative| alternative.get("$ref") == Some(reference))
    })
}

/// Whether the node is a `$ref` (with or without siblings).
pub(super) fn has_ref(schema: &Value) -> bool {
    schema.get("$ref").is_some()
}

/// The object under `keyword`, if it is one.
pub(super) fn object_at<'v>(schema: &'v Value, keyword: &str) -> Option<&'v Map<String, Value>> {
    schema.get(keyword).and_then(Value::as_object)
}

/// The array under `keyword`, empty if there is none.
pub(super) fn array_at<'v>(schema: &'v Value, keyword: &str) -> &'v [Value] {
    schema.get(keyword).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The names listed under `required`.
pub(super) fn required_names(schema: &Value) -> BTreeSet<&str> {
    array_at(schema, "required").iter().filter_map(Value::as_str).collect()
}

/// A property name as a JSON pointer segment.
pub(super) fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}
