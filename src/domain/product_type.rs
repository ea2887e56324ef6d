//! Product types: the attributes a kind of product has, each with a kind (text, number with
//! an optional unit, flag, one of a fixed list), whether it is required, whether it is a
//! search facet, and whether it varies per variant (an option such as size or colour).
//!
//! A product of a type is checked against it after every command ([`check`], on the whole
//! new state, so no command can leave a product invalid). A change to a type is checked by
//! [`decide_change`]; whether the products already of that type still fit the changed type is
//! the store's to find out (they are checked with [`check`] too, and a change any of them
//! would break is refused).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use super::product::{required_text, AttributeValue, DomainError, Product, SHORT_TEXT_MAX_CHARS};

/// Most attributes a type may define.
pub const TYPE_ATTRIBUTES_MAX: usize = 50;
/// Most values a one-of attribute may list.
pub const ONE_OF_MAX: usize = 200;

/// The kind of an attribute's values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum AttributeKind {
    /// Text up to 100 characters.
    Text,
    /// A number, with an optional unit (`g`, `cm`, `W`) for display.
    Number {
        /// Unit of the number.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unit: Option<String>,
    },
    /// `true` or `false`.
    Boolean,
    /// One of a fixed list of text values.
    OneOf {
        /// The values allowed.
        values: Vec<String>,
    },
}

/// One attribute a type defines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct AttributeDef {
    /// Attribute name (the key in a product's `attributes`, or a variant's `options`).
    pub name: String,
    /// Kind of its values.
    #[serde(flatten)]
    pub kind: AttributeKind,
    /// A product of the type must have it (a variant attribute: every variant must).
    #[serde(default)]
    pub required: bool,
    /// Search returns counts of its values.
    #[serde(default)]
    pub facet: bool,
    /// It varies per variant: an option of the variants, not an attribute of the product.
    #[serde(default)]
    pub variant: bool,
}

/// A product type as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProductType {
    /// Key (slug), unique; products name their type by it.
    pub key: String,
    /// Display name.
    pub name: String,
    /// The attributes, in order.
    pub attributes: Vec<AttributeDef>,
    /// Version: 1 on creation, +1 per change.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
}

/// A type's name and attributes as a request gives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TypeDefinition {
    /// Display name.
    pub name: String,
    /// The attributes.
    #[serde(default)]
    pub attributes: Vec<AttributeDef>,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> DomainError {
    DomainError::invalid(field, reason)
}

/// Checks a definition on its own: names unique and well formed, one-of lists non-empty.
pub fn check_definition(d: &TypeDefinition) -> Result<TypeDefinition, DomainError> {
    let name = required_text("name", &d.name, SHORT_TEXT_MAX_CHARS)?;
    if d.attributes.len() > TYPE_ATTRIBUTES_MAX {
        return Err(invalid(
            "attributes",
            format!("at most {TYPE_ATTRIBUTES_MAX} attributes"),
        ));
    }
    let mut seen = BTreeSet::new();
    let mut attributes = Vec::with_capacity(d.attributes.len());
    for a in &d.attributes {
        let n = required_text("attributes.name", &a.name, SHORT_TEXT_MAX_CHARS)?;
        if !seen.insert(n.clone()) {
            return Err(invalid("attributes.name", format!("{n:?} is defined twice")));
        }
        let kind = match &a.kind {
            AttributeKind::OneOf { values } => {
                if values.is_empty() || values.len() > ONE_OF_MAX {
                    return Err(invalid(
                        "attributes.values",
                        format!("{n:?} lists 1 to {ONE_OF_MAX} values"),
                    ));
                }
                let values = values
                    .iter()
                    .map(|v| required_text("attributes.values", v, SHORT_TEXT_MAX_CHARS))
                    .collect::<Result<Vec<_>, _>>()?;
                AttributeKind::OneOf { values }
            }
            AttributeKind::Number { unit } => AttributeKind::Number {
                unit: unit
                    .as_deref()
                    .map(|u| required_text("attributes.unit", u, SHORT_TEXT_MAX_CHARS))
                    .transpose()?,
            },
            k => k.clone(),
        };
        attributes.push(AttributeDef {
            name: n,
            kind,
            ..a.clone()
        });
    }
    Ok(TypeDefinition { name, attributes })
}

/// Whether `v` is a value of `kind`; the reason when not.
fn fits(kind: &AttributeKind, v: &AttributeValue) -> Result<(), String> {
    match (kind, v) {
        (AttributeKind::Text, AttributeValue::Text(_))
        | (AttributeKind::Number { .. }, AttributeValue::Number(_))
        | (AttributeKind::Boolean, AttributeValue::Flag(_)) => Ok(()),
        (AttributeKind::OneOf { values }, AttributeValue::Text(t)) if values.contains(t) => Ok(()),
        (AttributeKind::OneOf { values }, _) => Err(format!("must be one of {}", values.join(", "))),
        (AttributeKind::Text, _) => Err("must be text".into()),
        (AttributeKind::Number { .. }, _) => Err("must be a number".into()),
        (AttributeKind::Boolean, _) => Err("must be true or false".into()),
    }
}

/// An option value (always text on a variant) read as a value of `kind`.
fn option_value(kind: &AttributeKind, s: &str) -> AttributeValue {
    match kind {
        AttributeKind::Number { .. } => s
            .parse::<serde_json::Number>()
            .map_or_else(|_| AttributeValue::Text(s.to_owned()), AttributeValue::Number),
        AttributeKind::Boolean => match s {
            "true" => AttributeValue::Flag(true),
            "false" => AttributeValue::Flag(false),
            _ => AttributeValue::Text(s.to_owned()),
        },
        _ => AttributeValue::Text(s.to_owned()),
    }
}

/// A broken attribute rule, naming the attribute.
fn broken(name: &str, rule: impl std::fmt::Display) -> DomainError {
    DomainError::Invalid {
        field: "attributes",
        reason: format!("{name}: {rule}"),
    }
}

/// Checks a product's attributes and its variants' options against its type.
pub fn check(ty: &ProductType, p: &Product) -> Result<(), DomainError> {
    let defs: BTreeMap<&str, &AttributeDef> = ty.attributes.iter().map(|a| (a.name.as_str(), a)).collect();
    for (name, v) in &p.attributes {
        match defs.get(name.as_str()) {
            None => return Err(broken(name, format!("type {} has no such attribute", ty.key))),
            Some(d) if d.variant => return Err(broken(name, "varies per variant: give it in the variants' options")),
            Some(d) => fits(&d.kind, v).map_err(|r| broken(name, r))?,
        }
    }
    for d in &ty.attributes {
        if d.required && !d.variant && !p.attributes.contains_key(&d.name) {
            return Err(broken(&d.name, "is required by the product type"));
        }
    }
    for variant in &p.variants {
        for (name, value) in &variant.options {
            match defs.get(name.as_str()) {
                Some(d) if d.variant => fits(&d.kind, &option_value(&d.kind, value))
                    .map_err(|r| broken(name, format!("variant {}: {r}", variant.sku)))?,
                _ => return Err(broken(name, format!("type {} has no such variant attribute", ty.key))),
            }
        }
        for d in ty.attributes.iter().filter(|d| d.variant && d.required) {
            if !variant.options.contains_key(&d.name) {
                return Err(broken(
                    &d.name,
                    format!("variant {} needs it (required by the product type)", variant.sku),
                ));
            }
        }
    }
    Ok(())
}

/// A new type from a definition.
pub fn create(key: &str, d: &TypeDefinition, at: DateTime<Utc>) -> Result<ProductType, DomainError> {
    let key = required_text("key", key, SHORT_TEXT_MAX_CHARS)?;
    if !key
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(invalid("key", "lower-case letters, digits and '-' only"));
    }
    let d = check_definition(d)?;
    Ok(ProductType {
        key,
        name: d.name,
        attributes: d.attributes,
        version: 1,
        created_at: at,
        updated_at: at,
    })
}

/// The type after replacing its definition; the caller checks the products of the type
/// against the result before saving it.
pub fn decide_change(current: &ProductType, d: &TypeDefinition, at: DateTime<Utc>) -> Result<ProductType, DomainError> {
    let d = check_definition(d)?;
    Ok(ProductType {
        name: d.name,
        attributes: d.attributes,
        version: current.version + 1,
        updated_at: at,
        ..current.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::product::{execute, CreateProduct, NewVariant, ProductCommand};
    use uuid::Uuid;

    fn shirt_type() -> ProductType {
        let d: TypeDefinition = serde_json::from_value(serde_json::json!({
            "name": "T-shirt",
            "attributes": [
                {"name": "material", "kind": "one_of", "values": ["cotton", "linen"], "required": true, "facet": true},
                {"name": "weight", "kind": "number", "unit": "g"},
                {"name": "organic", "kind": "boolean", "facet": true},
                {"name": "size", "kind": "one_of", "values": ["S", "M", "L"], "required": true, "variant": true}
            ]
        }))
        .expect("definition");
        create("t-shirt", &d, Utc::now()).expect("valid")
    }

    fn product(attrs: serde_json::Value, sizes: &[&str]) -> Product {
        let mut c = CreateProduct::simple("X", "Shirt", None, 0);
        c.sku = None;
        c.attributes = serde_json::from_value(attrs).expect("attributes");
        c.variants = sizes
            .iter()
            .map(|s| NewVariant {
                sku: format!("X-{s}"),
                options: [("size".to_string(), (*s).to_string())].into(),
                prices: vec![],
                stock: 0,
            })
            .collect();
        execute(None, Uuid::nil(), &ProductCommand::CreateProduct(c), Utc::now())
            .expect("created")
            .0
    }

    #[test]
    fn a_product_that_fits_its_type_passes() {
        let p = product(
            serde_json::json!({"material": "cotton", "weight": 180, "organic": true}),
            &["S", "M"],
        );
        assert_eq!(check(&shirt_type(), &p), Ok(()));
    }

    #[test]
    fn each_rule_is_refused_naming_the_attribute() {
        let ty = shirt_type();
        for (attrs, sizes, expected) in [
            (serde_json::json!({"weight": 180}), vec!["S"], "material: is required"),
            (
                serde_json::json!({"material": "silk"}),
                vec!["S"],
                "material: must be one of cotton, linen",
            ),
            (
                serde_json::json!({"material": "cotton", "weight": "heavy"}),
                vec!["S"],
                "weight: must be a number",
            ),
            (
                serde_json::json!({"material": "cotton", "organic": "yes"}),
                vec!["S"],
                "organic: must be true or false",
            ),
            (
                serde_json::json!({"material": "cotton", "colour": "red"}),
                vec!["S"],
                "colour: type t-shirt has no such attribute",
            ),
            (
                serde_json::json!({"material": "cotton", "size": "S"}),
                vec!["S"],
                "size: varies per variant",
            ),
            (
                serde_json::json!({"material": "cotton"}),
                vec!["XL"],
                "size: variant X-XL: must be one of S, M, L",
            ),
        ] {
            let err = check(&ty, &product(attrs, &sizes)).expect_err(expected).to_string();
            assert!(err.contains(expected), "{err} should say {expected}");
        }
    }

    #[test]
    fn definitions_are_checked_on_their_own() {
        let twice = TypeDefinition {
            name: "T".into(),
            attributes: vec![
                AttributeDef {
                    name: "a".into(),
                    kind: AttributeKind::Text,
                    required: false,
                    facet: false,
                    variant: false,
                },
                AttributeDef {
                    name: "a".into(),
                    kind: AttributeKind::Boolean,
                    required: false,
                    facet: false,
                    variant: false,
                },
            ],
        };
        assert!(check_definition(&twice).is_err());
        let empty = TypeDefinition {
            name: "T".into(),
            attributes: vec![AttributeDef {
                name: "a".into(),
                kind: AttributeKind::OneOf { values: vec![] },
                required: false,
                facet: false,
                variant: false,
            }],
        };
        assert!(check_definition(&empty).is_err());
        assert!(create(
            "Not A Key",
            &TypeDefinition {
                name: "T".into(),
                attributes: vec![]
            },
            Utc::now()
        )
        .is_err());
    }
}
