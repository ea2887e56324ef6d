//! Catalog v2 against the real stack: variants (SKUs unique in the catalog, also under
//! concurrent commands; option values unique in a product), prices per currency in search,
//! the change history, the schemas served, and events that evolve (a topic of version-1 and
//! version-2 events replayed from the earliest offset; a dead letter of an older binary
//! redriven after the upgrade).

use std::time::Duration;

use aliexpress::bus::dlq::{DlqReason, DlqWriter};
use aliexpress::domain::product::{
    self as domain, CreateProduct, EventEnvelope, EventMeta, Money, ProductCommand, UpdateProductDetails,
};
use rdkafka::Message;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, TestEnv, TOKEN};

fn eur(amount_minor: i64) -> Value {
    json!({"amount_minor": amount_minor, "currency": "EUR"})
}

/// A published T-shirt in sizes S and M, priced in EUR (and the S in USD too).
async fn shirt(app: &TestApp, sku: &str) -> Value {
    let r = app
        .post(
            "/api/products",
            json!({"title": format!("Shirt {sku}"), "category": "apparel", "brand": "Tee",
                "attributes": {"material": "cotton", "weight_g": 180, "organic": true},
                "variants": [
                    {"sku": format!("{sku}-S"), "options": {"size": "S"}, "prices": [eur(1500), {"amount_minor": 1700, "currency": "USD"}], "stock": 3},
                    {"sku": format!("{sku}-M"), "options": {"size": "M"}, "prices": [eur(1600)], "stock": 0}
                ]}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let p: Value = r.json().await.expect("json");
    let id = p["id"].as_str().expect("id");
    let r = app.post(&format!("/api/products/{id}/publish"), json!({})).await;
    assert_eq!(r.status(), 200);
    r.json().await.expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn variants_keep_their_skus_options_prices_and_stock_apart() {
    let app = TestApp::spawn().await;
    let p = shirt(&app, "TEE").await;
    let id = p["id"].as_str().expect("id").to_owned();
    assert_eq!(p["variants"].as_array().map(Vec::len), Some(2));
    assert_eq!(p["attributes"]["weight_g"], 180, "typed attribute values");
    assert_eq!(p["owner"], "default");

    // Add L; change its stock and prices; rename its SKU; remove M.
    let r = app
        .post(
            &format!("/api/products/{id}/variants"),
            json!({"sku": "TEE-L", "options": {"size": "L"}, "prices": [eur(1700)]}),
        )
        .await;
    assert_eq!(r.status(), 200);
    let r = app
        .post(&format!("/api/products/{id}/variants/3/stock"), json!({"delta": 4}))
        .await;
    let after: Value = r.json().await.expect("json");
    assert_eq!(after["variants"][2]["stock"], 4);
    assert_eq!(
        after["variants"][0]["stock"], 3,
        "the other variants' stock is untouched"
    );
    let put = app
        .http
        .put(app.url(&format!("/api/products/{id}/variants/3/prices")))
        .bearer_auth(TOKEN)
        .json(&json!({"prices": [eur(1800), {"amount_minor": 2000, "currency": "GBP"}]}))
        .send()
        .await
        .expect("put");
    let after: Value = put.json().await.expect("json");
    assert_eq!(
        after["variants"][2]["prices"],
        json!([eur(1800), {"amount_minor": 2000, "currency": "GBP"}])
    );
    let patch = app
        .http
        .patch(app.url(&format!("/api/products/{id}/variants/3")))
        .bearer_auth(TOKEN)
        .json(&json!({"sku": "TEE-LARGE"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patch.status(), 200);
    let del = app
        .http
        .delete(app.url(&format!("/api/products/{id}/variants/2")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    let after: Value = del.json().await.expect("json");
    let skus: Vec<&str> = after["variants"]
        .as_array()
        .expect("variants")
        .iter()
        .filter_map(|v| v["sku"].as_str())
        .collect();
    assert_eq!(skus, vec!["TEE-S", "TEE-LARGE"]);

    // The freed and renamed SKUs are free for other products; the ones in use are not.
    let other = app.create_product("TEE-M", "Reuses the removed variant's SKU").await;
    assert_eq!(other["variants"][0]["sku"], "TEE-M");
    let taken = app
        .post("/api/products", json!({"sku": "TEE-LARGE", "title": "Clash"}))
        .await;
    assert_eq!(taken.status(), 409);
    let problem: Value = taken.json().await.expect("problem");
    assert_eq!(problem["code"], "sku_taken");

    // Option values are unique in the product; an unknown variant is a 404; the last variant stays.
    let same = app
        .post(
            &format!("/api/products/{id}/variants"),
            json!({"sku": "TEE-S2", "options": {"size": "S"}, "prices": [eur(1)]}),
        )
        .await;
    assert_eq!(same.status(), 409);
    let missing = app
        .post(&format!("/api/products/{id}/variants/9/stock"), json!({"set": 1}))
        .await;
    assert_eq!(missing.status(), 404);
    let bad = app
        .post(
            &format!("/api/products/{id}/variants"),
            json!({"sku": "TEE-X", "options": {"size": "XL"}, "prices": [eur(1), eur(2)]}),
        )
        .await;
    assert_eq!(bad.status(), 422, "one price per currency");
    let oid = other["id"].as_str().expect("id");
    let last = app
        .http
        .delete(app.url(&format!("/api/products/{oid}/variants/1")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("delete");
    assert_eq!(last.status(), 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_commands_claiming_one_sku_let_exactly_one_through() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..6 {
        let p = app.create_product(&format!("RACE-{i}"), "Racer").await;
        ids.push(p["id"].as_str().expect("id").to_owned());
    }
    // Every product renames its only variant's SKU to the same new one, all at once: the
    // catalog-wide SKU table lets one through and refuses the others.
    let renames = ids.iter().map(|id| {
        let app = &app;
        async move {
            app.http
                .patch(app.url(&format!("/api/products/{id}/variants/1")))
                .bearer_auth(TOKEN)
                .json(&json!({"sku": "THE-ONE"}))
                .send()
                .await
                .expect("patch")
                .status()
                .as_u16()
        }
    });
    let statuses = futures::future::join_all(renames).await;
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 1, "{statuses:?}");
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        ids.len() - 1,
        "{statuses:?}"
    );
    assert_eq!(app.env.count("product_skus WHERE sku = 'THE-ONE'").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn search_filters_and_sorts_by_the_price_in_the_currency_asked_for() {
    let app = TestApp::spawn().await;
    let shirt = shirt(&app, "CUR").await;
    // A product priced in USD only.
    let usd = app.create_product("CUR-USD", "Dollar lamp").await;
    let uid = usd["id"].as_str().expect("id");
    app.post(&format!("/api/products/{uid}/publish"), json!({})).await;
    app.env.drain_outbox().await;
    let mut p = app.env.projector(None, None).await;
    app.env.consume_until_idle(&mut p).await;

    let ids = |v: &Value| -> Vec<String> {
        v["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|h| h["product"]["id"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let eur: Value = app
        .get("/api/search?currency=EUR&sort=price_asc")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        ids(&eur),
        vec![shirt["id"].as_str().expect("id").to_owned()],
        "only products priced in EUR"
    );
    let cheap: Value = app
        .get("/api/search?currency=EUR&max_price=1500")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        cheap["total"], 1,
        "the lowest EUR price of the variants (1500) is in range"
    );
    let none: Value = app
        .get("/api/search?currency=EUR&max_price=1400")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(none["total"], 0);
    let usd_sorted: Value = app
        .get("/api/search?currency=USD&sort=price_desc")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        ids(&usd_sorted),
        vec![uid.to_owned(), shirt["id"].as_str().expect("id").to_owned()],
        "1999 before 1700"
    );
    assert_eq!(app.get("/api/search?currency=XXX").await.status(), 422);
    let doc = app.env.document(shirt["id"].as_str().expect("id")).await.expect("doc");
    assert_eq!(doc["_source"]["sku"], json!(["CUR-S", "CUR-M"]));
    assert_eq!(doc["_source"]["options"]["size"], json!(["S", "M"]));
    assert_eq!(doc["_source"]["stock"], 3, "the stock of all variants");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_history_lists_every_version_with_what_changed_who_and_why() {
    let app = TestApp::spawn().await;
    let p = app.create_product("HIS-1", "Desk").await;
    let id = p["id"].as_str().expect("id").to_owned();
    app.post(
        &format!("/api/products/{id}/price"),
        json!({"amount_minor": 2999, "currency": "USD"}),
    )
    .await;
    app.post(&format!("/api/products/{id}/stock"), json!({"set": 9})).await;
    app.post(
        &format!("/api/products/{id}/variants"),
        json!({"sku": "HIS-2", "options": {}, "prices": [eur(5)]}),
    )
    .await; // 409: two variants without options; not a version
    let correlation = Uuid::now_v7();
    let r = app
        .http
        .patch(app.url(&format!("/api/products/{id}")))
        .bearer_auth(TOKEN)
        .header("X-Correlation-Id", correlation.to_string())
        .json(&json!({"title": "Standing desk"}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 200);

    // The history is for the product's seller and the readers of everything, not anonymous callers.
    assert_eq!(app.get(&format!("/api/products/{id}/history")).await.status(), 401);
    let h: Value = app
        .get_with_token(&format!("/api/products/{id}/history"))
        .await
        .json()
        .await
        .expect("json");
    let items = h["items"].as_array().expect("items");
    let types: Vec<&str> = items.iter().filter_map(|e| e["event_type"].as_str()).collect();
    assert_eq!(
        types,
        vec![
            "ProductCreated",
            "ProductPriceChanged",
            "ProductStockAdjusted",
            "ProductDetailsUpdated"
        ]
    );
    assert_eq!(
        items
            .iter()
            .map(|e| e["version"].as_i64().unwrap_or(0))
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let price = &items[1]["changes"][0];
    assert_eq!(price["field"], "variants[1].prices");
    assert_eq!(price["before"], json!([{"amount_minor": 1999, "currency": "USD"}]));
    assert_eq!(price["after"], json!([{"amount_minor": 2999, "currency": "USD"}]));
    assert_eq!(
        items[2]["changes"],
        json!([{"field": "variants[1].stock", "before": 5, "after": 9}])
    );
    assert_eq!(
        items[3]["changes"],
        json!([{"field": "title", "before": "Desk", "after": "Standing desk"}])
    );
    assert_eq!(items[3]["correlation_id"], correlation.to_string());
    let actor = items[0]["actor"].as_str().expect("actor");
    assert!(
        actor.starts_with("token:") && !actor.contains(TOKEN),
        "a name, never the token: {actor}"
    );
    // Paginated by version.
    let first: Value = app
        .get_with_token(&format!("/api/products/{id}/history?limit=3"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(first["next_cursor"], 3);
    let rest: Value = app
        .get_with_token(&format!("/api/products/{id}/history?limit=3&cursor=3"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(rest["next_cursor"], Value::Null);
    assert_eq!(
        app.get_with_token(&format!("/api/products/{id}/history?limit=0"))
            .await
            .status(),
        422
    );
    assert_eq!(
        app.get_with_token(&format!("/api/products/{}/history", Uuid::now_v7()))
            .await
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_serves_the_committed_schemas() {
    let app = TestApp::spawn().await;
    let index: Value = app.get("/schemas/").await.json().await.expect("json");
    let paths: Vec<&str> = index["schemas"]
        .as_array()
        .expect("schemas")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for p in [
        "events/v1/ProductCreated.json",
        "events/v2/VariantAdded.json",
        "commands/AddVariant.json",
    ] {
        assert!(paths.contains(&p), "{p} in {paths:?}");
    }
    for p in paths {
        let r = app.get(&format!("/schemas/{p}")).await;
        assert_eq!(r.status(), 200, "{p}");
        assert_eq!(r.headers()["content-type"], "application/schema+json");
        let served = r.text().await.expect("text");
        let committed =
            std::fs::read_to_string(format!("{}/schemas/{p}", env!("CARGO_MANIFEST_DIR"))).expect("committed");
        assert_eq!(served, committed, "{p}");
    }
    assert_eq!(app.get("/schemas/events/v9/Nope.json").await.status(), 404);
}

/// The events of a version-2 history of one product: single variant, one currency, text
/// attributes (what version 1 could say too).
fn history(id: Uuid, n: usize) -> Vec<EventEnvelope> {
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-30T10:00:00Z")
        .expect("t")
        .to_utc();
    let mut create = CreateProduct::simple(&format!("MIX-{id}"), "Mixed lamp", None, 2);
    create.category = "lighting".into();
    create.attributes = [("colour".to_owned(), "red".into())].into();
    let usd = |a| Money {
        amount_minor: a,
        currency: "USD".into(),
    };
    let cmds = [
        ProductCommand::CreateProduct(create),
        ProductCommand::ChangePrice {
            price: usd(1999),
            variant_id: None,
        },
        ProductCommand::AdjustStock {
            delta: 5,
            variant_id: None,
        },
        ProductCommand::PublishProduct,
        ProductCommand::UpdateProductDetails(UpdateProductDetails {
            title: Some("Mixed lamp, brass".into()),
            ..Default::default()
        }),
        ProductCommand::ChangePrice {
            price: usd(2499),
            variant_id: None,
        },
        ProductCommand::SetStock {
            stock: 1,
            variant_id: None,
        },
    ];
    let mut state = None;
    let mut out = Vec::new();
    for (i, c) in cmds.iter().take(n).enumerate() {
        let at = t0 + chrono::Duration::seconds(i as i64);
        let (next, change) = domain::execute(state.as_ref(), id, c, at).expect("applies");
        out.push(EventEnvelope::new(
            &change,
            &next,
            EventMeta {
                event_id: Uuid::now_v7(),
                causation_id: None,
                correlation_id: None,
                occurred_at: at,
                actor: None,
            },
        ));
        state = Some(next);
    }
    out
}

/// `e` as a version-1 binary wrote it.
fn as_v1(e: &EventEnvelope) -> Value {
    let s = &e.state;
    let v = &s.variants[0];
    let mut data = e.data.clone();
    if let Some(o) = data.as_object_mut() {
        o.remove("variant_id");
    }
    if e.event_type == "ProductCreated" {
        data = json!({"sku": v.sku, "title": s.title, "description": s.description, "category": s.category,
            "brand": s.brand, "attributes": s.attributes, "price": v.prices.first(), "stock": v.stock});
    }
    json!({
        "event_id": e.event_id, "event_type": e.event_type, "schema_version": 1, "aggregate_type": "product",
        "aggregate_id": e.aggregate_id, "aggregate_version": e.aggregate_version, "occurred_at": e.occurred_at,
        "causation_id": e.causation_id, "correlation_id": e.correlation_id, "data": data,
        "state": {"id": s.id, "sku": v.sku, "title": s.title, "description": s.description, "category": s.category,
            "brand": s.brand, "attributes": s.attributes, "price": v.prices.first(), "stock": v.stock,
            "status": s.status, "version": s.version, "created_at": s.created_at, "updated_at": s.updated_at}
    })
}

/// Documents and cache entries of `ids` in `env`.
async fn read_models(env: &TestEnv, ids: &[Uuid]) -> Vec<(Value, Value)> {
    let cache = env.cache();
    let mut out = Vec::new();
    for id in ids {
        let doc = env.document(&id.to_string()).await.expect("doc")["_source"].clone();
        let cached = cache.get(*id).await.expect("cache").expect("cached");
        out.push((doc, serde_json::to_value(cached).expect("json")));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_topic_of_version_1_and_2_events_replayed_from_the_earliest_offset_projects_like_a_version_2_history() {
    let (mixed, pure) = (TestEnv::new().await, TestEnv::new().await);
    // Product 0: written by a version-1 binary only; 1: upgraded midway; 2: version 2 only.
    let ids: Vec<Uuid> = (0..3).map(|_| Uuid::now_v7()).collect();
    for (k, id) in ids.iter().enumerate() {
        for (i, e) in history(*id, 7).iter().enumerate() {
            let old = k == 0 || (k == 1 && i < 3);
            let payload = if old {
                as_v1(e)
            } else {
                serde_json::to_value(e).expect("json")
            };
            mixed
                .produce(
                    &mixed.names.events_topic(),
                    &id.to_string(),
                    payload.to_string().as_bytes(),
                )
                .await;
            pure.produce(
                &pure.names.events_topic(),
                &id.to_string(),
                serde_json::to_vec(e).expect("json").as_slice(),
            )
            .await;
        }
    }
    let mut pm = mixed.projector(None, None).await;
    let o = mixed.consume_until_idle(&mut pm).await;
    assert_eq!((o.received, o.dead_lettered), (21, 0), "{o:?}");
    let mut pp = pure.projector(None, None).await;
    pure.consume_until_idle(&mut pp).await;
    let expected = read_models(&pure, &ids).await;
    assert_eq!(read_models(&mixed, &ids).await, expected);

    // Break the read models, then replay the mixed topic from the earliest offset with
    // Apache Kafka's own tool: the same documents and cache entries come back.
    drop(pm);
    for id in &ids {
        mixed.cache().evict(*id).await.expect("evict");
    }
    let wrapper = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/local/bin/kafka-consumer-groups");
    let out = std::process::Command::new(wrapper)
        .args([
            "--bootstrap-server",
            &mixed.infra.kafka.bootstrap_servers,
            "--group",
            &mixed.names.projection_group(),
            "--topic",
            &mixed.names.events_topic(),
            "--reset-offsets",
            "--to-earliest",
            "--execute",
        ])
        .output()
        .expect("runs");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut again = mixed.projector(None, None).await;
    let o = mixed.consume_until_idle(&mut again).await;
    assert_eq!((o.received, o.dead_lettered), (21, 0), "{o:?}");
    assert_eq!(read_models(&mixed, &ids).await, expected);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_dead_letter_of_a_version_an_older_binary_did_not_know_is_redriven_after_the_upgrade() {
    let app = TestApp::spawn().await;
    let env = &app.env;
    let p = app.create_product("UPG-1", "Upgraded lamp").await;
    let id = p["id"].as_str().expect("id").to_owned();
    env.drain_outbox().await;

    // A version-1 projection (before the upgrade) read the version-2 event and dead-lettered
    // it as such a binary does, then moved on.
    let msgs = env
        .read_topic(&env.names.events_topic(), 1, Duration::from_secs(30))
        .await;
    let event = msgs.iter().find(|m| m.key() == Some(id.as_bytes())).expect("the event");
    let producer =
        aliexpress::bus::producer::build(&crate::helpers::kafka(&env.infra), &Default::default()).expect("producer");
    DlqWriter::new(producer, env.names.events_dlq_topic(), env.names.projection_group())
        .send(
            event,
            &DlqReason {
                stage: "decode",
                class: "unsupported_schema_version",
                message: "schema_version 2 is not supported (expected 1)".into(),
                attempts: 1,
            },
        )
        .await
        .expect("dead-lettered");
    let bin = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_aliexpress"))
            .args(args)
            .envs(env.bin_env())
            .output()
            .expect("runs")
    };
    let moved = bin(&["replay", "--to-latest", "--execute"]);
    assert!(moved.status.success(), "{}", String::from_utf8_lossy(&moved.stderr));

    // Today's binary does not know version 3 either: such an event is dead-lettered with the
    // same class, not guessed at.
    let mut v3: Value = serde_json::from_slice(event.payload().expect("payload")).expect("json");
    v3["schema_version"] = json!(3);
    env.produce(&env.names.events_topic(), &id, v3.to_string().as_bytes())
        .await;
    let mut p = env.projector(None, None).await;
    let o = env.consume_until_idle(&mut p).await;
    assert_eq!((o.received, o.dead_lettered), (1, 1), "{o:?}");
    let listed = String::from_utf8_lossy(&bin(&["dlq", "list"]).stdout).into_owned();
    assert_eq!(listed.matches("unsupported_schema_version").count(), 2, "{listed}");

    // The console says how this binary reads each one.
    let console: Value = app
        .http
        .get(app.url("/console/api/dead-letters"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("console")
        .json()
        .await
        .expect("json");
    let reads: Vec<&str> = console["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter_map(|r| r["reads"].as_str())
        .collect();
    assert!(
        reads
            .iter()
            .any(|r| r.starts_with("reads as version 2 (ProductCreated v1)")),
        "{reads:?}"
    );
    assert!(
        reads.iter().any(|r| r.starts_with("unsupported_schema_version")),
        "{reads:?}"
    );

    // After the upgrade (this binary knows version 2), redriving succeeds for the version-2
    // record; the version-3 one waits for a binary that knows it and is dead-lettered again.
    let run = bin(&["dlq", "redrive", "--all", "--execute"]);
    assert!(
        String::from_utf8_lossy(&run.stdout).contains("2 record(s) redriven"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let o = env.consume_until_idle(&mut p).await;
    assert_eq!((o.received, o.applied, o.dead_lettered), (2, 1, 1), "{o:?}");
    let doc = env.document(&id).await.expect("projected after the redrive");
    assert_eq!(doc["_source"]["owner"], "default");
    assert_eq!(doc["_source"]["sku"], json!(["UPG-1"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_catalog_migrates_to_v2_in_place_and_older_writers_stay_coherent() {
    use diesel_async::RunQueryDsl;
    use diesel_migrations::MigrationHarness;
    let app = TestApp::spawn().await;
    let env = &app.env;
    let url = env.infra.database.url.expose().to_owned();
    // Back to the schema before catalog v2, with a product a version-1 binary wrote.
    let conn = aliexpress::store::pool::connect(&url, Duration::from_secs(60))
        .await
        .expect("conn");
    let mut harness = diesel_async::AsyncMigrationHarness::new(conn);
    let v2 = diesel::migration::MigrationVersion::from("20261206000001");
    while harness.applied_migrations().expect("applied").contains(&v2) {
        harness
            .revert_last_migration(aliexpress::store::pool::MIGRATIONS)
            .expect("revert");
    }
    drop(harness);
    let old = Uuid::now_v7();
    let mut c = aliexpress::store::pool::connect(&url, Duration::from_secs(60))
        .await
        .expect("conn");
    diesel::sql_query(format!(
        "INSERT INTO products (id, sku, title, price_minor, currency, stock, status, version, created_at, updated_at) \
         VALUES ('{old}', 'OLD-1', 'Old lamp', 1500, 'EUR', 4, 'published', 3, now(), now())"
    ))
    .execute(&mut c)
    .await
    .expect("a version-1 row");
    let file = || env.scalar("(SELECT pg_relation_filenode('products'))::bigint");
    let before = file().await;

    // Expand: the table is not rewritten (same file), then the batched backfill.
    let bin = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_aliexpress"))
            .args(args)
            .envs(env.bin_env())
            .output()
            .expect("runs")
    };
    let out = bin(&["migrate"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("20261206000001") && text.contains("1 product(s) given their variants"),
        "{text}"
    );
    assert_eq!(file().await, before, "adding the columns did not rewrite products");
    assert!(String::from_utf8_lossy(&bin(&["migrate"]).stdout).contains("up to date"));
    assert_eq!(
        env.count(&format!("product_skus WHERE sku = 'OLD-1' AND product_id = '{old}'"))
            .await,
        1
    );

    // The migrated product reads as one variant, owned by the default seller.
    let p: Value = app
        .get(&format!("/api/products/{old}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(
        p["variants"],
        json!([{"id": 1, "sku": "OLD-1", "options": {}, "prices": [eur(1500)], "stock": 4}])
    );
    assert_eq!((p["owner"].as_str(), p["version"].as_i64()), (Some("default"), Some(3)));

    // A version-1 binary still running during the rollout: its writes reach the variants.
    diesel::sql_query(format!("UPDATE products SET stock = 9, version = 4 WHERE id = '{old}'"))
        .execute(&mut c)
        .await
        .expect("an old binary's stock change");
    let fresh = Uuid::now_v7();
    diesel::sql_query(format!(
        "INSERT INTO products (id, sku, title, stock, status, version, created_at, updated_at) \
         VALUES ('{fresh}', 'OLD-2', 'Older writer', 2, 'draft', 1, now(), now())"
    ))
    .execute(&mut c)
    .await
    .expect("an old binary's create");
    let r = app
        .post(&format!("/api/products/{old}/stock"), json!({"delta": 1}))
        .await;
    let p: Value = r.json().await.expect("json");
    assert_eq!(p["variants"][0]["stock"], 10, "{p}");
    let f: Value = app
        .get_with_token(&format!("/api/products/{fresh}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(f["variants"][0]["sku"], "OLD-2");
    let clash = app
        .post("/api/products", json!({"sku": "OLD-2", "title": "Clash"}))
        .await;
    assert_eq!(clash.status(), 409, "the old writer's SKU is claimed in the catalog");
}
