use std::time::Duration;

use aliexpress::bus::dlq::{dlq_headers, DlqWriter};
use aliexpress::bus::producer::{self, ProducerSettings};
use aliexpress::worker::product_consumer::{CommandConsumer, CommandOutcome};
use aliexpress::worker::Shutdown;
use rdkafka::consumer::Consumer;
use rdkafka::Message;
use serde_json::{json, Value};

use crate::helpers::{header, TestApp, TestEnv};

fn command_consumer(env: &TestEnv) -> CommandConsumer {
    let group = env.names.command_group();
    let c = aliexpress::bus::consumer::build(&env.infra.kafka_bootstrap_servers, &group).expect("consumer");
    c.subscribe(&[&env.names.commands_topic()]).expect("subscribe");
    let p = producer::build(&env.infra.kafka_bootstrap_servers, &ProducerSettings::default()).expect("producer");
    CommandConsumer {
        consumer: c,
        pool: env.pool.clone(),
        dlq: DlqWriter::new(p, env.names.commands_dlq_topic(), group),
        events_topic: env.names.events_topic(),
        notify: false,
    }
}

/// Handles messages until `n` were handled.
async fn handle(c: &CommandConsumer, n: usize) -> Vec<CommandOutcome> {
    let shutdown = Shutdown::new();
    let mut out = Vec::new();
    for _ in 0..60 {
        if out.len() >= n {
            break;
        }
        if let Some(o) = c
            .process_once(Duration::from_secs(1), &shutdown)
            .await
            .expect("process")
        {
            out.push(o);
        }
    }
    assert_eq!(out.len(), n, "handled {out:?}");
    out
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
        .get(&format!("/api/commands/{cid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(pending["status"], "pending");

    let c = command_consumer(&app.env);
    assert_eq!(handle(&c, 1).await, vec![CommandOutcome::Applied(2)]);
    let done: Value = app
        .get(&format!("/api/commands/{cid}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(done["status"], "applied");
    assert_eq!(done["result_version"], 2);
    assert_eq!(app.env.count(&format!("outbox WHERE aggregate_id = '{id}'")).await, 2);

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
    c.consumer
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .expect("commit");
}
