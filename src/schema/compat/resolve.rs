//! Following local `$ref`s (`#/$defs/Name`, `#`) within their own document, the siblings of a
//! `$ref` merged into its target.
//!
//! A reference that does not resolve, or a chain of more than [`MAX_REF_CHAIN`] references, is
//! an `Err` naming it; [`resolve_lenient`] keeps the node as it is instead.

use std::borrow::Cow;

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

/// Longest chain of `$ref`s leading to `$ref`s that is followed.
pub(super) const MAX_REF_CHAIN: usize = 32;

/// The node with its `$ref` (and the `$ref`s of its targets) replaced by the target, the
/// node's other keywords merged in; `Err` names a reference that does not resolve. A reference
/// is a URI fragment holding a JSON pointer (`#/$defs/Name`, `#`), percent-encoded the way
/// `schemars` writes names with spaces or other characters.
pub(super) fn resolve<'v>(doc: &'v Value, node: &'v Value) -> Result<Cow<'v, Value>, String> {
    let mut current = Cow::Borrowed(node);
    for _ in 0..MAX_REF_CHAIN {
        let Some(reference) = current.get("$ref").and_then(Value::as_str) else {
            return Ok(current);
        };
        let target = reference
            .strip_prefix('#')
            .and_then(|fragment| percent_decode_str(fragment).decode_utf8().ok())
            .and_then(|pointer| doc.pointer(&pointer))
            .ok_or_else(|| reference.to_owned())?;
        let only_ref = current.as_object().is_some_and(|keywords| keywords.len() == 1);
        current = if only_ref {
            Cow::Borrowed(target)
        } else {
            Cow::Owned(merge(&current, target))
        };
    }
    Err(format!("(a chain of more than {MAX_REF_CHAIN} references)"))
}

/// [`resolve`], keeping the node as it is when a reference does not resolve.
pub(super) fn resolve_lenient<'v>(doc: &'v Value, node: &'v Value) -> Cow<'v, Value> {
    resolve(doc, node).unwrap_or(Cow::Borrowed(node))
}

/// The target of a `$ref` with the keywords next to the `$ref` added: their `properties` and
/// `required` joined to the target's, any other keyword replacing the target's.
fn merge(node: &Value, target: &Value) -> Value {
    let mut merged = match target {
        Value::Object(keywords) => keywords.clone(),
        Value::Bool(true) => Map::new(),
        other => return other.clone(),
    };
    let Some(siblings) = node.as_object() else {
        return Value::Object(merged);
    };
    for (keyword, value) in siblings.iter().filter(|(keyword, _)| *keyword != "$ref") {
        match (merged.get_mut(keyword), value) {
            (Some(Value::Object(into)), Value::Object(from)) if keyword == "properties" => {
                into.extend(from.iter().map(|(name, schema)| (name.clone(), schema.clone())));
            }
            (Some(Value::Array(into)), Value::Array(from)) if keyword == "required" => {
                for name in from {
                    if !into.contains(name) {
                        into.push(name.clone());
                    }
                }
            }
            _ => {
                merged.insert(keyword.clone(), value.clone());
            }
        }
    }
    Value::Object(merged)
}
