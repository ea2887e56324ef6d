//! mixed: 95 % GET / 5 % POST at a fixed rate near saturation, p50/p99 of each.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use super::harness::{create, fresh_env, http_client, open_loop, serve, Capacity, TOKEN};
use super::row::{quantile, summary, Row};
use super::{env_or, progress, runs, secs};

/// 95 % GET (Redis hits over 1 000 products) and 5 % creates, open loop at one rate near
/// saturation (`BENCH_MIXED_RATE`, default 30 % of the capacity the get and api rows imply:
/// those were measured with oha, while this row's requests come from the bench's own client on
/// the same 2 cores, and perfect sharing is assumed; at 50 % the box was past saturation,
/// answers took seconds and some timed out).
pub(super) async fn bench_mixed(rows: &mut Vec<Row>, cap: &Capacity) {
    const MIXED_SHARE: f64 = 0.3;
    let e = fresh_env("mixed").await;
    let (_role, base) = serve(&e, &[]).await;
    let http = http_client();
    let mut ids = Vec::new();
    for _ in 0..1000 {
        ids.push(create(&http, &base).await.expect("a product"));
    }
    let ids = Arc::new(ids);
    let estimate = match (cap.get_hit_per_sec, cap.creates_per_sec) {
        (Some(g), Some(c)) if g > 0.0 && c > 0.0 => MIXED_SHARE / (0.95 / g + 0.05 / c),
        _ => 500.0,
    };
    let rate: f64 = env_or("BENCH_MIXED_RATE", &format!("{estimate:.0}"))
        .parse()
        .unwrap_or(estimate);
    let mut q: BTreeMap<(&str, &str), Vec<f64>> = BTreeMap::new();
    let (mut n, mut errors) = (BTreeMap::<&str, usize>::new(), 0);
    for run in 0..runs() {
        let s = open_loop(rate, 1.0, secs(), |i| {
            let (http, base, ids) = (http.clone(), base.clone(), ids.clone());
            if i % 20 == 0 {
                (
                    "POST",
                    Box::pin(async move { create(&http, &base).await.is_some() })
                        as std::pin::Pin<Box<dyn Future<Output = bool> + Send>>,
                )
            } else {
                let id = ids[rand::random::<u64>() as usize % ids.len()];
                (
                    "GET",
                    Box::pin(async move {
                        http.get(format!("{base}/api/products/{id}"))
                            .bearer_auth(TOKEN)
                            .send()
                            .await
                            .map(|r| r.status() == 200)
                            .unwrap_or(false)
                    }),
                )
            }
        })
        .await;
        for (kind, s) in &s {
            *n.entry(kind).or_default() += s.ok.len();
            errors += s.errors;
            q.entry((kind, "p50")).or_default().push(quantile(&s.ok, 0.5));
            q.entry((kind, "p99")).or_default().push(quantile(&s.ok, 0.99));
        }
        progress(format_args!(
            "mixed run {run} @{rate:.0}/s: GET p50 {:.1} p99 {:.1}, POST p50 {:.1} p99 {:.1} ms",
            q[&("GET", "p50")][run],
            q[&("GET", "p99")][run],
            q[&("POST", "p50")][run],
            q[&("POST", "p99")][run]
        ));
    }
    for kind in ["GET", "POST"] {
        let (a, ar) = summary(q[&(kind, "p99")].clone());
        let (b, br) = summary(q[&(kind, "p50")].clone());
        rows.push(
            Row::new(format!("mixed 95/5 @{rate:.0}/s open loop, {kind}: p99"), "ms")
                .ours(a, ar)
                .baseline(format!("{kind} p50"), b, br)
                .goal("-")
                .errors(errors)
                .verified(format!(
                    "{} {kind}s with the expected status; failures (both kinds) {errors}",
                    n.get(kind).unwrap_or(&0)
                )),
        );
    }
}
