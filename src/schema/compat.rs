//! Backward compatibility of message schemas: may a new JSON Schema replace an old one?
//!
//! [`breaking_changes`] compares the schema consumers were written for (`old`) with the one a
//! change produces (`new`). A change breaks when a message valid against the old schema may
//! be rejected by readers of the new one, or when producers of the new schema may send a
//! message readers of the old one reject. The walk knows the shape `schemars` 1.x generates
//! (JSON Schema draft 2020-12): local `$ref`s into `$defs`, resolved against each document's
//! own `$defs` with the siblings of a `$ref` merged into its target; `properties` with
//! `required`; `type` as a name or an array of names; `const`/`enum`; `oneOf`/`anyOf` for Rust
//! enums and `Option`; `items`/`prefixItems`; `additionalProperties`/`patternProperties` for
//! maps; `allOf` for flattened enums; `format` and the numeric, length and pattern bounds.
//!
//! Breaking:
//! - a property of the old schema is missing from the new one (a rename is a removal and an
//!   addition);
//! - a type changes, narrows (`["string","null"]` to `"string"`) or widens (`"string"` to
//!   `["string","null"]`, a `$ref` to an `anyOf` with `null`): old readers may reject `null`;
//! - a `format` changes, is added or is dropped (`int32` to `int64` and back both break Rust
//!   readers);
//! - an optional property becomes required, a new property is required, or a required
//!   property becomes optional (producers of the new schema may leave it out);
//! - a `const`/`enum` value disappears, or a free value becomes restricted to a list;
//! - a `oneOf`/`anyOf` variant disappears. Variants are matched by their tag: a required
//!   property holding a single `const` (internally and adjacently tagged enums), else the one
//!   required property of a closed object (externally tagged enums); untagged ones by their
//!   `title`, then (a title added, changed or dropped) by their `$ref`, else their type. Unit
//!   variants (`const`/`enum` values) are matched by value, wherever they sit, and a value may
//!   move into a variant of its type that accepts any value;
//! - a lower bound rises or an upper bound falls (`minimum`, `maxLength`, `maxItems`, ...), a
//!   `pattern` is added or changes, items must become unique;
//! - an object stops accepting other keys (`additionalProperties: false`), a map key pattern
//!   disappears, an `allOf` entry appears or disappears.
//!
//! Array items, tuple members, map values and `allOf` entries are compared recursively.
//!
//! Not breaking: a new optional property, a new `$defs` entry, changed descriptions, titles
//! and examples, a new enum value or `oneOf` variant, a bound relaxed, a pattern dropped.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::fmt;

use percent_encoding::percent_decode_str;
use serde_json::{Map, Value};

/// One backward-incompatible difference between two schemas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breaking {
    /// Where: a JSON-pointer-like path through the old schema that passes through `$ref`s as if
    /// they were inlined, such as `/properties/state/properties/variants/items/properties/sku`;
    /// empty for the root.
    pub path: String,
    /// What changed, and which side of the wire it breaks.
    pub reason: String,
}

impl fmt::Display for Breaking {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// Lists every change from `old` to `new` that breaks backward compatibility, in the order of a
/// walk through the old schema; empty when `new` may replace `old`.
///
/// Both are whole documents as `schemars` writes them: each `$ref` is resolved against the
/// `$defs` of its own document, and a definition reached twice (a recursive type, a type used
/// in several places) is compared once, its findings reported at the first path that reaches
/// it (properties are walked in the order of their names).
#[must_use]
pub fn breaking_changes(old: &Value, new: &Value) -> Vec<Breaking> {
    let mut walk = Walk {
        old_doc: old,
        new_doc: new,
        // `{"$ref": "#"}` leads back to the roots.
        seen: HashSet::from([(old.to_string(), new.to_string())]),
        found: Vec::new(),
    };
    walk.compare(old, new, "");
    walk.found
}

/// Longest chain of `$ref`s leading to `$ref`s that is followed.
const MAX_REF_CHAIN: usize = 32;

/// Bounds that break when they rise (or appear).
const LOWER_BOUNDS: [&str; 5] = ["minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"];

/// Bounds that break when they fall (or appear).
const UPPER_BOUNDS: [&str; 5] = ["maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"];

/// The state of one comparison.
struct Walk<'a> {
    old_doc: &'a Value,
    new_doc: &'a Value,
    /// The (old, new) pairs of `$ref` targets (and the roots) already compared, as JSON text:
    /// the same pair always gives the same findings, and a recursive type comes back to a pair
    /// seen.
    seen: HashSet<(String, String)>,
    found: Vec<Breaking>,
}

/// One alternative of a `oneOf`/`anyOf`, or a whole schema standing for the only one.
struct Variant<'v> {
    path: String,
    schema: &'v Value,
    /// A whole schema compared with a union: its title names the type, not a variant.
    whole: bool,
}

impl Walk<'_> {
    fn report(&mut self, path: &str, reason: impl Into<String>) {
        self.found.push(Breaking {
            path: path.to_owned(),
            reason: reason.into(),
        });
    }

    /// Compares two schemas found at `path`.
    fn compare(&mut self, old: &Value, new: &Value, path: &str) {
        // `X` against `anyOf: [X, null]` (a field made `Option` or back) keeps the `$ref` so the
        // variant `X` is recognised by its reference.
        let ref_is_variant = ref_among_variants(old, new) || ref_among_variants(new, old);
        if !ref_is_variant && (has_ref(old) || has_ref(new)) {
            return self.follow_refs(old, new, path);
        }
        let (old_union, new_union) = (union_of(old), union_of(new));
        if old_union.is_none() && new_union.is_none() {
            return self.compare_plain(old, new, path);
        }
        let olds = variants(old, path);
        let news = variants(new, "");
        self.compare_variants(&olds, &news);
        if !accepts_null(self.old_doc, old, 0) && accepts_null(self.new_doc, new, 0) {
            self.report(path, "now accepts null: consumers of the old schema may not accept it");
        }
        if old_union.is_some() && new_union.is_some() {
            // A flattened enum sits next to the struct's own properties.
            self.compare_plain(old, new, path);
        }
    }

    /// Resolves the `$ref`s of both nodes and compares the results, once per pair of results.
    fn follow_refs(&mut self, old: &Value, new: &Value, path: &str) {
        let (old_doc, new_doc) = (self.old_doc, self.new_doc);
        match (resolve(old_doc, old), resolve(new_doc, new)) {
            (Ok(old), Ok(new)) => {
                if self.seen.insert((old.to_string(), new.to_string())) {
                    self.compare(&old, &new, path);
                }
            }
            (Err(reference), _) => {
                self.report(path, format!("`$ref` {reference:?} does not resolve in the old schema"));
            }
            (_, Err(reference)) => {
                self.report(path, format!("`$ref` {reference:?} does not resolve in the new schema"));
            }
        }
    }

    /// Reports the old variants (and unit values) the new union lacks; compares the others.
    fn compare_variants(&mut self, olds: &[Variant<'_>], news: &[Variant<'_>]) {
        let (old_doc, new_doc) = (self.old_doc, self.new_doc);
        let (old_values, old_keyed) = split_literals(old_doc, olds);
        let (new_values, new_keyed) = split_literals(new_doc, news);
        for (path, value) in old_values {
            let kept = new_values.iter().any(|(_, v)| *v == value)
                || new_keyed.iter().any(|v| accepts_freely(new_doc, v.schema, &value));
            if !kept {
                self.report(&path, format!("value {value} removed"));
            }
        }
        let old_keys: Vec<VariantKey> = old_keyed.iter().map(|v| variant_key(old_doc, v)).collect();
        let new_keys: Vec<VariantKey> = new_keyed.iter().map(|v| variant_key(new_doc, v)).collect();
        for (i, matched) in match_variants(&old_keys, &new_keys).into_iter().enumerate() {
            let variant = old_keyed[i];
            if let Some(j) = matched {
                self.compare(variant.schema, new_keyed[j].schema, &variant.path);
            } else {
                let reason = format!("variant {} removed", old_keys[i].primary());
                self.report(&variant.path, reason);
            }
        }
    }

    /// Compares two schemas without `$ref` at their top, keyword by keyword.
    fn compare_plain(&mut self, old: &Value, new: &Value, path: &str) {
        if let Some(reason) = type_change(old, new) {
            self.report(path, reason);
        }
        let (old_format, new_format) = (old.get("format"), new.get("format"));
        if old_format != new_format {
            let reason = format!("format changed from {} to {}", label(old_format), label(new_format));
            self.report(path, reason);
        }
        self.compare_literals(old, new, path);
        self.compare_constraints(old, new, path);
        if may_be(old, "object") && may_be(new, "object") {
            self.compare_object(old, new, path);
        }
        if may_be(old, "array") && may_be(new, "array") {
            self.compare_array(old, new, path);
        }
        self.compare_all_of(old, new, path);
    }

    /// `const`/`enum`: a value lost, or a free value restricted to a list.
    fn compare_literals(&mut self, old: &Value, new: &Value, path: &str) {
        match (literals(old), literals(new)) {
            (Some(old_values), Some(new_values)) => {
                for value in old_values {
                    if !new_values.contains(&value) {
                        self.report(path, format!("value {value} removed"));
                    }
                }
            }
            (None, Some(new_values)) => {
                let list = Value::Array(new_values.into_iter().cloned().collect());
                self.report(path, format!("restricted to the values {list}"));
            }
            _ => {}
        }
    }

    /// Bounds, `pattern` and `uniqueItems`: whatever rejects values the old schema accepted.
    fn compare_constraints(&mut self, old: &Value, new: &Value, path: &str) {
        for keyword in LOWER_BOUNDS {
            if let Some(reason) = bound_change(old, new, keyword, true) {
                self.report(path, reason);
            }
        }
        for keyword in UPPER_BOUNDS {
            if let Some(reason) = bound_change(old, new, keyword, false) {
                self.report(path, reason);
            }
        }
        if let Some(pattern) = new.get("pattern") {
            match old.get("pattern") {
                Some(before) if before == pattern => {}
                Some(before) => {
                    self.report(path, format!("pattern changed from {before} to {pattern}"));
                }
                None => self.report(path, format!("pattern {pattern} added")),
            }
        }
        let unique = Some(&Value::Bool(true));
        if new.get("uniqueItems") == unique && old.get("uniqueItems") != unique {
            self.report(
                path,
                "items must now be unique: old messages with repeated items are rejected",
            );
        }
    }

    /// Properties (removed, changed, required or not), then map values and map keys.
    fn compare_object(&mut self, old: &Value, new: &Value, path: &str) {
        let empty = Map::new();
        let old_properties = object_at(old, "properties").unwrap_or(&empty);
        let new_properties = object_at(new, "properties").unwrap_or(&empty);
        let (old_required, new_required) = (required_names(old), required_names(new));
        for (name, old_property) in old_properties {
            let at = format!("{path}/properties/{}", escape(name));
            let Some(new_property) = new_properties.get(name) else {
                self.report(&at, "property removed: consumers of the old schema may rely on it");
                continue;
            };
            let name = name.as_str();
            match (old_required.contains(name), new_required.contains(name)) {
                (false, true) => self.report(
                    &at,
                    "optional property became required: messages of old producers may lack it",
                ),
                (true, false) => self.report(
                    &at,
                    "required property became optional: consumers of the old schema expect it",
                ),
                _ => {}
            }
            self.compare(old_property, new_property, &at);
        }
        for name in new_required {
            if !old_properties.contains_key(name) {
                self.report(
                    &format!("{path}/properties/{}", escape(name)),
                    "new required property: messages of old producers lack it",
                );
            }
        }
        self.compare_additional(old, new, path);
        self.compare_pattern_properties(old, new, path);
    }

    /// `additionalProperties`: closing an object breaks, opening it does not, and the value
    /// schemas of maps are compared.
    fn compare_additional(&mut self, old: &Value, new: &Value, path: &str) {
        let (old_extra, new_extra) = (old.get("additionalProperties"), new.get("additionalProperties"));
        let (closed, open) = (Value::Bool(false), Value::Bool(true));
        if old_extra == Some(&closed) {
            return;
        }
        if new_extra == Some(&closed) {
            return self.report(
                path,
                "other properties no longer accepted: old messages with other keys are rejected",
            );
        }
        let (old_extra, new_extra) = (old_extra.unwrap_or(&open), new_extra.unwrap_or(&open));
        if *old_extra != open || *new_extra != open {
            self.compare(old_extra, new_extra, &format!("{path}/additionalProperties"));
        }
    }

    /// `patternProperties` (maps with integer keys): a key pattern lost, or its values changed.
    fn compare_pattern_properties(&mut self, old: &Value, new: &Value, path: &str) {
        let empty = Map::new();
        let old_patterns = object_at(old, "patternProperties").unwrap_or(&empty);
        let new_patterns = object_at(new, "patternProperties").unwrap_or(&empty);
        for (pattern, old_values) in old_patterns {
            let at = format!("{path}/patternProperties/{}", escape(pattern));
            match new_patterns.get(pattern) {
                Some(new_values) => self.compare(old_values, new_values, &at),
                None => self.report(&at, "key pattern removed: keys of old messages are rejected"),
            }
        }
    }

    /// `items` (a missing one accepts anything) and the members of tuples (`prefixItems`).
    fn compare_array(&mut self, old: &Value, new: &Value, path: &str) {
        let open = Value::Bool(true);
        let (old_items, new_items) = (old.get("items"), new.get("items"));
        if old_items.is_some() || new_items.is_some() {
            self.compare(
                old_items.unwrap_or(&open),
                new_items.unwrap_or(&open),
                &format!("{path}/items"),
            );
        }
        let old_members = array_at(old, "prefixItems");
        let new_members = array_at(new, "prefixItems");
        for (i, (old_member, new_member)) in old_members.iter().zip(new_members).enumerate() {
            self.compare(old_member, new_member, &format!("{path}/prefixItems/{i}"));
        }
    }

    /// `allOf` entries (flattened enums), compared by position.
    fn compare_all_of(&mut self, old: &Value, new: &Value, path: &str) {
        let (old_entries, new_entries) = (array_at(old, "allOf"), array_at(new, "allOf"));
        for i in 0..old_entries.len().max(new_entries.len()) {
            let at = format!("{path}/allOf/{i}");
            match (old_entries.get(i), new_entries.get(i)) {
                (Some(old_entry), Some(new_entry)) => self.compare(old_entry, new_entry, &at),
                (Some(_), None) => self.report(&at, "allOf entry removed: consumers of the old schema may rely on it"),
                (None, Some(_)) => self.report(&at, "allOf entry added: old messages may not satisfy it"),
                (None, None) => {}
            }
        }
    }
}

/// The variants of a union schema (with their paths), or the schema itself as the only one.
fn variants<'v>(schema: &'v Value, path: &str) -> Vec<Variant<'v>> {
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
fn split_literals<'a, 'v>(doc: &Value, variants: &'a [Variant<'v>]) -> (Vec<(String, Value)>, Vec<&'a Variant<'v>>) {
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
fn accepts_freely(doc: &Value, schema: &Value, value: &Value) -> bool {
    let resolved = resolve_lenient(doc, schema);
    let kind = json_type(value);
    literals(&resolved).is_none()
        && effective_types(&resolved)
            .is_none_or(|types| types.contains(kind) || (kind == "integer" && types.contains("number")))
}

/// What identifies a variant across versions, as phrases for messages.
struct VariantKey {
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
    fn primary(&self) -> &str {
        match &self.title {
            Some(title) if !self.tagged => title,
            _ => &self.identity,
        }
    }
}

fn variant_key(doc: &Value, variant: &Variant<'_>) -> VariantKey {
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
fn match_variants(olds: &[VariantKey], news: &[VariantKey]) -> Vec<Option<usize>> {
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
fn accepts_null(doc: &Value, schema: &Value, depth: usize) -> bool {
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

/// The message for a change of type, if the accepted types differ.
fn type_change(old: &Value, new: &Value) -> Option<String> {
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
fn bound_change(old: &Value, new: &Value, keyword: &str, lower: bool) -> Option<String> {
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

/// The JSON types a schema accepts: `None` for any value. From `type`, else from the
/// `const`/`enum` values.
fn effective_types(schema: &Value) -> Option<BTreeSet<String>> {
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
fn literals(schema: &Value) -> Option<Vec<&Value>> {
    if let Some(value) = schema.get("const") {
        return Some(vec![value]);
    }
    schema
        .get("enum")
        .and_then(Value::as_array)
        .map(|values| values.iter().collect())
}

/// The JSON Schema type name of a value.
fn json_type(value: &Value) -> &'static str {
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

/// `"string"`, `["null","string"]`, or `any value`.
fn types_label(types: Option<&BTreeSet<String>>) -> String {
    match types {
        None => "any value".to_owned(),
        Some(types) if types.len() == 1 => format!("{:?}", types.iter().next().unwrap_or(&String::new())),
        Some(types) => Value::from(types.iter().cloned().collect::<Vec<_>>()).to_string(),
    }
}

/// A keyword's value as JSON, or `none`.
fn label(value: Option<&Value>) -> String {
    value.map_or_else(|| "none".to_owned(), Value::to_string)
}

/// Whether a schema may hold a value of JSON type `kind`.
fn may_be(schema: &Value, kind: &str) -> bool {
    effective_types(schema).is_none_or(|types| types.contains(kind))
}

/// The `oneOf` (else `anyOf`) alternatives, with the keyword.
fn union_of(schema: &Value) -> Option<(&'static str, &Vec<Value>)> {
    ["oneOf", "anyOf"].into_iter().find_map(|keyword| {
        schema
            .get(keyword)
            .and_then(Value::as_array)
            .map(|alternatives| (keyword, alternatives))
    })
}

/// Whether `ref_side` is a `$ref` that `union_side` lists as one of its alternatives.
fn ref_among_variants(union_side: &Value, ref_side: &Value) -> bool {
    let Some(reference) = ref_side.get("$ref") else {
        return false;
    };
    union_of(union_side).is_some_and(|(_, alternatives)| {
        alternatives
            .iter()
            .any(|alternative| alternative.get("$ref") == Some(reference))
    })
}

fn has_ref(schema: &Value) -> bool {
    schema.get("$ref").is_some()
}

fn object_at<'v>(schema: &'v Value, keyword: &str) -> Option<&'v Map<String, Value>> {
    schema.get(keyword).and_then(Value::as_object)
}

fn array_at<'v>(schema: &'v Value, keyword: &str) -> &'v [Value] {
    schema.get(keyword).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn required_names(schema: &Value) -> BTreeSet<&str> {
    array_at(schema, "required").iter().filter_map(Value::as_str).collect()
}

/// A property name as a JSON pointer segment.
fn escape(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// The node with its `$ref` (and the `$ref`s of its targets) replaced by the target, the
/// node's other keywords merged in; `Err` names a reference that does not resolve. A reference
/// is a URI fragment holding a JSON pointer (`#/$defs/Name`, `#`), percent-encoded the way
/// `schemars` writes names with spaces or other characters.
fn resolve<'v>(doc: &'v Value, node: &'v Value) -> Result<Cow<'v, Value>, String> {
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
fn resolve_lenient<'v>(doc: &'v Value, node: &'v Value) -> Cow<'v, Value> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
        let narrowed =
            json!({ "anyOf": [{ "title": "Cents", "type": "integer", "minimum": 0 }, { "type": "string" }] });
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

    fn with_lines(item: Value) -> Value {
        object(json!({ "lines": { "type": "array", "items": item } }), &["lines"])
    }

    #[test]
    fn a_change_inside_array_items_is_breaking() {
        let old =
            with_lines(json!({ "type": "object", "properties": { "sku": { "type": "string" } }, "required": ["sku"] }));
        let new = with_lines(
            json!({ "type": "object", "properties": { "sku": { "type": "integer" } }, "required": ["sku"] }),
        );
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

    #[test]
    fn breaking_displays_as_path_and_reason() {
        let breaking = Breaking {
            path: "/properties/sku".to_owned(),
            reason: "property removed".to_owned(),
        };
        assert_eq!(breaking.to_string(), "/properties/sku: property removed");
    }

    mod v1 {
        use chrono::{DateTime, Utc};
        use uuid::Uuid;

        /// The first version of an event.
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        pub struct ProductCreated {
            pub id: Uuid,
            pub title: String,
            pub price: Price,
            pub tags: Vec<String>,
            pub note: Option<String>,
            pub at: DateTime<Utc>,
        }

        /// A money amount.
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        pub struct Price {
            pub cents: i64,
            pub currency: String,
        }
    }

    mod v2 {
        use chrono::{DateTime, Utc};
        use uuid::Uuid;

        /// The second version: `title` dropped, `Price::currency` an enum.
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        pub struct ProductCreated {
            pub id: Uuid,
            pub price: Price,
            pub tags: Vec<String>,
            pub note: Option<String>,
            pub at: DateTime<Utc>,
        }

        /// A money amount.
        #[derive(schemars::JsonSchema)]
        #[allow(dead_code)]
        pub struct Price {
            pub cents: i64,
            pub currency: String,
        }
    }

    #[test]
    fn a_field_dropped_from_a_derived_schema_is_reported() {
        let old = schemars::schema_for!(v1::ProductCreated).to_value();
        let new = schemars::schema_for!(v2::ProductCreated).to_value();
        assert_eq!(old["properties"]["price"]["$ref"], "#/$defs/Price", "{old:#}");
        assert!(breaking_changes(&old, &old).is_empty());
        assert_eq!(
            lines(&old, &new),
            ["/properties/title: property removed: consumers of the old schema may rely on it"]
        );
        assert_eq!(
            lines(&new, &old),
            ["/properties/title: new required property: messages of old producers lack it"]
        );
    }
}
