//! Spans exported over OTLP: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the API and the
//! projection export their spans, and one write's trace id (the caller's `traceparent`) is on
//! the spans of both roles. The collector is a small OTLP/HTTP (JSON) receiver on a port this
//! test binds.

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde_json::{json, Value};

use crate::helpers::{wait_until, TestEnv, TOKEN};

type Received = Arc<Mutex<Vec<Value>>>;

/// Starts the receiver; returns its base URL and what it received (one JSON body per export).
fn collector() -> (String, Received) {
    let received: Received = Arc::default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let store = received.clone();
    let server = HttpServer::new(move || {
        let store = store.clone();
        App::new().app_data(web::PayloadConfig::new(64 << 20)).route(
            "/v1/traces",
            web::post().to(move |body: web::Bytes| {
                let store = store.clone();
                async move {
                    match serde_json::from_slice::<Value>(&body) {
                        Ok(v) => {
                            store.lock().expect("lock").push(v);
                            HttpResponse::Ok().json(json!({}))
                        }
                        Err(_) => HttpResponse::BadRequest().finish(),
                    }
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .expect("listen")
    .run();
    tokio::spawn(server);
    (url, received)
}

/// (service name, trace id, span name) of every span received.
fn spans(received: &Received) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for body in received.lock().expect("lock").iter() {
        for rs in body["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    out.push((
                        service.clone(),
                        s["traceId"].as_str().unwrap_or_default().to_lowercase(),
                        s["name"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

fn role(env: &TestEnv, collector: &str, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_aliexpress"));
    c.envs(env.bin_env())
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .env("API_TOKENS", TOKEN)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    c
}

#[tokio::test(flavor = "multi_thread")]
async fn spans_of_one_write_reach_the_collector_from_the_api_and_the_projection_with_its_trace_id() {
    let env = TestEnv::new().await;
    let (url, received) = collector();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut serve = role(
        &env,
        &url,
        &[
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--metrics-bind",
            "127.0.0.1:0",
        ],
    )
    .spawn()
    .expect("serve starts");
    let mut projection = role(&env, &url, &["run-product-event-consumer"])
        .spawn()
        .expect("projection starts");
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        wait_until(Duration::from_secs(60), || async {
            http.get(format!("{base}/health/live")).send().await.is_ok()
        })
        .await,
        "serve answers"
    );
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let created = http
        .post(format!("{base}/api/products"))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .json(&json!({"sku": "OTLP-1", "title": "Traced lamp", "price": {"amount_minor": 100, "currency": "USD"}}))
        .send()
        .await
        .expect("create");
    assert_eq!(created.status(), 201);
    let id = created.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let out = role(&env, &url, &["process-outbox"]).output().expect("relay runs");
    assert!(out.status.success(), "process-outbox");
    assert!(
        wait_until(Duration::from_secs(60), || async { env.document(&id).await.is_some() }).await,
        "the write is projected"
    );
    let from = |service: &str| {
        spans(&received)
            .into_iter()
            .filter(|(s, t, _)| s == service && t == trace_id)
            .map(|(_, _, n)| n)
            .collect::<Vec<_>>()
    };
    // Both roles' spans reach the collector (the assertions below say which are missing).
    wait_until(Duration::from_secs(30), || {
        let both = !from("aliexpress-serve").is_empty() && !from("aliexpress-run-product-event-consumer").is_empty();
        async move { both }
    })
    .await;
    for child in [&mut serve, &mut projection] {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    let api = from("aliexpress-serve");
    assert!(
        api.iter().any(|n| n == "request"),
        "the API's request span continues the caller's trace: {api:?}"
    );
    let projected = from("aliexpress-run-product-event-consumer");
    assert!(
        projected.iter().any(|n| n == "project event"),
        "the projection's span for the event is in the same trace: {projected:?} (all: {:?})",
        spans(&received)
    );
}
