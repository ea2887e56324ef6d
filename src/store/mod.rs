//! PostgreSQL adapter: pool and migrations, the product repository (state + outbox + command
//! outcome in one transaction), the outbox queue used by the relay, and operator audit tables.

pub mod command_repo;
pub mod idempotency_repo;
pub mod outbox_repo;
pub mod pool;
pub mod product_repo;
pub mod rebuild_repo;
pub mod schema;

pub use pool::{build_pool, PgConn, PgPool};

use crate::domain::product::DomainError;

/// Failures of the store layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No connection could be had (pool exhausted, server down, timeout).
    #[error("database unavailable: {0}")]
    Pool(String),
    /// A query failed.
    #[error("database query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// Migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// The expected version did not match the stored one.
    #[error("version conflict: expected {expected}, current {actual}")]
    VersionConflict {
        /// Version the caller based its change on.
        expected: i64,
        /// Version in the database.
        actual: i64,
    },
    /// Another product already uses this sku.
    #[error("sku {0:?} is already used by another product")]
    SkuTaken(String),
    /// The product does not exist.
    #[error("product not found")]
    NotFound,
    /// The aggregate refused the command.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Stored data could not be decoded (a bug or manual edit).
    #[error("corrupt row: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Connection-level failures worth retrying (server down, pool timeout, serialization).
    pub fn is_transient(&self) -> bool {
        use diesel::result::{DatabaseErrorKind, Error};
        match self {
            Self::Pool(_) => true,
            Self::Query(Error::DatabaseError(kind, _)) => matches!(
                kind,
                DatabaseErrorKind::SerializationFailure
                    | DatabaseErrorKind::ClosedConnection
                    | DatabaseErrorKind::Unknown
            ),
            Self::Query(Error::BrokenTransactionManager) => true,
            _ => false,
        }
    }
}
