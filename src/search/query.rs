//! The product search query. User text goes into `multi_match` (never query-string syntax),
//! with fuzziness for typos; filters are exact terms and ranges; facets are aggregations
//! (`facets`); page size is bounded. Pages go by number (`from`, at most [`MAX_WINDOW`]
//! deep) or after a cursor (`search_after` on the sort values of the last hit, which always
//! end with the `id` tiebreaker; no depth limit).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::Duration;

use super::cursor::Cursor;
use super::document::name_value;
use super::facets::{aggregations, Aggregations, Facets};
use super::{SearchClient, SearchError};

/// Largest page a client may ask for.
pub const MAX_PAGE_SIZE: u32 = 100;
/// Deepest result a client may page to by page number (from + size); `after` goes deeper.
pub const MAX_WINDOW: u32 = 10_000;

pub use super::request::{SearchRequest, SortOrder};

/// `terms` filters on a `name=value` keyword field: one per name, its values alternatives.
fn name_value_filters(field: &str, pairs: &[(String, String)]) -> Vec<Value> {
    let mut by_name: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (name, value) in pairs {
        by_name.entry(name).or_default().push(name_value(name, value));
    }
    by_name
        .into_values()
        .map(|keywords| json!({ "terms": { field: keywords } }))
        .collect()
}

/// The filters of `r` (exact terms and ranges; they do not score).
fn filters(r: &SearchRequest) -> Vec<Value> {
    let mut filter = Vec::new();
    if let Some(s) = &r.status {
        filter.push(json!({ "term": { "status": s } }));
    }
    if let Some(c) = &r.category {
        filter.push(json!({ "term": { "category": c } }));
    }
    if let Some(c) = &r.category_under {
        filter.push(json!({ "term": { "category_path": c } }));
    }
    if let Some(b) = &r.brand {
        filter.push(json!({ "term": { "brand": b } }));
    }
    if let Some(o) = &r.owner {
        filter.push(json!({ "term": { "owner": o } }));
    }
    filter.extend(name_value_filters("option_values", &r.options));
    filter.extend(name_value_filters("attribute_values", &r.attributes));
    let price_field = r.price_field();
    if r.currency.is_some() {
        filter.push(json!({ "exists": { "field": price_field } }));
    }
    if r.min_price.is_some() || r.max_price.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(v) = r.min_price {
            range.insert("gte".into(), json!(v));
        }
        if let Some(v) = r.max_price {
            range.insert("lte".into(), json!(v));
        }
        filter.push(json!({ "range": { price_field: range } }));
    }
    if r.in_stock == Some(true) {
        filter.push(json!({ "term": { "in_stock": true } }));
    }
    filter
}

/// The OpenSearch query body for `r`: a page by number (`from`) with facets, or with `after`
/// the page after a cursor (`search_after`) without them.
pub fn build(r: &SearchRequest) -> Value {
    let must: Vec<Value> = r
        .text()
        .map(|q| {
            json!({
                "multi_match": {
                    "query": q,
                    "fields": ["title^3", "brand.text^2", "description"],
                    "fuzziness": "AUTO",
                    "prefix_length": 1,
                    "operator": "and"
                }
            })
        })
        .into_iter()
        .collect();
    let mut body = json!({
        "size": r.size,
        "track_total_hits": true,
        "query": { "bool": { "must": must, "filter": filters(r) } },
        "sort": r.sort_clauses(),
        "highlight": {
            "pre_tags": ["<em>"], "post_tags": ["</em>"],
            "fields": { "title": {}, "description": { "fragment_size": 150, "number_of_fragments": 1 } }
        }
    });
    match &r.after {
        Some(after) => body["search_after"] = json!(after.values()),
        None => {
            body["from"] = json!(r.page.saturating_sub(1) * r.size);
            body["aggs"] = aggregations(r);
        }
    }
    body
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
    /// Counts per category, brand, price range, option, attribute and category path (empty
    /// on pages fetched with `after`).
    pub facets: Facets,
    /// The cursor of the next page (pass it as `after`); present when the page is full, so
    /// there may be more.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// A `_search` answer, as far as this code reads it; `S` is the `_source` of a hit.
#[derive(Debug, Default, Deserialize)]
#[serde(bound(deserialize = "S: Deserialize<'de> + Default"))]
pub struct SearchAnswer<S = Value> {
    /// The hits.
    #[serde(default)]
    pub hits: Hits<S>,
    /// The facet aggregations.
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

/// Reads an OpenSearch answer into a [`SearchResponse`].
pub fn parse(r: &SearchRequest, answer: SearchAnswer) -> SearchResponse {
    let hits = answer.hits.hits;
    let full = r.size > 0 && hits.len() >= r.size as usize;
    let next_after = hits
        .last()
        .filter(|_| full)
        .and_then(|h| h.sort.clone())
        .and_then(Cursor::from_sort)
        .map(|c| c.encode());
    SearchResponse {
        total: answer.hits.total.map_or(0, |t| t.value),
        page: r.page,
        size: r.size,
        hits: hits
            .into_iter()
            .map(|h| SearchHit {
                product: h.source,
                score: h.score,
                highlight: h.highlight.unwrap_or_else(|| json!({})),
            })
            .collect(),
        facets: Facets::from_aggregations(answer.aggregations),
        next_after,
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
    let answer = client.search_in(index, &build(r), timeout).await?;
    Ok(parse(r, answer.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::cursor::Primary;

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
        assert_eq!(
            body.pointer("/query/bool/filter/0/exists/field"),
            Some(&json!("prices.EUR"))
        );
        assert_eq!(
            body.pointer("/query/bool/filter/1/range/prices.EUR/lte"),
            Some(&json!(500))
        );
        assert_eq!(body.pointer("/sort/0/prices.EUR/order"), Some(&json!("desc")));
    }

    #[test]
    fn option_filters_of_one_name_are_alternatives_and_names_all_apply() {
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        let r = SearchRequest {
            options: vec![pair("size", "M"), pair("colour", "red"), pair("size", "L")],
            attributes: vec![pair("material", "cotton")],
            category_under: Some("apparel".into()),
            size: 10,
            ..Default::default()
        };
        let filters = build(&r)["query"]["bool"]["filter"].clone();
        assert_eq!(
            filters,
            json!([{"term": {"category_path": "apparel"}},
                   {"terms": {"option_values": ["colour=red"]}},
                   {"terms": {"option_values": ["size=M", "size=L"]}},
                   {"terms": {"attribute_values": ["material=cotton"]}}])
        );
    }

    #[test]
    fn a_cursor_pages_with_search_after_and_without_facets() {
        let mut r = SearchRequest {
            page: 1,
            size: 37,
            ..Default::default()
        };
        let first = build(&r);
        assert_eq!(
            first["sort"],
            json!([{"created_at": "desc"}, {"id": "asc"}]),
            "the id tiebreaker"
        );
        assert!(first.get("search_after").is_none() && first["aggs"].is_object());
        r.after = Cursor::from_sort(json!([1_733_000_000_000_i64, "some-id"]));
        let next = build(&r);
        assert_eq!(next["search_after"], json!([1_733_000_000_000_i64, "some-id"]));
        assert!(next.get("from").is_none() && next.get("aggs").is_none());
    }

    #[test]
    fn a_full_page_carries_the_cursor_of_its_last_hit() {
        let r = SearchRequest {
            page: 1,
            size: 2,
            ..Default::default()
        };
        let answer = |n: usize| -> SearchAnswer {
            serde_json::from_value(json!({"hits": {"hits": (0..n).map(|i| json!({"_source": {}, "sort": [i, format!("id-{i}")]})).collect::<Vec<_>>()}}))
                .expect("answer")
        };
        let next = parse(&r, answer(2)).next_after.expect("full page");
        assert_eq!(
            Cursor::decode(&next, Primary::Long).expect("decodes").values(),
            [json!(1), json!("id-1")]
        );
        assert_eq!(parse(&r, answer(1)).next_after, None, "a short page is the last");
    }
}
