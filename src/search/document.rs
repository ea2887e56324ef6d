//! The search document of a product: the whole state, never a partial update, so facets
//! always match the product.
//!
//! Variants are folded into the product's document: every SKU, every option value (the
//! `options` facet), and per currency the lowest price of any variant (`prices.<CUR>`, what
//! search filters and sorts by in that currency). `price_minor`, `currency` and `stock` keep
//! their single-SKU meaning for older clients: the first variant's first price, and the stock
//! of all variants.

use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

use crate::domain::product::Product;

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
        "category_path": p.category_path.iter().map(|c| c.slug.as_str()).collect::<Vec<_>>(),
        "brand": p.brand,
        "attributes": attributes,
        "options": option_values(p),
        "price_minor": first_price.map(|m| m.amount_minor),
        "currency": first_price.map(|m| m.currency.clone()),
        "prices": lowest_prices(p),
        "variant_count": p.variants.len(),
        "stock": stock,
        "in_stock": stock > 0,
        "status": p.status.as_str(),
        "version": p.version,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    })
}
