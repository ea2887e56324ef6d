//! aliexpress: a product catalog on CQRS and events.
//!
//! Write side: every change to a product runs through the pure aggregate in [`domain`]; the
//! new state, its event and the command outcome are committed to Postgres together with an
//! outbox row in one transaction ([`store::product_repo`]). Requests arrive over HTTP
//! ([`http`]) or as commands on `product.commands` ([`worker::commands`]).
//!
//! The outbox relay ([`worker::outbox_relay`], `process-outbox`) publishes outbox rows to
//! `product.events`, keyed by product id so each product's events stay ordered.
//!
//! Read side: the projection ([`worker::projection`]) writes each event's full
//! state to OpenSearch ([`search`]) and Redis ([`cache`]), versioned by aggregate version so
//! duplicates, replays and reordering never make it wrong. Unusable messages go to DLQ topics.
//!
//! Between the edges and the adapters, the application layer ([`app`]) runs a write (load,
//! decide, save with its outbox row) and a read (cache, then database) the same way for
//! every caller.
//!
//! Operations ([`ops`]): replay (offset rewinds), consumer-group lag, DLQ tools, status.
//! Dependencies point inward: `domain` does no I/O; `store`, `bus`, `search`, `cache` are
//! adapters, each building its clients from its own settings struct in [`config`] (a leaf
//! that knows no adapter); `worker` and `http` compose them; `cli` wires everything.
//! [`names`] (topic, group, index and key names) and [`secret`] (values never printed) are
//! leaves every layer may use.

pub mod app;
pub mod bus;
pub mod cache;
pub mod cli;
pub mod config;
pub mod domain;
pub mod failure;
pub mod fuzzing;
pub mod http;
pub mod identity;
pub mod names;
pub mod ops;
pub mod schema;
pub mod search;
pub mod secret;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod worker;
