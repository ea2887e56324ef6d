//! `make bench`: throughput and latency of each role against the real local stack, each next
//! to a baseline that does the same work without our code, measured in the same run on the
//! same machine, printed as one table and written to `$CARGO_TARGET_DIR/bench/report.json`.
//!
//! Rules every row follows (issue 11): both sides do the same work (same bytes, statements,
//! client count, shipped default settings unless the row says otherwise); every rate is
//! checked against what was counted (rows marked, records on the topic, documents in the
//! index, responses with the expected status) and errors are shown; warm-up is outside the
//! timed window; each figure is the median of `BENCH_RUNS` (default 3) interleaved runs
//! (ours, baseline, ours, ...) with min–max; latency is open-loop at a fixed rate and measured
//! from the moment a request was due, not from when it was sent (no coordinated omission).
//!
//! Sections (`BENCH_ONLY=relay,projection,...` runs a subset; default: all but the scaling ones):
//! - relay: `process-outbox` over a backlog of random ~1 KB rows vs ProducerPerformance
//!   sending the same payload bytes;
//! - projection: events/s from a backlog (OpenSearch + Redis) vs the same documents to `_bulk`;
//! - api: creates/s (8 clients, closed loop) vs a Rust client running the same SQL
//!   transaction (with NOTIFY) and the same Redis write over 8 connections; and vs pgbench
//!   with the same statements (SQL only); then create latency open-loop at half the max rate;
//! - consumer: the command consumer (pool of 4) vs the same statements over 4 connections;
//! - get: GET /api/products/{id} (Redis hit, Postgres miss) vs /health/live, with oha;
//! - mixed: 95 % GET / 5 % POST at a fixed rate near saturation, p50/p99 of each;
//! - freshness: API write due → visible in the search index, at 100 and 500 writes/s;
//! - rebuild: `replay --rebuild` of N events vs raw `_bulk` of the same documents;
//! - category-rename: a category over N products renamed, until every document shows the new
//!   path (fan-out → events → relay → projection), and write → searchable latency meanwhile vs
//!   without a rename (`BENCH_RENAME_PRODUCTS`, default 10 000 x scale);
//! - ops-load: write → searchable at 100 writes/s while `replay --rebuild --max-rate R` and
//!   `reconcile --all` run (and the projection's drift check every 5 s) vs the same without them
//!   (`BENCH_OPS_PRODUCTS`, default 10 000 x scale; `BENCH_REBUILD_MAX_RATE`, default 1 000;
//!   benches/platform/ops_load.rs);
//! - overload: creates open loop at 2x and 4x the capacity measured first, for
//!   `BENCH_OVERLOAD_SECS` (60 x scale): accepted p99 vs the shed answers' p99, nothing
//!   acknowledged lost, the 10 s after at half the capacity (benches/platform/overload.rs);
//! - disaster: N products, a base backup, N/10 more, the data directory destroyed, restored to
//!   the latest point on a Postgres of the row's own; RPO (acknowledged writes missing) and the
//!   time of the restore and of `post-restore` (`BENCH_DISASTER_PRODUCTS`, default 100 000 x
//!   scale; benches/platform/disaster.rs);
//! - search-facets: GET /api/search?q=shirt&currency=EUR with every facet vs the body
//!   `query::build` makes for it POSTed straight to OpenSearch `_search`, oha, same
//!   connections; plus the in-process decode + encode of that answer
//!   (benches/platform/search_facets.rs);
//! - peer: the relay vs Debezium's outbox EventRouter on Kafka Connect, same rows, same Kafka:
//!   backlog events/s and publish latency (commit -> record) at a fixed rate
//!   (benches/platform/debezium_peer.rs; `make bench-peer` runs only this);
//! - read-peer: the projection vs Kafka Connect with an OpenSearch sink (Camel Kafka Connector's
//!   HTTP sink; Aiven's is not on Maven Central), same events, same topic: backlog events/s and
//!   event due -> searchable at `BENCH_PEER_RATE` (benches/platform/read_peer.rs);
//! - relay-scaling: 2 and 4 relays vs 2 and 4 times one relay (modelled round trip);
//! - projection-scaling: 2 and 3 projection consumers vs 2 and 3 times one, and one
//!   consumer's partition pipelines (modelled round trip; benches/platform/projection_scaling.rs).
//!
//! Knobs: BENCH_SCALE (sizes, default 1.0), BENCH_RUNS (3), BENCH_SECS (timed window of the
//! HTTP rows, default 8), BENCH_FRESH_WRITES (samples per rate, default 2000 x scale, at
//! least 200), BENCH_REBUILD_EVENTS (default 200 000 x scale), BENCH_MIXED_RATE (req/s;
//! default 30 % of the mixed capacity the get and api rows imply),
//! BENCH_FRESH_BATCH_WAIT (projection batch wait for the freshness row; default: shipped),
//! BENCH_PEER_RATE (writes/s of the peer's latency runs, default 500).
//!
//! Pictures (benches/platform/charts.rs, plotters, SVG): the freshness distribution at each rate
//! and setting, throughput ours / baseline per row, and events/s against the number of relays
//! and projection consumers, written beside report.json once the table is printed (and copied
//! into docs/bench/ with `BENCH_PICTURES_TO_DOCS=1`); a section that did not run has no picture.
//! The freshness row also reads each role's peak RSS (VmHWM) over its 500 writes/s runs.
//!
//! Layout: this file keeps `main`, the knobs above and the table; each section is a module of
//! `benches/platform/` (relay, relay_scaling, projection, projection_scaling, api, consumer, get,
//! mixed, freshness, rebuild, search_facets, debezium_peer), every row is made by the one
//! builder in `row.rs` (`Row::new(..).ours(..).baseline(..).goal(..)`), and what the sections
//! share (environment, roles, HTTP load, Kafka offsets) is in `harness.rs`.

#[path = "platform/api.rs"]
mod api;
#[path = "platform/append_times.rs"]
mod append_times;
#[path = "platform/category_rename.rs"]
mod category_rename;
#[path = "platform/charts.rs"]
mod charts;
#[path = "platform/connect.rs"]
mod connect;
#[path = "platform/consumer.rs"]
mod consumer;
#[path = "platform/debezium_peer.rs"]
mod debezium_peer;
#[path = "platform/disaster.rs"]
mod disaster;
#[path = "platform/freshness.rs"]
mod freshness;
#[path = "platform/get.rs"]
mod get;
#[path = "platform/harness.rs"]
mod harness;
#[path = "platform/mixed.rs"]
mod mixed;
#[path = "platform/ops_load.rs"]
mod ops_load;
#[path = "platform/overload.rs"]
mod overload;
#[path = "platform/projection.rs"]
mod projection;
#[path = "platform/projection_scaling.rs"]
mod projection_scaling;
#[path = "platform/read_peer.rs"]
mod read_peer;
#[path = "platform/rebuild.rs"]
mod rebuild;
#[path = "platform/relay.rs"]
mod relay;
#[path = "platform/relay_scaling.rs"]
mod relay_scaling;
#[path = "platform/row.rs"]
mod row;
#[path = "platform/search_facets.rs"]
mod search_facets;

use std::time::{Duration, Instant};

use aliexpress::bus::producer;
use aliexpress::search::SearchClient;
use aliexpress::store::pool;
use diesel_async::RunQueryDsl;
use serde_json::json;

use api::bench_api;
use consumer::bench_consumer;
use freshness::bench_freshness;
use get::bench_get;
use harness::Capacity;
use mixed::bench_mixed;
use projection::bench_projection;
use rebuild::bench_rebuild;
use relay::bench_relay;
use relay_scaling::bench_relay_scaling;
use row::Row;

/// Interleaved runs per row (ours, baseline, ours, baseline, ...).
fn runs() -> usize {
    env_or("BENCH_RUNS", "3").parse().unwrap_or(3).max(1)
}

/// True when the section runs: those named in `BENCH_ONLY` (comma separated), or by default
/// every section but the two scaling ones.
fn selected(section: &str) -> bool {
    match std::env::var("BENCH_ONLY") {
        Ok(only) => only.split(',').any(|s| s.trim() == section),
        Err(_) => section != "relay-scaling" && section != "projection-scaling",
    }
}

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_owned())
}

fn scale() -> f64 {
    env_or("BENCH_SCALE", "1.0").parse().unwrap_or(1.0)
}

/// Timed window of the HTTP rows, in seconds.
fn secs() -> f64 {
    env_or("BENCH_SECS", "8").parse().unwrap_or(8.0)
}

/// Progress on stderr, with the time since the start of the benchmark.
fn progress(msg: impl std::fmt::Display) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let s = START.get_or_init(Instant::now).elapsed().as_secs();
    eprintln!("[bench {:>2}:{:02}] {msg}", s / 60, s % 60);
}

/// Drops what earlier bench runs left (databases, indices, topics with the bench prefix).
async fn cleanup_previous_runs() {
    let base = env_or(
        "DATABASE_URL",
        "postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress",
    );
    // A bench database with a replication slot cannot be dropped.
    debezium_peer::drop_leftover_slots(&base).await;
    if let Ok(mut c) = pool::connect(&base, Duration::from_secs(600)).await {
        #[derive(diesel::QueryableByName)]
        struct Db {
            #[diesel(sql_type = diesel::sql_types::Text)]
            datname: String,
        }
        let dbs: Vec<Db> =
            diesel::sql_query("SELECT datname FROM pg_database WHERE datname LIKE 'aliexpress\\_bench\\_%'")
                .load(&mut c)
                .await
                .unwrap_or_default();
        for d in dbs {
            let _ = diesel::sql_query(format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", d.datname))
                .execute(&mut c)
                .await;
        }
    }
    if let Ok(search) = SearchClient::new(
        &env_or("OPENSEARCH_URL", "http://127.0.0.1:9200"),
        Duration::from_secs(60),
    ) {
        let _ = aliexpress::search::index::delete_index(&search, "bench_*").await;
    }
    let bootstrap = env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092");
    let Ok(admin) = producer::base_config(&aliexpress::bus::KafkaConnection::new(bootstrap))
        .create::<rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext>>()
    else {
        return;
    };
    let Ok(md) = admin.inner().fetch_metadata(None, Duration::from_secs(10)) else {
        return;
    };
    let old: Vec<String> = md
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .filter(|n| n.starts_with("bench_"))
        .collect();
    let refs: Vec<&str> = old.iter().map(String::as_str).collect();
    if !refs.is_empty() {
        let _ = admin.delete_topics(&refs, &rdkafka::admin::AdminOptions::new()).await;
    }
}

/// Cores, memory and the durability settings of the Postgres the figures were taken on.
async fn machine() -> serde_json::Value {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    #[derive(diesel::QueryableByName)]
    struct Setting {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
        #[diesel(sql_type = diesel::sql_types::Text)]
        setting: String,
    }
    let base = env_or(
        "DATABASE_URL",
        "postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress",
    );
    let mut pg = serde_json::Map::new();
    if let Ok(mut c) = pool::connect(&base, Duration::from_secs(10)).await {
        let rows: Vec<Setting> = diesel::sql_query(
            "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes')",
        )
        .load(&mut c)
        .await
        .unwrap_or_default();
        for r in rows {
            pg.insert(r.name, json!(r.setting));
        }
    }
    let durable = ["fsync", "synchronous_commit", "full_page_writes"]
        .iter()
        .all(|k| pg.get(*k).and_then(|v| v.as_str()) == Some("on"));
    json!({"cores": cores, "memory_gib": mem_kb as f64 / 1024.0 / 1024.0, "postgres": pg, "durable_postgres": durable, "postgres_sslmode": "disable",
           "scale": scale(), "runs": runs()})
}

fn print_table(m: &serde_json::Value, rows: &[Row]) {
    println!();
    println!(
        "machine: {} cores, {:.1} GiB; postgres durable: {} ({}), plain TCP on both sides (sslmode=disable); load average at the end: {}; median of {} interleaved runs [min-max]",
        m["cores"],
        m["memory_gib"].as_f64().unwrap_or(0.0),
        m["durable_postgres"],
        m["postgres"],
        m["load_average"].as_str().unwrap_or("?"),
        m["runs"]
    );
    println!(
        "| {:<58} | {:>26} | {:<10} | {:<46} | {:>26} | {:>5} | {:<24} | {:>6} |",
        "measurement", "ours", "unit", "baseline", "baseline", "ratio", "goal", "errors"
    );
    println!(
        "|{:-<60}|{:-<28}|{:-<12}|{:-<48}|{:-<28}|{:-<7}|{:-<26}|{:-<8}|",
        "", "", "", "", "", "", "", ""
    );
    let fmt = |v: f64, r: (f64, f64), unit: &str| {
        if unit == "ms" || unit == "MiB" {
            format!("{v:.1} [{:.1}-{:.1}]", r.0, r.1)
        } else {
            format!("{v:.0} [{:.0}-{:.0}]", r.0, r.1)
        }
    };
    for r in rows {
        println!(
            "| {:<58} | {:>26} | {:<10} | {:<46} | {:>26} | {:>5} | {:<24} | {:>6} |",
            r.what,
            fmt(r.ours, r.ours_range, r.unit),
            r.unit,
            r.baseline_name,
            if r.baseline > 0.0 {
                fmt(r.baseline, r.baseline_range, r.unit)
            } else {
                "-".into()
            },
            r.ratio().map_or("-".into(), |x| format!("{x:.2}")),
            r.goal,
            r.errors
        );
    }
    for r in rows {
        println!("  checked: {}: {}", r.what, r.verified);
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os("RUST_LOG").is_some() {
        let settings = aliexpress::config::TelemetrySettings {
            log_filter: std::env::var("RUST_LOG")
                .unwrap_or_else(|_| aliexpress::config::telemetry::DEFAULT_LOG_FILTER.into()),
            ..Default::default()
        };
        let _ = aliexpress::telemetry::init(&settings, "aliexpress-bench");
    }
    rt.block_on(async {
        progress(format_args!(
            "scale {}, {} runs per row, HTTP windows {} s (BENCH_SCALE, BENCH_RUNS, BENCH_SECS)",
            scale(),
            runs(),
            secs()
        ));
        cleanup_previous_runs().await;
        let mut rows = Vec::new();
        let mut cap = Capacity::default();
        // Each section adds its rows; a section that panics loses only its own.
        macro_rules! section {
            ($name:literal, $call:expr) => {
                if selected($name) {
                    progress(concat!($name, " ..."));
                    let t = Instant::now();
                    $call;
                    progress(format_args!(
                        concat!($name, " done in {:.0} s"),
                        t.elapsed().as_secs_f64()
                    ));
                }
            };
        }
        section!("relay", bench_relay(&mut rows).await);
        section!("projection", {
            bench_projection(&mut rows, 1000).await;
            bench_projection(&mut rows, 200).await;
        });
        section!("api", bench_api(&mut rows, &mut cap).await);
        section!("consumer", bench_consumer(&mut rows).await);
        section!("get", bench_get(&mut rows, &mut cap).await);
        section!("mixed", bench_mixed(&mut rows, &cap).await);
        section!("freshness", bench_freshness(&mut rows).await);
        section!("rebuild", bench_rebuild(&mut rows).await);
        section!(
            "category-rename",
            category_rename::bench_category_rename(&mut rows).await
        );
        section!("search-facets", search_facets::bench_search_facets(&mut rows).await);
        section!("ops-load", ops_load::bench_ops_load(&mut rows).await);
        section!("overload", overload::bench_overload(&mut rows).await);
        section!("disaster", disaster::bench_disaster(&mut rows).await);
        section!("peer", debezium_peer::bench_debezium_peer(&mut rows).await);
        section!("read-peer", read_peer::bench_read_peer(&mut rows).await);
        section!("relay-scaling", bench_relay_scaling(&mut rows).await);
        section!(
            "projection-scaling",
            projection_scaling::bench_projection_scaling(&mut rows).await
        );
        let mut m = machine().await;
        m["load_average"] = json!(std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "));
        print_table(&m, &rows);
        let dir = std::path::PathBuf::from(env_or("CARGO_TARGET_DIR", "target")).join("bench");
        let _ = std::fs::create_dir_all(&dir);
        let report = json!({"machine": m, "rows": rows.iter().map(|r| {
            let mut v = serde_json::to_value(r).unwrap_or_default();
            v["ratio"] = json!(r.ratio());
            v
        }).collect::<Vec<_>>()});
        let path = dir.join("report.json");
        match std::fs::write(&path, serde_json::to_vec_pretty(&report).unwrap_or_default()) {
            Ok(()) => println!("report: {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
        // Pictures beside the report (and into docs/bench/ with BENCH_PICTURES_TO_DOCS=1).
        for p in charts::draw(&rows, &dir) {
            println!("picture: {}", p.display());
        }
    });
}
