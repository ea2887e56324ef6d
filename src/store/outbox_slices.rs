//! Ownership of outbox slices among relays.
//!
//! Every outbox row has a slice (`0..OUTBOX_SLICES`, fixed at insert from its product id:
//! see the migration). Relays share the slices through Postgres alone:
//! - a relay *joins* by taking a shared advisory lock, so the number of live relays is the
//!   number of sessions holding it ([`live_relays`]);
//! - a slice belongs to the session holding its exclusive advisory lock ([`try_take`]); the
//!   lock ends with the session, so a relay that dies or loses its connection lets go at once;
//! - `outbox_slice_owners` records who took each slice and whether it was let go cleanly, so
//!   the next owner knows when the previous one may still have had a batch in flight.
//!
//! Balancing is left to the relays: each aims at `ceil(OUTBOX_SLICES / live relays)` slices,
//! lets go of extras between batches and takes free ones (see `worker::outbox_relay`).

use diesel::sql_types::{BigInt, Bool, Integer, SmallInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::StoreError;

/// Number of outbox slices (the migration's `& 63`).
pub const OUTBOX_SLICES: i16 = 64;

/// Advisory lock class (first key) of the slice locks; the second key is the slice.
const SLICE_LOCK_CLASS: i32 = 0x616c_0001;
/// Advisory lock class of relay membership (shared lock, second key 0).
const MEMBER_LOCK_CLASS: i32 = 0x616c_0002;

/// How a slice was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Takeover {
    /// Nobody had it, or its previous owner let go cleanly.
    Clean,
    /// Its previous owner (named) lost its session while it held the slice (crash, kill,
    /// lost connection): that relay may still have had a batch in flight.
    FromLostOwner(String),
}

/// Joins the relays (shared lock held for the session's life).
pub async fn join(conn: &mut AsyncPgConnection) -> Result<(), StoreError> {
    diesel::sql_query("SELECT pg_advisory_lock_shared($1, 0)")
        .bind::<Integer, _>(MEMBER_LOCK_CLASS)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Relays that have joined on this database (this session included).
pub async fn live_relays(conn: &mut AsyncPgConnection) -> Result<i64, StoreError> {
    let c: Count = diesel::sql_query(
        "SELECT count(DISTINCT pid) AS n FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND classid::bigint = $1 AND objid::bigint = 0 AND objsubid = 2 \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind::<BigInt, _>(i64::from(MEMBER_LOCK_CLASS))
    .get_result(conn)
    .await?;
    Ok(c.n)
}

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = Bool)]
    taken: bool,
}

#[derive(QueryableByName)]
struct Previous {
    #[diesel(sql_type = diesel::sql_types::Nullable<Text>)]
    lost_owner: Option<String>,
}

/// Tries to take `slice` for `owner`; `None` when another session holds it.
pub async fn try_take(conn: &mut AsyncPgConnection, slice: i16, owner: &str) -> Result<Option<Takeover>, StoreError> {
    let t: Locked = diesel::sql_query("SELECT pg_try_advisory_lock($1, $2) AS taken")
        .bind::<Integer, _>(SLICE_LOCK_CLASS)
        .bind::<Integer, _>(i32::from(slice))
        .get_result(conn)
        .await?;
    if !t.taken {
        return Ok(None);
    }
    // Holding the lock, this session is the only writer of the slice's row.
    let r: Previous = diesel::sql_query(
        "WITH prev AS (SELECT owner, released_at FROM outbox_slice_owners WHERE slice = $1), \
              up AS (INSERT INTO outbox_slice_owners (slice, owner, acquired_at, released_at) \
                     VALUES ($1, $2, now(), NULL) \
                     ON CONFLICT (slice) DO UPDATE SET owner = EXCLUDED.owner, acquired_at = now(), released_at = NULL) \
         SELECT (SELECT owner FROM prev WHERE released_at IS NULL) AS lost_owner",
    )
    .bind::<SmallInt, _>(slice)
    .bind::<Text, _>(owner)
    .get_result(conn)
    .await?;
    Ok(Some(match r.lost_owner {
        Some(owner) => Takeover::FromLostOwner(owner),
        None => Takeover::Clean,
    }))
}

/// Lets go of `slice` cleanly (recorded, then unlocked).
pub async fn release(conn: &mut AsyncPgConnection, slice: i16) -> Result<(), StoreError> {
    diesel::sql_query("UPDATE outbox_slice_owners SET released_at = now() WHERE slice = $1")
        .bind::<SmallInt, _>(slice)
        .execute(conn)
        .await?;
    diesel::sql_query("SELECT pg_advisory_unlock($1, $2)")
        .bind::<Integer, _>(SLICE_LOCK_CLASS)
        .bind::<Integer, _>(i32::from(slice))
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(QueryableByName)]
struct Slice {
    #[diesel(sql_type = SmallInt)]
    slice: i16,
}

/// Slices whose lock some session holds now.
pub async fn held(conn: &mut AsyncPgConnection) -> Result<Vec<i16>, StoreError> {
    let rows: Vec<Slice> = diesel::sql_query(
        "SELECT objid::bigint::smallint AS slice FROM pg_locks \
         WHERE locktype = 'advisory' AND granted AND classid::bigint = $1 AND objsubid = 2 \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .bind::<BigInt, _>(i64::from(SLICE_LOCK_CLASS))
    .load(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.slice).collect())
}

/// A slice and the relay that holds it now (operators' view).
#[derive(Debug, Clone, QueryableByName, serde::Serialize)]
pub struct SliceOwner {
    /// Slice number.
    #[diesel(sql_type = SmallInt)]
    pub slice: i16,
    /// The owner's name (host, pid and a random suffix).
    #[diesel(sql_type = Text)]
    pub owner: String,
}

/// Slices held right now (an owner row whose lock is held), by slice.
pub async fn current_owners(conn: &mut AsyncPgConnection) -> Result<Vec<SliceOwner>, StoreError> {
    Ok(diesel::sql_query(
        "SELECT o.slice, o.owner FROM outbox_slice_owners o \
         WHERE o.released_at IS NULL AND EXISTS (SELECT 1 FROM pg_locks l \
           WHERE l.locktype = 'advisory' AND l.granted AND l.classid::bigint = $1 AND l.objid::bigint = o.slice \
             AND l.objsubid = 2 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())) \
         ORDER BY o.slice",
    )
    .bind::<BigInt, _>(i64::from(SLICE_LOCK_CLASS))
    .load(conn)
    .await?)
}
