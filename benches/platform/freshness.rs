//! freshness: API write due -> visible in the search index, at 100 and 500 writes/s.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aliexpress::search::SearchClient;
use serde_json::json;

use super::harness::{bin, create, fresh_env, http_client, note_seen, serve, spawn_role, Pending, Role};
use super::row::{quantile, summary, Row};
use super::{env_or, progress, runs, scale};

/// One freshness run: `writes` creates open loop at `rate`; one poller asks the index the
/// search API reads (the alias) for every id still unseen, in one `ids` query every 20 ms.
/// A write's freshness runs from when it was due to the answer that first showed it.
/// Returns (sorted ms, failures: non-201 or not visible within 30 s, sorted ms from due to
/// the API's 201: the part of the freshness spent before the write was committed).
pub(super) async fn freshness_run(
    base: &str,
    search: &SearchClient,
    alias: &str,
    rate: f64,
    writes: usize,
) -> (Vec<f64>, u64, Vec<f64>) {
    let pending: Pending = Default::default();
    let accepted: Arc<Mutex<Vec<f64>>> = Default::default();
    let seen: Arc<Mutex<Vec<f64>>> = Default::default();
    let failed = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let poller = {
        let (pending, seen, search, alias, writing) = (
            pending.clone(),
            seen.clone(),
            search.clone(),
            alias.to_owned(),
            writing.clone(),
        );
        tokio::spawn(async move {
            let mut last_progress = tokio::time::Instant::now();
            loop {
                let ids: Vec<String> = pending
                    .lock()
                    .expect("pending")
                    .keys()
                    .take(5000)
                    .map(|i| i.to_string())
                    .collect();
                let done = !std::sync::atomic::AtomicBool::load(&writing, std::sync::atomic::Ordering::SeqCst);
                if ids.is_empty() && done {
                    return 0u64;
                }
                if done && last_progress.elapsed() > Duration::from_secs(30) {
                    return ids.len() as u64;
                }
                if !ids.is_empty() {
                    let body = json!({"size": ids.len(), "_source": false, "query": {"ids": {"values": ids}}});
                    let (alias, body) = (alias.as_str(), &body);
                    let found = match search
                        .call(|os| async move {
                            os.search(opensearch::SearchParts::Index(&[alias]))
                                .body(body)
                                .send()
                                .await
                        })
                        .await
                    {
                        Ok(resp) => aliexpress::search::client::decode::<serde_json::Value>(resp).await.ok(),
                        Err(_) => None,
                    };
                    if found.is_some_and(|v| note_seen(&v, &pending, &seen)) {
                        last_progress = tokio::time::Instant::now();
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await; // the poll period
            }
        })
    };
    let http = http_client();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..writes {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let (http, base, pending, failed, accepted) = (
            http.clone(),
            base.to_owned(),
            pending.clone(),
            failed.clone(),
            accepted.clone(),
        );
        tasks.spawn(async move {
            match create(&http, &base).await {
                Some(id) => {
                    accepted
                        .lock()
                        .expect("accepted")
                        .push(due.elapsed().as_secs_f64() * 1000.0);
                    pending.lock().expect("pending").insert(id, due);
                }
                None => {
                    failed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    writing.store(false, std::sync::atomic::Ordering::SeqCst);
    let invisible = poller.await.unwrap_or(writes as u64);
    let mut s = std::mem::take(&mut *seen.lock().expect("seen"));
    s.sort_by(f64::total_cmp);
    let mut a = std::mem::take(&mut *accepted.lock().expect("accepted"));
    a.sort_by(f64::total_cmp);
    (
        s,
        invisible + std::sync::atomic::AtomicU64::load(&failed, std::sync::atomic::Ordering::SeqCst),
        a,
    )
}

/// API write → visible in search, with serve, the relay (`process-outbox --follow`) and the
/// projection running, at 100 and 500 writes/s open loop: with shipped defaults
/// (`BENCH_FRESH_BATCH_WAIT` overrides the projection's batch wait), then with the index
/// refreshing every 200 ms, then also with a batch wait of 0 (a batch is what is queued).
pub(super) async fn bench_freshness(rows: &mut Vec<Row>) {
    let shipped = std::env::var("BENCH_FRESH_BATCH_WAIT").ok();
    // Shipped (the index's 1 s and the projection's adaptive refresh every 100 ms), then the
    // trade-offs: the index's interval alone at 1 s and at 200 ms (PROJECTION_REFRESH_EVERY=0).
    for (refresh_ms, refresh_every, wait) in [
        (1000u64, None, shipped.clone()),
        (1000, Some("0ms"), shipped.clone()),
        (200, Some("0ms"), shipped),
    ] {
        freshness_variant(rows, refresh_ms, refresh_every, wait).await;
    }
}

pub(super) async fn freshness_variant(
    rows: &mut Vec<Row>,
    refresh_ms: u64,
    refresh_every: Option<&str>,
    wait: Option<String>,
) {
    let e = fresh_env("fresh").await;
    let refresh = [("OPENSEARCH_REFRESH_INTERVAL_MS", refresh_ms.to_string())];
    let (api, base) = serve(&e, &refresh).await;
    let relay = spawn_role(&e, &["process-outbox".into(), "--follow".into()], &[]);
    let mut proj_args = vec!["run-product-event-consumer".to_owned(), "--quiet-events".into()];
    if let Some(w) = &wait {
        proj_args.extend(["--batch-wait".into(), w.clone()]);
    }
    if let Some(r) = refresh_every {
        proj_args.extend(["--refresh-every".into(), r.to_owned()]);
    }
    let every = refresh_every.unwrap_or("100ms");
    let proj = spawn_role(&e, &proj_args, &refresh);
    let roles = [
        ("serve", &api),
        ("process-outbox", &relay),
        ("run-product-event-consumer", &proj),
    ];
    let search = SearchClient::new(e.infra.opensearch.url.expose(), Duration::from_secs(10)).expect("search");
    let alias = e.names.index_alias();
    let writes: usize = env_or("BENCH_FRESH_WRITES", &format!("{:.0}", (2000.0 * scale()).max(200.0)))
        .parse()
        .unwrap_or(2000);
    // Warm-up: the pipeline carries 100 writes end to end before anything is timed.
    let (_, warm_fail, _) = freshness_run(&base, &search, &alias, 50.0, 100).await;
    assert_eq!(warm_fail, 0, "the pipeline carries writes to search");
    for rate in [100.0, 500.0] {
        let (mut p50, mut p99, mut max, mut n, mut errors) = (Vec::new(), Vec::new(), Vec::new(), 0, 0);
        let (mut acc50, mut acc99) = (Vec::new(), Vec::new());
        let mut all = Vec::new();
        // Peak RSS of each role over the 500 writes/s runs: the high-water mark is reset first.
        let reset = rate == 500.0 && roles.iter().all(|(_, r)| r.reset_peak_rss());
        for run in 0..runs() {
            let (s, f, a) = freshness_run(&base, &search, &alias, rate, writes).await;
            all.extend_from_slice(&s);
            acc50.push(quantile(&a, 0.5));
            acc99.push(quantile(&a, 0.99));
            n += s.len();
            errors += f;
            p50.push(quantile(&s, 0.5));
            p99.push(quantile(&s, 0.99));
            max.push(s.last().copied().unwrap_or(f64::NAN));
            progress(format_args!(
                "freshness run {run} @{rate:.0}/s: {} samples, p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms, failed {f}",
                s.len(),
                p50[run],
                p99[run],
                max[run]
            ));
        }
        let (a, ar) = summary(p50);
        let (b, br) = summary(p99);
        let (m, mr) = summary(max);
        let (acc50, acc99) = (summary(acc50).0, summary(acc99).0);
        all.sort_by(f64::total_cmp);
        let (peaks, rss_rows) = if rate == 500.0 {
            peak_rss(&roles, reset, refresh_ms, refresh_every.is_none(), wait.as_deref())
        } else {
            Default::default()
        };
        rows.push(Row::new(format!(
                "freshness @{rate:.0} writes/s, refresh {refresh_ms} ms + projection's every {every}, batch wait {}: p50 (max {m:.0} [{:.0}-{:.0}])",
                wait.as_deref().unwrap_or(&shipped_wait()),
                mr.0,
                mr.1
            ), "ms")
.ours(a, ar)
.baseline("p99", b, br)
.goal(if refresh_every.is_none() { "p50<=200 p99<=500 @500" } else { "(trade-off)" })
.errors(errors)
.verified(format!(
                "{n} writes seen in the index (≥ {writes} per run asked), {errors} failed or unseen in 30 s; one ids poll / 20 ms; \
                 of which due -> 201 from the API p50 {acc50:.0} ms, p99 {acc99:.0} ms; \
                 projection batch wait {}; refresh_interval {refresh_ms} ms; projection's refresh every {every}{peaks}",
                wait.as_deref().map_or_else(|| format!("shipped ({})", shipped_wait()), str::to_owned)
            ))
.samples(all));
        rows.extend(rss_rows);
    }
}

/// The projection's shipped batch wait (`PROJECTION_BATCH_WAIT`), as the rows name it.
fn shipped_wait() -> String {
    humantime::format_duration(aliexpress::worker::projection::ProjectionSettings::default().batch_wait).to_string()
}

/// Reads each role's peak RSS (`VmHWM`) at the end of the 500 writes/s runs, before the roles
/// stop: the text for the freshness row's `verified` and, with the shipped settings (refresh
/// 1 s), one row per role.
fn peak_rss(
    roles: &[(&'static str, &Role)],
    reset: bool,
    refresh_ms: u64,
    shipped: bool,
    wait: Option<&str>,
) -> (String, Vec<Row>) {
    let mut rows = Vec::new();
    let since = if reset {
        "over the 500/s runs (VmHWM reset before them)"
    } else {
        "since start (VmHWM; the reset was refused)"
    };
    let mut text = format!("; peak RSS {since}:");
    for (name, role) in roles {
        let binary = role.is_the_binary();
        let peak = role.peak_rss_kib();
        let mib = peak.map_or(0.0, |kib| kib as f64 / 1024.0);
        match peak {
            Some(_) => text.push_str(&format!(" {name} {mib:.1} MiB;")),
            None => text.push_str(&format!(" {name} (pid {}) gone;", role.pid())),
        }
        if shipped {
            rows.push(
                Row::new(
                    format!(
                        "peak RSS {name} @500 writes/s, refresh {refresh_ms} ms, batch wait {}",
                        wait.map_or_else(shipped_wait, str::to_owned)
                    ),
                    "MiB",
                )
                .ours(mib, (mib, mib))
                .goal("<= 64 MiB")
                .errors(u64::from(!binary || peak.is_none()))
                .verified(format!(
                    "VmHWM of /proc/{pid}/status {since}, read before the role stopped; \
                     /proc/{pid}/exe {} the bench's binary ({}), spawned directly (no shell)",
                    if binary { "is" } else { "is NOT" },
                    bin(),
                    pid = role.pid()
                )),
            );
        }
    }
    text.pop();
    (text, rows)
}
