//! The category tree (`categories`) and its fan-outs (`category_fanouts`): a category created,
//! renamed or moved records a fan-out in the same transaction, and `worker::category_fanout`
//! gives every product under it its new path through the product's own command.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel::sql_types::{BigInt, Text, Uuid as SqlUuid};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::schema::{categories, category_fanouts};
use super::StoreError;
use crate::domain::category::{self, Category, CategoryChange};
use crate::domain::product::CategoryNode;

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = categories, check_for_backend(diesel::pg::Pg), treat_none_as_null = true)]
struct CategoryRow {
    id: Uuid,
    parent_id: Option<Uuid>,
    slug: String,
    name: String,
    position: i32,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<CategoryRow> for Category {
    fn from(r: CategoryRow) -> Self {
        Self {
            id: r.id,
            parent_id: r.parent_id,
            slug: r.slug,
            name: r.name,
            position: r.position,
            version: r.version,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

impl From<&Category> for CategoryRow {
    fn from(c: &Category) -> Self {
        Self {
            id: c.id,
            parent_id: c.parent_id,
            slug: c.slug.clone(),
            name: c.name.clone(),
            position: c.position,
            version: c.version,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

#[derive(QueryableByName)]
struct NodeRow {
    #[diesel(sql_type = SqlUuid)]
    id: Uuid,
    #[diesel(sql_type = Text)]
    slug: String,
    #[diesel(sql_type = Text)]
    name: String,
}

#[derive(QueryableByName)]
struct Depth {
    #[diesel(sql_type = BigInt)]
    depth: i64,
}

/// The path of category `id`, root first (empty when there is no such category).
pub async fn path_of(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Vec<CategoryNode>, StoreError> {
    let rows: Vec<NodeRow> = diesel::sql_query(
        "WITH RECURSIVE up AS ( \
             SELECT id, parent_id, slug, name, 0 AS depth FROM categories WHERE id = $1 \
             UNION ALL \
             SELECT c.id, c.parent_id, c.slug, c.name, up.depth + 1 FROM categories c JOIN up ON c.id = up.parent_id \
               WHERE up.depth < 64) \
         SELECT id, slug, name FROM up ORDER BY depth DESC",
    )
    .bind::<SqlUuid, _>(id)
    .load(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| CategoryNode {
            id: r.id,
            slug: r.slug,
            name: r.name,
        })
        .collect())
}

/// How many levels the deepest descendant of `id` sits below it (0: none).
async fn depth_below(conn: &mut AsyncPgConnection, id: Uuid) -> Result<usize, StoreError> {
    let d: Depth = diesel::sql_query(
        "WITH RECURSIVE down AS ( \
             SELECT id, 0 AS depth FROM categories WHERE id = $1 \
             UNION ALL \
             SELECT c.id, down.depth + 1 FROM categories c JOIN down ON c.parent_id = down.id WHERE down.depth < 64) \
         SELECT max(depth)::bigint AS depth FROM down",
    )
    .bind::<SqlUuid, _>(id)
    .get_result(conn)
    .await?;
    Ok(usize::try_from(d.depth).unwrap_or(0))
}

/// The category with slug `slug`.
pub async fn by_slug(conn: &mut AsyncPgConnection, slug: &str) -> Result<Option<Category>, StoreError> {
    Ok(categories::table
        .filter(categories::slug.eq(slug))
        .select(CategoryRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(Category::from))
}

/// The category `id`.
pub async fn find(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Option<Category>, StoreError> {
    Ok(categories::table
        .find(id)
        .select(CategoryRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(Category::from))
}

/// Every category, parents before children among siblings by position.
pub async fn list(conn: &mut AsyncPgConnection) -> Result<Vec<Category>, StoreError> {
    Ok(categories::table
        .order((
            categories::parent_id.asc().nulls_first(),
            categories::position.asc(),
            categories::slug.asc(),
        ))
        .select(CategoryRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(Category::from)
        .collect())
}

/// The path a product with category `slug` sits on (empty: no such category in the tree).
pub async fn path_of_slug(conn: &mut AsyncPgConnection, slug: &str) -> Result<Vec<CategoryNode>, StoreError> {
    match by_slug(conn, slug).await? {
        Some(c) if !slug.is_empty() => path_of(conn, c.id).await,
        _ => Ok(Vec::new()),
    }
}

fn write_error(slug: &str, e: DieselError) -> StoreError {
    match e {
        DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => {
            StoreError::Conflict(format!("slug {slug:?} is already used by another category"))
        }
        e => e.into(),
    }
}

async fn record_fanout(conn: &mut AsyncPgConnection, id: Uuid) -> Result<(), StoreError> {
    diesel::insert_into(category_fanouts::table)
        .values(category_fanouts::category_id.eq(id))
        .execute(conn)
        .await?;
    Ok(())
}

/// Creates a category (under `parent_id`, which must exist); products already naming its slug
/// are placed in it by a fan-out.
pub async fn create(
    conn: &mut AsyncPgConnection,
    parent_id: Option<Uuid>,
    slug: &str,
    name: &str,
    position: i32,
) -> Result<Category, StoreError> {
    let (slug, name) = (slug.to_owned(), name.to_owned());
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let parent_path = match parent_id {
            None => Vec::new(),
            Some(p) => match path_of(conn, p).await? {
                path if path.is_empty() => return Err(StoreError::Missing(format!("parent category {p} not found"))),
                path => path,
            },
        };
        let c = category::create(
            Uuid::now_v7(),
            &parent_path,
            parent_id,
            &slug,
            &name,
            position,
            Utc::now(),
        )?;
        diesel::insert_into(categories::table)
            .values(CategoryRow::from(&c))
            .execute(conn)
            .await
            .map_err(|e| write_error(&c.slug, e))?;
        record_fanout(conn, c.id).await?;
        Ok(c)
    })
    .await
}

/// Renames or moves category `id` (at `expected` version when given); every product under it
/// gets its new path by a fan-out recorded in the same transaction.
pub async fn change(
    conn: &mut AsyncPgConnection,
    id: Uuid,
    expected: Option<i64>,
    change: &CategoryChange,
) -> Result<Category, StoreError> {
    let change = change.clone();
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let current: Category = categories::table
            .find(id)
            .select(CategoryRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?
            .map(Category::from)
            .ok_or_else(|| StoreError::Missing(format!("category {id} not found")))?;
        if let Some(expected) = expected.filter(|e| *e != current.version) {
            return Err(StoreError::VersionConflict {
                expected,
                actual: current.version,
            });
        }
        let new_parent_path = match change.parent_id {
            Some(Some(p)) => match path_of(conn, p).await? {
                path if path.is_empty() => return Err(StoreError::Missing(format!("parent category {p} not found"))),
                path => path,
            },
            _ => Vec::new(),
        };
        let below = depth_below(conn, id).await?;
        let next = category::decide_change(&current, &change, &new_parent_path, below, Utc::now())?;
        diesel::update(categories::table.find(id))
            .set(CategoryRow::from(&next))
            .execute(conn)
            .await
            .map_err(|e| write_error(&next.slug, e))?;
        record_fanout(conn, id).await?;
        Ok(next)
    })
    .await
}

/// A fan-out's progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fanout {
    /// Its id.
    pub id: i64,
    /// The category it is for.
    pub category_id: Uuid,
    /// Where it is (the last product id handled).
    pub cursor: Option<Uuid>,
    /// Products given a new path so far.
    pub products_done: i64,
    /// When it finished.
    pub done_at: Option<DateTime<Utc>>,
}

type FanoutRow = (i64, Uuid, Option<Uuid>, i64, Option<DateTime<Utc>>);

fn fanout((id, category_id, cursor, products_done, done_at): FanoutRow) -> Fanout {
    Fanout {
        id,
        category_id,
        cursor,
        products_done,
        done_at,
    }
}

/// The fan-outs of category `id` that have not finished.
pub async fn pending_fanouts(conn: &mut AsyncPgConnection, id: Uuid) -> Result<Vec<Fanout>, StoreError> {
    let rows: Vec<FanoutRow> = category_fanouts::table
        .filter(category_fanouts::category_id.eq(id))
        .filter(category_fanouts::done_at.is_null())
        .order(category_fanouts::id.asc())
        .select((
            category_fanouts::id,
            category_fanouts::category_id,
            category_fanouts::cursor_id,
            category_fanouts::products_done,
            category_fanouts::done_at,
        ))
        .load(conn)
        .await?;
    Ok(rows.into_iter().map(fanout).collect())
}

/// The oldest unfinished fan-out no one else holds, locked for the caller's transaction.
pub async fn claim_fanout(conn: &mut AsyncPgConnection) -> Result<Option<Fanout>, StoreError> {
    let row: Option<FanoutRow> = category_fanouts::table
        .filter(category_fanouts::done_at.is_null())
        .order(category_fanouts::id.asc())
        .select((
            category_fanouts::id,
            category_fanouts::category_id,
            category_fanouts::cursor_id,
            category_fanouts::products_done,
            category_fanouts::done_at,
        ))
        .for_update()
        .skip_locked()
        .first(conn)
        .await
        .optional()?;
    Ok(row.map(fanout))
}

/// Records a fan-out's progress; `done` finishes it.
pub async fn advance_fanout(
    conn: &mut AsyncPgConnection,
    id: i64,
    cursor: Option<Uuid>,
    added: i64,
    done: bool,
) -> Result<(), StoreError> {
    diesel::update(category_fanouts::table.find(id))
        .set((
            category_fanouts::cursor_id.eq(cursor),
            category_fanouts::products_done.eq(category_fanouts::products_done + added),
            category_fanouts::done_at.eq(done.then(Utc::now)),
        ))
        .execute(conn)
        .await?;
    Ok(())
}

/// Up to `limit` ids of products under category `c` (its id on their path, or its slug as
/// their category without a path yet) after `after`, in id order.
pub async fn products_under(
    conn: &mut AsyncPgConnection,
    c: &Category,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Uuid>, StoreError> {
    #[derive(QueryableByName)]
    struct Id {
        #[diesel(sql_type = SqlUuid)]
        id: Uuid,
    }
    let on_path = serde_json::json!([{ "id": c.id }]).to_string();
    let ids: Vec<Id> = diesel::sql_query(
        "SELECT id FROM products \
         WHERE (category_path @> $1::jsonb OR (category = $2 AND category_path = '[]'::jsonb)) \
           AND id > $3 ORDER BY id LIMIT $4",
    )
    .bind::<Text, _>(on_path)
    .bind::<Text, _>(&c.slug)
    .bind::<SqlUuid, _>(after.unwrap_or(Uuid::nil()))
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok(ids.into_iter().map(|i| i.id).collect())
}
