//! The `products` row and the product it holds: the v2 columns, and the legacy single-SKU
//! columns written from the first variant for version-1 readers (and read back for a row not
//! backfilled yet).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use uuid::Uuid;

use super::schema::products;
use super::StoreError;
use crate::domain::product::{Money, Product, ProductStatus, Variant};

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = products, check_for_backend(diesel::pg::Pg), treat_none_as_null = true)]
pub(super) struct ProductRow {
    id: Uuid,
    sku: String,
    title: String,
    description: String,
    category: String,
    brand: String,
    attributes: serde_json::Value,
    price_minor: Option<i64>,
    currency: Option<String>,
    stock: i64,
    status: String,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    owner: String,
    product_type: Option<String>,
    category_path: serde_json::Value,
    variants: Option<serde_json::Value>,
    next_variant_id: Option<i32>,
}

impl ProductRow {
    /// The row of `p`. The legacy single-SKU columns hold the first variant (its first price),
    /// for version-1 readers until the contract migration drops them.
    pub(super) fn from_product(p: &Product) -> Self {
        let first = p.first_variant();
        let price = first.and_then(|v| <[Money]>::first(&v.prices));
        Self {
            id: p.id,
            sku: first.map(|v| v.sku.clone()).unwrap_or_default(),
            title: p.title.clone(),
            description: p.description.clone(),
            category: p.category.clone(),
            brand: p.brand.clone(),
            attributes: serde_json::to_value(&p.attributes).unwrap_or_default(),
            price_minor: price.map(|m| m.amount_minor),
            currency: price.map(|m| m.currency.clone()),
            stock: first.map_or(0, |v| v.stock),
            status: p.status.as_str().to_owned(),
            version: p.version,
            created_at: p.created_at,
            updated_at: p.updated_at,
            owner: p.owner.clone(),
            product_type: p.product_type.clone(),
            category_path: serde_json::to_value(&p.category_path).unwrap_or_default(),
            variants: Some(serde_json::to_value(&p.variants).unwrap_or_default()),
            next_variant_id: Some(i32::try_from(p.next_variant_id).unwrap_or(i32::MAX)),
        }
    }

    pub(super) fn into_product(self) -> Result<Product, StoreError> {
        let corrupt =
            |what: &str, e: serde_json::Error| StoreError::Corrupt(format!("product {} {what}: {e}", self.id));
        let status = ProductStatus::parse(&self.status)
            .ok_or_else(|| StoreError::Corrupt(format!("product {} has status {:?}", self.id, self.status)))?;
        let attributes = serde_json::from_value(self.attributes.clone()).map_err(|e| corrupt("attributes", e))?;
        let category_path =
            serde_json::from_value(self.category_path.clone()).map_err(|e| corrupt("category_path", e))?;
        // Not backfilled yet (a row from before catalog v2): its single variant is the legacy columns.
        let variants: Vec<Variant> = match &self.variants {
            Some(v) => serde_json::from_value(v.clone()).map_err(|e| corrupt("variants", e))?,
            None => vec![Variant {
                id: 1,
                sku: self.sku.clone(),
                options: Default::default(),
                prices: match (self.price_minor, self.currency.clone()) {
                    (Some(amount_minor), Some(currency)) => vec![Money { amount_minor, currency }],
                    _ => Vec::new(),
                },
                stock: self.stock,
            }],
        };
        let next_variant_id = self
            .next_variant_id
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or_else(|| variants.iter().map(|v| v.id).max().unwrap_or(0) + 1);
        Ok(Product {
            id: self.id,
            owner: self.owner,
            product_type: self.product_type,
            title: self.title,
            description: self.description,
            category: self.category,
            category_path,
            brand: self.brand,
            attributes,
            variants,
            next_variant_id,
            status,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}
