//! Spans exported over OTLP: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the API, the relay and
//! the projection export their spans, named and attributed per OpenTelemetry's semantic
//! conventions (HTTP server, messaging producer and consumer), and one write's trace id (the
//! caller's `traceparent`) is on the spans of all three roles. The collector is a small OTLP/HTTP (JSON) receiver on a port this
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

/// One span received: its service, trace id, name, kind (OTLP's number: 2 server, 3 client,
/// 4 producer, 5 consumer), status code (2 error) and attributes as text.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace_id: String,
    name: String,
    kind: u64,
    status: u64,
    attributes: std::collections::HashMap<String, String>,
}

/// Every span received.
fn spans(received: &Received) -> Vec<Span> {
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
                    let attributes = s["attributes"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|a| {
                            let v = &a["value"];
                            let text = v["stringValue"]
                                .as_str()
                                .map(str::to_owned)
                                .or_else(|| v["intValue"].as_str().map(str::to_owned))
                                .unwrap_or_else(|| v["intValue"].to_string());
                            (a["key"].as_str().unwrap_or_default().to_owned(), text)
                        })
                        .collect();
                    out.push(Span {
                        service: service.clone(),
                        trace_id: s["traceId"].as_str().unwrap_or_default().to_lowercase(),
                        name: s["name"].as_str().unwrap_or_default().to_owned(),
                        kind: s["kind"].as_u64().unwrap_or_default(),
                        status: s["status"]["code"].as_u64().unwrap_or_default(),
                        attributes,
                    });
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
            .filter(|s| s.service == service && s.trace_id == trace_id)
            .collect::<Vec<_>>()
    };
    // Every role's spans reach the collector (the assertions below say which are missing).
    wait_until(Duration::from_secs(30), || {
        let all = !from("aliexpress-serve").is_empty()
            && !from("aliexpress-process-outbox").is_empty()
            && !from("aliexpress-run-product-event-consumer").is_empty();
        async move { all }
    })
    .await;
    for child in [&mut serve, &mut projection] {
        let _ = Command::new("kill").arg(child.id().to_string()).status();
        let _ = child.wait();
    }
    let names = |s: &[Span]| s.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
    // The API's server span (OpenTelemetry HTTP conventions) continues the caller's trace.
    let api = from("aliexpress-serve");
    let server = api
        .iter()
        .find(|s| s.name == "POST /api/products")
        .unwrap_or_else(|| panic!("the API's server span continues the caller's trace: {:?}", names(&api)));
    assert_eq!(server.kind, 2, "a server span");
    for (k, v) in [
        ("http.request.method", "POST"),
        ("http.route", "/api/products"),
        ("url.path", "/api/products"),
        ("http.response.status_code", "201"),
    ] {
        assert_eq!(server.attributes.get(k).map(String::as_str), Some(v), "{k}: {server:?}");
    }
    // The relay's publish span (messaging conventions) is in the write's trace.
    let events_topic = env.names.events_topic();
    let relay = from("aliexpress-process-outbox");
    let publish = relay
        .iter()
        .find(|s| s.name == format!("publish {events_topic}"))
        .unwrap_or_else(|| panic!("the relay's publish span is in the trace: {:?}", names(&relay)));
    assert_eq!(publish.kind, 4, "a producer span");
    for (k, v) in [
        ("messaging.system", "kafka"),
        ("messaging.operation.type", "publish"),
        ("messaging.destination.name", events_topic.as_str()),
    ] {
        assert_eq!(
            publish.attributes.get(k).map(String::as_str),
            Some(v),
            "{k}: {publish:?}"
        );
    }
    for k in [
        "messaging.kafka.destination.partition",
        "messaging.kafka.message.offset",
    ] {
        assert!(publish.attributes.contains_key(k), "{k}: {publish:?}");
    }
    // The projection's span for the event is a consumer span in the same trace.
    let projected = from("aliexpress-run-product-event-consumer");
    let process = projected
        .iter()
        .find(|s| s.name == format!("process {events_topic}"))
        .unwrap_or_else(|| {
            panic!(
                "the projection's span for the event is in the same trace: {:?} (all: {:?})",
                names(&projected),
                spans(&received)
                    .iter()
                    .map(|s| (s.service.clone(), s.name.clone()))
                    .collect::<Vec<_>>()
            )
        });
    assert_eq!(process.kind, 5, "a consumer span");
    for (k, v) in [
        ("messaging.system", "kafka"),
        ("messaging.operation.type", "process"),
        ("messaging.destination.name", events_topic.as_str()),
    ] {
        assert_eq!(
            process.attributes.get(k).map(String::as_str),
            Some(v),
            "{k}: {process:?}"
        );
    }
    assert!(
        process.attributes.contains_key("messaging.kafka.message.offset"),
        "{process:?}"
    );
    assert_eq!(process.status, 0, "unset status on success");
}
