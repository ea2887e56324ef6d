//! Submitted commands and their outcomes (`commands` table), for `GET /api/commands/{id}`.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::commands;
use super::StoreError;

/// A command's status as stored.
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize, utoipa::ToSchema)]
#[diesel(table_name = commands, check_for_backend(diesel::pg::Pg))]
pub struct CommandRecord {
    /// Command id.
    pub command_id: Uuid,
    /// Target product.
    pub product_id: Uuid,
    /// Command type.
    pub command_type: String,
    /// pending | applied | rejected.
    pub status: String,
    /// Product version produced, when applied.
    pub result_version: Option<i64>,
    /// Why it was rejected.
    pub reason: Option<String>,
    /// When it was submitted (or first processed).
    pub submitted_at: DateTime<Utc>,
    /// When it was processed.
    pub processed_at: Option<DateTime<Utc>>,
}

/// Records a submission as pending unless an outcome is already there.
pub async fn insert_pending(
    conn: &mut AsyncPgConnection,
    command_id: Uuid,
    product_id: Uuid,
    command_type: &str,
) -> Result<(), StoreError> {
    diesel::insert_into(commands::table)
        .values((
            commands::command_id.eq(command_id),
            commands::product_id.eq(product_id),
            commands::command_type.eq(command_type),
            commands::status.eq("pending"),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// Looks a command up by id.
pub async fn find(conn: &mut AsyncPgConnection, command_id: Uuid) -> Result<Option<CommandRecord>, StoreError> {
    Ok(commands::table
        .find(command_id)
        .select(CommandRecord::as_select())
        .first(conn)
        .await
        .optional()?)
}
