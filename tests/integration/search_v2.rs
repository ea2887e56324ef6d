//! Search v2 against the real stack: facets (price ranges in a currency, variant options,
//! attributes, category paths) and the filters on them, deep paging with `after` over a
//! catalog larger than a page (every product exactly once, in two sort orders), completions
//! of titles and brands that leave drafts out for anonymous callers, and an index made before
//! all this getting the new fields when projection starts.

use std::collections::BTreeSet;
use std::time::Duration;

use aliexpress::domain::product::{
    self as domain, CategoryNode, CreateProduct, EventEnvelope, EventMeta, Money, ProductCommand,
};
use aliexpress::search::query::{self, SearchRequest};
use futures::StreamExt;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{TestApp, READ_TOKEN};

fn eur(amount_minor: i64) -> Value {
    json!({"amount_minor": amount_minor, "currency": "EUR"})
}

/// Creates a product from `body` and publishes it; its id.
async fn published(app: &TestApp, body: Value) -> String {
    let r = app.post("/api/products", body).await;
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
    let p: Value = r.json().await.expect("json");
    let id = p["id"].as_str().expect("id").to_owned();
    let r = app.post(&format!("/api/products/{id}/publish"), json!({})).await;
    assert_eq!(r.status(), 200, "publish {id}");
    id
}

/// Relays the outbox and projects every event, then refreshes the index.
async fn project(app: &TestApp) {
    app.env.drain_outbox().await;
    let mut p = app.env.projector(None, None).await;
    let o = app.env.consume_until_idle(&mut p).await;
    assert_eq!(o.dead_lettered, 0);
}

async fn search(app: &TestApp, query: &str) -> Value {
    let r = app.get(&format!("/api/search?{query}")).await;
    assert_eq!(r.status(), 200, "{query}: {}", r.text().await.unwrap_or_default());
    r.json().await.expect("json")
}

/// `[(value, count)]` of a facet's buckets.
fn counts(buckets: &Value) -> Vec<(String, u64)> {
    buckets
        .as_array()
        .expect("buckets")
        .iter()
        .map(|b| {
            (
                b["value"].as_str().unwrap_or_default().to_owned(),
                b["count"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// The values and counts of the facet named `name` in a list of named facets.
fn named(facets: &Value, name: &str) -> Vec<(String, u64)> {
    let facet = facets
        .as_array()
        .expect("facets")
        .iter()
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no facet {name} in {facets}"));
    counts(&facet["values"])
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    list.iter().map(|(v, n)| ((*v).to_owned(), *n)).collect()
}

fn hit_ids(page: &Value) -> Vec<String> {
    page["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|h| h["product"]["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Three shirts and a mug, priced in EUR across the facet's buckets.
async fn apparel(app: &TestApp) -> Vec<String> {
    let shirt = |n: usize, sizes: &[&str], colour: &str, material: &str, price: i64| {
        let variants: Vec<Value> = sizes
            .iter()
            .map(|s| json!({"sku": format!("SH{n}-{s}"), "options": {"size": s, "colour": colour}, "prices": [eur(price)], "stock": 1}))
            .collect();
        json!({"title": format!("Shirt {n}"), "category": "t-shirts", "brand": "Tee",
               "attributes": {"material": material, "weight": 180, "organic": n == 1}, "variants": variants})
    };
    let mut ids = Vec::new();
    ids.push(published(app, shirt(1, &["S", "M"], "red", "cotton", 900)).await);
    ids.push(published(app, shirt(2, &["M", "L"], "blue", "cotton", 2500)).await);
    ids.push(published(app, shirt(3, &["L"], "red", "linen", 60000)).await);
    let mug = json!({"title": "Mug", "category": "kitchen", "brand": "Cup", "attributes": {"material": "ceramic"},
                     "variants": [{"sku": "MUG", "prices": [eur(1000)], "stock": 2}]});
    ids.push(published(app, mug).await);
    project(app).await;
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn facets_count_price_ranges_options_attributes_and_category_paths_of_the_matches() {
    let app = TestApp::spawn().await;
    apparel(&app).await;
    let all = search(&app, "currency=EUR").await;
    let f = &all["facets"];
    assert_eq!(all["total"], 4);
    assert_eq!(
        f["price"],
        json!([{"from": 0, "to": 1000, "count": 1}, {"from": 1000, "to": 5000, "count": 2},
               {"from": 5000, "to": 10000, "count": 0}, {"from": 10000, "to": 50000, "count": 0},
               {"from": 50000, "count": 1}]),
        "the lowest EUR price of each product, `to` exclusive (the mug's 1000 is in the second)"
    );
    assert_eq!(named(&f["options"], "size"), pairs(&[("L", 2), ("M", 2), ("S", 1)]));
    assert_eq!(named(&f["options"], "colour"), pairs(&[("red", 2), ("blue", 1)]));
    assert_eq!(
        named(&f["attributes"], "material"),
        pairs(&[("cotton", 2), ("ceramic", 1), ("linen", 1)])
    );
    assert_eq!(
        named(&f["attributes"], "weight"),
        pairs(&[("180", 3)]),
        "numbers as text"
    );
    assert_eq!(
        named(&f["attributes"], "organic"),
        pairs(&[("false", 2), ("true", 1)]),
        "flags as text"
    );
    assert_eq!(counts(&f["category_path"]), pairs(&[("t-shirts", 3), ("kitchen", 1)]));
    assert_eq!(
        counts(&f["brand"]),
        pairs(&[("Tee", 3), ("Cup", 1)]),
        "the old facets stay"
    );
    assert!(
        search(&app, "").await["facets"].get("price").is_none(),
        "no currency, no price facet"
    );

    // Facets count what the filters leave.
    let red = search(&app, "currency=EUR&option=colour:red").await;
    assert_eq!(red["total"], 2);
    assert_eq!(
        named(&red["facets"]["options"], "size"),
        pairs(&[("L", 1), ("M", 1), ("S", 1)])
    );
    assert_eq!(red["facets"]["price"][4]["count"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn option_and_attribute_filters_or_within_a_name_and_and_across_names() {
    let app = TestApp::spawn().await;
    let ids = apparel(&app).await;
    let set = |page: &Value| hit_ids(page).into_iter().collect::<BTreeSet<_>>();
    let of = |i: &[usize]| i.iter().map(|i| ids[*i].clone()).collect::<BTreeSet<_>>();
    assert_eq!(set(&search(&app, "option=size:S").await), of(&[0]));
    assert_eq!(
        set(&search(&app, "option=size:S&option=size:L").await),
        of(&[0, 1, 2]),
        "one name: either"
    );
    assert_eq!(
        set(&search(&app, "option=size:L&option=colour:red").await),
        of(&[2]),
        "two names: both"
    );
    assert_eq!(set(&search(&app, "attribute=material:cotton").await), of(&[0, 1]));
    assert_eq!(
        set(&search(&app, "attribute=organic:true&attribute=weight:180").await),
        of(&[0])
    );
    assert_eq!(
        set(&search(&app, "attribute=material:cotton&option=colour:blue").await),
        of(&[1])
    );
    assert_eq!(search(&app, "option=size:XXL").await["total"], 0);

    for (query, field) in [
        ("option=size", "option"),
        ("attribute=:x", "attribute"),
        ("option=a:b&brand=x&brand=y", "query"),
    ] {
        let r = app.get(&format!("/api/search?{query}")).await;
        assert_eq!(r.status(), 422, "{query}");
        let problem: Value = r.json().await.expect("problem");
        assert_eq!(problem["errors"][0]["field"], field, "{query}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_attributes_a_caller_names_are_facets() {
    let app = TestApp::spawn().await;
    apparel(&app).await;
    let r = SearchRequest {
        facet_attributes: Some(vec!["material".into(), "organic".into()]),
        status: Some("published".into()),
        page: 1,
        size: 10,
        ..Default::default()
    };
    let page = query::search(
        &app.env.search(),
        &app.env.names.index_alias(),
        &r,
        Duration::from_secs(10),
    )
    .await
    .expect("search");
    let names: Vec<&str> = page.facets.attributes.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["material", "organic"], "weight is not asked for");
}

/// A published product's events with the category tree's path in its state, as a
/// projection receives them once products are placed in the tree.
fn placed(path: &[&str], category: &str) -> Vec<EventEnvelope> {
    let id = Uuid::now_v7();
    let mut create = CreateProduct::simple(&format!("CAT-{id}"), &format!("In {category}"), None, 1);
    create.category = category.into();
    let cmds = [
        ProductCommand::CreateProduct(create),
        ProductCommand::ChangePrice {
            price: Money::price(500, "EUR").expect("price"),
            variant_id: None,
        },
        ProductCommand::PublishProduct,
    ];
    let mut state = None;
    let mut out = Vec::new();
    for c in cmds {
        let (mut next, change) = domain::execute(state.as_ref(), id, &c, chrono::Utc::now()).expect("applies");
        next.category_path = path
            .iter()
            .map(|slug| CategoryNode {
                id: Uuid::new_v4(),
                slug: (*slug).into(),
                name: slug.to_uppercase(),
            })
            .collect();
        let meta = EventMeta {
            event_id: Uuid::now_v7(),
            causation_id: None,
            correlation_id: None,
            occurred_at: next.updated_at,
            actor: None,
        };
        out.push(EventEnvelope::new(&change, &next, meta));
        state = Some(next);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn category_under_finds_a_category_and_everything_below_it_with_counts_per_slug() {
    let app = TestApp::spawn().await;
    let env = &app.env;
    let products = [
        placed(&["apparel", "tops", "t-shirts"], "t-shirts"),
        placed(&["apparel", "tops"], "shirts"),
        placed(&["apparel"], "apparel"),
        placed(&["home"], "mugs"),
    ];
    for events in &products {
        for e in events {
            let key = e.aggregate_id.to_string();
            env.produce(&env.names.events_topic(), &key, &serde_json::to_vec(e).expect("json"))
                .await;
        }
    }
    let mut p = env.projector(None, None).await;
    let o = env.consume_until_idle(&mut p).await;
    assert_eq!((o.received, o.dead_lettered), (12, 0));
    let id = |i: usize| products[i][0].aggregate_id.to_string();
    let set = |page: &Value| hit_ids(page).into_iter().collect::<BTreeSet<_>>();
    let of = |i: &[usize]| i.iter().map(|i| id(*i)).collect::<BTreeSet<_>>();

    assert_eq!(set(&search(&app, "category_under=apparel").await), of(&[0, 1, 2]));
    assert_eq!(set(&search(&app, "category_under=tops").await), of(&[0, 1]));
    assert_eq!(set(&search(&app, "category_under=t-shirts").await), of(&[0]));
    assert_eq!(
        set(&search(&app, "category_under=mugs").await),
        of(&[3]),
        "its own category ends the path"
    );
    assert_eq!(search(&app, "category_under=nothing").await["total"], 0);
    let tree = counts(&search(&app, "").await["facets"]["category_path"]);
    assert_eq!(
        tree,
        pairs(&[
            ("apparel", 3),
            ("tops", 2),
            ("home", 1),
            ("mugs", 1),
            ("shirts", 1),
            ("t-shirts", 1)
        ])
    );
}

/// Every hit of `query`, page after page with `after`: the products in order.
async fn crawl(app: &TestApp, query: &str) -> Vec<Value> {
    let mut products = Vec::new();
    let mut after: Option<String> = None;
    for _ in 0..100 {
        let q = match &after {
            Some(a) => format!("{query}&after={a}"),
            None => query.to_owned(),
        };
        let page = search(app, &q).await;
        assert_eq!(page["total"], 250, "{q}");
        if after.is_some() {
            assert_eq!(page["facets"]["category"], json!([]), "no facets after a cursor");
        }
        products.extend(
            page["hits"]
                .as_array()
                .expect("hits")
                .iter()
                .map(|h| h["product"].clone()),
        );
        match page["next_after"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => return products,
        }
    }
    panic!("{query}: no end after 100 pages");
}

#[tokio::test(flavor = "multi_thread")]
async fn after_pages_through_every_product_exactly_once_in_newest_and_price_order() {
    let app = TestApp::spawn().await;
    // Prices repeat (7 distinct) and creation times may: the id tiebreaker orders the rest.
    let created: BTreeSet<String> = futures::stream::iter(0..250)
        .map(|i| {
            let app = &app;
            async move {
                let body = json!({"sku": format!("DEEP-{i}"), "title": format!("Deep {i}"),
                                  "price": {"amount_minor": 100 + (i % 7) * 10, "currency": "USD"}, "stock": 1});
                published(app, body).await
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    project(&app).await;

    for (query, key) in [("size=37", "created_at"), ("size=37&sort=price_asc", "price_minor")] {
        let products = crawl(&app, query).await;
        let ids: Vec<&str> = products.iter().filter_map(|p| p["id"].as_str()).collect();
        let unique: BTreeSet<String> = ids.iter().map(|id| (*id).to_owned()).collect();
        assert_eq!(ids.len(), 250, "{query}: every product once");
        assert_eq!(unique, created, "{query}");
        // The order holds across the pages: newest first, or cheapest first.
        // As OpenSearch sorts: dates by millisecond.
        let keys: Vec<i64> = products
            .iter()
            .map(|p| match p[key].as_str() {
                Some(t) => chrono::DateTime::parse_from_rfc3339(t)
                    .expect("date")
                    .timestamp_millis(),
                None => p[key].as_i64().expect("price"),
            })
            .collect();
        let ordered = match key {
            "created_at" => keys.windows(2).all(|w| w[0] >= w[1]),
            _ => keys.windows(2).all(|w| w[0] <= w[1]),
        };
        assert!(ordered, "{query}: {keys:?}");
    }

    let first = search(&app, "size=37").await;
    let cursor = first["next_after"].as_str().expect("a full page has a cursor");
    for (query, field) in [
        (format!("size=37&page=2&after={cursor}"), "after"),
        ("after=bm90LWpzb24".to_owned(), "after"),
        ("after=a%2Bb".to_owned(), "after"),
        ("page=101&size=100".to_owned(), "page"),
    ] {
        let r = app.get(&format!("/api/search?{query}")).await;
        assert_eq!(r.status(), 422, "{query}");
        let problem: Value = r.json().await.expect("problem");
        assert_eq!(problem["errors"][0]["field"], field, "{query}");
    }
}

async fn suggest(app: &TestApp, query: &str) -> Vec<String> {
    let r = app.get(&format!("/api/search/suggest?{query}")).await;
    assert_eq!(r.status(), 200, "{query}: {}", r.text().await.unwrap_or_default());
    let v: Value = r.json().await.expect("json");
    v["suggestions"]
        .as_array()
        .expect("suggestions")
        .iter()
        .map(|s| {
            assert!(
                s["product_id"].as_str().is_some_and(|id| id.parse::<Uuid>().is_ok()),
                "{s}"
            );
            s["text"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn suggest_completes_titles_and_brands_and_leaves_drafts_out_for_anonymous_callers() {
    let app = TestApp::spawn().await;
    let lamp = |sku: &str, title: &str| json!({"sku": sku, "title": title, "brand": "Brightway", "price": {"amount_minor": 100, "currency": "USD"}});
    published(&app, lamp("SUG-1", "Lantern deluxe")).await;
    published(&app, lamp("SUG-2", "Lamp classic")).await;
    let r = app.post("/api/products", lamp("SUG-3", "Lanyard secret")).await;
    assert_eq!(r.status(), 201, "a draft");
    project(&app).await;

    let la = suggest(&app, "q=la").await;
    assert!(
        la.contains(&"Lantern deluxe".to_owned()) && la.contains(&"Lamp classic".to_owned()),
        "{la:?}"
    );
    assert!(
        !la.contains(&"Lanyard secret".to_owned()),
        "a draft does not complete: {la:?}"
    );
    assert_eq!(
        suggest(&app, "q=LANT").await,
        ["Lantern deluxe"],
        "case does not matter"
    );
    assert_eq!(
        suggest(&app, "q=bri").await,
        ["Brightway"],
        "a brand, once for its products"
    );
    assert_eq!(suggest(&app, "q=la&size=1").await.len(), 1);
    assert!(
        suggest(&app, "q=deluxe").await.is_empty(),
        "the start of a title, not a word inside it"
    );

    let r = app
        .http
        .get(app.url("/api/search/suggest?q=lany&status=any"))
        .bearer_auth(READ_TOKEN)
        .send()
        .await
        .expect("request");
    let v: Value = r.json().await.expect("json");
    assert_eq!(
        v["suggestions"][0]["text"], "Lanyard secret",
        "a token holder may ask for drafts"
    );
    assert_eq!(app.get("/api/search/suggest?q=lany&status=any").await.status(), 401);

    for query in ["q=", "q=%20%20", "", &format!("q={}", "a".repeat(101)), "q=a&size=21"] {
        let r = app.get(&format!("/api/search/suggest?{query}")).await;
        assert_eq!(r.status(), 422, "{query}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_made_before_facets_and_suggest_gets_their_fields_when_projection_starts() {
    use aliexpress::search::index::{self, IndexLayout};
    let app = TestApp::spawn().await;
    // The index an older binary made: today's mapping without the fields facets and suggest added.
    let mut body = index::index_body(IndexLayout::default());
    let props = body["mappings"]["properties"].as_object_mut().expect("properties");
    for field in ["option_values", "attribute_values", "suggest"] {
        props.remove(field).expect(field);
    }
    let (alias, client) = (app.env.names.index_alias(), app.env.search());
    let old = format!("{alias}_v1");
    let (old_ref, body_ref) = (old.as_str(), &body);
    let resp = client
        .call(|os| async move {
            os.indices()
                .create(opensearch::indices::IndicesCreateParts::Index(old_ref))
                .body(body_ref)
                .send()
                .await
        })
        .await
        .expect("create");
    assert!(resp.status_code().is_success());
    index::swap_alias(&client, &alias, None, &old).await.expect("alias");

    apparel(&app).await; // the projector puts the mapping, then indexes
    let page = search(&app, "currency=EUR").await;
    assert_eq!(
        named(&page["facets"]["options"], "colour"),
        pairs(&[("red", 2), ("blue", 1)])
    );
    assert_eq!(suggest(&app, "q=shi").await.len(), 3);
}
