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
//! - peer: the relay vs Debezium's outbox EventRouter on Kafka Connect, same rows, same Kafka:
//!   backlog events/s and publish latency (commit -> record) at a fixed rate
//!   (benches/platform/debezium_peer.rs; `make bench-peer` runs only this);
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

#[path = "platform/debezium_peer.rs"]
mod debezium_peer;
#[path = "platform/projection_scaling.rs"]
mod projection_scaling;

use std::collections::BTreeMap;
use std::future::Future;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aliexpress::bus::producer::{self, ProducerSettings};
use aliexpress::bus::{admin, consumer};
use aliexpress::config::{DatabaseSettings, InfraConfig, KafkaSettings, Names, OpenSearchSettings, RedisSettings};
use aliexpress::domain::product::{self as domain, EventEnvelope, EventMeta, ProductCommand};
use aliexpress::search::{bulk, document, index, SearchClient};
use aliexpress::store::outbox_slices::OUTBOX_SLICES;
use aliexpress::store::pool;
use aliexpress::worker::outbox_relay::{OutboxRelay, RelaySettings};
use aliexpress::worker::projection::{ProductEventConsumer, ProjectionSettings};
use aliexpress::worker::Shutdown;
use diesel_async::RunQueryDsl;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use serde_json::json;

/// One line of the report. `ours` and `baseline` are medians of interleaved runs; the
/// ranges are their min and max. `verified` says what was counted to check the work was done.
#[derive(serde::Serialize, Default, Clone)]
struct Row {
    what: String,
    ours: f64,
    ours_range: (f64, f64),
    unit: &'static str,
    baseline_name: String,
    baseline: f64,
    baseline_range: (f64, f64),
    goal: &'static str,
    /// Failed requests / operations over all runs (both sides).
    errors: u64,
    verified: String,
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        (self.baseline > 0.0 && self.unit != "ms").then(|| self.ours / self.baseline)
    }
}

/// Median, min and max of a few samples.
fn summary(mut v: Vec<f64>) -> (f64, (f64, f64)) {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (0.0, (0.0, 0.0));
    }
    (v[v.len() / 2], (v[0], v[v.len() - 1]))
}

/// Quantile `q` (0..=1) of sorted samples.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

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

fn bin() -> String {
    std::env::var("ALIEXPRESS_BIN").unwrap_or_else(|_| {
        let dir = env_or("CARGO_TARGET_DIR", "target");
        format!("{dir}/release/aliexpress")
    })
}

fn kafka_libs() -> String {
    format!(
        "{}/kafka/libs/*",
        env_or("ALIEXPRESS_STATE_DIR", "/var/tmp/aliexpress-stack")
    )
}

/// Progress on stderr, with the time since the start of the benchmark.
fn progress(msg: impl std::fmt::Display) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let s = START.get_or_init(Instant::now).elapsed().as_secs();
    eprintln!("[bench {:>2}:{:02}] {msg}", s / 60, s % 60);
}

struct Env {
    infra: InfraConfig,
    names: Names,
}

async fn fresh_env(tag: &str) -> Env {
    let base = env_or(
        "DATABASE_URL",
        "postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress",
    );
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let db = format!("aliexpress_bench_{tag}_{id}");
    let mut admin_conn = pool::connect(&base, Duration::from_secs(600))
        .await
        .expect("postgres up (make up)");
    diesel::sql_query(format!("CREATE DATABASE \"{db}\""))
        .execute(&mut admin_conn)
        .await
        .expect("create db");
    let mut u = url::Url::parse(&base).expect("url");
    u.set_path(&format!("/{db}"));
    // Plain TCP on both sides of every row: the stack's Postgres offers TLS once started with
    // --secure, which `prefer` (ours, libpq's pgbench, Debezium) would take and the baseline's
    // tokio-postgres NoTls would not.
    if !u.query_pairs().any(|(k, _)| k == "sslmode") {
        u.query_pairs_mut().append_pair("sslmode", "disable");
    }
    let url = u.to_string();
    pool::run_migrations(&url).await.expect("migrate");
    let infra = InfraConfig {
        database: DatabaseSettings {
            url: url.into(),
            pool_size: 16,
            statement_timeout_ms: 600_000,
        },
        redis: RedisSettings {
            url: env_or("REDIS_URL", aliexpress::config::DEFAULT_REDIS_URL).into(),
            ca_file: None,
            cache_ttl_secs: 600,
            ..Default::default()
        },
        kafka: KafkaSettings {
            bootstrap_servers: env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
            topic_partitions: 6,
            topic_replication_factor: 1,
            ..Default::default()
        },
        opensearch: OpenSearchSettings {
            url: env_or("OPENSEARCH_URL", "http://127.0.0.1:9200").into(),
            ..Default::default()
        },
        namespace: format!("bench_{id}_"),
    };
    let names = infra.names();
    admin::ensure_topics(
        &aliexpress::bus::KafkaConnection::from_settings(&infra.kafka).expect("kafka settings"),
        &names.all_topics(),
        6,
        1,
    )
    .await
    .expect("topics");
    Env { infra, names }
}

fn bin_env(e: &Env) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", e.infra.database.url.expose().to_owned()),
        ("KAFKA_BOOTSTRAP_SERVERS", e.infra.kafka.bootstrap_servers.clone()),
        ("REDIS_URL", e.infra.redis.url.expose().to_owned()),
        ("OPENSEARCH_URL", e.infra.opensearch.url.expose().to_owned()),
        ("ALIEXPRESS_NAMESPACE", e.infra.namespace.clone()),
        ("RUST_LOG", "warn".into()),
        ("API_TOKENS", TOKEN.into()),
        // The benchmark is one client address sending thousands of requests a second.
        ("RATE_LIMIT_PER_SECOND", "0".into()),
    ]
}

/// The bearer token the bench's `serve` accepts.
const TOKEN: &str = "bench";

/// A child process of the binary, stopped (SIGTERM, then waited for) when dropped.
struct Role(std::process::Child);

impl Drop for Role {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

fn spawn_role(e: &Env, args: &[String], extra_env: &[(&str, String)]) -> Role {
    Role(
        Command::new(bin())
            .args(args)
            .envs(bin_env(e))
            .envs(extra_env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the binary"),
    )
}

/// A free loopback port (bound then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `serve` with the shipped defaults (2 workers, NOTIFY on) plus `extra_env`; returns the role
/// and its base URL once /health/live answers.
async fn serve(e: &Env, extra_env: &[(&str, String)]) -> (Role, String) {
    let port = free_port();
    let role = spawn_role(
        e,
        &[
            "serve".into(),
            "--bind".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-bind".into(),
            "127.0.0.1:0".into(),
        ],
        extra_env,
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = http.get(format!("{base}/health/live")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "serve answers /health/live");
        tokio::time::sleep(Duration::from_millis(100)).await; // polling for start-up
    }
    (role, base)
}

/// A client with a connection pool large enough for open-loop bursts.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

fn create_body(sku: &str) -> serde_json::Value {
    json!({"sku": sku, "title": "Bench product", "description": "x".repeat(300),
           "price": {"amount_minor": 100, "currency": "USD"}})
}

/// POST /api/products; the new id on a 201.
async fn create(http: &reqwest::Client, base: &str) -> Option<uuid::Uuid> {
    let r = http
        .post(format!("{base}/api/products"))
        .bearer_auth(TOKEN)
        .json(&create_body(&uuid::Uuid::new_v4().to_string()))
        .send()
        .await
        .ok()?;
    if r.status() != 201 {
        return None;
    }
    let v: serde_json::Value = r.json().await.ok()?;
    v["id"].as_str().and_then(|s| s.parse().ok())
}

/// Latencies (ms, from the moment each request was due) and failures of one kind of request.
#[derive(Default)]
struct Samples {
    ok: Vec<f64>,
    errors: u64,
}

impl Samples {
    fn sorted(mut self) -> Self {
        self.ok.sort_by(f64::total_cmp);
        self
    }
}

/// Open-loop load: request `i` is due at `start + i / rate`, sent then whatever happened to
/// earlier ones, and its latency counts from when it was due. Requests due in the first
/// `warm` seconds are sent but not recorded. `make(i)` gives the kind and the request, which
/// resolves to success or failure.
async fn open_loop<F, Fut>(rate: f64, warm: f64, secs: f64, make: F) -> BTreeMap<&'static str, Samples>
where
    F: Fn(u64) -> (&'static str, Fut),
    Fut: Future<Output = bool> + Send + 'static,
{
    let total = ((warm + secs) * rate) as u64;
    let out: Arc<Mutex<BTreeMap<&'static str, Samples>>> = Default::default();
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let (kind, fut) = make(i);
        let record = (i as f64) >= warm * rate;
        let out = out.clone();
        tasks.spawn(async move {
            let ok = fut.await;
            if record {
                let ms = due.elapsed().as_secs_f64() * 1000.0;
                let mut o = out.lock().expect("samples");
                let s = o.entry(kind).or_default();
                if ok {
                    s.ok.push(ms);
                } else {
                    s.errors += 1;
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let mut o = out.lock().expect("samples");
    std::mem::take(&mut *o)
        .into_iter()
        .map(|(k, v)| (k, v.sorted()))
        .collect()
}

/// What oha measured in one run.
struct Oha {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    errors: u64,
}

/// Runs oha (deploy/local/oha installs it) for `secs` against `url` (a regex when `regex`):
/// closed loop over `conns` connections when `rate` is None, else open loop at `rate` with
/// latency correction. Responses other than `expect` count as errors.
fn oha(url: &str, regex: bool, conns: u32, rate: Option<f64>, secs: f64, expect: u16) -> Oha {
    let bin = env_or("OHA", &format!("{}/.cache/aliexpress/bin/oha", env_or("HOME", "/root")));
    let mut cmd = Command::new(&bin);
    cmd.args([
        "--no-tui",
        "--output-format",
        "json",
        "-c",
        &conns.to_string(),
        "-z",
        &format!("{}ms", (secs * 1000.0) as u64),
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
    ]);
    if let Some(r) = rate {
        cmd.args(["-q", &format!("{r:.0}"), "--latency-correction"]);
    }
    if regex {
        cmd.arg("--rand-regex-url");
    }
    cmd.arg(url);
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{bin} runs (deploy/local/oha installs it): {e}"));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("oha JSON: {e}: {}", String::from_utf8_lossy(&out.stderr)));
    let codes = v["statusCodeDistribution"].as_object().cloned().unwrap_or_default();
    let total: u64 = codes.values().filter_map(|n| n.as_u64()).sum();
    let ok = codes.get(&expect.to_string()).and_then(|n| n.as_u64()).unwrap_or(0);
    // Requests still in flight when `-z` ends are cut off by oha, not failed by the server.
    let transport: u64 = v["errorDistribution"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, _)| !k.contains("deadline"))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    let ms = |k: &str| v["latencyPercentiles"][k].as_f64().unwrap_or(f64::NAN) * 1000.0;
    Oha {
        // Only the expected answers count toward the rate.
        rps: ok as f64 / secs,
        p50_ms: ms("p50"),
        p99_ms: ms("p99"),
        ok,
        errors: total - ok + transport,
    }
}

#[derive(diesel::QueryableByName)]
struct Published {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    span_secs: f64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pending: i64,
}

/// A consumer that only reads offsets (it never joins its group); one per poller, not per read.
fn offsets_reader(kafka: &aliexpress::bus::KafkaConnection) -> Arc<rdkafka::consumer::BaseConsumer> {
    Arc::new(
        producer::base_config(kafka)
            .set("group.id", "aliexpress-bench-offsets")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer"),
    )
}

/// Log end offset of each partition of `topic`, indexed by partition id.
async fn watermarks(reader: &Arc<rdkafka::consumer::BaseConsumer>, topic: &str) -> Vec<i64> {
    let (c, t) = (reader.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let md = c.fetch_metadata(Some(&t), Duration::from_secs(10)).expect("metadata");
        let partitions = md.topics().iter().map(|x| x.partitions().len()).sum::<usize>();
        (0..i32::try_from(partitions).unwrap_or(0))
            .map(|p| {
                c.fetch_watermarks(&t, p, Duration::from_secs(10))
                    .map(|(_, hi)| hi)
                    .unwrap_or(0)
            })
            .collect()
    })
    .await
    .expect("join")
}

/// Sum of the log end offsets of `topic`.
async fn end_offsets(kafka: &aliexpress::bus::KafkaConnection, topic: &str) -> i64 {
    watermarks(&offsets_reader(kafka), topic).await.iter().sum()
}

/// ProducerPerformance's steady rate: its periodic window lines ("N records sent, R
/// records/sec ...", every 5 s) let the first window (JVM start, metadata, warm-up) be
/// taken out of the overall figure. Returns (rate, warm-up excluded).
fn producer_performance_rate(text: &str, n: i64) -> (f64, bool) {
    let parse = |l: &str| -> Option<(f64, f64)> {
        let mut it = l.split(',');
        let recs = it.next()?.split_whitespace().next()?.parse::<f64>().ok()?;
        let rate = it.next()?.split_whitespace().next()?.parse::<f64>().ok()?;
        Some((recs, rate))
    };
    let lines: Vec<(f64, f64)> = text
        .lines()
        .filter(|l| l.contains("records/sec"))
        .filter_map(parse)
        .collect();
    let Some(&(_, overall)) = lines.last() else {
        return (0.0, false);
    };
    if lines.len() < 2 || overall <= 0.0 {
        return (overall, false);
    }
    let (w1, w1_rate) = lines[0];
    let total_secs = n as f64 / overall;
    let w1_secs = w1 / w1_rate.max(1e-9);
    ((n as f64 - w1) / (total_secs - w1_secs).max(1e-3), true)
}

/// A backlog of `n` outbox rows for `topic`: `n / 10` products with versions 1..=10, each
/// payload random hex (incompressible for lz4) of about 1 KB, headers as the write path
/// stores them. Used by the relay rows and the Debezium peer.
fn seed_outbox_sql(topic: &str, n: i64) -> String {
    format!(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload, headers) \
         SELECT gen_random_uuid(), 'product', p.id, v, '{topic}', p.id::text, 'ProductStockAdjusted', 1, \
                jsonb_build_object('aggregate_id', p.id, 'aggregate_version', v, \
                  'pad', (SELECT string_agg(md5(random()::text || g::text || v::text || p.id::text), '') FROM generate_series(1, 28) g)), \
                jsonb_build_object('event_type', 'ProductStockAdjusted', 'aggregate_version', v::text) \
         FROM generate_series(1, 10) v, (SELECT gen_random_uuid() AS id FROM generate_series(1, {p})) p ORDER BY v, p.id",
        p = n / 10
    )
}

/// Relay over a backlog vs ProducerPerformance, on identical bytes: the rows' payloads are
/// random hex (incompressible for lz4) of about 1 KB, and ProducerPerformance sends payloads
/// taken from the same rows (`--payload-file`). Shipped defaults (batch size 1000, lz4,
/// linger 5 ms, acks=all, idempotence) on both sides. Each relay run re-publishes the same
/// backlog; its rate excludes the first batch (warm-up) and is checked against the rows
/// marked published and the topic's end offsets; ProducerPerformance's excludes its first
/// 5 s window and is checked against its topic's end offsets.
async fn bench_relay(rows: &mut Vec<Row>) {
    let e = fresh_env("relay").await;
    let n = (200_000.0 * scale()) as i64;
    let mut c = pool::connect(e.infra.database.url.expose(), Duration::from_secs(600))
        .await
        .expect("conn");
    progress(format_args!("relay: seeding {n} outbox rows"));
    diesel::sql_query(seed_outbox_sql(&e.names.events_topic(), n))
        .execute(&mut c)
        .await
        .expect("seed");
    // The same payload bytes for ProducerPerformance (a sample; it picks at random).
    #[derive(diesel::QueryableByName)]
    struct Payload {
        #[diesel(sql_type = diesel::sql_types::Text)]
        payload: String,
    }
    let sample: Vec<Payload> = diesel::sql_query("SELECT payload::text AS payload FROM outbox ORDER BY id LIMIT 20000")
        .load(&mut c)
        .await
        .expect("payloads");
    let avg = sample.iter().map(|p| p.payload.len()).sum::<usize>() / sample.len().max(1);
    let payload_file = std::env::temp_dir().join(format!("aliexpress-bench-payloads-{}.txt", std::process::id()));
    std::fs::write(
        &payload_file,
        sample.iter().map(|p| p.payload.as_str()).collect::<Vec<_>>().join("\n"),
    )
    .expect("payload file");
    let perf_topic = format!("{}perf", e.names.events_topic());
    let kafka = aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings");
    admin::ensure_topics(&kafka, std::slice::from_ref(&perf_topic), 6, 1)
        .await
        .expect("topic");
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let (mut delivered_all, mut perf_all, mut errors) = (0i64, 0i64, 0u64);
    let mut perf_warm_excluded = true;
    for run in 0..runs() {
        diesel::sql_query("UPDATE outbox SET published_at = NULL")
            .execute(&mut c)
            .await
            .expect("reset");
        diesel::sql_query("VACUUM ANALYZE outbox").execute(&mut c).await.ok();
        let before = end_offsets(&kafka, &e.names.events_topic()).await;
        let out = Command::new(bin())
            .args(["process-outbox"])
            .envs(bin_env(&e))
            .stderr(Stdio::null())
            .output()
            .expect("relay runs");
        if !out.status.success() {
            errors += 1;
        }
        let p: Published = diesel::sql_query(
            "SELECT count(*) AS n, \
                    extract(epoch FROM max(published_at) - min(published_at))::float8 AS span_secs, \
                    (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS pending \
             FROM outbox WHERE published_at IS NOT NULL",
        )
        .get_result(&mut c)
        .await
        .expect("published");
        let delivered = end_offsets(&kafka, &e.names.events_topic()).await - before;
        assert_eq!((p.n, p.pending), (n, 0), "every row published");
        assert!(delivered >= n, "the topic received {delivered} of {n}");
        delivered_all += delivered;
        // Marks of the first batch share one timestamp: the span starts after it.
        let rate = (n - 1000) as f64 / p.span_secs.max(1e-3);
        ours.push(rate);

        let perf_before = end_offsets(&kafka, &perf_topic).await;
        let perf = Command::new("java")
            .args([
                "-Xmx512m",
                "-cp",
                &kafka_libs(),
                "org.apache.kafka.tools.ProducerPerformance",
                "--topic",
                &perf_topic,
                "--num-records",
                &n.to_string(),
                "--payload-file",
                &payload_file.to_string_lossy(),
                "--throughput",
                "-1",
                "--producer-props",
                &format!("bootstrap.servers={}", e.infra.kafka.bootstrap_servers),
                "acks=all",
                "enable.idempotence=true",
                "linger.ms=5",
                "compression.type=lz4",
            ])
            .output()
            .expect("ProducerPerformance runs");
        let perf_delivered = end_offsets(&kafka, &perf_topic).await - perf_before;
        assert!(
            perf_delivered >= n,
            "ProducerPerformance's topic received {perf_delivered} of {n}"
        );
        perf_all += perf_delivered;
        let (r, warm) = producer_performance_rate(&String::from_utf8_lossy(&perf.stdout), n);
        perf_warm_excluded &= warm;
        raw.push(r);
        progress(format_args!(
            "relay run {run}: ours {rate:.0}/s, ProducerPerformance {r:.0}/s"
        ));
    }
    let _ = std::fs::remove_file(&payload_file);
    let (o, or) = summary(ours);
    let (b, br) = summary(raw);
    rows.push(Row {
        what: format!("outbox relay, {n} x {avg} B backlog"),
        ours: o,
        ours_range: or,
        unit: "events/s",
        baseline_name: "Kafka ProducerPerformance, same payloads".into(),
        baseline: b,
        baseline_range: br,
        goal: ">= 0.6",
        errors,
        verified: format!(
            "{n} rows marked per run, {delivered_all} records on the topic in all; ProducerPerformance {perf_all} records; \
             relay also sends key + 6 headers per record; warm-up: relay's first batch out{}",
            if perf_warm_excluded { ", ProducerPerformance's first 5 s window out" } else { "; ProducerPerformance's run too short for windows: its figure includes JVM warm-up" }
        ),
    });
}

/// Relays 1, 2 and 4 over one backlog, every batch given a modelled round trip
/// (`RelaySettings::modelled_batch_latency`: a remote, replicated cluster) so that the work is
/// bound by waiting, not by this machine's 2 cores: events/s with N relays against N times
/// the events/s of one (efficiency). Relays run in this process, joined and balanced before
/// the backlog appears (an UPDATE that makes every row pending again).
async fn bench_relay_scaling(rows: &mut Vec<Row>) {
    const BATCH: i64 = 200;
    const LATENCY: Duration = Duration::from_millis(100);
    let e = fresh_env("relays").await;
    let n = (40_000.0 * scale()) as i64;
    let mut c = pool::connect(e.infra.database.url.expose(), Duration::from_secs(600))
        .await
        .expect("conn");
    diesel::sql_query(format!(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload, headers, published_at) \
         SELECT gen_random_uuid(), 'product', p.id, v, '{t}', p.id::text, 'ProductStockAdjusted', 1, \
                jsonb_build_object('aggregate_id', p.id, 'aggregate_version', v, 'pad', md5(p.id::text || v::text)), \
                jsonb_build_object('event_type', 'ProductStockAdjusted', 'aggregate_version', v::text), now() \
         FROM generate_series(1, 10) v, (SELECT gen_random_uuid() AS id FROM generate_series(1, {p})) p ORDER BY v, p.id",
        t = e.names.events_topic(),
        p = n / 10
    ))
    .execute(&mut c)
    .await
    .expect("seed");
    let kafka = aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings");
    let mut results: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
    let mut delivered_total = 0i64;
    for _run in 0..runs() {
        for relays in [1usize, 2, 4] {
            let mut running = Vec::new();
            for _ in 0..relays {
                let p = producer::build(&kafka, &ProducerSettings::default()).expect("producer");
                let mut relay = OutboxRelay::new(
                    e.infra.database.url.expose().to_owned(),
                    p,
                    RelaySettings {
                        batch_size: BATCH,
                        poll_interval: Duration::from_millis(20),
                        rebalance_interval: Duration::from_millis(100),
                        modelled_batch_latency: LATENCY,
                        ..Default::default()
                    },
                );
                let slices = relay.slices();
                let sd = Shutdown::new();
                let stop = sd.clone();
                running.push((
                    tokio::spawn(async move { relay.run_until_stopped(stop).await }),
                    sd,
                    slices,
                ));
            }
            let share = (OUTBOX_SLICES as usize).div_ceil(relays);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let owned: Vec<usize> = running.iter().map(|(_, _, s)| s.borrow().len()).collect();
                if owned.iter().sum::<usize>() == OUTBOX_SLICES as usize && owned.iter().all(|o| *o <= share) {
                    break;
                }
                assert!(Instant::now() < deadline, "relays balanced: {owned:?}");
                tokio::time::sleep(Duration::from_millis(20)).await; // polling the relays' state
            }
            diesel::sql_query("VACUUM ANALYZE outbox").execute(&mut c).await.ok();
            let before = end_offsets(&kafka, &e.names.events_topic()).await;
            diesel::sql_query("UPDATE outbox SET published_at = NULL")
                .execute(&mut c)
                .await
                .expect("reset");
            let started = Instant::now();
            loop {
                #[derive(diesel::QueryableByName)]
                struct Pending {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    n: i64,
                }
                let p: Pending = diesel::sql_query("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
                    .get_result(&mut c)
                    .await
                    .expect("pending");
                if p.n == 0 {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(600),
                    "{relays} relays drain the outbox"
                );
                tokio::time::sleep(Duration::from_millis(10)).await; // polling the outbox
            }
            let secs = started.elapsed().as_secs_f64();
            let delivered = end_offsets(&kafka, &e.names.events_topic()).await - before;
            assert!(delivered >= n, "{relays} relays: the topic received {delivered} of {n}");
            delivered_total += delivered;
            for (task, sd, _) in running {
                sd.trigger();
                let _ = task.await;
            }
            eprintln!("relays x{relays}: {n} events in {secs:.2}s ({:.0}/s)", n as f64 / secs);
            results.entry(relays).or_default().push(n as f64 / secs);
        }
    }
    let one = summary(results.get(&1).cloned().unwrap_or_default());
    let ideal = BATCH as f64 / LATENCY.as_secs_f64();
    for relays in [2usize, 4] {
        let (o, or) = summary(results.get(&relays).cloned().unwrap_or_default());
        let k = relays as f64;
        rows.push(Row {
            what: format!("outbox relays x{relays}, {} ms modelled per {BATCH}-row batch", LATENCY.as_millis()),
            ours: o,
            ours_range: or,
            unit: "events/s",
            baseline_name: format!("{relays} x one relay ({:.0} events/s)", one.0),
            baseline: k * one.0,
            baseline_range: (k * one.1 .0, k * one.1 .1),
            goal: ">= 0.9",
            errors: 0,
            verified: format!(
                "{n} rows marked per run, {delivered_total} records on the topic in all; one relay's ceiling is {ideal:.0}/s \
                 ({BATCH} rows per {} ms), it reached {:.0}: the rest is claim, produce and mark",
                LATENCY.as_millis(),
                one.0
            ),
        });
    }
}

fn envelope(id: uuid::Uuid, v: i64, title: &str) -> EventEnvelope {
    let now = chrono::Utc::now();
    let mut state = None;
    let mut last = None;
    let cmds = [
        ProductCommand::CreateProduct(domain::CreateProduct {
            sku: format!("SKU-{id}"),
            title: title.to_owned(),
            description: "A dependable everyday product with a long description for the analyzer to chew on".into(),
            category: format!("cat-{}", id.as_u128() % 20),
            brand: format!("brand-{}", id.as_u128() % 50),
            attributes: [("colour".to_owned(), "black".to_owned())].into(),
            price: Some(domain::Money {
                amount_minor: 1000 + (id.as_u128() % 9000) as i64,
                currency: "USD".into(),
            }),
            stock: 10,
        }),
        ProductCommand::PublishProduct,
        ProductCommand::AdjustStock { delta: -1 },
        ProductCommand::AdjustStock { delta: 2 },
    ];
    for c in cmds.iter().take(v as usize) {
        let (next, change) = domain::execute(state.as_ref(), id, c, now).expect("valid");
        last = Some(EventEnvelope::new(
            &change,
            &next,
            EventMeta {
                event_id: uuid::Uuid::now_v7(),
                causation_id: None,
                correlation_id: None,
                occurred_at: now,
            },
        ));
        state = Some(next);
    }
    last.expect("one event")
}

/// Produces 4 events (create, publish, two stock moves) for each of `products` new products to
/// `topic`, version by version; returns them in that order.
async fn produce_events(e: &Env, topic: &str, products: usize) -> Vec<EventEnvelope> {
    let p = producer::build(
        &aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings"),
        &ProducerSettings::default(),
    )
    .expect("producer");
    let ids: Vec<uuid::Uuid> = (0..products).map(|_| uuid::Uuid::new_v4()).collect();
    let mut envs = Vec::with_capacity(products * 4);
    for v in 1..=4 {
        for id in &ids {
            envs.push(envelope(*id, v, "Wireless ergonomic mouse"));
        }
    }
    let mut futs = Vec::with_capacity(50_000);
    for ev in &envs {
        let payload = serde_json::to_vec(ev).expect("json");
        let key = ev.aggregate_id.to_string();
        futs.push(
            p.send_result(FutureRecord::to(topic).key(&key).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
        if futs.len() >= 50_000 {
            for f in futs.drain(..) {
                f.await.expect("delivered").expect("ok");
            }
        }
    }
    for f in futs {
        f.await.expect("delivered").expect("ok");
    }
    envs
}

/// The same documents straight to `_bulk` into a fresh index, `chunk` per request; the first
/// request (warm-up) is outside the timed window. Returns documents/s.
async fn raw_bulk(
    search: &SearchClient,
    index_name: &str,
    layout: index::IndexLayout,
    envs: &[EventEnvelope],
    chunk: usize,
) -> f64 {
    index::create_index(search, index_name, layout)
        .await
        .expect("raw index");
    let mut started = None;
    for part in envs.chunks(chunk) {
        let items: Vec<bulk::BulkItem> = part
            .iter()
            .map(|ev| bulk::BulkItem {
                id: ev.aggregate_id,
                version: ev.aggregate_version,
                doc: document::product_document(&ev.state),
            })
            .collect();
        bulk::index_items(search, index_name, &items).await.expect("bulk");
        started.get_or_insert_with(Instant::now);
    }
    let timed = envs.len().saturating_sub(chunk.min(envs.len()));
    timed as f64 / started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0).max(1e-3)
}

/// Documents in `index_name` after a refresh.
async fn doc_count(search: &SearchClient, index_name: &str) -> u64 {
    index::refresh(search, index_name).await.expect("refresh");
    let resp = search
        .call(|os| async move { os.count(opensearch::CountParts::Index(&[index_name])).send().await })
        .await
        .expect("count");
    let v: serde_json::Value = aliexpress::search::client::decode(resp).await.expect("count");
    v["count"].as_u64().unwrap_or(0)
}

/// Projection from a backlog (shipped defaults: batch 500, batch wait 100 ms; OpenSearch and
/// Redis) vs the same documents straight to `_bulk` in requests of 500 (no Redis). Both
/// clocks start after the first batch, which is not counted. Both indices refresh every
/// `refresh_ms` (shipped: 1000; the freshness rows try 200, this shows what it costs).
async fn bench_projection(rows: &mut Vec<Row>, refresh_ms: u64) {
    let layout = index::IndexLayout {
        refresh_interval_ms: refresh_ms,
        ..Default::default()
    };
    let e = fresh_env("proj").await;
    let n = (100_000.0 * scale()) as usize / 4 * 4;
    let topic = e.names.events_topic();
    progress(format_args!("projection: producing {n} events"));
    let envs = produce_events(&e, &topic, n / 4).await;
    let p = producer::build(
        &aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings"),
        &ProducerSettings::default(),
    )
    .expect("producer");
    let search = SearchClient::new(e.infra.opensearch.url.expose(), Duration::from_secs(60)).expect("search");
    let alias = e.names.index_alias();
    index::ensure_alias(&search, &alias, index::IndexLayout::default())
        .await
        .expect("index");
    let settings = ProjectionSettings {
        log_each_event: false,
        ..Default::default()
    };
    let batch = settings.batch_size;
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let mut verified = String::new();
    for run in 0..runs() {
        // A fresh group (reads from the start) and a fresh index: the same work every run.
        let target = format!("{alias}_run{run}");
        index::create_index(&search, &target, layout).await.expect("index");
        let cache =
            aliexpress::cache::ProductCache::new(e.infra.redis.url.expose(), e.names.clone(), Duration::from_secs(600))
                .expect("cache");
        let group = format!("{}-run{run}", e.names.projection_group());
        let c = consumer::build(
            &aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings"),
            &group,
        )
        .expect("consumer");
        c.subscribe(&[&topic]).expect("subscribe");
        let dlq = aliexpress::bus::dlq::DlqWriter::new(p.clone(), e.names.events_dlq_topic(), group.clone());
        let mut proj = ProductEventConsumer::new(
            Arc::new(c),
            search.clone(),
            target.clone(),
            cache,
            dlq,
            group,
            settings.clone(),
        );
        let shutdown = Shutdown::new();
        let (mut seen, mut applied, mut timed) = (0usize, 0usize, 0usize);
        let mut started = None;
        while seen < n {
            let o = proj
                .process_once(Duration::from_secs(10), &shutdown)
                .await
                .expect("batch");
            if o.received == 0 {
                break;
            }
            seen += o.received - o.unfinished;
            applied += o.applied + o.already_applied;
            // The clock starts after the first batch (warm-up), which is not counted.
            if started.is_some() {
                timed += o.received - o.unfinished;
            }
            started.get_or_insert_with(Instant::now);
        }
        assert_eq!(applied, n, "every event applied");
        let rate = timed as f64 / started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0);
        ours.push(rate);
        let docs = doc_count(&search, &target).await;
        assert_eq!(docs as usize, n / 4, "one document per product");
        verified = format!("{applied} events applied, {docs} documents in the index");

        let raw_index = format!("{alias}_raw{run}");
        let r = raw_bulk(&search, &raw_index, layout, &envs, batch).await;
        assert_eq!(
            doc_count(&search, &raw_index).await as usize,
            n / 4,
            "raw: one document per product"
        );
        raw.push(r);
        progress(format_args!("projection run {run}: ours {rate:.0}/s, _bulk {r:.0}/s"));
    }
    let (o, or) = summary(ours);
    let (b, br) = summary(raw);
    rows.push(Row {
        what: format!("projection, {n} events backlog (OpenSearch + Redis), refresh {refresh_ms} ms"),
        ours: o,
        ours_range: or,
        unit: "events/s",
        baseline_name: format!("same docs to _bulk, {batch} per request (no Redis)"),
        baseline: b,
        baseline_range: br,
        goal: if refresh_ms == 1000 { ">= 0.8" } else { "(trade-off)" },
        errors: 0,
        verified,
    });
}

/// Closed loop: `clients` tasks POST creates back to back for `warm + secs`; only answers
/// that arrive in the last `secs` count. Returns (201s per second, failures in the window).
async fn api_creates(base: &str, clients: usize, warm: f64, secs: f64) -> (f64, u64) {
    let http = http_client();
    let begin = Instant::now() + Duration::from_secs_f64(warm);
    let end = begin + Duration::from_secs_f64(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, base) = (http.clone(), base.to_owned());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < end {
                    let r = create(&http, &base).await;
                    let now = Instant::now();
                    if now >= begin && now < end {
                        if r.is_some() {
                            ok += 1;
                        } else {
                            failed += 1;
                        }
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = t.await.unwrap_or((0, 1));
        ok += o;
        failed += f;
    }
    (ok as f64 / secs, failed)
}

/// The work a create (or a consumed CreateProduct) does, without our code: one connection per
/// client (tokio-postgres, the driver under diesel-async), one round trip per statement as
/// diesel-async makes them, the same statements and row sizes, NOTIFY, and for the API the
/// same Redis write (the cache's versioned put script, one pipeline) after the commit.
#[derive(Clone, Copy)]
enum Work {
    /// Product row, outbox row, NOTIFY (pipelined); then the Redis write-through.
    ApiCreate,
    /// Command probe, lock probe; product row, outbox row, command outcome, NOTIFY (pipelined).
    ConsumedCreate,
}

/// Runs `work` on `clients` connections for `warm + secs`; returns (transactions per second
/// in the last `secs`, failures in that window).
async fn same_work(e: &Env, work: Work, clients: usize, warm: f64, secs: f64) -> (f64, u64) {
    let begin = Instant::now() + Duration::from_secs_f64(warm);
    let end = begin + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (url, names, topic) = (
            e.infra.database.url.expose().to_owned(),
            e.names.clone(),
            e.names.events_topic(),
        );
        let cache =
            aliexpress::cache::ProductCache::new(e.infra.redis.url.expose(), e.names.clone(), Duration::from_secs(600))
                .expect("cache");
        tasks.push(tokio::spawn(async move {
            let _ = names;
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.expect("connect");
            tokio::spawn(conn);
            let probe_cmd = client
                .prepare("SELECT status, result_version FROM commands WHERE command_id = $1::text::uuid FOR UPDATE")
                .await
                .expect("prepare");
            let probe = client
                .prepare("SELECT id, sku, title, description, category, brand, attributes, price_minor, currency, stock, status, version, created_at, updated_at FROM products WHERE id = $1::text::uuid FOR UPDATE")
                .await
                .expect("prepare");
            let product = client
                .prepare("INSERT INTO products (id, sku, title, description, category, brand, attributes, price_minor, currency, stock, status, version, created_at, updated_at) \
                          VALUES ($1::text::uuid, $2, $3, $4, $5, $6, $7::text::jsonb, $8, $9, $10, $11, $12, now(), now())")
                .await
                .expect("prepare");
            let outbox = client
                .prepare("INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload, headers) \
                          VALUES ($1::text::uuid, 'product', $2::text::uuid, $3, $4, $5, $6, $7, $8::text::jsonb, $9::text::jsonb)")
                .await
                .expect("prepare");
            let outcome = client
                .prepare("INSERT INTO commands (command_id, product_id, command_type, status, result_version, reason, processed_at) \
                          VALUES ($1::text::uuid, $2::text::uuid, 'CreateProduct', 'applied', $3, NULL, now()) \
                          ON CONFLICT (command_id) DO UPDATE SET status = excluded.status, result_version = excluded.result_version, \
                          reason = excluded.reason, processed_at = excluded.processed_at")
                .await
                .expect("prepare");
            let notify = format!("NOTIFY {}", aliexpress::store::outbox_repo::OUTBOX_NOTIFY_CHANNEL);
            let (mut ok, mut failed) = (0u64, 0u64);
            while Instant::now() < end {
                let id = uuid::Uuid::now_v7();
                let cmd = ProductCommand::CreateProduct(domain::CreateProduct {
                    sku: uuid::Uuid::new_v4().to_string(),
                    title: "Bench product".into(),
                    description: "x".repeat(300),
                    category: String::new(),
                    brand: String::new(),
                    attributes: Default::default(),
                    price: Some(domain::Money {
                        amount_minor: 100,
                        currency: "USD".into(),
                    }),
                    stock: 0,
                });
                let now = chrono::Utc::now();
                let (state, change) = domain::execute(None, id, &cmd, now).expect("valid");
                let env = EventEnvelope::new(
                    &change,
                    &state,
                    EventMeta {
                        event_id: uuid::Uuid::now_v7(),
                        causation_id: None,
                        correlation_id: Some(uuid::Uuid::now_v7()),
                        occurred_at: now,
                    },
                );
                let payload = serde_json::to_string(&env).expect("json");
                let headers = json!({"event_id": env.event_id.to_string(), "event_type": env.event_type,
                    "schema_version": env.schema_version.to_string(), "aggregate_version": "1",
                    "correlation_id": uuid::Uuid::now_v7().to_string(),
                    "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
                .to_string();
                let (ids, eid, cid) = (id.to_string(), env.event_id.to_string(), uuid::Uuid::now_v7().to_string());
                let tx = async {
                    client.batch_execute("BEGIN").await?;
                    // The consumer reads and locks the command and the product first; the API's
                    // create has made its id and reads nothing.
                    if matches!(work, Work::ConsumedCreate) {
                        client.query_opt(&probe_cmd, &[&cid]).await?;
                        client.query_opt(&probe, &[&ids]).await?;
                    }
                    let status = "draft";
                    // The writes go out together (pipelined), as ours do. Fully qualified:
                    // diesel-async's RunQueryDsl::execute is in scope too.
                    let product_params: [&(dyn tokio_postgres::types::ToSql + Sync); 12] =
                        [&ids, &state.sku, &state.title, &state.description, &state.category, &state.brand,
                         &"{}", &Some(100i64), &Some("USD"), &0i64, &status, &1i64];
                    let outbox_params: [&(dyn tokio_postgres::types::ToSql + Sync); 9] =
                        [&eid, &ids, &1i64, &topic, &ids, &env.event_type, &1i32, &payload, &headers];
                    let product_write = tokio_postgres::Client::execute(&client, &product, &product_params);
                    let outbox_write = tokio_postgres::Client::execute(&client, &outbox, &outbox_params);
                    let outcome_write = async {
                        if matches!(work, Work::ConsumedCreate) {
                            tokio_postgres::Client::execute(&client, &outcome, &[&cid, &ids, &1i64]).await?;
                        }
                        Ok(())
                    };
                    futures::try_join!(product_write, outbox_write, outcome_write, client.batch_execute(&notify))?;
                    client.batch_execute("COMMIT").await?;
                    Ok::<_, tokio_postgres::Error>(())
                };
                let mut done = tx.await.is_ok();
                if matches!(work, Work::ApiCreate) && done {
                    done = cache.put(&state).await.is_ok();
                }
                let t = Instant::now();
                if t >= begin && t < end {
                    if done {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                if !done {
                    let _ = client.batch_execute("ROLLBACK").await;
                }
            }
            (ok, failed)
        }));
    }
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = t.await.unwrap_or((0, 1));
        ok += o;
        failed += f;
    }
    (ok as f64 / secs, failed)
}

/// The SQL of the API's create for pgbench (product row, outbox row of the envelope's size,
/// NOTIFY, pipelined as ours are), without Redis.
const PG_SAME_TX: &str = "BEGIN;
\\startpipeline
INSERT INTO products (id, sku, title, description, category, brand, attributes, price_minor, currency, stock, status, version, created_at, updated_at) VALUES (gen_random_uuid(), gen_random_uuid()::text, 'Bench product', repeat('x', 300), '', '', '{}', 100, 'USD', 0, 'draft', 1, now(), now());
INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload, headers) VALUES (gen_random_uuid(), 'product', gen_random_uuid(), 1, 't', 'k', 'ProductCreated', 1, jsonb_build_object('pad', repeat('x', 900)), '{}');
NOTIFY aliexpress_outbox;
\\endpipeline
COMMIT;
";

/// pgbench `-T secs` of `sql` over `clients` connections; (tps, failed transactions).
fn pgbench(url: &str, clients: u32, secs: f64, sql: &str) -> (f64, u64) {
    let script = std::env::temp_dir().join(format!("aliexpress-pgbench-{}.sql", std::process::id()));
    std::fs::write(&script, sql).expect("script");
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &(secs.ceil() as u64).to_string(),
            "-f",
            &script.to_string_lossy(),
            url,
        ])
        .output()
        .expect("pgbench runs (postgresql-contrib)");
    let text = String::from_utf8_lossy(&out.stdout);
    let tps = text
        .lines()
        .find(|l| l.starts_with("tps"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0);
    let failed = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or(u64::from(!out.status.success()));
    (tps, failed)
}

/// Capacities measured by earlier sections, for the rates of later ones.
#[derive(Default)]
struct Capacity {
    creates_per_sec: Option<f64>,
    get_hit_per_sec: Option<f64>,
}

async fn bench_api(rows: &mut Vec<Row>, cap: &mut Capacity) {
    let e = fresh_env("api").await;
    let clients = 8;
    let (warm, secs) = (2.0, secs());
    let (mut ours, mut same, mut pg) = (Vec::new(), Vec::new(), Vec::new());
    let (mut ours_err, mut same_err, mut pg_err) = (0, 0, 0);
    let (_role, base) = serve(&e, &[]).await;
    for run in 0..runs() {
        let (o, f) = api_creates(&base, clients, warm, secs).await;
        ours.push(o);
        ours_err += f;
        let (s, f) = same_work(&e, Work::ApiCreate, clients, warm, secs).await;
        same.push(s);
        same_err += f;
        let (p, f) = pgbench(e.infra.database.url.expose(), clients as u32, secs, PG_SAME_TX);
        pg.push(p);
        pg_err += f;
        progress(format_args!(
            "api run {run}: ours {o:.0}/s, same SQL+Redis {s:.0}/s, pgbench {p:.0}/s"
        ));
    }
    let (o, or) = summary(ours);
    cap.creates_per_sec = Some(o);
    let (s, sr) = summary(same);
    let (p, pr) = summary(pg);
    rows.push(Row {
        what: format!("API creates, {clients} clients, closed loop"),
        ours: o,
        ours_range: or,
        unit: "creates/s",
        baseline_name: format!("same SQL (NOTIFY) + Redis put, {clients} conns"),
        baseline: s,
        baseline_range: sr,
        goal: ">= 0.6",
        errors: ours_err + same_err,
        verified: format!(
            "only 201s counted; {}s window after {warm}s warm-up; failures ours {ours_err}, baseline {same_err}",
            secs
        ),
    });
    rows.push(Row {
        what: format!("API creates vs SQL alone, {clients} clients"),
        ours: o,
        ours_range: or,
        unit: "creates/s",
        baseline_name: format!("pgbench same statements + NOTIFY, {clients} conns"),
        baseline: p,
        baseline_range: pr,
        goal: "(info)",
        errors: pg_err,
        verified: format!("pgbench -M prepared, failed transactions {pg_err}; no Redis, no HTTP"),
    });

    // Latency of creates open-loop at half the measured maximum.
    let rate = (o / 2.0).max(10.0);
    let http = http_client();
    let (mut p50, mut p99, mut p999, mut errs, mut n) = (Vec::new(), Vec::new(), Vec::new(), 0, 0);
    for run in 0..runs() {
        let s = open_loop(rate, 1.0, secs, |_| {
            let (http, base) = (http.clone(), base.clone());
            ("create", async move { create(&http, &base).await.is_some() })
        })
        .await;
        let s = s.into_values().next().unwrap_or_default();
        n += s.ok.len();
        errs += s.errors;
        p50.push(quantile(&s.ok, 0.5));
        p99.push(quantile(&s.ok, 0.99));
        p999.push(quantile(&s.ok, 0.999));
        progress(format_args!(
            "api latency run {run} @{rate:.0}/s: p50 {:.1} ms, p99 {:.1} ms",
            p50[run], p99[run]
        ));
    }
    let (a, ar) = summary(p99);
    let (b, br) = summary(p50);
    let (c, _) = summary(p999);
    rows.push(Row {
        what: format!("API create latency @{rate:.0}/s (half max), open loop: p99"),
        ours: a,
        ours_range: ar,
        unit: "ms",
        baseline_name: format!("p50 (p99.9 {c:.1} ms)"),
        baseline: b,
        baseline_range: br,
        goal: "p99 <= 25",
        errors: errs,
        verified: format!("{n} 201s timed from when each was due, {errs} failures"),
    });
}

/// The command consumer over a backlog of CreateProduct (its pool of 4 connections) vs the
/// same statements over 4 connections. Each run reads its own topic; the first batch is
/// outside the timed window.
async fn bench_consumer(rows: &mut Vec<Row>) {
    let e = fresh_env("cmd").await;
    let n = (20_000.0 * scale()) as usize;
    let conns = 4;
    let kafka = aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings");
    let p = producer::build(&kafka, &ProducerSettings::default()).expect("producer");
    let (mut ours, mut same, mut errors) = (Vec::new(), Vec::new(), 0);
    let mut verified = String::new();
    for run in 0..runs() {
        let topic = format!("{}.run{run}", e.names.commands_topic());
        admin::ensure_topics(&kafka, std::slice::from_ref(&topic), 6, 1)
            .await
            .expect("topic");
        let mut futs = Vec::new();
        for i in 0..n {
            let id = uuid::Uuid::now_v7();
            let cmd = json!({"command_id": uuid::Uuid::now_v7(), "product_id": id, "command_type": "CreateProduct",
                             "payload": {"sku": format!("CMD-{i}-{id}"), "title": "Commanded product", "description": "x".repeat(300),
                                         "price": {"amount_minor": 100, "currency": "USD"}}})
            .to_string();
            futs.push(
                p.send_result(FutureRecord::to(&topic).key(&id.to_string()).payload(&cmd))
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        for f in futs {
            f.await.expect("delivered").expect("ok");
        }
        let group = format!("{}-run{run}", e.names.command_group());
        let kc = consumer::build(&kafka, &group).expect("consumer");
        kc.subscribe(&[&topic]).expect("subscribe");
        let worker = aliexpress::worker::commands::ProductConsumer::new(
            kc,
            pool::build_pool(e.infra.database.url.expose(), conns, Duration::from_secs(30)).expect("pool"),
            aliexpress::bus::dlq::DlqWriter::new(p.clone(), e.names.commands_dlq_topic(), group),
            e.names.events_topic(),
            true,
            aliexpress::failure::RetryPolicy::default(),
        );
        let shutdown = Shutdown::new();
        let (mut done, mut timed) = (0, 0);
        let mut started = None;
        while done < n {
            let batch = worker
                .process_batch(
                    aliexpress::worker::commands::COMMAND_BATCH,
                    Duration::from_secs(10),
                    &shutdown,
                )
                .await
                .expect("process");
            if batch.is_empty() {
                break;
            }
            done += batch.len();
            if started.is_some() {
                timed += batch.len();
            }
            started.get_or_insert_with(Instant::now);
        }
        if done < n {
            errors += (n - done) as u64;
        }
        let rate = timed as f64 / started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0);
        ours.push(rate);
        #[derive(diesel::QueryableByName)]
        struct Applied {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut c = pool::connect(e.infra.database.url.expose(), Duration::from_secs(60))
            .await
            .expect("conn");
        let a: Applied = diesel::sql_query(
            "SELECT count(*) AS n FROM commands WHERE status = 'applied' AND command_type = 'CreateProduct'",
        )
        .get_result(&mut c)
        .await
        .expect("count");
        verified = format!("{done} outcomes per run; {} commands applied in all (both sides)", a.n);
        let (s, f) = same_work(&e, Work::ConsumedCreate, conns, 1.0, secs()).await;
        same.push(s);
        errors += f;
        progress(format_args!(
            "consumer run {run}: ours {rate:.0}/s, same statements {s:.0}/s"
        ));
    }
    let (o, or) = summary(ours);
    let (s, sr) = summary(same);
    rows.push(Row {
        what: format!("command consumer, {n} CreateProduct, pool of {conns}"),
        ours: o,
        ours_range: or,
        unit: "commands/s",
        baseline_name: format!("same statements (NOTIFY), {conns} conns"),
        baseline: s,
        baseline_range: sr,
        goal: "(info)",
        errors,
        verified,
    });
}

/// Ids `00000000-0000-4000-8000-00000000XXXX`: 65 536 published products the miss row reads
/// through a regex URL.
const MISS_IDS: u32 = 65_536;

/// GET /api/products/{id} from Redis (one product written through by its create) and from
/// Postgres (65 536 products never cached, a server whose cache entries live 1 s, ids drawn at
/// random: a few percent of reads repeat an id within its second and hit) vs /health/live of
/// the same binary: oha, the same 16 connections, closed loop for the maximum rate, then open
/// loop at one common rate (half the slowest route's maximum) for p50/p99.
async fn bench_get(rows: &mut Vec<Row>, cap: &mut Capacity) {
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
    let (_hit_role, hit_base) = serve(&e, &[]).await;
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
            "get run {run}: max live {:.0}, hit {:.0}, miss {:.0} req/s; p99 @{fixed:.0}/s live {:.1}, hit {:.1}, miss {:.1} ms",
            max["live"][run], max["hit"][run], max["miss"][run], p99["live"][run], p99["hit"][run], p99["miss"][run]
        ));
    }
    let fixed = rate.unwrap_or(0.0);
    let (live, live_r) = summary(max["live"].clone());
    let (live99, live99_r) = summary(p99["live"].clone());
    for (name, label) in [("hit", "Redis hit"), ("miss", "Postgres miss")] {
        let (o, or) = summary(max[name].clone());
        if name == "hit" {
            cap.get_hit_per_sec = Some(o);
        }
        rows.push(Row {
            what: format!("GET /api/products/{{id}}, {label}, {conns} conns"),
            ours: o,
            ours_range: or,
            unit: "req/s",
            baseline_name: "/health/live, same binary, tool, conns".into(),
            baseline: live,
            baseline_range: live_r,
            goal: ">= 0.5",
            errors: errors[name] + errors["live"],
            verified: format!(
                "{} 200s counted (live {}), non-200 or failed: {}",
                counted[name], counted["live"], errors[name]
            ),
        });
        let (o, or) = summary(p99[name].clone());
        let (m, _) = summary(p50[name].clone());
        rows.push(Row {
            what: format!("GET {label} @{fixed:.0}/s open loop: p99 (p50 {m:.1})"),
            ours: o,
            ours_range: or,
            unit: "ms",
            baseline_name: "/health/live p99, same rate".into(),
            baseline: live99,
            baseline_range: live99_r,
            goal: "-",
            errors: 0,
            verified: "oha -q with --latency-correction".into(),
        });
    }
}

/// 95 % GET (Redis hits over 1 000 products) and 5 % creates, open loop at one rate near
/// saturation (`BENCH_MIXED_RATE`, default 30 % of the capacity the get and api rows imply:
/// those were measured with oha, while this row's requests come from the bench's own client on
/// the same 2 cores, and perfect sharing is assumed; at 50 % the box was past saturation,
/// answers took seconds and some timed out).
async fn bench_mixed(rows: &mut Vec<Row>, cap: &Capacity) {
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
        rows.push(Row {
            what: format!("mixed 95/5 @{rate:.0}/s open loop, {kind}: p99"),
            ours: a,
            ours_range: ar,
            unit: "ms",
            baseline_name: format!("{kind} p50"),
            baseline: b,
            baseline_range: br,
            goal: "-",
            errors,
            verified: format!(
                "{} {kind}s with the expected status; failures (both kinds) {errors}",
                n.get(kind).unwrap_or(&0)
            ),
        });
    }
}

/// One freshness run: `writes` creates open loop at `rate`; one poller asks the index the
/// search API reads (the alias) for every id still unseen, in one `ids` query every 20 ms.
/// A write's freshness runs from when it was due to the answer that first showed it.
/// Returns (sorted ms, failures: non-201 or not visible within 30 s, sorted ms from due to
/// the API's 201: the part of the freshness spent before the write was committed).
async fn freshness_run(
    base: &str,
    search: &SearchClient,
    alias: &str,
    rate: f64,
    writes: usize,
) -> (Vec<f64>, u64, Vec<f64>) {
    type Pending = Arc<Mutex<BTreeMap<uuid::Uuid, tokio::time::Instant>>>;
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
                    if let Some(v) = found {
                        let now = tokio::time::Instant::now();
                        let mut p = pending.lock().expect("pending");
                        let mut s = seen.lock().expect("seen");
                        for h in v["hits"]["hits"].as_array().into_iter().flatten() {
                            if let Some(id) = h["_id"].as_str().and_then(|s| s.parse::<uuid::Uuid>().ok()) {
                                if let Some(due) = p.remove(&id) {
                                    s.push((now - due).as_secs_f64() * 1000.0);
                                    last_progress = now;
                                }
                            }
                        }
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
async fn bench_freshness(rows: &mut Vec<Row>) {
    let shipped = std::env::var("BENCH_FRESH_BATCH_WAIT").ok();
    for (refresh_ms, wait) in [
        (1000u64, shipped.clone()),
        (200, shipped),
        (200, Some("0ms".to_owned())),
    ] {
        freshness_variant(rows, refresh_ms, wait).await;
    }
}

async fn freshness_variant(rows: &mut Vec<Row>, refresh_ms: u64, wait: Option<String>) {
    let e = fresh_env("fresh").await;
    let refresh = [("OPENSEARCH_REFRESH_INTERVAL_MS", refresh_ms.to_string())];
    let (_api, base) = serve(&e, &refresh).await;
    let _relay = spawn_role(&e, &["process-outbox".into(), "--follow".into()], &[]);
    let mut proj_args = vec!["run-product-event-consumer".to_owned(), "--quiet-events".into()];
    if let Some(w) = &wait {
        proj_args.extend(["--batch-wait".into(), w.clone()]);
    }
    let _proj = spawn_role(&e, &proj_args, &refresh);
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
        for run in 0..runs() {
            let (s, f, a) = freshness_run(&base, &search, &alias, rate, writes).await;
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
        rows.push(Row {
            what: format!(
                "freshness @{rate:.0} writes/s, refresh {refresh_ms} ms, batch wait {}: p50 (max {m:.0} [{:.0}-{:.0}])",
                wait.as_deref().unwrap_or("100ms"),
                mr.0,
                mr.1
            ),
            ours: a,
            ours_range: ar,
            unit: "ms",
            baseline_name: "p99".into(),
            baseline: b,
            baseline_range: br,
            goal: "p50<=300 p99<=1000 @500",
            errors,
            verified: format!(
                "{n} writes seen in the index (≥ {writes} per run asked), {errors} failed or unseen in 30 s; one ids poll / 20 ms; \
                 of which due -> 201 from the API p50 {acc50:.0} ms, p99 {acc99:.0} ms; \
                 projection batch wait {}; refresh_interval {refresh_ms} ms",
                wait.as_deref().unwrap_or("shipped (100ms)")
            ),
        });
    }
}

/// `replay --rebuild` of N events (4 per product) from the topic into a fresh index, timed as
/// the whole command (start, consume, verify count and checksum against Postgres, swap;
/// `--grace 0s`) vs raw `_bulk` of the same documents in requests of 500.
async fn bench_rebuild(rows: &mut Vec<Row>) {
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
    let mut c = pool::connect(e.infra.database.url.expose(), Duration::from_secs(600))
        .await
        .expect("conn");
    // Postgres holds the state the events end in: the rebuild checks (id, version) against it.
    for part in ids.chunks(10_000) {
        diesel::sql_query(
            "INSERT INTO products (id, sku, title, description, category, brand, attributes, price_minor, currency, stock, status, version, created_at, updated_at) \
             SELECT id, 'SKU-' || id, 'Wireless ergonomic mouse', '', '', '', '{}', 1000, 'USD', 11, 'published', 4, now(), now() FROM unnest($1) id",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(part.to_vec())
        .execute(&mut c)
        .await
        .expect("seed products");
    }
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
    rows.push(Row {
        what: format!("replay --rebuild, {n} events (whole command)"),
        ours: o,
        ours_range: or,
        unit: "events/s",
        baseline_name: "same docs to _bulk, 500 per request".into(),
        baseline: b,
        baseline_range: br,
        goal: ">= 0.7",
        errors,
        verified,
    });
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
        if unit == "ms" {
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
        section!("peer", debezium_peer::bench_debezium_peer(&mut rows).await);
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
    });
}
