//! Operator audit tables: `replay_audit` (one row per partition whose committed offset
//! `replay --execute` moved) and `dlq_redrives` (dead letters republished, so a second redrive
//! republishes nothing twice).

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::{dlq_redrives, replay_audit};
use super::StoreError;

/// One moved partition, as recorded.
#[derive(Debug, Clone)]
pub struct OffsetMove<'a> {
    /// Consumer group.
    pub group: &'a str,
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Committed offset before (None: nothing was committed).
    pub from: Option<i64>,
    /// Committed offset after.
    pub to: i64,
}

/// Who runs an ops tool from the command line: `cli:<user>@<host>`.
pub fn cli_actor() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "unknown".into());
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("cli:{user}@{host}")
}

/// Records offset moves made from `host` by `actor` in `mode` (for example `to-earliest`).
pub async fn record_offset_moves(
    conn: &mut AsyncPgConnection,
    host: &str,
    actor: &str,
    mode: &str,
    moves: &[OffsetMove<'_>],
) -> Result<(), StoreError> {
    for m in moves {
        diesel::insert_into(replay_audit::table)
            .values((
                replay_audit::host.eq(host),
                replay_audit::group_id.eq(m.group),
                replay_audit::topic.eq(m.topic),
                replay_audit::kafka_partition.eq(m.partition),
                replay_audit::from_offset.eq(m.from),
                replay_audit::to_offset.eq(m.to),
                replay_audit::mode.eq(mode),
                replay_audit::actor.eq(actor),
            ))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// (partition, offset) of every record of `dlq_topic` already redriven.
pub async fn redriven(conn: &mut AsyncPgConnection, dlq_topic: &str) -> Result<Vec<(i32, i64)>, StoreError> {
    Ok(dlq_redrives::table
        .filter(dlq_redrives::dlq_topic.eq(dlq_topic))
        .select((dlq_redrives::kafka_partition, dlq_redrives::dlq_offset))
        .load(conn)
        .await?)
}

/// Records that `actor` republished the DLQ record at `partition:offset` to `target_topic`.
pub async fn record_redrive(
    conn: &mut AsyncPgConnection,
    dlq_topic: &str,
    partition: i32,
    offset: i64,
    target_topic: &str,
    actor: &str,
) -> Result<(), StoreError> {
    diesel::insert_into(dlq_redrives::table)
        .values((
            dlq_redrives::dlq_topic.eq(dlq_topic),
            dlq_redrives::kafka_partition.eq(partition),
            dlq_redrives::dlq_offset.eq(offset),
            dlq_redrives::target_topic.eq(target_topic),
            dlq_redrives::actor.eq(actor),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    Ok(())
}

/// The last offset move recorded: (when, group, mode, host).
pub async fn last_offset_move(
    conn: &mut AsyncPgConnection,
) -> Result<Option<(chrono::DateTime<chrono::Utc>, String, String, String)>, StoreError> {
    Ok(replay_audit::table
        .order(replay_audit::id.desc())
        .select((
            replay_audit::executed_at,
            replay_audit::group_id,
            replay_audit::mode,
            replay_audit::host,
        ))
        .first(conn)
        .await
        .optional()?)
}

/// One recorded partition move of `replay --execute`.
#[derive(Debug, Clone, Queryable, serde::Serialize)]
pub struct RecordedMove {
    /// When.
    pub executed_at: chrono::DateTime<chrono::Utc>,
    /// From which host.
    pub host: String,
    /// Consumer group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset before (None: nothing was committed).
    pub from_offset: Option<i64>,
    /// Committed offset after.
    pub to_offset: i64,
    /// Mode, e.g. `to-earliest`.
    pub mode: String,
}

/// The `limit` most recent partition moves, newest first.
pub async fn recent_offset_moves(conn: &mut AsyncPgConnection, limit: i64) -> Result<Vec<RecordedMove>, StoreError> {
    Ok(replay_audit::table
        .order(replay_audit::id.desc())
        .limit(limit)
        .select((
            replay_audit::executed_at,
            replay_audit::host,
            replay_audit::group_id,
            replay_audit::topic,
            replay_audit::kafka_partition,
            replay_audit::from_offset,
            replay_audit::to_offset,
            replay_audit::mode,
        ))
        .load(conn)
        .await?)
}
