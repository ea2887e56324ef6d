//! `GET /api/search`: full text with typo tolerance, filters, facets and highlights over the
//! `products` alias, paged by number or, without a depth limit, after a cursor (`after`).
//! `GET /api/search/suggest`: completions of titles and brands as a user types. Only
//! published products unless a token holder asks for another status.
//!
//! `option` and `attribute` repeat (`option=size:M&option=colour:red`, OpenAPI's exploded
//! form arrays); every other parameter is given at most once.
//!
//! Both are bounded by `SEARCH_REQUEST_TIMEOUT_MS`: a hung, unreachable or overloaded
//! (429/5xx) OpenSearch answers 503 problem+json with `Retry-After` within that bound.

use actix_web::{get, web, HttpRequest, HttpResponse};
use serde::Deserialize;
use std::future::Future;

use super::auth::Caller;
use super::contract::problems;
use super::{ApiError, AppState};
use crate::domain::product::{
    bounded_text, required_text, ProductStatus, KNOWN_CURRENCIES, SHORT_TEXT_MAX_CHARS, TEXT_PATTERN,
};
use crate::search::cursor::Cursor;
use crate::search::query::{self, SearchRequest, SortOrder, MAX_PAGE_SIZE, MAX_WINDOW};
use crate::search::suggest::{
    self as completion, SuggestRequest, DEFAULT_SUGGEST_SIZE, MAX_PREFIX_CHARS, MAX_SUGGEST_SIZE,
};
use crate::search::SearchError;

/// Longest free-text query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;
/// Most `option` (or `attribute`) filters in one request.
pub const MAX_VALUE_FILTERS: usize = 20;
/// Query keys that may be repeated.
const REPEATABLE: [&str; 2] = ["option", "attribute"];

/// JSON Schema pattern of an `option` or `attribute` filter, what [`name_value`] accepts: a
/// name of 1 to 100 characters without `:`, `:`, a value of 1 to 100 characters, neither with
/// a control character but tab, line feed and carriage return (like [`TEXT_PATTERN`]).
pub fn name_value_pattern() -> String {
    const TEXT: &str = r"\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F";
    debug_assert!(TEXT_PATTERN.contains(TEXT));
    format!("^[^:{TEXT}]{{1,{SHORT_TEXT_MAX_CHARS}}}:[^{TEXT}]{{1,{SHORT_TEXT_MAX_CHARS}}}$")
}

/// The schema of `q`.
fn query_text() -> utoipa::openapi::Object {
    super::contract::fields::text(MAX_QUERY_CHARS)
}

/// The description of `option` (utoipa leaves a `schema_with` parameter's doc comment out,
/// so it is carried by the schema).
pub const OPTION_FILTER_DOC: &str = "Variant option filter `name:value` (split at the first `:`), repeatable \
(`option=size:M&option=size:L&option=colour:red`): values of one name are alternatives, different names \
all apply (not necessarily on the same variant).";
/// The description of `attribute`.
pub const ATTRIBUTE_FILTER_DOC: &str = "Attribute filter `name:value` (split at the first `:`), repeatable, \
combined like `option`; numbers and flags as text (`weight:180`, `organic:true`).";

/// The schema of a repeated `name:value` filter.
fn name_value_filters(description: &str) -> utoipa::openapi::schema::Array {
    let item = utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::Type::String)
        .pattern(Some(name_value_pattern()));
    utoipa::openapi::schema::ArrayBuilder::new()
        .items(item)
        .max_items(Some(MAX_VALUE_FILTERS))
        .description(Some(description))
        .build()
}

/// The schema of `option`.
fn option_filters() -> utoipa::openapi::schema::Array {
    name_value_filters(OPTION_FILTER_DOC)
}

/// The schema of `attribute`.
fn attribute_filters() -> utoipa::openapi::schema::Array {
    name_value_filters(ATTRIBUTE_FILTER_DOC)
}

/// Query parameters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Free text over title, description and brand (never query syntax).
    #[param(schema_with = query_text)]
    pub q: Option<String>,
    /// Category filter (the product's own category).
    #[param(schema_with = super::contract::fields::short_text)]
    pub category: Option<String>,
    /// A category slug: products in it or anywhere under it in the category tree.
    // Literal limits: utoipa drops the doc comment of a `schema_with` parameter; a test in
    // `routes` keeps them equal to `TEXT_PATTERN` and `SHORT_TEXT_MAX_CHARS`.
    #[param(
        max_length = 100,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub category_under: Option<String>,
    /// Brand filter.
    #[param(schema_with = super::contract::fields::short_text)]
    pub brand: Option<String>,
    /// The owning seller's products only (a seller looking beyond published products sees
    /// their own only).
    #[param(schema_with = super::contract::fields::short_text)]
    pub owner: Option<String>,
    /// Variant option filters: [`OPTION_FILTER_DOC`]. Collected by [`search_params`] (serde
    /// never sees the key).
    #[param(schema_with = option_filters)]
    #[serde(default)]
    pub option: Option<Vec<String>>,
    /// Attribute filters: [`ATTRIBUTE_FILTER_DOC`].
    #[param(schema_with = attribute_filters)]
    #[serde(default)]
    pub attribute: Option<Vec<String>>,
    /// Currency of the price filter, sort and price facet (ISO 4217): a product's lowest
    /// price in it over its variants; only products with a price in it match. Without it,
    /// the first variant's first price and no price facet.
    #[param(schema_with = super::contract::fields::currency)]
    pub currency: Option<String>,
    /// Minimum price in minor units (inclusive); must not exceed `max_price`.
    pub min_price: Option<i64>,
    /// Maximum price in minor units (inclusive).
    pub max_price: Option<i64>,
    /// Only products in stock.
    pub in_stock: Option<bool>,
    /// Status filter; anything but `published` (the default) needs a token.
    #[param(inline)]
    pub status: Option<StatusFilter>,
    /// Sort order.
    #[param(inline)]
    pub sort: Option<SortOrder>,
    /// 1-based page; `page * size` must not exceed 10000 (deeper: `after`).
    #[param(minimum = 1, maximum = 10000, default = 1)]
    pub page: Option<u32>,
    /// Page size.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub size: Option<u32>,
    /// The `next_after` of the previous page, with the same query and sort: the page after
    /// it, however deep (crawlers, feeds). Not with `page` > 1; such pages carry no facets.
    // Literal limits (see `category_under`): `CURSOR_PATTERN`, `MAX_CURSOR_CHARS`.
    #[param(min_length = 1, max_length = 512, pattern = "^[A-Za-z0-9_-]+$")]
    pub after: Option<String>,
}

/// Status filter of a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StatusFilter {
    /// Drafts (token).
    Draft,
    /// Published products (the default).
    Published,
    /// Archived products (token).
    Archived,
    /// Every status (token).
    Any,
}

/// The status `filter` asks for (`None`: any) and the owner the caller is then held to: a
/// seller's search beyond published products covers their own products only (`Some(seller)`);
/// anonymous callers may not look beyond published products (401).
fn status_filter(
    filter: Option<StatusFilter>,
    caller: &Caller,
) -> Result<(Option<ProductStatus>, Option<String>), ApiError> {
    let status = match filter.unwrap_or(StatusFilter::Published) {
        StatusFilter::Published => return Ok((Some(ProductStatus::Published), None)),
        StatusFilter::Any => None,
        StatusFilter::Draft => Some(ProductStatus::Draft),
        StatusFilter::Archived => Some(ProductStatus::Archived),
    };
    match &caller.0 {
        None => Err(ApiError::Unauthorized(
            "searching beyond published products needs a bearer token".into(),
        )),
        Some(p) if p.reads_everything() => Ok((status, None)),
        Some(p) => match (p.roles.has(super::auth::Role::Seller), &p.seller) {
            (true, Some(own)) => Ok((status, Some(own.clone()))),
            _ => Err(ApiError::Forbidden(
                "this caller searches published products only".into(),
            )),
        },
    }
}

/// Reads the query string: the repeatable keys collected, the rest as [`SearchParams`].
fn search_params(query: &str) -> Result<SearchParams, ApiError> {
    let mut repeated: [Vec<String>; 2] = Default::default();
    let mut rest = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        match REPEATABLE.iter().position(|r| *r == k) {
            Some(i) => repeated[i].push(v.into_owned()),
            None => {
                rest.append_pair(&k, &v);
            }
        }
    }
    let mut p = web::Query::<SearchParams>::from_query(&rest.finish())
        .map_err(|e| ApiError::field("query", e.to_string()))?
        .into_inner();
    let [option, attribute] = repeated.map(|v| (!v.is_empty()).then_some(v));
    p.option = option;
    p.attribute = attribute;
    Ok(p)
}

/// One `name:value` filter of `field`, as the pattern of [`name_value_pattern`] reads it;
/// name and value trimmed.
fn name_value(field: &'static str, filter: &str) -> Result<(String, String), ApiError> {
    let Some((name, value)) = filter.split_once(':') else {
        return Err(ApiError::field(field, format!("{filter:?} is not name:value")));
    };
    for part in [name, value] {
        let n = part.chars().count();
        if n == 0 || n > SHORT_TEXT_MAX_CHARS {
            return Err(ApiError::field(
                field,
                format!("name and value must be 1 to {SHORT_TEXT_MAX_CHARS} characters each"),
            ));
        }
        bounded_text(field, part, SHORT_TEXT_MAX_CHARS)?;
    }
    Ok((name.trim().to_owned(), value.trim().to_owned()))
}

/// The `name:value` filters of `field`, at most [`MAX_VALUE_FILTERS`].
fn name_values(field: &'static str, filters: Option<Vec<String>>) -> Result<Vec<(String, String)>, ApiError> {
    let filters = filters.unwrap_or_default();
    if filters.len() > MAX_VALUE_FILTERS {
        return Err(ApiError::field(field, format!("at most {MAX_VALUE_FILTERS} filters")));
    }
    filters.iter().map(|f| name_value(field, f)).collect()
}

/// Page and size, within their bounds; `after` goes with the first page only.
fn paging(p: &SearchParams) -> Result<(u32, u32), ApiError> {
    let size = p.size.unwrap_or(20);
    if !(1..=MAX_PAGE_SIZE).contains(&size) {
        return Err(ApiError::field(
            "size",
            format!("must be between 1 and {MAX_PAGE_SIZE}"),
        ));
    }
    let page = p.page.unwrap_or(1);
    if page == 0 || page.saturating_mul(size) > MAX_WINDOW {
        return Err(ApiError::field(
            "page",
            format!("must be >= 1 with page * size <= {MAX_WINDOW} (deeper: after)"),
        ));
    }
    if p.after.is_some() && page > 1 {
        return Err(ApiError::field("after", "cannot be combined with page > 1"));
    }
    Ok((page, size))
}

/// Validates parameters into a [`SearchRequest`] (every attribute is a facet).
fn validate(p: SearchParams, caller: &Caller) -> Result<SearchRequest, ApiError> {
    let (page, size) = paging(&p)?;
    if let (Some(lo), Some(hi)) = (p.min_price, p.max_price) {
        if lo > hi {
            return Err(ApiError::field("min_price", "must not exceed max_price"));
        }
    }
    // Control characters and over-long text are refused like the domain refuses them.
    let text = |field: &'static str, v: Option<String>, max: usize| -> Result<Option<String>, ApiError> {
        v.map(|v| bounded_text(field, &v, max).map_err(ApiError::from))
            .transpose()
    };
    if let Some(c) = p.currency.as_deref().filter(|c| !KNOWN_CURRENCIES.contains(c)) {
        return Err(ApiError::field("currency", format!("unknown ISO 4217 currency {c:?}")));
    }
    let mut r = SearchRequest {
        q: text("q", p.q, MAX_QUERY_CHARS)?,
        category: text("category", p.category, SHORT_TEXT_MAX_CHARS)?,
        category_under: text("category_under", p.category_under, SHORT_TEXT_MAX_CHARS)?,
        brand: text("brand", p.brand, SHORT_TEXT_MAX_CHARS)?,
        options: name_values("option", p.option)?,
        attributes: name_values("attribute", p.attribute)?,
        facet_attributes: None,
        currency: p.currency,
        min_price: p.min_price,
        max_price: p.max_price,
        in_stock: p.in_stock,
        status: None,
        owner: text("owner", p.owner, SHORT_TEXT_MAX_CHARS)?,
        sort: p.sort.unwrap_or_default(),
        page,
        size,
        after: None,
    };
    let (status, held_to) = status_filter(p.status, caller)?;
    r.status = status.map(|s| s.as_str().to_owned());
    if let Some(own) = held_to {
        if r.owner.as_ref().is_some_and(|o| *o != own) {
            return Err(ApiError::Forbidden(
                "a seller searches beyond published products among their own only".into(),
            ));
        }
        r.owner = Some(own);
    }
    if let Some(after) = p.after {
        r.after = Some(Cursor::decode(&after, r.primary()).map_err(|reason| ApiError::field("after", reason))?);
    }
    Ok(r)
}

/// Runs a search call within the search timeout: no answer in time, a transport failure,
/// 429 or 5xx is a 503; any other refusal is our bug (500).
async fn bounded<T>(state: &AppState, call: impl Future<Output = Result<T, SearchError>>) -> Result<T, ApiError> {
    let bound = state.limits.search_timeout;
    let down = |cause: String| ApiError::DependencyDown {
        dependency: "search",
        cause,
    };
    // The transport has its own timeout; the outer one also bounds connecting and reading.
    tokio::time::timeout(bound, call)
        .await
        .map_err(|_| down(format!("no answer from OpenSearch within {}ms", bound.as_millis())))?
        .map_err(|e| match e {
            SearchError::Status { status, body } if status != 429 && status < 500 => {
                ApiError::Internal(format!("search answered {status}: {body}"))
            }
            e => down(e.to_string()),
        })
}

/// How long search waits on Postgres for what only decorates an answer (the facet attributes,
/// the category paths' labels): a stalled database costs those, not the search.
const DECORATION_BOUND: std::time::Duration = std::time::Duration::from_millis(500);

/// The attributes search counts: those a product type marks as a facet; every attribute while
/// no type exists (a catalog of free attributes). A database that does not answer (within
/// [`DECORATION_BOUND`]) costs the attribute facets' precision, not the search: every attribute
/// then.
async fn facet_attributes(state: &AppState) -> Option<Vec<String>> {
    let Ok(types) = tokio::time::timeout(DECORATION_BOUND, state.catalog.recent_types()).await else {
        tracing::debug!("product types: no answer in time; every attribute is a facet");
        return None;
    };
    match types {
        Ok(types) if !types.is_empty() => {
            let mut names: Vec<String> = types
                .iter()
                .flat_map(|t| {
                    t.attributes
                        .iter()
                        .filter(|a| a.facet && !a.variant)
                        .map(|a| a.name.clone())
                })
                .collect();
            names.sort();
            names.dedup();
            Some(names)
        }
        Ok(_) => None,
        Err(e) => {
            tracing::debug!(error = %e, "product types unavailable; every attribute is a facet");
            None
        }
    }
}

/// Gives each category-path bucket that is a category of the tree its path for display. A
/// database that does not answer (within [`DECORATION_BOUND`]) leaves the labels out, not the
/// search.
async fn label_category_paths(state: &AppState, buckets: &mut [crate::search::facets::FacetBucket]) {
    if buckets.is_empty() {
        return;
    }
    let tree = tokio::time::timeout(DECORATION_BOUND, state.catalog.recent_categories()).await;
    let Ok(Ok(tree)) = tree else {
        return;
    };
    for b in buckets.iter_mut() {
        let path = crate::domain::category::path_in(&tree, &b.value);
        if !path.is_empty() {
            b.path = Some(crate::domain::category::display(&path));
        }
    }
}

/// Full-text search with typo tolerance, filters, facets and highlights. Anonymous callers
/// search published products; other statuses need a token. Pages go by number (at most
/// 10000 hits deep) or, for crawlers and feeds, after the `next_after` cursor of the previous
/// page (no depth limit).
#[utoipa::path(tag = "search", operation_id = "search", params(SearchParams),
    responses((status = 200, description = "A page of hits with facets", body = query::SearchResponse),
        problems::Limits, problems::OptionalToken, problems::Invalid),
    security((), ("bearer" = [])))]
#[get("/api/search")]
pub async fn search(caller: Caller, state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let mut r = validate(search_params(req.query_string())?, &caller)?;
    r.facet_attributes = facet_attributes(&state).await;
    let alias = state.names.index_alias();
    let bound = state.limits.search_timeout;
    let mut page = bounded(&state, query::search(&state.search, &alias, &r, bound)).await?;
    label_category_paths(&state, &mut page.facets.category_path).await;
    Ok(HttpResponse::Ok().json(page))
}

/// Query parameters of a suggest.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SuggestParams {
    /// What the user typed so far: 1 to 100 characters, not only white space.
    // Literal limits (see `category_under`): `REQUIRED_TEXT_PATTERN`, `MAX_PREFIX_CHARS`.
    #[param(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u0008\u000B\u000C\u000E-\u001F\u007F-\u009F]*$"
    )]
    pub q: String,
    /// Completions wanted.
    #[param(minimum = 1, maximum = 20, default = 8)]
    pub size: Option<u32>,
    /// Whose titles and brands complete: published products (the default); anything else
    /// needs a token.
    #[param(inline)]
    pub status: Option<StatusFilter>,
}

/// Validates suggest parameters into a [`SuggestRequest`].
fn validate_suggest(p: SuggestParams, caller: &Caller) -> Result<SuggestRequest, ApiError> {
    required_text("q", &p.q, MAX_PREFIX_CHARS)?;
    let size = p.size.unwrap_or(DEFAULT_SUGGEST_SIZE);
    if !(1..=MAX_SUGGEST_SIZE).contains(&size) {
        return Err(ApiError::field(
            "size",
            format!("must be between 1 and {MAX_SUGGEST_SIZE}"),
        ));
    }
    // Completions do not filter by owner: a seller completes from published products only.
    let statuses = match status_filter(p.status, caller)? {
        (_, Some(_)) => {
            return Err(ApiError::Forbidden(
                "a seller completes from published products only".into(),
            ))
        }
        (Some(s), None) => vec![s],
        (None, None) => vec![ProductStatus::Draft, ProductStatus::Published, ProductStatus::Archived],
    };
    Ok(SuggestRequest {
        // Leading blanks are no part of a word; a trailing one ends a word the user typed.
        prefix: p.q.trim_start().to_owned(),
        statuses: statuses.iter().map(|s| s.as_str().to_owned()).collect(),
        size,
    })
}

/// Completions of titles and brands that start with `q`, each text once, with a product
/// that has it. Anonymous callers complete from published products only.
#[utoipa::path(tag = "search", operation_id = "suggest", params(SuggestParams),
    responses((status = 200, description = "Completions, best first", body = completion::SuggestResponse),
        problems::Limits, problems::OptionalToken, problems::Invalid),
    security((), ("bearer" = [])))]
#[get("/api/search/suggest")]
pub async fn suggest(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<SuggestParams>,
) -> Result<HttpResponse, ApiError> {
    let r = validate_suggest(params.into_inner(), &caller)?;
    let alias = state.names.index_alias();
    let bound = state.limits.search_timeout;
    let answer = bounded(&state, completion::suggest(&state.search, &alias, &r, bound)).await?;
    Ok(HttpResponse::Ok().json(answer))
}

/// Registers the search endpoints.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(search).service(suggest);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anonymous(query: &str) -> Result<SearchRequest, ApiError> {
        validate(search_params(query)?, &Caller(None))
    }

    fn field(e: ApiError) -> String {
        match e {
            ApiError::Validation { errors, .. } => errors.first().map(|e| e.field.clone()).unwrap_or_default(),
            other => panic!("not a validation error: {other:?}"),
        }
    }

    #[test]
    fn option_and_attribute_filters_repeat_and_split_at_the_first_colon() {
        let r =
            anonymous("option=size:M&q=shirt&option=size%3AL&attribute=time:12:00&option=colour:+red").expect("valid");
        assert_eq!(r.q.as_deref(), Some("shirt"));
        let pair = |n: &str, v: &str| (n.to_owned(), v.to_owned());
        assert_eq!(
            r.options,
            vec![pair("size", "M"), pair("size", "L"), pair("colour", "red")]
        );
        assert_eq!(r.attributes, vec![pair("time", "12:00")]);
        assert_eq!(r.facet_attributes, None, "every attribute is a facet");
    }

    #[test]
    fn malformed_filters_and_repeated_single_parameters_are_refused() {
        for (query, expected) in [
            ("option=size", "option"),
            ("option=:M", "option"),
            ("attribute=material:", "attribute"),
            ("option=a%01:b", "option"),
            ("brand=a&brand=b", "query"),
        ] {
            assert_eq!(field(anonymous(query).expect_err(query)), expected, "{query}");
        }
        let many = vec!["option=a:b"; MAX_VALUE_FILTERS + 1].join("&");
        assert_eq!(field(anonymous(&many).expect_err("too many")), "option");
    }

    #[test]
    fn the_filter_pattern_is_what_the_server_accepts() {
        let pattern = name_value_pattern();
        assert!(pattern.starts_with("^[^:\\u0000-\\u0008"), "{pattern}");
        assert!(pattern.ends_with(":[^\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\u007F-\\u009F]{1,100}$"));
        assert!(name_value("option", &format!("{}:v", "n".repeat(100))).is_ok());
        assert!(name_value("option", &format!("{}:v", "n".repeat(101))).is_err());
        assert!(name_value("option", &format!("n:{}", "v".repeat(101))).is_err());
        assert!(name_value("option", "n:\tv").is_ok(), "tab is text");
    }

    #[test]
    fn a_cursor_goes_with_the_first_page_only_and_must_be_well_formed() {
        let cursor = Cursor::from_sort(serde_json::json!([1, "x"])).expect("cursor").encode();
        let r = anonymous(&format!("after={cursor}&page=1")).expect("first page");
        assert!(r.after.is_some());
        assert_eq!(
            field(anonymous(&format!("after={cursor}&page=2")).expect_err("page 2")),
            "after"
        );
        assert_eq!(field(anonymous("after=bm90LWpzb24").expect_err("not json")), "after");
        let scored = Cursor::from_sort(serde_json::json!([0.5, "x"]))
            .expect("cursor")
            .encode();
        assert!(anonymous(&format!("after={scored}&q=lamp")).is_ok(), "sorted by score");
        assert_eq!(
            field(anonymous(&format!("after={scored}")).expect_err("sorted by date")),
            "after"
        );
        assert!(
            anonymous("page=101&size=100").is_err(),
            "the window holds without after"
        );
    }

    #[test]
    fn suggest_wants_a_prefix_of_1_to_100_characters() {
        let p = |q: &str| SuggestParams {
            q: q.into(),
            size: None,
            status: None,
        };
        let r = validate_suggest(p("  Shi"), &Caller(None)).expect("valid");
        assert_eq!(
            (r.prefix.as_str(), r.size, r.statuses.as_slice()),
            ("Shi", 8, &["published".to_owned()][..])
        );
        assert!(validate_suggest(p("   "), &Caller(None)).is_err());
        assert!(validate_suggest(p(&"a".repeat(101)), &Caller(None)).is_err());
        let any = SuggestParams {
            status: Some(StatusFilter::Any),
            ..p("a")
        };
        assert!(matches!(
            validate_suggest(any, &Caller(None)),
            Err(ApiError::Unauthorized(_))
        ));
    }
}
