//! The application layer: what the catalog does for a caller, between the edges (`http/`, and
//! later the consumers) and the adapters (`store/`, `cache/`). A handler translates HTTP into a
//! call here and the answer back; the rules of a write (validate, load–decide–save with its
//! outbox row in one transaction, at most once per idempotency key, write-through to the
//! cache once the database connection is released) and of a read (cache first, the database
//! as a fallback, a second look at the cache when both were slow) live here, once. Reads from
//! Postgres and writes to Redis are batched per worker ([`batcher`]).
//!
//! Nothing here knows HTTP: outcomes are plain enums ([`catalog::Written`], [`catalog::Read`])
//! and failures an [`AppError`] that the edge maps to its own error shape.

pub mod batcher;
pub mod catalog;
pub mod execute;
pub mod recent;
pub mod types;

pub use catalog::{AppError, Catalog, CatalogSettings};
pub use execute::{ExecuteOptions, ExecuteOutcome};
