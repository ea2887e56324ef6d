//! The JSON bodies of the product endpoints: what a request is read into and what an answer
//! is written from, each carrying its own OpenAPI schema (with the domain's limits, from
//! `contract::fields`). Requests become domain commands by `From`; the answer's shape is the
//! product's JSON as the read model stores it (a test keeps the two equal, since a cache hit
//! is served as the stored bytes).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use uuid::Uuid;

use super::contract::fields;
use crate::domain::product::{
    AttributeValue, CreateProduct, Money, NewVariant, Product, ProductStatus, UpdateProductDetails, UpdateVariant,
    Variant,
};

/// A price in integer minor units (cents) of an ISO 4217 currency.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Money)]
#[serde(deny_unknown_fields)]
pub struct MoneyBody {
    /// Amount in minor units; always > 0 for a price.
    #[schema(schema_with = fields::amount_minor)]
    pub amount_minor: i64,
    /// ISO 4217 code, upper case.
    #[schema(schema_with = fields::currency)]
    pub currency: String,
}

impl From<MoneyBody> for Money {
    fn from(m: MoneyBody) -> Self {
        Self {
            amount_minor: m.amount_minor,
            currency: m.currency,
        }
    }
}

impl From<&Money> for MoneyBody {
    fn from(m: &Money) -> Self {
        Self {
            amount_minor: m.amount_minor,
            currency: m.currency.clone(),
        }
    }
}

/// Lifecycle of a product. Only `published` products are visible in default search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = ProductStatus)]
#[serde(rename_all = "snake_case")]
pub enum StatusBody {
    /// Being prepared; not visible to shoppers.
    Draft,
    /// Live in the catalog.
    Published,
    /// Retired; accepts no further change.
    Archived,
}

impl From<ProductStatus> for StatusBody {
    fn from(s: ProductStatus) -> Self {
        match s {
            ProductStatus::Draft => Self::Draft,
            ProductStatus::Published => Self::Published,
            ProductStatus::Archived => Self::Archived,
        }
    }
}

impl From<StatusBody> for ProductStatus {
    fn from(s: StatusBody) -> Self {
        match s {
            StatusBody::Draft => Self::Draft,
            StatusBody::Published => Self::Published,
            StatusBody::Archived => Self::Archived,
        }
    }
}

/// One sellable variant of a product.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[schema(as = Variant)]
pub struct VariantBody {
    /// Id within the product: 1 for the first variant, never reused after a removal.
    #[schema(minimum = 1)]
    pub id: u32,
    /// Stock keeping unit, unique in the catalog.
    #[schema(schema_with = fields::sku)]
    pub sku: String,
    /// Option values that tell this variant from its siblings (e.g. size, colour).
    #[schema(schema_with = fields::options)]
    pub options: BTreeMap<String, String>,
    /// At most one price per currency, ordered by currency code.
    pub prices: Vec<MoneyBody>,
    /// Units in stock, never negative.
    #[schema(schema_with = fields::quantity)]
    pub stock: i64,
}

impl From<&Variant> for VariantBody {
    fn from(v: &Variant) -> Self {
        Self {
            id: v.id,
            sku: v.sku.clone(),
            options: v.options.clone(),
            prices: v.prices.iter().map(MoneyBody::from).collect(),
            stock: v.stock,
        }
    }
}

/// One category on the way from the root of the category tree to a product's category.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = CategoryNode)]
pub struct CategoryNodeBody {
    /// Category id.
    pub id: Uuid,
    /// URL-safe name.
    pub slug: String,
    /// Display name.
    pub name: String,
}

/// Current state of a product. `version` starts at 1 and grows by one per event.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Product)]
pub struct ProductBody {
    /// Product id.
    pub id: Uuid,
    /// The owning seller (`default` for products of callers acting for no seller).
    pub owner: String,
    /// The product type whose attribute rules it follows, if any.
    pub product_type: Option<String>,
    /// Title, 1..=200 characters.
    pub title: String,
    /// Description.
    pub description: String,
    /// Category slug.
    pub category: String,
    /// The category's place in the category tree, root first (empty: not placed).
    pub category_path: Vec<CategoryNodeBody>,
    /// Brand facet.
    pub brand: String,
    /// Attributes: text, number or flag values.
    #[schema(schema_with = fields::attributes)]
    pub attributes: BTreeMap<String, AttributeValue>,
    /// Sellable variants in id order; the first is the one commands naming no variant act on.
    pub variants: Vec<VariantBody>,
    /// Id the next added variant gets.
    pub next_variant_id: u32,
    /// Lifecycle status.
    pub status: StatusBody,
    /// Aggregate version.
    pub version: i64,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Time of the last change.
    pub updated_at: DateTime<Utc>,
}

impl From<&Product> for ProductBody {
    fn from(p: &Product) -> Self {
        Self {
            id: p.id,
            owner: p.owner.clone(),
            product_type: p.product_type.clone(),
            title: p.title.clone(),
            description: p.description.clone(),
            category: p.category.clone(),
            category_path: p
                .category_path
                .iter()
                .map(|c| CategoryNodeBody {
                    id: c.id,
                    slug: c.slug.clone(),
                    name: c.name.clone(),
                })
                .collect(),
            brand: p.brand.clone(),
            attributes: p.attributes.clone(),
            variants: p.variants.iter().map(VariantBody::from).collect(),
            next_variant_id: p.next_variant_id,
            status: p.status.into(),
            version: p.version,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A variant to add: its SKU, option values, prices and stock.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = NewVariant)]
#[serde(deny_unknown_fields)]
pub struct NewVariantBody {
    /// Stock keeping unit, unique in the catalog.
    #[schema(schema_with = fields::sku)]
    pub sku: String,
    /// Option values (e.g. `{"size": "M"}`): the same names as the product's other variants,
    /// not the same values.
    #[serde(default)]
    #[schema(schema_with = fields::options)]
    pub options: BTreeMap<String, String>,
    /// At most one price per currency.
    #[serde(default)]
    pub prices: Vec<MoneyBody>,
    /// Initial stock, >= 0.
    #[serde(default)]
    #[schema(schema_with = fields::quantity)]
    pub stock: i64,
}

impl From<NewVariantBody> for NewVariant {
    fn from(b: NewVariantBody) -> Self {
        Self {
            sku: b.sku,
            options: b.options,
            prices: b.prices.into_iter().map(Money::from).collect(),
            stock: b.stock,
        }
    }
}

/// Fields of a new product: either `variants`, or the single-variant shorthand `sku`, `price`
/// and `stock`. Price and stock may come later; publishing needs a price on every variant.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = CreateProduct)]
#[serde(deny_unknown_fields)]
pub struct CreateProductBody {
    /// Stock keeping unit of the single variant (not with `variants`).
    #[serde(default)]
    #[schema(schema_with = fields::sku)]
    pub sku: Option<String>,
    /// 1..=200 characters.
    #[schema(schema_with = fields::title)]
    pub title: String,
    /// Free text, up to 10 000 characters.
    #[serde(default)]
    #[schema(schema_with = fields::description)]
    pub description: String,
    /// Category slug.
    #[serde(default)]
    #[schema(schema_with = fields::short_text)]
    pub category: String,
    /// Brand facet.
    #[serde(default)]
    #[schema(schema_with = fields::short_text)]
    pub brand: String,
    /// The product type whose attribute rules apply.
    #[serde(default)]
    #[schema(schema_with = fields::sku)]
    pub product_type: Option<String>,
    /// Attributes: text, number or flag values.
    #[serde(default)]
    #[schema(schema_with = fields::attributes)]
    pub attributes: BTreeMap<String, AttributeValue>,
    /// Price of the single variant (not with `variants`).
    #[serde(default)]
    pub price: Option<MoneyBody>,
    /// Stock of the single variant (not with `variants`), >= 0.
    #[serde(default)]
    #[schema(schema_with = fields::quantity)]
    pub stock: i64,
    /// The product's variants, 1 to 100 (instead of `sku`, `price` and `stock`).
    #[serde(default)]
    #[schema(max_items = 100)]
    pub variants: Vec<NewVariantBody>,
}

impl CreateProductBody {
    /// The command, owned by `owner`.
    pub fn into_command(self, owner: &str) -> CreateProduct {
        CreateProduct {
            owner: owner.to_owned(),
            sku: self.sku,
            title: self.title,
            description: self.description,
            category: self.category,
            brand: self.brand,
            product_type: self.product_type,
            attributes: self.attributes,
            price: self.price.map(Money::from),
            stock: self.stock,
            variants: self.variants.into_iter().map(NewVariant::from).collect(),
        }
    }
}

/// A field that is present must hold a value: `null` is an error, absence is `None`.
pub(super) fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// A partial change of descriptive fields; absent fields stay as they are. A field given as
/// `null` is refused (it would read as "clear" to some clients and "unchanged" to others).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = UpdateProductDetails, min_properties = 1)]
#[serde(deny_unknown_fields)]
pub struct UpdateDetailsBody {
    /// New title.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::title)]
    pub title: Option<String>,
    /// New description.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::description)]
    pub description: Option<String>,
    /// New category.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::short_text)]
    pub category: Option<String>,
    /// New brand.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::short_text)]
    pub brand: Option<String>,
    /// Replaces the whole attribute map.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::attributes)]
    pub attributes: Option<BTreeMap<String, AttributeValue>>,
}

impl From<UpdateDetailsBody> for UpdateProductDetails {
    fn from(b: UpdateDetailsBody) -> Self {
        Self {
            title: b.title,
            description: b.description,
            category: b.category,
            brand: b.brand,
            attributes: b.attributes,
        }
    }
}

/// `POST /api/products/{id}/stock` body: exactly one of `{"delta": n}` (n != 0) or
/// `{"set": n}` (n >= 0); anything else, `null` values included, is a 422.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(untagged, expecting = "exactly one of {\"delta\": n} or {\"set\": n}")]
pub enum StockBody {
    /// Relative change.
    Delta(StockDelta),
    /// Absolute level.
    Set(StockSet),
}

/// `{"delta": n}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockDelta {
    /// Relative change, not 0.
    #[schema(schema_with = fields::stock_delta)]
    pub delta: i64,
}

/// `{"set": n}`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StockSet {
    /// Absolute level, >= 0.
    #[schema(schema_with = fields::quantity)]
    pub set: i64,
}

/// `PATCH /api/products/{id}/variants/{variant_id}` body: a new SKU or new option values.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = UpdateVariant, min_properties = 1)]
#[serde(deny_unknown_fields)]
pub struct UpdateVariantBody {
    /// New SKU.
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::sku)]
    pub sku: Option<String>,
    /// New option values (the whole map).
    #[serde(default, deserialize_with = "present")]
    #[schema(schema_with = fields::options)]
    pub options: Option<BTreeMap<String, String>>,
}

impl From<UpdateVariantBody> for UpdateVariant {
    fn from(b: UpdateVariantBody) -> Self {
        Self {
            sku: b.sku,
            options: b.options,
        }
    }
}

/// `PUT /api/products/{id}/variants/{variant_id}/prices` body: the variant's whole price list.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[schema(as = VariantPrices)]
#[serde(deny_unknown_fields)]
pub struct PricesBody {
    /// At most one price per currency; an empty list clears the prices of a draft's variant.
    #[schema(max_items = 40)]
    pub prices: Vec<MoneyBody>,
}

/// A page of products.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ProductPage {
    /// Products in id order.
    pub items: Vec<ProductBody>,
    /// Cursor of the next page, absent on the last page.
    pub next_cursor: Option<Uuid>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn product(price: Option<Money>) -> Product {
        let now = Utc::now();
        Product {
            id: Uuid::now_v7(),
            owner: "default".into(),
            product_type: Some("lamps".into()),
            title: "Lamp".into(),
            description: "d".into(),
            category: "c".into(),
            category_path: vec![crate::domain::product::CategoryNode {
                id: Uuid::now_v7(),
                slug: "c".into(),
                name: "C".into(),
            }],
            brand: "b".into(),
            attributes: BTreeMap::from([
                ("colour".into(), AttributeValue::from("red")),
                ("watts".into(), AttributeValue::Number(40.into())),
                ("dimmable".into(), AttributeValue::Flag(true)),
            ]),
            variants: vec![Variant {
                id: 1,
                sku: "SKU-1".into(),
                options: BTreeMap::from([("size".into(), "M".into())]),
                prices: price.into_iter().collect(),
                stock: 3,
            }],
            next_variant_id: 2,
            status: ProductStatus::Draft,
            version: 2,
            created_at: now,
            updated_at: now,
        }
    }

    /// A cache hit is served as the bytes the projection stored (the domain type's JSON): the
    /// documented answer must be that same JSON.
    #[test]
    fn the_product_answer_is_the_json_the_read_model_stores() {
        for price in [
            None,
            Some(Money {
                amount_minor: 100,
                currency: "EUR".into(),
            }),
        ] {
            let p = product(price);
            let ours = serde_json::to_value(ProductBody::from(&p)).expect("json");
            let stored = serde_json::to_value(&p).expect("json");
            assert_eq!(ours, stored);
        }
    }

    /// Every status of the domain has its documented name.
    #[test]
    fn statuses_are_named_as_the_domain_names_them() {
        for s in [ProductStatus::Draft, ProductStatus::Published, ProductStatus::Archived] {
            assert_eq!(
                serde_json::to_value(StatusBody::from(s)).expect("json"),
                json!(s.as_str())
            );
            assert_eq!(ProductStatus::from(StatusBody::from(s)), s);
        }
    }

    /// The request bodies read what the domain's commands read, and refuse what they refuse.
    #[test]
    fn request_bodies_read_like_the_domain_commands() {
        let create = json!({"sku": "S", "title": "T", "price": {"amount_minor": 5, "currency": "USD"}});
        let ours: CreateProduct = serde_json::from_value::<CreateProductBody>(create.clone())
            .expect("body")
            .into_command(crate::domain::product::DEFAULT_OWNER);
        assert_eq!(ours, serde_json::from_value::<CreateProduct>(create).expect("domain"));
        let update = json!({"title": "New"});
        let ours: UpdateProductDetails = serde_json::from_value::<UpdateDetailsBody>(update.clone())
            .expect("body")
            .into();
        assert_eq!(
            ours,
            serde_json::from_value::<UpdateProductDetails>(update).expect("domain")
        );
        for refused in [json!({"title": null}), json!({"colour": "red"})] {
            assert!(
                serde_json::from_value::<UpdateDetailsBody>(refused.clone()).is_err(),
                "{refused}"
            );
            assert!(serde_json::from_value::<UpdateProductDetails>(refused).is_err());
        }
        assert!(serde_json::from_value::<CreateProductBody>(json!({"sku": "S", "title": "T", "x": 1})).is_err());
    }
}
