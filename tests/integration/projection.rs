use std::time::Duration;

use aliexpress::bus::dlq::dlq_headers;
use aliexpress::worker::projection::ProjectionOutcome;
use aliexpress::worker::Shutdown;
use opensearch::params::{Refresh, VersionType};
use opensearch::IndexParts;
use rdkafka::Message;
use serde_json::{json, Value};

use crate::helpers::{header, wait_until, TestApp, TOKEN};
use rdkafka::consumer::Consumer;

/// Creates, publishes and re-prices a few products through the API and publishes the outbox.
async fn catalog(app: &TestApp) -> Vec<String> {
    let mut ids = Vec::new();
    for (i, (title, brand, cat)) in [
        ("Wireless mouse", "Logi", "electronics"),
        ("Mechanical keyboard", "Keychron", "electronics"),
        ("Espresso machine", "Delonghi", "kitchen"),
    ]
    .iter()
    .enumerate()
    {
        let r = app
            .post(
                "/api/products",
                json!({"sku": format!("SKU-P{i}"), "title": title, "description": format!("A fine {title}"),
            "brand": brand, "category": cat, "price": {"amount_minor": 1000 * (i + 1), "currency": "USD"}, "stock": i}),
            )
            .await;
        let p: Value = r.json().await.expect("json");
        let id = p["id"].as_str().expect("id").to_owned();
        app.post(&format!("/api/products/{id}/publish"), json!({})).await;
        ids.push(id);
    }
    app.post(
        &format!("/api/products/{}/price", ids[0]),
        json!({"amount_minor": 2500, "currency": "USD"}),
    )
    .await;
    app.env.drain_outbox().await;
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn events_become_documents_with_the_right_state_and_search_finds_them() {
    let app = TestApp::spawn().await;
    let ids = catalog(&app).await;
    let mut p = app.env.projector(None, None).await;
    let o = app.env.consume_until_idle(&mut p).await;
    assert_eq!(o.received, 7);
    assert_eq!(o.dead_lettered, 0);

    let doc = app.env.document(&ids[0]).await.expect("indexed");
    assert_eq!(doc["_version"], 3);
    assert_eq!(doc["_source"]["price_minor"], 2500);
    assert_eq!(doc["_source"]["status"], "published");

    // Typo-tolerant full text, facets, highlights.
    let r: Value = app
        .get("/api/search?q=wireles%20mose")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(r["total"], 1, "{r}");
    assert_eq!(r["hits"][0]["product"]["id"], ids[0].as_str());
    assert!(r["hits"][0]["highlight"]["title"][0]
        .as_str()
        .is_some_and(|h| h.contains("<em>")));
    let all: Value = app.get("/api/search?sort=price_asc").await.json().await.expect("json");
    assert_eq!(all["total"], 3);
    assert_eq!(all["hits"][0]["product"]["price_minor"], 2000);
    let cats: Vec<(String, u64)> = all["facets"]["category"]
        .as_array()
        .expect("facets")
        .iter()
        .map(|b| {
            (
                b["value"].as_str().expect("v").to_owned(),
                b["count"].as_u64().expect("c"),
            )
        })
        .collect();
    assert_eq!(cats, vec![("electronics".to_owned(), 2), ("kitchen".to_owned(), 1)]);
    let f: Value = app
        .get("/api/search?category=kitchen&in_stock=true&min_price=1000&max_price=5000")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(f["total"], 1);
    // Draft products leave default search.
    app.post(&format!("/api/products/{}/unpublish", ids[2]), json!({}))
        .await;
    app.env.drain_outbox().await;
    app.env.consume_until_idle(&mut p).await;
    let after: Value = app.get("/api/search").await.json().await.expect("json");
    assert_eq!(after["total"], 2);
    let any: Value = app
        .http
        .get(app.url("/api/search?status=any"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("r")
        .json()
        .await
        .expect("json");
    assert_eq!(any["total"], 3);
    assert_eq!(app.get("/api/search?status=any").await.status(), 401);
    // Bad parameters are 422, user text is never query syntax.
    for q in [
        "size=1000",
        "page=0",
        "min_price=10&max_price=1",
        "sort=cheapest",
        "min_price=abc",
        "unknown=1",
    ] {
        let r = app.get(&format!("/api/search?{q}")).await;
        assert_eq!(r.status(), 422, "{q}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    assert_eq!(app.get("/api/search?q=title:(%22x%22%20OR%20*)").await.status(), 200);

    // The projection group shows up in Apache Kafka's own tool.
    let wrapper = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/bin/kafka-consumer-groups");
    let out = std::process::Command::new(wrapper)
        .args(["--bootstrap-server", &app.env.infra.kafka.bootstrap_servers, "--list"])
        .output()
        .expect("runs");
    assert!(String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.trim() == app.env.names.projection_group()));
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_at_less_than_a_full_batch_are_searchable_though_the_index_never_refreshes_itself() {
    let app = TestApp::spawn().await;
    let ids = catalog(&app).await;
    let env = &app.env;
    let mut p = env.projector(None, None).await;
    // The index does not refresh by itself: only the projection's refresher
    // (`search::refresher`, 100 ms by default) can make these writes searchable.
    let os = env.infra.opensearch.url.expose().trim_end_matches('/').to_owned();
    let alias = env.names.index_alias();
    let http = reqwest::Client::new();
    let r = http
        .put(format!("{os}/{alias}/_settings"))
        .json(&json!({"index": {"refresh_interval": "-1"}}))
        .send()
        .await
        .expect("settings");
    assert!(r.status().is_success(), "{}", r.text().await.unwrap_or_default());
    let shutdown = Shutdown::new();
    let mut received = 0;
    for _ in 0..20 {
        let o = p.process_once(Duration::from_secs(2), &shutdown).await.expect("batch");
        assert!(o.received < 200, "a batch below the batch size: {o:?}");
        received += o.received - o.unfinished;
        if received >= 7 {
            break;
        }
    }
    assert_eq!(received, 7, "the catalog's events projected");
    let found = || async {
        let v: Value = http
            .post(format!("{os}/{alias}/_search"))
            .json(&json!({"size": 0, "track_total_hits": true, "query": {"ids": {"values": ids}}}))
            .send()
            .await
            .expect("search")
            .json()
            .await
            .expect("json");
        v["hits"]["total"]["value"].as_u64() == Some(3)
    };
    assert!(
        wait_until(Duration::from_secs(10), found).await,
        "the projection refreshed the index after writing less than a full batch"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn replayed_and_reordered_events_leave_the_same_documents_and_replays_rewrite_them() {
    let app = TestApp::spawn().await;
    let ids = catalog(&app).await;
    let mut p = app.env.projector(None, None).await;
    app.env.consume_until_idle(&mut p).await;
    let before: Vec<Value> = futures::future::join_all(ids.iter().map(|id| app.env.document(id)))
        .await
        .into_iter()
        .map(|d| d.expect("doc")["_source"].clone())
        .collect();

    // Re-send every event twice, newest first (out of order), into the topic.
    let msgs = app
        .env
        .read_topic(&app.env.names.events_topic(), 7, Duration::from_secs(30))
        .await;
    for _ in 0..2 {
        for m in msgs.iter().rev() {
            app.env
                .produce(
                    &app.env.names.events_topic(),
                    std::str::from_utf8(m.key().expect("key")).expect("utf8"),
                    m.payload().expect("payload"),
                )
                .await;
        }
    }
    let o = app.env.consume_until_idle(&mut p).await;
    assert_eq!(o.received, 14);
    assert_eq!(o.dead_lettered, 0);
    let after: Vec<Value> = futures::future::join_all(ids.iter().map(|id| app.env.document(id)))
        .await
        .into_iter()
        .map(|d| d.expect("doc")["_source"].clone())
        .collect();
    assert_eq!(before, after);

    // A "broken projection" wrote a wrong document at the current version; replaying the
    // topic from the start in a fresh group rewrites it (external_gte).
    let id = &ids[1];
    let alias = app.env.names.index_alias();
    let (alias, doc) = (alias.as_str(), &json!({"id": id, "title": "BROKEN", "version": 2}));
    let search = app.env.search();
    let resp = search
        .call(|os| async move {
            os.index(IndexParts::IndexId(alias, id))
                .version(2)
                .version_type(VersionType::ExternalGte)
                .refresh(Refresh::True)
                .body(doc)
                .send()
                .await
        })
        .await
        .expect("put");
    assert!(resp.status_code().as_u16() < 300);
    let mut replay = app
        .env
        .projector(Some(&format!("{}replay", app.env.names.projection_group())), None)
        .await;
    app.env.consume_until_idle(&mut replay).await;
    let fixed = app.env.document(id).await.expect("doc");
    assert_eq!(fixed["_source"]["title"], "Mechanical keyboard");
    // Redis holds the same state.
    let cached = app.get_with_token(&format!("/api/products/{id}")).await;
    assert_eq!(cached.headers()["x-read-source"], "cache");
}

#[tokio::test(flavor = "multi_thread")]
async fn poison_messages_go_to_the_dlq_with_their_reason_and_the_next_event_is_projected() {
    let app = TestApp::spawn().await;
    let ids = catalog(&app).await;
    let env = &app.env;
    let topic = env.names.events_topic();
    let good = env.read_topic(&topic, 7, Duration::from_secs(30)).await;
    let sample: Value = serde_json::from_slice(good[0].payload().expect("payload")).expect("json");
    let mut unknown_type = sample.clone();
    unknown_type["event_type"] = json!("ProductTeleported");
    let mut bad_schema = sample.clone();
    bad_schema["schema_version"] = json!(99);
    let mut missing = sample.clone();
    missing.as_object_mut().expect("object").remove("state");
    // Valid for our types, refused by OpenSearch: a keyword term over Lucene's 32 KB limit.
    let mut unmappable = sample.clone();
    let other = uuid::Uuid::new_v4().to_string();
    unmappable["aggregate_id"] = json!(other);
    unmappable["state"]["id"] = json!(other);
    unmappable["state"]["category"] = json!("c".repeat(40_000));
    let key = sample["aggregate_id"].as_str().expect("id");
    for poison in [
        b"not json at all".to_vec(),
        serde_json::to_vec(&unknown_type).expect("j"),
        serde_json::to_vec(&bad_schema).expect("j"),
        serde_json::to_vec(&missing).expect("j"),
    ] {
        env.produce(&topic, key, &poison).await;
    }
    env.produce(&topic, key, &serde_json::to_vec(&unmappable).expect("j"))
        .await;
    // The next good event after the poison.
    app.post(&format!("/api/products/{}/stock", ids[1]), json!({"delta": 7}))
        .await;
    env.drain_outbox().await;

    let mut p = env.projector(None, None).await;
    let o = env.consume_until_idle(&mut p).await;
    assert_eq!(o.dead_lettered, 5);
    let doc = env.document(&ids[1]).await.expect("doc");
    assert_eq!(
        doc["_source"]["stock"], 8,
        "the good event after the poison was projected"
    );

    let dlq = env
        .read_topic(&env.names.events_dlq_topic(), 5, Duration::from_secs(30))
        .await;
    let classes: Vec<&str> = dlq
        .iter()
        .map(|m| header(m, dlq_headers::ERROR_CLASS).expect("class"))
        .collect();
    for c in [
        "invalid_json",
        "unknown_event_type",
        "unsupported_schema_version",
        "invalid_envelope",
        "document_rejected",
    ] {
        assert!(classes.contains(&c), "{c} in {classes:?}");
    }
    for m in &dlq {
        assert_eq!(header(m, dlq_headers::ORIGINAL_TOPIC), Some(topic.as_str()));
        assert_eq!(
            header(m, dlq_headers::CONSUMER_GROUP),
            Some(env.names.projection_group().as_str())
        );
        assert!(header(m, dlq_headers::ORIGINAL_OFFSET).is_some());
        assert!(header(m, dlq_headers::ERROR_MESSAGE).is_some());
        assert_eq!(m.key(), Some(key.as_bytes()));
    }
    assert!(env.document(&other).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_opensearch_unreachable_nothing_is_dead_lettered_or_committed_and_all_is_projected_later() {
    let app = TestApp::spawn().await;
    let ids = catalog(&app).await;
    let env = &app.env;
    let mut down = env.projector(None, Some("http://127.0.0.1:1")).await;
    down.projection_mut().settings.retries = 2;
    down.projection_mut().settings.retry_base = Duration::from_millis(10);
    let shutdown = Shutdown::new();
    // A batch holds what the partitions have fetched so far: on a loaded machine the first
    // ones may hold only some of the 7. Every batch must be left unfinished (retried, never
    // applied nor dead-lettered); batches go on until one holds all 7.
    let mut whole_batch = async |what: &str| {
        let mut last = ProjectionOutcome::default();
        for _ in 0..20 {
            last = down
                .process_once(Duration::from_secs(5), &shutdown)
                .await
                .expect("no error: retried, then left unfinished");
            assert_eq!(
                (last.unfinished, last.applied, last.dead_lettered),
                (last.received, 0, 0),
                "{what}: every message left unfinished"
            );
            if last.received == 7 {
                break;
            }
        }
        last
    };
    let first = whole_batch("first").await;
    assert_eq!(
        (first.received, first.unfinished, first.applied, first.dead_lettered),
        (7, 7, 0, 0)
    );
    // Sought back: the same messages come again rather than the stream moving on.
    let again = whole_batch("again").await;
    assert_eq!((again.received, again.unfinished), (7, 7));
    let _ = down.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
    let topic = env.names.events_topic();
    let c = down.consumer.clone();
    let lag = tokio::task::spawn_blocking(move || {
        aliexpress::bus::consumer::lag_blocking(c.as_ref(), &topic, Duration::from_secs(5))
    })
    .await
    .expect("join")
    .expect("lag");
    assert!(
        lag.iter().all(|p| p.committed.is_none()),
        "no offset committed ahead of its effect: {lag:?}"
    );
    assert_eq!(lag.iter().map(|p| p.lag).sum::<i64>(), 7);
    drop(down);
    let dlq = env
        .read_topic(&env.names.events_dlq_topic(), 0, Duration::from_secs(3))
        .await;
    assert!(dlq.is_empty(), "nothing dead-lettered for an outage");

    let mut up = env.projector(None, None).await;
    let o = env.consume_until_idle(&mut up).await;
    assert_eq!(o.received, 7);
    for id in &ids {
        assert!(env.document(id).await.is_some(), "{id} projected after the outage");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_unreachable_search_keeps_up_and_the_cache_catches_up_before_offsets_are_committed() {
    let app = TestApp::spawn().await;
    let ids = catalog(&app).await;
    let env = &app.env;
    let mut p = env.projector(None, None).await;
    p.projection_mut().cache =
        aliexpress::cache::ProductCache::new("redis://127.0.0.1:1", env.names.clone(), Duration::from_secs(60))
            .expect("cache");
    let shutdown = Shutdown::new();
    let mut total = ProjectionOutcome::default();
    for _ in 0..20 {
        let o = p.process_once(Duration::from_secs(2), &shutdown).await.expect("batch");
        total.received += o.received;
        total.applied += o.applied;
        if total.received >= 7 {
            break;
        }
    }
    assert_eq!(
        (total.received, total.applied),
        (7, 7),
        "OpenSearch is not held back by Redis"
    );
    aliexpress::search::index::refresh(&env.search(), &env.names.index_alias())
        .await
        .expect("refresh");
    for id in &ids {
        assert!(env.document(id).await.is_some(), "{id} searchable while Redis is down");
    }
    assert_eq!(p.deferred_cache_writes(), ids.len());
    let _ = p.consumer.commit_consumer_state(rdkafka::consumer::CommitMode::Sync);
    let committed = crate::helpers::committed_offset(&p.consumer, &env.names.events_topic(), 0).await;
    let lag =
        aliexpress::bus::consumer::lag_blocking(p.consumer.as_ref(), &env.names.events_topic(), Duration::from_secs(5))
            .expect("lag");
    assert_eq!(
        lag.iter().map(|l| l.lag).sum::<i64>(),
        7,
        "not committed while the cache is behind ({committed:?})"
    );

    // Redis answers again, having lost what the API wrote through: the deferred writes land
    // and the offsets follow, with no new event.
    for id in &ids {
        env.cache().evict(id.parse().expect("uuid")).await.expect("evict");
    }
    p.projection_mut().cache = env.cache();
    let mut done = false;
    for _ in 0..30 {
        p.process_once(Duration::from_millis(200), &shutdown)
            .await
            .expect("batch");
        if p.deferred_cache_writes() == 0 {
            done = true;
            break;
        }
    }
    assert!(done, "deferred cache writes flushed");
    crate::helpers::wait_committed(&p.consumer, &env.names.events_topic()).await;
    for id in &ids {
        let uuid: uuid::Uuid = id.parse().expect("uuid");
        let cached = env.cache().get(uuid).await.expect("redis").expect("cached again");
        let doc = env.document(id).await.expect("doc");
        assert_eq!(Some(cached.version), doc["_version"].as_i64(), "{id}: cache = index");
    }
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn end_to_end_a_product_written_through_the_api_becomes_searchable() {
    let app = TestApp::spawn().await;
    let spawn = |args: &[&str]| {
        Child(
            std::process::Command::new(env!("CARGO_BIN_EXE_aliexpress"))
                .args(args)
                .envs(app.env.bin_env())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("spawn"),
        )
    };
    let _relay = spawn(&["process-outbox", "--follow"]);
    let _projection = spawn(&["run-product-event-consumer"]);
    let r = app
        .post(
            "/api/products",
            json!({"sku": "E2E", "title": "Solar lantern", "price": {"amount_minor": 1500, "currency": "EUR"}}),
        )
        .await;
    let p: Value = r.json().await.expect("json");
    let id = p["id"].as_str().expect("id").to_owned();
    assert_eq!(
        app.post(&format!("/api/products/{id}/publish"), json!({}))
            .await
            .status(),
        200
    );
    let found = wait_until(Duration::from_secs(60), || {
        let app = &app;
        let id = id.clone();
        async move {
            let r: Value = app.get("/api/search?q=lantern").await.json().await.unwrap_or_default();
            r["hits"][0]["product"]["id"] == json!(id)
        }
    })
    .await;
    assert!(found, "product searchable within the deadline");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_gap_is_applied_with_full_state_and_counted() {
    let app = TestApp::spawn().await;
    let p = app.create_product("SKU-GAP", "Gap lamp").await;
    let id = p["id"].as_str().expect("id").to_owned();
    for d in 1..=2 {
        app.post(&format!("/api/products/{id}/stock"), json!({"delta": d}))
            .await;
    }
    app.env.drain_outbox().await;
    let env = &app.env;
    let topic = env.names.events_topic();
    let all = env.read_topic(&topic, 3, Duration::from_secs(30)).await;
    // A fresh namespace-local topic that holds v1 and v3 only (v2 parked upstream, say).
    let gap_topic = format!("{topic}.gap");
    aliexpress::bus::admin::ensure_topics(
        &aliexpress::bus::KafkaConnection::from_settings(&env.infra.kafka).expect("kafka settings"),
        std::slice::from_ref(&gap_topic),
        1,
        1,
    )
    .await
    .expect("topic");
    let versions: Vec<i64> = all
        .iter()
        .map(|m| {
            serde_json::from_slice::<Value>(m.payload().expect("p")).expect("j")["aggregate_version"]
                .as_i64()
                .expect("v")
        })
        .collect();
    for (m, v) in all.iter().zip(&versions) {
        if *v != 2 {
            env.produce(&gap_topic, &id, m.payload().expect("payload")).await;
        }
    }
    let mut p = env.projector(None, None).await;
    p.consumer.unsubscribe();
    p.consumer.subscribe(&[&gap_topic]).expect("subscribe");
    let o = env.consume_until_idle(&mut p).await;
    assert_eq!((o.received, o.applied, o.gaps), (2, 2, 1));
    let doc = env.document(&id).await.expect("doc");
    assert_eq!(doc["_source"]["stock"], 8, "full state of v3 applied");
}

/// Sets one configuration entry of `topic` on the broker.
async fn set_topic_config(env: &crate::helpers::TestEnv, topic: &str, key: &str, value: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = aliexpress::bus::producer::base_config(
        &aliexpress::bus::KafkaConnection::from_settings(&env.infra.kafka).expect("kafka settings"),
    )
    .create()
    .expect("admin client");
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(key, value);
    let r = admin
        .alter_configs(
            &[change],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .expect("alter configs");
    assert!(r.iter().all(Result::is_ok), "{topic} {key}={value}: {r:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_that_cannot_finish_a_message_does_not_hold_the_others() {
    use aliexpress::telemetry::metrics::PROJECTION_UNFINISHED;
    use aliexpress::worker::projection::{ProductEventConsumer, ProjectionSettings};
    let app = TestApp::spawn().await;
    let env = &app.env;
    let topic = env.names.events_topic();
    // The DLQ refuses every record (each is larger than it allows): the poison below can be
    // neither projected nor dead-lettered, so its partition's pipeline backs off, for 120 s.
    set_topic_config(env, &env.names.events_dlq_topic(), "max.message.bytes", "64").await;
    let projector = |template: ProductEventConsumer, retry: Duration| {
        ProductEventConsumer::new(
            template.consumer.clone(),
            template.projection().search.clone(),
            template.projection().index.clone(),
            template.projection().cache.clone(),
            template.projection().dlq.clone(),
            template.projection().group.clone(),
            ProjectionSettings {
                batch_size: 200,
                batch_wait: Duration::from_millis(50),
                retry_base: retry,
                retry_max: retry,
                retries: 1,
                ..Default::default()
            },
        )
    };
    let template = env.projector(None, None).await;
    let consumer = template.consumer.clone();
    let shutdown = Shutdown::new();
    let role = tokio::spawn({
        let (p, s, t) = (
            projector(template, Duration::from_secs(120)),
            shutdown.clone(),
            topic.clone(),
        );
        async move { p.run_until_stopped(&t, s).await }
    });
    let unfinished_before = PROJECTION_UNFINISHED.get();
    env.producer
        .send(
            rdkafka::producer::FutureRecord::to(&topic)
                .partition(0)
                .key("poison")
                .payload("{not an event"),
            Duration::from_secs(10),
        )
        .await
        .expect("poison produced");
    assert!(
        wait_until(Duration::from_secs(30), || async {
            PROJECTION_UNFINISHED.get() > unfinished_before
        })
        .await,
        "the poison was tried and left unfinished"
    );

    // Products written now land on every partition; partition 0's wait behind the poison.
    let mut ids = Vec::new();
    for i in 0..24 {
        let p = app.create_product(&format!("SKU-LANE-{i}"), "Lane lamp").await;
        ids.push(p["id"].as_str().expect("id").to_owned());
    }
    app.env.drain_outbox().await;
    let msgs = env.read_topic(&topic, ids.len() + 1, Duration::from_secs(30)).await;
    let partition_of = |id: &str| {
        msgs.iter()
            .find(|m| m.key() == Some(id.as_bytes()))
            .map(|m| m.partition())
            .expect("event of each product")
    };
    let (held, free): (Vec<&String>, Vec<&String>) = ids.iter().partition(|id| partition_of(id) == 0);
    assert!(
        !held.is_empty() && !free.is_empty(),
        "products on partition 0 and on others"
    );
    let all_free_indexed = wait_until(Duration::from_secs(30), || async {
        for id in &free {
            if env.document(id).await.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    // One consumer loop would have waited out the 120 s back-off before any of these.
    assert!(
        all_free_indexed,
        "the other partitions went on while partition 0 backed off"
    );
    for id in &held {
        assert!(
            env.document(id).await.is_none(),
            "{id} waits behind the poison on partition 0"
        );
    }
    shutdown.trigger();
    role.await.expect("role task").expect("role stops cleanly");
    let committed = crate::helpers::committed_offset(&consumer, &topic, 0).await;
    assert!(
        committed.is_none_or(|o| o <= 0),
        "nothing committed past the poison: {committed:?}"
    );

    // The DLQ takes records again: a new run dead-letters the poison and projects the rest.
    set_topic_config(env, &env.names.events_dlq_topic(), "max.message.bytes", "1048588").await;
    let shutdown = Shutdown::new();
    let role = tokio::spawn({
        let template = env.projector(None, None).await;
        let (p, s, t) = (
            projector(template, Duration::from_millis(200)),
            shutdown.clone(),
            topic.clone(),
        );
        async move { p.run_until_stopped(&t, s).await }
    });
    let caught_up = wait_until(Duration::from_secs(60), || async {
        for id in &held {
            if env.document(id).await.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    assert!(
        caught_up,
        "partition 0's products projected once the poison is dead-lettered"
    );
    let dead = env
        .read_topic(&env.names.events_dlq_topic(), 1, Duration::from_secs(30))
        .await;
    assert_eq!(dead.len(), 1, "the poison, once");
    assert_eq!(dead[0].payload(), Some(&b"{not an event"[..]));
    shutdown.trigger();
    role.await.expect("role task").expect("role stops cleanly");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_slower_than_its_partition_pauses_it_and_resumes_without_losing_a_message() {
    use aliexpress::telemetry::metrics::PROJECTION_PARTITION_PAUSES;
    use aliexpress::worker::projection::{ProductEventConsumer, ProjectionSettings};
    let app = TestApp::spawn().await;
    let env = &app.env;
    let mut ids = Vec::new();
    for i in 0..40 {
        let p = app.create_product(&format!("SKU-NARROW-{i}"), "Narrow lamp").await;
        ids.push(p["id"].as_str().expect("id").to_owned());
    }
    env.drain_outbox().await;
    let topic = env.names.events_topic();
    let events = env.read_topic(&topic, ids.len(), Duration::from_secs(30)).await;
    assert_eq!(events.len(), ids.len());
    // Every event on one partition, read by a pipeline whose queue holds 2 and whose bulk
    // requests take 20 ms more: the dispatcher outruns it, so the partition is paused and
    // resumed again and again. A message skipped at a resume would be a missing document.
    let narrow = format!("{topic}.narrow");
    aliexpress::bus::admin::ensure_topics(
        &aliexpress::bus::KafkaConnection::from_settings(&env.infra.kafka).expect("kafka settings"),
        std::slice::from_ref(&narrow),
        1,
        1,
    )
    .await
    .expect("topic");
    for m in &events {
        env.produce(&narrow, "k", m.payload().expect("payload")).await;
    }
    let t = env.projector(None, None).await;
    t.consumer.unsubscribe();
    t.consumer.subscribe(&[&narrow]).expect("subscribe");
    let p = ProductEventConsumer::new(
        t.consumer.clone(),
        t.projection().search.clone(),
        t.projection().index.clone(),
        t.projection().cache.clone(),
        t.projection().dlq.clone(),
        t.projection().group.clone(),
        ProjectionSettings {
            batch_size: 1,
            batch_wait: Duration::from_millis(1),
            modelled_bulk_latency: Duration::from_millis(20),
            ..Default::default()
        },
    );
    let pauses_before = PROJECTION_PARTITION_PAUSES.get();
    let shutdown = Shutdown::new();
    let role = tokio::spawn({
        let (s, n) = (shutdown.clone(), narrow.clone());
        async move { p.run_until_stopped(&n, s).await }
    });
    let all = wait_until(Duration::from_secs(60), || async {
        for id in &ids {
            if env.document(id).await.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    assert!(all, "every product projected");
    assert!(
        PROJECTION_PARTITION_PAUSES.get() > pauses_before,
        "the partition was paused while its pipeline caught up"
    );
    shutdown.trigger();
    role.await.expect("role task").expect("role stops cleanly");
    let committed = crate::helpers::committed_offset(&t.consumer, &narrow, 0).await;
    assert_eq!(committed, Some(ids.len() as i64), "committed to the end");
}
