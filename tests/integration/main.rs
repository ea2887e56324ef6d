//! Integration tests against the real local stack (PostgreSQL, Redis, Kafka, OpenSearch).
//! Each test gets its own database, topic/group/index/key namespace and an HTTP port.

mod browser;
mod helpers;

mod access;
mod admission;
mod catalog_v2;
mod categories;
mod cli;
mod commands;
mod compose;
mod console;
mod disaster;
mod docs;
mod durability;
mod health;
mod idempotency;
mod kafka_outage;
mod near_cache;
mod ops;
mod ops_watch;
mod otlp;
mod outbox;
mod product_types;
mod products;
mod projection;
mod prometheus;
mod relays;
mod resilience;
mod roles;
mod search_v2;
mod secure;
mod sellers;
mod trace_context;
