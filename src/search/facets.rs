//! The facets of a search: the aggregations [`aggregations`] adds to the query, and how
//! [`Facets::from_aggregations`] reads them back.
//!
//! Every facet counts products (documents), over everything the request matches (its filters
//! included): `category` and `brand` (terms), `category_path` (terms over every slug from the
//! root to a product's category, so a client can draw the tree with counts), `options` and
//! `attributes` (terms over the `name=value` keywords of the document, split into a facet per
//! name here) and, when the request names a currency, `price` (a range aggregation over
//! `prices.<CUR>` with fixed buckets in minor units).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::document::split_name_value;
use super::request::SearchRequest;

/// Most buckets of a terms facet over `name=value` keywords or category slugs.
pub const TERMS_SIZE: u32 = 500;
/// Most buckets of the `category` and `brand` facets.
pub const SHORT_TERMS_SIZE: u32 = 50;
/// Bounds of the price buckets in minor units: `[0, 1000)`, `[1000, 5000)`, ...,
/// `[50000, ∞)`.
pub const PRICE_BOUNDS: [i64; 5] = [0, 1_000, 5_000, 10_000, 50_000];

/// The `aggs` of a search for `r`. With `facet_attributes` given, only those attribute names
/// are aggregated (none when it is empty); the product types decide which attributes are
/// facets, and the caller passes their facetable attributes.
pub fn aggregations(r: &SearchRequest) -> Value {
    let terms = |field: &str, size: u32| json!({ "terms": { "field": field, "size": size } });
    let mut aggs = json!({
        "category": terms("category", SHORT_TERMS_SIZE),
        "brand": terms("brand", SHORT_TERMS_SIZE),
        "category_path": terms("category_path", TERMS_SIZE),
        "options": terms("option_values", TERMS_SIZE),
    });
    match r.facet_attributes.as_deref() {
        None => aggs["attributes"] = terms("attribute_values", TERMS_SIZE),
        Some([]) => {}
        Some(names) => {
            let mut agg = terms("attribute_values", TERMS_SIZE);
            agg["terms"]["include"] = json!(attribute_include(names));
            aggs["attributes"] = agg;
        }
    }
    if let Some(currency) = &r.currency {
        aggs["price"] = json!({ "range": { "field": format!("prices.{currency}"), "ranges": price_ranges() } });
    }
    aggs
}

/// The range aggregation's buckets: each bound to the next, the last open-ended.
fn price_ranges() -> Vec<Value> {
    PRICE_BOUNDS
        .iter()
        .enumerate()
        .map(|(i, from)| match PRICE_BOUNDS.get(i + 1) {
            Some(to) => json!({ "from": from, "to": to }),
            None => json!({ "from": from }),
        })
        .collect()
}

/// A Lucene regular expression matching `name=<anything>` for each of `names`, every
/// character of a name but ASCII letters and digits escaped (Lucene's `\` makes any
/// character literal).
fn attribute_include(names: &[String]) -> String {
    let escape = |name: &str| -> String {
        name.chars()
            .flat_map(|c| {
                let literal = c.is_ascii_alphanumeric();
                (!literal).then_some('\\').into_iter().chain(std::iter::once(c))
            })
            .collect()
    };
    let names: Vec<String> = names.iter().map(|n| escape(n)).collect();
    format!("({})=.*", names.join("|"))
}

/// The facet aggregations of a `_search` answer.
#[derive(Debug, Default, Deserialize)]
pub struct Aggregations {
    /// Per category.
    #[serde(default)]
    pub category: Option<TermsAggregation>,
    /// Per brand.
    #[serde(default)]
    pub brand: Option<TermsAggregation>,
    /// Per slug on the category paths.
    #[serde(default)]
    pub category_path: Option<TermsAggregation>,
    /// Per `name=value` option keyword.
    #[serde(default)]
    pub options: Option<TermsAggregation>,
    /// Per `name=value` attribute keyword.
    #[serde(default)]
    pub attributes: Option<TermsAggregation>,
    /// Per price range (only with a currency).
    #[serde(default)]
    pub price: Option<RangeAggregation>,
}

/// A terms aggregation.
#[derive(Debug, Default, Deserialize)]
pub struct TermsAggregation {
    /// Its buckets.
    #[serde(default)]
    pub buckets: Vec<TermsBucket>,
}

/// One bucket of a [`TermsAggregation`].
#[derive(Debug, Deserialize)]
pub struct TermsBucket {
    /// The term.
    pub key: String,
    /// Documents with it.
    pub doc_count: u64,
}

/// A range aggregation.
#[derive(Debug, Default, Deserialize)]
pub struct RangeAggregation {
    /// Its buckets, in the order asked for.
    #[serde(default)]
    pub buckets: Vec<RangeBucket>,
}

/// One bucket of a [`RangeAggregation`]: `from` inclusive, `to` exclusive (absent: open).
#[derive(Debug, Deserialize)]
pub struct RangeBucket {
    /// Lower bound (OpenSearch answers a double).
    #[serde(default)]
    pub from: Option<f64>,
    /// Upper bound, exclusive.
    #[serde(default)]
    pub to: Option<f64>,
    /// Documents in the range.
    pub doc_count: u64,
}

/// A facet bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FacetBucket {
    /// Facet value.
    pub value: String,
    /// Matching products.
    pub count: u64,
    /// For a category in the tree: its path for display (`Electronics › Audio › Headphones`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// A price range in minor units of the requested currency: `from` inclusive, `to` exclusive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct PriceBucket {
    /// Lower bound, inclusive.
    pub from: i64,
    /// Upper bound, exclusive; absent on the last, open-ended range.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<i64>,
    /// Products whose lowest price in the currency is in the range.
    pub count: u64,
}

/// The values of one option or attribute with their counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct NamedFacet {
    /// Option or attribute name (`size`, `material`).
    pub name: String,
    /// Its values, most products first.
    pub values: Vec<FacetBucket>,
}

/// Facets of a search. Computed for the first page of a query only: pages fetched with
/// `after` carry empty facets (the counts do not change from page to page).
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Facets {
    /// Per category.
    pub category: Vec<FacetBucket>,
    /// Per brand.
    pub brand: Vec<FacetBucket>,
    /// Per price range of the requested `currency`; absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<Vec<PriceBucket>>,
    /// Per variant option (size, colour, ...), by name: products with a variant in each value.
    pub options: Vec<NamedFacet>,
    /// Per attribute, by name, values as text (`true`, `180`, `cotton`).
    pub attributes: Vec<NamedFacet>,
    /// Per category slug anywhere on the products' category paths (a category counts the
    /// products under it).
    pub category_path: Vec<FacetBucket>,
}

impl Facets {
    /// Reads the aggregations of [`aggregations`] back.
    pub fn from_aggregations(a: Aggregations) -> Self {
        Self {
            category: buckets(a.category),
            brand: buckets(a.brand),
            price: a.price.map(|p| p.buckets.into_iter().map(price_bucket).collect()),
            options: named(a.options),
            attributes: named(a.attributes),
            category_path: buckets(a.category_path),
        }
    }
}

fn buckets(agg: Option<TermsAggregation>) -> Vec<FacetBucket> {
    agg.map(|a| a.buckets)
        .unwrap_or_default()
        .into_iter()
        .map(|b| FacetBucket {
            value: b.key,
            count: b.doc_count,
            path: None,
        })
        .collect()
}

/// `name=value` buckets as one facet per name (names in order, values as counted).
fn named(agg: Option<TermsAggregation>) -> Vec<NamedFacet> {
    let mut by_name: BTreeMap<String, Vec<FacetBucket>> = BTreeMap::new();
    for b in agg.map(|a| a.buckets).unwrap_or_default() {
        if let Some((name, value)) = split_name_value(&b.key) {
            by_name.entry(name.to_owned()).or_default().push(FacetBucket {
                value: value.to_owned(),
                count: b.doc_count,
                path: None,
            });
        }
    }
    by_name
        .into_iter()
        .map(|(name, values)| NamedFacet { name, values })
        .collect()
}

/// Bounds are the integers of [`PRICE_BOUNDS`]; OpenSearch echoes them as doubles.
fn price_bucket(b: RangeBucket) -> PriceBucket {
    PriceBucket {
        from: b.from.map_or(0, |f| f as i64),
        to: b.to.map(|t| t as i64),
        count: b.doc_count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_buckets_are_fixed_ranges_in_the_requested_currency_only() {
        let mut r = SearchRequest::default();
        assert!(aggregations(&r).get("price").is_none(), "no currency, no price facet");
        r.currency = Some("EUR".into());
        let aggs = aggregations(&r);
        assert_eq!(aggs["price"]["range"]["field"], "prices.EUR");
        assert_eq!(
            aggs["price"]["range"]["ranges"],
            json!([{"from": 0, "to": 1000}, {"from": 1000, "to": 5000}, {"from": 5000, "to": 10000},
                   {"from": 10000, "to": 50000}, {"from": 50000}])
        );
    }

    #[test]
    fn only_the_attributes_asked_for_are_aggregated() {
        let mut r = SearchRequest::default();
        assert!(
            aggregations(&r)["attributes"]["terms"].get("include").is_none(),
            "all by default"
        );
        r.facet_attributes = Some(vec!["material".into(), "a.b (c)".into()]);
        assert_eq!(
            aggregations(&r)["attributes"]["terms"]["include"],
            r"(material|a\.b\ \(c\))=.*"
        );
        r.facet_attributes = Some(Vec::new());
        assert!(aggregations(&r).get("attributes").is_none());
    }

    #[test]
    fn name_value_buckets_become_one_facet_per_name() {
        let agg = |keys: &[(&str, u64)]| TermsAggregation {
            buckets: keys
                .iter()
                .map(|(k, n)| TermsBucket {
                    key: (*k).into(),
                    doc_count: *n,
                })
                .collect(),
        };
        let facets = Facets::from_aggregations(Aggregations {
            options: Some(agg(&[("size=M", 5), ("colour=red", 4), ("size=S", 2), ("broken", 1)])),
            price: Some(RangeAggregation {
                buckets: vec![RangeBucket {
                    from: Some(50000.0),
                    to: None,
                    doc_count: 3,
                }],
            }),
            ..Default::default()
        });
        let names: Vec<&str> = facets.options.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["colour", "size"]);
        assert_eq!(
            facets.options[1].values,
            [("M", 5), ("S", 2)].map(|(v, n)| FacetBucket {
                value: v.into(),
                count: n,
                path: None,
            })
        );
        assert_eq!(
            facets.price,
            Some(vec![PriceBucket {
                from: 50000,
                to: None,
                count: 3
            }])
        );
        assert!(facets.attributes.is_empty());
    }
}
