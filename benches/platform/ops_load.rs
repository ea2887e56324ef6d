//! ops-load: the operator tools beside live traffic. A catalog of N products (default
//! 10 000 x scale) with serve, relay and a projection running its scheduled drift check (every
//! 5 s, 500 products); write → searchable latency at 100 writes/s measured once quietly and
//! once while `replay --rebuild --max-rate R` (default 1 000 events/s, `BENCH_REBUILD_MAX_RATE`)
//! and `reconcile --all` run at the same time. The row says whether the rebuild's cap and the
//! checks keep the live figure: the bound stated in docs/RUNBOOK.md comes from this row.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aliexpress::search::SearchClient;
use serde_json::Value;

use super::category_rename::{create_category, fill, until_under};
use super::freshness::freshness_run;
use super::harness::{bin, bin_env, fresh_env, serve, spawn_role};
use super::row::{quantile, Row};
use super::{env_or, progress, scale};

/// Runs the binary with `args` on a blocking thread: (succeeded, seconds, stdout).
async fn timed(e: &super::harness::Env, args: &[&str]) -> (bool, f64, String) {
    let (vars, args): (_, Vec<String>) = (bin_env(e), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let t = Instant::now();
        let out = Command::new(bin())
            .args(&args)
            .envs(vars)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("runs");
        if !out.status.success() {
            eprintln!(
                "ops-load: {args:?} exited {:?}: {}",
                out.status.code(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (
            out.status.success(),
            t.elapsed().as_secs_f64(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    })
    .await
    .expect("join")
}

/// The row: freshness during a capped rebuild and a full reconcile vs without them.
pub(super) async fn bench_ops_load(rows: &mut Vec<Row>) {
    let e = fresh_env("opsload").await;
    let (_api, base) = serve(&e, &[]).await;
    let _relay = spawn_role(&e, &["process-outbox".into(), "--follow".into()], &[]);
    let projection = [
        "run-product-event-consumer",
        "--quiet-events",
        "--reconcile-every",
        "5s",
        "--reconcile-sample",
        "500",
    ];
    let _proj = spawn_role(&e, &projection.map(String::from), &[]);
    let search = SearchClient::new(e.infra.opensearch.url.expose(), Duration::from_secs(10)).expect("search");
    let alias = e.names.index_alias();
    let n: usize = env_or("BENCH_OPS_PRODUCTS", &format!("{:.0}", 10_000.0 * scale()))
        .parse()
        .unwrap_or(10_000);
    let max_rate: u32 = env_or("BENCH_REBUILD_MAX_RATE", "1000").parse().unwrap_or(1000);
    create_category(&base, "bench-ops", "Ops").await;
    let failed = fill(&base, "bench-ops", n).await;
    let placed = until_under(
        &search,
        &alias,
        "bench-ops",
        (n - failed as usize) as u64,
        Duration::from_secs(600),
    )
    .await;
    progress(format_args!(
        "ops-load: {n} products placed ({failed} failed) in {placed:?}"
    ));

    let (quiet, quiet_failed, _) = freshness_run(&base, &search, &alias, 100.0, 1000).await;
    let rate = max_rate.to_string();
    let rebuild = [
        "replay",
        "--rebuild",
        "--grace",
        "0s",
        "--verify-timeout",
        "300s",
        "--max-rate",
        &rate,
    ];
    let ((busy, busy_failed, _), rebuilt, reconciled) = tokio::join!(
        freshness_run(&base, &search, &alias, 100.0, 1000),
        timed(&e, &rebuild),
        async {
            // Beside the rebuild, after it has started reading.
            tokio::time::sleep(Duration::from_secs(2)).await;
            timed(&e, &["reconcile", "--all", "--json"]).await
        }
    );
    let compared = serde_json::from_str::<Value>(&reconciled.2)
        .ok()
        .and_then(|v| v["compared"].as_u64())
        .unwrap_or(0);
    progress(format_args!(
        "ops-load: rebuild capped at {max_rate}/s took {:.1} s (ok {}), reconcile --all compared {compared} in {:.1} s",
        rebuilt.1, rebuilt.0, reconciled.1
    ));
    rows.push(
        Row::new(
            format!(
                "freshness @100 writes/s while replay --rebuild --max-rate {max_rate} and reconcile --all run: p50 \
                 (baseline: the same without them)"
            ),
            "ms",
        )
        .ours(quantile(&busy, 0.5), (quantile(&busy, 0.5), quantile(&busy, 0.99)))
        .baseline(
            "quiet p50",
            quantile(&quiet, 0.5),
            (quantile(&quiet, 0.5), quantile(&quiet, 0.99)),
        )
        .errors(quiet_failed + busy_failed + u64::from(!rebuilt.0) + u64::from(compared == 0))
        .verified(format!(
            "ranges are p50-p99; {} and {} writes seen in the index; the rebuild of {n}+ events took {:.1} s \
             (capped at {max_rate}/s, count and checksum verified, alias swapped), reconcile --all compared \
             {compared} products in {:.1} s, the projection's drift check ran every 5 s throughout",
            busy.len(),
            quiet.len(),
            rebuilt.1,
            reconciled.1
        )),
    );
}
