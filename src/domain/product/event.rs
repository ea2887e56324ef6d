//! Events of the product aggregate and the versioned envelope they travel in.
//!
//! Every envelope carries the change *and* the full product state after it, so a projection
//! can be rebuilt from any single event and duplicates are harmless. See docs/EVENTS.md.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

use super::aggregate::Product;
use super::value::{Money, ProductStatus};

/// Schema version of the envelope and of every event type below.
pub const SCHEMA_VERSION: u32 = 1;
/// `aggregate_type` of every product event.
pub const AGGREGATE_TYPE: &str = "product";

/// The change an event records (past tense). Serialized without a tag: the envelope's
/// `event_type` names the variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ProductChange {
    /// A product was created as a draft.
    ProductCreated {
        /// Sku.
        sku: String,
        /// Title.
        title: String,
        /// Description.
        description: String,
        /// Category.
        category: String,
        /// Brand.
        brand: String,
        /// Attributes.
        attributes: BTreeMap<String, String>,
        /// Initial price, if any.
        price: Option<Money>,
        /// Initial stock.
        stock: i64,
    },
    /// Descriptive fields changed; only changed fields are present.
    ProductDetailsUpdated {
        /// New title.
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<String>,
        /// New description.
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<String>,
        /// New category.
        #[serde(skip_serializing_if = "Option::is_none")]
        category: Option<String>,
        /// New brand.
        #[serde(skip_serializing_if = "Option::is_none")]
        brand: Option<String>,
        /// New attribute map.
        #[serde(skip_serializing_if = "Option::is_none")]
        attributes: Option<BTreeMap<String, String>>,
    },
    /// Price changed.
    ProductPriceChanged {
        /// Price before, if there was one.
        old_price: Option<Money>,
        /// Price after.
        new_price: Money,
    },
    /// Stock changed by `delta` to `stock`.
    ProductStockAdjusted {
        /// Signed change.
        delta: i64,
        /// Level after the change.
        stock: i64,
    },
    /// Status moved (publish, unpublish).
    ProductStatusChanged {
        /// Status before.
        from: ProductStatus,
        /// Status after.
        to: ProductStatus,
    },
    /// The product was archived.
    ProductArchived {
        /// Status before archiving.
        previous_status: ProductStatus,
    },
}

/// Stable `event_type` strings; the projection rejects anything else.
pub const EVENT_TYPES: &[&str] = &[
    "ProductCreated",
    "ProductDetailsUpdated",
    "ProductPriceChanged",
    "ProductStockAdjusted",
    "ProductPublished",
    "ProductUnpublished",
    "ProductArchived",
];

impl ProductChange {
    /// The stable `event_type` of this change.
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::ProductCreated { .. } => "ProductCreated",
            Self::ProductDetailsUpdated { .. } => "ProductDetailsUpdated",
            Self::ProductPriceChanged { .. } => "ProductPriceChanged",
            Self::ProductStockAdjusted { .. } => "ProductStockAdjusted",
            Self::ProductStatusChanged {
                to: ProductStatus::Published,
                ..
            } => "ProductPublished",
            Self::ProductStatusChanged { .. } => "ProductUnpublished",
            Self::ProductArchived { .. } => "ProductArchived",
        }
    }
}

/// Ids and time stamped on an event by whoever executes the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventMeta {
    /// Unique id of the event (UUID v7, time ordered).
    pub event_id: Uuid,
    /// The command that caused it.
    pub causation_id: Option<Uuid>,
    /// Correlates everything one request or flow caused.
    pub correlation_id: Option<Uuid>,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
}

/// The versioned envelope of a product event, as stored in the outbox and sent to Kafka.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventEnvelope {
    /// Unique event id.
    pub event_id: Uuid,
    /// One of [`EVENT_TYPES`].
    pub event_type: String,
    /// Schema version ([`SCHEMA_VERSION`]).
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
    /// The change itself.
    pub data: serde_json::Value,
    /// Full product state after the change.
    pub state: Product,
}

impl EventEnvelope {
    /// Wraps a change and the state it produced.
    pub fn new(change: &ProductChange, state: &Product, meta: EventMeta) -> Self {
        Self {
            event_id: meta.event_id,
            event_type: change.event_type().to_owned(),
            schema_version: SCHEMA_VERSION,
            aggregate_type: AGGREGATE_TYPE.to_owned(),
            aggregate_id: state.id,
            aggregate_version: state.version,
            occurred_at: meta.occurred_at,
            causation_id: meta.causation_id,
            correlation_id: meta.correlation_id,
            // Serializing plain data (strings, integers, maps) cannot fail.
            data: serde_json::to_value(change).unwrap_or(serde_json::Value::Null),
            state: state.clone(),
        }
    }
}
