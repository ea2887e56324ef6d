//! PostgreSQL adapter: pool and migrations, the product repository (state + outbox + command
//! outcome in one transaction), the outbox queue used by the relay, and operator audit tables.

pub mod api_key_repo;
pub mod audit_repo;
pub mod backfill;
pub mod category_repo;
pub mod command_repo;
pub mod history_repo;
pub mod idempotency_repo;
pub mod outbox_listener;
pub mod outbox_marker;
pub mod outbox_repo;
pub mod outbox_slices;
pub mod pg_tls;
pub mod pool;
pub mod prepared;
pub mod product_repo;
mod product_row;
pub mod rebuild_repo;
pub mod reconcile_run_repo;
pub mod restore_repo;
pub mod schema;
pub mod snapshot_repo;
pub mod type_repo;

pub use pool::{build_pool, PgConn, PgPool};

use crate::domain::product::DomainError;
use crate::failure::{Classify, FailureClass};

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
    /// Something else the request names does not exist (a product type, ...).
    #[error("{0}")]
    Missing(String),
    /// The change conflicts with what is stored (a type that exists, products a type change
    /// would make invalid, ...).
    #[error("{0}")]
    Conflict(String),
    /// The aggregate refused the command.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// Stored data could not be decoded (a bug or manual edit).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// One failure shared by the callers of a batched read (`app::batcher`); it classifies
    /// as the failure itself.
    #[error(transparent)]
    Shared(std::sync::Arc<StoreError>),
}

impl StoreError {
    /// Worth retrying as is: the connection or the server failed, not the statement.
    pub fn is_transient(&self) -> bool {
        self.failure_class() == FailureClass::Transient
    }
}

/// Messages of PostgreSQL errors (SQLSTATE classes 08, 40, 53, 57) that diesel reports as
/// `Unknown` because it does not map their codes: the connection or server failed.
const TRANSIENT_MESSAGES: &[&str] = &[
    "terminating connection",
    "the database system is",
    "connection",
    "deadlock detected",
    "could not serialize",
    "too many clients",
    "out of shared memory",
    "server closed",
    // statement_timeout or lock_timeout: the statement was cancelled and its transaction rolled
    // back, nothing applied; the database was too slow, not the request wrong (a 503, not 500).
    "canceling statement",
];

impl Classify for StoreError {
    /// Connection-level failures are transient (server down, pool timeout, connection closed
    /// or terminated, serialization failure, read-only during a failover). Constraint
    /// violations and refused values are permanent; an unrecognised database error is
    /// ambiguous (retried a few times, then permanent).
    fn failure_class(&self) -> FailureClass {
        use diesel::result::{DatabaseErrorKind as K, Error};
        match self {
            Self::Pool(_) => FailureClass::Transient,
            Self::Query(Error::DatabaseError(kind, info)) => match kind {
                K::SerializationFailure | K::ClosedConnection | K::UnableToSendCommand | K::ReadOnlyTransaction => {
                    FailureClass::Transient
                }
                K::Unknown => {
                    let m = info.message().to_ascii_lowercase();
                    if TRANSIENT_MESSAGES.iter().any(|t| m.contains(t)) {
                        FailureClass::Transient
                    } else {
                        FailureClass::Ambiguous
                    }
                }
                _ => FailureClass::Permanent,
            },
            Self::Query(Error::BrokenTransactionManager) => FailureClass::Transient,
            Self::Shared(e) => e.failure_class(),
            Self::Query(_)
            | Self::Migration(_)
            | Self::VersionConflict { .. }
            | Self::SkuTaken(_)
            | Self::NotFound
            | Self::Missing(_)
            | Self::Conflict(_)
            | Self::Domain(_)
            | Self::Corrupt(_) => FailureClass::Permanent,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::result::{DatabaseErrorKind as K, Error};

    fn db(kind: K, message: &str) -> StoreError {
        StoreError::Query(Error::DatabaseError(kind, Box::new(message.to_owned())))
    }

    #[test]
    fn a_dropped_connection_is_transient() {
        // What diesel-async reports when the server closed the socket (issue 9, defect 5).
        assert!(db(K::UnableToSendCommand, "connection closed").is_transient());
        assert!(db(K::ClosedConnection, "").is_transient());
        assert!(db(K::Unknown, "terminating connection due to administrator command").is_transient());
        assert!(db(K::Unknown, "the database system is shutting down").is_transient());
        assert!(StoreError::Pool("timed out".into()).is_transient());
        // A statement the server cancelled (statement_timeout, lock_timeout): rolled back.
        assert!(db(K::Unknown, "canceling statement due to statement timeout").is_transient());
        assert!(db(K::Unknown, "canceling statement due to lock timeout").is_transient());
    }

    #[test]
    fn a_value_postgres_cannot_store_is_not_transient() {
        // Issue 9, defect 1: this was retried for ever.
        let e = db(K::Unknown, "invalid byte sequence for encoding \"UTF8\": 0x00");
        assert_eq!(e.failure_class(), FailureClass::Ambiguous);
        assert!(!e.is_transient());
        assert_eq!(db(K::CheckViolation, "check").failure_class(), FailureClass::Permanent);
        assert_eq!(db(K::UniqueViolation, "dup").failure_class(), FailureClass::Permanent);
        assert_eq!(StoreError::NotFound.failure_class(), FailureClass::Permanent);
    }

    #[test]
    fn a_shared_failure_classifies_as_the_failure_itself() {
        let shared = |e| StoreError::Shared(std::sync::Arc::new(e));
        assert!(shared(StoreError::Pool("timed out".into())).is_transient());
        assert_eq!(shared(StoreError::NotFound).failure_class(), FailureClass::Permanent);
        assert_eq!(
            shared(StoreError::Pool("timed out".into())).to_string(),
            "database unavailable: timed out"
        );
    }
}
