use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::Message;
use serde_json::{json, Value};

use crate::helpers::{wait_until, TestApp, TestEnv};

pub(crate) fn bin(env: &TestEnv, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_aliexpress"))
        .args(args)
        .envs(env.bin_env())
        .output()
        .expect("runs")
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

async fn committed(env: &TestEnv, group: &str) -> Vec<Option<i64>> {
    let (b, g, t) = (
        aliexpress::bus::KafkaConnection::from_settings(&env.infra.kafka).expect("kafka settings"),
        group.to_owned(),
        env.names.events_topic(),
    );
    tokio::task::spawn_blocking(move || {
        let c = aliexpress::ops::groups::client(&b, &g).expect("client");
        let parts = aliexpress::ops::groups::partitions(&c, &t).expect("parts");
        let m = aliexpress::ops::groups::committed(&c, &t, &parts).expect("committed");
        parts.iter().map(|p| m[p]).collect()
    })
    .await
    .expect("join")
}

/// A catalog projected once; returns the app and its product ids.
pub(crate) async fn projected_catalog(n: usize) -> (TestApp, Vec<String>) {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..n {
        let p = app
            .create_product(&format!("SKU-R{i}"), &format!("Replayable item {i}"))
            .await;
        let id = p["id"].as_str().expect("id").to_owned();
        app.post(&format!("/api/products/{id}/publish"), json!({})).await;
        ids.push(id);
    }
    app.env.drain_outbox().await;
    let mut p = app.env.projector(None, None).await;
    app.env.consume_until_idle(&mut p).await;
    drop(p);
    (app, ids)
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_dry_run_changes_nothing_and_execute_rewinds_for_a_full_reprojection() {
    let (app, ids) = projected_catalog(4).await;
    let env = &app.env;
    let group = env.names.projection_group();
    let before = committed(env, &group).await;
    assert_eq!(before.iter().flatten().sum::<i64>(), 8);

    let dry = bin(env, &["replay", "--to-earliest"]);
    assert!(dry.status.success(), "{}", String::from_utf8_lossy(&dry.stderr));
    let text = stdout(&dry);
    assert!(
        text.contains("CURRENT-OFFSET") && text.contains("NEW-OFFSET") && text.contains("8 already-consumed events"),
        "{text}"
    );
    assert_eq!(committed(env, &group).await, before, "a dry run changes nothing");

    let docs_before: Vec<Value> = futures::future::join_all(ids.iter().map(|i| env.document(i)))
        .await
        .into_iter()
        .map(|d| d.expect("doc")["_source"].clone())
        .collect();
    let exec = bin(env, &["replay", "--to-earliest", "--execute"]);
    assert!(exec.status.success(), "{}", String::from_utf8_lossy(&exec.stderr));
    assert!(committed(env, &group).await.iter().all(|c| *c == Some(0)));
    assert_eq!(
        env.count("replay_audit WHERE mode = 'to-earliest' AND actor LIKE 'cli:%@%'")
            .await,
        3
    );

    let mut p = env.projector(None, None).await;
    let o = env.consume_until_idle(&mut p).await;
    assert_eq!(o.received, 8, "every event is reprojected");
    let docs_after: Vec<Value> = futures::future::join_all(ids.iter().map(|i| env.document(i)))
        .await
        .into_iter()
        .map(|d| d.expect("doc")["_source"].clone())
        .collect();
    assert_eq!(docs_before, docs_after, "documents are unchanged");
}

#[tokio::test(flavor = "multi_thread")]
async fn replay_is_refused_while_the_group_has_active_members() {
    let (app, _) = projected_catalog(1).await;
    let env = &app.env;
    let mut p = env.projector(None, None).await;
    let shutdown = aliexpress::worker::Shutdown::new();
    // Join the group and get an assignment.
    for _ in 0..10 {
        p.process_once(Duration::from_millis(500), &shutdown)
            .await
            .expect("poll");
        if !p.consumer.assignment().expect("assignment").elements().is_empty() {
            break;
        }
    }
    let out = bin(env, &["replay", "--to-earliest", "--execute"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "Assignments can only be reset if the group '{}' is inactive, but the current state is Stable",
            env.names.projection_group()
        )),
        "{err}"
    );
    assert!(err.contains("member"), "{err}");
    // --wait-inactive waits for the group to empty, then applies.
    let mut waiting = Command::new(env!("CARGO_BIN_EXE_aliexpress"))
        .args(["replay", "--to-earliest", "--execute", "--wait-inactive", "60s"])
        .envs(env.bin_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("replay");
    // Once it says it is waiting for the group, the consumer leaves.
    let stderr = waiting.stderr.take().expect("stderr");
    let (said, heard) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        let mut all = String::new();
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = said.send(line.clone());
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let line = heard
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("replay reports that it waits for the group");
        if line.contains("waiting") {
            break;
        }
    }
    drop(p); // the consumer leaves the group
    let out = tokio::task::spawn_blocking(move || waiting.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let err = reader.join().expect("reader");
    assert!(out.status.success(), "{err}");
    assert!(err.contains("waiting"), "it did wait");
    assert!(committed(env, &env.names.projection_group())
        .await
        .iter()
        .all(|c| c.is_none_or(|o| o == 0)));
}

#[tokio::test(flavor = "multi_thread")]
async fn shift_by_and_to_datetime_land_on_the_right_offsets() {
    let env = TestEnv::new().await;
    let topic = env.names.events_topic();
    // Ten messages on one partition (same key), five before a cut-off and five after.
    for i in 0..5 {
        env.produce(&topic, "k", format!("{{\"i\":{i}}}").as_bytes()).await;
    }
    // The cut-off lies strictly after the first five records' timestamps and before the next.
    let first = env.read_topic(&topic, 5, Duration::from_secs(20)).await;
    let last_ms = first
        .iter()
        .filter_map(|m| m.timestamp().to_millis())
        .max()
        .expect("timestamps");
    let cut = chrono::DateTime::from_timestamp_millis(last_ms + 1).expect("time");
    assert!(
        wait_until(Duration::from_secs(5), || async move {
            chrono::Utc::now() > cut + chrono::Duration::milliseconds(1)
        })
        .await
    );
    for i in 5..10 {
        env.produce(&topic, "k", format!("{{\"i\":{i}}}").as_bytes()).await;
    }
    let msgs = env.read_topic(&topic, 10, Duration::from_secs(20)).await;
    let part = msgs[0].partition();
    let group = format!("{}manual", env.names.projection_group());
    let p = part.to_string();
    let commit = |offset: i64| {
        let c = aliexpress::ops::groups::client(
            &aliexpress::bus::KafkaConnection::from_settings(&env.infra.kafka).expect("kafka settings"),
            &group,
        )
        .expect("client");
        let mut tpl = rdkafka::TopicPartitionList::new();
        tpl.add_partition_offset(&topic, part, rdkafka::Offset::Offset(offset))
            .expect("tpl");
        c.commit(&tpl, CommitMode::Sync).expect("commit");
    };
    let replay = |extra: &[&str]| {
        let mut args = vec!["replay", "--group", group.as_str(), "--partitions", p.as_str()];
        args.extend_from_slice(extra);
        bin(&env, &args)
    };
    let shift = replay(&["--shift-by", "-3", "--execute"]);
    assert_eq!(shift.status.code(), Some(2), "no committed offset yet: an error");
    commit(8);
    let shift = replay(&["--shift-by", "-3", "--execute"]);
    assert!(shift.status.success(), "{}", String::from_utf8_lossy(&shift.stderr));
    let c = committed(&env, &group).await;
    assert_eq!(c[part as usize], Some(5));
    let clamp = replay(&["--shift-by", "-100"]);
    assert!(stdout(&clamp).contains("clamped to 0"), "{}", stdout(&clamp));

    let ts = cut.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let dt = replay(&["--to-datetime", &ts, "--execute"]);
    assert!(dt.status.success(), "{}", String::from_utf8_lossy(&dt.stderr));
    assert_eq!(committed(&env, &group).await[part as usize], Some(5));
    let kafka_form = cut.format("%Y-%m-%dT%H:%M:%S%.3f").to_string();
    let dt2 = replay(&["--to-datetime", &kafka_form]);
    assert!(
        stdout(&dt2).lines().any(|l| l.split_whitespace().nth(4) == Some("5")),
        "{}",
        stdout(&dt2)
    );
    let future = replay(&["--to-datetime", "2099-01-01T00:00:00Z"]);
    assert!(stdout(&future).contains("log end"), "{}", stdout(&future));
    let months = bin(&env, &["replay", "--group", &group, "--by-duration", "P1M"]);
    assert_eq!(months.status.code(), Some(2));

    // Export and re-import a plan.
    let file = std::env::temp_dir().join(format!("{}plan.csv", env.names.index_alias()));
    let f = file.to_string_lossy().to_string();
    let exp = replay(&["--to-earliest", "--export", &f]);
    assert!(exp.status.success());
    let imp = bin(&env, &["replay", "--group", &group, "--from-file", &f, "--execute"]);
    assert!(imp.status.success(), "{}", String::from_utf8_lossy(&imp.stderr));
    assert_eq!(committed(&env, &group).await[part as usize], Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_reset_with_the_stock_kafka_tool_is_honoured_by_our_consumer() {
    let (app, _) = projected_catalog(2).await;
    let env = &app.env;
    let wrapper = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/bin/kafka-consumer-groups");
    let out = Command::new(wrapper)
        .args([
            "--bootstrap-server",
            &env.infra.kafka.bootstrap_servers,
            "--group",
            &env.names.projection_group(),
            "--topic",
            &env.names.events_topic(),
            "--reset-offsets",
            "--to-earliest",
            "--execute",
        ])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut p = env.projector(None, None).await;
    assert_eq!(env.consume_until_idle(&mut p).await.received, 4);
    drop(p);
    let described = bin(
        env,
        &["consumer-groups", "describe", "--group", &env.names.projection_group()],
    );
    let text = stdout(&described);
    assert!(
        text.contains("LOG-END-OFFSET") && text.contains("has no active members"),
        "{text}"
    );
    // The stock tool reports the same offsets (topic, partition, current, log end, lag).
    let stock = Command::new(wrapper)
        .args([
            "--bootstrap-server",
            &env.infra.kafka.bootstrap_servers,
            "--group",
            &env.names.projection_group(),
            "--describe",
        ])
        .output()
        .expect("runs");
    let rows = |t: &str, topic: &str| -> Vec<Vec<String>> {
        let mut v: Vec<Vec<String>> = t
            .lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .filter(|f| f.len() >= 6 && f[1] == topic)
            .map(|f| f[1..6].to_vec())
            .collect();
        v.sort();
        v
    };
    let ours = rows(&text, &env.names.events_topic());
    assert!(!ours.is_empty(), "{text}");
    assert_eq!(
        ours,
        rows(&String::from_utf8_lossy(&stock.stdout), &env.names.events_topic()),
        "{}",
        String::from_utf8_lossy(&stock.stdout)
    );
    let listed = stdout(&bin(env, &["consumer-groups", "list"]));
    assert!(listed.lines().any(|l| l == env.names.projection_group()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_redriven_after_a_fix_is_projected_once() {
    let (app, ids) = projected_catalog(1).await;
    let env = &app.env;
    let index = format!("{}_v1", env.names.index_alias());
    let block = |on: bool| {
        let s = env.search();
        let index = index.clone();
        async move {
            let (index, body) = (index.as_str(), &json!({"index.blocks.write": on}));
            let resp = s
                .call(|os| async move {
                    os.indices()
                        .put_settings(opensearch::indices::IndicesPutSettingsParts::Index(&[index]))
                        .body(body)
                        .send()
                        .await
                })
                .await
                .expect("settings");
            aliexpress::search::client::accepted(resp).await.expect("settings");
        }
    };
    // A broken index (write block) rejects the document: it is dead-lettered with OpenSearch's reason.
    block(true).await;
    app.post(&format!("/api/products/{}/stock", ids[0]), json!({"set": 42}))
        .await;
    env.drain_outbox().await;
    let mut p = env.projector(None, None).await;
    assert_eq!(env.consume_until_idle(&mut p).await.dead_lettered, 1);
    let listed = bin(env, &["dlq", "list"]);
    assert!(
        stdout(&listed).contains("document_rejected") && stdout(&listed).contains(&ids[0]),
        "{}",
        stdout(&listed)
    );
    let show = bin(
        env,
        &[
            "dlq",
            "show",
            stdout(&listed)
                .lines()
                .nth(1)
                .and_then(|l| l.split_whitespace().next())
                .expect("at"),
        ],
    );
    assert!(
        stdout(&show).contains("header dlq.error.class: document_rejected"),
        "{}",
        stdout(&show)
    );
    // The fix: lift the block. Then redrive.
    block(false).await;
    let dry = bin(env, &["dlq", "redrive", "--all"]);
    assert!(
        stdout(&dry).contains("1 record(s) would be redriven"),
        "{}",
        stdout(&dry)
    );
    let run = bin(env, &["dlq", "redrive", "--all", "--execute"]);
    assert!(
        stdout(&run).contains("1 record(s) redriven"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        env.count("dlq_redrives WHERE actor LIKE 'cli:%@%'").await,
        1,
        "the command line's redrive records its user and host"
    );
    let again = bin(env, &["dlq", "redrive", "--all", "--execute"]);
    assert!(
        stdout(&again).contains("0 record(s) redriven"),
        "running it twice redrives nothing twice"
    );
    let o = env.consume_until_idle(&mut p).await;
    assert_eq!(
        (o.received, o.applied),
        (1, 1),
        "the redriven message is projected once"
    );
    assert_eq!(env.document(&ids[0]).await.expect("doc")["_source"]["stock"], 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_health_backlog_lag_and_dead_letters() {
    let (app, _) = projected_catalog(1).await;
    let out = bin(&app.env, &["status"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = stdout(&out);
    for s in [
        "== health",
        "database",
        "ok (",
        "== outbox",
        "pending 0",
        "== consumer groups",
        "OK",
        "== dead letters",
    ] {
        assert!(text.contains(s), "{s} in {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_json_is_one_object_scripts_can_read_and_a_down_dependency_exits_1() {
    let (app, _) = projected_catalog(1).await;
    let out = bin(&app.env, &["status", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    assert_eq!(v["schema_version"], 1);
    assert!(
        v["sampled_at"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok()),
        "{v}"
    );
    assert_eq!(v["healthy"], true);
    let health = v["health"].as_array().expect("health");
    assert_eq!(health.len(), 4);
    assert!(health.iter().all(|c| c["ok"] == true), "{v}");
    assert_eq!(v["outbox"]["pending"], 0);
    assert_eq!(v["groups"][0]["group"], app.env.names.projection_group());
    assert_eq!(v["groups"][0]["verdict"], "OK");
    assert_eq!(
        (&v["groups"][0]["trend"], &v["groups"][0]["eta_secs"]),
        (&json!("caught up"), &json!(0.0)),
        "{v}"
    );
    assert_eq!(v["dead_letters"].as_array().map(Vec::len), Some(2));

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aliexpress"))
        .envs(app.env.bin_env())
        .env("OPENSEARCH_URL", "http://127.0.0.1:1")
        .args(["status", "--json"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    let os = v["health"]
        .as_array()
        .expect("health")
        .iter()
        .find(|c| c["name"] == "opensearch")
        .cloned();
    assert_eq!(os.map(|c| c["ok"].clone()), Some(Value::Bool(false)));
    assert_eq!(v["healthy"], false);
}

/// Runs `status ARGS --watch 1` until `frames` of its output lines are seen (or 30 s pass),
/// then interrupts it as Ctrl-C would; returns the lines and whether it exited 0.
fn watch_status(env: &TestEnv, args: &[&str], frames: usize, is_frame: fn(&str) -> bool) -> (Vec<String>, bool) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_aliexpress"))
        .envs(env.bin_env())
        .arg("status")
        .args(args)
        .args(["--watch", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("runs");
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines = Vec::new();
    while lines.iter().filter(|l: &&String| is_frame(l)).count() < frames {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => break,
        }
    }
    let _ = Command::new("kill").args(["-INT", &child.id().to_string()]).status();
    let exited = child.wait().expect("exits");
    (lines, exited.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn status_watch_prints_a_sample_every_period_until_interrupted() {
    let env = TestEnv::new().await;
    let (lines, ok) = watch_status(&env, &["--json"], 2, |l| l.starts_with('{'));
    let samples: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON sample"))
        .collect();
    assert!(samples.len() >= 2, "two samples: {lines:?}");
    let at =
        |v: &Value| chrono::DateTime::parse_from_rfc3339(v["sampled_at"].as_str().expect("time")).expect("rfc3339");
    assert!(at(&samples[1]) > at(&samples[0]), "later samples: {lines:?}");
    assert!(samples
        .iter()
        .all(|v| v["schema_version"] == 1 && v["health"].is_array()));
    assert!(ok, "Ctrl-C ends the watch with exit 0");

    let (lines, ok) = watch_status(&env, &[], 2, |l| l == "== health");
    assert!(
        lines.iter().filter(|l| *l == "== health").count() >= 2,
        "two screens: {lines:?}"
    );
    assert!(ok, "Ctrl-C ends the watch with exit 0");
}

async fn alias_target(env: &TestEnv) -> Option<String> {
    aliexpress::search::index::alias_target(&env.search(), &env.names.index_alias())
        .await
        .expect("alias")
}

#[tokio::test(flavor = "multi_thread")]
async fn rebuild_swaps_the_alias_with_search_answering_throughout_and_rollback_swaps_back() {
    let (app, ids) = projected_catalog(3).await;
    let env = &app.env;
    let v1 = format!("{}_v1", env.names.index_alias());
    assert_eq!(alias_target(env).await.as_deref(), Some(v1.as_str()));

    // Search is hammered during the whole rebuild; every answer must be complete.
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, http, url) = (stop.clone(), app.http.clone(), app.url("/api/search"));
        tokio::spawn(async move {
            let (mut ok, mut bad) = (0, 0);
            while !stop.load(Ordering::Relaxed) {
                match http.get(&url).send().await {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap_or_default();
                        if v["total"] == 3 {
                            ok += 1
                        } else {
                            bad += 1
                        }
                    }
                    _ => bad += 1,
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            (ok, bad)
        })
    };
    let started = Instant::now();
    let first = Command::new(env!("CARGO_BIN_EXE_aliexpress"))
        .args(["replay", "--rebuild", "--grace", "4s"])
        .envs(env.bin_env())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rebuild");
    // A second run while the first holds the lock is refused, naming the run in progress.
    assert!(
        wait_until(Duration::from_secs(30), || async {
            env.count("index_rebuilds WHERE status = 'running'").await == 1
        })
        .await,
        "the first rebuild is running"
    );
    let second = bin(env, &["replay", "--rebuild"]);
    assert_eq!(
        second.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already in progress"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let status = tokio::task::spawn_blocking(move || first.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    stop.store(true, Ordering::Relaxed);
    let (ok, bad) = prober.await.expect("prober");
    assert!(
        ok > 10 && bad == 0,
        "search answered throughout: {ok} complete, {bad} incomplete, {:?}",
        started.elapsed()
    );
    let v2 = format!("{}_v2", env.names.index_alias());
    assert_eq!(alias_target(env).await.as_deref(), Some(v2.as_str()));
    assert!(
        stdout(&status).contains("from topic with 3 documents"),
        "{}",
        stdout(&status)
    );

    // A write after the swap lands in the new index through the live projection.
    app.post(&format!("/api/products/{}/stock", ids[0]), json!({"set": 9}))
        .await;
    env.drain_outbox().await;
    let mut p = env.projector(None, None).await;
    env.consume_until_idle(&mut p).await;
    assert_eq!(env.document(&ids[0]).await.expect("doc")["_source"]["stock"], 9);

    let back = bin(env, &["replay", "--rollback"]);
    assert!(back.status.success(), "{}", String::from_utf8_lossy(&back.stderr));
    assert_eq!(alias_target(env).await.as_deref(), Some(v1.as_str()));

    // From Postgres, when asked (or when the topic lost history).
    let pg = bin(env, &["replay", "--rebuild", "--from-postgres", "--grace", "1s"]);
    assert!(pg.status.success(), "{}", String::from_utf8_lossy(&pg.stderr));
    assert!(
        stdout(&pg).contains("from postgres with 3 documents"),
        "{}",
        stdout(&pg)
    );
    assert_eq!(env.document(&ids[0]).await.expect("doc")["_source"]["stock"], 9);
}

/// `trace --json`'s answer and exit code.
fn trace(env: &TestEnv, id: &str) -> (Value, Option<i32>) {
    let out = bin(env, &["trace", id, "--json"]);
    let v =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| json!({"stderr": String::from_utf8_lossy(&out.stderr)}));
    (v, out.status.code())
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_names_the_hop_a_product_waits_at_and_says_ok_once_it_is_searchable() {
    let app = TestApp::spawn().await;
    let env = &app.env;
    let p = app.create_product("TRACE-1", "Traced lamp").await;
    let id = p["id"].as_str().expect("id");

    // Committed with its outbox row, not published yet.
    let (t, code) = trace(env, id);
    assert_eq!(code, Some(1), "{t}");
    assert_eq!(t["verdict"]["state"], "waiting", "{t}");
    assert!(
        t["verdict"]["text"]
            .as_str()
            .expect("text")
            .contains("not published yet"),
        "{t}"
    );
    let hops: Vec<&str> = t["hops"]
        .as_array()
        .expect("hops")
        .iter()
        .filter_map(|h| h["hop"].as_str())
        .collect();
    assert_eq!(&hops[..3], ["write", "postgres", "outbox"], "{t}");
    assert!(
        t["hops"][0]["detail"]
            .as_str()
            .expect("detail")
            .contains("ProductCreated by token:"),
        "{t}"
    );

    // Published: found on its partition by its event id, the projection not past it.
    assert_eq!(env.drain_outbox().await, 1);
    let (t, code) = trace(env, id);
    assert_eq!(code, Some(1));
    let record = &t["facts"]["record"];
    assert!(record["offset"].is_i64(), "the record was found: {t}");
    let waiting = t["verdict"]["text"].as_str().expect("text");
    assert!(
        waiting.starts_with(&format!("waiting: partition {} lag", record["partition"])),
        "{t}"
    );

    // Projected: ok, with the publish delay.
    let mut projector = env.projector(None, None).await;
    env.consume_until_idle(&mut projector).await;
    let (t, code) = trace(env, id);
    assert_eq!(code, Some(0), "{t}");
    assert!(
        t["verdict"]["text"]
            .as_str()
            .expect("text")
            .starts_with("ok: searchable at version 1, on Kafka"),
        "{t}"
    );
    assert_eq!(
        (
            t["facts"]["document_version"].as_i64(),
            t["facts"]["cache_version"].as_i64()
        ),
        (Some(1), Some(1))
    );

    // Another id: missing; not an id: a usage error.
    let (t, code) = trace(env, &uuid::Uuid::now_v7().to_string());
    assert_eq!(
        (code, t["verdict"]["state"].as_str()),
        (Some(1), Some("missing")),
        "{t}"
    );
    assert_eq!(bin(env, &["trace", "not-an-id"]).status.code(), Some(2));
}

/// Puts product `id`'s cache entry back to `json` at version 1, behind the cache's versioned
/// write script (a stale entry, as a lost write leaves it).
async fn put_back_in_cache(env: &TestEnv, id: &str, json: &str) {
    let mut redis = redis::Client::open(env.infra.redis.url.expose())
        .expect("redis")
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let key = env.names.product_cache_key(&id.parse().expect("uuid"));
    let _: () = redis::cmd("HSET")
        .arg(&key)
        .arg("d")
        .arg(json)
        .arg("v")
        .arg(1)
        .query_async(&mut redis)
        .await
        .expect("hset");
}

/// Runs one SQL statement on the test database.
async fn sql(env: &TestEnv, statement: &str) {
    use diesel_async::RunQueryDsl;
    let mut c = env.pool.get().await.expect("conn");
    diesel::sql_query(statement).execute(&mut c).await.expect("sql");
}

#[tokio::test(flavor = "multi_thread")]
async fn trace_says_stuck_for_a_parked_row_and_a_stale_cache_and_dead_lettered_for_a_refused_event() {
    let app = TestApp::spawn().await;
    let env = &app.env;
    let mut projector = env.projector(None, None).await;

    // A parked outbox row: stuck, with the relay's last error.
    let parked = app.create_product("TRACE-PARK", "Parked lamp").await;
    let parked = parked["id"].as_str().expect("id").to_owned();
    sql(env, &format!(
        "UPDATE outbox SET parked_at = now(), attempts = 5, last_error = 'Broker: Message size too large' WHERE aggregate_id = '{parked}'"
    ))
    .await;
    let (t, code) = trace(env, &parked);
    assert_eq!(code, Some(1));
    let text = t["verdict"]["text"].as_str().expect("text");
    assert!(
        text.starts_with("stuck: outbox row")
            && text.contains("parked after 5 attempts: Broker: Message size too large"),
        "{t}"
    );

    // An event the projection cannot use: dead-lettered, with its class and offset.
    let refused = app.create_product("TRACE-DLQ", "Refused lamp").await;
    let refused = refused["id"].as_str().expect("id").to_owned();
    sql(
        env,
        &format!("UPDATE outbox SET payload = '{{\"not\": \"an event\"}}' WHERE aggregate_id = '{refused}'"),
    )
    .await;
    // A healthy product beside them, later made stale in Redis.
    let fine = app.create_product("TRACE-STALE", "Stale lamp").await;
    let fine = fine["id"].as_str().expect("id").to_owned();
    let v1 = env
        .cache()
        .get_document(fine.parse().expect("uuid"))
        .await
        .expect("redis")
        .expect("cached")
        .json;
    let r = app
        .http
        .patch(app.url(&format!("/api/products/{fine}")))
        .bearer_auth(crate::helpers::TOKEN)
        .json(&json!({"title": "Fresh lamp"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 200);
    env.drain_outbox().await;
    env.consume_until_idle(&mut projector).await;
    let (t, code) = trace(env, &refused);
    assert_eq!(code, Some(1));
    let text = t["verdict"]["text"].as_str().expect("text");
    assert!(text.starts_with("dead-lettered: invalid_envelope at offset"), "{t}");

    // The index current, Redis put back to version 1: stuck past the projection.
    let (t, code) = trace(env, &fine);
    assert_eq!(code, Some(0), "healthy before the cache is spoiled: {t}");
    put_back_in_cache(env, &fine, &v1).await;
    let (t, code) = trace(env, &fine);
    assert_eq!(code, Some(1));
    let text = t["verdict"]["text"].as_str().expect("text");
    assert!(
        text.starts_with("stuck: the projection passed offset")
            && text.contains("OpenSearch holds version 2 and Redis 1"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_finds_a_deleted_document_a_stale_index_version_and_a_stale_cache_entry_and_repairs_exactly_those() {
    let app = TestApp::spawn().await;
    let env = &app.env;
    let mut projector = env.projector(None, None).await;
    let mut ids = Vec::new();
    for n in 0..4 {
        let p = app.create_product(&format!("RECON-{n}"), "Reconciled lamp").await;
        ids.push(p["id"].as_str().expect("id").to_owned());
    }
    // The fourth product at version 2, its cache entry kept at version 1 below.
    let old = env
        .cache()
        .get_document(ids[3].parse().expect("uuid"))
        .await
        .expect("redis")
        .expect("cached")
        .json;
    let r = app
        .http
        .patch(app.url(&format!("/api/products/{}", ids[3])))
        .bearer_auth(crate::helpers::TOKEN)
        .json(&json!({"title": "Brighter lamp"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 200);
    env.drain_outbox().await;
    env.consume_until_idle(&mut projector).await;
    let run = |args: &[&str]| {
        let mut a = vec!["reconcile", "--json"];
        a.extend_from_slice(args);
        let out = bin(env, &a);
        let report: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| json!({"stderr": String::from_utf8_lossy(&out.stderr)}));
        (report, out.status.code())
    };
    let (clean, code) = run(&["--all"]);
    assert_eq!(
        (code, clean["drift"].as_array().map(Vec::len)),
        (Some(0), Some(0)),
        "a clean run finds nothing: {clean}"
    );
    assert_eq!(clean["compared"], 4);

    // Drift: a document deleted, a document holding an older state, a cache entry put back.
    // (Written within the projection's version line, external_gte at the product's version,
    // as a lost write or a restored index leaves it; a write outside that line is for
    // `replay --rebuild`.)
    use opensearch::params::VersionType;
    let search = env.search();
    let alias = env.names.index_alias();
    let (a, i0) = (alias.as_str(), ids[0].as_str());
    let r = search
        .call(|os| async move {
            os.delete(opensearch::DeleteParts::IndexId(a, i0))
                .version(1)
                .version_type(VersionType::ExternalGte)
                .send()
                .await
        })
        .await
        .expect("delete");
    assert!(r.status_code().is_success(), "delete: {}", r.status_code());
    let mut doc = env.document(&ids[1]).await.expect("doc")["_source"].clone();
    doc["version"] = json!(0);
    let i1 = ids[1].as_str();
    let r = search
        .call(|os| {
            let d = doc.clone();
            async move {
                os.index(opensearch::IndexParts::IndexId(a, i1))
                    .version(1)
                    .version_type(VersionType::ExternalGte)
                    .body(d)
                    .send()
                    .await
            }
        })
        .await
        .expect("index");
    assert!(r.status_code().is_success(), "index: {}", r.status_code());
    put_back_in_cache(env, &ids[3], &old).await;

    let (found, code) = run(&["--all"]);
    assert_eq!(code, Some(1), "{found}");
    let drift: Vec<(String, String, String)> = found["drift"]
        .as_array()
        .expect("drift")
        .iter()
        .map(|d| {
            (
                d["product_id"].as_str().unwrap_or("").to_owned(),
                d["store"].as_str().unwrap_or("").to_owned(),
                d["kind"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let mut expected = vec![
        (ids[0].clone(), "opensearch".to_owned(), "missing".to_owned()),
        (ids[1].clone(), "opensearch".to_owned(), "stale".to_owned()),
        (ids[3].clone(), "redis".to_owned(), "stale".to_owned()),
    ];
    let mut got = drift.clone();
    got.sort();
    expected.sort();
    assert_eq!(got, expected, "{found}");

    // Repair: one snapshot event each, audited; after the projection, nothing drifts.
    let (repaired, _) = run(&["--all", "--repair"]);
    assert_eq!(repaired["repaired"].as_array().map(Vec::len), Some(3), "{repaired}");
    assert_eq!(env.count("reconcile_repairs WHERE actor LIKE 'cli:%'").await, 3);
    assert_eq!(env.count("outbox WHERE event_type = 'ProductSnapshot'").await, 3);
    assert_eq!(env.drain_outbox().await, 3);
    env.consume_until_idle(&mut projector).await;
    let (after, code) = run(&["--all"]);
    assert_eq!(code, Some(0), "repaired: {after}");
    assert_eq!(env.count("product_history").await, 5, "a snapshot is no new version");
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_triage_groups_dead_letters_by_cause_and_redrives_one_cause() {
    let env = TestEnv::new().await;
    let topic = env.names.events_topic();
    // Two letters of one cause (malformed JSON at different places, other products) and one of
    // another (an unknown event type).
    let (a, b, c) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    env.produce(&topic, &a.to_string(), b"{\"event_type\": ").await;
    env.produce(
        &topic,
        &b.to_string(),
        b"{\"event_type\": \"ProductCreated\", \"schema_version\": 2,",
    )
    .await;
    env.produce(
        &topic,
        &c.to_string(),
        br#"{"event_type": "Nope", "schema_version": 2}"#,
    )
    .await;
    let mut p = env.projector(None, None).await;
    assert_eq!(env.consume_until_idle(&mut p).await.dead_lettered, 3);

    let out = bin(&env, &["dlq", "triage", "--json"]);
    let groups: Value = serde_json::from_slice(&out.stdout).expect("json");
    let groups = groups.as_array().expect("groups");
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(
        (groups[0]["count"].as_u64(), groups[0]["products"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(groups[0]["error_class"], "invalid_json");
    assert!(
        !groups[0]["reason"]
            .as_str()
            .expect("reason")
            .chars()
            .any(|c| c.is_ascii_digit()),
        "particulars out: {}",
        groups[0]
    );
    assert_eq!(
        (groups[1]["count"].as_u64(), groups[1]["error_class"].as_str()),
        (Some(1), Some("unknown_event_type"))
    );
    let screen = stdout(&bin(&env, &["dlq", "triage"]));
    assert!(screen.contains("2 cause(s), 3 record(s)"), "{screen}");

    let fp = groups[0]["fingerprint"].as_str().expect("fingerprint");
    let run = bin(&env, &["dlq", "redrive", "--fingerprint", fp, "--execute"]);
    assert!(
        stdout(&run).contains("2 record(s) redriven"),
        "{}{}",
        stdout(&run),
        String::from_utf8_lossy(&run.stderr)
    );
    let again = bin(&env, &["dlq", "redrive", "--all"]);
    assert!(
        stdout(&again).contains("1 record(s) would be redriven"),
        "the other cause is left: {}",
        stdout(&again)
    );
    assert_eq!(
        bin(&env, &["dlq", "redrive", "--fingerprint", "000000000000"])
            .status
            .code(),
        Some(2)
    );
}
