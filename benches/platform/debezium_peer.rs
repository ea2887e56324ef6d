//! The relay's peer: Debezium's Postgres connector with the outbox EventRouter, on Kafka
//! Connect standalone (jars from Maven Central: `deploy/local/stack jars debezium`), reading
//! the same outbox table (our migrations) through a logical replication slot and publishing
//! to the same Kafka.
//!
//! Both sides get the same rows (`seed_outbox_sql`: random ~1 KB payloads, 10 versions per
//! product) in their own database, so that neither sees the other's writes in its WAL or
//! table, and publish to their own topic, created with `message.timestamp.type=LogAppendTime`:
//! every figure is read from the broker's append times of the records, the same way for both.
//!
//! - Backlog: `n` rows written before the publisher starts (for Debezium: after its slot was
//!   created, so it streams them from the WAL); events/s between the append times of the
//!   records at 10 % and at 100 % (the first 10 % are the warm-up: JVM, connections,
//!   batches filling), checked against the number of records on the topic.
//! - Publish latency: one-row transactions (INSERT, then the write path's wake-up) at a fixed rate,
//!   open loop over 8 connections, while the publisher runs: commit returned → record
//!   appended, per row, p50/p99/max.
//!
//! Settings: ours as shipped (`process-outbox` and `--follow`); Connect with the same
//! producer compression and linger as ours (lz4, 5 ms), acks=all as ours; Debezium's own
//! defaults otherwise (`poll.interval.ms` 500, `max.batch.size` 2048), and a second latency
//! run with `poll.interval.ms=10`, its latency-tuned form.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aliexpress::bus::KafkaConnection;
use aliexpress::store::outbox_repo::WAKE_RELAYS_SQL;
use aliexpress::store::pool;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use rdkafka::consumer::BaseConsumer;

use super::append_times;
use super::connect::ConnectStandalone;
use super::harness::{bin, bin_env, fresh_env, offsets_reader, open_loop, spawn_role, watermarks, Env};
use super::relay::seed_outbox_sql;
use super::row::{quantile, summary, Row};
use super::{env_or, progress, runs, scale, secs};

const SLOT: &str = "aliexpress_bench_peer";
const PUBLICATION: &str = "aliexpress_bench_peer";

/// The Connect + Debezium jars (`deploy/local/stack jars debezium`; `make bench` runs it).
fn connect_libs() -> String {
    format!(
        "{}/debezium/libs/*",
        env_or("ALIEXPRESS_STATE_DIR", "/var/tmp/aliexpress-stack")
    )
}

/// `url` with Debezium's role (the stack creates it with REPLICATION, nothing else).
fn debezium_url(url: &str) -> url::Url {
    let mut u = url::Url::parse(url).expect("url");
    let _ = u.set_username(&env_or("DEBEZIUM_DB_USER", "debezium"));
    let _ = u.set_password(Some(&env_or("DEBEZIUM_DB_PASSWORD", "debezium")));
    u
}

fn now_ms() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1000.0)
        .unwrap_or(0.0)
}

/// Records (key, append time in ms) of `side`'s topic from `from` up to the watermarks now.
async fn records(side: &Side, from: &[i64]) -> Vec<(String, i64)> {
    append_times::records(&side.kafka(), &side.reader, &side.topic, from).await
}

/// Waits until `side`'s topic holds `n` more records than `from`; false at the deadline.
async fn wait_for_records(side: &Side, from: &[i64], n: i64, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    loop {
        let now: i64 = watermarks(&side.reader, &side.topic).await.iter().sum();
        if now - from.iter().sum::<i64>() >= n {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(200)).await; // polling the topic's offsets
    }
}

/// Kafka Connect standalone running the Debezium connector; stopped when dropped.
struct Connect(ConnectStandalone);

impl Connect {
    /// Starts Connect for `e`'s database, streaming slot `SLOT` to `topic`.
    fn start(e: &Env, topic: &str, poll_interval_ms: Option<u64>) -> Self {
        let db = debezium_url(e.infra.database.url.expose());
        let mut connector = format!(
            "name=outbox-peer\n\
             connector.class=io.debezium.connector.postgresql.PostgresConnector\n\
             tasks.max=1\n\
             database.hostname={host}\n\
             database.port={port}\n\
             database.user={user}\n\
             database.password={password}\n\
             database.dbname={dbname}\n\
             database.sslmode={sslmode}\n\
             topic.prefix=peer\n\
             plugin.name=pgoutput\n\
             slot.name={SLOT}\n\
             publication.name={PUBLICATION}\n\
             publication.autocreate.mode=disabled\n\
             snapshot.mode=no_data\n\
             table.include.list=public.outbox\n\
             tombstones.on.delete=false\n\
             transforms=outbox\n\
             transforms.outbox.type=io.debezium.transforms.outbox.EventRouter\n\
             transforms.outbox.table.field.event.id=event_id\n\
             transforms.outbox.table.field.event.key=key\n\
             transforms.outbox.table.field.event.payload=payload\n\
             transforms.outbox.route.by.field=aggregate_type\n\
             transforms.outbox.route.topic.replacement={topic}\n\
             transforms.outbox.table.fields.additional.placement=event_type:header:event_type,aggregate_version:header:aggregate_version\n",
            host = db.host_str().unwrap_or("127.0.0.1"),
            port = db.port().unwrap_or(5432),
            user = db.username(),
            password = db.password().unwrap_or_default(),
            dbname = db.path().trim_start_matches('/'),
            // As the relay's side connects (the bench's URL says disable).
            sslmode = db
                .query_pairs()
                .find(|(k, _)| k == "sslmode")
                .map_or_else(|| "prefer".to_owned(), |(_, v)| v.into_owned()),
        );
        if let Some(ms) = poll_interval_ms {
            connector.push_str(&format!("poll.interval.ms={ms}\n"));
        }
        // The same producer compression, linger and acks as ours.
        let producer = "producer.compression.type=lz4\nproducer.linger.ms=5\nproducer.acks=all\n";
        Self(ConnectStandalone::start(
            e,
            &connect_libs(),
            "debezium",
            producer,
            &connector,
        ))
    }

    fn log_tail(&self) -> String {
        self.0.log_tail()
    }
}

/// Each side's database and topic, and the offsets reader of that topic.
struct Side {
    e: Env,
    topic: String,
    debezium: bool,
    reader: Arc<BaseConsumer>,
}

impl Side {
    async fn new(tag: &str, debezium: bool) -> Self {
        let e = fresh_env(tag).await;
        let topic = format!("{}{tag}", e.names.events_topic());
        append_times::timed_topic(
            &aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings"),
            &topic,
        )
        .await;
        if debezium {
            let mut c = conn(e.infra.database.url.expose()).await;
            for sql in [
                format!("CREATE PUBLICATION {PUBLICATION} FOR TABLE outbox"),
                format!(
                    "GRANT SELECT ON outbox TO {}",
                    debezium_url(e.infra.database.url.expose()).username()
                ),
            ] {
                diesel::sql_query(sql).execute(&mut c).await.expect("publication");
            }
        }
        let reader =
            offsets_reader(&aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings"));
        Self {
            e,
            topic,
            debezium,
            reader,
        }
    }

    fn kafka(&self) -> KafkaConnection {
        aliexpress::bus::KafkaConnection::from_settings(&self.e.infra.kafka).expect("kafka settings")
    }

    /// Empties the outbox; for Debezium, drops the old slot first and makes a new one after,
    /// so that it streams exactly what is written from now on.
    async fn reset(&self) {
        if self.debezium {
            drop_slot(self.e.infra.database.url.expose()).await;
        }
        let mut c = conn(self.e.infra.database.url.expose()).await;
        diesel::sql_query("TRUNCATE outbox")
            .execute(&mut c)
            .await
            .expect("truncate");
        if self.debezium {
            let mut d = conn(debezium_url(self.e.infra.database.url.expose()).as_str()).await;
            diesel::sql_query(format!(
                "SELECT 1 FROM pg_create_logical_replication_slot('{SLOT}', 'pgoutput')"
            ))
            .execute(&mut d)
            .await
            .expect("replication slot (the stack sets wal_level=logical; `deploy/local/stack up`)");
        }
    }
}

async fn conn(url: &str) -> diesel_async::AsyncPgConnection {
    pool::connect(url, Duration::from_secs(600)).await.expect("postgres")
}

/// Drops the bench's slot in `url`'s database if it is there (not while Connect runs).
async fn drop_slot(url: &str) {
    let mut d = conn(debezium_url(url).as_str()).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let r = diesel::sql_query(format!(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
             WHERE slot_name = '{SLOT}' AND database = current_database()"
        ))
        .execute(&mut d)
        .await;
        // Still active for a moment after Connect stopped.
        if r.is_ok() || Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await; // polling until the slot is free
    }
}

/// Drops every bench slot whose database is a bench database (left by an interrupted run),
/// so that those databases can be dropped and the WAL they hold released.
pub async fn drop_leftover_slots(base_url: &str) {
    let Ok(mut d) = pool::connect(debezium_url(base_url).as_str(), Duration::from_secs(60)).await else {
        return;
    };
    let _ = diesel::sql_query(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
         WHERE database LIKE 'aliexpress\\_bench\\_%' AND NOT active",
    )
    .execute(&mut d)
    .await;
}

/// One backlog run of `side`: events/s and the records it found on the topic.
async fn backlog_run(side: &Side, n: i64) -> (f64, usize, usize) {
    side.reset().await;
    let mut c = conn(side.e.infra.database.url.expose()).await;
    diesel::sql_query(seed_outbox_sql(&side.topic, n))
        .execute(&mut c)
        .await
        .expect("seed");
    diesel::sql_query("VACUUM ANALYZE outbox").execute(&mut c).await.ok();
    let from = watermarks(&side.reader, &side.topic).await;
    if side.debezium {
        let connect = Connect::start(&side.e, &side.topic, None);
        let done = wait_for_records(side, &from, n, Duration::from_secs(600)).await;
        assert!(
            done,
            "Debezium published the backlog; Connect's log:\n{}",
            connect.log_tail()
        );
        drop(connect);
    } else {
        let out = Command::new(bin())
            .args(["process-outbox"])
            .envs(bin_env(&side.e))
            .stderr(Stdio::null())
            .output()
            .expect("relay runs");
        assert!(out.status.success(), "process-outbox exits 0");
        assert!(
            wait_for_records(side, &from, n, Duration::from_secs(30)).await,
            "the relay published the backlog"
        );
    }
    let recs = records(side, &from).await;
    let distinct = recs
        .iter()
        .map(|r| r.0.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    (append_times::backlog_rate(&recs), recs.len(), distinct)
}

/// Latencies (ms, commit → append) of one fixed-rate run, and the writes that failed.
async fn latency_run(side: &Side, rate: f64, poll_interval_ms: Option<u64>) -> (Vec<f64>, u64) {
    side.reset().await;
    let url = side.e.infra.database.url.expose().to_owned();
    let from = watermarks(&side.reader, &side.topic).await;
    let (_relay, _connect) = if side.debezium {
        (None, Some(Connect::start(&side.e, &side.topic, poll_interval_ms)))
    } else {
        let relay = spawn_role(&side.e, &["process-outbox".into(), "--follow".into()], &[]);
        (Some(relay), None)
    };
    // Ready when a first row comes through (JVM start, slot, connections).
    let pool = pool::build_pool(&url, 8, Duration::from_secs(60)).expect("pool");
    let topic = side.topic.clone();
    let insert = move |key: &str| {
        let pad: String = (0..28)
            .map(|_| format!("{:032x}", rand::random::<u128>()))
            .collect::<String>();
        format!(
            "BEGIN; INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload, headers) \
             VALUES (gen_random_uuid(), 'product', '{key}', 1, '{topic}', '{key}', 'ProductStockAdjusted', 1, \
                     jsonb_build_object('aggregate_id', '{key}'::uuid, 'aggregate_version', 1, 'pad', '{pad}'), \
                     jsonb_build_object('event_type', 'ProductStockAdjusted', 'aggregate_version', '1')); \
             COMMIT; {WAKE_RELAYS_SQL};"
        )
    };
    {
        let mut c = pool::get(&pool).await.expect("conn");
        c.batch_execute(&insert(&uuid::Uuid::new_v4().to_string()))
            .await
            .expect("probe");
    }
    assert!(
        wait_for_records(side, &from, 1, Duration::from_secs(120)).await,
        "the first row reached {}",
        side.topic
    );
    let commits: Arc<Mutex<HashMap<String, f64>>> = Default::default();
    let warm = 2.0;
    let insert = Arc::new(insert);
    let samples = open_loop(rate, warm, secs(), |i| {
        let (pool, commits, insert) = (pool.clone(), commits.clone(), insert.clone());
        let record = (i as f64) >= warm * rate;
        ("write", async move {
            let key = uuid::Uuid::new_v4().to_string();
            let Ok(mut c) = pool::get(&pool).await else {
                return false;
            };
            if c.batch_execute(&insert(&key)).await.is_err() {
                return false;
            }
            let at = now_ms();
            if record {
                commits.lock().expect("commits").insert(key, at);
            }
            true
        })
    })
    .await;
    let errors: u64 = samples.values().map(|s| s.errors).sum();
    let sent = ((warm + secs()) * rate) as i64 + 1 - errors as i64;
    let arrived = wait_for_records(side, &from, sent, Duration::from_secs(120)).await;
    assert!(arrived, "every committed row reached {}", side.topic);
    let recs = records(side, &from).await;
    let commits = commits.lock().expect("commits");
    let mut seen = std::collections::HashSet::new();
    let mut lat: Vec<f64> = recs
        .iter()
        .filter(|(k, _)| seen.insert(k.clone()))
        .filter_map(|(k, ts)| commits.get(k).map(|c| (*ts as f64 - c).max(0.0)))
        .collect();
    assert_eq!(lat.len(), commits.len(), "every recorded row found on the topic");
    lat.sort_by(f64::total_cmp);
    (lat, errors)
}

/// Backlog events/s and publish latency, ours vs Debezium, interleaved runs.
pub async fn bench_debezium_peer(rows: &mut Vec<Row>) {
    let n = (200_000.0 * scale()) as i64;
    let rate: f64 = env_or("BENCH_PEER_RATE", "500").parse().unwrap_or(500.0);
    let ours = Side::new("peerours", false).await;
    let dbz = Side::new("peerdbz", true).await;

    let (mut o, mut d) = (Vec::new(), Vec::new());
    let mut verified = Vec::new();
    for run in 0..runs() {
        let (ro, no, uo) = backlog_run(&ours, n).await;
        let (rd, nd, ud) = backlog_run(&dbz, n).await;
        progress(format_args!(
            "peer backlog run {run}: ours {ro:.0}/s, Debezium {rd:.0}/s"
        ));
        assert!(no as i64 >= n && nd as i64 >= n, "both topics received the backlog");
        verified.push(format!("{no}/{nd}"));
        let _ = (uo, ud);
        o.push(ro);
        d.push(rd);
    }
    let (om, or) = summary(o);
    let (dm, dr) = summary(d);
    rows.push(
        Row::new(format!("outbox backlog {n} x ~1 KB: relay vs Debezium"), "events/s")
            .ours(om, or)
            .baseline("Debezium 3.6.1 outbox EventRouter, Connect 4.1.1", dm, dr)
            .goal(">= 2")
            .verified(format!(
                "records on each topic per run (ours/Debezium): {}; rate from broker append times after the first 10 %",
                verified.join(", ")
            )),
    );

    let variants: [(&str, Option<u64>); 2] = [
        ("Debezium defaults (poll.interval.ms 500)", None),
        ("Debezium poll.interval.ms=10", Some(10)),
    ];
    let mut ours_p = (Vec::new(), Vec::new());
    let mut dbz_p: Vec<(Vec<f64>, Vec<f64>)> = vec![Default::default(); variants.len()];
    let (mut errors, mut counted) = (0u64, 0usize);
    let mut maxes = vec![0f64; variants.len() + 1];
    for run in 0..runs() {
        let (l, e) = latency_run(&ours, rate, None).await;
        errors += e;
        counted += l.len();
        ours_p.0.push(quantile(&l, 0.5));
        ours_p.1.push(quantile(&l, 0.99));
        maxes[0] = maxes[0].max(l.last().copied().unwrap_or(0.0));
        let mut line = format!(
            "peer latency run {run}: ours p50 {:.0} p99 {:.0} ms",
            quantile(&l, 0.5),
            quantile(&l, 0.99)
        );
        for (i, (name, poll)) in variants.iter().enumerate() {
            let (l, e) = latency_run(&dbz, rate, *poll).await;
            errors += e;
            counted += l.len();
            dbz_p[i].0.push(quantile(&l, 0.5));
            dbz_p[i].1.push(quantile(&l, 0.99));
            maxes[i + 1] = maxes[i + 1].max(l.last().copied().unwrap_or(0.0));
            line.push_str(&format!(
                "; {name}: p50 {:.0} p99 {:.0} ms",
                quantile(&l, 0.5),
                quantile(&l, 0.99)
            ));
        }
        progress(line);
    }
    for (i, (name, _)) in variants.iter().enumerate() {
        for (q, ours_q, dbz_q, max_i) in [
            ("p50", &ours_p.0, &dbz_p[i].0, None),
            ("p99", &ours_p.1, &dbz_p[i].1, Some(i + 1)),
        ] {
            let (om, or) = summary(ours_q.clone());
            let (dm, dr) = summary(dbz_q.clone());
            rows.push(
                Row::new(
                    format!("publish latency {q}, commit -> record, {rate:.0} writes/s"),
                    "ms",
                )
                .ours(om, or)
                .baseline((*name).to_owned(), dm, dr)
                .goal(if q == "p99" { "< peer" } else { "" })
                .errors(errors)
                .verified(match max_i {
                    Some(m) => format!(
                        "{counted} rows matched commit -> record over all runs; max ours {:.0} ms, peer {:.0} ms",
                        maxes[0], maxes[m]
                    ),
                    None => format!("{counted} rows matched commit -> record over all runs"),
                }),
            );
        }
    }
    drop_slot(dbz.e.infra.database.url.expose()).await;
}
