//! Projection scaling: 1, 2 and 3 projection consumers in one group sharing a 12-partition
//! topic, and one consumer's partition pipelines.
//!
//! The work is bound by waiting, not by this machine's 2 cores: every bulk request is given a
//! modelled round trip (`ProjectionSettings::modelled_bulk_latency`, a remote OpenSearch
//! cluster) and each consumer keeps one bulk request in flight
//! (`max_concurrent_bulks = 1`, the ceiling of one process). Consumers run in this process,
//! each with its own Kafka consumer in the group, over a backlog produced beforehand. The
//! clock starts once the group is balanced (every partition assigned, evenly) and counts only
//! the events applied after that; a run ends when every event is applied (the projection's
//! metric) and the index holds every document.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aliexpress::bus::producer::{self, ProducerSettings};
use aliexpress::bus::{admin, consumer};
use aliexpress::search::{index, SearchClient};
use aliexpress::telemetry::metrics::PROJECTION_EVENTS;
use aliexpress::worker::projection::{ProductEventConsumer, ProjectionSettings};
use aliexpress::worker::Shutdown;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;

use super::harness::{fresh_env, Env};
use super::projection::envelope;
use super::row::{summary, Row};
use super::{runs, scale};

const PARTITIONS: i32 = 12;
const BATCH: usize = 100;
const LATENCY: Duration = Duration::from_millis(200);

fn applied_so_far() -> u64 {
    ["applied", "already_applied"]
        .iter()
        .map(|r| PROJECTION_EVENTS.with_label_values(&["ProductCreated", r]).get())
        .sum()
}

/// Events/s of `consumers` consumers (each with `bulks` bulk requests in flight at most, 0:
/// one per pipeline) over a fresh topic of `n` creates.
async fn one_run(e: &Env, tag: &str, consumers: usize, bulks: usize, n: usize) -> f64 {
    let kafka = aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings");
    let topic = format!("{}.{tag}", e.names.events_topic());
    admin::ensure_topics(&kafka, std::slice::from_ref(&topic), PARTITIONS, 1)
        .await
        .expect("topic");
    let search = SearchClient::new(e.infra.opensearch.url.expose(), Duration::from_secs(60)).expect("search");
    let target = format!("{}_{tag}", e.names.index_alias());
    index::create_index(&search, &target, index::IndexLayout::default())
        .await
        .expect("index");
    let p = producer::build(&kafka, &ProducerSettings::default()).expect("producer");
    let mut futs = Vec::with_capacity(n);
    for _ in 0..n {
        let ev = envelope(uuid::Uuid::new_v4(), 1, "Wireless ergonomic mouse");
        let payload = serde_json::to_vec(&ev).expect("json");
        let key = ev.aggregate_id.to_string();
        futs.push(
            p.send_result(FutureRecord::to(&topic).key(&key).payload(&payload))
                .map_err(|(e, _)| e)
                .expect("enqueue"),
        );
    }
    for f in futs {
        f.await.expect("delivered").expect("ok");
    }
    let group = format!("{}-{tag}", e.names.projection_group());
    let before = applied_so_far();
    let mut running = Vec::new();
    for _ in 0..consumers {
        let c = Arc::new(consumer::build(&kafka, &group).expect("consumer"));
        c.subscribe(&[&topic]).expect("subscribe");
        let cache =
            aliexpress::cache::ProductCache::new(e.infra.redis.url.expose(), e.names.clone(), Duration::from_secs(600))
                .expect("cache");
        let proj = ProductEventConsumer::new(
            c.clone(),
            search.clone(),
            target.clone(),
            cache,
            aliexpress::bus::dlq::DlqWriter::new(p.clone(), e.names.events_dlq_topic(), group.clone()),
            group.clone(),
            ProjectionSettings {
                batch_size: BATCH,
                batch_wait: Duration::from_millis(20),
                log_each_event: false,
                max_concurrent_bulks: bulks,
                modelled_bulk_latency: LATENCY,
                ..Default::default()
            },
        );
        let sd = Shutdown::new();
        let (stop, t) = (sd.clone(), topic.clone());
        running.push((
            tokio::spawn(async move { proj.run_until_stopped(&t, stop).await }),
            sd,
            c,
        ));
    }
    let share = (PARTITIONS as usize).div_ceil(consumers);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let owned: Vec<usize> = running
            .iter()
            .map(|(_, _, c)| c.assignment().map(|a| a.count()).unwrap_or(0))
            .collect();
        if owned.iter().sum::<usize>() == PARTITIONS as usize && owned.iter().all(|o| *o <= share) {
            break;
        }
        assert!(Instant::now() < deadline, "consumers balanced: {owned:?}");
        tokio::time::sleep(Duration::from_millis(5)).await; // polling the group's state
    }
    let started = Instant::now();
    let at_start = applied_so_far() - before;
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let done = applied_so_far() - before;
        if done >= n as u64 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{consumers} consumers project {n} events ({done} done)"
        );
        tokio::time::sleep(Duration::from_millis(5)).await; // polling the counter
    }
    let secs = started.elapsed().as_secs_f64();
    let timed = n as u64 - at_start;
    for (task, sd, _) in running {
        sd.trigger();
        task.await.expect("task").expect("consumer stops cleanly");
    }
    let count = super::projection::doc_count(&search, &target).await;
    assert_eq!(count, n as u64, "every document in the index");
    eprintln!(
        "projection x{consumers} (bulks in flight per consumer: {bulks}, 0: one per pipeline): {timed} of {n} events after balancing in {secs:.2}s ({:.0}/s)",
        timed as f64 / secs
    );
    timed as f64 / secs
}

pub async fn bench_projection_scaling(rows: &mut Vec<Row>) {
    let e = fresh_env("projscale").await;
    let n = (12_000.0 * scale()) as usize;
    let mut results: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for run in 0..runs() {
        for (label, consumers, bulks) in [("x1", 1usize, 1usize), ("x2", 2, 1), ("x3", 3, 1), ("pipelines", 1, 0)] {
            let r = one_run(&e, &format!("{label}r{run}"), consumers, bulks, n).await;
            results.entry(label).or_default().push(r);
        }
    }
    let one = summary(results.get("x1").cloned().unwrap_or_default());
    let ideal = BATCH as f64 / LATENCY.as_secs_f64();
    for (label, k) in [("x2", 2.0), ("x3", 3.0)] {
        let (o, or) = summary(results.get(label).cloned().unwrap_or_default());
        rows.push(
            Row::new(
                format!(
                    "projection consumers {label}, {} ms modelled per {BATCH}-event bulk, 1 bulk in flight each",
                    LATENCY.as_millis()
                ),
                "events/s",
            )
            .ours(o, or)
            .baseline(
                format!("{k} x one consumer ({:.0} events/s)", one.0),
                k * one.0,
                (k * one.1 .0, k * one.1 .1),
            )
            .goal(">= 0.9")
            .verified(format!(
                "{n} events applied per run (projection metric), {n} documents counted in each run's index; \
                 one consumer's ceiling is {ideal:.0}/s, it reached {:.0}",
                one.0
            )),
        );
    }
    let (o, or) = summary(results.get("pipelines").cloned().unwrap_or_default());
    rows.push(Row::new(format!(
            "one projection consumer, {PARTITIONS} partition pipelines (bulks in flight: one per pipeline), {} ms modelled per bulk",
            LATENCY.as_millis()
        ), "events/s")
.ours(o, or)
.baseline("the same consumer, 1 bulk in flight", one.0, one.1)
.goal("> 1 (partitions in parallel)")
.verified(format!("{n} events applied per run, {n} documents counted")));
}
