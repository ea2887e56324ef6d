//! `Idempotency-Key` records: a product write and the record of its response commit in one
//! transaction, so a retry is answered from the record and the write is never applied twice,
//! even when the first answer was lost after the commit.
//!
//! [`execute_once`] opens the transaction, takes a transaction-scoped advisory lock on the
//! key's scope (another holder means the first request is still in flight: `InFlight`), looks
//! for a live record (same fingerprint: `Replayed`; another: `KeyReused`), and otherwise runs
//! the caller's work inside it (a product command, a type change) and writes the record when the caller says
//! the outcome is to be remembered. Only outcomes the caller chooses are stored; a request that
//! failed applied nothing, so its retry runs again. Expired records are ignored, replaced on
//! reuse and deleted by [`prune_expired`].

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use futures::future::BoxFuture;
use std::time::Duration;

use super::prepared::cached;
use super::schema::idempotency_keys;
use super::StoreError;

/// Namespace (first key) of the two-key advisory locks taken on idempotency scopes, apart
/// from every other advisory lock of the platform.
const LOCK_NAMESPACE: i32 = 0x1DE0;

/// Who sent the key, to which route, and the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyScope {
    /// A stable digest of the caller's credentials (never the credentials).
    pub principal: String,
    /// `METHOD /path` of the request.
    pub route: String,
    /// The client's `Idempotency-Key`.
    pub key: String,
}

/// A response to replay: status, the headers worth repeating, and the JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredResponse {
    /// HTTP status.
    pub status: u16,
    /// Header name → value (ETag, Location, ...).
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// JSON body.
    pub body: serde_json::Value,
}

/// What happened to a guarded write.
#[derive(Debug, Clone, PartialEq)]
pub enum Guarded<T> {
    /// The write ran now; its record was written when the caller asked for one.
    Executed(T),
    /// A live record with the same fingerprint: the first response, nothing ran.
    Replayed(StoredResponse),
    /// A live record with another fingerprint: the key was reused for another request.
    KeyReused,
    /// Another request with this key holds the scope's lock right now.
    InFlight,
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = idempotency_keys, check_for_backend(diesel::pg::Pg))]
struct Record {
    request_fingerprint: String,
    response_status: i16,
    response_headers: serde_json::Value,
    response_body: serde_json::Value,
}

#[derive(diesel::QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// The work a guard runs in its transaction (a product command, a product type change, ...).
pub type Work<T> =
    Box<dyn for<'c> FnOnce(&'c mut AsyncPgConnection) -> BoxFuture<'c, Result<T, StoreError>> + Send + 'static>;

/// Runs `work` unless `scope` already answered it (see the module docs). `remember` maps what
/// it returned to the response to record, or `None` to record nothing.
pub async fn execute_once<T, F>(
    conn: &mut AsyncPgConnection,
    scope: &IdempotencyScope,
    fingerprint: &str,
    ttl: Duration,
    work: Work<T>,
    remember: F,
) -> Result<Guarded<T>, StoreError>
where
    T: Send + 'static,
    F: FnOnce(&T) -> Option<StoredResponse> + Send + 'static,
{
    let scope = scope.clone();
    let fingerprint = fingerprint.to_owned();
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let lock_name = format!("{}\n{}\n{}", scope.principal, scope.route, scope.key);
        let lock: Locked = cached(
            diesel::sql_query("SELECT pg_try_advisory_xact_lock($1, hashtext($2)) AS locked")
                .bind::<diesel::sql_types::Integer, _>(LOCK_NAMESPACE)
                .bind::<diesel::sql_types::Text, _>(&lock_name),
        )
        .get_result(conn)
        .await?;
        if !lock.locked {
            return Ok(Guarded::InFlight);
        }
        let now = Utc::now();
        if let Some(answered) = answered_before(conn, &scope, &fingerprint, now).await? {
            return Ok(answered);
        }
        let outcome = work(conn).await?;
        if let Some(resp) = remember(&outcome) {
            let expires_at: DateTime<Utc> = now.checked_add_signed(ttl).unwrap_or(DateTime::<Utc>::MAX_UTC);
            record(conn, &scope, &fingerprint, resp, now, expires_at).await?;
        }
        Ok(Guarded::Executed(outcome))
    })
    .await
}

/// The live record of `scope`: its response when `fingerprint` matches, `KeyReused` when not.
async fn answered_before<T>(
    conn: &mut AsyncPgConnection,
    scope: &IdempotencyScope,
    fingerprint: &str,
    now: DateTime<Utc>,
) -> Result<Option<Guarded<T>>, StoreError> {
    let live: Option<Record> = idempotency_keys::table
        .find((&scope.principal, &scope.route, &scope.key))
        .filter(idempotency_keys::expires_at.gt(now))
        .select(Record::as_select())
        .first(conn)
        .await
        .optional()?;
    let Some(r) = live else { return Ok(None) };
    if r.request_fingerprint != fingerprint {
        return Ok(Some(Guarded::KeyReused));
    }
    Ok(Some(Guarded::Replayed(StoredResponse {
        status: u16::try_from(r.response_status)
            .map_err(|_| StoreError::Corrupt(format!("idempotency record status {}", r.response_status)))?,
        headers: match r.response_headers {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        },
        body: r.response_body,
    })))
}

/// Records `resp` as the answer of `scope` until `expires_at`.
async fn record(
    conn: &mut AsyncPgConnection,
    scope: &IdempotencyScope,
    fingerprint: &str,
    resp: StoredResponse,
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let status = i16::try_from(resp.status).unwrap_or(i16::MAX);
    let headers = serde_json::Value::Object(resp.headers);
    let changes = (
        idempotency_keys::request_fingerprint.eq(fingerprint),
        idempotency_keys::response_status.eq(status),
        idempotency_keys::response_headers.eq(&headers),
        idempotency_keys::response_body.eq(&resp.body),
        idempotency_keys::created_at.eq(now),
        idempotency_keys::expires_at.eq(expires_at),
    );
    // A row under this scope can only be an expired one (the live lookup found none while
    // holding the scope's lock): replace it.
    cached(
        diesel::insert_into(idempotency_keys::table)
            .values((
                idempotency_keys::principal.eq(&scope.principal),
                idempotency_keys::route.eq(&scope.route),
                idempotency_keys::idempotency_key.eq(&scope.key),
                changes,
            ))
            .on_conflict((
                idempotency_keys::principal,
                idempotency_keys::route,
                idempotency_keys::idempotency_key,
            ))
            .do_update()
            .set(changes),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Deletes up to `limit` expired records; returns how many.
pub async fn prune_expired(conn: &mut AsyncPgConnection, limit: i64) -> Result<usize, StoreError> {
    let n = diesel::sql_query(
        "DELETE FROM idempotency_keys WHERE (principal, route, idempotency_key) IN \
         (SELECT principal, route, idempotency_key FROM idempotency_keys WHERE expires_at <= now() LIMIT $1)",
    )
    .bind::<diesel::sql_types::BigInt, _>(limit)
    .execute(conn)
    .await?;
    Ok(n)
}
