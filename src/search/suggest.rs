//! Completions of titles and brands as a user types, from the `completion` field `suggest`
//! (each product's title and brand, with its status as the `status` category context). The
//! statuses asked for are always sent as contexts: published only for anonymous callers, any
//! status for a token holder who asks. Completions match the start of a title or a brand
//! (after lower-casing), are deduplicated by text, and name one product each.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;
use uuid::Uuid;

use super::{SearchClient, SearchError};

/// Most completions a client may ask for.
pub const MAX_SUGGEST_SIZE: u32 = 20;
/// Completions when the client does not say.
pub const DEFAULT_SUGGEST_SIZE: u32 = 8;
/// Longest prefix, in characters.
pub const MAX_PREFIX_CHARS: usize = 100;
/// Name of the suggester in the request and the answer.
const SUGGESTER: &str = "products";

/// A validated suggest request.
#[derive(Debug, Clone)]
pub struct SuggestRequest {
    /// What the user typed so far (1..=MAX_PREFIX_CHARS characters).
    pub prefix: String,
    /// Statuses whose products may complete (the `status` contexts), at least one.
    pub statuses: Vec<String>,
    /// Completions wanted, 1..=MAX_SUGGEST_SIZE.
    pub size: u32,
}

/// The OpenSearch body for `r`: a completion suggester only (no hits, no source).
pub fn build(r: &SuggestRequest) -> Value {
    json!({
        "_source": false,
        "suggest": {
            SUGGESTER: {
                "prefix": r.prefix,
                "completion": {
                    "field": "suggest",
                    "size": r.size,
                    "skip_duplicates": true,
                    "contexts": { "status": r.statuses }
                }
            }
        }
    })
}

/// One completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Suggestion {
    /// The completed title or brand.
    pub text: String,
    /// A product with it (the best scored one).
    pub product_id: Uuid,
}

/// The completions of a prefix, best first.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct SuggestResponse {
    /// Completions, each text once.
    pub suggestions: Vec<Suggestion>,
}

/// A `_search` answer with suggestions, as far as this code reads it.
#[derive(Debug, Default, Deserialize)]
pub struct SuggestAnswer {
    /// Entries by suggester name.
    #[serde(default)]
    pub suggest: BTreeMap<String, Vec<SuggestEntry>>,
}

/// The suggestions of one suggester for one piece of text.
#[derive(Debug, Default, Deserialize)]
pub struct SuggestEntry {
    /// Its completions.
    #[serde(default)]
    pub options: Vec<SuggestOption>,
}

/// One completion of a [`SuggestEntry`].
#[derive(Debug, Deserialize)]
pub struct SuggestOption {
    /// The input that matched.
    pub text: String,
    /// The document it came from.
    #[serde(rename = "_id")]
    pub id: String,
}

/// Reads an answer: each text once, in order, up to `size`.
pub fn parse(r: &SuggestRequest, answer: SuggestAnswer) -> SuggestResponse {
    let mut seen = HashSet::new();
    let suggestions = answer
        .suggest
        .into_values()
        .flatten()
        .flat_map(|e| e.options)
        .filter_map(|o| {
            let product_id = o.id.parse().ok()?;
            seen.insert(o.text.clone()).then_some(Suggestion {
                text: o.text,
                product_id,
            })
        })
        .take(r.size as usize)
        .collect();
    SuggestResponse { suggestions }
}

/// Runs `r` against `index` (an alias), bounded by `timeout`. An index that does not exist
/// yet answers no completions.
pub async fn suggest(
    client: &SearchClient,
    index: &str,
    r: &SuggestRequest,
    timeout: Duration,
) -> Result<SuggestResponse, SearchError> {
    match client.search_in(index, &build(r), timeout).await? {
        None => Ok(SuggestResponse::default()),
        Some(answer) => Ok(parse(r, answer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(size: u32) -> SuggestRequest {
        SuggestRequest {
            prefix: "sh".into(),
            statuses: vec!["published".into()],
            size,
        }
    }

    #[test]
    fn the_statuses_asked_for_are_the_suggesters_contexts() {
        let body = build(&request(8));
        assert_eq!(body.pointer("/suggest/products/prefix"), Some(&json!("sh")));
        assert_eq!(
            body.pointer("/suggest/products/completion/contexts/status"),
            Some(&json!(["published"]))
        );
        assert_eq!(body.pointer("/suggest/products/completion/size"), Some(&json!(8)));
    }

    #[test]
    fn completions_are_deduplicated_by_text() {
        let id = |n: u128| Uuid::from_u128(n).to_string();
        let answer: SuggestAnswer = serde_json::from_value(json!({"suggest": {"products": [{"text": "sh", "options": [
            {"text": "Shirt", "_id": id(1)}, {"text": "Shirt", "_id": id(2)},
            {"text": "Shoes", "_id": "not-a-uuid"}, {"text": "Shorts", "_id": id(3)}, {"text": "Shawl", "_id": id(4)}
        ]}]}}))
        .expect("answer");
        let texts: Vec<(String, Uuid)> = parse(&request(2), answer)
            .suggestions
            .into_iter()
            .map(|s| (s.text, s.product_id))
            .collect();
        assert_eq!(
            texts,
            vec![
                ("Shirt".into(), Uuid::from_u128(1)),
                ("Shorts".into(), Uuid::from_u128(3))
            ]
        );
    }
}
