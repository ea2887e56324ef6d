//! The operator answers that watch over time: catch-up ETA and trend against a consumer
//! throttled on purpose, the projection's scheduled drift check, and a canary redrive that
//! fails again.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};

use aliexpress::ops::reconcile::ReconcileDeps;
use aliexpress::worker::drift_watch::DriftWatch;
use aliexpress::worker::Shutdown;

use crate::helpers::{TestApp, TestEnv};

use crate::ops::bin;

/// The binary run on a blocking thread, so the test can project meanwhile.
fn bin_in_background(env: &TestEnv, args: &[&str]) -> tokio::task::JoinHandle<std::process::Output> {
    let (vars, args): (_, Vec<String>) = (env.bin_env(), args.iter().map(|a| a.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_aliexpress"))
            .args(args)
            .envs(vars)
            .output()
            .expect("runs")
    })
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A client of `group` that commits offsets without joining (as a reset tool does).
fn committer(env: &TestEnv, group: &str) -> BaseConsumer {
    let k = aliexpress::bus::KafkaConnection::from_settings(&env.infra.kafka).expect("kafka");
    aliexpress::ops::groups::client(&k, group).expect("client")
}

fn commit(c: &BaseConsumer, topic: &str, offsets: &[(i32, i64)]) {
    let mut tpl = TopicPartitionList::new();
    for (p, o) in offsets {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*o)).expect("tpl");
    }
    c.commit(&tpl, CommitMode::Sync).expect("commit");
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_gives_an_eta_while_a_throttled_consumer_catches_up_and_says_when_it_does_not() {
    let env = TestEnv::new().await;
    let topic = env.names.events_topic();
    for i in 0..240 {
        env.produce(&topic, &format!("key-{i}"), b"{}").await;
    }
    let group = format!("eta-test-{}", uuid::Uuid::now_v7());
    let c = committer(&env, &group);
    let ends: Vec<(i32, i64)> = (0..3)
        .map(|p| (p, c.fetch_watermarks(&topic, p, Duration::from_secs(10)).expect("wm").1))
        .collect();
    assert!(
        ends.iter().all(|(_, e)| *e > 20),
        "every partition has records: {ends:?}"
    );
    commit(&c, &topic, &ends.iter().map(|(p, _)| (*p, 0)).collect::<Vec<_>>());

    // A consumer throttled on purpose: one record per partition every 100 ms, partition 0 at
    // half that pace (the slowest, which the group waits for).
    let stop = Arc::new(AtomicBool::new(false));
    let throttled = {
        let (stop, topic, ends) = (stop.clone(), topic.clone(), ends.clone());
        let c = committer(&env, &group);
        std::thread::spawn(move || {
            let mut at: Vec<i64> = vec![0; ends.len()];
            let mut tick = 0u64;
            while !stop.load(Ordering::Relaxed) {
                tick += 1;
                for (i, (_, end)) in ends.iter().enumerate() {
                    if (i != 0 || tick.is_multiple_of(2)) && at[i] + 1 < *end {
                        at[i] += 1;
                    }
                }
                let offsets: Vec<(i32, i64)> = ends.iter().map(|(p, _)| *p).zip(at.iter().copied()).collect();
                commit(&c, &topic, &offsets);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let describe = [
        "consumer-groups",
        "describe",
        "--group",
        &group,
        "--topic",
        &topic,
        "--eta-sample",
        "2",
    ];
    let out = bin(&env, &describe);
    stop.store(true, Ordering::Relaxed);
    throttled.join().expect("throttled consumer");
    let screen = text(&out);
    assert!(out.status.success(), "{screen}");
    assert!(screen.contains("ETA"), "an ETA column: {screen}");
    assert!(
        screen.contains(&format!("{topic}: catching up, ETA ")) && screen.contains("(slowest partition 0)"),
        "the group waits for its slowest partition: {screen}"
    );

    // Nothing consumed while records keep coming: not catching up.
    let grow = {
        let env_topic = topic.clone();
        let producer = env.producer.clone();
        tokio::spawn(async move {
            for i in 0..40 {
                let key = format!("more-{i}");
                let rec = rdkafka::producer::FutureRecord::to(&env_topic).key(&key).payload(b"{}");
                producer.send(rec, Duration::from_secs(10)).await.expect("produced");
                tokio::time::sleep(Duration::from_millis(75)).await;
            }
        })
    };
    let out = bin_in_background(&env, &describe).await.expect("join");
    grow.await.expect("producer");
    let screen = text(&out);
    assert!(screen.contains(&format!("{topic}: not catching up")), "{screen}");
}

/// Deletes product `id`'s document as a lost write would (on the projection's version line, at
/// `version`).
pub(crate) async fn lose_document(env: &TestEnv, id: &str, version: i64) {
    let (alias, id) = (env.names.index_alias(), id.to_owned());
    let r = env
        .search()
        .call(|os| {
            let (a, i) = (alias.clone(), id.clone());
            async move {
                os.delete(opensearch::DeleteParts::IndexId(&a, &i))
                    .version(version)
                    .version_type(opensearch::params::VersionType::ExternalGte)
                    .send()
                    .await
            }
        })
        .await
        .expect("delete");
    assert!(r.status_code().is_success(), "delete: {}", r.status_code());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_scheduled_drift_check_reports_only_what_still_differs_and_status_shows_it() {
    let app = TestApp::spawn().await;
    let env = &app.env;
    let mut projector = env.projector(None, None).await;
    let mut ids = Vec::new();
    for n in 0..3 {
        let p = app.create_product(&format!("WATCH-{n}"), "Watched lamp").await;
        ids.push(p["id"].as_str().expect("id").to_owned());
    }
    env.drain_outbox().await;
    env.consume_until_idle(&mut projector).await;
    let deps = || ReconcileDeps {
        pool: env.pool.clone(),
        cache: env.cache(),
        search: env.search(),
        names: env.names.clone(),
    };
    let watch = DriftWatch {
        every: Duration::from_secs(3600),
        sample: 100,
        grace: Duration::from_secs(8),
    };
    let clean = watch
        .once(&deps(), &Shutdown::new())
        .await
        .expect("check")
        .expect("ran");
    assert_eq!((clean.compared, clean.drift.len()), (3, 0), "{clean:?}");

    // One document lost for good; one product written but not projected yet (in flight: it is
    // projected during the grace period, so it is no drift).
    lose_document(env, &ids[0], 1).await;
    let late = app.create_product("WATCH-LATE", "Late lamp").await;
    env.drain_outbox().await;
    let d = deps();
    let run = tokio::spawn(async move { watch.once(&d, &Shutdown::new()).await });
    env.consume_until_idle(&mut projector).await;
    let found = run.await.expect("join").expect("check").expect("ran");
    let drift: Vec<(String, &str, &str)> = found
        .drift
        .iter()
        .map(|d| (d.product_id.to_string(), d.store, d.kind))
        .collect();
    assert_eq!(
        drift,
        vec![(ids[0].clone(), "opensearch", "missing")],
        "late product {late}"
    );
    assert_eq!(env.count("reconcile_runs").await, 2);

    let out = bin(env, &["status", "--json"]);
    let s: Value = serde_json::from_slice(&out.stdout).expect("status json");
    assert_eq!(s["last_reconcile"]["drift"], json!({"opensearch/missing": 1}), "{s}");
    assert_eq!(s["last_reconcile"]["compared"], 4);
    let screen = text(&bin(env, &["status"]));
    assert!(screen.contains("drift: opensearch/missing 1"), "{screen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_that_fails_again_stops_the_redrive_with_one_new_dead_letter_and_exit_1() {
    let env = TestEnv::new().await;
    let topic = env.names.events_topic();
    for _ in 0..3 {
        env.produce(&topic, &uuid::Uuid::now_v7().to_string(), b"{\"event_type\": ")
            .await;
    }
    let mut p = env.projector(None, None).await;
    assert_eq!(env.consume_until_idle(&mut p).await.dead_lettered, 3);
    let groups: Value = serde_json::from_slice(&bin(&env, &["dlq", "triage", "--json"]).stdout).expect("json");
    let fp = groups[0]["fingerprint"].as_str().expect("fingerprint").to_owned();

    // The cause is not fixed: the canary is dead-lettered again while the projection runs.
    let redrive = bin_in_background(
        &env,
        &[
            "dlq",
            "redrive",
            "--fingerprint",
            &fp,
            "--execute",
            "--canary",
            "1",
            "--canary-timeout",
            "60s",
        ],
    );
    let mut projected = 0;
    while !redrive.is_finished() {
        projected += env.consume_until_idle(&mut p).await.dead_lettered;
    }
    let out = redrive.await.expect("join");
    let screen = text(&out);
    assert_eq!(out.status.code(), Some(1), "{screen}");
    assert!(screen.contains("canary failed: 1 of 1 dead-lettered again"), "{screen}");
    projected += env.consume_until_idle(&mut p).await.dead_lettered;
    assert_eq!(projected, 1, "exactly one new dead letter, no loop");

    let groups: Value = serde_json::from_slice(&bin(&env, &["dlq", "triage", "--json"]).stdout).expect("json");
    assert_eq!(groups[0]["count"], 4, "{groups}");
    assert_eq!(groups[0]["failed_after_redrive"], 1, "{groups}");
    let left = text(&bin(&env, &["dlq", "redrive", "--fingerprint", &fp]));
    assert!(
        left.contains("3 record(s) would be redriven"),
        "two never tried and the new letter: {left}"
    );
    assert_eq!(
        bin(&env, &["dlq", "redrive", "--all", "--canary", "1"]).status.code(),
        Some(2),
        "a canary without --execute is a usage error"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_replay_dry_run_says_what_the_execute_then_does() {
    let (app, ids) = crate::ops::projected_catalog(6).await;
    let env = &app.env;
    // One document lost: the only one a full replay changes.
    let lost = env.document(&ids[0]).await.expect("doc");
    lose_document(env, &ids[0], lost["_version"].as_i64().expect("version")).await;
    let mut before = Vec::new();
    for id in &ids {
        before.push(env.document(id).await.map(|d| d["_source"].clone()));
    }

    let dry = text(&bin(
        env,
        &[
            "replay",
            "--to-earliest",
            "--impact-sample",
            "1000",
            "--assume-rate",
            "100",
        ],
    ));
    assert!(
        dry.contains("Sample: 12 record(s) of 6 product(s) projected and compared with the index: 2 would change a document (16.7%), 1 document(s) in all."),
        "created and published, six products; both events of the lost one: {dry}"
    );
    assert!(
        dry.contains("ETA: 12 record(s) in <1s at 100 records/s (--assume-rate)"),
        "{dry}"
    );
    let re_read: i64 = dry
        .lines()
        .skip_while(|l| !l.contains("RE-READ"))
        .skip(1)
        .take_while(|l| !l.starts_with("Sample"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<i64>().ok())
        .sum();
    assert_eq!(re_read, 12, "{dry}");

    let out = bin(env, &["replay", "--to-earliest", "--execute"]);
    assert!(out.status.success(), "{}", text(&out));
    let mut p = env.projector(None, None).await;
    assert_eq!(env.consume_until_idle(&mut p).await.received as i64, re_read);
    let mut changed = 0;
    for (id, b) in ids.iter().zip(&before) {
        changed += usize::from(env.document(id).await.map(|d| d["_source"].clone()) != *b);
    }
    assert_eq!(changed, 1, "the dry run's one document, and only it");
}
