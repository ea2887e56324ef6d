//! `api_keys`: named, scoped keys for machines. A key's secret is never stored, only its
//! SHA-256 (a key is 32 random bytes, so a fast hash is as good as a slow one here).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::api_keys;
use super::StoreError;

/// A key as listed (never its secret).
#[derive(Debug, Clone, Queryable, Selectable, serde::Serialize)]
#[diesel(table_name = api_keys)]
pub struct ApiKey {
    /// Row id.
    pub id: i64,
    /// Its unique name among live keys (recorded as `key:<name>` with every write).
    pub name: String,
    /// `seller`, `catalog-admin`, `operator` or `reader`.
    pub role: String,
    /// The seller it acts for (seller keys).
    pub seller: Option<String>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Who made it.
    pub created_by: String,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was last used (to the refresh interval).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A live key and the digest of its secret, as the API's key ring holds it.
#[derive(Debug, Clone, Queryable)]
pub struct LiveKey {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Role name.
    pub role: String,
    /// Seller.
    pub seller: Option<String>,
    /// SHA-256 of the secret.
    pub secret_sha256: Vec<u8>,
}

/// A key to make.
#[derive(Debug, Clone)]
pub struct NewKey<'a> {
    /// Name.
    pub name: &'a str,
    /// Role name.
    pub role: &'a str,
    /// Seller.
    pub seller: Option<&'a str>,
    /// SHA-256 of the secret.
    pub secret_sha256: &'a [u8],
    /// Who makes it.
    pub created_by: &'a str,
}

/// Stores a new key; a live key of the same name is a conflict.
pub async fn create(conn: &mut AsyncPgConnection, k: &NewKey<'_>) -> Result<ApiKey, StoreError> {
    diesel::insert_into(api_keys::table)
        .values((
            api_keys::name.eq(k.name),
            api_keys::role.eq(k.role),
            api_keys::seller.eq(k.seller),
            api_keys::secret_sha256.eq(k.secret_sha256),
            api_keys::created_by.eq(k.created_by),
        ))
        .returning(ApiKey::as_returning())
        .get_result(conn)
        .await
        .map_err(|e| match e {
            diesel::result::Error::DatabaseError(diesel::result::DatabaseErrorKind::UniqueViolation, _) => {
                StoreError::Conflict(format!("a live key named {:?} exists", k.name))
            }
            other => other.into(),
        })
}

/// Every key, newest first (revoked ones with `all`).
pub async fn list(conn: &mut AsyncPgConnection, all: bool) -> Result<Vec<ApiKey>, StoreError> {
    let mut q = api_keys::table
        .select(ApiKey::as_select())
        .order(api_keys::id.desc())
        .into_boxed();
    if !all {
        q = q.filter(api_keys::revoked_at.is_null());
    }
    Ok(q.load(conn).await?)
}

/// Revokes the live key `name`; false when there is none.
pub async fn revoke(conn: &mut AsyncPgConnection, name: &str) -> Result<bool, StoreError> {
    let n = diesel::update(api_keys::table)
        .filter(api_keys::name.eq(name))
        .filter(api_keys::revoked_at.is_null())
        .set(api_keys::revoked_at.eq(diesel::dsl::now))
        .execute(conn)
        .await?;
    Ok(n > 0)
}

/// The live keys with their digests.
pub async fn live(conn: &mut AsyncPgConnection) -> Result<Vec<LiveKey>, StoreError> {
    Ok(api_keys::table
        .filter(api_keys::revoked_at.is_null())
        .select((
            api_keys::id,
            api_keys::name,
            api_keys::role,
            api_keys::seller,
            api_keys::secret_sha256,
        ))
        .load(conn)
        .await?)
}

/// Records that keys `ids` were used at `at` (never moving a time back).
pub async fn touch(conn: &mut AsyncPgConnection, ids: &[i64], at: DateTime<Utc>) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    diesel::update(api_keys::table)
        .filter(api_keys::id.eq_any(ids))
        .filter(api_keys::last_used_at.is_null().or(api_keys::last_used_at.lt(at)))
        .set(api_keys::last_used_at.eq(at))
        .execute(conn)
        .await?;
    Ok(())
}
