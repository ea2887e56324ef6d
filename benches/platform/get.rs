//! get: GET /api/products/{id} (Redis hit, Postgres miss) vs /health/live, with oha.

use std::collections::BTreeMap;
use std::time::Duration;

use aliexpress::store::pool;
use diesel_async::RunQueryDsl;

use super::harness::{create, fresh_env, http_client, oha, serve, serve_with_metrics, Capacity, TOKEN};
use super::row::{summary, Row};
use super::{progress, runs, secs};

/// Ids `00000000-0000-4000-8000-00000000XXXX`: 65 536 published products the miss row reads
/// through a regex URL.
pub(super) const MISS_IDS: u32 = 65_536;

/// GET /api/products/{id} from the cache (one product written through by its create; the
/// shipped near cache answers it in process, checked with its hit counter), from Redis (the
/// same with the near cache off: one round trip a read) and from Postgres (65 536 products
/// never cached, a server whose cache entries live 1 s, ids drawn at random: a few percent of
/// reads repeat an id within its second and hit) vs /health/live of the same binary: oha, the
/// same 16 connections, closed loop for the maximum rate, then open loop at one common rate
/// (half the slowest route's maximum) for p50/p99.
pub(super) async fn bench_get(rows: &mut Vec<Row>, cap: &mut Capacity) {
    let e = fresh_env("get").await;
    let mut c = pool::connect(e.infra.database.url.expose(), Duration::from_secs(60))
        .await
        .expect("conn");
    diesel::sql_query(format!(
        "INSERT INTO products (id, sku, title, description, category, brand, attributes, price_minor, currency, stock, status, version, created_at, updated_at) \
         SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(g), 12, '0'))::uuid, 'MISS-' || g, 'Bench product', repeat('x', 300), '', '', '{{}}', 100, 'USD', 0, 'published', 1, now(), now() \
         FROM generate_series(0, {}) g",
        MISS_IDS - 1
    ))
    .execute(&mut c)
    .await
    .expect("seed");
    let (_hit_role, hit_base, hit_metrics) = serve_with_metrics(&e, &[]).await;
    let (_redis_role, redis_base) = serve(&e, &[("REDIS_NEAR_CACHE_ENTRIES", "0".into())]).await;
    let (_miss_role, miss_base) = serve(&e, &[("REDIS_CACHE_TTL_SECS", "1".into())]).await;
    let http = http_client();
    let id = create(&http, &hit_base).await.expect("a product");
    let r = http
        .get(format!("{hit_base}/api/products/{id}"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    let src = r
        .headers()
        .get("x-read-source")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert_eq!(
        (r.status().as_u16(), src.as_str()),
        (200, "cache"),
        "the created product is read from Redis"
    );
    let r = http
        .get(format!("{miss_base}/api/products/00000000-0000-4000-8000-000000000001"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200, "a seeded product is found");
    let hex_port = |b: &str| b.rsplit(':').next().unwrap_or("").to_owned();
    let targets = [
        ("live", format!("{hit_base}/health/live"), false),
        ("hit", format!("{hit_base}/api/products/{id}"), false),
        ("redis", format!("{redis_base}/api/products/{id}"), false),
        (
            "miss",
            format!(
                "http://127.0.0.1:{}/api/products/00000000-0000-4000-8000-00000000[0-9a-f]{{4}}",
                hex_port(&miss_base)
            ),
            true,
        ),
    ];
    let conns = 16;
    let secs = (secs() * 0.75).max(2.0);
    for (_, url, regex) in &targets {
        let _ = oha(url, *regex, conns, None, 2.0, 200); // warm-up, not recorded
    }
    let mut max: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut p99: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut p50: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
    let mut counted: BTreeMap<&str, u64> = BTreeMap::new();
    let mut rate = None;
    for run in 0..runs() {
        for (name, url, regex) in &targets {
            let o = oha(url, *regex, conns, None, secs, 200);
            max.entry(name).or_default().push(o.rps);
            *errors.entry(name).or_default() += o.errors;
            *counted.entry(name).or_default() += o.ok;
        }
        let fixed = *rate.get_or_insert_with(|| {
            max.values()
                .filter_map(|v| v.iter().next().copied())
                .fold(f64::INFINITY, f64::min)
                .max(20.0)
                / 2.0
        });
        for (name, url, regex) in &targets {
            let o = oha(url, *regex, conns, Some(fixed), secs, 200);
            p99.entry(name).or_default().push(o.p99_ms);
            p50.entry(name).or_default().push(o.p50_ms);
            *errors.entry(name).or_default() += o.errors;
            *counted.entry(name).or_default() += o.ok;
        }
        progress(format_args!(
            "get run {run}: max live {:.0}, hit {:.0}, redis {:.0}, miss {:.0} req/s; p99 @{fixed:.0}/s live {:.1}, hit {:.1}, redis {:.1}, miss {:.1} ms",
            max["live"][run], max["hit"][run], max["redis"][run], max["miss"][run],
            p99["live"][run], p99["hit"][run], p99["redis"][run], p99["miss"][run]
        ));
    }
    let fixed = rate.unwrap_or(0.0);
    let near_hits = near_hits(&http, &hit_metrics).await;
    assert!(
        near_hits as f64 >= counted["hit"] as f64 * 0.99,
        "the cached reads were near-cache hits: {near_hits} of {}",
        counted["hit"]
    );
    let (live, live_r) = summary(max["live"].clone());
    let (live99, live99_r) = summary(p99["live"].clone());
    let labels = [
        ("hit", "cache hit (near cache)"),
        ("redis", "Redis hit (near cache off)"),
        ("miss", "Postgres miss"),
    ];
    for (name, label) in labels {
        let (o, or) = summary(max[name].clone());
        if name == "hit" {
            cap.get_hit_per_sec = Some(o);
        }
        rows.push(
            Row::new(format!("GET /api/products/{{id}}, {label}, {conns} conns"), "req/s")
                .ours(o, or)
                .baseline("/health/live, same binary, tool, conns", live, live_r)
                .goal(match name {
                    "hit" => ">= 0.5",
                    "miss" => ">= 0.2",
                    _ => "(trade-off)",
                })
                .errors(errors[name] + errors["live"])
                .verified(format!(
                    "{} 200s counted (live {}), non-200 or failed: {}{}",
                    counted[name],
                    counted["live"],
                    errors[name],
                    if name == "hit" {
                        format!("; near-cache hits (its counter): {near_hits}")
                    } else {
                        String::new()
                    }
                )),
        );
        let (o, or) = summary(p99[name].clone());
        let (m, _) = summary(p50[name].clone());
        rows.push(
            Row::new(format!("GET {label} @{fixed:.0}/s open loop: p99 (p50 {m:.1})"), "ms")
                .ours(o, or)
                .baseline("/health/live p99, same rate", live99, live99_r)
                .goal("-")
                .verified("oha -q with --latency-correction"),
        );
    }
}

/// `aliexpress_cache_near_reads_total{result="hit"}` of the metrics at `url`.
async fn near_hits(http: &reqwest::Client, url: &str) -> u64 {
    let text = http
        .get(url)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find(|l| l.starts_with("aliexpress_cache_near_reads_total{result=\"hit\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}
