//! Bookkeeping of index rebuilds (`index_rebuilds`) and the lock that keeps them one at a time.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::{index_rebuilds, products};
use super::StoreError;

const REBUILD_LOCK_KEY: i64 = 0x616c_6965_7870_0002;

/// A rebuild run.
#[derive(Debug, Clone, Queryable, Selectable)]
#[diesel(table_name = index_rebuilds, check_for_backend(diesel::pg::Pg))]
pub struct RebuildRun {
    /// Run id.
    pub id: i64,
    /// Alias rebuilt.
    pub alias: String,
    /// Index the alias pointed at before.
    pub old_index: Option<String>,
    /// Index built.
    pub new_index: String,
    /// `topic` or `postgres`.
    pub source: String,
    /// Host that ran it.
    pub host: String,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    pub finished_at: Option<DateTime<Utc>>,
    /// running, done, failed, rolled_back.
    pub status: String,
    /// Documents in the new index.
    pub documents: Option<i64>,
}

/// Takes the session lock that allows one rebuild at a time; false when another holds it.
pub async fn try_lock(conn: &mut AsyncPgConnection) -> Result<bool, StoreError> {
    super::pool::try_advisory_lock(conn, REBUILD_LOCK_KEY).await
}

/// The newest run with `status` for `alias`.
pub async fn latest(conn: &mut AsyncPgConnection, alias: &str, status: &str) -> Result<Option<RebuildRun>, StoreError> {
    Ok(index_rebuilds::table
        .filter(index_rebuilds::alias.eq(alias))
        .filter(index_rebuilds::status.eq(status))
        .order(index_rebuilds::id.desc())
        .select(RebuildRun::as_select())
        .first(conn)
        .await
        .optional()?)
}

/// Records the start of a run; returns its id.
pub async fn start(
    conn: &mut AsyncPgConnection,
    alias: &str,
    old: Option<&str>,
    new: &str,
    source: &str,
    host: &str,
) -> Result<i64, StoreError> {
    Ok(diesel::insert_into(index_rebuilds::table)
        .values((
            index_rebuilds::alias.eq(alias),
            index_rebuilds::old_index.eq(old),
            index_rebuilds::new_index.eq(new),
            index_rebuilds::source.eq(source),
            index_rebuilds::host.eq(host),
            index_rebuilds::status.eq("running"),
        ))
        .returning(index_rebuilds::id)
        .get_result(conn)
        .await?)
}

/// Records how a run ended.
pub async fn finish(
    conn: &mut AsyncPgConnection,
    id: i64,
    status: &str,
    documents: Option<i64>,
) -> Result<(), StoreError> {
    diesel::update(index_rebuilds::table.find(id))
        .set((
            index_rebuilds::status.eq(status),
            index_rebuilds::finished_at.eq(Some(Utc::now())),
            index_rebuilds::documents.eq(documents),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Every product's (id, version): the reference for the rebuild checksum.
pub async fn product_versions(conn: &mut AsyncPgConnection) -> Result<Vec<(Uuid, i64)>, StoreError> {
    Ok(products::table
        .select((products::id, products::version))
        .load(conn)
        .await?)
}
