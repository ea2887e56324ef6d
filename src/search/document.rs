//! The search document of a product: the whole state, never a partial update, so facets
//! always match the product.
//!
//! Variants are folded into the product's document: every SKU, every option value (the
//! `options` object, and `option_values` as `name=value` keywords the option facets and
//! filters read), and per currency the lowest price of any variant (`prices.<CUR>`, what
//! search filters, sorts and buckets price facets by in that currency). `price_minor`,
//! `currency` and `stock` keep their single-SKU meaning for older clients: the first variant's
//! first price, and the stock of all variants.
//!
//! Attributes are kept as an object (`attributes`) and as `name=value` keywords
//! (`attribute_values`, values as [`AttributeValue::to_text`] renders them). `category_path`
//! holds the slugs of every category from the root down to the product's own, so a filter on
//! one slug finds everything under it. `suggest` feeds the completion suggester with the
//! title and the brand, under the product's status as context.

use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};

use crate::domain::product::{AttributeValue, Product};

/// Separates a name from its value in `option_values` and `attribute_values`. Names are split
/// off at its first occurrence, so a value may contain it (a name containing it cannot be
/// told apart; the domain's names are words like `size` and `material`).
pub const NAME_VALUE_SEPARATOR: char = '=';

/// `name=value`, the keyword of an option or attribute value.
pub fn name_value(name: &str, value: &str) -> String {
    format!("{name}{NAME_VALUE_SEPARATOR}{value}")
}

/// Splits a `name=value` keyword at its first separator; `None` without one.
pub fn split_name_value(keyword: &str) -> Option<(&str, &str)> {
    keyword.split_once(NAME_VALUE_SEPARATOR)
}

/// Lowest price per currency over the variants.
fn lowest_prices(p: &Product) -> Map<String, Value> {
    let mut lowest: BTreeMap<&str, i64> = BTreeMap::new();
    for m in p.variants.iter().flat_map(|v| v.prices.iter()) {
        let e = lowest.entry(m.currency.as_str()).or_insert(m.amount_minor);
        *e = (*e).min(m.amount_minor);
    }
    lowest.into_iter().map(|(c, a)| (c.to_owned(), json!(a))).collect()
}

/// Every value each option takes over the variants.
fn option_values(p: &Product) -> Map<String, Value> {
    let mut values: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in p.variants.iter().flat_map(|v| v.options.iter()) {
        let e = values.entry(k.as_str()).or_default();
        if !e.contains(&v.as_str()) {
            e.push(v.as_str());
        }
    }
    values.into_iter().map(|(k, v)| (k.to_owned(), json!(v))).collect()
}

/// Every option value over the variants as `name=value`, once each, sorted.
fn option_keywords(p: &Product) -> Vec<String> {
    let set: BTreeSet<String> = p
        .variants
        .iter()
        .flat_map(|v| v.options.iter())
        .map(|(k, v)| name_value(k, v))
        .collect();
    set.into_iter().collect()
}

/// Every attribute as `name=value`, in name order.
fn attribute_keywords(attributes: &BTreeMap<String, AttributeValue>) -> Vec<String> {
    attributes.iter().map(|(k, v)| name_value(k, &v.to_text())).collect()
}

/// The slugs from the root of the category tree down to the product's own category. A
/// product not placed in the tree has just its category (none when it has none).
fn category_slugs(p: &Product) -> Vec<&str> {
    let mut slugs: Vec<&str> = p.category_path.iter().map(|c| c.slug.as_str()).collect();
    if !p.category.is_empty() && slugs.last() != Some(&p.category.as_str()) {
        slugs.push(p.category.as_str());
    }
    slugs
}

/// The completion suggester's entry: title and brand (the non-empty ones), under the status.
fn suggest_entry(p: &Product) -> Value {
    let input: Vec<&str> = [p.title.as_str(), p.brand.as_str()]
        .into_iter()
        .filter(|s| !s.trim().is_empty())
        .collect();
    json!({ "input": input, "contexts": { "status": [p.status.as_str()] } })
}

/// The document indexed for `p`.
pub fn product_document(p: &Product) -> Value {
    let first_price = p.first_variant().and_then(|v| v.prices.first());
    let attributes: BTreeMap<&str, String> = p.attributes.iter().map(|(k, v)| (k.as_str(), v.to_text())).collect();
    let stock = p.total_stock();
    json!({
        "id": p.id,
        "owner": p.owner,
        "product_type": p.product_type,
        "sku": p.variants.iter().map(|v| v.sku.as_str()).collect::<Vec<_>>(),
        "title": p.title,
        "description": p.description,
        "category": p.category,
        "category_path": category_slugs(p),
        "brand": p.brand,
        "attributes": attributes,
        "attribute_values": attribute_keywords(&p.attributes),
        "options": option_values(p),
        "option_values": option_keywords(p),
        "price_minor": first_price.map(|m| m.amount_minor),
        "currency": first_price.map(|m| m.currency.clone()),
        "prices": lowest_prices(p),
        "variant_count": p.variants.len(),
        "stock": stock,
        "in_stock": stock > 0,
        "status": p.status.as_str(),
        "suggest": suggest_entry(p),
        "version": p.version,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::product::{CategoryNode, ProductStatus, Variant};
    use uuid::Uuid;

    fn variant(id: u32, options: &[(&str, &str)]) -> Variant {
        Variant {
            id,
            sku: format!("S-{id}"),
            options: options
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            prices: Vec::new(),
            stock: 1,
        }
    }

    fn product() -> Product {
        let at = chrono::DateTime::UNIX_EPOCH;
        Product {
            id: Uuid::nil(),
            owner: "default".into(),
            product_type: None,
            title: "Shirt".into(),
            description: String::new(),
            category: "t-shirts".into(),
            category_path: Vec::new(),
            brand: String::new(),
            attributes: [
                ("material".to_owned(), AttributeValue::from("cotton")),
                ("organic".to_owned(), AttributeValue::Flag(true)),
                ("weight".to_owned(), AttributeValue::Number(180.into())),
            ]
            .into(),
            variants: vec![
                variant(1, &[("size", "S"), ("colour", "red")]),
                variant(2, &[("size", "M"), ("colour", "red")]),
            ],
            next_variant_id: 3,
            status: ProductStatus::Draft,
            version: 1,
            created_at: at,
            updated_at: at,
        }
    }

    #[test]
    fn option_and_attribute_values_are_name_value_keywords_once_each() {
        let doc = product_document(&product());
        assert_eq!(doc["option_values"], json!(["colour=red", "size=M", "size=S"]));
        assert_eq!(
            doc["attribute_values"],
            json!(["material=cotton", "organic=true", "weight=180"])
        );
        assert_eq!(
            split_name_value("ratio=1=2"),
            Some(("ratio", "1=2")),
            "a value may hold the separator"
        );
    }

    #[test]
    fn the_category_path_runs_from_the_root_to_the_products_own_category() {
        let mut p = product();
        assert_eq!(
            product_document(&p)["category_path"],
            json!(["t-shirts"]),
            "not in the tree: itself"
        );
        let node = |slug: &str| CategoryNode {
            id: Uuid::nil(),
            slug: slug.into(),
            name: slug.into(),
        };
        p.category_path = vec![node("apparel"), node("tops")];
        assert_eq!(
            product_document(&p)["category_path"],
            json!(["apparel", "tops", "t-shirts"])
        );
        p.category_path.push(node("t-shirts"));
        assert_eq!(
            product_document(&p)["category_path"],
            json!(["apparel", "tops", "t-shirts"]),
            "once"
        );
        p.category = String::new();
        p.category_path.clear();
        assert_eq!(product_document(&p)["category_path"], json!([]));
    }

    #[test]
    fn suggestions_come_from_the_title_and_a_brand_under_the_status() {
        let mut p = product();
        assert_eq!(
            product_document(&p)["suggest"],
            json!({"input": ["Shirt"], "contexts": {"status": ["draft"]}}),
            "no empty brand"
        );
        p.brand = "Tee".into();
        p.status = ProductStatus::Published;
        assert_eq!(
            product_document(&p)["suggest"],
            json!({"input": ["Shirt", "Tee"], "contexts": {"status": ["published"]}})
        );
    }
}
