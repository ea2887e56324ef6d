//! Snapshot events: a product's state at its current version sent again through the outbox
//! (`aliexpress reconcile --repair`), recorded in `reconcile_repairs`. The row is locked while
//! the outbox row is added, so the snapshot takes its place among the product's events like any
//! write; the projection's version guards keep it from overwriting anything newer.

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::reconcile_repairs;
use super::{product_repo, StoreError};
use crate::domain::product::{EventEnvelope, EventMeta};

/// Sends product `id` again at its current version for `drift` (one outbox row and one audit
/// row, in one transaction); its version, or `None` when there is no such product.
pub async fn emit(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    topic: &str,
    drift: &str,
    actor: &str,
) -> Result<Option<i64>, StoreError> {
    let (topic, drift, actor) = (topic.to_owned(), drift.to_owned(), actor.to_owned());
    conn.transaction::<_, StoreError, _>(async move |tx| {
        let Some(p) = product_repo::lock(tx, id).await? else {
            return Ok(None);
        };
        let meta = EventMeta {
            event_id: Uuid::now_v7(),
            causation_id: None,
            correlation_id: None,
            occurred_at: Utc::now(),
            actor: Some(actor.clone()),
        };
        let env = EventEnvelope::snapshot(&p, meta, &format!("reconcile: {drift}"));
        product_repo::append_outbox(tx, &env, &topic, None).await?;
        diesel::insert_into(reconcile_repairs::table)
            .values((
                reconcile_repairs::product_id.eq(id),
                reconcile_repairs::version.eq(p.version),
                reconcile_repairs::event_id.eq(env.event_id),
                reconcile_repairs::drift.eq(&drift),
                reconcile_repairs::actor.eq(&actor),
            ))
            .execute(tx)
            .await?;
        Ok(Some(p.version))
    })
    .await
}
