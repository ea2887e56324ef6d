//! `make bench`: throughput and latency of each role against the real local stack, each next
//! to a raw baseline measured in the same run on the same machine, printed as a table.
//!
//! Rows:
//! - outbox relay (`aliexpress process-outbox`, one-shot over a backlog of ~1 KB rows) vs
//!   Apache Kafka's ProducerPerformance (same record size, acks=all, idempotence on);
//! - projection (events/s from a backlog) vs the same documents sent straight to `_bulk`;
//! - API creates/s (with and without the outbox NOTIFY) vs pgbench inserting one row per
//!   transaction at the same concurrency;
//! - command consumer commands/s vs pgbench with one client (the consumer is sequential);
//! - relay scaling: 2 and 4 relays sharing the outbox slices vs 2 and 4 times one relay, each
//!   batch given a modelled round trip so the work is not bound by this machine's cores;
//! - projection scaling: 2 and 3 consumers vs 2 and 3 times one, and one consumer's partition
//!   pipelines, each bulk given a modelled round trip (benches/platform/projection_scaling.rs);
//! - freshness: API write to searchable, p50/p99 under a steady write rate.
//!
//! Sizes scale with BENCH_SCALE (default 1.0 = 200k relay rows, 100k projection events, 40k
//! rows for relay scaling); BENCH_ONLY=relay-scaling,freshness runs only those sections.

#[path = "platform/projection_scaling.rs"]
mod projection_scaling;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aliexpress::bus::producer::{self, ProducerSettings};
use aliexpress::bus::{admin, consumer};
use aliexpress::config::{InfraConfig, Names};
use aliexpress::domain::product::{self as domain, EventEnvelope, EventMeta, ProductCommand};
use aliexpress::search::{bulk, document, index, SearchClient};
use aliexpress::store::outbox_slices::OUTBOX_SLICES;
use aliexpress::store::pool;
use aliexpress::worker::outbox_relay::{OutboxRelay, RelaySettings};
use aliexpress::worker::product_event_consumer::{ProductEventConsumer, ProjectionSettings};
use aliexpress::worker::Shutdown;
use diesel_async::RunQueryDsl;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use serde_json::json;

/// One line of the report. `ours` and `baseline` are medians of interleaved runs; the
/// ranges are their min and max. `verified` says what was counted to check the work was done.
#[derive(serde::Serialize)]
struct Row {
    what: String,
    ours: f64,
    ours_range: (f64, f64),
    unit: &'static str,
    baseline_name: String,
    baseline: f64,
    baseline_range: (f64, f64),
    goal: &'static str,
    verified: String,
}

/// Median, min and max of a few samples.
fn summary(mut v: Vec<f64>) -> (f64, (f64, f64)) {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return (0.0, (0.0, 0.0));
    }
    (v[v.len() / 2], (v[0], v[v.len() - 1]))
}

/// Interleaved runs per row (ours, baseline, ours, baseline, ...).
fn runs() -> usize {
    env_or("BENCH_RUNS", "3").parse().unwrap_or(3).max(1)
}

/// True when the section runs: every section, or only those named in `BENCH_ONLY`
/// (comma separated: relay, relay-scaling, projection, projection-scaling, api, freshness).
fn selected(section: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|s| s.trim() == section))
}

fn env_or(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_owned())
}

fn scale() -> f64 {
    env_or("BENCH_SCALE", "1.0").parse().unwrap_or(1.0)
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
    let url = u.to_string();
    pool::run_migrations(&url).await.expect("migrate");
    let infra = InfraConfig {
        database_url: url,
        database_pool_size: 16,
        database_statement_timeout_ms: 600_000,
        redis_url: env_or("REDIS_URL", aliexpress::config::DEFAULT_REDIS_URL),
        redis_ca_file: None,
        redis_cache_ttl_secs: 600,
        kafka_bootstrap_servers: env_or("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
        kafka_security: Default::default(),
        kafka_topic_partitions: 6,
        kafka_topic_replication_factor: 1,
        opensearch_url: env_or("OPENSEARCH_URL", "http://127.0.0.1:9200"),
        opensearch_username: None,
        opensearch_password: None,
        opensearch_ca_file: None,
        opensearch_danger_accept_invalid_certs: false,
        opensearch_index_replicas: 0,
        opensearch_index_shards: 1,
        namespace: format!("bench_{id}_"),
    };
    let names = infra.names();
    admin::ensure_topics(&infra.kafka().expect("kafka settings"), &names.all_topics(), 6, 1)
        .await
        .expect("topics");
    Env { infra, names }
}

fn bin_env(e: &Env) -> Vec<(&'static str, String)> {
    vec![
        ("DATABASE_URL", e.infra.database_url.clone()),
        ("KAFKA_BOOTSTRAP_SERVERS", e.infra.kafka_bootstrap_servers.clone()),
        ("REDIS_URL", e.infra.redis_url.clone()),
        ("OPENSEARCH_URL", e.infra.opensearch_url.clone()),
        ("ALIEXPRESS_NAMESPACE", e.infra.namespace.clone()),
        ("RUST_LOG", "warn".into()),
    ]
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

/// Sum of the log end offsets of `topic`.
async fn end_offsets(kafka: &aliexpress::bus::KafkaConnection, topic: &str) -> i64 {
    let (b, t) = (kafka.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let c: rdkafka::consumer::BaseConsumer = producer::base_config(&b)
            .set("group.id", "aliexpress-bench-offsets")
            .create()
            .expect("consumer");
        let md = c.fetch_metadata(Some(&t), Duration::from_secs(10)).expect("metadata");
        md.topics()
            .iter()
            .flat_map(|x| x.partitions().iter().map(|p| p.id()))
            .map(|p| {
                c.fetch_watermarks(&t, p, Duration::from_secs(10))
                    .map(|(_, hi)| hi)
                    .unwrap_or(0)
            })
            .sum()
    })
    .await
    .expect("join")
}

/// Relay over a backlog vs ProducerPerformance, on identical bytes: the rows' payloads are
/// random hex (incompressible for lz4) of about 1 KB, and ProducerPerformance sends payloads
/// taken from the same rows (`--payload-file`). Shipped defaults (batch size 1000, lz4,
/// linger 5 ms, acks=all, idempotence) on both sides. Each relay run re-publishes the same
/// backlog; its rate excludes the first batch (warm-up) and is checked against the rows
/// marked published and the topic's end offsets.
async fn bench_relay(rows: &mut Vec<Row>) {
    let e = fresh_env("relay").await;
    let n = (200_000.0 * scale()) as i64;
    let mut c = pool::connect(&e.infra.database_url, Duration::from_secs(600))
        .await
        .expect("conn");
    diesel::sql_query(format!(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload, headers) \
         SELECT gen_random_uuid(), 'product', p.id, v, '{t}', p.id::text, 'ProductStockAdjusted', 1, \
                jsonb_build_object('aggregate_id', p.id, 'aggregate_version', v, \
                  'pad', (SELECT string_agg(md5(random()::text || g::text || v::text || p.id::text), '') FROM generate_series(1, 28) g)), \
                jsonb_build_object('event_type', 'ProductStockAdjusted', 'aggregate_version', v::text) \
         FROM generate_series(1, 10) v, (SELECT gen_random_uuid() AS id FROM generate_series(1, {p})) p ORDER BY v, p.id",
        t = e.names.events_topic(),
        p = n / 10
    ))
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
    admin::ensure_topics(
        &e.infra.kafka().expect("kafka settings"),
        std::slice::from_ref(&perf_topic),
        6,
        1,
    )
    .await
    .expect("topic");
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let mut verified = String::new();
    for run in 0..runs() {
        diesel::sql_query("UPDATE outbox SET published_at = NULL")
            .execute(&mut c)
            .await
            .expect("reset");
        diesel::sql_query("VACUUM ANALYZE outbox").execute(&mut c).await.ok();
        let before = end_offsets(&e.infra.kafka().expect("kafka settings"), &e.names.events_topic()).await;
        let out = Command::new(bin())
            .args(["process-outbox"])
            .envs(bin_env(&e))
            .stderr(Stdio::null())
            .output()
            .expect("relay runs");
        eprintln!("relay run {run}: {}", String::from_utf8_lossy(&out.stdout).trim());
        let p: Published = diesel::sql_query(
            "SELECT count(*) AS n, \
                    extract(epoch FROM max(published_at) - min(published_at))::float8 AS span_secs, \
                    (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS pending \
             FROM outbox WHERE published_at IS NOT NULL",
        )
        .get_result(&mut c)
        .await
        .expect("published");
        let delivered = end_offsets(&e.infra.kafka().expect("kafka settings"), &e.names.events_topic()).await - before;
        assert_eq!((p.n, p.pending), (n, 0), "every row published");
        assert!(delivered >= n, "the topic received {delivered} of {n}");
        // Marks of the first batch share one timestamp: the span starts after it.
        ours.push((n - 1000) as f64 / p.span_secs.max(1e-3));
        verified = format!("{n} rows marked, {delivered} records on the topic, payload {avg} B");

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
                &format!("bootstrap.servers={}", e.infra.kafka_bootstrap_servers),
                "acks=all",
                "enable.idempotence=true",
                "linger.ms=5",
                "compression.type=lz4",
            ])
            .output()
            .expect("ProducerPerformance runs");
        let text = String::from_utf8_lossy(&perf.stdout);
        raw.push(
            text.lines()
                .rfind(|l| l.contains("records/sec"))
                .and_then(|l| l.split(',').nth(1))
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0),
        );
    }
    let _ = std::fs::remove_file(&payload_file);
    let (o, or) = summary(ours);
    let (b, br) = summary(raw);
    rows.push(Row {
        what: format!("outbox relay, {n} x {avg} B backlog"),
        ours: o,
        ours_range: or,
        unit: "events/s",
        baseline_name: "Kafka ProducerPerformance".into(),
        baseline: b,
        baseline_range: br,
        goal: ">= 0.6",
        verified,
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
    let mut c = pool::connect(&e.infra.database_url, Duration::from_secs(600))
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
    let kafka = e.infra.kafka().expect("kafka settings");
    let mut results: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
    let mut delivered_total = 0i64;
    for _run in 0..runs() {
        for relays in [1usize, 2, 4] {
            let mut running = Vec::new();
            for _ in 0..relays {
                let p = producer::build(&kafka, &ProducerSettings::default()).expect("producer");
                let mut relay = OutboxRelay::new(
                    e.infra.database_url.clone(),
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

/// Projection from a backlog vs straight `_bulk`.
async fn bench_projection(rows: &mut Vec<Row>) {
    let e = fresh_env("proj").await;
    let n = (100_000.0 * scale()) as usize;
    let products = n / 4;
    let p = producer::build(&e.infra.kafka().expect("kafka settings"), &ProducerSettings::default()).expect("producer");
    let topic = e.names.events_topic();
    let mut envs = Vec::with_capacity(n);
    let ids: Vec<uuid::Uuid> = (0..products).map(|_| uuid::Uuid::new_v4()).collect();
    for v in 1..=4 {
        for id in &ids {
            envs.push(envelope(*id, v, "Wireless ergonomic mouse"));
        }
    }
    let mut futs = Vec::with_capacity(envs.len());
    for ev in &envs {
        let payload = serde_json::to_vec(ev).expect("json");
        let key = ev.aggregate_id.to_string();
        futs.push(
            p.send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
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
    let search = SearchClient::new(&e.infra.opensearch_url, Duration::from_secs(60)).expect("search");
    let alias = e.names.index_alias();
    index::ensure_alias(&search, &alias, index::IndexLayout::default())
        .await
        .expect("index");
    let settings = ProjectionSettings {
        batch_size: 1000,
        batch_wait: Duration::from_millis(50),
        log_each_event: false,
        ..Default::default()
    };
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let mut verified = String::new();
    for run in 0..runs() {
        // A fresh group (reads from the start) and a fresh index: the same work every run.
        let target = format!("{alias}_run{run}");
        index::create_index(&search, &target, index::IndexLayout::default())
            .await
            .expect("index");
        let cache = aliexpress::cache::ProductCache::new(&e.infra.redis_url, e.names.clone(), Duration::from_secs(600))
            .expect("cache");
        let group = format!("{}-run{run}", e.names.projection_group());
        let c = consumer::build(&e.infra.kafka().expect("kafka settings"), &group).expect("consumer");
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
        ours.push(timed as f64 / started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0));
        index::refresh(&search, &target).await.expect("refresh");
        let (_, v) = search
            .request(opensearch::http::Method::Get, &format!("/{target}/_count"), None, None)
            .await
            .expect("count");
        verified = format!("{applied} events applied, {} documents in the index", v["count"]);

        // Raw: the same documents, same batch size, straight to _bulk into a fresh index.
        let raw_index = format!("{alias}_raw{run}");
        index::create_index(&search, &raw_index, index::IndexLayout::default())
            .await
            .expect("raw index");
        let chunks: Vec<&[EventEnvelope]> = envs.chunks(1000).collect();
        let mut started = None;
        for chunk in &chunks {
            let items: Vec<bulk::BulkItem> = chunk
                .iter()
                .map(|ev| bulk::BulkItem {
                    id: ev.aggregate_id,
                    version: ev.aggregate_version,
                    doc: document::product_document(&ev.state),
                })
                .collect();
            bulk::index_items(&search, &raw_index, &items).await.expect("bulk");
            started.get_or_insert_with(Instant::now);
        }
        let first_len = envs.len().min(1000);
        raw.push((n - first_len) as f64 / started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0));
    }
    let (o, or) = summary(ours);
    let (b, br) = summary(raw);
    rows.push(Row {
        what: format!("projection, {n} events backlog (OpenSearch + Redis)"),
        ours: o,
        ours_range: or,
        unit: "events/s",
        baseline_name: "same docs to _bulk (no Redis)".into(),
        baseline: b,
        baseline_range: br,
        goal: ">= 0.8",
        verified,
    });
}

/// The statements a create commits (lock probe, state row, outbox row), without our code.
const PG_SAME_TX: &str = "BEGIN;
SELECT id FROM products WHERE id = (SELECT gen_random_uuid()) FOR UPDATE;
INSERT INTO products (id, sku, title, description, category, brand, attributes, price_minor, currency, stock, status, version, created_at, updated_at) VALUES (gen_random_uuid(), gen_random_uuid()::text, 'Bench product', repeat('x', 300), '', '', '{}', 100, 'USD', 0, 'draft', 1, now(), now());
INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload, headers) VALUES (gen_random_uuid(), 'product', gen_random_uuid(), 1, 't', 'k', 'ProductCreated', 1, jsonb_build_object('pad', repeat('x', 900)), '{}');
COMMIT;
";

fn pgbench(url: &str, clients: u32, secs: u32, sql: &str) -> f64 {
    let script = std::env::temp_dir().join(format!("aliexpress-pgbench-{}.sql", sql.len()));
    std::fs::write(&script, sql).expect("script");
    let out = Command::new("pgbench")
        .args([
            "-n",
            "-c",
            &clients.to_string(),
            "-j",
            &clients.min(2).to_string(),
            "-T",
            &secs.to_string(),
            "-f",
            &script.to_string_lossy(),
            url,
        ])
        .output()
        .expect("pgbench runs (postgresql-contrib)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find(|l| l.starts_with("tps"))
        .and_then(|l| l.split_whitespace().nth(2))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0.0)
}

async fn api_creates(e: &Env, notify: bool, clients: usize, secs: u64) -> f64 {
    let port = 18_000 + (rand::random::<u16>() % 1000);
    let mut child = Command::new(bin())
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--workers",
            "2",
            "--outbox-notify",
            &notify.to_string(),
            "--metrics-bind",
            "127.0.0.1:0",
        ])
        .envs(bin_env(e))
        .env("API_TOKENS", "bench")
        // The benchmark is one client address sending thousands of requests a second.
        .env("RATE_LIMIT_PER_SECOND", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("serve");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if http.get(format!("{base}/health/live")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let http = http.clone();
            let base = base.clone();
            tokio::spawn(async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    let r = http
                        .post(format!("{base}/api/products"))
                        .bearer_auth("bench")
                        .json(&json!({"sku": uuid::Uuid::new_v4().to_string(), "title": "Bench product", "description": "x".repeat(300),
                                      "price": {"amount_minor": 100, "currency": "USD"}}))
                        .send()
                        .await;
                    if r.map(|r| r.status() == 201).unwrap_or(false) {
                        n += 1;
                    }
                }
                n
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap_or(0);
    }
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    total as f64 / secs as f64
}

async fn bench_api_and_consumer(rows: &mut Vec<Row>) {
    let e = fresh_env("api").await;
    let clients = 8;
    let (mut on, mut off, mut same) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs() {
        on.push(api_creates(&e, true, clients, 10).await);
        same.push(pgbench(&e.infra.database_url, clients as u32, 10, PG_SAME_TX));
        off.push(api_creates(&e, false, clients, 10).await);
    }
    let (same, same_r) = summary(same);
    for (label, v) in [("on", on), ("off", off)] {
        let (o, or) = summary(v);
        rows.push(Row {
            what: format!("API creates ({clients} clients, NOTIFY {label})"),
            ours: o,
            ours_range: or,
            unit: "creates/s",
            baseline_name: "pgbench same statements, no NOTIFY, no Redis".into(),
            baseline: same,
            baseline_range: same_r,
            goal: ">= 0.6",
            verified: "only 201 responses counted".into(),
        });
    }

    // Command consumer: a backlog of commands, processed sequentially.
    let n = (20_000.0 * scale()) as usize;
    let p = producer::build(&e.infra.kafka().expect("kafka settings"), &ProducerSettings::default()).expect("producer");
    let topic = e.names.commands_topic();
    let mut futs = Vec::new();
    for i in 0..n {
        let id = uuid::Uuid::new_v4();
        let cmd = json!({"command_id": uuid::Uuid::now_v7(), "product_id": id, "command_type": "CreateProduct",
                         "payload": {"sku": format!("CMD-{i}-{id}"), "title": "Commanded product"}})
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
    let group = e.names.command_group();
    let kc = consumer::build(&e.infra.kafka().expect("kafka settings"), &group).expect("consumer");
    kc.subscribe(&[&topic]).expect("subscribe");
    let worker = aliexpress::worker::product_consumer::ProductConsumer {
        consumer: kc,
        pool: pool::build_pool(&e.infra.database_url, 4, Duration::from_secs(30)).expect("pool"),
        dlq: aliexpress::bus::dlq::DlqWriter::new(p, e.names.commands_dlq_topic(), group),
        events_topic: e.names.events_topic(),
        notify: true,
        retry: aliexpress::failure::RetryPolicy::default(),
    };
    let shutdown = Shutdown::new();
    let mut done = 0;
    let mut started = None;
    while done < n {
        let batch = worker
            .process_batch(
                aliexpress::worker::product_consumer::COMMAND_BATCH,
                Duration::from_secs(10),
                &shutdown,
            )
            .await
            .expect("process");
        if batch.is_empty() {
            break;
        }
        started.get_or_insert_with(Instant::now);
        done += batch.len();
    }
    let ours = done as f64 / started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0);
    // The consumer runs up to 64 products at once on a pool of 4 connections: 4 clients.
    let same4 = pgbench(&e.infra.database_url, 4, 10, PG_SAME_TX);
    rows.push(Row {
        what: format!("command consumer, {done} CreateProduct (pool of 4)"),
        ours,
        ours_range: (ours, ours),
        unit: "commands/s",
        baseline_name: "pgbench same statements, 4 clients".into(),
        baseline: same4,
        baseline_range: (same4, same4),
        goal: "-",
        verified: format!("{done} outcomes"),
    });
}

/// API write to searchable, under a steady write rate with relay and projection running.
async fn bench_freshness() -> (f64, f64, usize) {
    let e = fresh_env("fresh").await;
    let port = 19_000 + (rand::random::<u16>() % 1000);
    let spawn = |args: Vec<String>| {
        Command::new(bin())
            .args(args)
            .envs(bin_env(&e))
            .env("API_TOKENS", "bench")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn")
    };
    let mut children = vec![
        spawn(vec![
            "serve".into(),
            "--bind".into(),
            format!("127.0.0.1:{port}"),
            "--metrics-bind".into(),
            "127.0.0.1:0".into(),
        ]),
        spawn(vec!["process-outbox".into(), "--follow".into()]),
        spawn(vec![
            "run-product-event-consumer".into(),
            "--quiet-events".into(),
            "--batch-wait".into(),
            "20ms".into(),
        ]),
    ];
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    for _ in 0..100 {
        if http.get(format!("{base}/health/live")).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let search = SearchClient::new(&e.infra.opensearch_url, Duration::from_secs(10)).expect("search");
    let alias = e.names.index_alias();
    let writes = (200.0 * scale()).max(20.0) as usize;
    let mut probes = Vec::new();
    for i in 0..writes {
        let r = http
            .post(format!("{base}/api/products"))
            .bearer_auth("bench")
            .json(&json!({"sku": format!("F-{i}"), "title": format!("Fresh item {i}"), "price": {"amount_minor": 100, "currency": "USD"}}))
            .send()
            .await
            .expect("create");
        let t0 = Instant::now();
        let p: serde_json::Value = r.json().await.expect("json");
        let id = p["id"].as_str().expect("id").to_owned();
        let (search, alias) = (search.clone(), alias.clone());
        probes.push(tokio::spawn(async move {
            let body = json!({"query": {"term": {"id": id}}});
            loop {
                if let Ok((200, v)) = search
                    .request(
                        opensearch::http::Method::Post,
                        &format!("/{alias}/_count"),
                        Some(body.clone()),
                        None,
                    )
                    .await
                {
                    if v["count"].as_u64() == Some(1) {
                        return t0.elapsed().as_secs_f64() * 1000.0;
                    }
                }
                if t0.elapsed() > Duration::from_secs(30) {
                    return f64::INFINITY;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
        tokio::time::sleep(Duration::from_millis(50)).await; // ~20 writes/s
    }
    let mut lat: Vec<f64> = Vec::new();
    for p in probes {
        lat.push(p.await.unwrap_or(f64::INFINITY));
    }
    for c in &mut children {
        let _ = Command::new("kill").arg(c.id().to_string()).status();
        let _ = c.wait();
    }
    lat.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    (q(0.5), q(0.99), lat.len())
}

/// Drops what earlier bench runs left (databases, indices, topics with the bench prefix).
async fn cleanup_previous_runs() {
    let base = env_or(
        "DATABASE_URL",
        "postgres://aliexpress:aliexpress@127.0.0.1:5432/aliexpress",
    );
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
        let _ = search
            .request(opensearch::http::Method::Delete, "/bench_*", None, None)
            .await;
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
    json!({"cores": cores, "memory_gib": mem_kb as f64 / 1024.0 / 1024.0, "postgres": pg, "durable_postgres": durable,
           "scale": scale(), "runs": runs()})
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = aliexpress::telemetry::init("pretty", "aliexpress-bench");
    }
    rt.block_on(async {
        cleanup_previous_runs().await;
        let mut rows = Vec::new();
        if selected("relay") {
            eprintln!("bench: outbox relay ...");
            bench_relay(&mut rows).await;
        }
        if selected("relay-scaling") {
            eprintln!("bench: relay scaling ...");
            bench_relay_scaling(&mut rows).await;
        }
        if selected("projection") {
            eprintln!("bench: projection ...");
            bench_projection(&mut rows).await;
        }
        if selected("projection-scaling") {
            eprintln!("bench: projection scaling ...");
            projection_scaling::bench_projection_scaling(&mut rows).await;
        }
        if selected("api") {
            eprintln!("bench: API and command consumer ...");
            bench_api_and_consumer(&mut rows).await;
        }
        if selected("freshness") {
            eprintln!("bench: freshness ...");
            let (p50, p99, n) = bench_freshness().await;
            rows.push(Row {
                what: format!("freshness, API write -> searchable ({n} writes @20/s), p50"),
                ours: p50,
                ours_range: (p50, p50),
                unit: "ms",
                baseline_name: "p99".into(),
                baseline: p99,
                baseline_range: (p99, p99),
                goal: "p50 <= 300, p99 <= 1000",
                verified: format!("{n} writes found by search"),
            });
        }
        let m = machine().await;
        println!();
        println!(
            "machine: {} cores, {:.1} GiB; postgres durable: {} ({}); median of {} interleaved runs, [min-max]",
            m["cores"],
            m["memory_gib"].as_f64().unwrap_or(0.0),
            m["durable_postgres"],
            m["postgres"],
            m["runs"]
        );
        println!(
            "| {:<50} | {:>22} | {:<9} | {:<44} | {:>22} | {:>6} | {:<8} |",
            "measurement", "ours", "unit", "baseline", "baseline", "ratio", "goal"
        );
        println!(
            "|{:-<52}|{:-<24}|{:-<11}|{:-<46}|{:-<24}|{:-<8}|{:-<10}|",
            "", "", "", "", "", "", ""
        );
        for r in &rows {
            let ratio = if r.baseline > 0.0 && r.unit != "ms" {
                format!("{:.2}", r.ours / r.baseline)
            } else {
                "-".into()
            };
            println!(
                "| {:<50} | {:>22} | {:<9} | {:<44} | {:>22} | {:>6} | {:<8} |",
                r.what,
                format!("{:.0} [{:.0}-{:.0}]", r.ours, r.ours_range.0, r.ours_range.1),
                r.unit,
                r.baseline_name,
                format!(
                    "{:.0} [{:.0}-{:.0}]",
                    r.baseline, r.baseline_range.0, r.baseline_range.1
                ),
                ratio,
                r.goal
            );
        }
        for r in &rows {
            println!("  checked: {}: {}", r.what, r.verified);
        }
        let dir = std::path::PathBuf::from(env_or("CARGO_TARGET_DIR", "target")).join("bench");
        let _ = std::fs::create_dir_all(&dir);
        let report = json!({"machine": m, "rows": rows});
        let path = dir.join("report.json");
        match std::fs::write(&path, serde_json::to_vec_pretty(&report).unwrap_or_default()) {
            Ok(()) => println!("report: {}", path.display()),
            Err(e) => eprintln!("could not write {}: {e}", path.display()),
        }
    });
}
