//! Product types against the real stack: definitions checked, products checked against their
//! type on every write (422 naming the attribute and the rule), a type change that would make
//! a stored product invalid refused (409 naming it), optimistic concurrency and idempotency.

use serde_json::{json, Value};

use crate::helpers::{TestApp, TOKEN};

fn shirt_type() -> Value {
    json!({"key": "t-shirt", "name": "T-shirt", "attributes": [
        {"name": "material", "kind": "one_of", "values": ["cotton", "linen"], "required": true, "facet": true},
        {"name": "weight", "kind": "number", "unit": "g"},
        {"name": "organic", "kind": "boolean", "facet": true},
        {"name": "size", "kind": "one_of", "values": ["S", "M", "L"], "required": true, "variant": true}
    ]})
}

async fn put(app: &TestApp, path: &str, body: Value, if_match: Option<&str>) -> reqwest::Response {
    let mut r = app.http.put(app.url(path)).bearer_auth(TOKEN).json(&body);
    if let Some(v) = if_match {
        r = r.header("If-Match", v);
    }
    r.send().await.expect("put")
}

async fn reason(r: reqwest::Response) -> String {
    let p: Value = r.json().await.expect("problem");
    p.to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn products_are_checked_against_their_type_on_every_write() {
    let app = TestApp::spawn().await;
    let r = app.post("/api/product-types", shirt_type()).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    assert_eq!(
        app.post("/api/product-types", shirt_type()).await.status(),
        409,
        "the key is taken"
    );
    let listed: Value = app.get("/api/product-types").await.json().await.expect("json");
    assert_eq!(
        listed["items"][0]["attributes"][1],
        json!({"name": "weight", "kind": "number", "unit": "g", "required": false, "facet": false, "variant": false})
    );
    for bad in [
        json!({"key": "Bad Key", "name": "x"}),
        json!({"key": "k", "name": "x", "attributes": [{"name": "a", "kind": "one_of"}]}),
        json!({"key": "k", "name": "x", "attributes": [{"name": "a", "kind": "text", "unit": "g"}]}),
        json!({"key": "k", "name": "x", "attributes": [{"name": "a", "kind": "text"}, {"name": "a", "kind": "boolean"}]}),
    ] {
        let r = app.post("/api/product-types", bad.clone()).await;
        assert_eq!(r.status(), 422, "{bad}");
    }

    let product = |attrs: Value, sizes: &[&str]| {
        json!({"title": "Shirt", "product_type": "t-shirt", "attributes": attrs,
            "variants": sizes.iter().map(|s| json!({"sku": format!("PT-{s}"), "options": {"size": s},
                "prices": [{"amount_minor": 1000, "currency": "EUR"}]})).collect::<Vec<_>>()})
    };
    for (attrs, sizes, says) in [
        (json!({"weight": 180}), vec!["S"], "material: is required"),
        (
            json!({"material": "silk"}),
            vec!["S"],
            "material: must be one of cotton, linen",
        ),
        (
            json!({"material": "cotton", "weight": "heavy"}),
            vec!["S"],
            "weight: must be a number",
        ),
        (
            json!({"material": "cotton", "colour": "red"}),
            vec!["S"],
            "colour: type t-shirt has no such attribute",
        ),
        (
            json!({"material": "cotton"}),
            vec!["XL"],
            "size: variant PT-XL: must be one of S, M, L",
        ),
    ] {
        let r = app.post("/api/products", product(attrs, &sizes)).await;
        assert_eq!(r.status(), 422, "{says}");
        let text = reason(r).await;
        assert!(text.contains(says), "{text} should say {says}");
    }
    let unknown = app
        .post(
            "/api/products",
            json!({"sku": "PT-U", "title": "U", "product_type": "nope"}),
        )
        .await;
    assert_eq!(unknown.status(), 422);
    assert!(reason(unknown).await.contains("there is no product type"));

    let ok = app
        .post(
            "/api/products",
            product(
                json!({"material": "cotton", "weight": 180, "organic": true}),
                &["S", "M"],
            ),
        )
        .await;
    assert_eq!(ok.status(), 201);
    let p: Value = ok.json().await.expect("json");
    let id = p["id"].as_str().expect("id");
    // Every later command is checked on the state it would leave.
    let xl = app
        .post(
            &format!("/api/products/{id}/variants"),
            json!({"sku": "PT-XL", "options": {"size": "XL"}}),
        )
        .await;
    assert_eq!(xl.status(), 422);
    let r = app
        .http
        .patch(app.url(&format!("/api/products/{id}")))
        .bearer_auth(TOKEN)
        .json(&json!({"attributes": {"material": "wool"}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(r.status(), 422);
    assert_eq!(
        app.post(
            &format!("/api/products/{id}/variants"),
            json!({"sku": "PT-L", "options": {"size": "L"}})
        )
        .await
        .status(),
        200
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_type_change_that_would_break_stored_products_is_refused_naming_them() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post("/api/product-types", shirt_type()).await.status(), 201);
    let r = app
        .post(
            "/api/products",
            json!({"title": "Shirt", "product_type": "t-shirt", "attributes": {"material": "linen"},
            "variants": [{"sku": "CH-S", "options": {"size": "S"}}]}),
        )
        .await;
    assert_eq!(r.status(), 201);
    let id = r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let mut def = shirt_type();
    def.as_object_mut().expect("object").remove("key");

    // A new required attribute the product lacks, or a value it uses no longer allowed: 409.
    let mut required = def.clone();
    required["attributes"]
        .as_array_mut()
        .expect("attrs")
        .push(json!({"name": "fit", "kind": "text", "required": true}));
    let r = put(&app, "/api/product-types/t-shirt", required, None).await;
    assert_eq!(r.status(), 409);
    let text = reason(r).await;
    assert!(text.contains(&id) && text.contains("fit: is required"), "{text}");
    let mut narrowed = def.clone();
    narrowed["attributes"][0]["values"] = json!(["cotton"]);
    assert_eq!(
        put(&app, "/api/product-types/t-shirt", narrowed, None).await.status(),
        409
    );

    // An optional attribute is fine; the version moves and guards the next change.
    let mut optional = def.clone();
    optional["attributes"]
        .as_array_mut()
        .expect("attrs")
        .push(json!({"name": "fit", "kind": "text"}));
    let r = put(&app, "/api/product-types/t-shirt", optional.clone(), Some("\"1\"")).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["etag"], "\"2\"");
    assert_eq!(
        put(&app, "/api/product-types/t-shirt", optional.clone(), Some("\"1\""))
            .await
            .status(),
        412
    );
    assert_eq!(put(&app, "/api/product-types/nope", optional, None).await.status(), 404);
    let t: Value = app.get("/api/product-types/t-shirt").await.json().await.expect("json");
    assert_eq!(t["version"], 2);
    assert_eq!(app.get("/api/product-types/nope").await.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_type_creation_retried_with_its_idempotency_key_answers_the_first_response() {
    let app = TestApp::spawn().await;
    let send = || {
        app.http
            .post(app.url("/api/product-types"))
            .bearer_auth(TOKEN)
            .header("Idempotency-Key", "type-create-1")
            .json(&shirt_type())
            .send()
    };
    let first = send().await.expect("first");
    assert_eq!(first.status(), 201);
    let again = send().await.expect("again");
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(app.env.count("product_types").await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn search_counts_the_attributes_a_type_marks_as_facets() {
    let app = TestApp::spawn().await;
    assert_eq!(app.post("/api/product-types", shirt_type()).await.status(), 201);
    for (sku, material) in [("FA-1", "cotton"), ("FA-2", "linen"), ("FA-3", "cotton")] {
        let r = app
            .post("/api/products", json!({"title": "Shirt", "product_type": "t-shirt",
                "attributes": {"material": material, "weight": 180, "organic": true},
                "variants": [{"sku": sku, "options": {"size": "M"}, "prices": [{"amount_minor": 900, "currency": "EUR"}]}]}))
            .await;
        let id = r.json::<Value>().await.expect("json")["id"]
            .as_str()
            .expect("id")
            .to_owned();
        assert_eq!(
            app.post(&format!("/api/products/{id}/publish"), json!({}))
                .await
                .status(),
            200
        );
    }
    app.env.drain_outbox().await;
    let mut p = app.env.projector(None, None).await;
    app.env.consume_until_idle(&mut p).await;
    assert_eq!(
        facet_names(&app).await,
        vec!["material", "organic"],
        "weight is no facet of the type"
    );
    let found: Value = app.get("/api/search?q=shirt").await.json().await.expect("json");
    let material = &found["facets"]["attributes"][0]["values"];
    assert_eq!(material[0], json!({"value": "cotton", "count": 2}), "{material}");

    // A type change shows in the very next search.
    let mut weighed = shirt_type();
    weighed["attributes"][1]["facet"] = json!(true);
    weighed.as_object_mut().expect("object").remove("key");
    let r = put(&app, "/api/product-types/t-shirt", weighed, Some("\"1\"")).await;
    assert_eq!(r.status(), 200, "{}", reason(r).await);
    assert_eq!(facet_names(&app).await, vec!["material", "organic", "weight"]);
}

/// The names of the attribute facets of a search for shirts.
async fn facet_names(app: &TestApp) -> Vec<String> {
    let found: Value = app.get("/api/search?q=shirt").await.json().await.expect("json");
    found["facets"]["attributes"]
        .as_array()
        .expect("attribute facets")
        .iter()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect()
}
