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

mod keyword;
mod reason;
mod resolve;
mod variant;
mod walk;

#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::Value;

use walk::Walk;

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
    let mut walk = Walk::new(old, new);
    walk.compare(old, new, "");
    walk.into_found()
}
