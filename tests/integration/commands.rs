use std::time::Duration;

use aliexpress::bus::dlq::{dlq_headers, DlqWriter};
use aliexpress::bus::producer::{self, ProducerSettings};
use aliexpress::failure::RetryPolicy;
use aliexpress::worker::commands::{CommandOutcome, ProductConsumer};
use aliexpress::worker::Shutdown;
use diesel_async::RunQueryDsl;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use rdkafka::Message;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{header, TestApp, TestEnv};

pub(crate) fn command_consumer(env: &TestEnv) -> ProductConsumer {
    let group = env.names.command_group();
    let c = aliexpress::bus::consumer::build(
        &aliexpress::bus::KafkaConnection::from_settings(&env.infra.kafka).expect("kafka settings"),
        &group,
    )
    .expect("consumer");
    c.subscribe(&[&env.names.commands_topic()]).expect("subscribe");
    let p = producer::build(
        &aliexpress::bus::KafkaConnection::from_settings(&env.infra.kafka).expect("kafka settings"),
        &ProducerSettings::default(),
    )
    .expect("producer");
    ProductConsumer::new(
        c,
        env.pool.clone(),
        DlqWriter::new(p, env.names.commands_dlq_topic(), group),
        env.names.events_topic(),
        false,
        // Fast retries: a transient failure is left unfinished within a second.
        RetryPolicy::new(Duration::from_millis(5), Duration::from_millis(50), 3, 1),
    )
}

/// Handles messages one batch of one at a time until `n` outcomes were collected.
pub(crate) async fn handle(c: &ProductConsumer, n: usize) -> Vec<CommandOutcome> {
    let shutdown = Shutdown::new();
    let mut out = Vec::new();
    for _ in 0..60 {
        if out.len() >= n {
            break;
        }
        out.extend(
            c.process_batch(1, Duration::from_secs(1), &shutdown)
                .await
                .expect("process"),
        );
    }
    assert_eq!(out.len(), n, "handled {out:?}");
    out
}

/// Produces a command message to partition 0 of the commands topic (so tests control order
/// across products).
pub(crate) async fn produce_to_partition0(env: &TestEnv, product_id: Uuid, body: Value) -> Uuid {
    let command_id = Uuid::now_v7();
    let mut v = body;
    v["command_id"] = json!(command_id);
    v["product_id"] = json!(product_id);
    let bytes = v.to_string();
    let key = product_id.to_string();
    let topic = env.names.commands_topic();
    env.producer
        .send(
            FutureRecord::to(&topic).partition(0).key(&key).payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .expect("produced");
    command_id
}

/// Runs SQL on the test database.
async fn sql(env: &TestEnv, statement: &str) {
    let mut conn = env.pool.get().await.expect("conn");
    diesel::sql_query(statement).execute(&mut conn).await.expect("sql");
}

/// A trigger that makes Postgres refuse products titled `poison` (a permanent, unmapped
/// error) and, while `flaky` holds a row, products titled `flaky` with SQLSTATE 40001 (a
/// serialization failure: transient).
async fn install_refusing_trigger(env: &TestEnv) {
    sql(env, "CREATE TABLE flaky (on_ boolean)").await;
    sql(env, "INSERT INTO flaky VALUES (true)").await;
    sql(
        env,
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.title = 'poison' THEN RAISE EXCEPTION 'refused by a test trigger'; END IF; \
           IF NEW.title = 'flaky' AND EXISTS (SELECT 1 FROM flaky) THEN \
             RAISE EXCEPTION 'could not serialize access (test)' USING ERRCODE = '40001'; END IF; \
           RETURN NEW; END $$",
    )
    .await;
    sql(
        env,
        "CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON products FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .await;
}

async fn command_status(env: &TestEnv, command_id: Uuid) -> Option<(String, Option<String>)> {
    let mut conn = env.pool.get().await.expect("conn");
    aliexpress::store::command_repo::find(&mut conn, command_id)
        .await
        .expect("find")
        .map(|r| (r.status, r.reason))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_posted_to_the_api_is_applied_by_the_consumer() {
    let app = TestApp::spawn().await;
    let p = app.create_product("SKU-K", "Kettle").await;
    let id = p["id"].as_str().expect("id");
    let r = app
        .post("/api/commands", json!({"product_id": id, "command_type": "ChangePrice", "payload": {"price": {"amount_minor": 2500, "currency": "USD"}}}))
        .await;
    assert_eq!(r.status(), 202);
    let accepted: Value = r.json().await.expect("json");
    let cid = accepted["command_id"].as_str().expect("command id").to_owned();
    let pending: Value = app
        .get_with_token(&format!("/api/commands/{cid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(pending["status"], "pending");
    assert_eq!(app.env.drain_outbox().await, 2, "the product's event and the command");

    let c = command_consumer(&app.env);
    assert_eq!(handle(&c, 1).await, vec![CommandOutcome::Applied(2)]);
    let done: Value = app
        .get_with_token(&format!("/api/commands/{cid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(done["status"], "applied");
    assert_eq!(done["result_version"], 2);
    assert_eq!(
        app.env
            .count(&format!("outbox WHERE aggregate_id = '{id}' AND aggregate_version > 0"))
            .await,
        2
    );

    // Invalid commands are refused at the door.
    let bad = app
        .post("/api/commands", json!({"product_id": id, "command_type": "Explode"}))
        .await;
    assert_eq!(bad.status(), 422);
    let bad = app
        .post(
            "/api/commands",
            json!({"product_id": id, "command_type": "SetStock", "payload": {"stock": -1}}),
        )
        .await;
    assert_eq!(bad.status(), 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_delivered_twice_is_applied_once_and_poison_goes_to_the_dlq() {
    let env = TestEnv::new().await;
    let id = uuid::Uuid::now_v7();
    let cid = uuid::Uuid::now_v7();
    let create = json!({"command_id": cid, "product_id": id, "command_type": "CreateProduct",
                        "payload": {"sku": "SKU-D", "title": "Drill"}})
    .to_string();
    let topic = env.names.commands_topic();
    env.produce(&topic, &id.to_string(), create.as_bytes()).await;
    env.produce(&topic, &id.to_string(), create.as_bytes()).await;
    env.produce(&topic, &id.to_string(), b"{not json").await;
    let stock = json!({"command_id": uuid::Uuid::now_v7(), "product_id": id, "command_type": "AdjustStock", "payload": {"delta": -5}}).to_string();
    env.produce(&topic, &id.to_string(), stock.as_bytes()).await;
    let publish = json!({"command_id": uuid::Uuid::now_v7(), "product_id": id, "command_type": "UpdateProductDetails", "payload": {"title": "Cordless drill"}}).to_string();
    env.produce(&topic, &id.to_string(), publish.as_bytes()).await;

    let c = command_consumer(&env);
    let outcomes = handle(&c, 5).await;
    assert_eq!(outcomes[0], CommandOutcome::Applied(1));
    assert_eq!(outcomes[1], CommandOutcome::Duplicate);
    assert_eq!(outcomes[2], CommandOutcome::DeadLettered("invalid_json"));
    assert!(matches!(&outcomes[3], CommandOutcome::Rejected(r) if r.contains("insufficient stock")));
    assert_eq!(
        outcomes[4],
        CommandOutcome::Applied(2),
        "the consumer keeps going after poison"
    );
    assert_eq!(env.count(&format!("outbox WHERE aggregate_id = '{id}'")).await, 2);
    assert_eq!(env.count("commands WHERE status = 'rejected'").await, 1);

    let dlq = env
        .read_topic(&env.names.commands_dlq_topic(), 1, Duration::from_secs(20))
        .await;
    assert_eq!(dlq.len(), 1);
    let m = &dlq[0];
    assert_eq!(m.payload(), Some(&b"{not json"[..]));
    assert_eq!(header(m, dlq_headers::ERROR_CLASS), Some("invalid_json"));
    assert_eq!(header(m, dlq_headers::ORIGINAL_TOPIC), Some(topic.as_str()));
    assert_eq!(header(m, dlq_headers::ORIGINAL_OFFSET), Some("2"));
    assert!(header(m, dlq_headers::ORIGINAL_PARTITION).is_some());
    assert!(header(m, dlq_headers::ERROR_MESSAGE).is_some_and(|s| !s.is_empty()));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_runs_products_concurrently_and_each_products_commands_in_order() {
    let env = TestEnv::new().await;
    let topic = env.names.commands_topic();
    let ids: Vec<uuid::Uuid> = (0..5).map(|_| uuid::Uuid::now_v7()).collect();
    let cmd = |id: &uuid::Uuid, body: Value| {
        let mut v = body;
        v["command_id"] = json!(uuid::Uuid::now_v7());
        v["product_id"] = json!(id);
        v.to_string()
    };
    let mut sent = 0;
    for (n, id) in ids.iter().enumerate() {
        let create = cmd(
            id,
            json!({"command_type": "CreateProduct", "payload": {"sku": format!("SKU-B{n}"), "title": "Batch"}}),
        );
        env.produce(&topic, &id.to_string(), create.as_bytes()).await;
        sent += 1;
    }
    env.produce(&topic, "poison", b"][").await;
    sent += 1;
    for round in 0..9 {
        for id in &ids {
            let set = cmd(id, json!({"command_type": "SetStock", "payload": {"stock": round + 1}}));
            env.produce(&topic, &id.to_string(), set.as_bytes()).await;
            sent += 1;
        }
    }
    let c = command_consumer(&env);
    let shutdown = Shutdown::new();
    let mut outcomes = Vec::new();
    for _ in 0..60 {
        if outcomes.len() >= sent {
            break;
        }
        outcomes.extend(
            c.process_batch(16, Duration::from_secs(1), &shutdown)
                .await
                .expect("batch"),
        );
    }
    assert_eq!(outcomes.len(), sent);
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, CommandOutcome::Applied(_)))
            .count(),
        50
    );
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| matches!(o, CommandOutcome::DeadLettered(_)))
            .count(),
        1
    );
    for id in &ids {
        // SetStock n applied in order: the final stock is the last one sent, versions 1..=10.
        assert_eq!(
            env.count(&format!("products WHERE id = '{id}' AND version = 10 AND stock = 9"))
                .await,
            1
        );
        let mut conn = env.pool.get().await.expect("conn");
        #[derive(diesel::QueryableByName)]
        struct V {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            aggregate_version: i64,
        }
        use diesel_async::RunQueryDsl;
        let v: Vec<V> = diesel::sql_query(format!(
            "SELECT aggregate_version FROM outbox WHERE aggregate_id = '{id}' ORDER BY id"
        ))
        .load(&mut conn)
        .await
        .expect("rows");
        assert_eq!(
            v.iter().map(|r| r.aggregate_version).collect::<Vec<_>>(),
            (1..=10).collect::<Vec<_>>()
        );
    }
    // Everything is committed (auto-commit may already have done it: a second commit then
    // has nothing to do, which is not an error).
    crate::helpers::wait_committed(&c.consumer, &topic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_with_a_nul_byte_is_refused_at_the_api_and_rejected_by_the_consumer() {
    let app = TestApp::spawn().await;
    let p = app.create_product("SKU-NUL", "Lamp").await;
    let id: Uuid = p["id"].as_str().expect("id").parse().expect("uuid");
    let r = app
        .post(
            "/api/commands",
            json!({"product_id": id, "command_type": "UpdateProductDetails", "payload": {"title": "a\u{0}b"}}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.expect("json");
    assert!(problem.to_string().contains("title"), "{problem}");
    let r = app
        .http
        .patch(app.url(&format!("/api/products/{id}")))
        .bearer_auth(crate::helpers::TOKEN)
        .json(&json!({"title": "a\u{0}b"}))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 422);

    // Straight onto the topic, it is rejected with the reason, and the next command applies.
    let env = &app.env;
    let bad = produce_to_partition0(
        env,
        id,
        json!({"command_type": "UpdateProductDetails", "payload": {"title": "a\u{0}b"}}),
    )
    .await;
    let good = produce_to_partition0(env, id, json!({"command_type": "SetStock", "payload": {"stock": 3}})).await;
    let c = command_consumer(env);
    let out = handle(&c, 2).await;
    assert!(
        matches!(&out[0], CommandOutcome::Rejected(r) if r.contains("U+0000")),
        "{out:?}"
    );
    assert_eq!(out[1], CommandOutcome::Applied(2));
    let (status, reason) = command_status(env, bad).await.expect("recorded");
    assert_eq!(status, "rejected");
    assert!(reason.is_some_and(|r| r.contains("title")));
    assert_eq!(command_status(env, good).await.expect("recorded").0, "applied");

    // A NUL in a key no field reads (the price's): rejected too, naming it; nothing applied.
    let hidden = produce_to_partition0(
        env,
        id,
        json!({"command_type": "ChangePrice", "payload": {"price": {"\u{0}x": 1, "amount_minor": 5, "currency": "EUR"}}}),
    )
    .await;
    let out = handle(&c, 1).await;
    assert!(
        matches!(&out[0], CommandOutcome::Rejected(r) if r.contains("payload.price.\\u0000x") && r.contains("U+0000")),
        "{out:?}"
    );
    assert_eq!(command_status(env, hidden).await.expect("recorded").0, "rejected");
    assert_eq!(
        env.count("product_history").await,
        2,
        "created and the stock set: no price change"
    );
}

/// A NUL anywhere in a body, in a key or a value at any depth, is a 422 naming where (it used to
/// reach Postgres's jsonb inside a command's payload and answer 500), and nothing is stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_nul_anywhere_in_a_body_is_a_422_naming_the_field_and_stores_nothing() {
    let app = TestApp::spawn().await;
    let p = app.create_product("SKU-NUL-DEEP", "Lamp").await;
    let id: Uuid = p["id"].as_str().expect("id").parse().expect("uuid");
    let nested_key = json!({"product_id": id, "command_type": "ChangePrice",
        "payload": {"price": {"\u{0}x": 1, "amount_minor": 100, "currency": "EUR"}}});
    let r = app.post("/api/commands", nested_key).await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.expect("json");
    assert_eq!(
        problem["errors"][0]["field"], "body.payload.price.\\u0000x",
        "{problem}"
    );
    let r = app
        .post(
            "/api/products",
            json!({"sku": "SKU-NUL-ATTR", "title": "Lamp", "attributes": {"colour": "red\u{0}"}}),
        )
        .await;
    assert_eq!(r.status(), 422);
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["errors"][0]["field"], "body.attributes.colour", "{problem}");
    assert_eq!(
        app.env.count("commands").await,
        0,
        "no command was recorded for a refused body"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_the_database_refuses_is_rejected_at_once_and_the_commands_behind_it_apply() {
    // Issue 9, defect 1: an error Postgres raises for one command stopped all processing.
    let env = TestEnv::new().await;
    install_refusing_trigger(&env).await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let poison = produce_to_partition0(
        &env,
        a,
        json!({"command_type": "CreateProduct", "payload": {"sku": "P-1", "title": "poison"}}),
    )
    .await;
    produce_to_partition0(
        &env,
        b,
        json!({"command_type": "CreateProduct", "payload": {"sku": "P-2", "title": "fine"}}),
    )
    .await;
    produce_to_partition0(
        &env,
        a,
        json!({"command_type": "CreateProduct", "payload": {"sku": "P-1", "title": "fixed"}}),
    )
    .await;
    let c = command_consumer(&env);
    let out = handle(&c, 3).await;
    assert!(
        matches!(&out[0], CommandOutcome::Rejected(r) if r.contains("refused by a test trigger")),
        "{out:?}"
    );
    assert_eq!(out[1..], [CommandOutcome::Applied(1), CommandOutcome::Applied(1)]);
    let (status, reason) = command_status(&env, poison).await.expect("recorded");
    assert_eq!(status, "rejected");
    assert!(reason.is_some_and(|r| r.contains("could not be stored")));
    crate::helpers::wait_committed(&c.consumer, &env.names.commands_topic()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_failing_transiently_is_never_committed_past_and_applies_once_the_database_recovers() {
    // Issue 9, defect 2: after a failed batch, later messages were committed past the failure.
    let env = TestEnv::new().await;
    install_refusing_trigger(&env).await;
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let create =
        |sku: &str, title: &str| json!({"command_type": "CreateProduct", "payload": {"sku": sku, "title": title}});
    let stuck = produce_to_partition0(&env, a, create("F-1", "flaky")).await;
    let behind_same_product =
        produce_to_partition0(&env, a, json!({"command_type": "SetStock", "payload": {"stock": 4}})).await;
    produce_to_partition0(&env, b, create("F-2", "other")).await;
    let c = command_consumer(&env);
    let shutdown = Shutdown::new();
    let mut first = Vec::new();
    for _ in 0..20 {
        if first.len() >= 3 {
            break;
        }
        first.extend(
            c.process_batch(16, Duration::from_secs(2), &shutdown)
                .await
                .expect("batch"),
        );
    }
    assert_eq!(
        first,
        vec![
            CommandOutcome::Unfinished,
            CommandOutcome::Unfinished,
            CommandOutcome::Applied(1)
        ],
        "the other product goes on; the product's later command waits behind the stuck one"
    );
    c.consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .ok();
    let committed = crate::helpers::committed_offset(&c.consumer, &env.names.commands_topic(), 0).await;
    assert!(
        committed.unwrap_or(0) <= 0,
        "nothing committed past the stuck command: {committed:?}"
    );
    assert_eq!(command_status(&env, stuck).await, None);

    // The database recovers: the stuck command and the one behind it head the next batch
    // (kept by the lane, in order); the other product's command, finished, is not run again.
    sql(&env, "DELETE FROM flaky").await;
    let mut again = Vec::new();
    for _ in 0..20 {
        if again.len() >= 2 {
            break;
        }
        again.extend(
            c.process_batch(16, Duration::from_secs(1), &shutdown)
                .await
                .expect("batch"),
        );
    }
    assert_eq!(again, vec![CommandOutcome::Applied(1), CommandOutcome::Applied(2)]);
    assert_eq!(
        command_status(&env, behind_same_product).await.expect("done").0,
        "applied"
    );
    assert_eq!(env.count(&format!("products WHERE id = '{a}' AND stock = 4")).await, 1);
    crate::helpers::wait_committed(&c.consumer, &env.names.commands_topic()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_is_accepted_at_once_while_kafka_is_unreachable_and_delivered_later() {
    let app = TestApp::spawn_with(|s| {
        s.kafka.producer = producer::build(
            &aliexpress::bus::KafkaConnection::new("127.0.0.1:1"),
            &ProducerSettings::default(),
        )
        .expect("producer");
    })
    .await;
    let id = Uuid::now_v7();
    let started = std::time::Instant::now();
    let r = app
        .post(
            "/api/commands",
            json!({"product_id": id, "command_type": "CreateProduct", "payload": {"sku": "K-1", "title": "Kite"}}),
        )
        .await;
    assert_eq!(r.status(), 202);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered in {:?}",
        started.elapsed()
    );
    let cid: Uuid = r.json::<Value>().await.expect("json")["command_id"]
        .as_str()
        .expect("id")
        .parse()
        .expect("uuid");
    assert_eq!(app.env.drain_outbox().await, 1);
    let c = command_consumer(&app.env);
    assert_eq!(handle(&c, 1).await, vec![CommandOutcome::Applied(1)]);
    assert_eq!(command_status(&app.env, cid).await.expect("recorded").0, "applied");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_whose_connection_the_server_drops_mid_transaction_is_retried_and_applied() {
    // Issue 9, defect 5: a terminated backend surfaced as an error the consumer did not count
    // as transient, and the command was committed past without an outcome.
    let env = TestEnv::new().await;
    // The first attempt to store a product titled `slow` sleeps inside its transaction (a
    // sequence, unlike a table, is not rolled back with the attempt).
    sql(&env, "CREATE SEQUENCE slow_attempts").await;
    sql(
        &env,
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
           IF NEW.title = 'slow' AND nextval('slow_attempts') = 1 THEN PERFORM pg_sleep(30); END IF; \
           RETURN NEW; END $$",
    )
    .await;
    sql(
        &env,
        "CREATE TRIGGER slow BEFORE INSERT ON products FOR EACH ROW EXECUTE FUNCTION slow()",
    )
    .await;
    let id = Uuid::now_v7();
    let command_id = produce_to_partition0(
        &env,
        id,
        json!({"command_type": "CreateProduct", "payload": {"sku": "T-1", "title": "slow"}}),
    )
    .await;
    let c = std::sync::Arc::new(command_consumer(&env));
    let worker = {
        let c = c.clone();
        tokio::spawn(async move { handle(&c, 1).await })
    };
    let mut admin = aliexpress::store::pool::connect(env.infra.database.url.expose(), Duration::from_secs(10))
        .await
        .expect("admin connection");
    #[derive(diesel::QueryableByName)]
    struct N {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut killed = 0;
    for _ in 0..100 {
        let r: N = diesel::sql_query(
            "SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event = 'PgSleep'",
        )
        .get_result(&mut admin)
        .await
        .expect("terminate");
        killed = r.n;
        if killed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(killed, 1, "the command's transaction was caught in flight");
    let out = worker.await.expect("join");
    assert_eq!(out, vec![CommandOutcome::Applied(1)]);
    assert_eq!(command_status(&env, command_id).await.expect("recorded").0, "applied");
}
