//! API access rules: who sees unpublished products, how credentials are read and limited, the
//! bounds of a request, the headers of every answer, and that no input is a 500.

use std::sync::Arc;
use std::time::Duration;

use aliexpress::config::ApiConfig;
use aliexpress::http::RateLimits;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, READ_TOKEN, TOKEN};

fn assert_problem(r: &reqwest::Response, status: u16) {
    assert_eq!(r.status().as_u16(), status, "{:?}", r.headers());
    assert_eq!(r.headers()["content-type"], "application/problem+json", "{status}");
}

fn limits(f: impl FnOnce(&mut ApiConfig)) -> Arc<RateLimits> {
    let mut c = ApiConfig::default();
    f(&mut c);
    Arc::new(RateLimits::new(&c))
}

#[tokio::test(flavor = "multi_thread")]
async fn anonymous_callers_see_only_published_products_on_every_route() {
    let app = TestApp::spawn().await;
    let draft = app.create_product("SKU-DRAFT", "Draft lamp").await;
    let draft = draft["id"].as_str().expect("id").to_owned();
    let live = app.create_product("SKU-LIVE", "Live lamp").await;
    let live = live["id"].as_str().expect("id").to_owned();
    assert_eq!(
        app.post(&format!("/api/products/{live}/publish"), json!({}))
            .await
            .status(),
        200
    );
    let gone = app.create_product("SKU-GONE", "Archived lamp").await;
    let gone = gone["id"].as_str().expect("id").to_owned();
    assert_eq!(
        app.post(&format!("/api/products/{gone}/archive"), json!({}))
            .await
            .status(),
        200
    );

    // By id: unpublished products do not exist for anonymous callers, whichever store answers.
    for id in [&draft, &gone] {
        let path = format!("/api/products/{id}");
        let r = app.get(&path).await;
        assert_problem(&r, 404);
        app.env
            .cache()
            .evict(uuid::Uuid::parse_str(id).expect("uuid"))
            .await
            .expect("evict");
        assert_problem(&app.get(&path).await, 404);
        assert_eq!(app.get_with_token(&path).await.status(), 200);
    }
    assert_eq!(app.get(&format!("/api/products/{live}")).await.status(), 200);

    // Lists: published only without a token; another status needs one.
    let page: Value = app.get("/api/products").await.json().await.expect("json");
    let ids: Vec<&str> = page["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, vec![live.as_str()]);
    for status in ["draft", "archived"] {
        assert_problem(&app.get(&format!("/api/products?status={status}")).await, 401);
        let page: Value = app
            .get_with_token(&format!("/api/products?status={status}"))
            .await
            .json()
            .await
            .expect("json");
        assert_eq!(page["items"].as_array().map(Vec::len), Some(1), "{status}");
    }
    let all: Value = app.get_with_token("/api/products").await.json().await.expect("json");
    assert_eq!(all["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(app.get("/api/products?status=published").await.status(), 200);

    // Search refuses too, and command records (which name products) need a token.
    assert_problem(&app.get("/api/search?status=draft").await, 401);
    let r = app
        .post(
            "/api/commands",
            json!({"product_id": draft, "command_type": "PublishProduct"}),
        )
        .await;
    assert_eq!(r.status(), 202);
    let cid = r.json::<Value>().await.expect("json")["command_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_problem(&app.get(&format!("/api/commands/{cid}")).await, 401);
    assert_eq!(app.get_with_token(&format!("/api/commands/{cid}")).await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_bearer_scheme_name_is_case_insensitive() {
    let app = TestApp::spawn().await;
    for (i, scheme) in ["Bearer", "bearer", "BEARER", "bEaReR"].into_iter().enumerate() {
        let r = app
            .http
            .post(app.url("/api/products"))
            .header("Authorization", format!("{scheme} {TOKEN}"))
            .json(&json!({"sku": format!("SKU-CASE-{i}"), "title": "Case"}))
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 201, "{scheme}");
    }
    let r = app
        .http
        .get(app.url("/api/products?status=draft"))
        .header("Authorization", format!("bearer {READ_TOKEN}"))
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    let r = app
        .http
        .get(app.url("/api/products"))
        .header("Authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .expect("request");
    assert_problem(&r, 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_failed_authentications_get_429_with_retry_after() {
    let app = TestApp::spawn_with(|s| s.access.rate_limits = limits(|c| c.auth_failures_per_minute = 3)).await;
    let with = |token: &'static str| {
        app.http
            .post(app.url("/api/products"))
            .bearer_auth(token)
            .json(&json!({"sku": "SKU-BRUTE", "title": "t"}))
            .send()
    };
    for _ in 0..3 {
        assert_problem(&with("guess").await.expect("r"), 401);
    }
    let limited = with("guess").await.expect("r");
    assert_problem(&limited, 429);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("Retry-After in seconds");
    assert!((1..=20).contains(&retry), "{retry}");
    // Credentials from this address are not even looked at until the budget refills ...
    assert_problem(&with(TOKEN).await.expect("r"), 429);
    // ... while anonymous reads go on.
    assert_eq!(app.get("/api/products").await.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_over_the_request_rate_gets_429_with_retry_after_and_health_stays_up() {
    let app = TestApp::spawn_with(|s| {
        s.access.rate_limits = limits(|c| {
            c.rate_limit_per_second = 1;
            c.rate_limit_burst = 3;
        })
    })
    .await;
    for _ in 0..3 {
        assert_eq!(app.get("/api/products").await.status(), 200);
    }
    let r = app.get("/api/products").await;
    assert_problem(&r, 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(app.get("/health/live").await.status(), 200);
    let text = app.metrics().await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("aliexpress_http_rate_limited_total") && l.contains("limit=\"requests\"")),
        "{text}"
    );
}

/// Sends `head` and then `body` on a raw connection and returns the status line of the answer.
async fn raw_exchange(app: &TestApp, head: &str, body: &[u8]) -> String {
    let addr = app.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(head.as_bytes()).await.expect("head");
    // The server may answer (and stop reading) before the body is all sent.
    let _ = s.write_all(body).await;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .expect("an answer within 10 s")
        .expect("read");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_that_does_not_arrive_in_time_is_a_408_problem() {
    let app = TestApp::spawn_with(|s| s.limits.body_read_timeout = Duration::from_millis(300)).await;
    // Promises 100 bytes, sends 10, then waits: the server answers instead of waiting for ever.
    let head = format!(
        "POST /api/products HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
    );
    let answer = raw_exchange(&app, &head, b"{\"sku\": \"S").await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_body_over_the_limit_is_a_413_problem_with_or_without_a_length() {
    let app = TestApp::spawn().await;
    let big = vec![b' '; 70 * 1024];
    let r = app
        .http
        .post(app.url("/api/products"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .expect("r");
    assert_problem(&r, 413);
    let head = format!(
        "POST /api/products HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    let mut chunked = Vec::new();
    for c in big.chunks(8192) {
        chunked.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        chunked.extend_from_slice(c);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let answer = raw_exchange(&app, &head, &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_carries_the_security_headers() {
    let app = TestApp::spawn().await;
    let answers = [
        app.get("/health/live").await,
        app.get("/openapi.json").await,
        app.get("/api/products").await,
        app.get("/nowhere").await,
        app.http.delete(app.url("/api/products")).send().await.expect("r"),
        app.http.post(app.url("/api/products")).send().await.expect("r"),
    ];
    for r in answers {
        let h = r.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{}", r.url());
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(h["content-security-policy"]
            .to_str()
            .is_ok_and(|v| v.contains("default-src 'none'")));
        assert!(h.contains_key("cache-control"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_method_is_405_with_allow_and_an_unknown_path_404_all_problem_json() {
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::new_v4();
    let cases = [
        (Method::DELETE, "/api/products".to_owned(), "GET, POST"),
        (Method::PUT, format!("/api/products/{id}"), "GET, PATCH"),
        (Method::GET, format!("/api/products/{id}/publish"), "POST"),
        (Method::POST, "/api/search".to_owned(), "GET"),
        (Method::TRACE, "/health/".to_owned(), "GET"),
    ];
    for (method, path, allow) in cases {
        let r = app
            .http
            .request(method.clone(), app.url(&path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("r");
        assert_problem(&r, 405);
        assert_eq!(r.headers()["allow"], allow, "{method} {path}");
    }
    assert_problem(&app.get("/api/nothing-here").await, 404);
    // Wrong content type and malformed JSON are problems too.
    let r = app
        .http
        .patch(app.url(&format!("/api/products/{id}")))
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("r");
    assert_problem(&r, 415);
    let r = app
        .http
        .post(app.url("/api/commands"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{\"product_id\":")
        .send()
        .await
        .expect("r");
    assert_problem(&r, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn query_text_with_a_nul_or_control_character_is_422_never_a_500() {
    let app = TestApp::spawn().await;
    for path in [
        "/api/products?category=a%00b",
        "/api/products?category=a%07b",
        "/api/search?q=a%00b",
        "/api/search?category=%00",
        "/api/search?brand=x%1b",
    ] {
        assert_problem(&app.get(path).await, 422);
        let r = app.get_with_token(path).await;
        assert_problem(&r, 422);
    }
    let long = "c".repeat(101);
    assert_problem(&app.get(&format!("/api/products?category={long}")).await, 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_not_on_the_api_port_and_custom_methods_share_one_label() {
    let app = TestApp::spawn().await;
    assert_problem(&app.get("/metrics").await, 404);
    for m in ["FOOBAR", "BAZ1", "QUUX2"] {
        let r = app
            .http
            .request(
                Method::from_bytes(m.as_bytes()).expect("method"),
                app.url("/api/products"),
            )
            .send()
            .await
            .expect("r");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        let _ = app
            .http
            .request(
                Method::from_bytes(m.as_bytes()).expect("method"),
                app.url(&format!("/x/{m}")),
            )
            .send()
            .await
            .expect("r");
    }
    // The metrics listener answers another method on /metrics with 405 and `Allow` too.
    for m in ["TRACE", "POST"] {
        let r = app
            .http
            .request(Method::from_bytes(m.as_bytes()).expect("method"), &app.metrics_url)
            .send()
            .await
            .expect("r");
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED, "{m} /metrics");
        assert_eq!(r.headers().get("allow").and_then(|v| v.to_str().ok()), Some("GET"));
    }
    let text = app.metrics().await;
    let series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("aliexpress_http_requests_total"))
        .collect();
    assert!(
        series.iter().all(|l| !l.contains("FOOBAR") && !l.contains("/x/")),
        "{series:?}"
    );
    assert!(series.iter().any(|l| l.contains("method=\"other\"")
        && l.contains("route=\"/api/products\"")
        && l.contains("status=\"405\"")));
    assert!(series
        .iter()
        .any(|l| l.contains("method=\"other\"") && l.contains("route=\"unmatched\"")));
}

#[test]
fn serve_refuses_a_token_that_is_both_a_development_write_and_read_token() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_aliexpress"))
        .env("API_TOKENS", "same-secret")
        .env("API_READ_TOKENS", "same-secret")
        .args(["serve", "--bind", "127.0.0.1:0", "--metrics-bind", "127.0.0.1:0"])
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("API_READ_TOKENS") && !err.contains("same-secret"), "{err}");
}
