//! overload: creates (POST /api/products) open loop at 2x and 4x the capacity measured here
//! (closed loop, 32 clients), each for `BENCH_OVERLOAD_SECS` (default 60 x scale, at least 10),
//! against `serve` with its shipped admission bounds. Per run: the accepted creates' p50/p99,
//! how many were shed (503 `overloaded`) and how fast that answer came, any other failure; that
//! every acknowledged create is in Postgres; and the p99 of the first 10 s at half the capacity
//! right after (normal service back).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use super::harness::{create, create_body, fresh_env, http_client, serve, Env, TOKEN};
use super::row::{quantile, Row};
use super::{env_or, progress, scale};

/// Latencies (ms from when each request was due) by outcome, and the acknowledged ids.
#[derive(Default)]
struct Outcomes {
    by: BTreeMap<&'static str, Vec<f64>>,
    /// The same outcomes' latencies from when each was sent (after the wait for a slot): the
    /// server's share of the time.
    sent: BTreeMap<&'static str, Vec<f64>>,
    acked: Vec<uuid::Uuid>,
}

/// One create: its outcome (`accepted`, `shed`, `unavailable`, `other`) and the new id.
async fn one(http: reqwest::Client, base: String) -> (&'static str, Option<uuid::Uuid>) {
    let r = http
        .post(format!("{base}/api/products"))
        .bearer_auth(TOKEN)
        .json(&create_body(&uuid::Uuid::new_v4().to_string()))
        .send()
        .await;
    let r = match r {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return ("timeout", None),
        Err(_) => return ("transport", None),
    };
    match r.status().as_u16() {
        201 => {
            let v: Value = r.json().await.unwrap_or_default();
            ("accepted", v["id"].as_str().and_then(|s| s.parse().ok()))
        }
        503 => {
            let v: Value = r.json().await.unwrap_or_default();
            (
                if v["code"] == "overloaded" {
                    "shed"
                } else {
                    "unavailable"
                },
                None,
            )
        }
        _ => ("other", None),
    }
}

/// Requests the generator holds in flight at most, as a load balancer's connection limit: a
/// request due while all are taken waits for one, and that wait counts in its latency (taken
/// from when it was due). Without it, at 4x the generator on the same 2 cores opened
/// connections without bound and collapsed before the server did (run H).
const IN_FLIGHT: usize = 512;

/// Open loop at `rate` for `secs`: request `i` due at `i / rate`, latency from then.
async fn open_loop(base: &str, rate: f64, secs: f64) -> Outcomes {
    let http = http_client();
    let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let out: Arc<Mutex<Outcomes>> = Default::default();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..(rate * secs) as u64 {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let (http, base, out, slots) = (http.clone(), base.to_owned(), out.clone(), slots.clone());
        tasks.spawn(async move {
            let Ok(_slot) = slots.acquire_owned().await else { return };
            let sent = tokio::time::Instant::now();
            let (what, id) = one(http, base).await;
            let ms = due.elapsed().as_secs_f64() * 1000.0;
            let from_sent = sent.elapsed().as_secs_f64() * 1000.0;
            let mut o = out.lock().expect("outcomes");
            o.by.entry(what).or_default().push(ms);
            o.sent.entry(what).or_default().push(from_sent);
            o.acked.extend(id);
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut o = std::mem::take(&mut *out.lock().expect("outcomes"));
    for v in o.by.values_mut().chain(o.sent.values_mut()) {
        v.sort_by(f64::total_cmp);
    }
    o
}

/// Creates per second with 32 clients in a closed loop for 5 s.
async fn capacity(base: &str) -> f64 {
    let http = http_client();
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (http, base) = (http.clone(), base.to_owned());
        tasks.spawn(async move {
            let mut n = 0u64;
            while tokio::time::Instant::now() < until {
                n += u64::from(create(&http, &base).await.is_some());
            }
            n
        });
    }
    let mut n = 0;
    while let Some(r) = tasks.join_next().await {
        n += r.unwrap_or(0);
    }
    n as f64 / 5.0
}

/// How many of `ids` are products in Postgres.
async fn stored(e: &Env, ids: &[uuid::Uuid]) -> i64 {
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut c = aliexpress::store::pool::connect(e.infra.database.url.expose(), Duration::from_secs(60))
        .await
        .expect("conn");
    let r: N = diesel::sql_query("SELECT count(*) AS n FROM products WHERE id = ANY($1)")
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(ids.to_vec())
        .get_result(&mut c)
        .await
        .expect("count");
    r.n
}

pub(super) async fn bench_overload(rows: &mut Vec<Row>) {
    let e = fresh_env("overload").await;
    let (_api, base) = serve(&e, &[]).await;
    let secs: f64 = env_or("BENCH_OVERLOAD_SECS", &format!("{:.0}", (60.0 * scale()).max(10.0)))
        .parse()
        .unwrap_or(60.0);
    let cap = capacity(&base).await;
    progress(format_args!(
        "overload: capacity {cap:.0} creates/s (32 clients, closed loop)"
    ));
    for factor in [2.0, 4.0] {
        let o = open_loop(&base, cap * factor, secs).await;
        let after = open_loop(&base, cap / 2.0, 10.0).await;
        let empty = Vec::new();
        let get = |m: &Outcomes, k: &str| m.by.get(k).unwrap_or(&empty).clone();
        let (accepted, shed) = (get(&o, "accepted"), get(&o, "shed"));
        let failed = ["unavailable", "other", "timeout", "transport"]
            .iter()
            .map(|k| get(&o, k).len())
            .sum::<usize>();
        let failures = format!(
            "{} unavailable, {} other statuses, {} timeouts, {} transport errors",
            get(&o, "unavailable").len(),
            get(&o, "other").len(),
            get(&o, "timeout").len(),
            get(&o, "transport").len()
        );
        let recovered = get(&after, "accepted");
        let lost = o.acked.len() as i64 - stored(&e, &o.acked).await;
        progress(format_args!(
            "overload x{factor}: {} accepted (p99 {:.0} ms), {} shed (p99 {:.0} ms), {failed} other failures, {lost} lost; after: p99 {:.0} ms",
            accepted.len(),
            quantile(&accepted, 0.99),
            shed.len(),
            quantile(&shed, 0.99),
            quantile(&recovered, 0.99)
        ));
        rows.push(
            Row::new(
                format!(
                    "creates open loop at {factor}x capacity ({:.0}/s) for {secs:.0} s: accepted p99",
                    cap * factor
                ),
                "ms",
            )
            .ours(
                quantile(&accepted, 0.99),
                (quantile(&accepted, 0.5), quantile(&accepted, 0.99)),
            )
            .baseline(
                "shed (503 overloaded) p99",
                quantile(&shed, 0.99),
                (quantile(&shed, 0.5), quantile(&shed, 0.99)),
            )
            .errors(failed as u64 + lost.max(0) as u64)
            .verified(format!(
                "ranges are p50-p99; capacity {cap:.0} creates/s measured first (32 clients, closed loop); generator \
                 at most {IN_FLIGHT} in flight; {} accepted ({:.0}/s), {} shed at once, other failures: {failures}; every \
                 accepted create found in Postgres ({lost} missing); from when each was sent (the server's share): \
                 accepted p99 {:.0} ms, shed p99 {:.0} ms; the 10 s right after at {:.0}/s: {} accepted, p99 {:.0} ms, \
                 {} shed",
                accepted.len(),
                accepted.len() as f64 / secs,
                shed.len(),
                quantile(o.sent.get("accepted").unwrap_or(&empty), 0.99),
                quantile(o.sent.get("shed").unwrap_or(&empty), 0.99),
                cap / 2.0,
                recovered.len(),
                quantile(&recovered, 0.99),
                get(&after, "shed").len()
            )),
        );
    }
}
