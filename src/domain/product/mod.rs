//! The product aggregate: state, commands, events, rules. Pure and synchronous.
//!
//! Events are at schema version [`SCHEMA_VERSION`]; [`upcast`] reads every older version into
//! the current one (`v1` holds the frozen types of version 1), and [`history`] tells what
//! changed between two states.

pub mod aggregate;
pub mod command;
pub mod error;
pub mod event;
pub mod history;
pub mod upcast;
pub mod v1;
pub mod value;
mod variants;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod variant_tests;

pub use aggregate::{decide, evolve, execute, validate, Product};
pub use command::{CreateProduct, NewVariant, ProductCommand, UpdateProductDetails, UpdateVariant, DEFAULT_OWNER};
pub use error::DomainError;
pub use event::{EventEnvelope, EventMeta, ProductChange, EVENT_TYPES, SCHEMA_VERSION};
pub use value::{
    bounded_text, required_text, AttributeValue, CategoryNode, Money, ProductStatus, Variant, SHORT_TEXT_MAX_CHARS,
};
pub use value::{
    ATTRIBUTES_MAX, DESCRIPTION_MAX_CHARS, KNOWN_CURRENCIES, MAX_QUANTITY, OPTIONS_MAX, REQUIRED_TEXT_PATTERN,
    TEXT_PATTERN, TITLE_MAX_CHARS, VARIANTS_MAX,
};
