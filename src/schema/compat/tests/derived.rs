//! Schemas derived by `schemars` from two versions of the same Rust types.

use super::{breaking_changes, lines};

mod v1 {
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    /// The first version of an event.
    #[derive(schemars::JsonSchema)]
    #[allow(dead_code)]
    pub struct ProductCreated {
        pub id: Uuid,
        pub title: String,
        pub price: Price,
        pub tags: Vec<String>,
        pub note: Option<String>,
        pub at: DateTime<Utc>,
    }

    /// A money amount.
    #[derive(schemars::JsonSchema)]
    #[allow(dead_code)]
    pub struct Price {
        pub cents: i64,
        pub currency: String,
    }
}

mod v2 {
    use chrono::{DateTime, Utc};
    use uuid::Uuid;

    /// The second version: `title` dropped, `Price::currency` an enum.
    #[derive(schemars::JsonSchema)]
    #[allow(dead_code)]
    pub struct ProductCreated {
        pub id: Uuid,
        pub price: Price,
        pub tags: Vec<String>,
        pub note: Option<String>,
        pub at: DateTime<Utc>,
    }

    /// A money amount.
    #[derive(schemars::JsonSchema)]
    #[allow(dead_code)]
    pub struct Price {
        pub cents: i64,
        pub currency: String,
    }
}

#[test]
fn a_field_dropped_from_a_derived_schema_is_reported() {
    let old = schemars::schema_for!(v1::ProductCreated).to_value();
    let new = schemars::schema_for!(v2::ProductCreated).to_value();
    assert_eq!(old["properties"]["price"]["$ref"], "#/$defs/Price", "{old:#}");
    assert!(breaking_changes(&old, &old).is_empty());
    assert_eq!(
        lines(&old, &new),
        ["/properties/title: property removed: consumers of the old schema may rely on it"]
    );
    assert_eq!(
        lines(&new, &old),
        ["/properties/title: new required property: messages of old producers lack it"]
    );
}
