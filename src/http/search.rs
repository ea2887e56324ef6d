//! `GET /api/search`: full text with typo tolerance, filters, facets and highlights over the
//! `products` alias. Only published products unless a token holder asks for another status.
//!
//! The query is bounded by `SEARCH_REQUEST_TIMEOUT_MS`: a hung, unreachable or overloaded
//! (429/5xx) OpenSearch answers 503 problem+json with `Retry-After` within that bound.

use actix_web::{get, web, HttpResponse};
use serde::Deserialize;

use super::auth::{Access, Caller};
use super::contract::problems;
use super::{ApiError, AppState};
use crate::domain::product::{bounded_text, ProductStatus, KNOWN_CURRENCIES, SHORT_TEXT_MAX_CHARS};
use crate::search::query::{self, SearchRequest, SortOrder, MAX_PAGE_SIZE, MAX_WINDOW};
use crate::search::SearchError;

/// Longest free-text query, in characters.
pub const MAX_QUERY_CHARS: usize = 200;

/// The schema of `q`.
fn query_text() -> utoipa::openapi::Object {
    super::contract::fields::text(MAX_QUERY_CHARS)
}

/// Query parameters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Free text over title, description and brand (never query syntax).
    #[param(schema_with = query_text)]
    pub q: Option<String>,
    /// Category filter.
    #[param(schema_with = super::contract::fields::short_text)]
    pub category: Option<String>,
    /// Brand filter.
    #[param(schema_with = super::contract::fields::short_text)]
    pub brand: Option<String>,
    /// Currency of the price filter and sort (ISO 4217): a product's lowest price in it over
    /// its variants; only products with a price in it match. Without it, the first variant's
    /// first price.
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
    /// 1-based page; `page * size` must not exceed 10000.
    #[param(minimum = 1, maximum = 10000, default = 1)]
    pub page: Option<u32>,
    /// Page size.
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub size: Option<u32>,
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

/// Validates parameters into a [`SearchRequest`].
fn validate(p: SearchParams, access: Access) -> Result<SearchRequest, ApiError> {
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
            format!("must be >= 1 with page * size <= {MAX_WINDOW}"),
        ));
    }
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
    let q = text("q", p.q, MAX_QUERY_CHARS)?;
    let category = text("category", p.category, SHORT_TEXT_MAX_CHARS)?;
    let brand = text("brand", p.brand, SHORT_TEXT_MAX_CHARS)?;
    let status = match p.status.unwrap_or(StatusFilter::Published) {
        StatusFilter::Published => Some(ProductStatus::Published),
        _ if !access.sees_unpublished() => {
            return Err(ApiError::Unauthorized(
                "searching beyond published products needs a bearer token".into(),
            ))
        }
        StatusFilter::Any => None,
        StatusFilter::Draft => Some(ProductStatus::Draft),
        StatusFilter::Archived => Some(ProductStatus::Archived),
    }
    .map(|s| s.as_str().to_owned());
    if let Some(c) = p.currency.as_deref().filter(|c| !KNOWN_CURRENCIES.contains(c)) {
        return Err(ApiError::field("currency", format!("unknown ISO 4217 currency {c:?}")));
    }
    Ok(SearchRequest {
        q,
        category,
        brand,
        currency: p.currency,
        min_price: p.min_price,
        max_price: p.max_price,
        in_stock: p.in_stock,
        status,
        sort: p.sort.unwrap_or_default(),
        page,
        size,
    })
}

/// Full-text search with typo tolerance, filters, facets and highlights. Anonymous callers
/// search published products; other statuses need a token.
#[utoipa::path(tag = "search", operation_id = "search", params(SearchParams),
    responses((status = 200, description = "A page of hits with facets", body = query::SearchResponse),
        problems::Limits, problems::OptionalToken, problems::Invalid),
    security((), ("bearer" = [])))]
#[get("/api/search")]
pub async fn search(
    caller: Caller,
    state: web::Data<AppState>,
    params: web::Query<SearchParams>,
) -> Result<HttpResponse, ApiError> {
    let r = validate(params.into_inner(), caller.0)?;
    let alias = state.names.index_alias();
    let bound = state.limits.search_timeout;
    let down = |cause: String| ApiError::DependencyDown {
        dependency: "search",
        cause,
    };
    // The transport has its own timeout; the outer one also bounds connecting and reading.
    let page = tokio::time::timeout(bound, query::search(&state.search, &alias, &r, bound))
        .await
        .map_err(|_| down(format!("no answer from OpenSearch within {}ms", bound.as_millis())))?
        .map_err(|e| match e {
            SearchError::Status { status, body } if status != 429 && status < 500 => {
                ApiError::Internal(format!("search answered {status}: {body}"))
            }
            e => down(e.to_string()),
        })?;
    Ok(HttpResponse::Ok().json(page))
}

/// Registers the search endpoint.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(search);
}
