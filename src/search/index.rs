//! Index mapping and the alias. The API queries the alias `products`; the projection writes
//! through it to the concrete index `products_vN`, so a rebuild can swap it atomically.

use opensearch::indices::{IndicesCreateParts, IndicesDeleteParts, IndicesGetAliasParts, IndicesRefreshParts};
use serde::de::IgnoredAny;
use serde_json::{json, Value};
use std::collections::BTreeMap;

use super::client::{accepted, decode, ErrorBody};
use super::{SearchClient, SearchError};
use crate::config::OpenSearchSettings;
use crate::domain::product::KNOWN_CURRENCIES;

/// How a products index the binary creates is spread: primary shards
/// (`OPENSEARCH_INDEX_SHARDS`) and replicas of each (`OPENSEARCH_INDEX_REPLICAS`). An existing
/// index keeps its own; `replay --rebuild` makes a new one with these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexLayout {
    /// Primary shards: the most nodes that share the indexing work of one index.
    pub shards: u32,
    /// Copies of each primary on other nodes (survive a node's loss, serve more searches).
    pub replicas: u32,
    /// How often writes become searchable (`OPENSEARCH_REFRESH_INTERVAL_MS`): shorter means
    /// fresher search and more, smaller segments to merge (less indexing throughput).
    pub refresh_interval_ms: u64,
}

impl Default for IndexLayout {
    /// One shard, no replica: the single-node local stack.
    fn default() -> Self {
        Self {
            shards: 1,
            replicas: 0,
            refresh_interval_ms: 1000,
        }
    }
}

impl IndexLayout {
    /// The layout `settings` ask for.
    pub fn from_settings(settings: &OpenSearchSettings) -> Self {
        Self {
            shards: settings.index_shards,
            replicas: settings.index_replicas,
            refresh_interval_ms: settings.refresh_interval_ms,
        }
    }
}

/// Settings and explicit mapping of a products index laid out as `layout`. Fields are only
/// ever added ([`put_mapping`] adds them to an index an older binary made; a changed type
/// would need `replay --rebuild`): `option_values` and `attribute_values` (`name=value`
/// keywords of the option and attribute facets) and `suggest` (completion of titles and
/// brands, with the product's status as a category context) came with facets and suggest.
/// `refresh_interval` is explicit: idle shards otherwise stop refreshing after 30 s without
/// searches. It is dynamic: `PUT <alias>/_settings` changes an existing index's.
pub fn index_body(layout: IndexLayout) -> Value {
    json!({
        "settings": {
            "number_of_shards": layout.shards,
            "number_of_replicas": layout.replicas,
            "refresh_interval": format!("{}ms", layout.refresh_interval_ms),
            "analysis": {
                "analyzer": {
                    "product_text": { "type": "custom", "tokenizer": "standard",
                                      "filter": ["lowercase", "asciifolding"] }
                }
            }
        },
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "id": { "type": "keyword" },
                "sku": { "type": "keyword" },
                "title": { "type": "text", "analyzer": "product_text",
                           "fields": { "raw": { "type": "keyword", "ignore_above": 256 } } },
                "description": { "type": "text", "analyzer": "product_text" },
                "category": { "type": "keyword" },
                "brand": { "type": "keyword", "fields": { "text": { "type": "text", "analyzer": "product_text" } } },
                "attributes": { "type": "flat_object" },
                "owner": { "type": "keyword" },
                "product_type": { "type": "keyword" },
                "category_path": { "type": "keyword" },
                "options": { "type": "flat_object" },
                "option_values": { "type": "keyword" },
                "attribute_values": { "type": "keyword" },
                "suggest": { "type": "completion",
                             "contexts": [{ "name": "status", "type": "category" }] },
                "prices": { "properties": price_fields() },
                "variant_count": { "type": "integer" },
                "price_minor": { "type": "long" },
                "currency": { "type": "keyword" },
                "stock": { "type": "long" },
                "in_stock": { "type": "boolean" },
                "status": { "type": "keyword" },
                "version": { "type": "long" },
                "created_at": { "type": "date" },
                "updated_at": { "type": "date" }
            }
        }
    })
}

/// One `long` per accepted currency: `prices.USD` is the lowest price of any variant in USD.
fn price_fields() -> Value {
    KNOWN_CURRENCIES
        .iter()
        .map(|c| ((*c).to_owned(), json!({ "type": "long" })))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

/// Adds the mapping's fields that `index` lacks (an index made by an older binary), so the
/// documents of this binary fit it while `replay --rebuild` has not moved to a new index yet.
/// Adding fields is online in OpenSearch; a field whose type changed is an error here.
pub async fn put_mapping(client: &SearchClient, index: &str) -> Result<(), SearchError> {
    let body = &index_body(IndexLayout::default())["mappings"];
    let resp = client
        .call(|os| async move {
            os.indices()
                .put_mapping(opensearch::indices::IndicesPutMappingParts::Index(&[index]))
                .body(body)
                .send()
                .await
        })
        .await?;
    accepted(resp).await
}

/// The concrete index the alias points at, if the alias exists.
pub async fn alias_target(client: &SearchClient, alias: &str) -> Result<Option<String>, SearchError> {
    let resp = client
        .call(|os| async move {
            os.indices()
                .get_alias(IndicesGetAliasParts::Name(&[alias]))
                .send()
                .await
        })
        .await?;
    if resp.status_code().as_u16() == 404 {
        return Ok(None);
    }
    // `{"<index>": {"aliases": {"<alias>": {}}}}`, one entry per index the alias points at.
    let targets: BTreeMap<String, IgnoredAny> = decode(resp).await?;
    Ok(targets.into_keys().next())
}

/// Creates `index` with the mapping, laid out as `layout` (an existing index is fine).
pub async fn create_index(client: &SearchClient, index: &str, layout: IndexLayout) -> Result<(), SearchError> {
    let body = &index_body(layout);
    let resp = client
        .call(|os| async move {
            os.indices()
                .create(IndicesCreateParts::Index(index))
                .body(body)
                .send()
                .await
        })
        .await?;
    match accepted(resp).await {
        Err(SearchError::Status { body, .. })
            if serde_json::from_str::<ErrorBody>(&body)
                .ok()
                .and_then(|b| b.error)
                .is_some_and(|e| e.kind == "resource_already_exists_exception") =>
        {
            Ok(())
        }
        r => r,
    }
}

/// Makes sure `alias` exists, creating `<alias>_v1` (laid out as `layout`) behind it on
/// first use. Returns the concrete index.
pub async fn ensure_alias(client: &SearchClient, alias: &str, layout: IndexLayout) -> Result<String, SearchError> {
    if let Some(target) = alias_target(client, alias).await? {
        put_mapping(client, &target).await?;
        return Ok(target);
    }
    let index = format!("{alias}_v1");
    create_index(client, &index, layout).await?;
    update_aliases(client, vec![json!({ "add": { "index": index, "alias": alias } })]).await?;
    Ok(index)
}

/// Points `alias` at `new` and away from `old` in one atomic request.
pub async fn swap_alias(client: &SearchClient, alias: &str, old: Option<&str>, new: &str) -> Result<(), SearchError> {
    let mut actions = vec![json!({ "add": { "index": new, "alias": alias } })];
    if let Some(old) = old {
        actions.insert(0, json!({ "remove": { "index": old, "alias": alias } }));
    }
    update_aliases(client, actions).await
}

/// Applies alias `actions` in one atomic `POST /_aliases`.
async fn update_aliases(client: &SearchClient, actions: Vec<Value>) -> Result<(), SearchError> {
    let body = &json!({ "actions": actions });
    let resp = client
        .call(|os| async move { os.indices().update_aliases().body(body).send().await })
        .await?;
    accepted(resp).await
}

/// Refreshes an index or alias so recent writes are searchable (tests, rebuild).
pub async fn refresh(client: &SearchClient, target: &str) -> Result<(), SearchError> {
    let resp = client
        .call(|os| async move { os.indices().refresh(IndicesRefreshParts::Index(&[target])).send().await })
        .await?;
    accepted(resp).await
}

/// Deletes `index` (a missing one is fine).
pub async fn delete_index(client: &SearchClient, index: &str) -> Result<(), SearchError> {
    let resp = client
        .call(|os| async move { os.indices().delete(IndicesDeleteParts::Index(&[index])).send().await })
        .await?;
    match accepted(resp).await {
        Err(SearchError::Status { status: 404, .. }) => Ok(()),
        r => r,
    }
}
