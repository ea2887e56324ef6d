//! Rule violations of the product aggregate. Nothing here is an I/O failure.

use super::value::ProductStatus;

/// A command the aggregate refuses, with the field and reason where one applies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// A field breaks an invariant (length, range, format).
    #[error("invalid {field}: {reason}")]
    Invalid {
        /// Dotted path of the offending field, e.g. `price.currency`.
        field: &'static str,
        /// Human-readable reason.
        reason: String,
    },
    /// The command needs a product that does not exist yet.
    #[error("product does not exist")]
    NotCreated,
    /// CreateProduct sent to an existing product.
    #[error("product already exists")]
    AlreadyCreated,
    /// Archived products accept no further change.
    #[error("product is archived and accepts no further change")]
    Archived,
    /// A status change that the lifecycle forbids.
    #[error("cannot move product from {from} to {to}")]
    InvalidTransition {
        /// Current status.
        from: ProductStatus,
        /// Requested status.
        to: ProductStatus,
    },
    /// The product lacks what the command needs (publishing without a price or title).
    #[error("{field}: {reason}")]
    Incomplete {
        /// The missing field.
        field: &'static str,
        /// What is missing.
        reason: String,
    },
    /// Another variant of this product already has this SKU.
    #[error("sku {0:?} is already used by another variant of this product")]
    DuplicateSku(String),
    /// The variants would no longer fit together (option names or values, or none left).
    #[error("{0}")]
    VariantConflict(String),
    /// The command names a variant the product does not have.
    #[error("product has no variant {variant_id}")]
    VariantNotFound {
        /// The id named.
        variant_id: u32,
    },
    /// Stock would fall below zero.
    #[error("insufficient stock: have {available}, adjustment {delta}")]
    InsufficientStock {
        /// Stock before the adjustment.
        available: i64,
        /// The requested delta.
        delta: i64,
    },
    /// The caller acts for a seller that owns no product of this id (another seller's
    /// product answers like a missing one, so its existence does not leak).
    #[error("product does not exist for seller {0:?}")]
    NotFoundForSeller(String),
    /// The caller's roles do not allow this command.
    #[error("not allowed: {0}")]
    NotAllowed(String),
}

impl DomainError {
    /// Shorthand for [`DomainError::Invalid`].
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// The field this error concerns, when it concerns one.
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Invalid { field, .. } | Self::Incomplete { field, .. } => Some(field),
            Self::InsufficientStock { .. } => Some("delta"),
            Self::DuplicateSku(_) => Some("sku"),
            Self::VariantConflict(_) | Self::VariantNotFound { .. } => Some("variant"),
            Self::InvalidTransition { .. } => Some("status"),
            _ => None,
        }
    }

    /// A stable machine-readable code for API clients and the commands table.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Invalid { .. } => "invalid_field",
            Self::NotCreated => "not_created",
            Self::AlreadyCreated => "already_created",
            Self::Archived => "archived",
            Self::InvalidTransition { .. } => "invalid_transition",
            Self::InsufficientStock { .. } => "insufficient_stock",
            Self::Incomplete { .. } => "incomplete",
            Self::DuplicateSku(_) => "sku_taken",
            Self::VariantConflict(_) => "variant_conflict",
            Self::VariantNotFound { .. } => "variant_not_found",
            Self::NotFoundForSeller(_) => "not_created",
            Self::NotAllowed(_) => "not_allowed",
        }
    }
}
