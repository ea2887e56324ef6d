//! Product types for a caller: create and change (at most once per idempotency key, with
//! optimistic concurrency), read and list; and what decorates a search (the types and the
//! category tree, kept briefly). The rules are `domain::product_type`'s; whether
//! the products of a type still fit a change is `store::type_repo`'s to find out.

use std::sync::Arc;

use crate::domain::category::Category;
use crate::domain::product_type::{ProductType, TypeDefinition};
use crate::store::idempotency_repo::{self, Guarded, StoredResponse, Work};
use crate::store::{category_repo, pool, type_repo};

use super::catalog::{AppError, Catalog, Once};

/// A write of a product type.
#[derive(Debug, Clone)]
pub enum TypeWrite {
    /// A new type under `key`.
    Create {
        /// Its key.
        key: String,
        /// Its definition.
        definition: TypeDefinition,
    },
    /// A new definition for type `key`, at `expected` version when given.
    Change {
        /// The type.
        key: String,
        /// Apply only at this version.
        expected: Option<i64>,
        /// The new definition.
        definition: TypeDefinition,
    },
}

/// What a type write did.
#[derive(Debug)]
pub enum TypeWritten {
    /// Applied now.
    Applied(ProductType),
    /// The key was used before with the same request: its first answer.
    Replayed(StoredResponse),
}

impl TypeWrite {
    fn work(self) -> Work<ProductType> {
        Box::new(move |conn| {
            Box::pin(async move {
                match self {
                    Self::Create { key, definition } => type_repo::create(conn, &key, &definition).await,
                    Self::Change {
                        key,
                        expected,
                        definition,
                    } => type_repo::change(conn, &key, expected, &definition).await,
                }
            })
        })
    }
}

impl Catalog {
    /// Runs a type write, at most once per key with `once`.
    pub async fn write_type(&self, w: TypeWrite, once: Option<Once<ProductType>>) -> Result<TypeWritten, AppError> {
        // A definition that breaks a rule on its own is refused before any precondition
        // (the version, the products of the type) is looked at.
        let definition = match &w {
            TypeWrite::Create { definition, .. } | TypeWrite::Change { definition, .. } => definition,
        };
        crate::domain::product_type::check_definition(definition)?;
        let mut conn = pool::get(&self.pool).await?;
        let Some(once) = once else {
            let written = w.work()(&mut conn).await;
            self.decorations.types.forget();
            return Ok(TypeWritten::Applied(written?));
        };
        let guarded = idempotency_repo::execute_once(
            &mut conn,
            &once.scope,
            &once.fingerprint,
            self.settings.idempotency_ttl,
            w.work(),
            once.remember,
        )
        .await;
        // Forgotten whatever the outcome: a write that failed late may still have committed.
        self.decorations.types.forget();
        match guarded? {
            Guarded::Executed(t) => Ok(TypeWritten::Applied(t)),
            Guarded::Replayed(r) => Ok(TypeWritten::Replayed(r)),
            Guarded::KeyReused => Err(AppError::KeyReused),
            Guarded::InFlight => Err(AppError::KeyInFlight),
        }
    }

    /// The type `key`, if it exists.
    pub async fn find_type(&self, key: &str) -> Result<Option<ProductType>, AppError> {
        let mut conn = pool::get(&self.pool).await?;
        Ok(type_repo::find(&mut conn, key).await?)
    }

    /// Every type, by key.
    pub async fn list_types(&self) -> Result<Vec<ProductType>, AppError> {
        let mut conn = pool::get(&self.pool).await?;
        Ok(type_repo::list(&mut conn).await?)
    }

    /// Every type, as read at most [`DECORATION_TTL`](super::recent::DECORATION_TTL) ago (a
    /// type written through this process shows at once): for what only decorates an answer.
    pub async fn recent_types(&self) -> Result<Arc<Vec<ProductType>>, AppError> {
        self.decorations.types.get_or_load(|| self.list_types()).await
    }

    /// Every category, as read at most [`DECORATION_TTL`](super::recent::DECORATION_TTL) ago
    /// (call [`categories_changed`](Self::categories_changed) after a change).
    pub async fn recent_categories(&self) -> Result<Arc<Vec<Category>>, AppError> {
        self.decorations
            .categories
            .get_or_load(|| async {
                let mut conn = pool::get(&self.pool).await?;
                Ok(category_repo::list(&mut conn).await?)
            })
            .await
    }

    /// Forgets the category tree read last: a category was created or changed.
    pub fn categories_changed(&self) {
        self.decorations.categories.forget();
    }
}
