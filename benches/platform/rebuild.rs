//! rebuild: `replay --rebuild` of N events vs raw `_bulk` of the same documents.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aliexpress::search::{index, SearchClient};

use super::harness::{bin, bin_env, fresh_env, seed_products};
use super::projection::{doc_count, produce_events, raw_bulk};
use super::row::{summary, Row};
use super::{env_or, progress, runs, scale};

/// `replay --rebuild` of N events (4 per product) from the topic into a fresh index, timed as
/// the whole command (start, consume, verify count and checksum against Postgres, swap;
/// `--grace 0s`) vs raw `_bulk` of the same documents in requests of 500.
pub(super) async fn bench_rebuild(rows: &mut Vec<Row>) {
    let e = fresh_env("rebuild").await;
    let n: usize = env_or("BENCH_REBUILD_EVENTS", &format!("{:.0}", 200_000.0 * scale()))
        .parse::<usize>()
        .unwrap_or(200_000)
        / 4
        * 4;
    progress(format_args!(
        "rebuild: producing {n} events and seeding {} products",
        n / 4
    ));
    let envs = produce_events(&e, &e.names.events_topic(), n / 4).await;
    let ids: Vec<uuid::Uuid> = envs[..n / 4].iter().map(|ev| ev.aggregate_id).collect();
    // Postgres holds the state the events end in: the rebuild checks (id, version) against it.
    seed_products(e.infra.database.url.expose(), &ids, 4, 10_000).await;
    let search = SearchClient::new(e.infra.opensearch.url.expose(), Duration::from_secs(60)).expect("search");
    let alias = e.names.index_alias();
    let (mut ours, mut raw, mut errors) = (Vec::new(), Vec::new(), 0);
    let mut verified = String::new();
    for run in 0..runs() {
        let t = Instant::now();
        let out = Command::new(bin())
            .args(["replay", "--rebuild", "--grace", "0s"])
            .envs(bin_env(&e))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("replay runs");
        let secs = t.elapsed().as_secs_f64();
        if !out.status.success() {
            errors += 1;
            eprintln!("replay --rebuild failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let docs = doc_count(&search, &alias).await;
        assert_eq!(docs as usize, n / 4, "the rebuilt index holds every product");
        ours.push(n as f64 / secs);
        verified =
            format!("{docs} documents behind the alias after each rebuild; count and checksum verified by the command");
        let r = raw_bulk(
            &search,
            &format!("{alias}_raw{run}"),
            index::IndexLayout::default(),
            &envs,
            500,
        )
        .await;
        raw.push(r);
        progress(format_args!(
            "rebuild run {run}: ours {:.0}/s ({secs:.1} s), _bulk {r:.0}/s",
            n as f64 / secs
        ));
    }
    let (o, or) = summary(ours);
    let (b, br) = summary(raw);
    rows.push(
        Row::new(format!("replay --rebuild, {n} events (whole command)"), "events/s")
            .ours(o, or)
            .baseline("same docs to _bulk, 500 per request", b, br)
            .goal(">= 0.7")
            .errors(errors)
            .verified(verified),
    );
}
