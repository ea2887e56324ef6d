//! `Idempotency-Key` on product writes (IETF httpapi "The Idempotency-Key HTTP Header
//! Field" draft). A key is scoped to the caller (a SHA-256 of its bearer token) and the route
//! (`METHOD /path`); its record is written in the write's own transaction
//! (`store::idempotency_repo`), so:
//!
//! - same key, same body: the first response (status, ETag/Location, body) is replayed with
//!   `Idempotent-Replayed: true`, and nothing is applied again, even when the first answer was
//!   lost after its commit;
//! - same key, another body: 422 problem+json;
//! - same key while the first request is still in its transaction: 409 problem+json;
//! - only successful (2xx) writes are recorded: a request that failed applied nothing, so a
//!   retry with the same key runs it again;
//! - records live `IDEMPOTENCY_KEY_TTL_SECS` (24 h by default) and are pruned by `serve`
//!   every `IDEMPOTENCY_PRUNE_INTERVAL_SECS`.

use actix_web::http::header;
use actix_web::HttpRequest;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::time::Duration;

use super::ApiError;
use crate::store::idempotency_repo::{self, IdempotencyScope};
use crate::store::{pool, PgPool};
use crate::telemetry::metrics;

/// Request header carrying the key.
pub const IDEMPOTENCY_KEY_HEADER: &str = "Idempotency-Key";
/// Response header set on a replayed answer.
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// Records deleted per statement while pruning.
const PRUNE_BATCH: i64 = 1000;

/// The request's key, if any: a structured-field string (`"abc"`) or a bare token, at most 255
/// printable ASCII characters with at least one that is neither a space nor a quote; anything
/// else is a 400.
pub fn key(req: &HttpRequest) -> Result<Option<String>, ApiError> {
    let Some(v) = req.headers().get(IDEMPOTENCY_KEY_HEADER) else {
        return Ok(None);
    };
    let bad = || {
        ApiError::Malformed(format!(
            "{IDEMPOTENCY_KEY_HEADER} must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))
    };
    let raw = v.to_str().map_err(|_| bad())?.trim();
    // The same rule as the OpenAPI pattern: printable ASCII, at most 255 characters as sent,
    // at least one that is neither a space nor a quote.
    if raw.len() > MAX_KEY_LEN
        || !raw.bytes().all(|b| b.is_ascii_graphic() || b == b' ')
        || !raw.bytes().any(|b| b.is_ascii_graphic() && b != b'"')
    {
        return Err(bad());
    }
    let k = raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(raw);
    Ok(Some(k.to_owned()))
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The key's scope: who (a digest of the caller's subject, so a refreshed token of the same
/// caller replays its writes), which route, which key.
pub fn scope(req: &HttpRequest, caller: &crate::domain::access::Principal, key: String) -> IdempotencyScope {
    IdempotencyScope {
        principal: sha256_hex(caller.subject.as_bytes()),
        route: format!("{} {}", req.method(), req.path()),
        key,
    }
}

/// Digest of the request: its validated body in canonical JSON (keys sorted, so spacing and
/// key order do not matter) and its `If-Match`.
pub fn fingerprint(req: &HttpRequest, body: &impl Serialize) -> Result<String, ApiError> {
    let canonical = canonical(serde_json::to_value(body).map_err(|e| ApiError::Internal(e.to_string()))?);
    let if_match = req
        .headers()
        .get(header::IF_MATCH)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    let mut buf = serde_json::to_vec(&canonical).map_err(|e| ApiError::Internal(e.to_string()))?;
    buf.push(b'\n');
    buf.extend_from_slice(if_match);
    Ok(sha256_hex(&buf))
}

/// `v` with every object's keys in sorted order, whatever the map type of `serde_json`.
fn canonical(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut entries: Vec<_> = m.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            serde_json::Value::Object(entries.into_iter().map(|(k, v)| (k, canonical(v))).collect())
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.into_iter().map(canonical).collect()),
        other => other,
    }
}

/// Deletes expired records every `every`, for as long as the process runs.
pub async fn prune_periodically(pool: PgPool, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match prune_once(&pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "pruned expired idempotency keys"),
            Err(e) => tracing::warn!(error = %e, "pruning idempotency keys failed; next try in {}s", every.as_secs()),
        }
    }
}

/// Deletes every expired record, in batches; returns how many.
pub async fn prune_once(pool: &PgPool) -> Result<usize, crate::store::StoreError> {
    let mut conn = pool::get(pool).await?;
    let mut total = 0;
    loop {
        let n = idempotency_repo::prune_expired(&mut conn, PRUNE_BATCH).await?;
        total += n;
        metrics::IDEMPOTENCY_PRUNED.inc_by(n as u64);
        if (n as i64) < PRUNE_BATCH {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn keys_may_be_quoted_and_must_be_visible_ascii() {
        let r = TestRequest::default()
            .insert_header((IDEMPOTENCY_KEY_HEADER, "\"8e03978e-40d5\""))
            .to_http_request();
        assert_eq!(key(&r).ok().flatten().as_deref(), Some("8e03978e-40d5"));
        let r = TestRequest::default()
            .insert_header((IDEMPOTENCY_KEY_HEADER, "\"\""))
            .to_http_request();
        assert!(key(&r).is_err());
        let long = "k".repeat(MAX_KEY_LEN + 1);
        let r = TestRequest::default()
            .insert_header((IDEMPOTENCY_KEY_HEADER, long))
            .to_http_request();
        assert!(key(&r).is_err());
        assert!(key(&TestRequest::default().to_http_request()).ok().flatten().is_none());
    }

    #[test]
    fn the_scope_never_holds_the_subject_and_separates_callers_and_routes() {
        use crate::domain::access::{Principal, Roles};
        let who = |s: &str| Principal {
            subject: s.into(),
            roles: Roles::NONE,
            seller: None,
        };
        let a = TestRequest::post().uri("/api/products/1/price").to_http_request();
        let b = TestRequest::post().uri("/api/products/2/price").to_http_request();
        let sa = scope(&a, &who("key:seller-a"), "k".into());
        assert!(!sa.principal.contains("seller-a"));
        assert_ne!(sa.principal, scope(&a, &who("key:seller-b"), "k".into()).principal);
        assert_eq!(sa.principal, scope(&b, &who("key:seller-a"), "k".into()).principal);
        assert_ne!(sa.route, scope(&b, &who("key:seller-a"), "k".into()).route);
        assert_eq!(sa.route, "POST /api/products/1/price");
    }

    #[test]
    fn the_fingerprint_ignores_key_order_but_not_values() {
        let r = TestRequest::default().to_http_request();
        let a = fingerprint(&r, &serde_json::json!({"a": 1, "b": 2})).ok();
        let b = fingerprint(&r, &serde_json::json!({"b": 2, "a": 1})).ok();
        let c = fingerprint(&r, &serde_json::json!({"a": 1, "b": 3})).ok();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
