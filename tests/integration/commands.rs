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
