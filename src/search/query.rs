//! The product search query. User text goes into `multi_match` (never query-string syntax),
//! with fuzziness for typos; filters are exact terms and ranges; facets are terms
//! aggregations; page size is bounded.

use opensearch::SearchParts;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::time::Duration;

use super::client::decode;
use super::{SearchClient, SearchError};

/// Largest page a client may ask for.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Deepest result a client may page to (from + size).
pub const MAX_WINDOW: u32 = 10_000;

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
    /// Brand facet filter.
    pub brand: Option<String>,
    /// The currency prices are filtered and sorted in (a product's lowest price in it over
    /// its variants); only products with a price in it match. `None`: the first variant's
    /// first price, whatever its currency (single-currency catalogs).
    pub currency: Option<String>,
    /// Minimum price (minor units, inclusive).
    pub min_price: Option<i64>,
    /// Maximum price (minor units, inclusive).
    pub max_price: Option<i64>,
    /// Only products with stock > 0.
    pub in_stock: Option<bool>,
    /// Status filter; `None` means all statuses (admin only); default callers pass published.
    pub status: Option<String>,
    /// Sort order.
    pub sort: SortOrder,
    /// 1-based page.
    pub page: u32,
    /// Page size, 1..=MAX_PAGE_SIZE.
    pub size: u32,
}

/// The OpenSearch query body for `r`.
pub fn build(r: &SearchRequest) -> Value {
    let mut must = Vec::new();
    let mut filter = Vec::new();
    if let Some(q) = r.q.as_deref().filter(|q| !q.trim().is_empty()) {
        must.push(json!({
            "multi_match": {
                "query": q,
                "fields": ["title^3", "brand.text^2", "description"],
                "fuzziness": "AUTO",
                "prefix_length": 1,
                "operator": "and"
            }
        }));
    }
    if let Some(s) = &r.status {
        filter.push(json!({ "term": { "status": s } }));
    }
    if let Some(c) = &r.category {
        filter.push(json!({ "term": { "category": c } }));
    }
    if let Some(b) = &r.brand {
        filter.push(json!({ "term": { "brand": b } }));
    }
    let price_field = match &r.currency {
        Some(c) => {
            let field = format!("prices.{c}");
            filter.push(json!({ "exists": { "field": field } }));
            field
        }
        None => "price_minor".to_owned(),
    };
    if r.min_price.is_some() || r.max_price.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(v) = r.min_price {
            range.insert("gte".into(), json!(v));
        }
        if let Some(v) = r.max_price {
            range.insert("lte".into(), json!(v));
        }
        filter.push(json!({ "range": { price_field.clone(): range } }));
    }
    if r.in_stock == Some(true) {
        filter.push(json!({ "term": { "in_stock": true } }));
    }
    let sort = match (r.sort, must.is_empty()) {
        (SortOrder::PriceAsc, _) => {
            json!([{ price_field.clone(): { "order": "asc", "missing": "_last" } }, { "id": "asc" }])
        }
        (SortOrder::PriceDesc, _) => {
            json!([{ price_field.clone(): { "order": "desc", "missing": "_last" } }, { "id": "asc" }])
        }
        (SortOrder::Newest, _) | (SortOrder::Relevance, true) => {
            json!([{ "created_at": "desc" }, { "id": "asc" }])
        }
        (SortOrder::Relevance, false) => json!(["_score", { "id": "asc" }]),
    };
    json!({
        "from": (r.page.saturating_sub(1)) * r.size,
        "size": r.size,
        "track_total_hits": true,
        "query": { "bool": { "must": must, "filter": filter } },
        "sort": sort,
        "aggs": {
            "category": { "terms": { "field": "category", "size": 50 } },
            "brand": { "terms": { "field": "brand", "size": 50 } }
        },
        "highlight": {
            "pre_tags": ["<em>"], "post_tags": ["</em>"],
            "fields": { "title": {}, "description": { "fragment_size": 150, "number_of_fragments": 1 } }
        }
    })
}

/// One hit.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchHit {
    /// The indexed document.
    #[schema(value_type = Object)]
    pub product: Value,
    /// Relevance score, when sorted by relevance.
    pub score: Option<f64>,
    /// Highlighted fragments by field.
    #[schema(value_type = Object)]
    pub highlight: Value,
}

/// A facet bucket.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FacetBucket {
    /// Facet value.
    pub value: String,
    /// Matching products.
    pub count: u64,
}

/// A page of results.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    /// Total matches.
    pub total: u64,
    /// 1-based page.
    pub page: u32,
    /// Page size.
    pub size: u32,
    /// Hits on this page.
    pub hits: Vec<SearchHit>,
    /// Counts per category and per brand.
    pub facets: Facets,
}

/// Facets of a search.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Facets {
    /// Per category.
    pub category: Vec<FacetBucket>,
    /// Per brand.
    pub brand: Vec<FacetBucket>,
}

/// A `_search` answer, as far as this code reads it; `S` is the `_source` of a hit.
#[derive(Debug, Default, Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de> + Default"))]
pub struct SearchAnswer<S = Value> {
    /// The hits.
    #[serde(default)]
    pub hits: Hits<S>,
    /// Terms aggregations by name.
    #[serde(default)]
    pub aggregations: Aggregations,
}

/// `hits` of a [`SearchAnswer`].
#[derive(Debug, Default, Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de> + Default"))]
pub struct Hits<S> {
    /// Total matches (`track_total_hits`).
    #[serde(default)]
    pub total: Option<TotalHits>,
    /// This page's hits.
    #[serde(default)]
    pub hits: Vec<Hit<S>>,
}

/// `hits.total` of a [`SearchAnswer`].
#[derive(Debug, Default, Deserialize)]
pub struct TotalHits {
    /// The count.
    pub value: u64,
}

/// One hit of a [`SearchAnswer`].
#[derive(Debug, Default, Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de> + Default"))]
pub struct Hit<S> {
    /// The document (or the fields `_source` asked for).
    #[serde(default, rename = "_source")]
    pub source: S,
    /// Relevance score (null when sorted otherwise).
    #[serde(default, rename = "_score")]
    pub score: Option<f64>,
    /// Highlighted fragments by field.
    #[serde(default)]
    pub highlight: Option<Value>,
    /// The sort values, for `search_after`.
    #[serde(default)]
    pub sort: Option<Value>,
}

/// The facet aggregations of [`build`].
#[derive(Debug, Default, Deserialize)]
pub struct Aggregations {
    /// Per category.
    #[serde(default)]
    pub category: Option<TermsAggregation>,
    /// Per brand.
    #[serde(default)]
    pub brand: Option<TermsAggregation>,
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

/// Reads an OpenSearch answer into a [`SearchResponse`].
pub fn parse(r: &SearchRequest, answer: SearchAnswer) -> SearchResponse {
    let buckets = |agg: Option<TermsAggregation>| -> Vec<FacetBucket> {
        agg.map(|a| a.buckets)
            .unwrap_or_default()
            .into_iter()
            .map(|b| FacetBucket {
                value: b.key,
                count: b.doc_count,
            })
            .collect()
    };
    SearchResponse {
        total: answer.hits.total.map_or(0, |t| t.value),
        page: r.page,
        size: r.size,
        hits: answer
            .hits
            .hits
            .into_iter()
            .map(|h| SearchHit {
                product: h.source,
                score: h.score,
                highlight: h.highlight.unwrap_or_else(|| json!({})),
            })
            .collect(),
        facets: Facets {
            category: buckets(answer.aggregations.category),
            brand: buckets(answer.aggregations.brand),
        },
    }
}

/// Runs `r` against `index` (an alias), bounded by `timeout`. An index that does not exist
/// yet (nothing was ever projected) answers an empty page.
pub async fn search(
    client: &SearchClient,
    index: &str,
    r: &SearchRequest,
    timeout: Duration,
) -> Result<SearchResponse, SearchError> {
    let body = &build(r);
    let resp = client
        .call(|os| async move {
            os.search(SearchParts::Index(&[index]))
                .body(body)
                .request_timeout(timeout)
                .send()
                .await
        })
        .await?;
    if resp.status_code().as_u16() == 404 {
        return Ok(parse(r, SearchAnswer::default()));
    }
    Ok(parse(r, decode(resp).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_goes_into_multi_match_not_query_string() {
        let r = SearchRequest {
            q: Some("title:(x OR y)".into()),
            page: 1,
            size: 10,
            ..Default::default()
        };
        let body = build(&r);
        assert_eq!(
            body.pointer("/query/bool/must/0/multi_match/query")
                .and_then(Value::as_str),
            Some("title:(x OR y)")
        );
        assert!(!body.to_string().contains("query_string"));
    }

    #[test]
    fn paging_and_filters_are_translated() {
        let r = SearchRequest {
            status: Some("published".into()),
            min_price: Some(100),
            in_stock: Some(true),
            page: 3,
            size: 20,
            sort: SortOrder::PriceAsc,
            ..Default::default()
        };
        let body = build(&r);
        assert_eq!(body["from"], json!(40));
        assert_eq!(
            body.pointer("/query/bool/filter/0/term/status"),
            Some(&json!("published"))
        );
        assert_eq!(
            body.pointer("/query/bool/filter/1/range/price_minor/gte"),
            Some(&json!(100))
        );
        assert_eq!(body.pointer("/sort/0/price_minor/order"), Some(&json!("asc")));
    }

    #[test]
    fn a_currency_filters_and_sorts_by_the_lowest_price_in_it() {
        let r = SearchRequest {
            currency: Some("EUR".into()),
            max_price: Some(500),
            sort: SortOrder::PriceDesc,
            size: 20,
            ..Default::default()
        };
        let body = build(&r);
        assert_eq!(body.pointer("/query/bool/filter/0/exists/field"), Some(&json!("prices.EUR")));
        assert_eq!(body.pointer("/query/bool/filter/1/range/prices.EUR/lte"), Some(&json!(500)));
        assert_eq!(body.pointer("/sort/0/prices.EUR/order"), Some(&json!("desc")));
    }
}
