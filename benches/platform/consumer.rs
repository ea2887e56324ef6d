//! consumer: the command consumer (pool of 4) vs the same statements over 4 connections.

use std::time::{Duration, Instant};

use aliexpress::bus::producer::{self, ProducerSettings};
use aliexpress::bus::{admin, consumer};
use aliexpress::store::pool;
use aliexpress::worker::Shutdown;
use diesel_async::RunQueryDsl;
use rdkafka::consumer::Consumer;
use rdkafka::producer::FutureRecord;
use serde_json::json;

use super::api::{same_work, Work};
use super::harness::fresh_env;
use super::row::{summary, Row};
use super::{progress, runs, scale, secs};

/// The command consumer over a backlog of CreateProduct (its pool of 4 connections) vs the
/// same statements over 4 connections. Each run reads its own topic; the first batch is
/// outside the timed window.
pub(super) async fn bench_consumer(rows: &mut Vec<Row>) {
    let e = fresh_env("cmd").await;
    let n = (20_000.0 * scale()) as usize;
    let conns = 4;
    let kafka = aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings");
    let p = producer::build(&kafka, &ProducerSettings::default()).expect("producer");
    let (mut ours, mut same, mut errors) = (Vec::new(), Vec::new(), 0);
    let mut verified = String::new();
    for run in 0..runs() {
        let topic = format!("{}.run{run}", e.names.commands_topic());
        admin::ensure_topics(&kafka, std::slice::from_ref(&topic), 6, 1)
            .await
            .expect("topic");
        let mut futs = Vec::new();
        for i in 0..n {
            let id = uuid::Uuid::now_v7();
            let cmd = json!({"command_id": uuid::Uuid::now_v7(), "product_id": id, "command_type": "CreateProduct",
                             "payload": {"sku": format!("CMD-{i}-{id}"), "title": "Commanded product", "description": "x".repeat(300),
                                         "price": {"amount_minor": 100, "currency": "USD"}}})
            .to_string();
            futs.push(
                p.send_result(FutureRecord::to(&topic).key(&id.to_string()).payload(&cmd))
                    .map_err(|(e, _)| e)
                    .expect("enqueue"),
            );
        }
        for f in futs {
            f.await.expect("delivered").expect("ok");
        }
        let group = format!("{}-run{run}", e.names.command_group());
        let kc = consumer::build(&kafka, &group).expect("consumer");
        kc.subscribe(&[&topic]).expect("subscribe");
        let worker = aliexpress::worker::commands::ProductConsumer::new(
            kc,
            pool::build_pool(e.infra.database.url.expose(), conns, Duration::from_secs(30)).expect("pool"),
            aliexpress::bus::dlq::DlqWriter::new(p.clone(), e.names.commands_dlq_topic(), group),
            e.names.events_topic(),
            true,
            aliexpress::failure::RetryPolicy::default(),
        );
        let shutdown = Shutdown::new();
        let (mut done, mut timed) = (0, 0);
        let mut started = None;
        while done < n {
            let batch = worker
                .process_batch(
                    aliexpress::worker::commands::COMMAND_BATCH,
                    Duration::from_secs(10),
                    &shutdown,
                )
                .await
                .expect("process");
            if batch.is_empty() {
                break;
            }
            done += batch.len();
            if started.is_some() {
                timed += batch.len();
            }
            started.get_or_insert_with(Instant::now);
        }
        if done < n {
            errors += (n - done) as u64;
        }
        let rate = timed as f64 / started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0);
        ours.push(rate);
        #[derive(diesel::QueryableByName)]
        struct Applied {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut c = pool::connect(e.infra.database.url.expose(), Duration::from_secs(60))
            .await
            .expect("conn");
        let a: Applied = diesel::sql_query(
            "SELECT count(*) AS n FROM commands WHERE status = 'applied' AND command_type = 'CreateProduct'",
        )
        .get_result(&mut c)
        .await
        .expect("count");
        verified = format!("{done} outcomes per run; {} commands applied in all (both sides)", a.n);
        let (s, f) = same_work(&e, Work::ConsumedCreate, conns, 1.0, secs()).await;
        same.push(s);
        errors += f;
        progress(format_args!(
            "consumer run {run}: ours {rate:.0}/s, same statements {s:.0}/s"
        ));
    }
    let (o, or) = summary(ours);
    let (s, sr) = summary(same);
    rows.push(
        Row::new(
            format!("command consumer, {n} CreateProduct, pool of {conns}"),
            "commands/s",
        )
        .ours(o, or)
        .baseline(format!("same statements (wake-up after commit), {conns} conns"), s, sr)
        .goal("(info)")
        .errors(errors)
        .verified(verified),
    );
}
