//! relay: `process-outbox` over a backlog of random ~1 KB rows vs ProducerPerformance sending
//! the same payload bytes.

use std::process::{Command, Stdio};
use std::time::Duration;

use aliexpress::store::pool;
use diesel_async::RunQueryDsl;

use super::append_times;
use super::harness::{bin, bin_env, fresh_env, kafka_libs, offsets_reader, watermarks};
use super::row::{summary, Row};
use super::{progress, runs, scale};

#[derive(diesel::QueryableByName)]
pub(super) struct Published {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(super) n: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(super) pending: i64,
}

/// A backlog of `n` outbox rows for `topic`: `n / 10` products with versions 1..=10, each
/// payload random hex (incompressible for lz4) of about 1 KB, headers as the write path
/// stores them. Used by the relay rows and the Debezium peer.
pub(super) fn seed_outbox_sql(topic: &str, n: i64) -> String {
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
/// linger 5 ms, acks=all, idempotence) on both sides. Each side publishes to a topic of its
/// own with the broker's append times (`append_times`), and both rates are read the same way
/// from them: the records after the first 10 % over the time from the one at 10 % to the last,
/// so the warm-up (JVM start, connections, the first batches) is out at every scale. Each relay
/// run re-publishes the same backlog; checked against the rows marked published and the
/// records on each topic.
pub(super) async fn bench_relay(rows: &mut Vec<Row>) {
    let e = fresh_env("relay").await;
    let n = (200_000.0 * scale()) as i64;
    let mut c = pool::connect(e.infra.database.url.expose(), Duration::from_secs(600))
        .await
        .expect("conn");
    progress(format_args!("relay: seeding {n} outbox rows"));
    let ours_topic = format!("{}timed", e.names.events_topic());
    diesel::sql_query(seed_outbox_sql(&ours_topic, n))
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
    append_times::timed_topic(&kafka, &ours_topic).await;
    append_times::timed_topic(&kafka, &perf_topic).await;
    let reader = offsets_reader(&kafka);
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let (mut delivered_all, mut perf_all, mut errors) = (0i64, 0i64, 0u64);
    for run in 0..runs() {
        diesel::sql_query("UPDATE outbox SET published_at = NULL")
            .execute(&mut c)
            .await
            .expect("reset");
        diesel::sql_query("VACUUM ANALYZE outbox").execute(&mut c).await.ok();
        let before = watermarks(&reader, &ours_topic).await;
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
                    (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS pending \
             FROM outbox WHERE published_at IS NOT NULL",
        )
        .get_result(&mut c)
        .await
        .expect("published");
        assert_eq!((p.n, p.pending), (n, 0), "every row published");
        let recs = append_times::records(&kafka, &reader, &ours_topic, &before).await;
        let delivered = recs.len() as i64;
        assert!(delivered >= n, "the topic received {delivered} of {n}");
        delivered_all += delivered;
        let rate = append_times::backlog_rate(&recs);
        ours.push(rate);

        let perf_before = watermarks(&reader, &perf_topic).await;
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
        assert!(
            perf.status.success(),
            "ProducerPerformance: {}",
            String::from_utf8_lossy(&perf.stderr)
        );
        let perf_recs = append_times::records(&kafka, &reader, &perf_topic, &perf_before).await;
        let perf_delivered = perf_recs.len() as i64;
        assert!(
            perf_delivered >= n,
            "ProducerPerformance's topic received {perf_delivered} of {n}"
        );
        perf_all += perf_delivered;
        let r = append_times::backlog_rate(&perf_recs);
        raw.push(r);
        progress(format_args!(
            "relay run {run}: ours {rate:.0}/s, ProducerPerformance {r:.0}/s"
        ));
    }
    let _ = std::fs::remove_file(&payload_file);
    let (o, or) = summary(ours);
    let (b, br) = summary(raw);
    rows.push(Row::new(format!("outbox relay, {n} x {avg} B backlog"), "events/s")
.ours(o, or)
.baseline("Kafka ProducerPerformance, same payloads", b, br)
.goal(">= 0.8")
.errors(errors)
.verified(format!(
            "{n} rows marked per run, {delivered_all} records on the topic in all; ProducerPerformance {perf_all} records; \
             relay also sends key + 6 headers per record; both rates from the broker's append times, first 10 % of \
             records out (warm-up)"
        )));
}
