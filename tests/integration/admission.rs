//! Admission: a request's deadline under a stalled database (a table lock held by the test on
//! its own database: every statement on products waits) and load shedding past the bound of
//! requests in flight.

use std::time::{Duration, Instant};

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};
use serde_json::{json, Value};

use aliexpress::http::admission::Admission;

use crate::helpers::{TestApp, TOKEN};

/// Holds `products` locked (ACCESS EXCLUSIVE) until dropped or released.
async fn stall_products(app: &TestApp) -> AsyncPgConnection {
    let mut c = aliexpress::store::pool::connect(app.env.infra.database.url.expose(), Duration::from_secs(600))
        .await
        .expect("conn");
    c.batch_execute("BEGIN; LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
        .await
        .expect("lock");
    c
}

async fn create(app: &TestApp, sku: &str, key: &str) -> reqwest::Response {
    app.http
        .post(app.url("/api/products"))
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", key)
        .json(&json!({"sku": sku, "title": "Stalled lamp", "price": {"amount_minor": 100, "currency": "EUR"}}))
        .send()
        .await
        .expect("request")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_database_gets_a_503_at_the_deadline_cached_reads_go_on_and_the_key_tells_the_outcome() {
    let app = TestApp::spawn_with(|s| s.limits.deadline = Some(Duration::from_secs(1))).await;
    let cached = app.create_product("DEADLINE-A", "Cached lamp").await;
    let cached = format!("/api/products/{}", cached["id"].as_str().expect("id"));
    for _ in 0..2 {
        assert_eq!(app.get_with_token(&cached).await.status(), 200);
    }
    let mut lock = stall_products(&app).await;

    let key = uuid::Uuid::now_v7().to_string();
    let t = Instant::now();
    let r = create(&app, "DEADLINE-B", &key).await;
    let took = t.elapsed();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["code"], "dependency_unavailable", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .expect("detail")
            .contains("may have been committed"),
        "{problem}"
    );
    assert!(
        took < Duration::from_secs(3),
        "answered at its deadline, not when the database came back: {took:?}"
    );
    // The cache answers through the stall; a read it cannot answer is cut at the deadline too.
    assert_eq!(app.get_with_token(&cached).await.status(), 200);
    let r = app
        .get_with_token(&format!("/api/products/{}", uuid::Uuid::now_v7()))
        .await;
    assert_eq!(r.status(), 503);
    assert_eq!(app.get("/health/live").await.status(), 200, "health is never cut");

    lock.batch_execute("ROLLBACK").await.expect("release");
    // The same key gives the real outcome: the write was cut before its commit, so it runs now
    // (409 while the cut transaction still holds the key, until its connection is discarded).
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        let s = create(&app, "DEADLINE-B", &key).await.status().as_u16();
        if s != 409 && s != 503 || Instant::now() > deadline {
            break s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await; // the client's retry pace
    };
    assert_eq!(status, 201);
    assert_eq!(
        create(&app, "DEADLINE-B", &key).await.status(),
        201,
        "replayed, not applied twice"
    );
    assert_eq!(app.env.count("products WHERE sku = 'DEADLINE-B'").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_bound_of_requests_in_flight_a_request_is_shed_at_once_and_health_is_not() {
    let app = TestApp::spawn_with(|s| {
        s.limits.admission = Admission::new(2, 2);
        s.limits.deadline = Some(Duration::from_secs(60));
    })
    .await;
    let cached = app.create_product("SHED-A", "Cached lamp").await;
    let cached = format!("/api/products/{}", cached["id"].as_str().expect("id"));
    for _ in 0..2 {
        assert_eq!(app.get_with_token(&cached).await.status(), 200);
    }
    let mut lock = stall_products(&app).await;
    // Two writes wait on the database, holding both places.
    let held: Vec<_> = (0..2)
        .map(|i| {
            let (http, url) = (app.http.clone(), app.url("/api/products"));
            tokio::spawn(async move {
                http.post(url)
                    .bearer_auth(TOKEN)
                    .json(&json!({"sku": format!("SHED-{i}"), "title": "Held lamp", "price": {"amount_minor": 100, "currency": "EUR"}}))
                    .send()
                    .await
                    .expect("request")
                    .status()
                    .as_u16()
            })
        })
        .collect();
    // Both wait on the lock (Postgres says so); a read the cache would answer is now shed.
    let until = Instant::now() + Duration::from_secs(20);
    while app
        .env
        .scalar("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
        .await
        < 2
    {
        assert!(Instant::now() < until, "the two writes reach the database");
        tokio::time::sleep(Duration::from_millis(20)).await; // the poll's pace
    }
    let t = Instant::now();
    let r = app.get_with_token(&cached).await;
    let shed = (r, t.elapsed());
    let (r, took) = shed;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let problem: Value = r.json().await.expect("json");
    assert_eq!(problem["code"], "overloaded", "{problem}");
    assert!(took < Duration::from_secs(1), "refused at once: {took:?}");
    assert_eq!(app.get("/health/live").await.status(), 200, "health is never shed");
    assert!(app
        .metrics()
        .await
        .contains("aliexpress_http_shed_total{bound=\"worker\"}"));

    lock.batch_execute("ROLLBACK").await.expect("release");
    for h in held {
        assert_eq!(h.await.expect("join"), 201, "the admitted writes complete");
    }
    assert_eq!(app.get_with_token(&cached).await.status(), 200, "admitted again");
}
