//! search-facets: `GET /api/search?q=shirt&currency=EUR` (every facet on: category, brand,
//! price ranges in EUR, options, attributes, category path) through the API vs the exact body
//! `query::build` makes for that request POSTed straight to OpenSearch `<alias>/_search`: oha,
//! closed loop, the same connections, interleaved runs, over products with variants.
//!
//! Where the time goes: OpenSearch does the same query and aggregations on both sides; ours
//! adds the HTTP hop through `serve` (a second request and connection pool per search) and
//! decoding OpenSearch's answer into typed hits and facets and encoding ours. That last part
//! is timed here in process on the real answer (a second, latency row), so the remainder of
//! the gap is the hop and `serve` sharing the 2 cores with OpenSearch.

use std::time::{Duration, Instant};

use aliexpress::domain::product::{self as domain, CreateProduct, Money, NewVariant, Product, ProductCommand};
use aliexpress::search::query::{self, SearchAnswer, SearchRequest, SortOrder};
use aliexpress::search::{bulk, document, index, SearchClient};
use uuid::Uuid;

use super::harness::{fresh_env, http_client, oha_with, serve, Env, Oha};
use super::row::{summary, Row};
use super::{progress, runs, scale, secs};

/// Connections of both sides.
const CONNS: u32 = 8;
/// The free text of the request: matches two products in five.
const QUERY: &str = "shirt";
const TITLES: [&str; 5] = [
    "Cotton shirt",
    "Linen shirt",
    "Wool sweater",
    "Cotton socks",
    "Leather belt",
];

/// Product `i`: three sizes in one of four colours, priced in EUR (spread over the price
/// buckets) and USD, with material, weight and organic attributes, published.
fn product(i: usize) -> Product {
    let colour = ["red", "blue", "black", "white"][i % 4];
    let eur = 500 + (i as i64 * 7919) % 80_000;
    let variants = ["S", "M", "L"]
        .iter()
        .map(|size| NewVariant {
            sku: format!("BS-{i}-{size}"),
            options: [
                ("size".to_owned(), (*size).to_owned()),
                ("colour".to_owned(), colour.to_owned()),
            ]
            .into(),
            prices: vec![
                Money::price(eur, "EUR").expect("price"),
                Money::price(eur + 100, "USD").expect("price"),
            ],
            stock: (i % 3) as i64,
        })
        .collect();
    let create = CreateProduct {
        sku: None,
        title: TITLES[i % TITLES.len()].into(),
        description: "A dependable everyday garment with a long description for the analyzer".into(),
        category: format!("cat-{}", i % 20),
        brand: format!("brand-{}", i % 50),
        attributes: [
            ("material".to_owned(), ["cotton", "linen", "wool"][i % 3].into()),
            (
                "weight".to_owned(),
                domain::AttributeValue::Number((100 + i % 9 * 20).into()),
            ),
            ("organic".to_owned(), domain::AttributeValue::Flag(i.is_multiple_of(2))),
        ]
        .into(),
        variants,
        ..CreateProduct::simple("", "", None, 0)
    };
    let id = Uuid::new_v4();
    let now = chrono::Utc::now();
    let (p, _) = domain::execute(None, id, &ProductCommand::CreateProduct(create), now).expect("valid");
    domain::execute(Some(&p), id, &ProductCommand::PublishProduct, now)
        .expect("publishable")
        .0
}

/// `n` products' documents in the alias of `e` (made as the projection makes it), refreshed.
async fn seed(e: &Env, n: usize) -> (SearchClient, String) {
    let search = SearchClient::new(e.infra.opensearch.url.expose(), Duration::from_secs(120)).expect("client");
    let alias = e.names.index_alias();
    index::ensure_alias(&search, &alias, index::IndexLayout::default())
        .await
        .expect("alias");
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let items: Vec<bulk::BulkItem> = chunk
            .iter()
            .map(|i| {
                let p = product(*i);
                bulk::BulkItem {
                    id: p.id,
                    version: p.version,
                    doc: document::product_document(&p),
                }
            })
            .collect();
        bulk::index_items(&search, &alias, &items).await.expect("bulk");
    }
    index::refresh(&search, &alias).await.expect("refresh");
    (search, alias)
}

/// What the API makes of `?q=shirt&currency=EUR` from an anonymous caller.
fn request() -> SearchRequest {
    SearchRequest {
        q: Some(QUERY.into()),
        currency: Some("EUR".into()),
        status: Some("published".into()),
        sort: SortOrder::Relevance,
        page: 1,
        size: 20,
        ..Default::default()
    }
}

/// Milliseconds to decode OpenSearch's `answer` and encode the API's response, the median
/// of 200 rounds in this process.
fn decode_encode_ms(answer: &[u8], r: &SearchRequest) -> f64 {
    let ms: Vec<f64> = (0..200)
        .map(|_| {
            let t = Instant::now();
            let decoded: SearchAnswer = serde_json::from_slice(answer).expect("answer");
            let body = serde_json::to_vec(&query::parse(r, decoded)).expect("encode");
            std::hint::black_box(body);
            t.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    summary(ms).0
}

/// The API's answer and OpenSearch's for the same request agree (total, hit ids, facets
/// present); returns OpenSearch's answer bytes and the API's.
async fn check(api_url: &str, os_url: &str, body: &serde_json::Value) -> (Vec<u8>, Vec<u8>) {
    let http = http_client();
    let ours = http
        .get(api_url)
        .send()
        .await
        .expect("api")
        .bytes()
        .await
        .expect("api body");
    let direct = http
        .post(os_url)
        .json(body)
        .send()
        .await
        .expect("os")
        .bytes()
        .await
        .expect("os body");
    let o: serde_json::Value = serde_json::from_slice(&ours).expect("api json");
    let d: serde_json::Value = serde_json::from_slice(&direct).expect("os json");
    let ids = |hits: &serde_json::Value, key: &str| -> Vec<String> {
        hits.as_array()
            .into_iter()
            .flatten()
            .map(|h| h.pointer(key).map(|v| v.to_string()).unwrap_or_default())
            .collect()
    };
    assert!(o["total"].as_u64().unwrap_or(0) > 0, "the query matches");
    assert_eq!(o["total"], d["hits"]["total"]["value"], "same matches");
    assert_eq!(
        ids(&o["hits"], "/product/id"),
        ids(&d["hits"]["hits"], "/_id"),
        "same page"
    );
    assert_eq!(o["facets"]["price"].as_array().map(Vec::len), Some(5), "price facet on");
    assert!(
        o["facets"]["options"].as_array().is_some_and(|f| !f.is_empty()),
        "option facets on"
    );
    (direct.to_vec(), ours.to_vec())
}

/// The row: ours vs OpenSearch direct (req/s), and the in-process decode + encode (ms).
pub(super) async fn bench_search_facets(rows: &mut Vec<Row>) {
    let n = ((20_000.0 * scale()) as usize).max(500);
    let e = fresh_env("search").await;
    let (_search, alias) = seed(&e, n).await;
    let (_role, base) = serve(&e, &[]).await;
    let api_url = format!("{base}/api/search?q={QUERY}&currency=EUR");
    let os_url = format!(
        "{}/{alias}/_search",
        e.infra.opensearch.url.expose().trim_end_matches('/')
    );
    let r = request();
    let body = query::build(&r);
    let (answer, ours_bytes) = check(&api_url, &os_url, &body).await;
    let body_file = std::env::temp_dir().join(format!("bench-search-{}.json", Uuid::new_v4().simple()));
    std::fs::write(&body_file, serde_json::to_vec(&body).expect("json")).expect("body file");
    let post: Vec<String> = ["-m", "POST", "-T", "application/json", "-D"]
        .iter()
        .map(|s| (*s).to_owned())
        .chain([body_file.display().to_string()])
        .collect();
    let secs = (secs() * 0.75).max(2.0);
    let _ = oha_with(&api_url, CONNS, secs.min(2.0), &[]); // warm-up, not recorded
    let _ = oha_with(&os_url, CONNS, secs.min(2.0), &post);
    let (mut ours, mut direct, mut p50) = (Vec::new(), Vec::new(), (Vec::new(), Vec::new()));
    let (mut errors, mut counted) = (0, (0, 0));
    for run in 0..runs() {
        let o: Oha = oha_with(&api_url, CONNS, secs, &[]);
        let d: Oha = oha_with(&os_url, CONNS, secs, &post);
        progress(format_args!(
            "search-facets run {run}: ours {:.0} req/s, OpenSearch {:.0} req/s",
            o.rps, d.rps
        ));
        (errors, counted) = (errors + o.errors + d.errors, (counted.0 + o.ok, counted.1 + d.ok));
        ours.push(o.rps);
        direct.push(d.rps);
        p50.0.push(o.p50_ms);
        p50.1.push(d.p50_ms);
    }
    let _ = std::fs::remove_file(&body_file);
    let codec = decode_encode_ms(&answer, &r);
    let ((o, or), (d, dr)) = (summary(ours), summary(direct));
    let (op50, dp50) = (summary(p50.0).0, summary(p50.1).0);
    progress(format_args!(
        "search-facets: ours {o:.0} vs OpenSearch {d:.0} req/s (ratio {:.2}); p50 {op50:.1} vs {dp50:.1} ms; decode+encode {codec:.3} ms",
        o / d.max(1e-9)
    ));
    rows.push(
        Row::new(
            format!("GET /api/search q+EUR, all facets, {n} products, {CONNS} conns"),
            "req/s",
        )
        .ours(o, or)
        .baseline("query::build body POSTed to OpenSearch _search", d, dr)
        .goal(">= 0.7")
        .errors(errors)
        .verified(format!(
            "200s counted: ours {}, direct {}; same total and page checked first; p50 ours {op50:.1} ms vs direct \
                 {dp50:.1} ms; answers {} B from OpenSearch, {} B from us",
            counted.0,
            counted.1,
            answer.len(),
            ours_bytes.len()
        )),
    );
    rows.push(
        Row::new("  of which: decode + encode of that answer, in process", "ms")
            .ours(codec, (codec, codec))
            .goal("-")
            .verified(format!("median of 200 rounds on the real {} B answer", answer.len())),
    );
}
