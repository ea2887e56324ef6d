//! The product aggregate: state, commands, events, rules. Pure and synchronous.

pub mod aggregate;
pub mod command;
pub mod error;
pub mod event;
pub mod value;

#[cfg(test)]
mod tests;

pub use aggregate::{decide, evolve, execute, validate, Product};
pub use command::{CreateProduct, ProductCommand, UpdateProductDetails};
pub use error::DomainError;
pub use event::{EventEnvelope, EventMeta, ProductChange, EVENT_TYPES, SCHEMA_VERSION};
pub use value::{bounded_text, Money, ProductStatus, SHORT_TEXT_MAX_CHARS};
pub use value::{
    ATTRIBUTES_MAX, DESCRIPTION_MAX_CHARS, KNOWN_CURRENCIES, MAX_QUANTITY, REQUIRED_TEXT_PATTERN, TEXT_PATTERN,
    TITLE_MAX_CHARS,
};
