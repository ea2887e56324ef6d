//! The outbox as a queue for the relays.
//!
//! Claiming selects rows that are unpublished, not parked and due, in id order, from the
//! slices the claiming relay owns (see [`super::outbox_slices`]). It never remembers "the last
//! id seen": a transaction that commits late with a lower id is still picked up. Rows of a
//! product whose earlier row waits for a retry are held back so per-product order holds; a
//! product's rows all belong to one slice, so one relay at a time sends them.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Nullable, SmallInt, Text, Timestamptz, Uuid as SqlUuid};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use std::time::Duration;
use uuid::Uuid;

use super::prepared::cached;
use super::StoreError;

/// Postgres NOTIFY channel that wakes the outbox relays ([`super::outbox_listener`] LISTENs;
/// the write paths NOTIFY after appending rows).
pub const OUTBOX_NOTIFY_CHANNEL: &str = "aliexpress_outbox";

/// The statement of [`wake_relays`]: the NOTIFY, and `synchronous_commit` off for its own
/// transaction.
pub const WAKE_RELAYS_SQL: &str =
    "SELECT set_config('synchronous_commit', 'off', true), pg_notify('aliexpress_outbox', '')";

/// Wakes the relays: a NOTIFY on [`OUTBOX_NOTIFY_CHANNEL`], sent once the write it announces
/// has committed, in a transaction of its own that does not wait for its WAL flush
/// (`synchronous_commit` off for it alone: a hint needs no durability). A NOTIFY inside the
/// write would take Postgres's database-wide notify lock at that commit and hold it through
/// the commit's flush and the synchronous standby's, so writes from every connection would
/// commit one at a time (docs/ARCHITECTURE.md, "NOTIFY as a hint"); here the lock is held
/// for the microseconds of a commit that waits for nothing. Best effort: a wake-up that is not
/// sent is covered by the relays' poll.
pub async fn wake_relays(conn: &mut AsyncPgConnection) {
    let sent = cached(diesel::sql_query(WAKE_RELAYS_SQL)).execute(conn).await;
    if let Err(e) = sent {
        tracing::debug!(error = %e, "relay wake-up not sent; the relays' poll covers it");
    }
}

/// Kafka header names written into the `headers` column of every product event row; the relay
/// sends them as the message's headers unchanged (see docs/EVENTS.md).
pub mod event_headers {
    /// Event id (UUID).
    pub const EVENT_ID: &str = "event_id";
    /// Event type, e.g. ProductCreated.
    pub const EVENT_TYPE: &str = "event_type";
    /// Schema version of the envelope.
    pub const SCHEMA_VERSION: &str = "schema_version";
    /// Product version after the event.
    pub const AGGREGATE_VERSION: &str = "aggregate_version";
    /// Correlation id of the flow.
    pub const CORRELATION_ID: &str = "correlation_id";
}

/// Kafka header names written into the `headers` column of every command row (see
/// docs/EVENTS.md).
pub mod command_headers {
    /// Command id (UUID), the idempotency key of the write side.
    pub const COMMAND_ID: &str = "command_id";
    /// Command type, e.g. ChangePrice.
    pub const COMMAND_TYPE: &str = "command_type";
}

/// A row claimed for publishing.
#[derive(Debug, Clone, QueryableByName)]
pub struct PendingRow {
    /// Outbox id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Destination topic.
    #[diesel(sql_type = Text)]
    pub topic: String,
    /// Kafka key (product id).
    #[diesel(sql_type = Text)]
    pub key: String,
    /// JSON payload, as text.
    #[diesel(sql_type = Text)]
    pub payload: String,
    /// Headers as a JSON object of strings, as text.
    #[diesel(sql_type = Text)]
    pub headers: String,
    /// Product id.
    #[diesel(sql_type = SqlUuid)]
    pub aggregate_id: Uuid,
    /// Product version.
    #[diesel(sql_type = BigInt)]
    pub aggregate_version: i64,
    /// Attempts so far.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// Creation time (for publish latency).
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
}

/// A row as operators see it (`aliexpress outbox list`).
#[derive(Debug, Clone, QueryableByName, serde::Serialize)]
pub struct OutboxRowInfo {
    /// Outbox id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// Product id.
    #[diesel(sql_type = SqlUuid)]
    pub aggregate_id: Uuid,
    /// Product version.
    #[diesel(sql_type = BigInt)]
    pub aggregate_version: i64,
    /// Event type.
    #[diesel(sql_type = Text)]
    pub event_type: String,
    /// Attempts so far.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// Last publish error.
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    /// Creation time.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// When it was parked.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub parked_at: Option<DateTime<Utc>>,
}

/// Backlog figures for metrics and `aliexpress status`.
#[derive(Debug, Clone, Default, QueryableByName, serde::Serialize)]
pub struct OutboxStats {
    /// Unpublished, not parked.
    #[diesel(sql_type = BigInt)]
    pub pending: i64,
    /// Parked.
    #[diesel(sql_type = BigInt)]
    pub parked: i64,
    /// Age of the oldest pending row in seconds (0 when none).
    #[diesel(sql_type = Double)]
    pub oldest_pending_age_secs: f64,
}

/// The products held back (a row waiting for its retry) and their first such row, as the CTE
/// `blocked`: from the tiny backoff index, materialised, so the anti-join of
/// `publishable_now!` never depends on row estimates. (Planned against stale statistics after
/// a sudden backlog, a correlated NOT EXISTS on the outbox scanned every pending row per
/// candidate: 300 ms per claim at 10k.)
macro_rules! blocked_products {
    () => {
        "WITH blocked AS MATERIALIZED ( \
           SELECT b.aggregate_id, min(b.id) AS first_id FROM outbox b \
           WHERE b.published_at IS NULL AND b.parked_at IS NULL \
             AND b.next_attempt_at IS NOT NULL AND b.next_attempt_at > now() \
           GROUP BY b.aggregate_id)"
    };
}

/// An outbox row `o` a relay may publish now: unpublished, not parked, due, and not behind an
/// earlier row of its product that waits for its retry (needs `blocked_products!`).
macro_rules! publishable_now {
    () => {
        "(o.published_at IS NULL AND o.parked_at IS NULL \
           AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now()) \
           AND NOT EXISTS (SELECT 1 FROM blocked b WHERE b.aggregate_id = o.aggregate_id AND b.first_id < o.id))"
    };
}

/// Claims up to `limit` due rows of `slices` (every slice when `None`) in id order (see the
/// module docs), skipping `in_flight`: rows already delivered whose "published" mark is being
/// committed on another connection.
#[tracing::instrument(level = "debug", skip_all, fields(outbox.batch_size = limit))]
pub async fn claim_batch(
    conn: &mut AsyncPgConnection,
    limit: i64,
    slices: Option<&[i16]>,
    in_flight: &[i64],
) -> Result<Vec<PendingRow>, StoreError> {
    // Not kept prepared (`super::prepared`): a generic plan cannot tell a relay owning every
    // slice from one owning a few, and for the latter it walks the whole pending index (20 ms
    // against 3 at 50k pending rows); a custom plan picks the slice index.
    Ok(diesel::sql_query(concat!(
        blocked_products!(),
        " SELECT o.id, o.topic, o.key, o.payload::text AS payload, o.headers::text AS headers, \
                o.aggregate_id, o.aggregate_version, o.attempts, o.created_at \
         FROM outbox o WHERE ",
        publishable_now!(),
        " AND NOT (o.id = ANY($2)) \
           AND ($3::smallint[] IS NULL OR o.slice = ANY($3)) \
         ORDER BY o.id LIMIT $1"
    ))
    .bind::<BigInt, _>(limit)
    .bind::<Array<BigInt>, _>(in_flight)
    .bind::<Nullable<Array<SmallInt>>, _>(slices)
    .load(conn)
    .await?)
}

#[derive(QueryableByName)]
struct SliceRow {
    #[diesel(sql_type = SmallInt)]
    slice: i16,
}

/// Which of `among` hold a row a relay could publish now (what [`claim_batch`] would claim):
/// one index probe per slice, stopping at its first such row.
pub async fn publishable_slices(conn: &mut AsyncPgConnection, among: &[i16]) -> Result<Vec<i16>, StoreError> {
    if among.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<SliceRow> = diesel::sql_query(concat!(
        blocked_products!(),
        " SELECT s.slice FROM unnest($1::smallint[]) AS s(slice) \
         WHERE EXISTS (SELECT 1 FROM outbox o WHERE o.slice = s.slice AND ",
        publishable_now!(),
        ") ORDER BY s.slice"
    ))
    .bind::<Array<SmallInt>, _>(among)
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.slice).collect())
}

/// Pending rows no relay may publish yet: rows in their retry backoff after a failed attempt,
/// and the later rows of their products held back behind them.
#[derive(Debug, Clone, Default, QueryableByName, serde::Serialize)]
pub struct RetryWait {
    /// Rows waiting.
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    /// When the first of them is due again.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub next_at: Option<DateTime<Utc>>,
}

/// The rows waiting for a retry (see [`RetryWait`]).
pub async fn waiting_for_retry(conn: &mut AsyncPgConnection) -> Result<RetryWait, StoreError> {
    Ok(diesel::sql_query(concat!(
        blocked_products!(),
        " SELECT count(*) AS rows, min(o.next_attempt_at) FILTER (WHERE o.next_attempt_at > now()) AS next_at \
         FROM blocked b JOIN outbox o ON o.aggregate_id = b.aggregate_id AND o.id >= b.first_id \
         WHERE o.published_at IS NULL AND o.parked_at IS NULL"
    ))
    .get_result(conn)
    .await?)
}

/// Marks rows published (one statement).
#[tracing::instrument(level = "debug", skip_all, fields(outbox.rows = ids.len()))]
pub async fn mark_published(conn: &mut AsyncPgConnection, ids: &[i64]) -> Result<usize, StoreError> {
    if ids.is_empty() {
        return Ok(0);
    }
    Ok(cached(
        diesel::sql_query(
            "UPDATE outbox SET published_at = now(), attempts = attempts + 1, last_error = NULL, next_attempt_at = NULL \
             WHERE id = ANY($1) AND published_at IS NULL",
        )
        .bind::<Array<BigInt>, _>(ids),
    )
    .execute(conn)
    .await?)
}

/// Records a failed attempt: backoff until the next try, parked once `max_attempts` is reached.
/// Returns true when the row is now parked.
pub async fn mark_failed(
    conn: &mut AsyncPgConnection,
    id: i64,
    error: &str,
    backoff: Duration,
    max_attempts: i32,
) -> Result<bool, StoreError> {
    #[derive(QueryableByName)]
    struct Parked {
        #[diesel(sql_type = Bool)]
        parked: bool,
    }
    let r: Parked = diesel::sql_query(
        "UPDATE outbox SET attempts = attempts + 1, last_error = left($2, 2000), \
                next_attempt_at = now() + make_interval(secs => $3), \
                parked_at = CASE WHEN attempts + 1 >= $4 THEN now() ELSE NULL END \
         WHERE id = $1 RETURNING parked_at IS NOT NULL AS parked",
    )
    .bind::<BigInt, _>(id)
    .bind::<Text, _>(error)
    .bind::<Double, _>(backoff.as_secs_f64())
    .bind::<Integer, _>(max_attempts)
    .get_result(conn)
    .await?;
    Ok(r.parked)
}

/// Pending/parked counts and the oldest pending age.
pub async fn stats(conn: &mut AsyncPgConnection) -> Result<OutboxStats, StoreError> {
    Ok(diesel::sql_query(
        "SELECT count(*) FILTER (WHERE parked_at IS NULL) AS pending, \
                count(*) FILTER (WHERE parked_at IS NOT NULL) AS parked, \
                COALESCE(EXTRACT(EPOCH FROM now() - min(created_at) FILTER (WHERE parked_at IS NULL)), 0)::float8 \
                  AS oldest_pending_age_secs \
         FROM outbox WHERE published_at IS NULL",
    )
    .get_result(conn)
    .await?)
}

/// Rows for operators: parked ones, or all pending ones.
pub async fn list(conn: &mut AsyncPgConnection, parked: bool, limit: i64) -> Result<Vec<OutboxRowInfo>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT id, aggregate_id, aggregate_version, event_type, attempts, last_error, created_at, parked_at \
         FROM outbox WHERE published_at IS NULL AND (parked_at IS NOT NULL) = $1 ORDER BY id LIMIT $2",
    )
    .bind::<Bool, _>(parked)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?)
}

/// The outbox row of one product version, as `trace` shows it.
#[derive(Debug, Clone, QueryableByName, serde::Serialize)]
pub struct EventRow {
    /// Outbox id.
    #[diesel(sql_type = BigInt)]
    pub id: i64,
    /// The event's id (its `event_id` header on the topic).
    #[diesel(sql_type = SqlUuid)]
    pub event_id: Uuid,
    /// Topic it goes to.
    #[diesel(sql_type = Text)]
    pub topic: String,
    /// Kafka key.
    #[diesel(sql_type = Text)]
    pub key: String,
    /// Committed with the product's write.
    #[diesel(sql_type = Timestamptz)]
    pub created_at: DateTime<Utc>,
    /// Delivered to Kafka.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub published_at: Option<DateTime<Utc>>,
    /// Publish attempts that failed.
    #[diesel(sql_type = Integer)]
    pub attempts: i32,
    /// Last publish error.
    #[diesel(sql_type = Nullable<Text>)]
    pub last_error: Option<String>,
    /// When it was parked.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub parked_at: Option<DateTime<Utc>>,
}

/// The outbox row of `aggregate_id` at `version`, if it is still there.
pub async fn for_version(
    conn: &mut AsyncPgConnection,
    aggregate_id: Uuid,
    version: i64,
) -> Result<Option<EventRow>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT id, event_id, topic, key, created_at, published_at, attempts, last_error, parked_at \
         FROM outbox WHERE aggregate_id = $1 AND aggregate_version = $2 ORDER BY id DESC LIMIT 1",
    )
    .bind::<SqlUuid, _>(aggregate_id)
    .bind::<BigInt, _>(version)
    .get_result(conn)
    .await
    .optional()?)
}

/// Un-parks rows (all parked rows when `ids` is None) so the relay tries them again.
pub async fn retry_parked(conn: &mut AsyncPgConnection, ids: Option<&[i64]>) -> Result<usize, StoreError> {
    let base = "UPDATE outbox SET parked_at = NULL, attempts = 0, next_attempt_at = NULL \
                WHERE published_at IS NULL AND parked_at IS NOT NULL";
    Ok(match ids {
        Some(ids) => {
            diesel::sql_query(format!("{base} AND id = ANY($1)"))
                .bind::<Array<BigInt>, _>(ids)
                .execute(conn)
                .await?
        }
        None => diesel::sql_query(base).execute(conn).await?,
    })
}

/// Deletes up to `batch` published rows older than `age`; returns how many went.
pub async fn prune_published(conn: &mut AsyncPgConnection, age: Duration, batch: i64) -> Result<usize, StoreError> {
    Ok(diesel::sql_query(
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
           WHERE published_at IS NOT NULL AND published_at < now() - make_interval(secs => $1) \
           ORDER BY id LIMIT $2)",
    )
    .bind::<Double, _>(age.as_secs_f64())
    .bind::<BigInt, _>(batch)
    .execute(conn)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wake_up_notifies_the_channel_the_relays_listen_on_without_waiting_for_its_flush() {
        assert!(WAKE_RELAYS_SQL.contains(&format!("pg_notify('{OUTBOX_NOTIFY_CHANNEL}', '')")));
        assert!(WAKE_RELAYS_SQL.contains("set_config('synchronous_commit', 'off', true)"));
    }
}
