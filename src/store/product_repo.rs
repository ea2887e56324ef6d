//! The product repository: product rows read and locked, and a new version saved with
//! everything that goes with it, inside the caller's transaction. The decision between the
//! load and the save is the application's (`app::execute`); nothing here runs a rule.
//!
//! [`save`] writes the new state guarded by its version, the variants' SKUs, the history
//! entry, the event into the outbox, the command's outcome and the relay's NOTIFY, pipelined
//! in one round trip. [`already_processed`] answers a redelivered command id from the
//! `commands` table.

use chrono::Utc;
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::outbox_repo::event_headers;
use super::prepared::cached;
use super::product_row::ProductRow;
use super::schema::{commands, outbox, product_history, product_skus, products};
use super::StoreError;
use crate::domain::product::history::changes;
use crate::domain::product::{EventEnvelope, Product, ProductStatus, Variant};
use crate::telemetry::trace_context::TRACEPARENT;

/// A command id's recorded outcome (see [`already_processed`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Processed {
    /// `applied` or `rejected`.
    pub status: String,
    /// Version it produced, when applied.
    pub version: Option<i64>,
}

/// A new version to write (see [`save`]).
#[derive(Debug, Clone, Copy)]
pub struct NewVersion<'a> {
    /// The state it follows (`None` for a creation).
    pub current: Option<&'a Product>,
    /// The new state.
    pub next: &'a Product,
    /// Its event, appended to the outbox and the history.
    pub event: &'a EventEnvelope,
    /// The command id and type whose outcome is recorded, when the caller gave an id.
    pub command: Option<(Uuid, &'a str)>,
    /// Topic recorded on the outbox row.
    pub topic: &'a str,
    /// The caller's W3C `traceparent`, stored as the event's header.
    pub traceparent: Option<&'a str>,
}

#[derive(Insertable)]
#[diesel(table_name = outbox)]
struct NewOutboxRow<'a> {
    event_id: Uuid,
    aggregate_type: &'a str,
    aggregate_id: Uuid,
    aggregate_version: i64,
    topic: &'a str,
    key: String,
    event_type: &'a str,
    schema_version: i32,
    payload: serde_json::Value,
    headers: serde_json::Value,
}

/// Loads a product by id.
pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<Product>, StoreError> {
    let row = products::table
        .find(id)
        .select(ProductRow::as_select())
        .first(conn)
        .await
        .optional()?;
    row.map(ProductRow::into_product).transpose()
}

/// Loads the products `ids` name in one query: one answer per id, in their order (`None` for
/// an id with no product; an id named twice is answered twice).
pub async fn find_many(conn: &mut AsyncPgConnection, ids: &[Uuid]) -> Result<Vec<Option<Product>>, StoreError> {
    let rows: Vec<ProductRow> = products::table
        .filter(products::id.eq_any(ids))
        .select(ProductRow::as_select())
        .load(conn)
        .await?;
    let mut found = std::collections::HashMap::with_capacity(rows.len());
    for row in rows {
        let p = row.into_product()?;
        found.insert(p.id, p);
    }
    // The last time an id is named takes its product; an earlier time, a copy.
    Ok(ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            if ids[i + 1..].contains(id) {
                found.get(id).cloned()
            } else {
                found.remove(id)
            }
        })
        .collect())
}

/// One page of products in id order, after `cursor`, optionally filtered.
pub async fn list(
    conn: &mut AsyncPgConnection,
    status: Option<ProductStatus>,
    category: Option<&str>,
    owner: Option<&str>,
    cursor: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Product>, StoreError> {
    let mut q = products::table
        .select(ProductRow::as_select())
        .order(products::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(s) = status {
        q = q.filter(products::status.eq(s.as_str()));
    }
    if let Some(c) = category {
        q = q.filter(products::category.eq(c.to_owned()));
    }
    if let Some(o) = owner {
        q = q.filter(products::owner.eq(o.to_owned()));
    }
    if let Some(c) = cursor {
        q = q.filter(products::id.gt(c));
    }
    q.load(conn).await?.into_iter().map(ProductRow::into_product).collect()
}

/// Up to `limit` products of type `key` in id order after `after`.
pub async fn of_type(
    conn: &mut AsyncPgConnection,
    key: &str,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Product>, StoreError> {
    let mut q = products::table
        .select(ProductRow::as_select())
        .filter(products::product_type.eq(key))
        .order(products::id.asc())
        .limit(limit)
        .into_boxed();
    if let Some(a) = after {
        q = q.filter(products::id.gt(a));
    }
    q.load(conn).await?.into_iter().map(ProductRow::into_product).collect()
}

/// The recorded outcome of `command_id` when it was processed before (locked, so a
/// concurrent delivery of the same command waits for this one).
pub async fn already_processed(
    conn: &mut AsyncPgConnection,
    command_id: Uuid,
) -> Result<Option<Processed>, StoreError> {
    let seen: Option<(String, Option<i64>)> = commands::table
        .find(command_id)
        .select((commands::status, commands::result_version))
        .for_update()
        .first(conn)
        .await
        .optional()?;
    Ok(seen
        .filter(|(status, _)| status != "pending")
        .map(|(status, version)| Processed { status, version }))
}

/// The product row, locked for the rest of the caller's transaction (`None` when there is
/// none).
pub async fn lock(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<Product>, StoreError> {
    products::table
        .find(id)
        .select(ProductRow::as_select())
        .for_update()
        .first(conn)
        .await
        .optional()?
        .map(ProductRow::into_product)
        .transpose()
}

/// Writes the new state (guarded by the previous version), the event into the outbox and the
/// command's outcome (the relays' wake-up follows the commit: `outbox_repo::wake_relays`). The writes are independent statements of one
/// transaction: sent together (pipelined), one round trip instead of one each. Postgres still
/// runs them in order, and once one fails the rest fail with the transaction; the product
/// write's result is looked at first (a taken sku is `SkuTaken`).
pub async fn save(conn: &mut AsyncPgConnection, v: &NewVersion<'_>) -> Result<(), StoreError> {
    let NewVersion {
        current,
        next,
        event: envelope,
        ..
    } = *v;
    let id = next.id;
    let row = ProductRow::from_product(next);
    let shared: &AsyncPgConnection = conn;
    let product_write = async {
        let mut c = shared;
        match current {
            None => {
                cached(diesel::insert_into(products::table).values(&row))
                    .execute(&mut c)
                    .await
            }
            Some(prev) => {
                cached(
                    diesel::update(
                        products::table
                            .filter(products::id.eq(id))
                            .filter(products::version.eq(prev.version)),
                    )
                    .set(&row),
                )
                .execute(&mut c)
                .await
            }
        }
    };
    let skus_write = write_skus(shared, current, next);
    let outbox_write = append_outbox(shared, envelope, v.topic, v.traceparent);
    let history_write = append_history(shared, current, next, envelope);
    let outcome_write = async {
        match v.command {
            Some((command_id, command_type)) => {
                let command = CommandRef {
                    command_id,
                    product_id: id,
                    command_type,
                };
                record_outcome(shared, &command, Outcome::Applied { version: next.version }).await
            }
            None => Ok(()),
        }
    };
    let (written, skus, appended, history, recorded) =
        futures::join!(product_write, skus_write, outbox_write, history_write, outcome_write);
    product_written(written, next)?;
    skus?;
    appended?;
    history?;
    recorded?;
    Ok(())
}

/// The product write's result: one row, or why not (a taken sku is `SkuTaken`).
fn product_written(written: Result<usize, DieselError>, next: &Product) -> Result<(), StoreError> {
    match written {
        Ok(1) => Ok(()),
        Ok(_) => {
            // Unreachable while the row is locked FOR UPDATE; kept as a guard.
            Err(StoreError::VersionConflict {
                expected: next.version - 1,
                actual: -1,
            })
        }
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, info))
            if info.constraint_name() == Some("products_sku_key") =>
        {
            Err(StoreError::SkuTaken(
                next.first_variant().map(|v| v.sku.clone()).unwrap_or_default(),
            ))
        }
        Err(e) => Err(e.into()),
    }
}

/// Keeps `product_skus` (every variant's SKU, unique in the catalog) in step with the
/// variants: SKUs no longer used are freed first, then new ones are claimed; a SKU another
/// product holds is `SkuTaken`.
async fn write_skus(mut conn: &AsyncPgConnection, current: Option<&Product>, next: &Product) -> Result<(), StoreError> {
    let before: Vec<&Variant> = current.map(|p| p.variants.iter().collect()).unwrap_or_default();
    let has = |vs: &[&Variant], sku: &str| vs.iter().any(|v| v.sku == sku);
    let freed: Vec<String> = before
        .iter()
        .filter(|v| !next.variants.iter().any(|n| n.sku == v.sku))
        .map(|v| v.sku.clone())
        .collect();
    let claimed: Vec<(String, Uuid, i32)> = next
        .variants
        .iter()
        .filter(|v| !has(&before, &v.sku))
        .map(|v| (v.sku.clone(), next.id, i32::try_from(v.id).unwrap_or(i32::MAX)))
        .collect();
    if !freed.is_empty() {
        cached(diesel::delete(
            product_skus::table
                .filter(product_skus::product_id.eq(next.id))
                .filter(product_skus::sku.eq_any(&freed)),
        ))
        .execute(&mut conn)
        .await?;
    }
    if claimed.is_empty() {
        return Ok(());
    }
    let rows: Vec<_> = claimed
        .iter()
        .map(|(sku, product_id, variant_id)| {
            (
                product_skus::sku.eq(sku),
                product_skus::product_id.eq(product_id),
                product_skus::variant_id.eq(variant_id),
            )
        })
        .collect();
    match cached(diesel::insert_into(product_skus::table).values(&rows))
        .execute(&mut conn)
        .await
    {
        Ok(_) => Ok(()),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => Err(StoreError::SkuTaken(
            claimed
                .into_iter()
                .map(|(sku, _, _)| sku)
                .collect::<Vec<_>>()
                .join(", "),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Appends the version to the product's change history: the event, who asked, and the
/// fields that changed.
pub(super) async fn append_history(
    mut conn: &AsyncPgConnection,
    current: Option<&Product>,
    next: &Product,
    env: &EventEnvelope,
) -> Result<(), StoreError> {
    let changed = serde_json::to_value(changes(current, next)).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    diesel::insert_into(product_history::table)
        .values((
            product_history::product_id.eq(next.id),
            product_history::version.eq(next.version),
            product_history::event_id.eq(env.event_id),
            product_history::event_type.eq(&env.event_type),
            product_history::occurred_at.eq(env.occurred_at),
            product_history::actor.eq(env.actor.as_deref()),
            product_history::causation_id.eq(env.causation_id),
            product_history::correlation_id.eq(env.correlation_id),
            product_history::status.eq(next.status.as_str()),
            product_history::changes.eq(changed),
        ))
        .execute(&mut conn)
        .await?;
    Ok(())
}

/// Appends one event to the outbox (inside the caller's transaction).
pub(super) async fn append_outbox(
    mut conn: &AsyncPgConnection,
    env: &EventEnvelope,
    topic: &str,
    traceparent: Option<&str>,
) -> Result<(), StoreError> {
    let payload = serde_json::to_value(env).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    let mut headers = serde_json::json!({
        event_headers::EVENT_ID: env.event_id.to_string(),
        event_headers::EVENT_TYPE: env.event_type,
        event_headers::SCHEMA_VERSION: env.schema_version.to_string(),
        event_headers::AGGREGATE_VERSION: env.aggregate_version.to_string(),
        event_headers::CORRELATION_ID: env.correlation_id.map(|c| c.to_string()).unwrap_or_default(),
    });
    if let Some(tp) = traceparent {
        headers[TRACEPARENT] = serde_json::Value::String(tp.to_owned());
    }
    cached(diesel::insert_into(outbox::table).values(NewOutboxRow {
        event_id: env.event_id,
        aggregate_type: &env.aggregate_type,
        aggregate_id: env.aggregate_id,
        aggregate_version: env.aggregate_version,
        topic,
        key: env.aggregate_id.to_string(),
        event_type: &env.event_type,
        schema_version: i32::try_from(env.schema_version).unwrap_or(i32::MAX),
        payload,
        headers,
    }))
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// The command an outcome is recorded for.
struct CommandRef<'a> {
    command_id: Uuid,
    product_id: Uuid,
    command_type: &'a str,
}

/// A command's terminal outcome, as stored in `commands.status`.
enum Outcome<'a> {
    /// Applied; the product's version after it.
    Applied { version: i64 },
    /// Refused, with the reason.
    Rejected(&'a str),
}

impl Outcome<'_> {
    fn status(&self) -> &'static str {
        match self {
            Self::Applied { .. } => "applied",
            Self::Rejected(_) => "rejected",
        }
    }
}

async fn record_outcome(
    mut conn: &AsyncPgConnection,
    c: &CommandRef<'_>,
    outcome: Outcome<'_>,
) -> Result<(), StoreError> {
    let now = Utc::now();
    let (command_id, product_id, command_type) = (c.command_id, c.product_id, c.command_type);
    let status = outcome.status();
    let (version, reason) = match outcome {
        Outcome::Applied { version } => (Some(version), None),
        Outcome::Rejected(reason) => (None, Some(reason)),
    };
    cached(
        diesel::insert_into(commands::table)
            .values((
                commands::command_id.eq(command_id),
                commands::product_id.eq(product_id),
                commands::command_type.eq(command_type),
                commands::status.eq(status),
                commands::result_version.eq(version),
                commands::reason.eq(reason),
                commands::processed_at.eq(Some(now)),
            ))
            .on_conflict(commands::command_id)
            .do_update()
            .set((
                commands::status.eq(status),
                commands::result_version.eq(version),
                commands::reason.eq(reason),
                commands::processed_at.eq(Some(now)),
            )),
    )
    .execute(&mut conn)
    .await?;
    Ok(())
}

/// Records a command as rejected outside a command transaction (for refusals the store
/// detects, such as a version conflict or a taken sku).
pub async fn record_rejection(
    conn: &mut AsyncPgConnection,
    command_id: Uuid,
    product_id: Uuid,
    command_type: &str,
    reason: &str,
) -> Result<(), StoreError> {
    let command = CommandRef {
        command_id,
        product_id,
        command_type,
    };
    record_outcome(conn, &command, Outcome::Rejected(reason)).await
}
