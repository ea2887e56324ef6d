//! Connection pool gauges, read from the pools themselves at scrape time.
//!
//! Every deadpool pool the process builds (Postgres in `store::pool::build_pool`, Redis in
//! `cache::product_cache`) is [`watch`]ed under its kind; a scrape sums the pools of each kind
//! (`serve` has one pair per HTTP worker) into:
//!
//! | metric | deadpool `Status` field |
//! |---|---|
//! | `aliexpress_pool_max_connections{pool}` | `max_size` |
//! | `aliexpress_pool_connections{pool}` | `size` (open) |
//! | `aliexpress_pool_idle_connections{pool}` | `available` (open, not checked out) |
//! | `aliexpress_pool_waiting_requests{pool}` | `waiting` (callers waiting for a connection) |
//!
//! Only a weak reference is kept: a dropped pool disappears from the sums, and watching costs
//! nothing between scrapes.

use deadpool::managed::{Manager, Pool};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};
use std::sync::{Mutex, PoisonError};

/// `pool` label of the Postgres pools.
pub const POSTGRES: &str = "postgres";
/// `pool` label of the Redis pools.
pub const REDIS: &str = "redis";

type StatusFn = Box<dyn Fn() -> Option<deadpool::Status> + Send + Sync>;

/// Pools watched so far: (kind, status of the pool while it lives).
static WATCHED: Mutex<Vec<(&'static str, StatusFn)>> = Mutex::new(Vec::new());

/// Adds `pool` to the gauges of `kind` ([`POSTGRES`], [`REDIS`]) for as long as it lives.
pub fn watch<M: Manager + 'static>(kind: &'static str, pool: &Pool<M>) {
    let weak = pool.weak();
    let status: StatusFn = Box::new(move || weak.upgrade().map(|p| p.status()));
    WATCHED
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push((kind, status));
}

/// The summed status of each kind's living pools (kinds with none are left out); forgets the
/// pools that were dropped.
pub fn totals() -> Vec<(&'static str, deadpool::Status)> {
    let mut watched = WATCHED.lock().unwrap_or_else(PoisonError::into_inner);
    let mut out: Vec<(&'static str, deadpool::Status)> = Vec::new();
    watched.retain(|(kind, status)| {
        let Some(s) = status() else { return false };
        match out.iter_mut().find(|(k, _)| k == kind) {
            Some((_, t)) => {
                t.max_size += s.max_size;
                t.size += s.size;
                t.available += s.available;
                t.waiting += s.waiting;
            }
            None => out.push((kind, s)),
        }
        true
    });
    out
}

/// The four gauges, filled from [`totals`] on every collect.
pub(super) struct PoolCollector {
    max: IntGaugeVec,
    open: IntGaugeVec,
    idle: IntGaugeVec,
    waiting: IntGaugeVec,
}

fn gauge(name: &str, help: &str) -> IntGaugeVec {
    // The names and the one label are constants: this cannot fail.
    IntGaugeVec::new(Opts::new(name, help), &["pool"]).expect("pool gauge")
}

impl PoolCollector {
    pub(super) fn new() -> Self {
        Self {
            max: gauge(
                "aliexpress_pool_max_connections",
                "Most connections the process's pools of this kind may open",
            ),
            open: gauge(
                "aliexpress_pool_connections",
                "Connections open in the process's pools of this kind",
            ),
            idle: gauge(
                "aliexpress_pool_idle_connections",
                "Open connections not checked out of the process's pools of this kind",
            ),
            waiting: gauge(
                "aliexpress_pool_waiting_requests",
                "Callers waiting for a connection from the process's pools of this kind",
            ),
        }
    }

    fn all(&self) -> [&IntGaugeVec; 4] {
        [&self.max, &self.open, &self.idle, &self.waiting]
    }
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.all().into_iter().flat_map(Collector::desc).collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        for g in self.all() {
            g.reset();
        }
        for (kind, s) in totals() {
            let n = |v: usize| i64::try_from(v).unwrap_or(i64::MAX);
            self.max.with_label_values(&[kind]).set(n(s.max_size));
            self.open.with_label_values(&[kind]).set(n(s.size));
            self.idle.with_label_values(&[kind]).set(n(s.available));
            self.waiting.with_label_values(&[kind]).set(n(s.waiting));
        }
        self.all().into_iter().flat_map(Collector::collect).collect()
    }
}
