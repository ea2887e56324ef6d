//! The scheduled drift check's runs (`reconcile_runs`): one row per run, kept 7 days, the
//! latest read by `status` and the console.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::reconcile_runs;
use super::StoreError;

/// How long runs are kept.
const KEEP_DAYS: i32 = 7;

/// One run of the scheduled check.
#[derive(Debug, Clone, Queryable, serde::Serialize)]
pub struct ReconcileRun {
    /// When it finished.
    pub ran_at: chrono::DateTime<chrono::Utc>,
    /// Which host's projection ran it.
    pub host: String,
    /// Products compared.
    pub compared: i32,
    /// Products not in Redis (not drift).
    pub absent_from_cache: i32,
    /// Confirmed drift by `store/kind`, e.g. `{"opensearch/stale": 2}`.
    pub drift: serde_json::Value,
    /// Up to 10 drifted entries (store, kind, product, versions).
    pub examples: serde_json::Value,
}

/// Records a run and forgets runs older than [`KEEP_DAYS`].
pub async fn record(conn: &mut AsyncPgConnection, run: &ReconcileRun) -> Result<(), StoreError> {
    diesel::insert_into(reconcile_runs::table)
        .values((
            reconcile_runs::ran_at.eq(run.ran_at),
            reconcile_runs::host.eq(&run.host),
            reconcile_runs::compared.eq(run.compared),
            reconcile_runs::absent_from_cache.eq(run.absent_from_cache),
            reconcile_runs::drift.eq(&run.drift),
            reconcile_runs::examples.eq(&run.examples),
        ))
        .execute(conn)
        .await?;
    diesel::sql_query(format!(
        "DELETE FROM reconcile_runs WHERE ran_at < now() - interval '{KEEP_DAYS} days'"
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// The latest run, if any.
pub async fn latest(conn: &mut AsyncPgConnection) -> Result<Option<ReconcileRun>, StoreError> {
    Ok(reconcile_runs::table
        .order(reconcile_runs::id.desc())
        .select((
            reconcile_runs::ran_at,
            reconcile_runs::host,
            reconcile_runs::compared,
            reconcile_runs::absent_from_cache,
            reconcile_runs::drift,
            reconcile_runs::examples,
        ))
        .first(conn)
        .await
        .optional()?)
}
