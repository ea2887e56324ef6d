//! The alternatives of a `oneOf`/`anyOf` and how an old one is matched with the new one it
//! became: unit values by value, tagged variants by their tag, untagged ones by their title,
//! then by their `$ref` or type.

use serde_json::Value;

use super::keyword::{effective_types, json_type, literals, object_at, required_names, union_of};
use super::reason::types_label;
use super::resolve::{resolve_lenient, MAX_REF_CHAIN};

/// One alternative of a `oneOf`/`anyOf`, or a whole schema standing for the only one.
pub(super) struct Variant<'v> {
    pub(super) path: String,
    pub(super) schema: &'v Value,
    /// A whole schema compared with a union: its title names the type, not a variant.
    pub(super) whole: bool,
}

/// The variants of a union schema (with their paths), or the schema itself as the only one.
pub(super) fn variants<'v>(schema: &'v Value, path: &str) -> Vec<Variant<'v>> {
    match union_of(schema) {
        Some((keyword, alternatives)) => alternatives
            .iter()
            .enumerate()
            .map(|(i, alternative)| Variant {
                path: format!("{path}/{keyword}/{i}"),
                schema: alternative,
                whole: false,
            })
            .collect(),
        None => vec![Variant {
            path: path.to_owned(),
            schema,
            whole: true,
        }],
    }
}

/// Separates the unit values (`const`/`enum` variants, with their paths) from the variants
/// matched by key.
pub(super) fn split_literals<'a, 'v>(
    doc: &Value,
    variants: &'a [Variant<'v>],
) -> (Vec<(String, Value)>, Vec<&'a Variant<'v>>) {
    let mut values = Vec::new();
    let mut keyed = Vec::new();
    for variant in variants {
        let resolved = resolve_lenient(doc, variant.schema);
        match literals(&resolved) {
            Some(found) if resolved.get("properties").is_none() => {
                values.extend(found.into_iter().map(|v| (variant.path.clone(), v.clone())));
            }
            _ => keyed.push(variant),
        }
    }
    (values, keyed)
}

/// Whether a variant that is no list of values accepts `value` by its type.
pub(super) fn accepts_freely(doc: &Value, schema: &Value, value: &Value) -> bool {
    let resolved = resolve_lenient(doc, schema);
    let kind = json_type(value);
    literals(&resolved).is_none()
        && effective_types(&resolved)
            .is_none_or(|types| types.contains(kind) || (kind == "integer" && types.contains("number")))
}

/// What identifies a variant across versions, as phrases for messages.
pub(super) struct VariantKey {
    /// The tag (internally, adjacently or externally tagged enums), else the `$ref`, else the
    /// type.
    identity: String,
    /// Whether `identity` is a tag.
    tagged: bool,
    /// The `title` of an untagged variant (`schemars` names untagged variants so).
    title: Option<String>,
}

impl VariantKey {
    /// A tagged variant is known by its tag, an untagged one by its title if it has one.
    pub(super) fn primary(&self) -> &str {
        match &self.title {
            Some(title) if !self.tagged => title,
            _ => &self.identity,
        }
    }
}

/// The key of a variant, its `$ref` resolved against `doc`.
pub(super) fn variant_key(doc: &Value, variant: &Variant<'_>) -> VariantKey {
    let resolved = resolve_lenient(doc, variant.schema);
    let title = variant
        .schema
        .get("title")
        .and_then(Value::as_str)
        .filter(|_| !variant.whole)
        .map(|title| format!("titled {title:?}"));
    if let Some(identity) = tag_key(&resolved).or_else(|| external_key(&resolved)) {
        return VariantKey {
            identity,
            tagged: true,
            title,
        };
    }
    let identity = match (
        variant.schema.get("$ref").and_then(Value::as_str),
        effective_types(&resolved),
    ) {
        (Some(reference), _) => format!("referring to {reference:?}"),
        (None, Some(types)) => format!("of type {}", types_label(Some(&types))),
        (None, None) => "accepting any value".to_owned(),
    };
    VariantKey {
        identity,
        tagged: false,
        title,
    }
}

/// For each old variant, the new one it became: first by [`VariantKey::primary`] (in order,
/// when several share it), then, for untagged variants left over (a title added, changed or
/// dropped), by their `$ref` or type.
pub(super) fn match_variants(olds: &[VariantKey], news: &[VariantKey]) -> Vec<Option<usize>> {
    let mut taken = vec![false; news.len()];
    let mut pick = |wanted: &dyn Fn(&VariantKey) -> bool| {
        let found = (0..news.len()).find(|&j| !taken[j] && wanted(&news[j]));
        if let Some(j) = found {
            taken[j] = true;
        }
        found
    };
    let mut matched: Vec<Option<usize>> = olds
        .iter()
        .map(|old| pick(&|new| new.primary() == old.primary()))
        .collect();
    for (old, slot) in olds.iter().zip(&mut matched) {
        if slot.is_none() && !old.tagged {
            *slot = pick(&|new| !new.tagged && new.identity == old.identity);
        }
    }
    matched
}

/// Internally and adjacently tagged variants: a required property holding a single value.
fn tag_key(schema: &Value) -> Option<String> {
    let required = required_names(schema);
    object_at(schema, "properties")?
        .iter()
        .filter(|(name, _)| required.contains(name.as_str()))
        .find_map(|(name, property)| match literals(property)?.as_slice() {
            [value] => Some(format!("with {name} = {value}")),
            _ => None,
        })
}

/// Externally tagged variants: a closed object with one property, required.
fn external_key(schema: &Value) -> Option<String> {
    let properties = object_at(schema, "properties")?;
    let required = required_names(schema);
    let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
    let (name, _) = properties.iter().next()?;
    (closed && properties.len() == 1 && required.len() == 1 && required.contains(name.as_str()))
        .then(|| format!("with property {name:?}"))
}

/// Whether `null` is valid against the schema.
pub(super) fn accepts_null(doc: &Value, schema: &Value, depth: usize) -> bool {
    if depth > MAX_REF_CHAIN {
        return false;
    }
    let resolved = resolve_lenient(doc, schema);
    if let Some((_, alternatives)) = union_of(&resolved) {
        return alternatives
            .iter()
            .any(|alternative| accepts_null(doc, alternative, depth + 1));
    }
    effective_types(&resolved).is_none_or(|types| types.contains("null"))
}
