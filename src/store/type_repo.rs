//! Product types (`product_types`). A product write reads its type `FOR SHARE`
//! ([`for_product`]); a type change locks the type `FOR UPDATE`, so no product of the type is
//! written meanwhile, checks every product of the type against the changed type, and refuses
//! the change when one would no longer fit ([`change`]).

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::result::{DatabaseErrorKind, Error as DieselError};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::product_repo;
use super::schema::product_types;
use super::StoreError;
use crate::domain::product_type::{self, ProductType, TypeDefinition};

/// Products checked per query while a type change looks at the products of the type.
const CHECK_BATCH: i64 = 500;
/// Products a refused type change names.
const NAMED: usize = 5;

#[derive(Queryable, Selectable, Insertable, AsChangeset)]
#[diesel(table_name = product_types, check_for_backend(diesel::pg::Pg))]
struct TypeRow {
    key: String,
    name: String,
    attributes: serde_json::Value,
    version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TypeRow {
    fn from_type(t: &ProductType) -> Self {
        Self {
            key: t.key.clone(),
            name: t.name.clone(),
            attributes: serde_json::to_value(&t.attributes).unwrap_or_default(),
            version: t.version,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }

    fn into_type(self) -> Result<ProductType, StoreError> {
        let attributes = serde_json::from_value(self.attributes)
            .map_err(|e| StoreError::Corrupt(format!("product type {} attributes: {e}", self.key)))?;
        Ok(ProductType {
            key: self.key,
            name: self.name,
            attributes,
            version: self.version,
            created_at: self.created_at,
            updated_at: self.updated_at,
        })
    }
}

/// The type `key`, if it exists.
pub async fn find(conn: &mut AsyncPgConnection, key: &str) -> Result<Option<ProductType>, StoreError> {
    product_types::table
        .find(key)
        .select(TypeRow::as_select())
        .first(conn)
        .await
        .optional()?
        .map(TypeRow::into_type)
        .transpose()
}

/// Every type, by key.
pub async fn list(conn: &mut AsyncPgConnection) -> Result<Vec<ProductType>, StoreError> {
    product_types::table
        .order(product_types::key.asc())
        .select(TypeRow::as_select())
        .load(conn)
        .await?
        .into_iter()
        .map(TypeRow::into_type)
        .collect()
}

/// The type a product write checks against, read `FOR SHARE` (a change of the type waits for
/// the write, and the write for the change); a type that does not exist is a rule broken.
pub async fn for_product(conn: &mut AsyncPgConnection, key: &str) -> Result<ProductType, StoreError> {
    product_types::table
        .find(key)
        .select(TypeRow::as_select())
        .for_share()
        .first(conn)
        .await
        .optional()?
        .map(TypeRow::into_type)
        .transpose()?
        .ok_or_else(|| {
            StoreError::Domain(crate::domain::product::DomainError::invalid(
                "product_type",
                format!("there is no product type {key:?}"),
            ))
        })
}

/// Creates a type; a key in use is a conflict.
pub async fn create(conn: &mut AsyncPgConnection, key: &str, d: &TypeDefinition) -> Result<ProductType, StoreError> {
    let t = product_type::create(key, d, Utc::now())?;
    match diesel::insert_into(product_types::table)
        .values(TypeRow::from_type(&t))
        .execute(conn)
        .await
    {
        Ok(_) => Ok(t),
        Err(DieselError::DatabaseError(DatabaseErrorKind::UniqueViolation, _)) => {
            Err(StoreError::Conflict(format!("product type {key:?} exists already")))
        }
        Err(e) => Err(e.into()),
    }
}

/// Replaces the definition of type `key` (at `expected` version, when given), unless a
/// product of the type would no longer fit it.
pub async fn change(
    conn: &mut AsyncPgConnection,
    key: &str,
    expected: Option<i64>,
    d: &TypeDefinition,
) -> Result<ProductType, StoreError> {
    let (key, d) = (key.to_owned(), d.clone());
    conn.transaction::<_, StoreError, _>(async move |conn| {
        let current = product_types::table
            .find(&key)
            .select(TypeRow::as_select())
            .for_update()
            .first(conn)
            .await
            .optional()?
            .map(TypeRow::into_type)
            .transpose()?
            .ok_or_else(|| StoreError::Missing(format!("product type {key:?} not found")))?;
        if let Some(expected) = expected.filter(|e| *e != current.version) {
            return Err(StoreError::VersionConflict {
                expected,
                actual: current.version,
            });
        }
        let next = product_type::decide_change(&current, &d, Utc::now())?;
        let broken = products_broken_by(conn, &next).await?;
        if !broken.is_empty() {
            return Err(StoreError::Conflict(format!(
                "the change would make products of type {key:?} invalid; change them first: {}",
                broken.join("; ")
            )));
        }
        diesel::update(product_types::table.find(&key))
            .set(TypeRow::from_type(&next))
            .execute(conn)
            .await?;
        Ok(next)
    })
    .await
}

/// Up to [`NAMED`] products of `t`'s type that do not fit `t`, each with the reason.
async fn products_broken_by(conn: &mut AsyncPgConnection, t: &ProductType) -> Result<Vec<String>, StoreError> {
    let mut broken = Vec::new();
    let mut after: Option<Uuid> = None;
    loop {
        let page = product_repo::of_type(conn, &t.key, after, CHECK_BATCH).await?;
        for p in &page {
            if let Err(e) = product_type::check(t, p) {
                broken.push(format!("product {}: {e}", p.id));
                if broken.len() == NAMED {
                    return Ok(broken);
                }
            }
        }
        match page.last() {
            Some(p) if page.len() as i64 == CHECK_BATCH => after = Some(p.id),
            _ => return Ok(broken),
        }
    }
}
