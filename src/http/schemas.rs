//! OpenAPI schemas of the domain types the API reads and writes. The domain knows nothing of
//! OpenAPI: each type here describes the JSON that serde gives the domain type it is named
//! after (`as = ...`), and is never built. A test keeps each one's properties equal to what
//! the domain type (de)serializes; the contract test checks every response against them.

#![expect(dead_code, reason = "schema descriptions only; the domain types carry the data")]

use chrono::{DateTime, Utc};
use std::collections::BTreeMap;
use uuid::Uuid;

/// A price in integer minor units (cents) of an ISO 4217 currency.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = Money)]
pub struct MoneySchema {
    /// Amount in minor units; always > 0 for a price.
    amount_minor: i64,
    /// ISO 4217 code, upper case.
    currency: String,
}

/// Lifecycle of a product. Only `published` products are visible in default search.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = ProductStatus)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatusSchema {
    /// Being prepared; not visible to shoppers.
    Draft,
    /// Live in the catalog.
    Published,
    /// Retired; accepts no further change.
    Archived,
}

/// Current state of a product. `version` starts at 1 and grows by one per event.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = Product)]
#[serde(deny_unknown_fields)]
pub struct ProductSchema {
    /// Product id.
    id: Uuid,
    /// Unique stock keeping unit.
    sku: String,
    /// Title, 1..=200 characters.
    title: String,
    /// Description.
    description: String,
    /// Category facet.
    category: String,
    /// Brand facet.
    brand: String,
    /// String attributes.
    attributes: BTreeMap<String, String>,
    /// Price, once set.
    price: Option<MoneySchema>,
    /// Units in stock, never negative.
    stock: i64,
    /// Lifecycle status.
    status: ProductStatusSchema,
    /// Aggregate version.
    version: i64,
    /// Creation time.
    created_at: DateTime<Utc>,
    /// Time of the last change.
    updated_at: DateTime<Utc>,
}

/// Fields of a new product. Price and stock may come later; publishing needs a price.
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = CreateProduct)]
#[serde(deny_unknown_fields)]
pub struct CreateProductSchema {
    /// Stock keeping unit, unique in the catalog.
    sku: String,
    /// 1..=200 characters.
    title: String,
    /// Free text, up to 10 000 characters.
    #[serde(default)]
    description: String,
    /// Category facet.
    #[serde(default)]
    category: String,
    /// Brand facet.
    #[serde(default)]
    brand: String,
    /// String attributes (colour, size, ...).
    #[serde(default)]
    attributes: BTreeMap<String, String>,
    /// Optional initial price.
    #[serde(default)]
    price: Option<MoneySchema>,
    /// Initial stock, >= 0.
    #[serde(default)]
    stock: i64,
}

/// A partial change of descriptive fields; absent fields stay as they are. A field given as
/// `null` is refused (it would read as "clear" to some clients and "unchanged" to others).
#[derive(serde::Deserialize, utoipa::ToSchema)]
#[schema(as = UpdateProductDetails)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductDetailsSchema {
    /// New title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    title: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// New category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    category: Option<String>,
    /// New brand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    brand: Option<String>,
    /// Replaces the whole attribute map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    attributes: Option<BTreeMap<String, String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::product::{CreateProduct, Money, Product, ProductStatus, UpdateProductDetails};
    use serde_json::{json, Value};
    use utoipa::openapi::{RefOr, Schema};
    use utoipa::PartialSchema;

    /// Property names of an object schema.
    fn properties(schema: RefOr<Schema>) -> Vec<String> {
        let v = serde_json::to_value(schema).expect("schema json");
        let mut names: Vec<String> = v["properties"]
            .as_object()
            .expect("object schema")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn keys(v: &Value) -> Vec<String> {
        let mut k: Vec<String> = v.as_object().expect("object").keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn each_schema_has_the_fields_its_domain_type_serializes() {
        let money = Money {
            amount_minor: 100,
            currency: "USD".into(),
        };
        let product = Product {
            id: Uuid::nil(),
            sku: "S".into(),
            title: "T".into(),
            description: String::new(),
            category: String::new(),
            brand: String::new(),
            attributes: BTreeMap::new(),
            price: Some(money.clone()),
            stock: 0,
            status: ProductStatus::Draft,
            version: 1,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        };
        let create = CreateProduct {
            sku: "S".into(),
            title: "T".into(),
            description: String::new(),
            category: String::new(),
            brand: String::new(),
            attributes: BTreeMap::new(),
            price: None,
            stock: 0,
        };
        let details = UpdateProductDetails {
            title: Some("T".into()),
            description: Some(String::new()),
            category: Some(String::new()),
            brand: Some(String::new()),
            attributes: Some(BTreeMap::new()),
        };
        assert_eq!(
            properties(MoneySchema::schema()),
            keys(&(serde_json::to_value(&money).expect("json")))
        );
        assert_eq!(
            properties(ProductSchema::schema()),
            keys(&(serde_json::to_value(&product).expect("json")))
        );
        assert_eq!(
            properties(CreateProductSchema::schema()),
            keys(&(serde_json::to_value(&create).expect("json")))
        );
        assert_eq!(
            properties(UpdateProductDetailsSchema::schema()),
            keys(&(serde_json::to_value(&details).expect("json")))
        );
        let statuses = serde_json::to_value(ProductStatusSchema::schema()).expect("json");
        assert_eq!(
            statuses["enum"],
            json!([ProductStatus::Draft, ProductStatus::Published, ProductStatus::Archived])
        );
    }
}
