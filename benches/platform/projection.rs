//! projection: events/s from a backlog (OpenSearch + Redis) vs the same documents to `_bulk`;
//! also the event and document helpers the rebuild and scaling rows share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aliexpress::bus::consumer;
use aliexpress::bus::producer::{self, ProducerSettings};
use aliexpress::domain::product::{self as domain, EventEnvelope, EventMeta, ProductCommand};
use aliexpress::search::{bulk, document, index, SearchClient};
use aliexpress::worker::projection::{ProductEventConsumer, ProjectionSettings};
use aliexpress::worker::Shutdown;
use rdkafka::consumer::Consumer;

use super::harness::{fresh_env, Env};
use super::row::{summary, Row};
use super::{progress, runs, scale};

pub(super) fn envelope(id: uuid::Uuid, v: i64, title: &str) -> EventEnvelope {
    let now = chrono::Utc::now();
    let mut state = None;
    let mut last = None;
    let cmds = [
        ProductCommand::CreateProduct(domain::CreateProduct {
            description: "A dependable everyday product with a long description for the analyzer to chew on".into(),
            category: format!("cat-{}", id.as_u128() % 20),
            brand: format!("brand-{}", id.as_u128() % 50),
            attributes: [("colour".to_owned(), "black".into())].into(),
            ..domain::CreateProduct::simple(
                &format!("SKU-{id}"),
                title,
                Some(domain::Money {
                    amount_minor: 1000 + (id.as_u128() % 9000) as i64,
                    currency: "USD".into(),
                }),
                10,
            )
        }),
        ProductCommand::PublishProduct,
        ProductCommand::AdjustStock {
            delta: -1,
            variant_id: None,
        },
        ProductCommand::AdjustStock {
            delta: 2,
            variant_id: None,
        },
    ];
    for c in cmds.iter().take(v as usize) {
        let (next, change) = domain::execute(state.as_ref(), id, c, now).expect("valid");
        last = Some(EventEnvelope::new(
            &change,
            &next,
            EventMeta {
                event_id: uuid::Uuid::now_v7(),
                causation_id: None,
                correlation_id: None,
                occurred_at: now,
                actor: None,
            },
        ));
        state = Some(next);
    }
    last.expect("one event")
}

/// Produces 4 events (create, publish, two stock moves) for each of `products` new products to
/// `topic`, version by version; returns them in that order.
pub(super) async fn produce_events(e: &Env, topic: &str, products: usize) -> Vec<EventEnvelope> {
    let p = producer::build(
        &aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings"),
        &ProducerSettings::default(),
    )
    .expect("producer");
    let ids: Vec<uuid::Uuid> = (0..products).map(|_| uuid::Uuid::new_v4()).collect();
    let mut envs = Vec::with_capacity(products * 4);
    for v in 1..=4 {
        for id in &ids {
            envs.push(envelope(*id, v, "Wireless ergonomic mouse"));
        }
    }
    let records = envs
        .iter()
        .map(|ev| (ev.aggregate_id.to_string(), serde_json::to_vec(ev).expect("json")));
    super::harness::produce_keyed(&p, topic, records).await;
    envs
}

/// The same documents straight to `_bulk` into a fresh index, `chunk` per request; the first
/// request (warm-up) is outside the timed window. Returns documents/s.
pub(super) async fn raw_bulk(
    search: &SearchClient,
    index_name: &str,
    layout: index::IndexLayout,
    envs: &[EventEnvelope],
    chunk: usize,
) -> f64 {
    index::create_index(search, index_name, layout)
        .await
        .expect("raw index");
    let mut started = None;
    for part in envs.chunks(chunk) {
        let items: Vec<bulk::BulkItem> = part
            .iter()
            .map(|ev| bulk::BulkItem {
                id: ev.aggregate_id,
                version: ev.aggregate_version,
                doc: document::product_document(&ev.state),
            })
            .collect();
        bulk::index_items(search, index_name, &items).await.expect("bulk");
        started.get_or_insert_with(Instant::now);
    }
    let timed = envs.len().saturating_sub(chunk.min(envs.len()));
    timed as f64 / started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0).max(1e-3)
}

/// Documents in `index_name` after a refresh.
pub(super) async fn doc_count(search: &SearchClient, index_name: &str) -> u64 {
    index::refresh(search, index_name).await.expect("refresh");
    let resp = search
        .call(|os| async move { os.count(opensearch::CountParts::Index(&[index_name])).send().await })
        .await
        .expect("count");
    let v: serde_json::Value = aliexpress::search::client::decode(resp).await.expect("count");
    v["count"].as_u64().unwrap_or(0)
}

/// Projection from a backlog (shipped defaults: batch 500, batch wait 50 ms; OpenSearch and
/// Redis) vs the same documents straight to `_bulk` in requests of 500 (no Redis). Both
/// clocks start after the first batch, which is not counted. Both indices refresh every
/// `refresh_ms` (shipped: 1000; the freshness rows try 200, this shows what it costs).
pub(super) async fn bench_projection(rows: &mut Vec<Row>, refresh_ms: u64) {
    let layout = index::IndexLayout {
        refresh_interval_ms: refresh_ms,
        ..Default::default()
    };
    let e = fresh_env("proj").await;
    let n = (100_000.0 * scale()) as usize / 4 * 4;
    let topic = e.names.events_topic();
    progress(format_args!("projection: producing {n} events"));
    let envs = produce_events(&e, &topic, n / 4).await;
    let p = producer::build(
        &aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings"),
        &ProducerSettings::default(),
    )
    .expect("producer");
    let search = SearchClient::new(e.infra.opensearch.url.expose(), Duration::from_secs(60)).expect("search");
    let alias = e.names.index_alias();
    index::ensure_alias(&search, &alias, index::IndexLayout::default())
        .await
        .expect("index");
    let settings = ProjectionSettings {
        log_each_event: false,
        ..Default::default()
    };
    let batch = settings.batch_size;
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    let mut verified = String::new();
    for run in 0..runs() {
        // A fresh group (reads from the start) and a fresh index: the same work every run.
        let target = format!("{alias}_run{run}");
        index::create_index(&search, &target, layout).await.expect("index");
        let cache =
            aliexpress::cache::ProductCache::new(e.infra.redis.url.expose(), e.names.clone(), Duration::from_secs(600))
                .expect("cache");
        let group = format!("{}-run{run}", e.names.projection_group());
        let c = consumer::build(
            &aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings"),
            &group,
        )
        .expect("consumer");
        c.subscribe(&[&topic]).expect("subscribe");
        let dlq = aliexpress::bus::dlq::DlqWriter::new(p.clone(), e.names.events_dlq_topic(), group.clone());
        let mut proj = ProductEventConsumer::new(
            Arc::new(c),
            search.clone(),
            target.clone(),
            cache,
            dlq,
            group,
            settings.clone(),
        );
        let shutdown = Shutdown::new();
        let (mut seen, mut applied, mut timed) = (0usize, 0usize, 0usize);
        let mut started = None;
        while seen < n {
            let o = proj
                .process_once(Duration::from_secs(10), &shutdown)
                .await
                .expect("batch");
            if o.received == 0 {
                break;
            }
            seen += o.received - o.unfinished;
            applied += o.applied + o.already_applied;
            // The clock starts after the first batch (warm-up), which is not counted.
            if started.is_some() {
                timed += o.received - o.unfinished;
            }
            started.get_or_insert_with(Instant::now);
        }
        assert_eq!(applied, n, "every event applied");
        let rate = timed as f64 / started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0);
        ours.push(rate);
        let docs = doc_count(&search, &target).await;
        assert_eq!(docs as usize, n / 4, "one document per product");
        verified = format!("{applied} events applied, {docs} documents in the index");

        let raw_index = format!("{alias}_raw{run}");
        let r = raw_bulk(&search, &raw_index, layout, &envs, batch).await;
        assert_eq!(
            doc_count(&search, &raw_index).await as usize,
            n / 4,
            "raw: one document per product"
        );
        raw.push(r);
        progress(format_args!("projection run {run}: ours {rate:.0}/s, _bulk {r:.0}/s"));
    }
    let (o, or) = summary(ours);
    let (b, br) = summary(raw);
    rows.push(
        Row::new(
            format!("projection, {n} events backlog (OpenSearch + Redis), refresh {refresh_ms} ms"),
            "events/s",
        )
        .ours(o, or)
        .baseline(format!("same docs to _bulk, {batch} per request (no Redis)"), b, br)
        .goal(if refresh_ms == 1000 { ">= 0.8" } else { "(trade-off)" })
        .verified(verified),
    );
}
