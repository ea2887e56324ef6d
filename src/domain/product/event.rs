//! Events of the product aggregate (schema version 2) and the versioned envelope they travel in.
//!
//! Every envelope carries the change *and* the full product state after it, so a projection
//! can be rebuilt from any single event and duplicates are harmless. Events written with an
//! older schema version are upcast to this one on read (`upcast`), never rewritten. See
//! docs/EVENTS.md.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

use super::aggregate::Product;
use super::value::{AttributeValue, CategoryNode, Money, ProductStatus, Variant};

/// Schema version of the envelope and of every event type below.
pub const SCHEMA_VERSION: u32 = 2;
/// `aggregate_type` of every product event.
pub const AGGREGATE_TYPE: &str = "product";

/// A product was created as a draft, with its first variants.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductCreated {
    /// The owning seller.
    pub owner: String,
    /// The product type whose attribute rules it follows, if any.
    #[serde(default)]
    pub product_type: Option<String>,
    /// Title.
    pub title: String,
    /// Description.
    pub description: String,
    /// Category slug.
    pub category: String,
    /// Brand.
    pub brand: String,
    /// Attributes.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// The variants it was created with (at least one).
    pub variants: Vec<Variant>,
}

/// Descriptive fields changed; only changed fields are present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductDetailsUpdated {
    /// New title.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// New description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New category slug.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// New brand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// New attribute map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, AttributeValue>>,
}

/// One variant's price in one currency was set (added or replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductPriceChanged {
    /// The variant.
    pub variant_id: u32,
    /// Its price in that currency before, if there was one.
    pub old_price: Option<Money>,
    /// The price after.
    pub new_price: Money,
}

/// One variant's stock changed by `delta` to `stock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductStockAdjusted {
    /// The variant.
    pub variant_id: u32,
    /// Signed change.
    pub delta: i64,
    /// Level after the change.
    pub stock: i64,
}

/// The product's status moved (publish, unpublish).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductStatusChanged {
    /// Status before.
    pub from: ProductStatus,
    /// Status after.
    pub to: ProductStatus,
}

/// The product was archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductArchived {
    /// Status before archiving.
    pub previous_status: ProductStatus,
}

/// A variant was added.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VariantAdded {
    /// The new variant, with the id it was given.
    pub variant: Variant,
}

/// A variant's SKU or option values changed; only changed fields are present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VariantUpdated {
    /// The variant.
    pub variant_id: u32,
    /// New SKU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// New option values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
}

/// A variant was removed (its id is never reused).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VariantRemoved {
    /// The variant.
    pub variant_id: u32,
    /// Its SKU, free for another variant from now on.
    pub sku: String,
}

/// A variant's whole price list was replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VariantPricesSet {
    /// The variant.
    pub variant_id: u32,
    /// Prices before.
    pub old_prices: Vec<Money>,
    /// Prices after (at most one per currency).
    pub prices: Vec<Money>,
}

/// The product's place in the category tree changed: a new category, or its category (or an
/// ancestor) was renamed or moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductCategorized {
    /// Category slug.
    pub category: String,
    /// The category's path, root first.
    pub category_path: Vec<CategoryNode>,
}

/// The product now belongs to another seller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductTransferred {
    /// The seller it belonged to.
    pub from: String,
    /// The seller it belongs to now.
    pub to: String,
}

/// Not a change: the product's state at its current version, sent again so the read side can
/// be repaired (`aliexpress reconcile --repair`). Same version as the last change, so the
/// projection's version guards keep it from overwriting anything newer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProductSnapshot {
    /// Why it was sent (for example `reconcile: opensearch missing`).
    pub reason: String,
}

/// The `event_type` of [`ProductSnapshot`].
pub const SNAPSHOT_EVENT_TYPE: &str = "ProductSnapshot";

/// The change an event records (past tense). Serialized as the change's fields alone: the
/// envelope's `event_type` names the variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductChange {
    /// See [`ProductCreated`].
    ProductCreated(ProductCreated),
    /// See [`ProductDetailsUpdated`].
    ProductDetailsUpdated(ProductDetailsUpdated),
    /// See [`ProductPriceChanged`].
    ProductPriceChanged(ProductPriceChanged),
    /// See [`ProductStockAdjusted`].
    ProductStockAdjusted(ProductStockAdjusted),
    /// `ProductPublished` or `ProductUnpublished`.
    ProductStatusChanged(ProductStatusChanged),
    /// See [`ProductArchived`].
    ProductArchived(ProductArchived),
    /// See [`VariantAdded`].
    VariantAdded(VariantAdded),
    /// See [`VariantUpdated`].
    VariantUpdated(VariantUpdated),
    /// See [`VariantRemoved`].
    VariantRemoved(VariantRemoved),
    /// See [`VariantPricesSet`].
    VariantPricesSet(VariantPricesSet),
    /// See [`ProductCategorized`].
    ProductCategorized(ProductCategorized),
    /// See [`ProductTransferred`].
    ProductTransferred(ProductTransferred),
}

/// Stable `event_type` strings of the current schema version; the projection rejects
/// anything else.
pub const EVENT_TYPES: &[&str] = &[
    "ProductCreated",
    "ProductDetailsUpdated",
    "ProductPriceChanged",
    "ProductStockAdjusted",
    "ProductPublished",
    "ProductUnpublished",
    "ProductArchived",
    "VariantAdded",
    "VariantUpdated",
    "VariantRemoved",
    "VariantPricesSet",
    "ProductCategorized",
    "ProductTransferred",
    SNAPSHOT_EVENT_TYPE,
];

impl ProductChange {
    /// The stable `event_type` of this change.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::ProductCreated(_) => "ProductCreated",
            Self::ProductDetailsUpdated(_) => "ProductDetailsUpdated",
            Self::ProductPriceChanged(_) => "ProductPriceChanged",
            Self::ProductStockAdjusted(_) => "ProductStockAdjusted",
            Self::ProductStatusChanged(ProductStatusChanged {
                to: ProductStatus::Published,
                ..
            }) => "ProductPublished",
            Self::ProductStatusChanged(_) => "ProductUnpublished",
            Self::ProductArchived(_) => "ProductArchived",
            Self::VariantAdded(_) => "VariantAdded",
            Self::VariantUpdated(_) => "VariantUpdated",
            Self::VariantRemoved(_) => "VariantRemoved",
            Self::VariantPricesSet(_) => "VariantPricesSet",
            Self::ProductCategorized(_) => "ProductCategorized",
            Self::ProductTransferred(_) => "ProductTransferred",
        }
    }

    /// The change's fields as the envelope's `data`.
    pub fn data(&self) -> serde_json::Value {
        let v = match self {
            Self::ProductCreated(c) => serde_json::to_value(c),
            Self::ProductDetailsUpdated(c) => serde_json::to_value(c),
            Self::ProductPriceChanged(c) => serde_json::to_value(c),
            Self::ProductStockAdjusted(c) => serde_json::to_value(c),
            Self::ProductStatusChanged(c) => serde_json::to_value(c),
            Self::ProductArchived(c) => serde_json::to_value(c),
            Self::VariantAdded(c) => serde_json::to_value(c),
            Self::VariantUpdated(c) => serde_json::to_value(c),
            Self::VariantRemoved(c) => serde_json::to_value(c),
            Self::VariantPricesSet(c) => serde_json::to_value(c),
            Self::ProductCategorized(c) => serde_json::to_value(c),
            Self::ProductTransferred(c) => serde_json::to_value(c),
        };
        // Serializing plain data (strings, integers, maps) cannot fail.
        v.unwrap_or(serde_json::Value::Null)
    }
}

/// Ids, time and caller stamped on an event by whoever executes the command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMeta {
    /// Unique id of the event (UUID v7, time ordered).
    pub event_id: Uuid,
    /// The command that caused it.
    pub causation_id: Option<Uuid>,
    /// Correlates everything one request or flow caused.
    pub correlation_id: Option<Uuid>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Who asked for it: a token's or key's name, a subject, or the channel (never a secret).
    pub actor: Option<String>,
}

/// The versioned envelope of a product event, as stored in the outbox and sent to Kafka.
/// Readers ignore fields they do not know (a later binary may add optional ones within a
/// version; see the compatibility rules in docs/EVENTS.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct EventEnvelope {
    /// Unique event id.
    pub event_id: Uuid,
    /// One of [`EVENT_TYPES`].
    pub event_type: String,
    /// Schema version ([`SCHEMA_VERSION`] once read).
    pub schema_version: u32,
    /// Always `product`.
    pub aggregate_type: String,
    /// The product id (also the Kafka key).
    pub aggregate_id: Uuid,
    /// Product version after this event; starts at 1, +1 per event.
    pub aggregate_version: i64,
    /// When the change happened.
    pub occurred_at: DateTime<Utc>,
    /// Command id that caused the event.
    pub causation_id: Option<Uuid>,
    /// Correlation id of the flow.
    pub correlation_id: Option<Uuid>,
    /// Who asked for the change (a name, never a secret); absent when unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The change itself; its shape is the event type's (see `/schemas/`).
    pub data: serde_json::Value,
    /// Full product state after the change.
    pub state: Product,
}

impl EventEnvelope {
    /// A snapshot of `state` at its current version (see [`ProductSnapshot`]).
    pub fn snapshot(state: &Product, meta: EventMeta, reason: &str) -> Self {
        Self::of(
            SNAPSHOT_EVENT_TYPE,
            serde_json::json!({ "reason": reason }),
            state,
            meta,
        )
    }

    /// Wraps a change and the state it produced.
    pub fn new(change: &ProductChange, state: &Product, meta: EventMeta) -> Self {
        Self::of(change.event_type(), change.data(), state, meta)
    }

    fn of(event_type: &str, data: serde_json::Value, state: &Product, meta: EventMeta) -> Self {
        Self {
            event_id: meta.event_id,
            event_type: event_type.to_owned(),
            schema_version: SCHEMA_VERSION,
            aggregate_type: AGGREGATE_TYPE.to_owned(),
            aggregate_id: state.id,
            aggregate_version: state.version,
            occurred_at: meta.occurred_at,
            causation_id: meta.causation_id,
            correlation_id: meta.correlation_id,
            actor: meta.actor,
            data,
            state: state.clone(),
        }
    }
}
