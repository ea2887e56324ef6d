use std::collections::{HashMap, HashSet};
use std::process::{Command, Stdio};
use std::time::Duration;

use aliexpress::bus::producer::{self, ProducerSettings};
use aliexpress::store::outbox_slices;
use aliexpress::worker::outbox_relay::{OutboxRelay, RelaySettings};
use diesel_async::RunQueryDsl;
use rand::Rng;
use rdkafka::Message;
use serde_json::json;

use crate::helpers::{header, versions, TestApp, TestEnv};

fn bin(env: &TestEnv) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aliexpress"));
    c.envs(env.bin_env());
    c
}

/// Inserts `products` x `versions` synthetic events (about 1 KB each), interleaved.
pub(crate) async fn seed_outbox(env: &TestEnv, products: usize, versions_each: usize) -> usize {
    let mut c = env.pool.get().await.expect("conn");
    diesel::sql_query(format!(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload, headers) \
         SELECT gen_random_uuid(), 'product', p.id, v, '{topic}', p.id::text, 'ProductStockAdjusted', 1, \
                jsonb_build_object('aggregate_id', p.id, 'aggregate_version', v, 'pad', repeat('x', 900)), \
                jsonb_build_object('aggregate_version', v::text) \
         FROM generate_series(1, {versions_each}) v, \
              (SELECT gen_random_uuid() AS id FROM generate_series(1, {products})) p \
         ORDER BY v, p.id",
        topic = env.names.events_topic()
    ))
    .execute(&mut c)
    .await
    .expect("seed")
}

/// Checks the first delivery of every event is in version order per product; returns
/// (distinct events, duplicates).
pub(crate) fn assert_per_product_order(pairs: &[(String, i64)]) -> (usize, usize) {
    let mut seen: HashSet<(String, i64)> = HashSet::new();
    let mut last_first: HashMap<String, i64> = HashMap::new();
    let mut dups = 0;
    for (id, v) in pairs {
        if !seen.insert((id.clone(), *v)) {
            dups += 1;
            continue;
        }
        let prev = last_first.insert(id.clone(), *v).unwrap_or(0);
        assert_eq!(*v, prev + 1, "product {id}: first delivery of v{v} came after v{prev}");
    }
    (seen.len(), dups)
}

#[tokio::test(flavor = "multi_thread")]
async fn one_shot_publishes_exactly_the_pending_rows_in_order_and_a_second_run_publishes_nothing() {
    let app = TestApp::spawn().await;
    for i in 0..3 {
        let p = app.create_product(&format!("SKU-O{i}"), "Widget").await;
        let id = p["id"].as_str().expect("id");
        for d in 1..=3 {
            app.post(&format!("/api/products/{id}/stock"), json!({"delta": d}))
                .await;
        }
    }
    let out = bin(&app.env).arg("process-outbox").output().expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Published 12 events"), "{stdout}");
    assert_eq!(app.env.count("outbox WHERE published_at IS NULL").await, 0);

    let msgs = app
        .env
        .read_topic(&app.env.names.events_topic(), 12, Duration::from_secs(30))
        .await;
    assert_eq!(msgs.len(), 12);
    let (distinct, dups) = assert_per_product_order(&versions(&msgs));
    assert_eq!((distinct, dups), (12, 0));
    for m in &msgs {
        for h in [
            "event_id",
            "event_type",
            "schema_version",
            "aggregate_version",
            "correlation_id",
        ] {
            assert!(header(m, h).is_some(), "header {h} missing");
        }
        let v: serde_json::Value = serde_json::from_slice(m.payload().expect("payload")).expect("json");
        assert_eq!(
            std::str::from_utf8(m.key().expect("key")).expect("utf8"),
            v["aggregate_id"].as_str().expect("id")
        );
    }

    let again = bin(&app.env).arg("process-outbox").output().expect("runs");
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("Nothing pending"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_that_commits_late_with_a_lower_id_is_still_published() {
    let env = TestEnv::new().await;
    let mut late = aliexpress::store::pool::connect(env.infra.database.url.expose(), Duration::from_secs(30))
        .await
        .expect("conn");
    let insert = |id: uuid::Uuid| {
        format!(
            "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload) \
             VALUES (gen_random_uuid(), 'product', '{id}', 1, '{t}', '{id}', 'ProductCreated', 1, \
                     jsonb_build_object('aggregate_id', '{id}'::text, 'aggregate_version', 1))",
            t = env.names.events_topic()
        )
    };
    let (a, b) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    diesel::sql_query("BEGIN").execute(&mut late).await.expect("begin");
    diesel::sql_query(insert(a))
        .execute(&mut late)
        .await
        .expect("insert a (lower id)");
    let mut early = env.pool.get().await.expect("conn");
    diesel::sql_query(insert(b))
        .execute(&mut early)
        .await
        .expect("insert b (higher id, commits first)");
    assert_eq!(env.drain_outbox().await, 1, "only the committed row is visible");
    diesel::sql_query("COMMIT").execute(&mut late).await.expect("commit a");
    assert_eq!(
        env.drain_outbox().await,
        1,
        "the late row with the lower id is not skipped"
    );
    assert_eq!(env.count("outbox WHERE published_at IS NULL").await, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn killing_the_publisher_at_random_points_loses_nothing_and_keeps_per_product_order() {
    let env = TestEnv::new().await;
    let total = seed_outbox(&env, 100, 50).await;
    let mut rng = rand::rng();
    let mut kills = 0;
    for round in 0..40 {
        let mut child = bin(&env)
            .args(["process-outbox", "--batch-size", "23"])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        if round < 6 {
            tokio::time::sleep(Duration::from_millis(rng.random_range(100..700))).await;
            if child.try_wait().expect("wait").is_none() {
                child.kill().expect("SIGKILL");
                kills += 1;
            }
            let _ = child.wait();
        } else {
            let status = child.wait().expect("wait");
            assert!(status.success());
            if env.count("outbox WHERE published_at IS NULL").await == 0 {
                break;
            }
        }
    }
    assert!(
        kills >= 3,
        "the publisher was killed mid-run at least 3 times ({kills})"
    );
    assert_eq!(
        env.count("outbox WHERE published_at IS NULL").await,
        0,
        "no row left pending"
    );
    let msgs = env
        .read_topic(&env.names.events_topic(), total, Duration::from_secs(60))
        .await;
    let (distinct, dups) = assert_per_product_order(&versions(&msgs));
    assert_eq!(distinct, total, "every event reached Kafka at least once");
    eprintln!("crash test: {total} events, {kills} kills, {dups} duplicates");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_publishers_at_once_keep_per_product_order() {
    let env = TestEnv::new().await;
    let total = seed_outbox(&env, 30, 40).await;
    let spawn = || {
        bin(&env)
            .args(["process-outbox", "--batch-size", "50"])
            .env("RUST_LOG", "warn,aliexpress::worker::outbox_relay=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let (a, b) = (spawn(), spawn());
    let (oa, ob) = (a.wait_with_output().expect("a"), b.wait_with_output().expect("b"));
    // What each run said (summary and slice moves), for a failure.
    let said = [&oa, &ob]
        .iter()
        .map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        })
        .collect::<Vec<_>>()
        .join("--- the other run:\n");
    assert!(oa.status.success() && ob.status.success(), "{said}");
    assert_eq!(
        env.count("outbox WHERE published_at IS NULL").await,
        0,
        "both runs exited with rows left:\n{said}"
    );
    let msgs = env
        .read_topic(&env.names.events_topic(), total, Duration::from_secs(60))
        .await;
    let (distinct, _dups) = assert_per_product_order(&versions(&msgs));
    assert_eq!(distinct, total);
}

/// A one-shot run exits only once no row it could publish now is left: it takes a slice
/// nobody holds that has rows, beyond its share if need be, and leaves the slices a live relay
/// holds to that relay. The other relay here is alive and holds one slice, as a relay is right
/// after letting go of its extras. (Two one-shot runs at once left rows behind: one let go of
/// extras, counting the other, after the other had finished its own slices and was exiting.)
#[tokio::test(flavor = "multi_thread")]
async fn a_one_shot_run_publishes_the_slices_left_free_and_leaves_a_live_relays_own_to_it() {
    let env = TestEnv::new().await;
    seed_outbox(&env, 60, 3).await;
    let mut c = env.pool.get().await.expect("conn");
    // Rows only in slices 32-63: beside one other relay, the run's share is slices 0-31.
    diesel::sql_query("DELETE FROM outbox WHERE slice < 32")
        .execute(&mut c)
        .await
        .expect("delete");
    let theirs = i16::try_from(env.scalar("SELECT max(slice) FROM outbox").await).expect("slice");
    let mut other = aliexpress::store::pool::connect(env.infra.database.url.expose(), Duration::from_secs(30))
        .await
        .expect("conn");
    outbox_slices::join(&mut other).await.expect("join");
    assert!(outbox_slices::try_take(&mut other, theirs, "elsewhere:-:1:abcdef")
        .await
        .expect("take")
        .is_some());
    let (left_free, held) = (
        env.count(&format!("outbox WHERE slice <> {theirs}")).await,
        env.count(&format!("outbox WHERE slice = {theirs}")).await,
    );
    assert!(left_free > 0 && held > 0);

    let out = bin(&env)
        .args(["process-outbox", "--batch-size", "50"])
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains(&format!("Published {left_free} events")), "{stdout}");
    assert!(
        stdout.contains(&format!("{held} pending rows are in slices other live relays own")),
        "{stdout}"
    );
    assert_eq!(
        env.count("outbox WHERE published_at IS NULL").await,
        held,
        "only the live relay's rows wait: {stdout}"
    );

    // That relay lets go and leaves: the next run publishes its rows.
    outbox_slices::release(&mut other, theirs).await.expect("release");
    drop(other);
    let again = bin(&env).arg("process-outbox").output().expect("runs");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert!(stdout.contains(&format!("Published {held} events")), "{stdout}");
    assert_eq!(env.count("outbox WHERE published_at IS NULL").await, 0);
}

/// Rows waiting for a retry after a failed attempt are not due: a one-shot run publishes the
/// rest and says how many wait and when the first is due.
#[tokio::test(flavor = "multi_thread")]
async fn a_one_shot_run_reports_the_rows_waiting_for_a_retry() {
    let env = TestEnv::new().await;
    let (x, y) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    insert_rows(&env, &[(x, 1, 10), (x, 2, 10), (y, 1, 10)]).await;
    let mut c = env.pool.get().await.expect("conn");
    diesel::sql_query(format!(
        "UPDATE outbox SET attempts = 1, last_error = 'boom', next_attempt_at = now() + interval '1 hour' \
         WHERE aggregate_id = '{x}' AND aggregate_version = 1"
    ))
    .execute(&mut c)
    .await
    .expect("fail x1");
    let out = bin(&env).arg("process-outbox").output().expect("runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("Published 1 events"), "{stdout}");
    assert!(
        stdout.contains("2 rows wait for a retry") && stdout.contains("the next is due at"),
        "x1 in its backoff, x2 behind it: {stdout}"
    );
    assert!(!stdout.contains("other live relays"), "{stdout}");
    assert_eq!(env.count("outbox WHERE published_at IS NULL").await, 2);
}

/// Outbox rows (product, version, payload padding in bytes) in this order.
async fn insert_rows(env: &TestEnv, rows: &[(uuid::Uuid, i64, usize)]) {
    let mut c = env.pool.get().await.expect("conn");
    let t = env.names.events_topic();
    for (id, v, pad) in rows {
        diesel::sql_query(format!(
            "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload) \
             VALUES (gen_random_uuid(), 'product', '{id}', {v}, '{t}', '{id}', 'ProductCreated', 1, \
                     jsonb_build_object('aggregate_id', '{id}'::text, 'aggregate_version', {v}, 'pad', repeat('x', {pad})))"
        ))
        .execute(&mut c)
        .await
        .expect("insert");
    }
}

/// A relay on `env` with these batch and retry settings, holding the relay lock.
async fn locked_relay(env: &TestEnv, batch_size: i64, max_attempts: i32, retry_base: Duration) -> OutboxRelay {
    let p = producer::build(
        &aliexpress::bus::KafkaConnection::from_settings(&env.infra.kafka).expect("kafka settings"),
        &ProducerSettings::default(),
    )
    .expect("producer");
    let settings = RelaySettings {
        batch_size,
        max_attempts,
        retry_base,
        ..Default::default()
    };
    let mut relay = OutboxRelay::new(env.infra.database.url.expose().to_owned(), p, settings);
    assert!(relay.try_acquire().await.expect("lock"));
    relay
}

#[tokio::test(flavor = "multi_thread")]
async fn a_row_too_large_to_publish_is_retried_then_parked_without_blocking_others() {
    let env = TestEnv::new().await;
    let (x, y) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    insert_rows(&env, &[(x, 1, 2_000_000), (x, 2, 10), (y, 1, 10), (y, 2, 10)]).await;
    let mut relay = locked_relay(&env, 100, 2, Duration::ZERO).await;
    let first = relay.process_once().await.expect("batch");
    assert_eq!(
        (first.published, first.failed, first.held_back),
        (2, 1, 1),
        "y flows, x v2 waits behind x v1"
    );
    assert_eq!(
        env.count(&format!(
            "outbox WHERE aggregate_id = '{x}' AND aggregate_version = 1 AND attempts = 1 AND last_error IS NOT NULL"
        ))
        .await,
        1
    );
    let second = relay.process_once().await.expect("batch");
    assert_eq!(second.parked, 1);
    let third = relay.process_once().await.expect("batch");
    assert_eq!(third.published, 1, "once parked, the product's later events flow again");
    relay.release().await;
    assert_eq!(env.count("outbox WHERE parked_at IS NOT NULL").await, 1);

    let list = bin(&env).args(["outbox", "list", "--parked"]).output().expect("runs");
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(
        text.contains(&x.to_string()) && text.contains("1 parked row(s)"),
        "{text}"
    );
    let retry = bin(&env)
        .args(["outbox", "retry", "--all-parked"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&retry.stdout).contains("1 parked row(s) queued"));
    assert_eq!(
        env.count("outbox WHERE parked_at IS NULL AND published_at IS NULL AND attempts = 0")
            .await,
        1
    );
}

/// A product whose row failed in one batch has none of its later rows published by the next
/// batch while the failed row waits for its retry. (An attempt to claim the next batch while
/// the current one was delivered had to filter those rows out of it; this test caught that.)
#[tokio::test(flavor = "multi_thread")]
async fn a_later_batch_never_publishes_past_a_row_waiting_for_its_retry() {
    let env = TestEnv::new().await;
    let (x, y) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
    // Batches of two: [x1 (too large), y1], then x2 must wait while y2 goes.
    insert_rows(&env, &[(x, 1, 2_000_000), (y, 1, 10), (x, 2, 10), (y, 2, 10)]).await;
    let mut relay = locked_relay(&env, 2, 5, Duration::from_secs(60)).await;
    let first = relay.process_once().await.expect("batch");
    assert_eq!(
        (first.claimed, first.published, first.failed),
        (2, 1, 1),
        "y1 flows, x1 fails"
    );
    let second = relay.process_once().await.expect("batch");
    assert_eq!((second.claimed, second.published), (1, 1), "only y2: {second:?}");
    relay.release().await;
    let published = |id: uuid::Uuid, v: i64| {
        format!("outbox WHERE aggregate_id = '{id}' AND aggregate_version = {v} AND published_at IS NOT NULL")
    };
    assert_eq!(env.count(&published(y, 2)).await, 1, "y2 published");
    assert_eq!(env.count(&published(x, 2)).await, 0, "x2 waits behind x1's retry");
    assert_eq!(
        env.count(&format!(
            "outbox WHERE aggregate_id = '{x}' AND published_at IS NULL AND parked_at IS NULL"
        ))
        .await,
        2,
        "x1 and x2 still pending"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn pruning_deletes_only_old_published_rows() {
    let env = TestEnv::new().await;
    seed_outbox(&env, 2, 3).await;
    env.drain_outbox().await;
    seed_outbox(&env, 1, 2).await;
    let mut c = env.pool.get().await.expect("conn");
    diesel::sql_query("UPDATE outbox SET published_at = now() - interval '10 days' WHERE published_at IS NOT NULL")
        .execute(&mut c)
        .await
        .expect("age rows");
    let out = bin(&env)
        .args(["process-outbox", "--prune-published-older-than", "7days"])
        .output()
        .expect("runs");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("Pruned 6"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(env.count("outbox").await, 2, "pending rows are kept");
}

/// A write wakes the relays once it committed, in a transaction of its own
/// (`outbox_repo::wake_relays`): a LISTEN connection is woken, and the row that woke it is
/// there to claim.
#[tokio::test(flavor = "multi_thread")]
async fn a_committed_write_wakes_the_relays_and_its_row_is_there_to_claim() {
    use std::sync::Arc;
    let app = TestApp::spawn().await;
    let env = &app.env;
    let wake = Arc::new(tokio::sync::Notify::new());
    let cancel = tokio_util::sync::CancellationToken::new();
    tokio::spawn(aliexpress::store::outbox_listener::listen(
        env.infra.database.url.expose().to_owned(),
        wake.clone(),
        cancel.clone(),
    ));
    let listening = crate::helpers::wait_until(Duration::from_secs(10), || async {
        env.count("pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'")
            .await
            == 1
    })
    .await;
    assert!(listening, "the listener LISTENs");
    assert_eq!(env.count("outbox WHERE published_at IS NULL").await, 0);

    app.create_product("WAKE-1", "Woken lamp").await;
    let woken = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
    assert!(woken.is_ok(), "no wake-up within 5 s of a committed write");
    assert_eq!(
        env.count("outbox WHERE published_at IS NULL").await,
        1,
        "the woken relay finds the write's row"
    );
    cancel.cancel();
}
