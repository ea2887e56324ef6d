//! A dependency the request does not need never fails it or holds it: Redis stalled or
//! restarted empty (a private `redis-server` we SIGSTOP, SIGCONT and kill by pid), OpenSearch
//! hung (a listener that accepts and never answers), PostgreSQL unreachable (a closed port).

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aliexpress::cache::ProductCache;
use aliexpress::config::Names;

use crate::helpers::{wait_until, TestApp, READ_TOKEN, TOKEN};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A `redis-server` of this test only, controlled by its pid; killed on drop.
pub(crate) struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub(crate) async fn start() -> Self {
        let mut r = Self {
            // Restarted on the same port by the tests.
            port: crate::helpers::restartable_ports(1),
            child: None,
        };
        r.spawn().await;
        r
    }

    pub(crate) async fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--save", "", "--appendonly", "no"])
            .args(["--bind", "127.0.0.1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH");
        self.child = Some(child);
        let url = self.url();
        let up = wait_until(Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let Ok(c) = ProductCache::new(&url, Names::new("probe_"), Duration::from_secs(1)) else {
                    return false;
                };
                c.ping(Duration::from_millis(200)).await.is_ok()
            }
        })
        .await;
        assert!(up, "private redis on port {} answers PING", self.port);
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill runs")
            .success();
        assert!(ok, "kill {sig} {pid}");
    }

    pub(crate) fn stop(&self) {
        self.signal("-STOP");
    }

    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").args(["-CONT", &c.id().to_string()]).status();
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The cache the API gets for `url`: the same constructor `serve` uses, with `serve`'s near
/// cache.
pub(crate) fn api_cache(url: &str, names: &Names) -> ProductCache {
    ProductCache::for_requests(
        aliexpress::cache::RedisEndpoint::new(url).with_near_cache(Some(aliexpress::cache::NearSettings::default())),
        names.clone(),
        Duration::from_secs(3600),
        aliexpress::cache::RequestBounds::default(),
    )
    .expect("lazy cache")
}

pub(crate) async fn app_on_redis(redis: &PrivateRedis) -> TestApp {
    let url = redis.url();
    TestApp::spawn_with(move |s| s.catalog = s.catalog.with_cache(api_cache(&url, &s.names))).await
}

fn product_body(sku: &str) -> Value {
    json!({"sku": sku, "title": "Lamp", "price": {"amount_minor": 1000, "currency": "EUR"}, "stock": 3})
}

/// Each request answers within `bound`; returns (status, elapsed).
async fn timed(req: reqwest::RequestBuilder, bound: Duration) -> (StatusCode, Duration) {
    let started = Instant::now();
    let r = req.timeout(bound).send().await;
    let took = started.elapsed();
    match r {
        Ok(r) => (r.status(), took),
        Err(e) => panic!("no answer within {bound:?} ({took:?}): {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_stalled_reads_and_writes_answer_quickly_from_postgres_and_the_pool_holds() {
    let redis = PrivateRedis::start().await;
    let app = app_on_redis(&redis).await;
    let mut ids = Vec::new();
    for i in 0..4 {
        let p = app.create_product(&format!("SKU-STALL-{i}"), "Lamp").await;
        ids.push(p["id"].as_str().expect("id").to_owned());
    }
    // Warm the cache so the stall hides entries that are about to go stale.
    for id in &ids {
        assert_eq!(app.get_with_token(&format!("/api/products/{id}")).await.status(), 200);
    }

    redis.stop();
    let bound = Duration::from_secs(2);
    // 50 reads and 10 writes at once against a pool of 8 Postgres connections.
    let reads = (0..50).map(|i| {
        let id = &ids[i % ids.len()];
        timed(
            app.http
                .get(app.url(&format!("/api/products/{id}")))
                .bearer_auth(READ_TOKEN),
            bound,
        )
    });
    let writes = (0..10).map(|i| {
        let id = &ids[i % ids.len()];
        timed(
            app.http
                .post(app.url(&format!("/api/products/{id}/stock")))
                .bearer_auth(TOKEN)
                .json(&json!({"delta": 1})),
            bound,
        )
    });
    let started = Instant::now();
    let (reads, writes) = tokio::join!(join_all(reads), join_all(writes));
    let all = started.elapsed();
    for (status, took) in reads.iter().chain(writes.iter()) {
        assert_eq!(*status, StatusCode::OK, "answered {status} after {took:?}");
    }
    assert!(all < bound, "60 requests took {all:?} with Redis stalled");

    // While stalled, a read sees the writes just made (from Postgres).
    let id = &ids[0];
    let r = app
        .http
        .get(app.url(&format!("/api/products/{id}")))
        .bearer_auth(READ_TOKEN)
        .timeout(bound)
        .send()
        .await
        .expect("read");
    assert_eq!(r.status(), 200);
    let during: Value = r.json().await.expect("json");
    let stock_now = during["variants"][0]["stock"].as_i64().expect("stock");
    assert!(stock_now > 3, "the stalled cache's stale entry was served: {during}");

    // Back from the stall, the entries it missed are not served stale.
    redis.resume();
    let fresh = wait_until(Duration::from_secs(10), || async {
        let r = app.get_with_token(&format!("/api/products/{id}")).await;
        let source = r.headers()["x-read-source"].to_str().unwrap_or_default().to_owned();
        let p: Value = r.json().await.expect("json");
        assert!(
            p["variants"][0]["stock"].as_i64().expect("stock") >= stock_now,
            "stale read after the stall: {p}"
        );
        source == "cache"
    })
    .await;
    assert!(fresh, "the cache serves again after Redis returns");
    let text = app.metrics().await;
    assert!(text.contains("aliexpress_cache_breaker_state"), "{text}");
    assert!(text.contains("aliexpress_cache_request_failures_total"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_restarted_empty_reads_stay_correct_and_refill() {
    let mut redis = PrivateRedis::start().await;
    let app = app_on_redis(&redis).await;
    let p = app.create_product("SKU-EMPTY", "Chair").await;
    let id = p["id"].as_str().expect("id").to_owned();
    let r = app.post(&format!("/api/products/{id}/stock"), json!({"set": 9})).await;
    assert_eq!(r.status(), 200);
    let g = app.get_with_token(&format!("/api/products/{id}")).await;
    assert_eq!(g.headers()["x-read-source"], "cache");

    redis.kill();
    // Down: reads come from Postgres, quickly.
    let (status, took) = timed(
        app.http
            .get(app.url(&format!("/api/products/{id}")))
            .bearer_auth(READ_TOKEN),
        Duration::from_secs(2),
    )
    .await;
    assert_eq!(status, 200, "read with Redis down took {took:?}");
    let r = app.post(&format!("/api/products/{id}/stock"), json!({"set": 7})).await;
    assert_eq!(r.status(), 200);

    redis.spawn().await;
    let refilled = wait_until(Duration::from_secs(10), || async {
        let r = app.get_with_token(&format!("/api/products/{id}")).await;
        assert_eq!(r.status(), 200);
        let source = r.headers()["x-read-source"].to_str().unwrap_or_default().to_owned();
        let p: Value = r.json().await.expect("json");
        assert_eq!(p["variants"][0]["stock"], 7, "read after restart: {p}");
        assert_eq!(p["version"], 3, "read after restart: {p}");
        source == "cache"
    })
    .await;
    assert!(refilled, "reads refill the empty cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_opensearch_hung_search_answers_503_with_retry_after_within_its_bound() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    // Accepts every connection and never answers.
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let app = TestApp::spawn_with(move |s| {
        s.search = aliexpress::search::SearchClient::new(&format!("http://127.0.0.1:{port}"), Duration::from_secs(30))
            .expect("client");
    })
    .await;
    let started = Instant::now();
    let r = app
        .http
        .get(app.url("/api/search?q=lamp"))
        .timeout(Duration::from_secs(6))
        .send()
        .await
        .expect("search answers before the client gives up");
    let took = started.elapsed();
    assert_eq!(r.status(), 503);
    assert!(took < Duration::from_secs(4), "search took {took:?}");
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["status"], 503);
}

#[tokio::test(flavor = "multi_thread")]
async fn with_postgres_unreachable_reads_and_writes_answer_503_with_retry_after() {
    let closed = free_port();
    let app = TestApp::spawn_with(move |s| {
        s.catalog = s.catalog.with_pool(
            aliexpress::store::build_pool(
                &format!("postgres://aliexpress:aliexpress@127.0.0.1:{closed}/aliexpress"),
                2,
                Duration::from_secs(5),
            )
            .expect("lazy pool"),
        );
    })
    .await;
    let missing = uuid::Uuid::new_v4();
    let read = app.get(&format!("/api/products/{missing}")).await;
    let write = app.post("/api/products", product_body("SKU-DOWN")).await;
    for r in [read, write] {
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["content-type"], "application/problem+json");
        assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());
        let body: Value = r.json().await.expect("json");
        let detail = body["detail"].as_str().expect("detail");
        assert!(!detail.contains("127.0.0.1"), "the cause stays in the logs: {detail}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_several_opensearch_urls_a_node_that_refuses_connections_costs_no_request() {
    // A port nothing listens on (refuses every connection) listed first, then the real node.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let real = std::env::var("OPENSEARCH_URL").unwrap_or_else(|_| "http://127.0.0.1:9200".into());
    let client =
        aliexpress::search::SearchClient::new(&format!("{dead},{real}"), Duration::from_secs(5)).expect("client");
    // Requests take the nodes in turn: every one of them, whichever node is its turn, answers.
    for i in 0..6 {
        let status = client.health(Duration::from_secs(5)).await;
        assert!(
            matches!(status.as_deref(), Ok("green" | "yellow")),
            "request {i}: {status:?}"
        );
    }
    // Only dead nodes: the error says so (no endless loop between them).
    let other_dead = format!("http://127.0.0.1:{}", free_port());
    let client =
        aliexpress::search::SearchClient::new(&format!("{dead},{other_dead}"), Duration::from_secs(5)).expect("client");
    assert!(client.health(Duration::from_secs(5)).await.is_err());
}

/// A checkout costs no PING, so a connection must leave the pool by itself once it cannot be
/// trusted: an error reply keeps it, a command abandoned before its answer (a timeout) does not.
#[tokio::test(flavor = "multi_thread")]
async fn a_redis_connection_is_reused_after_an_error_reply_and_replaced_after_an_abandoned_command() {
    use aliexpress::cache::redis_pool::{RedisManager, RedisPool};
    let env = crate::helpers::TestEnv::new().await;
    let manager =
        RedisManager::new(&aliexpress::cache::RedisEndpoint::from_settings(&env.infra.redis).expect("redis settings"))
            .expect("manager");
    let pool = RedisPool::builder(manager)
        .max_size(1)
        .runtime(deadpool::Runtime::Tokio1)
        .build()
        .expect("pool");
    let client_id = || async {
        let mut c = pool.get().await.expect("connection");
        let id: i64 = redis::cmd("CLIENT")
            .arg("ID")
            .query_async(&mut *c)
            .await
            .expect("CLIENT ID");
        id
    };
    let first = client_id().await;

    {
        let mut c = pool.get().await.expect("connection");
        let reply: redis::RedisResult<i64> = redis::cmd("INCR")
            .arg("no-such-command-arity")
            .arg("x")
            .query_async(&mut *c)
            .await;
        assert!(reply.is_err(), "INCR with two arguments is an error reply");
        assert!(!c.failed(), "an error reply is an answer");
    }
    assert_eq!(client_id().await, first, "the connection stays after an error reply");

    {
        let mut c = pool.get().await.expect("connection");
        // BLPOP on an empty key waits its 2 s; the caller gives up after 50 ms.
        let waited = tokio::time::timeout(
            Duration::from_millis(50),
            redis::cmd("BLPOP")
                .arg(env.names.product_cache_key(&uuid::Uuid::now_v7()))
                .arg(2)
                .query_async::<Option<(String, String)>>(&mut *c),
        )
        .await;
        assert!(waited.is_err(), "BLPOP was abandoned");
        assert!(c.failed(), "an abandoned command marks the connection");
    }
    assert_ne!(
        client_id().await,
        first,
        "the connection is replaced after an abandoned command"
    );
}

/// The cache's reads share one multiplexed connection, which must leave by itself once it
/// cannot be trusted: an error reply keeps it, a command abandoned before its answer does not.
#[tokio::test(flavor = "multi_thread")]
async fn the_shared_read_connection_stays_after_an_error_reply_and_is_replaced_after_an_abandoned_command() {
    use aliexpress::cache::redis_pool::{RedisManager, SharedConnection};
    let env = crate::helpers::TestEnv::new().await;
    let manager =
        RedisManager::new(&aliexpress::cache::RedisEndpoint::from_settings(&env.infra.redis).expect("redis settings"))
            .expect("manager");
    let shared = SharedConnection::new(manager);
    let client_id = || async {
        shared
            .query::<i64>(redis::cmd("CLIENT").arg("ID"))
            .await
            .expect("CLIENT ID")
    };
    let first = client_id().await;
    assert_eq!(client_id().await, first, "commands share one connection");

    let reply = shared
        .query::<i64>(redis::cmd("INCR").arg("no-such-command-arity").arg("x"))
        .await;
    assert!(reply.is_err(), "INCR with two arguments is an error reply");
    assert_eq!(client_id().await, first, "the connection stays after an error reply");

    // BLPOP on an empty key waits its 2 s; the caller gives up after 50 ms.
    let key = env.names.product_cache_key(&uuid::Uuid::now_v7());
    let mut blpop = redis::cmd("BLPOP");
    blpop.arg(key).arg(2);
    let waited = tokio::time::timeout(
        Duration::from_millis(50),
        shared.query::<Option<(String, String)>>(&blpop),
    )
    .await;
    assert!(waited.is_err(), "BLPOP was abandoned");
    assert_ne!(
        client_id().await,
        first,
        "the connection is replaced after an abandoned command"
    );
}
