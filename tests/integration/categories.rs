//! The category tree against the real stack: products carry their category's path; a
//! rename or move reaches every product under it through the pipeline (fan-out → product
//! commands → outbox → Kafka → projection), and a move never makes a cycle.

use aliexpress::worker::category_fanout;
use serde_json::{json, Value};

use crate::helpers::{TestApp, TOKEN};

async fn category(app: &TestApp, slug: &str, name: &str, parent: Option<&str>) -> String {
    let r = app
        .post(
            "/api/categories",
            json!({"slug": slug, "name": name, "parent_id": parent}),
        )
        .await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

async fn patch(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.http
        .patch(app.url(&format!("/api/categories/{id}")))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .expect("patch")
}

async fn product(app: &TestApp, sku: &str, category: &str) -> String {
    let r = app
        .post("/api/products", json!({"sku": sku, "title": sku, "category": category}))
        .await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.expect("json")["id"]
        .as_str()
        .expect("id")
        .to_owned()
}

/// Runs the fan-outs, publishes the outbox and projects it.
async fn settle(app: &TestApp) {
    let opts = app.state.catalog.fanout_options();
    category_fanout::run_until_idle(app.state.catalog.pool(), &opts)
        .await
        .expect("fan-out");
    app.env.drain_outbox().await;
    let mut p = app.env.projector(None, None).await;
    app.env.consume_until_idle(&mut p).await;
}

fn slugs(doc: &Value) -> Vec<String> {
    doc["_source"]["category_path"]
        .as_array()
        .expect("path")
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect()
}

/// A search of every status under the accessories.
async fn under_accessories(app: &TestApp) -> Value {
    app.get_with_token("/api/search?status=any&category_under=accessories")
        .await
        .json()
        .await
        .expect("json")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rename_or_move_reaches_every_product_under_the_category_through_the_pipeline() {
    let app = TestApp::spawn().await;
    let electronics = category(&app, "electronics", "Electronics", None).await;
    let audio = category(&app, "audio", "Audio", Some(&electronics)).await;
    let headphones = category(&app, "headphones", "Headphones", Some(&audio)).await;
    let placed = product(&app, "HP-1", "headphones").await;
    let p: Value = app
        .get_with_token(&format!("/api/products/{placed}"))
        .await
        .json()
        .await
        .expect("json");
    let names: Vec<&str> = p["category_path"]
        .as_array()
        .expect("path")
        .iter()
        .filter_map(|n| n["name"].as_str())
        .collect();
    assert_eq!(names, vec!["Electronics", "Audio", "Headphones"], "placed on creation");
    // A product naming a slug before its category exists is placed when the category comes.
    let early = product(&app, "SP-1", "speakers").await;
    let speakers = category(&app, "speakers", "Speakers", Some(&audio)).await;
    let skus: Vec<String> = (0..30).map(|i| format!("HP-{}", i + 2)).collect();
    let many: Vec<String> = futures::future::join_all(skus.iter().map(|s| product(&app, s, "headphones"))).await;
    settle(&app).await;
    assert_eq!(
        slugs(&app.env.document(&early).await.expect("doc")),
        vec!["electronics", "audio", "speakers"]
    );

    // Rename "audio" (name and slug): every document under it follows, by its own event.
    let r = patch(&app, &audio, json!({"name": "Sound", "slug": "sound"})).await;
    assert_eq!(r.status(), 200);
    let c: Value = r.json().await.expect("json");
    assert_eq!(c["path_display"], "Electronics › Sound");
    assert_eq!(c["fanout"]["pending"], 1);
    settle(&app).await;
    for id in many.iter().chain([&placed, &early]) {
        let s = slugs(&app.env.document(id).await.expect("doc"));
        assert_eq!(s[1], "sound", "{id}: {s:?}");
    }
    let c: Value = app
        .get(&format!("/api/categories/{audio}"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(c["fanout"]["pending"], 0);
    let h: Value = app
        .get_with_token(&format!("/api/products/{placed}/history"))
        .await
        .json()
        .await
        .expect("json");
    let last = h["items"].as_array().expect("items").last().cloned().expect("an entry");
    assert_eq!(
        (last["event_type"].as_str(), last["actor"].as_str()),
        (Some("ProductCategorized"), Some("category-fanout"))
    );

    // Move "headphones" to a new root; its products follow, the speakers stay.
    let accessories = category(&app, "accessories", "Accessories", None).await;
    assert_eq!(
        patch(&app, &headphones, json!({"parent_id": accessories}))
            .await
            .status(),
        200
    );
    settle(&app).await;
    assert_eq!(
        slugs(&app.env.document(&placed).await.expect("doc")),
        vec!["accessories", "headphones"]
    );
    assert_eq!(
        slugs(&app.env.document(&early).await.expect("doc")),
        vec!["electronics", "sound", "speakers"]
    );
    let _ = speakers;

    // Search counts products per category on their paths and labels the tree's categories.
    let published = app.post(&format!("/api/products/{placed}/publish"), json!({})).await;
    assert_eq!(published.status(), 409, "no price yet: a draft stays a draft");
    let found = under_accessories(&app).await;
    assert_eq!(found["total"], 31, "{found}");
    let bucket = found["facets"]["category_path"]
        .as_array()
        .expect("buckets")
        .iter()
        .find(|b| b["value"] == "headphones")
        .cloned()
        .expect("headphones bucket");
    assert_eq!(
        (bucket["count"].as_u64(), bucket["path"].as_str()),
        (Some(31), Some("Accessories › Headphones"))
    );
    // The labels come from the tree as it is now: a rename shows in the very next search.
    assert_eq!(patch(&app, &accessories, json!({"name": "Gear"})).await.status(), 200);
    let found = under_accessories(&app).await;
    let labels: Vec<&str> = found["facets"]["category_path"]
        .as_array()
        .expect("buckets")
        .iter()
        .filter_map(|b| b["path"].as_str())
        .collect();
    assert!(labels.contains(&"Gear › Headphones"), "{labels:?}");

    // No cycles, no taken slugs, no missing parents.
    assert_eq!(
        patch(&app, &accessories, json!({"parent_id": headphones}))
            .await
            .status(),
        422
    );
    assert_eq!(patch(&app, &electronics, json!({"slug": "sound"})).await.status(), 409);
    let orphan = app
        .post(
            "/api/categories",
            json!({"slug": "x", "name": "X", "parent_id": uuid::Uuid::now_v7()}),
        )
        .await;
    assert_eq!(orphan.status(), 404);
    let listed: Value = app.get("/api/categories").await.json().await.expect("json");
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(5));
}
