//! Reading events of any supported schema version as the current one.
//!
//! One place, a chain of small pure functions, one per step: version 1 is read with its
//! frozen types ([`super::v1`]) and turned into version 2 by [`v1_to_v2`]. Stored events are
//! never rewritten; every reader (the projection, `replay --rebuild`, `dlq redrive`, the
//! console) goes through [`upcast`]. Adding version 3 (docs/EVENTS.md has the worked example):
//! freeze today's types into `v2.rs`, write `v2_to_v3`, and add `3` below with `2` becoming
//! `v2_to_v3(parse(..))` and `1` becoming `v2_to_v3(v1_to_v2(parse(..)))`.

use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::aggregate::Product;
use super::command::DEFAULT_OWNER;
use super::event::{self, EventEnvelope, SCHEMA_VERSION};
use super::v1;
use super::value::{AttributeValue, Variant};

/// The schema versions this binary reads.
pub const SUPPORTED_VERSIONS: &[u32] = &[1, 2];

/// Why an event cannot be read as the current version.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpcastError {
    /// Written by a binary that knows a version this one does not.
    #[error("schema_version {0} is not supported (this binary reads 1 to {SCHEMA_VERSION})")]
    Unsupported(u64),
    /// The event does not match its version's schema.
    #[error("not a valid version {version} event: {message}")]
    Invalid {
        /// The version it claims.
        version: u64,
        /// What does not fit.
        message: String,
    },
}

/// Reads an event of any supported version as the current version.
pub fn upcast(v: Value) -> Result<EventEnvelope, UpcastError> {
    let version = v
        .get("schema_version")
        .and_then(Value::as_u64)
        .ok_or_else(|| UpcastError::Invalid {
            version: 0,
            message: "missing field `schema_version`".into(),
        })?;
    match version {
        1 => Ok(v1_to_v2(parse::<v1::EventEnvelope>(v, 1, v1::EVENT_TYPES)?)),
        2 => parse::<EventEnvelope>(v, 2, event::EVENT_TYPES),
        n => Err(UpcastError::Unsupported(n)),
    }
}

fn parse<T: DeserializeOwned>(v: Value, version: u64, types: &[&str]) -> Result<T, UpcastError> {
    let invalid = |message: String| UpcastError::Invalid { version, message };
    let event_type = v.get("event_type").and_then(Value::as_str).unwrap_or_default();
    if !types.contains(&event_type) {
        return Err(invalid(format!("unknown event_type {event_type:?}")));
    }
    serde_json::from_value(v).map_err(|e| invalid(e.to_string()))
}

/// Version 1 → 2: the single SKU, price and stock become variant 1; the owner is the default
/// seller; attributes stay text; `ProductPriceChanged` and `ProductStockAdjusted` name
/// variant 1.
pub fn v1_to_v2(e: v1::EventEnvelope) -> EventEnvelope {
    let data = v1_data_to_v2(&e.event_type, e.data);
    EventEnvelope {
        event_id: e.event_id,
        event_type: e.event_type,
        schema_version: 2,
        aggregate_type: e.aggregate_type,
        aggregate_id: e.aggregate_id,
        aggregate_version: e.aggregate_version,
        occurred_at: e.occurred_at,
        causation_id: e.causation_id,
        correlation_id: e.correlation_id,
        actor: None,
        data,
        state: v1_state_to_v2(e.state),
    }
}

/// The single variant a version-1 product had.
fn only_variant(sku: String, price: Option<super::Money>, stock: i64) -> Variant {
    Variant {
        id: 1,
        sku,
        options: BTreeMap::new(),
        prices: price.into_iter().collect(),
        stock,
    }
}

fn text_attributes(a: BTreeMap<String, String>) -> BTreeMap<String, AttributeValue> {
    a.into_iter().map(|(k, v)| (k, AttributeValue::Text(v))).collect()
}

/// A version-1 state as version 2.
pub fn v1_state_to_v2(p: v1::Product) -> Product {
    Product {
        id: p.id,
        owner: DEFAULT_OWNER.to_owned(),
        product_type: None,
        title: p.title,
        description: p.description,
        category: p.category,
        category_path: Vec::new(),
        brand: p.brand,
        attributes: text_attributes(p.attributes),
        variants: vec![only_variant(p.sku, p.price, p.stock)],
        next_variant_id: 2,
        status: p.status,
        version: p.version,
        created_at: p.created_at,
        updated_at: p.updated_at,
    }
}

/// A version-1 change as version 2 (data the version-1 type does not read stays as it was).
fn v1_data_to_v2(event_type: &str, data: Value) -> Value {
    match event_type {
        "ProductCreated" => match serde_json::from_value::<v1::ProductCreated>(data.clone()) {
            Ok(c) => json!(event::ProductCreated {
                owner: DEFAULT_OWNER.to_owned(),
                product_type: None,
                title: c.title,
                description: c.description,
                category: c.category,
                brand: c.brand,
                attributes: text_attributes(c.attributes),
                variants: vec![only_variant(c.sku, c.price, c.stock)],
            }),
            Err(_) => data,
        },
        "ProductPriceChanged" | "ProductStockAdjusted" => match data {
            Value::Object(mut m) => {
                m.insert("variant_id".into(), json!(1));
                Value::Object(m)
            }
            other => other,
        },
        _ => data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn v1_event(event_type: &str, data: Value, version: i64) -> Value {
        json!({
            "event_id": "0192f0a0-0000-7000-8000-000000000001",
            "event_type": event_type,
            "schema_version": 1,
            "aggregate_type": "product",
            "aggregate_id": "0192f0a0-0000-7000-8000-0000000000aa",
            "aggregate_version": version,
            "occurred_at": "2026-11-30T10:00:00Z",
            "causation_id": null,
            "correlation_id": "0192f0a0-0000-7000-8000-0000000000cc",
            "data": data,
            "state": {
                "id": "0192f0a0-0000-7000-8000-0000000000aa",
                "sku": "LAMP-1", "title": "Lamp", "description": "", "category": "lighting",
                "brand": "Lumo", "attributes": {"colour": "red"},
                "price": {"amount_minor": 1999, "currency": "EUR"}, "stock": 4,
                "status": "draft", "version": version,
                "created_at": "2026-11-30T10:00:00Z", "updated_at": "2026-11-30T10:00:00Z"
            }
        })
    }

    #[test]
    fn a_version_1_state_becomes_one_variant_owned_by_the_default_seller() {
        let e = upcast(v1_event("ProductStockAdjusted", json!({"delta": 1, "stock": 4}), 3)).expect("upcast");
        assert_eq!(e.schema_version, SCHEMA_VERSION);
        assert_eq!(e.state.owner, DEFAULT_OWNER);
        assert_eq!(e.state.variants.len(), 1);
        let v = &e.state.variants[0];
        assert_eq!((v.id, v.sku.as_str(), v.stock), (1, "LAMP-1", 4));
        assert_eq!(v.prices[0].amount_minor, 1999);
        assert_eq!(e.state.next_variant_id, 2);
        assert_eq!(e.state.attributes["colour"], AttributeValue::from("red"));
        assert_eq!(e.data, json!({"delta": 1, "stock": 4, "variant_id": 1}));
        assert_eq!(e.aggregate_version, 3);
    }

    #[test]
    fn a_version_1_creation_reads_as_a_version_2_creation() {
        let data = json!({"sku": "LAMP-1", "title": "Lamp", "description": "", "category": "lighting",
            "brand": "Lumo", "attributes": {}, "price": null, "stock": 0});
        let e = upcast(v1_event("ProductCreated", data, 1)).expect("upcast");
        let c: event::ProductCreated = serde_json::from_value(e.data).expect("v2 data");
        assert_eq!(c.variants[0].sku, "LAMP-1");
        assert!(c.variants[0].prices.is_empty());
        assert_eq!(c.owner, DEFAULT_OWNER);
    }

    #[test]
    fn versions_this_binary_does_not_know_are_refused_as_unsupported() {
        let mut e = v1_event("ProductArchived", json!({"previous_status": "draft"}), 2);
        e["schema_version"] = json!(SCHEMA_VERSION + 1);
        assert_eq!(upcast(e), Err(UpcastError::Unsupported(u64::from(SCHEMA_VERSION) + 1)));
    }

    #[test]
    fn a_version_1_event_of_a_type_version_1_never_had_is_invalid() {
        let e = v1_event("VariantAdded", json!({}), 2);
        assert!(matches!(upcast(e), Err(UpcastError::Invalid { version: 1, .. })));
    }

    #[test]
    fn a_current_event_reads_as_itself() {
        let v1 = upcast(v1_event("ProductArchived", json!({"previous_status": "draft"}), 2)).expect("upcast");
        let again = upcast(serde_json::to_value(&v1).expect("json")).expect("v2 reads");
        assert_eq!(again, v1);
    }
}
