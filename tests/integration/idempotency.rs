//! `Idempotency-Key` on product writes: a retry is answered from the record written in the
//! write's own transaction, never applied twice.

use futures::future::join_all;
use serde_json::{json, Value};
use std::time::Duration;

use crate::helpers::{wait_until, TestApp, TOKEN};

async fn post_with_key(app: &TestApp, path: &str, key: &str, body: &Value) -> (u16, reqwest::header::HeaderMap, Value) {
    let r = app
        .http
        .post(app.url(path))
        .bearer_auth(TOKEN)
        .header("Idempotency-Key", key)
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = r.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn create_body(sku: &str) -> Value {
    json!({"sku": sku, "title": "Kettle", "price": {"amount_minor": 2500, "currency": "EUR"}, "stock": 4})
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_create_returns_the_first_response_and_applies_once() {
    let app = TestApp::spawn().await;
    let body = create_body("SKU-IDEM-1");
    let (s1, h1, b1) = post_with_key(&app, "/api/products", "create-1", &body).await;
    assert_eq!(s1, 201, "{b1}");
    let (s2, h2, b2) = post_with_key(&app, "/api/products", "create-1", &body).await;
    assert_eq!(s2, 201, "{b2}");
    assert_eq!(b1, b2);
    assert_eq!(h1["location"], h2["location"]);
    assert_eq!(h1["etag"], h2["etag"]);
    let id = b1["id"].as_str().expect("id");
    assert_eq!(app.env.count(&format!("outbox WHERE aggregate_id = '{id}'")).await, 1);
    assert_eq!(app.env.count("products").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_key_with_another_body_is_a_422() {
    let app = TestApp::spawn().await;
    let p = app.create_product("SKU-IDEM-2", "Kettle").await;
    let id = p["id"].as_str().expect("id");
    let path = format!("/api/products/{id}/price");
    let (s1, _, _) = post_with_key(&app, &path, "price-1", &json!({"amount_minor": 100, "currency": "EUR"})).await;
    assert_eq!(s1, 200);
    let (s2, h2, b2) = post_with_key(&app, &path, "price-1", &json!({"amount_minor": 200, "currency": "EUR"})).await;
    assert_eq!(s2, 422, "{b2}");
    assert_eq!(h2["content-type"], "application/problem+json");
    assert_eq!(app.env.count(&format!("outbox WHERE aggregate_id = '{id}'")).await, 2);
    // Keys are scoped to the route: the same key on another product's route is independent.
    let other = app.create_product("SKU-IDEM-2B", "Kettle").await;
    let other_id = other["id"].as_str().expect("id");
    let (s3, _, _) = post_with_key(
        &app,
        &format!("/api/products/{other_id}/price"),
        "price-1",
        &json!({"amount_minor": 200, "currency": "EUR"}),
    )
    .await;
    assert_eq!(s3, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_requests_with_one_key_apply_once() {
    let app = TestApp::spawn().await;
    let p = app.create_product("SKU-IDEM-3", "Kettle").await;
    let id = p["id"].as_str().expect("id");
    let path = format!("/api/products/{id}/stock");
    let body = json!({"delta": 1});
    let answers = join_all((0..12).map(|_| post_with_key(&app, &path, "stock-1", &body))).await;
    let mut bodies = Vec::new();
    for (status, _, b) in &answers {
        assert!(*status == 200 || *status == 409, "answered {status}: {b}");
        if *status == 200 {
            bodies.push(b.clone());
        }
    }
    assert!(!bodies.is_empty());
    assert!(
        bodies.iter().all(|b| b == &bodies[0]),
        "every 200 is the first response"
    );
    assert_eq!(bodies[0]["version"], 2);
    assert_eq!(bodies[0]["variants"][0]["stock"], 6);
    assert_eq!(app.env.count(&format!("outbox WHERE aggregate_id = '{id}'")).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_key_runs_the_request_again_and_is_pruned() {
    let app = TestApp::spawn_with(|s| s.catalog.settings.idempotency_ttl = Duration::from_secs(1)).await;
    let p = app.create_product("SKU-IDEM-4", "Kettle").await;
    let id = p["id"].as_str().expect("id");
    let path = format!("/api/products/{id}/stock");
    let body = json!({"delta": 1});
    let (s1, _, b1) = post_with_key(&app, &path, "stock-exp", &body).await;
    assert_eq!(s1, 200);
    assert_eq!(b1["version"], 2);
    // Within the TTL every retry is a replay; once it passed, the same request applies anew.
    let reapplied = wait_until(Duration::from_secs(10), || async {
        let (s, _, b) = post_with_key(&app, &path, "stock-exp", &body).await;
        assert_eq!(s, 200, "{b}");
        b["version"] == 3
    })
    .await;
    assert!(reapplied, "the key expired");
    assert_eq!(app.env.count(&format!("outbox WHERE aggregate_id = '{id}'")).await, 3);
    let pruned = wait_until(Duration::from_secs(10), || async {
        let mut c = aliexpress::store::pool::get(&app.env.pool).await.expect("conn");
        aliexpress::store::idempotency_repo::prune_expired(&mut c, 100)
            .await
            .expect("prune");
        app.env.count("idempotency_keys").await == 0
    })
    .await;
    assert!(pruned, "expired keys are pruned");
}
