//! The search document of a product: the whole state, never a partial update, so facets
//! always match the product.

use serde_json::{json, Value};

use crate::domain::product::Product;

/// The document indexed for `p`.
pub fn product_document(p: &Product) -> Value {
    json!({
        "id": p.id,
        "sku": p.sku,
        "title": p.title,
        "description": p.description,
        "category": p.category,
        "brand": p.brand,
        "attributes": p.attributes,
        "price_minor": p.price.as_ref().map(|m| m.amount_minor),
        "currency": p.price.as_ref().map(|m| m.currency.clone()),
        "stock": p.stock,
        "in_stock": p.stock > 0,
        "status": p.status.as_str(),
        "version": p.version,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
    })
}
