use std::time::{Duration, Instant};

use aliexpress::cache::ProductCache;
use serde_json::Value;

use crate::helpers::TestApp;

#[tokio::test(flavor = "multi_thread")]
async fn health_is_ok_with_every_dependency_up() {
    let app = TestApp::spawn().await;
    // A process just started opens its first connections within the checks' 1 s bound, which a
    // loaded box can exceed once (a probe's first answer then is 503, as a load balancer would
    // see): health must become ok, and say which check was not while it was not.
    let deadline = Instant::now() + Duration::from_secs(30);
    let last = loop {
        let r = app.get("/health/").await;
        let last: (u16, Value) = (r.status().as_u16(), r.json().await.unwrap_or_default());
        if last.0 == 200 || Instant::now() > deadline {
            break last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(last.0, 200, "health never became ok: {}", last.1);
    assert_eq!(
        last.1,
        serde_json::json!({"status": "ok", "checks": {"database": "ok", "redis": "ok", "kafka": "ok", "opensearch": "ok"}})
    );
    assert_eq!(app.get("/health/live").await.status(), 200);
    assert_eq!(app.get("/health/ready").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn health_answers_503_quickly_when_redis_is_unreachable() {
    let app = TestApp::spawn_with(|s| {
        s.catalog = s.catalog.with_cache(
            ProductCache::new("redis://127.0.0.1:1", s.names.clone(), Duration::from_secs(60)).expect("lazy cache"),
        );
    })
    .await;
    let started = Instant::now();
    let r = app.get("/health/").await;
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "degraded");
    assert_ne!(body["checks"]["redis"], "ok");
    assert!(body["checks"]["redis"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(body["checks"]["database"], "ok");
    assert!(took < Duration::from_secs(2), "health took {took:?}");
    // Ready all the same: the API serves without Redis (reads go to Postgres).
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    let body: Value = ready.json().await.expect("json");
    assert_ne!(
        body["checks"]["redis"], "ok",
        "the report still shows the failing check"
    );
    assert_eq!(app.get("/health/live").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_requests_by_route_pattern_and_status() {
    let app = TestApp::spawn().await;
    let missing = uuid::Uuid::new_v4();
    assert_eq!(app.get(&format!("/api/products/{missing}")).await.status(), 404);
    let text = app.metrics().await;
    assert!(
        text.lines().any(|l| l.starts_with("aliexpress_http_requests_total")
            && l.contains("route=\"/api/products/{id}\"")
            && l.contains("status=\"404\"")),
        "{text}"
    );
    assert!(text.contains("aliexpress_http_request_duration_seconds_bucket"));
}

#[tokio::test(flavor = "multi_thread")]
async fn not_ready_when_postgres_is_unreachable() {
    let app = TestApp::spawn_with(|s| {
        s.catalog = s.catalog.with_pool(
            aliexpress::store::build_pool(
                "postgres://aliexpress:aliexpress@127.0.0.1:1/none",
                2,
                Duration::from_secs(1),
            )
            .expect("lazy pool"),
        );
    })
    .await;
    let r = app.get("/health/ready").await;
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], "unavailable");
    assert_ne!(body["checks"]["database"], "ok");
    assert_eq!(body["checks"]["redis"], "ok");
}
