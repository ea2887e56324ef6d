//! Submitted commands and their outcomes (`commands` table), for `GET /api/commands/{id}`,
//! and the submission itself: `POST /api/commands` records the command as pending and puts
//! it in the outbox (topic `product.commands`) in one transaction, so an accepted command is
//! never lost and a refused one is never sent, whether or not Kafka is up at that moment; the
//! relay carries it to Kafka.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::outbox_repo::command_headers;
use super::prepared::cached;
use super::schema::{commands, outbox};
use super::StoreError;

/// A command to submit to the write side.
#[derive(Debug, Clone)]
pub struct Submission<'a> {
    /// Command id (the write side's idempotency key; also the outbox row's unique id).
    pub command_id: Uuid,
    /// Target product (the Kafka key).
    pub product_id: Uuid,
    /// Command type.
    pub command_type: &'a str,
    /// The whole message body, as it goes on the topic.
    pub message: serde_json::Value,
    /// Topic to publish to (`product.commands` under the namespace).
    pub topic: &'a str,
    /// Wake the relays once committed (`outbox_repo::wake_relays`).
    pub notify: bool,
    /// W3C `traceparent` sent with the command (the consumer continues it into the event).
    pub traceparent: Option<String>,
}

/// Records a submission as pending and queues it for the relay, in one transaction. A
/// resubmission of the same command id changes nothing. Returns the command as stored.
#[tracing::instrument(level = "debug", skip_all, fields(command.id = %s.command_id, product.id = %s.product_id))]
pub async fn submit(conn: &mut AsyncPgConnection, s: &Submission<'_>) -> Result<CommandRecord, StoreError> {
    use diesel_async::AsyncConnection;
    let s = s.clone();
    let notify = s.notify;
    let stored = conn
        .transaction::<_, StoreError, _>(async move |conn| {
            insert_pending(conn, s.command_id, s.product_id, s.command_type).await?;
            let mut headers = serde_json::json!({
                command_headers::COMMAND_ID: s.command_id.to_string(),
                command_headers::COMMAND_TYPE: s.command_type,
            });
            if let Some(tp) = &s.traceparent {
                headers[crate::telemetry::trace_context::TRACEPARENT] = serde_json::Value::String(tp.clone());
            }
            cached(
                diesel::insert_into(outbox::table)
                    .values((
                        outbox::event_id.eq(s.command_id),
                        outbox::aggregate_type.eq("product"),
                        outbox::aggregate_id.eq(s.product_id),
                        outbox::aggregate_version.eq(0_i64),
                        outbox::topic.eq(s.topic),
                        outbox::key.eq(s.product_id.to_string()),
                        outbox::event_type.eq(s.command_type),
                        outbox::schema_version.eq(1),
                        outbox::payload.eq(&s.message),
                        outbox::headers.eq(headers),
                    ))
                    .on_conflict(outbox::event_id)
                    .do_nothing(),
            )
            .execute(conn)
            .await?;
            find(conn, s.command_id)
                .await?
                .ok_or_else(|| StoreError::Corrupt(format!("command {} vanished", s.command_id)))
        })
        .await?;
    if notify {
        super::outbox_repo::wake_relays(conn).await;
    }
    Ok(stored)
}

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
    cached(
        diesel::insert_into(commands::table)
            .values((
                commands::command_id.eq(command_id),
                commands::product_id.eq(product_id),
                commands::command_type.eq(command_type),
                commands::status.eq("pending"),
            ))
            .on_conflict_do_nothing(),
    )
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
