//! A validated search request: what the API's search parameters become, and what the query
//! (`query`) and the facets (`facets`) are built from.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::cursor::{Cursor, Primary};

/// Sort orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SortOrder {
    /// Best match first (newest when there is no text).
    #[default]
    Relevance,
    /// Cheapest first.
    PriceAsc,
    /// Dearest first.
    PriceDesc,
    /// Most recently created first.
    Newest,
}

/// A validated search request.
#[derive(Debug, Clone, Default)]
pub struct SearchRequest {
    /// Free text.
    pub q: Option<String>,
    /// Category facet filter.
    pub category: Option<String>,
    /// Only products in this category or anywhere under it (a slug on their category path).
    pub category_under: Option<String>,
    /// Brand facet filter.
    pub brand: Option<String>,
    /// Option filters, `(name, value)`: values of one name are alternatives (size M or L),
    /// different names all apply (size M and colour red, possibly on different variants).
    pub options: Vec<(String, String)>,
    /// Attribute filters, `(name, value as text)`, combined like `options`.
    pub attributes: Vec<(String, String)>,
    /// Attribute names to facet on; `None`: every attribute. Product types decide which
    /// attributes are facets: a caller that knows them passes their facetable attributes.
    pub facet_attributes: Option<Vec<String>>,
    /// The currency prices are filtered and sorted in (a product's lowest price in it over
    /// its variants); only products with a price in it match, and the price facet is bucketed
    /// in it. `None`: the first variant's first price, whatever its currency (single-currency
    /// catalogs), and no price facet.
    pub currency: Option<String>,
    /// Minimum price (minor units, inclusive).
    pub min_price: Option<i64>,
    /// Maximum price (minor units, inclusive).
    pub max_price: Option<i64>,
    /// Only products with stock > 0.
    pub in_stock: Option<bool>,
    /// Status filter; `None` means all statuses (admin only); default callers pass published.
    pub status: Option<String>,
    /// The owning seller's products only.
    pub owner: Option<String>,
    /// Sort order.
    pub sort: SortOrder,
    /// 1-based page (1 when `after` is given).
    pub page: u32,
    /// Page size, 1..=MAX_PAGE_SIZE.
    pub size: u32,
    /// Deep paging: the hits after this one (`search_after`, no depth limit, no facets).
    pub after: Option<Cursor>,
}

impl SearchRequest {
    /// The free text, when there is any.
    pub(super) fn text(&self) -> Option<&str> {
        self.q.as_deref().filter(|q| !q.trim().is_empty())
    }

    /// The field prices are filtered and sorted by.
    pub(super) fn price_field(&self) -> String {
        match &self.currency {
            Some(c) => format!("prices.{c}"),
            None => "price_minor".to_owned(),
        }
    }

    /// What the first sort value of this request is (a cursor must match it).
    pub fn primary(&self) -> Primary {
        match (self.sort, self.text()) {
            (SortOrder::Relevance, Some(_)) => Primary::Score,
            _ => Primary::Long,
        }
    }

    /// The sort: the order's own value, then the `id` tiebreaker every cursor relies on.
    pub(super) fn sort_clauses(&self) -> Value {
        let price = self.price_field();
        match (self.sort, self.primary()) {
            (SortOrder::PriceAsc, _) => json!([{ price: { "order": "asc", "missing": "_last" } }, { "id": "asc" }]),
            (SortOrder::PriceDesc, _) => json!([{ price: { "order": "desc", "missing": "_last" } }, { "id": "asc" }]),
            (_, Primary::Score) => json!(["_score", { "id": "asc" }]),
            (SortOrder::Newest | SortOrder::Relevance, Primary::Long) => {
                json!([{ "created_at": "desc" }, { "id": "asc" }])
            }
        }
    }
}
