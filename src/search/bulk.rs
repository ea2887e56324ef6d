//! The bulk indexer. Documents are versioned externally by the event's aggregate_version with
//! `version_type=external_gte`: an older event never overwrites a newer document, the same
//! version is rewritten (so a replay after a projection fix takes effect), and a version
//! conflict means "already applied". Each item of the response is classified on its own, as
//! vector's Elasticsearch sink does: applied, conflict, retryable (429, 5xx) or rejected
//! (mapping or parse errors: a poison document for the DLQ).

use opensearch::params::VersionType;
use opensearch::{BulkOperation, BulkOperations, BulkParts};
use serde_json::Value;
use uuid::Uuid;

use super::client::decode;
use super::{SearchClient, SearchError};

/// One document to index.
#[derive(Debug, Clone)]
pub struct BulkItem {
    /// Document id (product id).
    pub id: Uuid,
    /// External version (aggregate_version).
    pub version: i64,
    /// The whole document.
    pub doc: Value,
}

/// What happened to one item.
#[derive(Debug, Clone, PartialEq)]
pub enum ItemResult {
    /// Written.
    Applied,
    /// A newer version is already there: nothing to do.
    AlreadyApplied,
    /// Try again later (429, 5xx).
    Retryable(String),
    /// OpenSearch refuses this document (mapping/parse error); the error body.
    Rejected(String),
}

/// The part of a `_bulk` response item this indexer reads (`{"index": {"status", "error"}}`).
#[derive(Debug, serde::Deserialize)]
struct ItemOutcome {
    #[serde(default)]
    status: u16,
    #[serde(default)]
    error: Option<Value>,
}

/// The part of a `_bulk` response this indexer reads.
#[derive(Debug, serde::Deserialize)]
struct BulkResponse {
    #[serde(default)]
    errors: bool,
    items: Vec<std::collections::HashMap<String, ItemOutcome>>,
}

/// Classifies one bulk response item by status.
pub fn classify(item: &Value) -> ItemResult {
    let op: Option<std::collections::HashMap<String, ItemOutcome>> = serde_json::from_value(item.clone()).ok();
    match op.and_then(|m| m.into_values().next()) {
        Some(o) => classify_outcome(&o),
        None => ItemResult::Rejected("unreadable bulk item".into()),
    }
}

fn classify_outcome(op: &ItemOutcome) -> ItemResult {
    let error = op.error.as_ref().map(Value::to_string).unwrap_or_default();
    match op.status {
        200..=299 => ItemResult::Applied,
        409 => ItemResult::AlreadyApplied,
        429 | 500..=599 => ItemResult::Retryable(error),
        status => ItemResult::Rejected(if error.is_empty() {
            format!("status {status}")
        } else {
            error
        }),
    }
}

/// Indexes `items` into `index` (an alias with one index works); results in input order.
pub async fn index_items(
    client: &SearchClient,
    index: &str,
    items: &[BulkItem],
) -> Result<Vec<ItemResult>, SearchError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let mut ops = BulkOperations::new();
    for it in items {
        ops.push(
            BulkOperation::index(&it.doc)
                .index(index)
                .id(it.id.to_string())
                .version(it.version)
                .version_type(VersionType::ExternalGte),
        )
        .map_err(|e| SearchError::Decode(format!("bulk body: {e}")))?;
    }
    let ops = &ops;
    let resp = client
        .call(|os| async move { os.bulk(BulkParts::None).body(vec![ops]).send().await })
        .await?;
    let resp: BulkResponse = decode(resp).await?;
    let results: Vec<ItemResult> = if resp.errors {
        resp.items
            .iter()
            .map(|m| {
                m.values()
                    .next()
                    .map_or_else(|| ItemResult::Rejected("empty bulk item".into()), classify_outcome)
            })
            .collect()
    } else {
        // No item failed: nothing to classify.
        vec![ItemResult::Applied; resp.items.len()]
    };
    if results.len() != items.len() {
        return Err(SearchError::Decode(format!(
            "bulk answered {} items for {}",
            results.len(),
            items.len()
        )));
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn items_are_classified_by_status() {
        assert_eq!(classify(&json!({"index": {"status": 201}})), ItemResult::Applied);
        assert_eq!(
            classify(&json!({"index": {"status": 409, "error": {}}})),
            ItemResult::AlreadyApplied
        );
        assert!(matches!(
            classify(&json!({"index": {"status": 429, "error": {}}})),
            ItemResult::Retryable(_)
        ));
        assert!(matches!(
            classify(&json!({"index": {"status": 503}})),
            ItemResult::Retryable(_)
        ));
        assert!(matches!(
            classify(&json!({"index": {"status": 400, "error": {"type": "mapper_parsing_exception"}}})),
            ItemResult::Rejected(e) if e.contains("mapper_parsing_exception")
        ));
    }
}
