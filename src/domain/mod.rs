//! Domain logic. Knows nothing of Kafka, HTTP, SQL, Redis or OpenSearch.

pub mod access;
pub mod category;
pub mod product;
pub mod product_type;
