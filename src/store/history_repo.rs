//! A product's change history (`product_history`): one row per version, written by
//! `product_repo` in the transaction that writes the version, read here a page at a time.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::product_history;
use super::StoreError;
use crate::domain::product::history::FieldChange;

/// One version of a product, as its history tells it.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryEntry {
    /// The version this change made.
    pub version: i64,
    /// The event that recorded it.
    pub event_id: Uuid,
    /// Its event type.
    pub event_type: String,
    /// When.
    pub occurred_at: DateTime<Utc>,
    /// Who asked (a name, never a secret).
    pub actor: Option<String>,
    /// The command that caused it.
    pub causation_id: Option<Uuid>,
    /// The flow it belongs to.
    pub correlation_id: Option<Uuid>,
    /// The product's status after it.
    pub status: String,
    /// The fields that changed.
    pub changes: Vec<FieldChange>,
}

type Row = (
    i64,
    Uuid,
    String,
    DateTime<Utc>,
    Option<String>,
    Option<Uuid>,
    Option<Uuid>,
    String,
    serde_json::Value,
);

/// Up to `limit` versions of product `id` after version `after`, oldest first.
pub async fn page(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<HistoryEntry>, StoreError> {
    let rows: Vec<Row> = product_history::table
        .filter(product_history::product_id.eq(id))
        .filter(product_history::version.gt(after))
        .order(product_history::version.asc())
        .limit(limit)
        .select((
            product_history::version,
            product_history::event_id,
            product_history::event_type,
            product_history::occurred_at,
            product_history::actor,
            product_history::causation_id,
            product_history::correlation_id,
            product_history::status,
            product_history::changes,
        ))
        .load(conn)
        .await?;
    rows.into_iter()
        .map(
            |(version, event_id, event_type, occurred_at, actor, causation_id, correlation_id, status, changes)| {
                let changes = serde_json::from_value(changes)
                    .map_err(|e| StoreError::Corrupt(format!("history of {id} version {version}: {e}")))?;
                Ok(HistoryEntry {
                    version,
                    event_id,
                    event_type,
                    occurred_at,
                    actor,
                    causation_id,
                    correlation_id,
                    status,
                    changes,
                })
            },
        )
        .collect()
}
