//! category-rename: a category over N products (default 10 000 x scale) renamed through the
//! API, until every product's search document shows the new path (the fan-out in `serve` →
//! one product command and event each → relay → projection), and the live write → searchable
//! latency of other writes meanwhile, next to the same latency without a rename.

use std::time::Duration;

use aliexpress::search::SearchClient;
use serde_json::{json, Value};

use super::freshness::freshness_run;
use super::harness::{fresh_env, http_client, serve, spawn_role, TOKEN};
use super::row::{quantile, Row};
use super::{env_or, progress, scale};

/// Documents whose `category_path` holds `slug`.
pub(super) async fn count_under(search: &SearchClient, alias: &str, slug: &str) -> u64 {
    let body = json!({"size": 0, "track_total_hits": true, "query": {"term": {"category_path": slug}}});
    let (alias, body) = (alias, &body);
    let resp = search
        .call(|os| async move {
            os.search(opensearch::SearchParts::Index(&[alias]))
                .body(body)
                .send()
                .await
        })
        .await;
    match resp {
        Ok(r) => aliexpress::search::client::decode::<Value>(r)
            .await
            .ok()
            .and_then(|v| v["hits"]["total"]["value"].as_u64())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// Waits until `n` documents are under `slug`; the time it took, or `None` past `limit`.
pub(super) async fn until_under(
    search: &SearchClient,
    alias: &str,
    slug: &str,
    n: u64,
    limit: Duration,
) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    while start.elapsed() < limit {
        if count_under(search, alias, slug).await >= n {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the poll period
    }
    None
}

/// Polls the category until its fan-out has finished; how long that took from the first poll.
async fn fanout_done(http: &reqwest::Client, base: &str, id: &str) -> Option<Duration> {
    let start = tokio::time::Instant::now();
    let mut seen_pending = false;
    while start.elapsed() < Duration::from_secs(900) {
        let c: Option<Value> = match http.get(format!("{base}/api/categories/{id}")).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let pending = c.as_ref().and_then(|c| c["fanout"]["pending"].as_u64()).unwrap_or(1);
        seen_pending |= pending > 0;
        if seen_pending && pending == 0 {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the poll period
    }
    None
}

/// Creates a root category; its id.
pub(super) async fn create_category(base: &str, slug: &str, name: &str) -> String {
    let created: Value = http_client()
        .post(format!("{base}/api/categories"))
        .bearer_auth(TOKEN)
        .json(&json!({"slug": slug, "name": name}))
        .send()
        .await
        .expect("create category")
        .json()
        .await
        .expect("json");
    created["id"].as_str().expect("category id").to_owned()
}

/// Creates `n` products in category `slug` over 16 connections; how many failed.
pub(super) async fn fill(base: &str, slug: &str, n: usize) -> u64 {
    let http = http_client();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(16));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..n {
        let (http, base, slug, sem) = (http.clone(), base.to_owned(), slug.to_owned(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let body = json!({"sku": format!("CAT-{i}-{}", uuid::Uuid::new_v4().simple()), "title": "Bench product",
                "category": slug, "price": {"amount_minor": 100, "currency": "USD"}});
            let r = http
                .post(format!("{base}/api/products"))
                .bearer_auth(TOKEN)
                .json(&body)
                .send()
                .await;
            u64::from(!matches!(r, Ok(r) if r.status() == 201))
        });
    }
    let mut failed = 0;
    while let Some(r) = tasks.join_next().await {
        failed += r.unwrap_or(1);
    }
    failed
}

/// The row pair: the rename's time to every document, and freshness during it vs without.
pub(super) async fn bench_category_rename(rows: &mut Vec<Row>) {
    let e = fresh_env("catrename").await;
    let (_api, base) = serve(&e, &[]).await;
    let _relay = spawn_role(&e, &["process-outbox".into(), "--follow".into()], &[]);
    let _proj = spawn_role(&e, &["run-product-event-consumer".into(), "--quiet-events".into()], &[]);
    let search = SearchClient::new(e.infra.opensearch.url.expose(), Duration::from_secs(10)).expect("search");
    let alias = e.names.index_alias();
    let n: usize = env_or("BENCH_RENAME_PRODUCTS", &format!("{:.0}", 10_000.0 * scale()))
        .parse()
        .unwrap_or(10_000);
    let http = http_client();
    let id = create_category(&base, "bench-lamps", "Lamps").await;
    let failed = fill(&base, "bench-lamps", n).await;
    let placed = until_under(
        &search,
        &alias,
        "bench-lamps",
        (n as u64) - failed,
        Duration::from_secs(600),
    )
    .await;
    progress(format_args!(
        "category-rename: {n} products placed ({failed} failed) in {placed:?}"
    ));

    // Freshness without a rename, then with the rename running.
    let (quiet, quiet_failed, _) = freshness_run(&base, &search, &alias, 100.0, 1000).await;
    let rename = http
        .patch(format!("{base}/api/categories/{id}"))
        .bearer_auth(TOKEN)
        .json(&json!({"slug": "bench-lighting", "name": "Lighting"}));
    let fanned = fanout_done(&http, &base, &id);
    let (busy, took, fanned) = tokio::join!(
        freshness_run(&base, &search, &alias, 100.0, 1000),
        async {
            let started = tokio::time::Instant::now();
            let ok = rename.send().await.is_ok_and(|r| r.status() == 200);
            let all = until_under(
                &search,
                &alias,
                "bench-lighting",
                (n as u64) - failed,
                Duration::from_secs(900),
            )
            .await;
            (ok, all.map(|_| started.elapsed()))
        },
        fanned
    );
    let (busy, busy_failed, _) = busy;
    let secs = took.1.map_or(f64::NAN, |d| d.as_secs_f64());
    let fan_secs = fanned.map_or(f64::NAN, |d| d.as_secs_f64());
    progress(format_args!(
        "category-rename: fan-out done in {fan_secs:.1} s, every document moved in {secs:.1} s"
    ));
    rows.push(
        Row::new(
            format!("category rename over {n} products: until every document shows the new path"),
            "s",
        )
        .ours(secs, (secs, secs))
        .errors(failed + u64::from(!took.0) + u64::from(took.1.is_none()))
        .verified(format!(
            "{n} documents counted under the new slug in the index (term query on category_path), {:.0} products/s; \
                 the fan-out (one PlaceInCategory command per product in serve, 200 per transaction) finished after \
                 {fan_secs:.1} s, the rest is relay and projection catching up",
            (n as f64) / secs
        )),
    );
    rows.push(
        Row::new(
            "freshness @100 writes/s while the rename runs: p50 (baseline: the same without a rename)",
            "ms",
        )
        .ours(quantile(&busy, 0.5), (quantile(&busy, 0.5), quantile(&busy, 0.99)))
        .baseline(
            "no rename p50",
            quantile(&quiet, 0.5),
            (quantile(&quiet, 0.5), quantile(&quiet, 0.99)),
        )
        .errors(quiet_failed + busy_failed)
        .verified(format!(
            "ranges are p50-p99; {} and {} writes seen in the index; the rename's events share the relay and \
                 the projection with them",
            busy.len(),
            quiet.len()
        )),
    );
}
