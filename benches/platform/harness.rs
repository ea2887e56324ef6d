//! Shared by the sections: the bench's environment (a fresh database, topics and index per
//! section), the binary's roles as child processes, HTTP load (closed loop, open loop, oha) and
//! Kafka offsets.

use std::collections::BTreeMap;
use std::future::Future;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aliexpress::bus::admin;
use aliexpress::bus::producer;
use aliexpress::config::{DatabaseSettings, InfraConfig, KafkaSettings, Names, OpenSearchSettings, RedisSettings};
use aliexpress::store::pool;
use diesel_async::RunQueryDsl;
use rdkafka::consumer::Consumer;
use serde_json::json;

use super::env_or;

pub(super) fn bin() -> String {
    std::env::var("ALIEXPRESS_BIN").unwrap_or_else(|_| {
        let dir = env_or("CARGO_TARGET_DIR", "target");
        format!("{dir}/release/aliexpress")
    })
}

pub(super) fn kafka_libs() -> String {
    format!(
        "{}/kafka/libs/*",
        env_or("ALIEXPRESS_STATE_DIR", "/var/tmp/aliexpress-stack")
    )
}

pub(super) struct Env {
    pub(super) infra: InfraConfig,
    pub(super) names: Names,
}

pub(super) async fn fresh_env(tag: &str) -> Env {
    let base = env_or(
        "DATABASE_URL",
        "postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress",
    );
    fresh_env_on(tag, &base).await
}

/// Like [`fresh_env`], with the database made on the Postgres of `base` (an admin URL).
pub(super) async fn fresh_env_on(tag: &str, base: &str) -> Env {
    let id = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let db = format!("aliexpress_bench_{tag}_{id}");
    let mut admin_conn = pool::connect(base, Duration::from_secs(600))
        .await
        .expect("postgres up (make up)");
    diesel::sql_query(format!("CREATE DATABASE \"{db}\""))
        .execute(&mut admin_conn)
        .await
        .expect("create db");
    let mut u = url::Url::parse(base).expect("url");
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

pub(super) fn bin_env(e: &Env) -> Vec<(&'static str, String)> {
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
pub(super) const TOKEN: &str = "bench";

/// A child process of the binary, stopped (SIGTERM, then waited for) when dropped.
pub(super) struct Role(pub(super) std::process::Child);

impl Drop for Role {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Role {
    /// Stops the process: SIGTERM, and SIGKILL if it has not exited 10 s later (a JVM whose
    /// graceful stop hangs once held a whole run).
    pub(super) fn stop(&mut self) {
        if !matches!(self.0.try_wait(), Ok(None)) {
            return;
        }
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(self.0.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50)); // polling for the child's exit
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// The child's process id: the binary itself ([`spawn_role`] runs it with no shell between).
    pub(super) fn pid(&self) -> u32 {
        self.0.id()
    }

    /// True when the child's `/proc/<pid>/exe` is the binary the bench runs ([`bin`]).
    pub(super) fn is_the_binary(&self) -> bool {
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid()));
        let want = std::fs::canonicalize(bin());
        matches!((exe, want), (Ok(a), Ok(b)) if a == b)
    }

    /// Resets the child's peak resident set (`VmHWM`) to its current one (`5` written to
    /// `/proc/<pid>/clear_refs`, Linux 4.0 and later); false when that was refused.
    pub(super) fn reset_peak_rss(&self) -> bool {
        std::fs::write(format!("/proc/{}/clear_refs", self.pid()), "5").is_ok()
    }

    /// The child's peak resident set (`VmHWM` of `/proc/<pid>/status`) in KiB, since it started
    /// or since the last [`Role::reset_peak_rss`]; None once it has exited.
    pub(super) fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    }
}

pub(super) fn spawn_role(e: &Env, args: &[String], extra_env: &[(&str, String)]) -> Role {
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
/// Inserts `ids` as published products at `version`, `per_tx` rows per transaction (each
/// commit one acknowledged write).
pub(super) async fn seed_products(url: &str, ids: &[uuid::Uuid], version: i64, per_tx: usize) {
    let mut c = pool::connect(url, Duration::from_secs(600)).await.expect("conn");
    for part in ids.chunks(per_tx) {
        diesel::sql_query(
            "INSERT INTO products (id, sku, title, description, category, brand, attributes, price_minor, currency, stock, status, version, created_at, updated_at) \
             SELECT id, 'SKU-' || id, 'Wireless ergonomic mouse', '', '', '', '{}', 1000, 'USD', 11, 'published', $2, now(), now() FROM unnest($1) id",
        )
        .bind::<diesel::sql_types::Array<diesel::sql_types::Uuid>, _>(part.to_vec())
        .bind::<diesel::sql_types::BigInt, _>(version)
        .execute(&mut c)
        .await
        .expect("seed products");
    }
}

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `serve` with the shipped defaults (2 workers, NOTIFY on) plus `extra_env`; returns the role
/// and its base URL once /health/live answers.
pub(super) async fn serve(e: &Env, extra_env: &[(&str, String)]) -> (Role, String) {
    let (role, base, _) = serve_with_metrics(e, extra_env).await;
    (role, base)
}

/// [`serve`], and the URL of its Prometheus metrics.
pub(super) async fn serve_with_metrics(e: &Env, extra_env: &[(&str, String)]) -> (Role, String, String) {
    let (port, metrics_port) = (free_port(), free_port());
    let role = spawn_role(
        e,
        &[
            "serve".into(),
            "--bind".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-bind".into(),
            format!("127.0.0.1:{metrics_port}"),
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
    (role, base, format!("http://127.0.0.1:{metrics_port}/metrics"))
}

/// A client with a connection pool large enough for open-loop bursts.
pub(super) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .timeout(Duration::from_secs(30))
        .build()
        .expect("http client")
}

pub(super) fn create_body(sku: &str) -> serde_json::Value {
    json!({"sku": sku, "title": "Bench product", "description": "x".repeat(300),
           "price": {"amount_minor": 100, "currency": "USD"}})
}

/// POST /api/products; the new id on a 201.
pub(super) async fn create(http: &reqwest::Client, base: &str) -> Option<uuid::Uuid> {
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
pub(super) struct Samples {
    pub(super) ok: Vec<f64>,
    pub(super) errors: u64,
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
pub(super) async fn open_loop<F, Fut>(rate: f64, warm: f64, secs: f64, make: F) -> BTreeMap<&'static str, Samples>
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
pub(super) struct Oha {
    pub(super) rps: f64,
    pub(super) p50_ms: f64,
    pub(super) p99_ms: f64,
    pub(super) ok: u64,
    pub(super) errors: u64,
}

/// Runs oha (deploy/local/oha installs it) for `secs` against `url` (a regex when `regex`):
/// closed loop over `conns` connections when `rate` is None, else open loop at `rate` with
/// latency correction. Responses other than `expect` count as errors.
pub(super) fn oha(url: &str, regex: bool, conns: u32, rate: Option<f64>, secs: f64, expect: u16) -> Oha {
    oha_run(url, regex, conns, rate, secs, expect, &[])
}

/// oha closed loop over `conns` connections for `secs` against `url`, with `extra` arguments
/// (`-m POST -T application/json -D body.json`); answers other than 200 count as errors.
pub(super) fn oha_with(url: &str, conns: u32, secs: f64, extra: &[String]) -> Oha {
    oha_run(url, false, conns, None, secs, 200, extra)
}

/// [`oha`] with `extra` arguments before the URL.
fn oha_run(url: &str, regex: bool, conns: u32, rate: Option<f64>, secs: f64, expect: u16, extra: &[String]) -> Oha {
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
    cmd.args(extra);
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

/// A consumer that only reads offsets (it never joins its group); one per poller, not per read.
pub(super) fn offsets_reader(kafka: &aliexpress::bus::KafkaConnection) -> Arc<rdkafka::consumer::BaseConsumer> {
    Arc::new(
        producer::base_config(kafka)
            .set("group.id", "aliexpress-bench-offsets")
            .set("enable.auto.commit", "false")
            .create()
            .expect("consumer"),
    )
}

/// Log end offset of each partition of `topic`, indexed by partition id.
pub(super) async fn watermarks(reader: &Arc<rdkafka::consumer::BaseConsumer>, topic: &str) -> Vec<i64> {
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
pub(super) async fn end_offsets(kafka: &aliexpress::bus::KafkaConnection, topic: &str) -> i64 {
    watermarks(&offsets_reader(kafka), topic).await.iter().sum()
}

/// Capacities measured by earlier sections, for the rates of later ones.
#[derive(Default)]
pub(super) struct Capacity {
    pub(super) creates_per_sec: Option<f64>,
    pub(super) get_hit_per_sec: Option<f64>,
}

/// Produces `records` (key, payload) to `topic`, at most 50 000 awaiting their delivery at once;
/// returns once every one is acknowledged.
pub(super) async fn produce_keyed(
    p: &rdkafka::producer::FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = (String, Vec<u8>)>,
) {
    let mut futs = Vec::with_capacity(50_000);
    for (key, payload) in records {
        futs.push(
            p.send_result(rdkafka::producer::FutureRecord::to(topic).key(&key).payload(&payload))
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
}

/// Ids written (or produced) and not yet seen in the index, with when each was due.
pub(super) type Pending = Arc<Mutex<BTreeMap<uuid::Uuid, tokio::time::Instant>>>;

/// Moves every id among the hits of an `ids` search answer `v` from `pending` to `seen` (its
/// due → seen time in ms); true when one moved.
pub(super) fn note_seen(v: &serde_json::Value, pending: &Pending, seen: &Mutex<Vec<f64>>) -> bool {
    let now = tokio::time::Instant::now();
    let mut p = pending.lock().expect("pending");
    let mut s = seen.lock().expect("seen");
    let mut moved = false;
    for h in v["hits"]["hits"].as_array().into_iter().flatten() {
        if let Some(id) = h["_id"].as_str().and_then(|s| s.parse::<uuid::Uuid>().ok()) {
            if let Some(due) = p.remove(&id) {
                s.push((now - due).as_secs_f64() * 1000.0);
                moved = true;
            }
        }
    }
    moved
}
