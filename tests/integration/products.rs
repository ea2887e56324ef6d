use diesel_async::RunQueryDsl;
use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{TestApp, READ_TOKEN, TOKEN};

async fn outbox_rows(app: &TestApp, id: &str) -> Vec<(i64, String)> {
    #[derive(diesel::QueryableByName)]
    struct Row {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        aggregate_version: i64,
        #[diesel(sql_type = diesel::sql_types::Text)]
        event_type: String,
    }
    let mut c = app.env.pool.get().await.expect("conn");
    let rows: Vec<Row> = diesel::sql_query(format!(
        "SELECT aggregate_version, event_type FROM outbox WHERE aggregate_id = '{id}' ORDER BY id"
    ))
    .load(&mut c)
    .await
    .expect("rows");
    rows.into_iter().map(|r| (r.aggregate_version, r.event_type)).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn create_answers_201_with_location_etag_and_writes_one_outbox_row() {
    let app = TestApp::spawn().await;
    let r = app
        .post(
            "/api/products",
            json!({"sku": "SKU-1", "title": "Mouse", "price": {"amount_minor": 500, "currency": "EUR"}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let location = r.headers()["location"].to_str().expect("ascii").to_owned();
    assert_eq!(r.headers()["etag"], "\"1\"");
    let p: Value = r.json().await.expect("json");
    let id = p["id"].as_str().expect("id");
    assert_eq!(location, format!("/api/products/{id}"));
    assert_eq!(p["version"], 1);
    assert_eq!(p["status"], "draft");
    assert_eq!(outbox_rows(&app, id).await, vec![(1, "ProductCreated".to_owned())]);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_write_leaves_exactly_one_outbox_row_with_its_version() {
    let app = TestApp::spawn().await;
    let p = app.create_product("SKU-W", "Keyboard").await;
    let id = p["id"].as_str().expect("id");
    let steps: Vec<(reqwest::Method, String, Value)> = vec![
        (
            reqwest::Method::PATCH,
            format!("/api/products/{id}"),
            json!({"title": "Mechanical keyboard"}),
        ),
        (
            reqwest::Method::POST,
            format!("/api/products/{id}/price"),
            json!({"amount_minor": 4999, "currency": "USD"}),
        ),
        (
            reqwest::Method::POST,
            format!("/api/products/{id}/stock"),
            json!({"delta": 3}),
        ),
        (
            reqwest::Method::POST,
            format!("/api/products/{id}/stock"),
            json!({"set": 1}),
        ),
        (reqwest::Method::POST, format!("/api/products/{id}/publish"), json!({})),
        (reqwest::Method::POST, format!("/api/products/{id}/archive"), json!({})),
    ];
    for (i, (method, path, body)) in steps.into_iter().enumerate() {
        let r = app
            .http
            .request(method, app.url(&path))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), StatusCode::OK, "{path}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["version"], i as i64 + 2);
    }
    let rows = outbox_rows(&app, id).await;
    let types: Vec<&str> = rows.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(
        types,
        [
            "ProductCreated",
            "ProductDetailsUpdated",
            "ProductPriceChanged",
            "ProductStockAdjusted",
            "ProductStockAdjusted",
            "ProductPublished",
            "ProductArchived"
        ]
    );
    assert_eq!(
        rows.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
        (1..=7).collect::<Vec<_>>()
    );
    // Archived accepts nothing more: a conflict with the product's state (RFC 9110 409), not a
    // field error; the same request is valid against another state.
    let r = app
        .post(&format!("/api/products/{id}/stock"), json!({"delta": 1}))
        .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_that_fails_midway_leaves_neither_state_nor_outbox_row() {
    let app = TestApp::spawn().await;
    let p = app.create_product("SKU-T", "Lamp").await;
    let id = p["id"].as_str().expect("id");
    // Make the outbox insert of a price change fail inside the write transaction.
    let mut c = app.env.pool.get().await.expect("conn");
    diesel::sql_query(
        "CREATE FUNCTION fail_price() RETURNS trigger AS $$ BEGIN \
           IF NEW.event_type = 'ProductPriceChanged' THEN RAISE EXCEPTION 'injected failure'; END IF; \
           RETURN NEW; END $$ LANGUAGE plpgsql",
    )
    .execute(&mut c)
    .await
    .expect("function");
    diesel::sql_query("CREATE TRIGGER fail_price BEFORE INSERT ON outbox FOR EACH ROW EXECUTE FUNCTION fail_price()")
        .execute(&mut c)
        .await
        .expect("trigger");
    let r = app
        .post(
            &format!("/api/products/{id}/price"),
            json!({"amount_minor": 7777, "currency": "USD"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = r.json().await.expect("problem");
    assert_eq!(body["detail"], "internal error", "no internals leak");
    let now: Value = app
        .get_with_token(&format!("/api/products/{id}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(now["version"], 1);
    assert_eq!(now["variants"][0]["prices"][0]["amount_minor"], 1999);
    assert_eq!(outbox_rows(&app, id).await.len(), 1);
    assert_eq!(
        app.env
            .count(&format!("products WHERE id = '{id}' AND version = 1"))
            .await,
        1
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_updates_with_the_same_version_one_wins_one_gets_412() {
    let app = TestApp::spawn().await;
    let p = app.create_product("SKU-C", "Chair").await;
    let id = p["id"].as_str().expect("id").to_owned();
    let reqs = (0..2).map(|i| {
        let app = &app;
        let id = id.clone();
        async move {
            app.http
                .patch(app.url(&format!("/api/products/{id}")))
                .bearer_auth(TOKEN)
                .header("If-Match", "\"1\"")
                .json(&json!({"title": format!("Chair {i}")}))
                .send()
                .await
                .expect("request")
                .status()
        }
    });
    let mut statuses: Vec<u16> = join_all(reqs).await.into_iter().map(|s| s.as_u16()).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, vec![200, 412]);
    assert_eq!(outbox_rows(&app, &id).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_reads_from_the_database_each_answer_their_own_product() {
    // Batched reads (one query for the reads waiting together) answer each caller with the
    // product it asked for, the same product to each of its callers, and a 404 to an unknown
    // id, whatever batch they share.
    let app = TestApp::spawn().await;
    // 40 reads: within the admission bound (64 in flight).
    let ids: Vec<uuid::Uuid> = (0..12).map(|_| uuid::Uuid::now_v7()).collect();
    let values: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            format!(
                "('{id}', 'BATCH-{i}', 'Lamp {i}', {}, 'EUR', {i}, 'published', 1, now(), now())",
                100 + i
            )
        })
        .collect();
    let mut conn = aliexpress::store::pool::get(app.state.catalog.pool())
        .await
        .expect("conn");
    // Written to Postgres only: never cached, so every first read goes to the database.
    diesel::sql_query(format!(
        "INSERT INTO products (id, sku, title, price_minor, currency, stock, status, version, created_at, updated_at) VALUES {}",
        values.join(", ")
    ))
    .execute(&mut conn)
    .await
    .expect("seed");
    drop(conn);
    let unknown: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::now_v7()).collect();
    let asked: Vec<(Option<usize>, uuid::Uuid)> = (0..3)
        .flat_map(|_| ids.iter().enumerate().map(|(i, id)| (Some(i), *id)))
        .chain(unknown.iter().map(|id| (None, *id)))
        .collect();
    let paths: Vec<String> = asked.iter().map(|(_, id)| format!("/api/products/{id}")).collect();
    let answers = join_all(paths.iter().map(|p| app.get(p))).await;
    let mut from_database = 0;
    for ((i, id), r) in asked.iter().zip(answers) {
        let Some(i) = i else {
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "unknown {id}");
            continue;
        };
        let status = r.status();
        assert_eq!(
            status,
            StatusCode::OK,
            "product {i}: {}",
            r.text().await.unwrap_or_default()
        );
        from_database += usize::from(r.headers()["x-read-source"] == "database");
        let body: Value = r.json().await.expect("json");
        assert_eq!(
            (body["id"].as_str(), body["title"].as_str()),
            (Some(id.to_string().as_str()), Some(format!("Lamp {i}").as_str())),
            "the answer to a read of product {i}"
        );
    }
    assert!(
        from_database >= ids.len(),
        "each product's first read came from the database"
    );
}

/// ETag, content type and body of the first read of product `id` (within 5 s) whose
/// `X-Read-Source` is `source`; `None` if none was.
async fn read_from(
    app: &TestApp,
    id: &str,
    source: &str,
) -> Option<((reqwest::header::HeaderValue, reqwest::header::HeaderValue), Vec<u8>)> {
    let found = std::sync::Mutex::new(None);
    let seen = crate::helpers::wait_until(std::time::Duration::from_secs(5), || async {
        let g = app.get_with_token(&format!("/api/products/{id}")).await;
        if g.headers()["x-read-source"] != source {
            return false;
        }
        let headers = (g.headers()["etag"].clone(), g.headers()["content-type"].clone());
        *found.lock().expect("read") = Some((headers, g.bytes().await.expect("body").to_vec()));
        true
    })
    .await;
    seen.then(|| found.into_inner().expect("read")).flatten()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_get_right_after_a_write_sees_that_version_or_later() {
    let app = TestApp::spawn().await;
    let p = app.create_product("SKU-R", "Desk").await;
    let id = p["id"].as_str().expect("id");
    for i in 0..5 {
        let r = app
            .post(&format!("/api/products/{id}/stock"), json!({"delta": 1}))
            .await;
        let written: Value = r.json().await.expect("json");
        let g = app.get_with_token(&format!("/api/products/{id}")).await;
        assert_eq!(g.headers()["etag"], format!("\"{}\"", written["version"]));
        assert!(g.headers().contains_key("x-read-source"));
        let read: Value = g.json().await.expect("json");
        assert!(read["version"].as_i64() >= written["version"].as_i64(), "iteration {i}");
    }
    // A cache miss falls back to Postgres and says so (once the API heard of the eviction:
    // Redis tells its near cache that the key changed).
    app.env
        .cache()
        .evict(uuid::Uuid::parse_str(id).expect("uuid"))
        .await
        .expect("evict");
    let from_db = read_from(&app, id, "database").await;
    let ((db_etag, db_type), from_db) = from_db.expect("the evicted entry is still served");
    // The database read was written back to Redis without the reader waiting (it rides on the
    // worker's next cache read, or goes alone within milliseconds); a hit then serves the
    // stored bytes as they are: the same body and headers as the database read.
    let hit = read_from(&app, id, "cache").await;
    let ((etag, content_type), body) = hit.expect("the database read was never written back to the cache");
    assert_eq!((&etag, &content_type), (&db_etag, &db_type));
    assert_eq!(body, from_db, "cache hit body = database read body");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_problem_json_never_a_500() {
    let app = TestApp::spawn().await;
    let url = app.url("/api/products");
    let c = &app.http;
    let malformed = c
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("r");
    assert_eq!(malformed.status(), 400);
    assert_eq!(malformed.headers()["content-type"], "application/problem+json");
    let invalid = c
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&json!({"sku": "S", "title": "x".repeat(201)}))
        .send()
        .await
        .expect("r");
    assert_eq!(invalid.status(), 422);
    let body: Value = invalid.json().await.expect("json");
    assert_eq!(body["errors"][0]["field"], "title");
    let currency = c
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&json!({"sku": "S", "title": "t", "price": {"amount_minor": 1, "currency": "XXX"}}))
        .send()
        .await
        .expect("r");
    assert_eq!(currency.status(), 422);
    let wrong_type = c
        .post(&url)
        .bearer_auth(TOKEN)
        .json(&json!({"sku": 5, "title": "t"}))
        .send()
        .await
        .expect("r");
    assert_eq!(wrong_type.status(), 422);
    let big = c
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(vec![b' '; 70 * 1024])
        .send()
        .await
        .expect("r");
    assert_eq!(big.status(), 413);
    let media = c
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .expect("r");
    assert_eq!(media.status(), 415);
    let unknown = app.get(&format!("/api/products/{}", uuid::Uuid::new_v4())).await;
    assert_eq!(unknown.status(), 404);
    let not_uuid = app.get("/api/products/not-a-uuid").await;
    assert_eq!(not_uuid.status(), 400);
    let bad_etag = c
        .patch(app.url(&format!("/api/products/{}", uuid::Uuid::new_v4())))
        .bearer_auth(TOKEN)
        .header("If-Match", "abc")
        .json(&json!({"title": "x"}))
        .send()
        .await
        .expect("r");
    assert_eq!(bad_etag.status(), 422);
    let dup1 = app.post("/api/products", json!({"sku": "DUP", "title": "a"})).await;
    assert_eq!(dup1.status(), 201);
    let dup2 = app.post("/api/products", json!({"sku": "DUP", "title": "b"})).await;
    assert_eq!(dup2.status(), 409);
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_need_a_write_token_reads_are_public() {
    let app = TestApp::spawn().await;
    let url = app.url("/api/products");
    let body = json!({"sku": "A", "title": "t"});
    assert_eq!(app.http.post(&url).json(&body).send().await.expect("r").status(), 401);
    let anonymous_garbage = app
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{")
        .send()
        .await
        .expect("r");
    assert_eq!(
        anonymous_garbage.status(),
        401,
        "credentials are checked before the body"
    );
    assert_eq!(
        app.http
            .post(&url)
            .bearer_auth("wrong")
            .json(&body)
            .send()
            .await
            .expect("r")
            .status(),
        401
    );
    assert_eq!(
        app.http
            .post(&url)
            .bearer_auth(READ_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("r")
            .status(),
        403
    );
    assert_eq!(
        app.http
            .post(&url)
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("r")
            .status(),
        201
    );
    assert_eq!(app.http.get(&url).send().await.expect("r").status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn listing_pages_with_a_keyset_cursor_and_filters() {
    let app = TestApp::spawn().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let p = app.create_product(&format!("SKU-L{i}"), &format!("Item {i}")).await;
        ids.push(p["id"].as_str().expect("id").to_owned());
    }
    app.post(&format!("/api/products/{}/publish", ids[0]), json!({})).await;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/products?limit=2&cursor={c}"),
            None => "/api/products?limit=2".into(),
        };
        let page: Value = app.get_with_token(&q).await.json().await.expect("json");
        for p in page["items"].as_array().expect("items") {
            seen.push(p["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    ids.sort();
    assert_eq!(seen, ids);
    let published: Value = app
        .get("/api/products?status=published")
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(published["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(app.get("/api/products?status=bogus").await.status(), 422);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_lists_the_handlers() {
    let app = TestApp::spawn().await;
    let doc: Value = app.get("/openapi.json").await.json().await.expect("json");
    for path in [
        "/api/products",
        "/api/products/{id}",
        "/api/products/{id}/price",
        "/api/commands",
        "/api/commands/{id}",
        "/api/search",
    ] {
        assert!(doc["paths"].get(path).is_some(), "missing {path}");
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
}

/// The API's create does not read and lock its freshly made id first; should the id be taken
/// after all, the transaction fails on the primary key and writes nothing (no second outbox
/// row, the product unchanged).
#[tokio::test(flavor = "multi_thread")]
async fn a_create_on_a_fresh_id_that_is_taken_after_all_fails_and_writes_nothing() {
    use aliexpress::app::execute::{run_command, ExecuteOutcome};
    let app = TestApp::spawn().await;
    let id = uuid::Uuid::now_v7();
    let opts = direct_create(&app, false);
    let mut c = app.env.pool.get().await.expect("conn");
    let first = run_command(&mut c, id, &lamp("SKU-FRESH-1"), &opts)
        .await
        .expect("first create");
    assert!(matches!(first, ExecuteOutcome::Applied(_)), "{first:?}");
    let again = run_command(&mut c, id, &lamp("SKU-FRESH-2"), &opts).await;
    assert!(again.is_err(), "a second create on the same id must fail: {again:?}");
    drop(c);
    assert_eq!(
        outbox_rows(&app, &id.to_string()).await,
        vec![(1, "ProductCreated".to_owned())]
    );
    let r = app.get_with_token(&format!("/api/products/{id}")).await;
    let p: Value = r.json().await.expect("json");
    assert_eq!(p["variants"][0]["sku"], "SKU-FRESH-1", "{p}");
}

/// A write's statements are prepared once per connection and kept (`store::prepared`): after
/// three creates and two stock changes on one connection, Postgres holds one prepared statement
/// for each of them. diesel alone prepares these anew on every run and closes them after, so
/// none would be held.
#[tokio::test(flavor = "multi_thread")]
async fn a_writes_statements_are_prepared_once_per_connection_and_kept() {
    use aliexpress::app::execute::{run_command, ExecuteOutcome};
    use aliexpress::domain::product::ProductCommand;
    #[derive(diesel::QueryableByName, Debug)]
    struct Held {
        #[diesel(sql_type = diesel::sql_types::Text)]
        statement: String,
    }
    let app = TestApp::spawn().await;
    let mut opts = direct_create(&app, true);
    let mut c = app.env.pool.get().await.expect("conn");
    let ids: Vec<uuid::Uuid> = (0..3).map(|_| uuid::Uuid::now_v7()).collect();
    for (n, id) in ids.iter().enumerate() {
        let create = lamp(&format!("SKU-KEPT-{n}"));
        let done = run_command(&mut c, *id, &create, &opts).await.expect("create");
        assert!(matches!(done, ExecuteOutcome::Applied(_)), "{done:?}");
    }
    opts.fresh_id = false;
    for id in &ids[..2] {
        let stock = ProductCommand::SetStock {
            stock: 7,
            variant_id: None,
        };
        let done = run_command(&mut c, *id, &stock, &opts).await.expect("set stock");
        assert!(matches!(done, ExecuteOutcome::Applied(_)), "{done:?}");
    }
    let held: Vec<Held> = diesel::sql_query("SELECT statement FROM pg_prepared_statements")
        .load(&mut c)
        .await
        .expect("prepared statements");
    for start in [
        "INSERT INTO \"products\"",
        "UPDATE \"products\"",
        "INSERT INTO \"product_skus\"",
        "INSERT INTO \"outbox\"",
        "SELECT set_config('synchronous_commit', 'off', true), pg_notify(",
    ] {
        let n = held.iter().filter(|h| h.statement.starts_with(start)).count();
        assert_eq!(
            n, 1,
            "{start}…: {n} prepared statements held, one expected; held: {held:?}"
        );
    }
}

/// The batched reads by id run on connections that keep one generic plan
/// (`pool::build_generic_pool`): Postgres plans `id = ANY($1)` once there, while on a pool at
/// its default it plans the same statement again on every run (custom plans).
#[tokio::test(flavor = "multi_thread")]
async fn reads_by_id_keep_one_generic_plan_on_their_own_connections() {
    use aliexpress::store::{pool, product_repo};
    #[derive(diesel::QueryableByName, Debug)]
    struct Plans {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        generic_plans: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        custom_plans: i64,
    }
    let app = TestApp::spawn().await;
    let url = app.env.infra.database.url.expose().to_owned();
    let timeout = std::time::Duration::from_secs(10);
    let mut plans = Vec::new();
    for p in [
        pool::build_generic_pool(&url, 1, timeout).expect("pool"),
        pool::build_pool(&url, 1, timeout).expect("pool"),
    ] {
        let mut c = pool::get(&p).await.expect("conn");
        for _ in 0..8 {
            let ids = [uuid::Uuid::now_v7(), uuid::Uuid::now_v7()];
            let found = product_repo::find_many(&mut c, &ids).await.expect("read");
            assert_eq!(found.len(), 2);
        }
        let held: Vec<Plans> = diesel::sql_query(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
             WHERE statement LIKE '%= ANY(%' AND statement NOT LIKE '%pg_prepared_statements%'",
        )
        .load(&mut c)
        .await
        .expect("prepared statements");
        assert_eq!(held.len(), 1, "one kept statement for the read: {held:?}");
        plans.push((held[0].generic_plans, held[0].custom_plans));
    }
    assert_eq!(plans[0], (8, 0), "generic pool: planned once, used 8 times");
    assert!(plans[1].1 >= 5, "a default pool plans custom: {:?}", plans[1]);
}

/// A create of a one-variant lamp at 1.00 EUR, for commands run straight through
/// `app::execute`.
fn lamp(sku: &str) -> aliexpress::domain::product::ProductCommand {
    use aliexpress::domain::product::{CreateProduct, Money, ProductCommand};
    ProductCommand::CreateProduct(CreateProduct::simple(
        sku,
        "Lamp",
        Some(Money {
            amount_minor: 100,
            currency: "EUR".into(),
        }),
        1,
    ))
}

/// Options for a create run straight through `app::execute` (a fresh id, any seller, `app`'s
/// events topic), waking the relays or not.
fn direct_create(app: &TestApp, notify: bool) -> aliexpress::app::execute::ExecuteOptions {
    aliexpress::app::execute::ExecuteOptions {
        command_id: None,
        correlation_id: None,
        traceparent: None,
        actor: None,
        expected_version: None,
        events_topic: app.env.names.events_topic(),
        notify,
        fresh_id: true,
        scope: aliexpress::domain::access::Scope::Any,
    }
}
