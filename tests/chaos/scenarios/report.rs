//! The output table: one row per scenario, then the details of each run.

use std::fmt::Write as _;
use std::time::Duration;

use super::CONVERGE_TARGET;
use crate::checker::Findings;
use crate::workload::Summary;

/// One table row.
#[derive(Debug, Default)]
pub(super) struct Row {
    pub(super) name: String,
    pub(super) findings: Findings,
    pub(super) api: Summary,
    pub(super) converge: Option<Duration>,
    pub(super) waited: Duration,
    pub(super) skipped: Option<String>,
    pub(super) error: Option<String>,
    pub(super) timeline: Vec<String>,
}

impl Row {
    pub(super) fn passed(&self) -> bool {
        self.skipped.is_some()
            || (self.error.is_none()
                && self.findings.anomalies() == 0
                && self.api.anomalies == 0
                && self.converge.is_some_and(|c| c <= CONVERGE_TARGET))
    }
}

/// The table of `rows` (with `details`: each run's requests, anomalies, notes and timeline).
pub(super) fn render(rows: &[Row], details: bool) -> String {
    let mut t = String::from(
        "| scenario | lost acks | search≠pg | cache≠pg | newer than pg | cmds stuck | dup effects | outbox stuck | lag | DLQ unexplained | API errors (hung) | converge | result |\n\
         |---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows {
        if let Some(why) = &r.skipped {
            let _ = writeln!(t, "| {} | | | | | | | | | | | | SKIP: {why} |", r.name);
            continue;
        }
        let f = &r.findings;
        let conv = match r.converge {
            Some(c) if c <= CONVERGE_TARGET => format!("{:.1} s", c.as_secs_f64()),
            Some(c) => format!("**{:.1} s**", c.as_secs_f64()),
            None => format!("**> {:.0} s**", r.waited.as_secs_f64()),
        };
        let result = if let Some(e) = &r.error {
            format!("ERROR: {}", e.replace('|', "/").chars().take(120).collect::<String>())
        } else if r.passed() {
            "PASS".into()
        } else {
            "FAIL".into()
        };
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} |",
            r.name,
            f.lost,
            f.search_diff,
            f.cache_diff,
            f.newer,
            f.cmds_stuck,
            f.dup_effects,
            f.outbox_stuck,
            f.lag,
            f.dlq_unexplained,
            r.api.anomalies,
            r.api.hung,
            conv,
            result
        );
    }
    if details {
        t.push_str("\nDetails (requests: total / during a fault / failed during a fault; p99 latency during faults vs calm):\n");
        for r in rows.iter().filter(|r| r.skipped.is_none()) {
            let a = &r.api;
            let _ = writeln!(
                t,
                "- {}: {} requests, {} during a fault, {} failed then; p99 {} ms vs {} ms",
                r.name, a.total, a.during_fault, a.fault_errors, a.fault_p99_ms, a.calm_p99_ms
            );
            for (k, n) in a.by_kind.iter().take(4) {
                let _ = writeln!(t, "  - API anomaly: {n} × {k}");
            }
            for n in &r.findings.notes {
                let _ = writeln!(t, "  - {n}");
            }
            for l in &r.timeline {
                let _ = writeln!(t, "  - {l}");
            }
        }
    }
    t
}
