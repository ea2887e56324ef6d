//! After a restore from backup (`aliexpress post-restore`): which events the restored database
//! knows, products sent again past the versions lost with the restore, and the fence recorded
//! in `restore_fences`.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::{product_history, products, restore_fences};
use super::{product_repo, StoreError};
use crate::domain::product::{EventEnvelope, EventMeta};

/// The newest change the database holds (`None`: no product was ever written).
pub async fn horizon(conn: &mut AsyncPgConnection) -> Result<Option<DateTime<Utc>>, StoreError> {
    Ok(product_history::table
        .select(diesel::dsl::max(product_history::occurred_at))
        .first(conn)
        .await?)
}

#[derive(QueryableByName)]
struct EventIdRow {
    #[diesel(sql_type = SqlUuid)]
    event_id: Uuid,
}

/// Of `ids`, the events this database holds: a product's history, or its outbox (snapshots
/// sent by `reconcile --repair` have no history row).
pub async fn known_events(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> Result<HashSet<Uuid>, StoreError> {
    let mut known = HashSet::new();
    for chunk in ids.chunks(5_000) {
        let rows: Vec<EventIdRow> = diesel::sql_query(
            "SELECT event_id FROM product_history WHERE event_id = ANY($1) \
             UNION SELECT event_id FROM outbox WHERE event_id = ANY($1)",
        )
        .bind::<Array<SqlUuid>, _>(chunk)
        .load(conn)
        .await?;
        known.extend(rows.into_iter().map(|r| r.event_id));
    }
    Ok(known)
}

/// The current version of each of `ids` that exists.
pub async fn versions(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> Result<HashMap<Uuid, i64>, StoreError> {
    let mut out = HashMap::new();
    for chunk in ids.chunks(5_000) {
        let rows: Vec<(Uuid, i64)> = products::table
            .filter(products::id.eq_any(chunk))
            .select((products::id, products::version))
            .load(conn)
            .await?;
        out.extend(rows);
    }
    Ok(out)
}

/// Moves product `id` past version `past`: its state unchanged, at version `past + 1`, sent as
/// a snapshot event (history row and outbox row, one transaction), so every lost event of a
/// version up to `past` is older than what the read side now holds. Returns the version
/// before and after, or `None` when the product is gone or already past.
pub async fn advance(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    past: i64,
    topic: &str,
    reason: &str,
    actor: &str,
) -> Result<Option<(i64, i64)>, StoreError> {
    let (topic, reason, actor) = (topic.to_owned(), reason.to_owned(), actor.to_owned());
    conn.transaction::<_, StoreError, _>(async move |tx| {
        let Some(current) = product_repo::lock(tx, id).await? else {
            return Ok(None);
        };
        if current.version > past {
            return Ok(None);
        }
        let mut next = current.clone();
        next.version = past + 1;
        diesel::update(products::table.filter(products::id.eq(id)))
            .set(products::version.eq(next.version))
            .execute(tx)
            .await?;
        let meta = EventMeta {
            event_id: Uuid::now_v7(),
            causation_id: None,
            correlation_id: None,
            occurred_at: Utc::now(),
            actor: Some(actor),
        };
        let env = EventEnvelope::snapshot(&next, meta, &reason);
        let shared: &AsyncPgConnection = tx;
        product_repo::append_history(shared, Some(&current), &next, &env).await?;
        product_repo::append_outbox(shared, &env, &topic, None).await?;
        Ok(Some((current.version, next.version)))
    })
    .await
}

/// A fence as recorded (and as `replay` reads it back).
#[derive(Debug, Clone, PartialEq, Queryable, Insertable, serde::Serialize)]
#[diesel(table_name = restore_fences)]
pub struct Fence {
    /// When the read side was brought back.
    pub created_at: DateTime<Utc>,
    /// The newest change in the restored database.
    pub horizon: Option<DateTime<Utc>>,
    /// Where the scan of the topic started (by time).
    pub scanned_from: DateTime<Utc>,
    /// The events topic.
    pub topic: String,
    /// `{"partition": offset}`: the topic's end per partition when fenced.
    pub offsets: serde_json::Value,
    /// Events found on the topic that the restored database does not hold.
    pub lost_events: i32,
    /// `[{"id", "from", "to"}]`: products moved past their lost versions.
    pub advanced: serde_json::Value,
    /// Ids of products with lost events that do not exist in the restored database.
    pub vanished: serde_json::Value,
    /// Who ran it.
    pub actor: String,
}

impl Fence {
    /// The fence's offset for `partition`, if it has one.
    pub fn offset(&self, partition: i32) -> Option<i64> {
        self.offsets
            .get(partition.to_string())
            .and_then(serde_json::Value::as_i64)
    }

    /// How many vanished products it names.
    pub fn vanished_count(&self) -> usize {
        self.vanished.as_array().map_or(0, Vec::len)
    }
}

/// Records a fence.
pub async fn record(conn: &mut AsyncPgConnection, fence: &Fence) -> Result<(), StoreError> {
    diesel::insert_into(restore_fences::table)
        .values(fence)
        .execute(conn)
        .await?;
    Ok(())
}

/// The latest fence on `topic`, if a restore ever happened.
pub async fn latest(conn: &mut AsyncPgConnection, topic: &str) -> Result<Option<Fence>, StoreError> {
    Ok(restore_fences::table
        .filter(restore_fences::topic.eq(topic))
        .order(restore_fences::id.desc())
        .select((
            restore_fences::created_at,
            restore_fences::horizon,
            restore_fences::scanned_from,
            restore_fences::topic,
            restore_fences::offsets,
            restore_fences::lost_events,
            restore_fences::advanced,
            restore_fences::vanished,
            restore_fences::actor,
        ))
        .first(conn)
        .await
        .optional()?)
}
