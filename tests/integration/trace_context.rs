//! One API write's W3C trace id, from the request to the event's Kafka header and to the
//! projection's log line for it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::Message;
use serde_json::json;

use crate::helpers::{header, TestApp};

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

#[tokio::test(flavor = "multi_thread")]
async fn a_writes_trace_id_reaches_its_events_kafka_header_and_the_projections_log_line() {
    let app = TestApp::spawn().await;
    let created = app
        .http
        .post(app.url("/api/products"))
        .bearer_auth(crate::helpers::TOKEN)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(
            &json!({"sku": "TRACE-1", "title": "Traced kettle", "description": "d", "category": "electronics",
                       "brand": "Acme", "price": {"amount_minor": 100, "currency": "USD"}, "stock": 1}),
        )
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let answered = created
        .headers()
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        answered.starts_with(&format!("00-{TRACE_ID}-")) && !answered.contains("00f067aa0ba902b7"),
        "the answer continues the caller's trace with a span of its own: {answered}"
    );
    let id = created.json::<serde_json::Value>().await.expect("body")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(app.env.drain_outbox().await, 1);
    let msgs = app
        .env
        .read_topic(&app.env.names.events_topic(), 1, Duration::from_secs(30))
        .await;
    let event = msgs
        .iter()
        .find(|m| m.key() == Some(id.as_bytes()))
        .expect("the event on the topic");
    let on_kafka = header(event, "traceparent").unwrap_or_default();
    assert!(
        on_kafka.starts_with(&format!("00-{TRACE_ID}-")),
        "Kafka header: {on_kafka:?}"
    );

    // The projection, as deployed, logs the trace id with the event it projected.
    let mut projection = Command::new(env!("CARGO_BIN_EXE_aliexpress"))
        .envs(app.env.bin_env())
        .env("RUST_LOG", "info,aliexpress::worker::projection=debug")
        .arg("run-product-event-consumer")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("projection starts");
    // Logs go to stderr.
    let stdout = projection.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut found = None;
    while found.is_none() && Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains("event projected") && line.contains(&id) {
                found = Some(line);
            }
        }
    }
    let _ = projection.kill();
    let _ = projection.wait();
    let line = found.expect("the projection logged the event within 60 s");
    assert!(
        line.contains(TRACE_ID),
        "the projection's line carries the trace id: {line}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_carries_its_trace_through_the_command_topic() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::now_v7();
    let accepted = app
        .http
        .post(app.url("/api/commands"))
        .bearer_auth(crate::helpers::TOKEN)
        .header("traceparent", format!("00-{TRACE_ID}-00f067aa0ba902b7-01"))
        .json(&json!({"product_id": id, "command_type": "CreateProduct",
            "payload": {"sku": "TRACE-2", "title": "Traced", "description": "d", "category": "c", "brand": "b",
                        "price": {"amount_minor": 1, "currency": "USD"}, "stock": 1}}))
        .send()
        .await
        .expect("submit");
    assert_eq!(accepted.status(), 202);
    assert_eq!(app.env.drain_outbox().await, 1);
    let msgs = app
        .env
        .read_topic(&app.env.names.commands_topic(), 1, Duration::from_secs(30))
        .await;
    let on_kafka = msgs.first().and_then(|m| header(m, "traceparent")).unwrap_or_default();
    assert!(
        on_kafka.starts_with(&format!("00-{TRACE_ID}-")),
        "command header: {on_kafka:?}"
    );
}
