//! The reasons given for a changed type or bound, and the labels they quote.

use std::collections::BTreeSet;

use serde_json::Value;

use super::keyword::effective_types;

/// The message for a change of type, if the accepted types differ.
pub(super) fn type_change(old: &Value, new: &Value) -> Option<String> {
    let (old_types, new_types) = (effective_types(old), effective_types(new));
    if old_types == new_types {
        return None;
    }
    let from = types_label(old_types.as_ref());
    let to = types_label(new_types.as_ref());
    let narrowed = match (&old_types, &new_types) {
        (Some(old_types), Some(new_types)) => new_types.is_subset(old_types),
        (None, _) => true,
        (Some(_), None) => false,
    };
    let widened = match (&old_types, &new_types) {
        (Some(old_types), Some(new_types)) => old_types.is_subset(new_types),
        (_, None) => true,
        (None, Some(_)) => false,
    };
    Some(if narrowed {
        format!("type narrowed from {from} to {to}: messages of the old schema may be rejected")
    } else if widened {
        format!("type widened from {from} to {to}: consumers of the old schema may not accept the new values")
    } else {
        format!("type changed from {from} to {to}")
    })
}

/// The message for a bound that rose (`lower`) or fell (upper), or appeared.
pub(super) fn bound_change(old: &Value, new: &Value, keyword: &str, lower: bool) -> Option<String> {
    let after = new.get(keyword)?;
    let Some(before) = old.get(keyword) else {
        return Some(format!("{keyword} {after} added: old messages may be rejected"));
    };
    let (before_number, after_number) = (before.as_f64()?, after.as_f64()?);
    if lower && after_number > before_number {
        Some(format!(
            "{keyword} raised from {before} to {after}: old messages may be rejected"
        ))
    } else if !lower && after_number < before_number {
        Some(format!(
            "{keyword} lowered from {before} to {after}: old messages may be rejected"
        ))
    } else {
        None
    }
}

/// `"string"`, `["null","string"]`, or `any value`.
pub(super) fn types_label(types: Option<&BTreeSet<String>>) -> String {
    match types {
        None => "any value".to_owned(),
        Some(types) if types.len() == 1 => format!("{:?}", types.iter().next().unwrap_or(&String::new())),
        Some(types) => Value::from(types.iter().cloned().collect::<Vec<_>>()).to_string(),
    }
}

/// A keyword's value as JSON, or `none`.
pub(super) fn label(value: Option<&Value>) -> String {
    value.map_or_else(|| "none".to_owned(), Value::to_string)
}
