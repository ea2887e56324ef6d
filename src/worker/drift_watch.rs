//! The projection role's scheduled drift check (`--reconcile-every`): every period it compares
//! a random sample of products with OpenSearch and Redis ([`reconcile::check`]), looks again
//! after a grace period at what differed (a product written a moment ago may simply not be
//! projected yet; only what still differs is drift), exports the confirmed drift as
//! `aliexpress_reconcile_drift{store,kind}`, logs it, and records the run in `reconcile_runs`
//! for `status` and the console. It repairs nothing: `aliexpress reconcile --repair` does,
//! when an operator decides to. A store that does not answer fails the run (counted, logged);
//! the next period tries again.

use std::time::Duration;

use crate::ops::reconcile::{self, Drift, ReconcileDeps, Report, Scope};
use crate::store::pool;
use crate::store::reconcile_run_repo::{self, ReconcileRun};
use crate::telemetry::metrics::{RECONCILE_COMPARED, RECONCILE_DRIFT, RECONCILE_FAILURES, RECONCILE_LAST_RUN};
use crate::worker::Shutdown;

/// Stores and kinds the drift gauge always has a series for (0 when none).
const SERIES: [(&str, &[&str]); 2] = [
    ("opensearch", &["missing", "stale", "newer", "mismatched"]),
    ("redis", &["stale", "newer", "mismatched"]),
];

/// When and how much the check compares.
#[derive(Debug, Clone, Copy)]
pub struct DriftWatch {
    /// Time between runs.
    pub every: Duration,
    /// Products per run.
    pub sample: i64,
    /// Wait before the second look at what differed.
    pub grace: Duration,
}

impl DriftWatch {
    /// Runs a check every [`Self::every`] until `shutdown`.
    pub async fn run(self, d: ReconcileDeps, shutdown: Shutdown) {
        tracing::info!(every = ?self.every, sample = self.sample, "scheduled drift check on");
        while !shutdown.sleep(self.every).await {
            match self.once(&d, &shutdown).await {
                Ok(Some(r)) => publish(&r),
                Ok(None) => return,
                Err(e) => {
                    RECONCILE_FAILURES.inc();
                    tracing::warn!(error = %e, "scheduled drift check did not finish");
                }
            }
        }
    }

    /// One run: sample, second look, record. `None` when shutdown came during the grace wait.
    pub async fn once(&self, d: &ReconcileDeps, shutdown: &Shutdown) -> Result<Option<Report>, crate::ops::OpsError> {
        let mut first = reconcile::check(d, Scope::Sample(self.sample), &mut |_| {}).await?;
        let suspects = first.to_repair();
        if !suspects.is_empty() {
            if shutdown.sleep(self.grace).await {
                return Ok(None);
            }
            let later = reconcile::check_ids(d, &suspects, &mut |_| {}).await?;
            first.confirm(&later);
        }
        let run = ReconcileRun {
            ran_at: chrono::Utc::now(),
            host: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_default(),
            compared: first.compared as i32,
            absent_from_cache: first.absent_from_cache as i32,
            drift: serde_json::to_value(&first.counts).unwrap_or_default(),
            examples: serde_json::to_value(first.drift.iter().take(10).collect::<Vec<&Drift>>()).unwrap_or_default(),
        };
        let mut conn = pool::get(&d.pool).await?;
        reconcile_run_repo::record(&mut conn, &run).await?;
        Ok(Some(first))
    }
}

/// Exports a run's confirmed drift and logs it.
fn publish(r: &Report) {
    for (store, kinds) in SERIES {
        for kind in kinds {
            let n = r.counts.get(&format!("{store}/{kind}")).copied().unwrap_or(0);
            RECONCILE_DRIFT.with_label_values(&[store, kind]).set(n as i64);
        }
    }
    RECONCILE_COMPARED.set(r.compared as i64);
    RECONCILE_LAST_RUN.set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
    if r.drift.is_empty() {
        tracing::info!(compared = r.compared, "drift check: search and cache equal Postgres");
    } else {
        let examples: Vec<String> = r
            .drift
            .iter()
            .take(5)
            .map(|d| format!("{} {} {}", d.store, d.kind, d.product_id))
            .collect();
        tracing::warn!(
            compared = r.compared,
            drift = ?r.counts,
            examples = ?examples,
            "drift check: entries differ from Postgres (aliexpress reconcile --repair re-sends them)"
        );
    }
}
