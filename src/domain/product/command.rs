//! Commands the product aggregate accepts. Imperative names; each maps to one event.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::value::Money;

/// Fields of a new product. Price and stock may come later; publishing needs a price.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateProduct {
    /// Stock keeping unit, unique in the catalog.
    pub sku: String,
    /// 1..=200 characters.
    pub title: String,
    /// Free text, up to 10 000 characters.
    #[serde(default)]
    pub description: String,
    /// Category facet.
    #[serde(default)]
    pub category: String,
    /// Brand facet.
    #[serde(default)]
    pub brand: String,
    /// String attributes (colour, size, ...).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
    /// Optional initial price.
    #[serde(default)]
    pub price: Option<Money>,
    /// Initial stock, >= 0.
    #[serde(default)]
    pub stock: i64,
}

/// A partial change of descriptive fields; absent fields stay as they are. A field given as
/// `null` is refused (it would read as "clear" to some clients and "unchanged" to others).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    pub attributes: Option<BTreeMap<String, String>>,
}

/// A field that is present must hold a value: `null` is an error, absence is `None`.
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Every command of the product aggregate (its wire form on `product.commands` is
/// `bus::envelope::CommandMessage`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProductCommand {
    /// Creates a draft product.
    CreateProduct(CreateProduct),
    /// Changes descriptive fields.
    UpdateProductDetails(UpdateProductDetails),
    /// Sets a new price.
    ChangePrice {
        /// The new price.
        price: Money,
    },
    /// Adds (or with a negative delta removes) stock; never below zero.
    AdjustStock {
        /// Non-zero change.
        delta: i64,
    },
    /// Sets stock to an absolute value (>= 0).
    SetStock {
        /// New stock level.
        stock: i64,
    },
    /// Makes a draft product visible; needs a title and a price.
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
            Self::PublishProduct => "PublishProduct",
            Self::UnpublishProduct => "UnpublishProduct",
            Self::ArchiveProduct => "ArchiveProduct",
        }
    }
}
