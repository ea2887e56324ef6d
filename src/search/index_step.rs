//! The projection's OpenSearch step: one bulk request for a batch of product states (or one
//! request per item, to find the culprit of a request refused as a whole), classified per item
//! ([`ItemResult`]). The caller retries what is retryable and dead-letters what is refused.

use std::time::{Duration, Instant};

use crate::failure::{Classify, FailureClass};
use crate::search::bulk::{index_items, BulkItem, ItemResult};
use crate::search::{SearchClient, SearchError};
use crate::telemetry::metrics::PROJECTION_BULK_DURATION;

/// True when OpenSearch refused a bulk request as a whole for what it carries (400 bad
/// request, 413 too large): a document's fault, found by sending items one by one. Other
/// refusals (401, 403, 404, ...) are about the endpoint, credentials or index.
pub fn refusal_of_documents(e: &SearchError) -> bool {
    matches!(e, SearchError::Status { status: 400 | 413, .. })
}

/// Where and how the projection indexes.
pub struct IndexStep<'a> {
    /// OpenSearch.
    pub search: &'a SearchClient,
    /// Index or alias written to.
    pub index: &'a str,
    /// Bounds the bulk requests in flight across a process's partition lanes, if set.
    pub permits: Option<&'a tokio::sync::Semaphore>,
    /// Benchmark only (zero in production): added to every bulk request.
    pub bench_modelled_bulk_latency: Duration,
}

/// What one [`IndexStep::bulk`] answered.
pub struct BulkAnswer {
    /// One result per item, in order.
    pub results: Vec<ItemResult>,
    /// OpenSearch refused a multi-item request as a whole for its documents: send the items
    /// one by one to find the culprit.
    pub whole_request_refused: bool,
}

impl IndexStep<'_> {
    /// One bulk request for `items` (or one request per item), classified per item. A request
    /// that fails as a whole gives every item the same result: retryable when the failure is
    /// transient, otherwise rejected only when the request held a single item (else
    /// `whole_request_refused` asks the caller to split it).
    pub async fn bulk(&self, items: &[BulkItem], one_by_one: bool) -> BulkAnswer {
        let mut answer = BulkAnswer {
            results: Vec::with_capacity(items.len()),
            whole_request_refused: false,
        };
        let chunks: Vec<&[BulkItem]> = if one_by_one {
            items.chunks(1).collect()
        } else {
            vec![items]
        };
        for chunk in chunks {
            let _permit = match self.permits {
                Some(p) => Some(p.acquire().await.expect("the semaphore is never closed")),
                None => None,
            };
            let started = Instant::now();
            let r = index_items(self.search, self.index, chunk).await;
            if !self.bench_modelled_bulk_latency.is_zero() {
                tokio::time::sleep(self.bench_modelled_bulk_latency).await;
            }
            PROJECTION_BULK_DURATION.observe(started.elapsed().as_secs_f64());
            match r {
                Ok(rs) => answer.results.extend(rs),
                Err(e) => {
                    let about_documents = refusal_of_documents(&e);
                    if about_documents && chunk.len() == 1 {
                        answer.results.push(ItemResult::Rejected(e.to_string()));
                        continue;
                    }
                    if about_documents {
                        tracing::warn!(error = %e, "bulk request refused as a whole; retrying item by item");
                        answer.whole_request_refused = true;
                    } else if e.failure_class() == FailureClass::Permanent {
                        // 401/403/404/405...: the endpoint, credentials or index are wrong, not
                        // the documents; dead-lettering would empty the stream.
                        tracing::error!(error = %e, "OpenSearch refuses the projection's requests (check OPENSEARCH_URL, credentials, the index); will retry");
                    } else {
                        tracing::warn!(error = %e, "bulk request failed; will retry");
                    }
                    answer
                        .results
                        .extend(chunk.iter().map(|_| ItemResult::Retryable(e.to_string())));
                }
            }
        }
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(status: u16) -> SearchError {
        SearchError::Status {
            status,
            body: String::new(),
        }
    }

    #[test]
    fn only_bad_request_and_too_large_blame_the_documents() {
        // Issue 9, defect 3: a permanent refusal went round the retry loop like a 429; now a
        // document's refusal is found item by item and dead-lettered, while an endpoint's
        // refusal (wrong URL, credentials) never dead-letters the stream.
        assert!(refusal_of_documents(&status(400)));
        assert!(refusal_of_documents(&status(413)));
        for s in [401, 403, 404, 405, 429, 500, 503] {
            assert!(!refusal_of_documents(&status(s)), "{s}");
        }
        assert!(!refusal_of_documents(&SearchError::Transport("refused".into())));
    }
}
