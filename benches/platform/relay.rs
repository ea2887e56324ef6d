//! relay: `process-outbox` over a backlog of random ~1 KB rows vs ProducerPerformance sending
//! the same payload bytes.

use std::process::{Command, Stdio};
use std::time::Duration;

use aliexpress::bus::admin;
use aliexpress::store::pool;
use diesel_async::RunQueryDsl;

use super::harness::{bin, bin_env, end_offsets, fresh_env, kafka_libs};
use super::row::{summary, Row};
use super::{progress, runs, scale};

#[derive(diesel::QueryableByName)]
pub(super) struct Published {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(super) n: i64,
    #[diesel(sql_type = diesel::sql_types::Double)]
    pub(super) span_secs: f64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    pub(super) pending: i64,
}

/// ProducerPerformance's steady rate: its periodic window lines ("N records sent, R
/// records/sec ...", every 5 s) let the first window (JVM start, metadata, warm-up) be
/// taken out of the overall figure. Returns (rate, warm-up excluded).
pub(super) fn producer_performance_rate(text: &str, n: i64) -> (f64, bool) {
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
/// linger 5 ms, acks=all, idempotence) on both sides. Each relay run re-publishes the same
/// backlog; its rate excludes the first batch (warm-up) and is checked against the rows
/// marked published and the topic's end offsets; ProducerPerformance's excludes its first
/// 5 s window and is checked against its topic's end offsets.
pub(super) async fn bench_relay(rows: &mut Vec<Row>) {
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
    rows.push(Row::new(format!("outbox relay, {n} x {avg} B backlog"), "events/s")
.ours(o, or)
.baseline("Kafka ProducerPerformance, same payloads", b, br)
.goal(">= 0.6")
.errors(errors)
.verified(format!(
            "{n} rows marked per run, {delivered_all} records on the topic in all; ProducerPerformance {perf_all} records; \
             relay also sends key + 6 headers per record; warm-up: relay's first batch out{}",
            if perf_warm_excluded { ", ProducerPerformance's first 5 s window out" } else { "; ProducerPerformance's run too short for windows: its figure includes JVM warm-up" }
        )));
}
