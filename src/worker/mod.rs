//! Long-running loops. The two consumers are handlers on one engine (`engine`: the dispatcher
//! and its lanes); the relay has one driver for both of its modes (`outbox_relay::drive`).
//! Every backoff comes from `failure::RetryPolicy` (or, for a count stored with a row,
//! `failure::delay_for_attempt`).

pub mod category_fanout;
pub mod commands;
pub mod drift_watch;
pub mod engine;
pub mod outbox_relay;
pub mod projection;
pub mod shutdown;

pub use shutdown::Shutdown;
