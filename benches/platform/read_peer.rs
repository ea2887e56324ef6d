//! The projection's peer (section `read-peer`): the same product events, from the same Kafka
//! topic, projected into OpenSearch by Kafka Connect standalone with a sink connector (jars from
//! Maven Central: `deploy/local/stack jars opensearch-sink`, which this section runs itself when
//! they are missing).
//!
//! Which sink: Aiven's OpenSearch connector is not on Maven Central (GitHub release archives
//! only), Confluent's is on Confluent's repository, and the Maven Central this project reaches
//! serves no Camel Kafka Connector newer than 0.11.0 (so not its 4.x `opensearch-index-sink`);
//! 0.11.0's Elasticsearch connector uses Elasticsearch's 7.x REST client, which cannot read
//! OpenSearch 2.x's write answers. The peer is therefore Camel Kafka Connector 0.11.0's generic
//! `CamelSinkConnector` with Camel's HTTP component: one `POST /INDEX/_doc/KEY` per record, the
//! record's value (our event envelope, JSON) as the document (deploy/local/opensearch-sink/pom.xml).
//!
//! What each side does per event:
//! - ours: `run-product-event-consumer` as shipped (batch 500, batch wait 50 ms, one pipeline
//!   per partition; `--quiet-events`, as the freshness row): decodes the envelope, builds the
//!   search document from the state it carries, `_bulk` with external versions, and writes the
//!   state to Redis too (the read model it ships with), then commits the offsets;
//! - the peer: Connect's consumer (defaults: 500 records a poll), `StringConverter` for key and
//!   value, Kafka's `InsertHeader` transform for `Content-Type: application/json`, then one
//!   synchronous HTTP request per record, document id = the record's key (the product id):
//!   the raw event is the document (dynamic mapping), no search document, no Redis, no version
//!   check. `tasks.max` = the topic's partitions (6; `BENCH_READ_PEER_TASKS`).
//!
//! Both indices: 1 shard, 0 replicas, refresh 1 s (our shipped layout; ours with our mapping).
//!
//! - Backlog: `n` products with one `ProductPublished` event each (every event is one document
//!   on both sides, so documents indexed are events done) on the topic before the consumer
//!   starts; a fresh group and index per run. The index's own count of indexing operations
//!   (`_stats/indexing` `index_total`, which does not wait for a refresh) is read every 50 ms:
//!   events/s between the moments it passed 10 % and 100 % of `n` (the first 10 % are the
//!   warm-up: JVM, connections, mappings), checked by counting the documents after a refresh.
//!   (Ingest timestamps would be finer, but the stack's OpenSearch node has no ingest role.)
//! - Write → searchable: events produced open loop at `BENCH_PEER_RATE` (default 500/s) to a
//!   fresh topic per run while the consumer runs; from when each was due to the `ids` search
//!   (one every 20 ms, as the freshness row, for the 2 000 longest-waiting ids) that first
//!   shows it, p50/p99/max.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aliexpress::bus::producer::{self, ProducerSettings};
use aliexpress::bus::KafkaConnection;
use aliexpress::search::index::{self, IndexLayout};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};

use super::connect::ConnectStandalone;
use super::harness::{fresh_env, note_seen, spawn_role, Env, Pending, Role};
use super::projection::envelope;
use super::row::{quantile, summary, Row};
use super::{env_or, progress, runs, scale, secs};

/// Partitions of the bench's topics (`fresh_env`).
const PARTITIONS: usize = 6;

/// Most ids one visibility poll asks for.
const POLL_IDS: usize = 2000;

/// The sink's `tasks.max`: the topic's partitions unless `BENCH_READ_PEER_TASKS` says otherwise.
fn peer_tasks() -> usize {
    env_or("BENCH_READ_PEER_TASKS", &PARTITIONS.to_string())
        .parse()
        .unwrap_or(PARTITIONS)
}

/// The Connect + sink jars; resolved with `deploy/local/stack jars opensearch-sink` when missing.
fn sink_libs() -> String {
    let dir = format!(
        "{}/opensearch-sink/libs",
        env_or("ALIEXPRESS_STATE_DIR", "/var/tmp/aliexpress-stack")
    );
    let resolved = std::fs::read_dir(&dir)
        .map(|d| {
            d.flatten()
                .any(|f| f.file_name().to_string_lossy().starts_with(".resolved-"))
        })
        .unwrap_or(false);
    if !resolved {
        progress("read-peer: resolving the Connect + sink jars (deploy/local/stack jars opensearch-sink)");
        let ok = Command::new("deploy/local/stack")
            .args(["jars", "opensearch-sink"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "deploy/local/stack jars opensearch-sink resolves the peer's jars");
    }
    format!("{dir}/*")
}

/// OpenSearch over plain HTTP (the bench's stack), for what both sides are measured by.
#[derive(Clone)]
struct Os {
    http: reqwest::Client,
    base: String,
}

impl Os {
    fn new(e: &Env) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("http client"),
            base: e.infra.opensearch.url.expose().trim_end_matches('/').to_owned(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Value {
        let mut r = self.http.request(method.clone(), format!("{}{path}", self.base));
        if let Some(b) = body {
            r = r.json(b);
        }
        let resp = r.send().await.unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {path}: {status} {v}");
        v
    }

    async fn put(&self, path: &str, body: &Value) -> Value {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    async fn post(&self, path: &str, body: &Value) -> Value {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    /// Documents searchable in `idx` now (no refresh forced).
    async fn count(&self, idx: &str) -> u64 {
        self.send(reqwest::Method::GET, &format!("/{idx}/_count"), None).await["count"]
            .as_u64()
            .unwrap_or(0)
    }

    async fn delete_index(&self, idx: &str) {
        let _ = self.http.delete(format!("{}/{idx}", self.base)).send().await;
    }

    /// OpenSearch's indexing statistics of `idx` (primaries): (operations done, time spent ms).
    async fn indexing(&self, idx: &str) -> (u64, f64) {
        let v = self
            .send(reqwest::Method::GET, &format!("/{idx}/_stats/indexing"), None)
            .await;
        let s = &v["_all"]["primaries"]["indexing"];
        (
            s["index_total"].as_u64().unwrap_or(0),
            s["index_time_in_millis"].as_f64().unwrap_or(f64::NAN),
        )
    }

    /// Documents in `idx` after a refresh.
    async fn refreshed_count(&self, idx: &str) -> u64 {
        self.post(&format!("/{idx}/_refresh"), &json!({})).await;
        self.count(idx).await
    }
}

/// Creates `idx` for `side` with the shipped layout (ours: our mapping; the peer: dynamic).
async fn create_index(os: &Os, side: Side, idx: &str) {
    let layout = IndexLayout::default();
    let body = match side {
        Side::Ours => index::index_body(layout),
        Side::Peer => json!({
            "settings": {
                "number_of_shards": layout.shards,
                "number_of_replicas": layout.replicas,
                "refresh_interval": format!("{}ms", layout.refresh_interval_ms),
            },
        }),
    };
    os.put(&format!("/{idx}"), &body).await;
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Side {
    Ours,
    Peer,
}

impl Side {
    fn tag(self) -> &'static str {
        match self {
            Side::Ours => "ours",
            Side::Peer => "peer",
        }
    }
}

/// Kafka Connect standalone running the sink into `index`; stopped when dropped.
struct SinkConnect(ConnectStandalone);

impl SinkConnect {
    fn start(e: &Env, os: &Os, topic: &str, index: &str, name: &str) -> Self {
        assert!(
            os.base.starts_with("http://") && !os.base.contains('@'),
            "the read-peer row needs OpenSearch over plain HTTP without credentials (OPENSEARCH_URL={})",
            os.base
        );
        // toD: Camel's HTTP component keeps one endpoint and sets the path per record.
        let connector = format!(
            "name={name}\n\
             connector.class=org.apache.camel.kafkaconnector.CamelSinkConnector\n\
             tasks.max={tasks}\n\
             topics={topic}\n\
             camel.sink.url={base}/{index}/_doc/${{headerAs(camel.kafka.connector.record.key,String)}}\n\
             transforms=json\n\
             transforms.json.type=org.apache.kafka.connect.transforms.InsertHeader\n\
             transforms.json.header=CamelHeader.Content-Type\n\
             transforms.json.value.literal=application/json\n",
            tasks = peer_tasks(),
            base = os.base,
        );
        Self(ConnectStandalone::start(
            e,
            &sink_libs(),
            "opensearch-sink",
            "",
            &connector,
        ))
    }

    fn log_tail(&self) -> String {
        self.0.log_tail()
    }
}

/// One side's consumer, running until dropped.
enum Consumer {
    Ours(Role),
    Peer(SinkConnect),
}

impl Consumer {
    fn start(side: Side, e: &Env, os: &Os, index: &str, group: &str) -> Self {
        match side {
            Side::Ours => Consumer::Ours(spawn_role(
                e,
                &[
                    "run-product-event-consumer".into(),
                    "--quiet-events".into(),
                    "--group".into(),
                    group.into(),
                    "--index".into(),
                    index.into(),
                ],
                &[],
            )),
            Side::Peer => Consumer::Peer(SinkConnect::start(e, os, &e.names.events_topic(), index, group)),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            Consumer::Ours(r) => r.0.id(),
            Consumer::Peer(c) => c.0.child.pid(),
        }
    }

    /// CPU seconds (user + system) the process used so far.
    fn cpu_secs(&self) -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let f: Vec<f64> = after.split_whitespace().map(|x| x.parse().unwrap_or(0.0)).collect();
        // Fields 14 and 15 of proc(5) (utime, stime), in clock ticks (100 a second on Linux).
        (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
    }

    fn log_tail(&self) -> String {
        match self {
            Consumer::Ours(_) => "(ours: stderr not kept; RUST_LOG=warn)".into(),
            Consumer::Peer(c) => c.log_tail(),
        }
    }
}

fn kafka(e: &Env) -> KafkaConnection {
    KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings")
}

fn event_bytes(id: uuid::Uuid) -> Vec<u8> {
    // Version 2 (create, publish): a ProductPublished envelope with the full state.
    serde_json::to_vec(&envelope(id, 2, "Wireless ergonomic mouse")).expect("json")
}

/// Produces one `ProductPublished` event for each of `n` new products, keyed by product id.
async fn produce_backlog(p: &FutureProducer, topic: &str, n: usize) {
    let records = (0..n).map(|_| {
        let id = uuid::Uuid::new_v4();
        (id.to_string(), event_bytes(id))
    });
    super::harness::produce_keyed(p, topic, records).await;
}

/// What one backlog run measured.
struct Backlog {
    rate: f64,
    docs: u64,
    /// Indexing operations OpenSearch counted (one per event when nothing was retried).
    ops: u64,
    wall_s: f64,
    cpu_s: f64,
    os_index_ms: f64,
}

/// One backlog run of `side` over the `n` events already on `e`'s topic: a fresh index and
/// group; events/s between the moments the index's operation count passed 10 % and 100 % of `n`.
async fn backlog_run(e: &Env, os: &Os, side: Side, run: usize, n: usize) -> Backlog {
    let idx = format!("{}readpeer_{}_backlog{run}", e.infra.namespace, side.tag());
    let group = format!("{}readpeer-{}-backlog{run}", e.infra.namespace, side.tag());
    create_index(os, side, &idx).await;
    let started = Instant::now();
    let consumer = Consumer::start(side, e, os, &idx, &group);
    let deadline = started + Duration::from_secs((n as u64 / 50).max(600));
    // (seconds since the start, indexing operations done)
    let mut samples: Vec<(f64, u64)> = vec![(0.0, 0)];
    loop {
        let (ops, _) = os.indexing(&idx).await;
        samples.push((started.elapsed().as_secs_f64(), ops));
        if ops >= n as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{side:?} indexed {ops} of {n} documents; log:\n{}",
            consumer.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // sampling the operation count
    }
    let (wall_s, cpu_s) = (started.elapsed().as_secs_f64(), consumer.cpu_secs());
    drop(consumer);
    // When the count passed `k`, linear between the two samples around it.
    let passed = |k: u64| -> f64 {
        let i = samples.iter().position(|s| s.1 >= k).expect("passed");
        let (t1, c1) = samples[i];
        let (t0, c0) = samples[i.saturating_sub(1)];
        if c1 == c0 {
            t1
        } else {
            t0 + (t1 - t0) * (k - c0) as f64 / (c1 - c0) as f64
        }
    };
    let first = (n / 10) as u64;
    let rate = (n as u64 - first) as f64 / (passed(n as u64) - passed(first)).max(1e-3);
    let docs = os.refreshed_count(&idx).await;
    assert_eq!(docs, n as u64, "{side:?}: one document per event");
    let (ops, os_index_ms) = os.indexing(&idx).await;
    os.delete_index(&idx).await;
    Backlog {
        rate,
        docs,
        ops,
        wall_s,
        cpu_s,
        os_index_ms,
    }
}

/// One write → searchable run of `side` on a fresh topic and index: events open loop at
/// `rate`, the first 2 s not recorded. Returns (sorted ms, events not seen or not delivered).
async fn latency_run(os: &Os, side: Side, run: usize, rate: f64) -> (Vec<f64>, u64) {
    let e = fresh_env("readpeer").await;
    let topic = e.names.events_topic();
    let idx = format!("{}readpeer_{}_lat{run}", e.infra.namespace, side.tag());
    create_index(os, side, &idx).await;
    let consumer = Consumer::start(side, &e, os, &idx, &format!("{}readpeer-lat", e.infra.namespace));
    let p = producer::build(&kafka(&e), &ProducerSettings::default()).expect("producer");

    let pending: Pending = Default::default();
    let seen: Arc<Mutex<Vec<f64>>> = Default::default();
    let failed = Arc::new(AtomicU64::new(0));
    let writing = Arc::new(AtomicBool::new(true));

    // Ready when a first event is searchable (JVM start, group join, connections).
    let probe = uuid::Uuid::new_v4();
    p.send(
        FutureRecord::to(&topic)
            .key(&probe.to_string())
            .payload(&event_bytes(probe)),
        Duration::from_secs(30),
    )
    .await
    .map_err(|(e, _)| e)
    .expect("probe delivered");
    let ready = Instant::now() + Duration::from_secs(120);
    while os.count(&idx).await == 0 {
        assert!(
            Instant::now() < ready,
            "{side:?}: the first event became searchable; log:\n{}",
            consumer.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(100)).await; // polling for start-up
    }

    let poller = {
        let (pending, seen, os, idx, writing) =
            (pending.clone(), seen.clone(), os.clone(), idx.clone(), writing.clone());
        tokio::spawn(async move {
            let mut last_progress = tokio::time::Instant::now();
            loop {
                // The longest-waiting ids only: a side that falls behind would otherwise be
                // slowed further by ever larger queries.
                let ids: Vec<String> = {
                    let p = pending.lock().expect("pending");
                    let mut waiting: Vec<(&uuid::Uuid, &tokio::time::Instant)> = p.iter().collect();
                    if waiting.len() > POLL_IDS {
                        waiting.select_nth_unstable_by_key(POLL_IDS - 1, |w| *w.1);
                        waiting.truncate(POLL_IDS);
                    }
                    waiting.into_iter().map(|(i, _)| i.to_string()).collect()
                };
                let done = !writing.load(Ordering::SeqCst);
                if ids.is_empty() && done {
                    return 0u64;
                }
                if done && last_progress.elapsed() > Duration::from_secs(60) {
                    return pending.lock().expect("pending").len() as u64;
                }
                if !ids.is_empty() {
                    let body = json!({"size": ids.len(), "_source": false, "query": {"ids": {"values": ids}}});
                    let r = os
                        .http
                        .post(format!("{}/{idx}/_search", os.base))
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(resp) = r {
                        if let Ok(v) = resp.json::<Value>().await {
                            if note_seen(&v, &pending, &seen) {
                                last_progress = tokio::time::Instant::now();
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await; // the poll period
            }
        })
    };

    let warm = 2.0;
    let total = ((warm + secs()) * rate) as u64;
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        tokio::time::sleep_until(due).await;
        let id = uuid::Uuid::new_v4();
        let record = (i as f64) >= warm * rate;
        if record {
            pending.lock().expect("pending").insert(id, due);
        }
        let (p, topic, pending, failed) = (p.clone(), topic.clone(), pending.clone(), failed.clone());
        tasks.spawn(async move {
            let key = id.to_string();
            let payload = event_bytes(id);
            let r = p
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&payload),
                    Duration::from_secs(30),
                )
                .await;
            if r.is_err() && record {
                pending.lock().expect("pending").remove(&id);
                failed.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    writing.store(false, Ordering::SeqCst);
    let unseen = poller.await.unwrap_or(total);
    drop(consumer);
    os.delete_index(&idx).await;
    let mut s = std::mem::take(&mut *seen.lock().expect("seen"));
    s.sort_by(f64::total_cmp);
    (s, unseen + failed.load(Ordering::SeqCst))
}

/// Backlog events/s and write → searchable latency, ours vs the Connect sink, interleaved runs.
pub async fn bench_read_peer(rows: &mut Vec<Row>) {
    let n = ((50_000.0 * scale()) as usize).max(1000);
    let rate: f64 = env_or("BENCH_PEER_RATE", "500").parse().unwrap_or(500.0);
    let peer_name = format!(
        "Connect 4.1.1 + Camel Kafka Connector 0.11.0 HTTP sink, {} tasks",
        peer_tasks()
    );
    let e = fresh_env("readpeer").await;
    let os = Os::new(&e);
    progress(format_args!("read-peer: producing {n} events"));
    let p = producer::build(&kafka(&e), &ProducerSettings::default()).expect("producer");
    produce_backlog(&p, &e.names.events_topic(), n).await;

    let (mut o, mut d) = (Vec::new(), Vec::new());
    let mut verified = Vec::new();
    let mut costs = Vec::new();
    for run in 0..runs() {
        let ours = backlog_run(&e, &os, Side::Ours, run, n).await;
        let peer = backlog_run(&e, &os, Side::Peer, run, n).await;
        progress(format_args!(
            "read-peer backlog run {run}: ours {:.0}/s, peer {:.0}/s (wall {:.1} s / {:.1} s, CPU {:.1} s / {:.1} s, \
             OpenSearch indexing {:.1} s / {:.1} s)",
            ours.rate,
            peer.rate,
            ours.wall_s,
            peer.wall_s,
            ours.cpu_s,
            peer.cpu_s,
            ours.os_index_ms / 1000.0,
            peer.os_index_ms / 1000.0
        ));
        verified.push(format!(
            "{}/{} ({}/{} indexing operations)",
            ours.docs, peer.docs, ours.ops, peer.ops
        ));
        costs.push(format!(
            "run {run}: consumer CPU {:.1} s / {:.1} s, OpenSearch index_time {:.1} s / {:.1} s",
            ours.cpu_s,
            peer.cpu_s,
            ours.os_index_ms / 1000.0,
            peer.os_index_ms / 1000.0
        ));
        o.push(ours.rate);
        d.push(peer.rate);
    }
    let (om, or) = summary(o);
    let (dm, dr) = summary(d);
    rows.push(
        Row::new(
            format!("read side: {n} events backlog -> OpenSearch, ours vs Connect sink"),
            "events/s",
        )
        .ours(om, or)
        .baseline(peer_name.clone(), dm, dr)
        .goal("(peer, no goal)")
        .verified(format!(
            "documents in each index per run (ours/peer): {}; one event per product; rate from the index's \
             operation count (every 50 ms) after the first 10 %; ours also writes Redis, the peer indexes the raw event; {} (ours/peer)",
            verified.join(", "),
            costs.join("; ")
        )),
    );

    let (mut ours_q, mut peer_q) = ((Vec::new(), Vec::new()), (Vec::new(), Vec::new()));
    let (mut errors, mut counted, mut maxes) = (0u64, 0usize, [0f64; 2]);
    for run in 0..runs() {
        let mut line = format!("read-peer latency run {run} @{rate:.0}/s:");
        for (i, side) in [Side::Ours, Side::Peer].into_iter().enumerate() {
            let (l, f) = latency_run(&os, side, run, rate).await;
            errors += f;
            counted += l.len();
            maxes[i] = maxes[i].max(l.last().copied().unwrap_or(0.0));
            let q = if side == Side::Ours { &mut ours_q } else { &mut peer_q };
            q.0.push(quantile(&l, 0.5));
            q.1.push(quantile(&l, 0.99));
            line.push_str(&format!(
                " {}: p50 {:.0} p99 {:.0} max {:.0} ms, {} seen, {f} unseen;",
                side.tag(),
                quantile(&l, 0.5),
                quantile(&l, 0.99),
                l.last().copied().unwrap_or(f64::NAN),
                l.len()
            ));
        }
        progress(line);
    }
    for (q, ours, peer) in [("p50", &ours_q.0, &peer_q.0), ("p99", &ours_q.1, &peer_q.1)] {
        let (om, or) = summary(ours.clone());
        let (pm, pr) = summary(peer.clone());
        rows.push(
            Row::new(
                format!("read side: event due -> searchable {q}, {rate:.0} events/s"),
                "ms",
            )
            .ours(om, or)
            .baseline(peer_name.clone(), pm, pr)
            .goal("(peer, no goal)")
            .errors(errors)
            .verified(format!(
                "{counted} events seen in _search over all runs, {errors} unseen or undelivered; one ids poll / 20 ms (2 000 longest-waiting ids); \
                 refresh 1 s on both indices; max ours {:.0} ms, peer {:.0} ms",
                maxes[0], maxes[1]
            )),
        );
    }
}
