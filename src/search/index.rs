//! Index mapping and the alias. The API queries the alias `products`; the projection writes
//! through it to the concrete index `products_vN`, so a rebuild can swap it atomically.

use opensearch::http::Method;
use serde_json::{json, Value};

use super::{SearchClient, SearchError};
use crate::config::OpenSearchSettings;

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

/// Settings and explicit mapping of a products index laid out as `layout`.
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

/// The concrete index the alias points at, if the alias exists.
pub async fn alias_target(client: &SearchClient, alias: &str) -> Result<Option<String>, SearchError> {
    let (status, v) = client
        .request(Method::Get, &format!("/_alias/{alias}"), None, None)
        .await?;
    if status == 404 {
        return Ok(None);
    }
    if status >= 300 {
        return Err(SearchError::Status {
            status,
            body: v.to_string(),
        });
    }
    Ok(v.as_object().and_then(|o| o.keys().next().cloned()))
}

/// Creates `index` with the mapping, laid out as `layout` (an existing index is fine).
pub async fn create_index(client: &SearchClient, index: &str, layout: IndexLayout) -> Result<(), SearchError> {
    let (status, v) = client
        .request(Method::Put, &format!("/{index}"), Some(index_body(layout)), None)
        .await?;
    let exists = v.pointer("/error/type").and_then(Value::as_str) == Some("resource_already_exists_exception");
    if status >= 300 && !exists {
        return Err(SearchError::Status {
            status,
            body: v.to_string(),
        });
    }
    Ok(())
}

/// Makes sure `alias` exists, creating `<alias>_v1` (laid out as `layout`) behind it on
/// first use. Returns the concrete index.
pub async fn ensure_alias(client: &SearchClient, alias: &str, layout: IndexLayout) -> Result<String, SearchError> {
    if let Some(target) = alias_target(client, alias).await? {
        return Ok(target);
    }
    let index = format!("{alias}_v1");
    create_index(client, &index, layout).await?;
    client
        .ok(
            Method::Post,
            "/_aliases",
            Some(json!({ "actions": [ { "add": { "index": index, "alias": alias } } ] })),
        )
        .await?;
    Ok(index)
}

/// Points `alias` at `new` and away from `old` in one atomic request.
pub async fn swap_alias(client: &SearchClient, alias: &str, old: Option<&str>, new: &str) -> Result<(), SearchError> {
    let mut actions = vec![json!({ "add": { "index": new, "alias": alias } })];
    if let Some(old) = old {
        actions.insert(0, json!({ "remove": { "index": old, "alias": alias } }));
    }
    client
        .ok(Method::Post, "/_aliases", Some(json!({ "actions": actions })))
        .await?;
    Ok(())
}

/// Refreshes an index or alias so recent writes are searchable (tests, rebuild).
pub async fn refresh(client: &SearchClient, target: &str) -> Result<(), SearchError> {
    client.ok(Method::Post, &format!("/{target}/_refresh"), None).await?;
    Ok(())
}
