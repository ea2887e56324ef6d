//! Commands the product aggregate accepts. Imperative names; each maps to one event.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::value::{AttributeValue, Money};

/// The default owner: products of callers that act for no particular seller, and every
/// product created before sellers existed.
pub const DEFAULT_OWNER: &str = "default";

fn default_owner() -> String {
    DEFAULT_OWNER.to_owned()
}

/// A variant as a command gives it (its id is assigned by the product).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NewVariant {
    /// Stock keeping unit, unique in the catalog.
    pub sku: String,
    /// Option values (e.g. `{"size": "M", "colour": "red"}`).
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// At most one price per currency.
    #[serde(default)]
    pub prices: Vec<Money>,
    /// Initial stock, >= 0.
    #[serde(default)]
    pub stock: i64,
}

/// Fields of a new product. Either `variants`, or the single-variant shorthand `sku`, `price`
/// and `stock` (how every product was created before variants existed). Price and stock may
/// come later; publishing needs a price on every variant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    /// The owning seller: set from the caller, never from the message body.
    #[serde(skip, default = "default_owner")]
    pub owner: String,
    /// Stock keeping unit of the single variant (shorthand; not with `variants`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// 1..=200 characters.
    pub title: String,
    /// Free text, up to 10 000 characters.
    #[serde(default)]
    pub description: String,
    /// Category slug.
    #[serde(default)]
    pub category: String,
    /// Brand facet.
    #[serde(default)]
    pub brand: String,
    /// The product type whose attribute rules apply, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_type: Option<String>,
    /// Attributes (text, number or flag values).
    #[serde(default)]
    pub attributes: BTreeMap<String, AttributeValue>,
    /// Price of the single variant (shorthand; not with `variants`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<Money>,
    /// Stock of the single variant (shorthand; not with `variants`), >= 0.
    #[serde(default)]
    pub stock: i64,
    /// The product's variants (at least one unless `sku` is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<NewVariant>,
}

impl CreateProduct {
    /// A single-variant product (the shorthand form) owned by [`DEFAULT_OWNER`].
    pub fn simple(sku: &str, title: &str, price: Option<Money>, stock: i64) -> Self {
        Self {
            owner: default_owner(),
            sku: Some(sku.to_owned()),
            title: title.to_owned(),
            description: String::new(),
            category: String::new(),
            brand: String::new(),
            product_type: None,
            attributes: BTreeMap::new(),
            price,
            stock,
            variants: Vec::new(),
        }
    }
}

/// A partial change of descriptive fields; absent fields stay as they are. A field given as
/// `null` is refused (it would read as "clear" to some clients and "unchanged" to others).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProductDetails {
    /// New title.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// New description.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// New category.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// New brand.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub brand: Option<String>,
    /// Replaces the whole attribute map.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub attributes: Option<BTreeMap<String, AttributeValue>>,
}

/// A field that is present must hold a value: `null` is an error, absence is `None`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Changes a variant's SKU or option values; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateVariant {
    /// New SKU.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub sku: Option<String>,
    /// New option values (the whole map).
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub options: Option<BTreeMap<String, String>>,
}

/// Every command of the product aggregate (its wire form on `product.commands` is
/// `bus::envelope::CommandMessage`). The single-price and stock commands act on the variant
/// they name, or on the first variant when they name none (as before variants existed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    /// Creates a draft product.
    CreateProduct(CreateProduct),
    /// Changes descriptive fields.
    UpdateProductDetails(UpdateProductDetails),
    /// Sets a variant's price in the price's currency.
    ChangePrice {
        /// The new price.
        price: Money,
        /// The variant (default: the first).
        variant_id: Option<u32>,
    },
    /// Adds (or with a negative delta removes) stock; never below zero.
    AdjustStock {
        /// Non-zero change.
        delta: i64,
        /// The variant (default: the first).
        variant_id: Option<u32>,
    },
    /// Sets stock to an absolute value (>= 0).
    SetStock {
        /// New stock level.
        stock: i64,
        /// The variant (default: the first).
        variant_id: Option<u32>,
    },
    /// Adds a variant.
    AddVariant(NewVariant),
    /// Changes a variant's SKU or options.
    UpdateVariant {
        /// The variant.
        variant_id: u32,
        /// What changes.
        change: UpdateVariant,
    },
    /// Removes a variant (never the last one).
    RemoveVariant {
        /// The variant.
        variant_id: u32,
    },
    /// Replaces a variant's price list.
    SetVariantPrices {
        /// The variant.
        variant_id: u32,
        /// At most one price per currency.
        prices: Vec<Money>,
    },
    /// Places the product in a category of the tree: its slug and path (root first). Internal:
    /// the store resolves the path from the tree (on a creation or a category change, and in
    /// the fan-out after a category is renamed or moved); no client sends it.
    PlaceInCategory {
        /// The category's slug.
        category: String,
        /// Its path, root first.
        path: Vec<super::value::CategoryNode>,
    },
    /// Gives the product to another seller (catalog admins only; an ordinary update never
    /// changes the owner).
    TransferOwnership {
        /// The new owning seller.
        owner: String,
    },
    /// Makes a draft product visible; needs a title and a price on every variant.
    PublishProduct,
    /// Takes a published product back to draft.
    UnpublishProduct,
    /// Retires the product for good.
    ArchiveProduct,
}

impl ProductCommand {
    /// The stable command type name (the wire tag).
    pub fn command_type(&self) -> &'static str {
        match self {
            Self::CreateProduct(_) => "CreateProduct",
            Self::UpdateProductDetails(_) => "UpdateProductDetails",
            Self::ChangePrice { .. } => "ChangePrice",
            Self::AdjustStock { .. } => "AdjustStock",
            Self::SetStock { .. } => "SetStock",
            Self::AddVariant(_) => "AddVariant",
            Self::UpdateVariant { .. } => "UpdateVariant",
            Self::RemoveVariant { .. } => "RemoveVariant",
            Self::SetVariantPrices { .. } => "SetVariantPrices",
            Self::PlaceInCategory { .. } => "PlaceInCategory",
            Self::TransferOwnership { .. } => "TransferOwnership",
            Self::PublishProduct => "PublishProduct",
            Self::UnpublishProduct => "UnpublishProduct",
            Self::ArchiveProduct => "ArchiveProduct",
        }
    }
}
