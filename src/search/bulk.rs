//! The bulk indexer. Documents are versioned externally by the event's aggregate_version with
//! `version_type=external_gte`: an older event never overwrites a newer document, the same
//! version is rewritten (so a replay after a projection fix takes effect), and a version
//! conflict means "already applied". Each item of the response is classified on its own, as
//! vector's Elasticsearch sink does: applied, conflict, retryable (429, 5xx) or rejected
//! (mapping or parse errors: a poison document for the DLQ).

use serde_json::{json, Value};
use uuid::Uuid;

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

/// Classifies one bulk response item by status.
pub fn classify(item: &Value) -> ItemResult {
    let op = item
        .as_object()
        .and_then(|o| o.values().next())
        .cloned()
        .unwrap_or(Value::Null);
    let status = op.get("status").and_then(Value::as_u64).unwrap_or(0);
    let error = op.get("error").map(Value::to_string).unwrap_or_default();
    match status {
        200..=299 => ItemResult::Applied,
        409 => ItemResult::AlreadyApplied,
        429 | 500..=599 => ItemResult::Retryable(error),
        _ => ItemResult::Rejected(if error.is_empty() {
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
    let mut lines = Vec::with_capacity(items.len() * 2);
    for it in items {
        lines.push(json!({ "index": { "_index": index, "_id": it.id, "version": it.version, "version_type": "external_gte" } }));
        lines.push(it.doc.clone());
    }
    let resp = client.bulk(lines).await?;
    let results: Vec<ItemResult> = resp
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| SearchError::Decode("bulk response without items".into()))?
        .iter()
        .map(classify)
        .collect();
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
