//! Schema version 1 of the product events, frozen: the types events were written with
//! before variants, owners and typed attributes. Nothing writes them any more; [`super::upcast`]
//! reads them, and `/schemas/events/v1/` describes them. Never change a type here: a stored
//! version-1 event must keep reading exactly as it was written.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

use super::value::{Money, ProductStatus};

/// The schema version this module describes.
pub const VERSION: u32 = 1;

/// Event types of version 1.
pub const EVENT_TYPES: &[&str] = &[
    "ProductCreated",
    "ProductDetailsUpdated",
    "ProductPriceChanged",
    "ProductStockAdjusted",
    "ProductPublished",
    "ProductUnpublished",
    "ProductArchived",
];

/// Product state of version 1: one SKU, one price, one stock level, text attributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Product {
    /// Product id.
    pub id: Uuid,
    /// Unique stock keeping unit.
    pub sku: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Category.
    pub category: String,
    /// Brand.
    pub brand: String,
    /// Text attributes.
    pub attributes: BTreeMap<String, String>,
    /// Price, once set.
    pub price: Option<Money>,
    /// Units in stock.
    pub stock: i64,
    /// Lifecycle status.
    pub status: ProductStatus,
    /// Aggregate version.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
}

/// Envelope of version 1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventEnvelope {
    /// Unique event id.
    pub event_id: Uuid,
    /// One of [`EVENT_TYPES`].
    pub event_type: String,
    /// Always 1.
    pub schema_version: u32,
    /// Always `product`.
    pub aggregate_type: String,
    /// The product id.
    pub aggregate_id: Uuid,
    /// Product version after this event.
    pub aggregate_version: i64,
    /// When the change happened.
    pub occurred_at: DateTime<Utc>,
    /// Command id that caused the event.
    pub causation_id: Option<Uuid>,
    /// Correlation id of the flow.
    pub correlation_id: Option<Uuid>,
    /// The change (see the event type's data).
    pub data: serde_json::Value,
    /// Full product state after the change.
    pub state: Product,
}

/// `ProductCreated` data of version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductCreated {
    /// Sku.
    pub sku: String,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Category.
    pub category: String,
    /// Brand.
    pub brand: String,
    /// Attributes.
    pub attributes: BTreeMap<String, String>,
    /// Initial price.
    pub price: Option<Money>,
    /// Initial stock.
    pub stock: i64,
}

/// `ProductDetailsUpdated` data of version 1: only changed fields are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductDetailsUpdated {
    /// New title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New category.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// New brand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// New attribute map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, String>>,
}

/// `ProductPriceChanged` data of version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductPriceChanged {
    /// Price before.
    pub old_price: Option<Money>,
    /// Price after.
    pub new_price: Money,
}

/// `ProductStockAdjusted` data of version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductStockAdjusted {
    /// Signed change.
    pub delta: i64,
    /// Level after.
    pub stock: i64,
}

/// `ProductPublished` / `ProductUnpublished` data of version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductStatusChanged {
    /// Status before.
    pub from: ProductStatus,
    /// Status after.
    pub to: ProductStatus,
}

/// `ProductArchived` data of version 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductArchived {
    /// Status before.
    pub previous_status: ProductStatus,
}
