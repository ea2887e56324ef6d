//! The walk through two schemas side by side: the [`Walk`] that compares them keyword by
//! keyword (types, formats, values, bounds, properties, maps, arrays, `allOf`, unions) and
//! collects every [`Breaking`] change it meets.
//!
//! It never fails: a `$ref` that does not resolve is itself reported as a breaking change, and
//! a pair of `$ref` targets is compared once, so recursive types terminate.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::keyword::{
    array_at, escape, has_ref, literals, may_be, object_at, ref_among_variants, required_names, union_of,
};
use super::reason::{bound_change, label, type_change};
use super::resolve::resolve;
use super::variant::{
    accepts_freely, accepts_null, match_variants, split_literals, variant_key, variants, Variant, VariantKey,
};
use super::Breaking;

/// Bounds that break when they rise (or appear).
const LOWER_BOUNDS: [&str; 5] = ["minimum", "exclusiveMinimum", "minLength", "minItems", "minProperties"];

/// Bounds that break when they fall (or appear).
const UPPER_BOUNDS: [&str; 5] = ["maximum", "exclusiveMaximum", "maxLength", "maxItems", "maxProperties"];

/// The state of one comparison.
pub(super) struct Walk<'a> {
    old_doc: &'a Value,
    new_doc: &'a Value,
    /// The (old, new) pairs of `$ref` targets (and the roots) already compared, as JSON text:
    /// the same pair always gives the same findings, and a recursive type comes back to a pair
    /// seen.
    seen: HashSet<(String, String)>,
    found: Vec<Breaking>,
}

impl<'a> Walk<'a> {
    /// A comparison of the document `old` with the document `new`, nothing found yet.
    pub(super) fn new(old: &'a Value, new: &'a Value) -> Self {
        Walk {
            old_doc: old,
            new_doc: new,
            // `{"$ref": "#"}` leads back to the roots.
            seen: HashSet::from([(old.to_string(), new.to_string())]),
            found: Vec::new(),
        }
    }

    /// What the comparison found, in the order it was found.
    pub(super) fn into_found(self) -> Vec<Breaking> {
        self.found
    }

    fn report(&mut self, path: &str, reason: impl Into<String>) {
        self.found.push(Breaking {
            path: path.to_owned(),
            reason: reason.into(),
        });
    }

    /// Compares two schemas found at `path`.
    pub(super) fn compare(&mut self, old: &Value, new: &Value, path: &str) {
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
