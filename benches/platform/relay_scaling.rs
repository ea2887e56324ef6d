//! relay-scaling: 2 and 4 relays vs 2 and 4 times one relay (modelled round trip).

use std::time::{Duration, Instant};

use aliexpress::bus::producer::{self, ProducerSettings};
use aliexpress::store::outbox_slices::OUTBOX_SLICES;
use aliexpress::store::pool;
use aliexpress::worker::outbox_relay::{OutboxRelay, RelaySettings};
use aliexpress::worker::Shutdown;
use diesel_async::RunQueryDsl;

use super::harness::{end_offsets, fresh_env};
use super::row::{summary, Row};
use super::{runs, scale};

/// Relays 1, 2 and 4 over one backlog, every batch given a modelled round trip
/// (`RelaySettings::modelled_batch_latency`: a remote, replicated cluster) so that the work is
/// bound by waiting, not by this machine's 2 cores: events/s with N relays against N times
/// the events/s of one (efficiency). Relays run in this process, joined and balanced before
/// the backlog appears (an UPDATE that makes every row pending again).
pub(super) async fn bench_relay_scaling(rows: &mut Vec<Row>) {
    const BATCH: i64 = 200;
    const LATENCY: Duration = Duration::from_millis(100);
    let e = fresh_env("relays").await;
    let n = (40_000.0 * scale()) as i64;
    let mut c = pool::connect(e.infra.database.url.expose(), Duration::from_secs(600))
        .await
        .expect("conn");
    diesel::sql_query(format!(
        "INSERT INTO outbox (event_id, aggregate_type, aggregate_id, aggregate_version, topic, key, event_type, schema_version, payload, headers, published_at) \
         SELECT gen_random_uuid(), 'product', p.id, v, '{t}', p.id::text, 'ProductStockAdjusted', 1, \
                jsonb_build_object('aggregate_id', p.id, 'aggregate_version', v, 'pad', md5(p.id::text || v::text)), \
                jsonb_build_object('event_type', 'ProductStockAdjusted', 'aggregate_version', v::text), now() \
         FROM generate_series(1, 10) v, (SELECT gen_random_uuid() AS id FROM generate_series(1, {p})) p ORDER BY v, p.id",
        t = e.names.events_topic(),
        p = n / 10
    ))
    .execute(&mut c)
    .await
    .expect("seed");
    let kafka = aliexpress::bus::KafkaConnection::from_settings(&e.infra.kafka).expect("kafka settings");
    let mut results: std::collections::BTreeMap<usize, Vec<f64>> = Default::default();
    let mut delivered_total = 0i64;
    for _run in 0..runs() {
        for relays in [1usize, 2, 4] {
            let mut running = Vec::new();
            for _ in 0..relays {
                let p = producer::build(&kafka, &ProducerSettings::default()).expect("producer");
                let mut relay = OutboxRelay::new(
                    e.infra.database.url.expose().to_owned(),
                    p,
                    RelaySettings {
                        batch_size: BATCH,
                        poll_interval: Duration::from_millis(20),
                        rebalance_interval: Duration::from_millis(100),
                        modelled_batch_latency: LATENCY,
                        ..Default::default()
                    },
                );
                let slices = relay.slices();
                let sd = Shutdown::new();
                let stop = sd.clone();
                running.push((
                    tokio::spawn(async move { relay.run_until_stopped(stop).await }),
                    sd,
                    slices,
                ));
            }
            let share = (OUTBOX_SLICES as usize).div_ceil(relays);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let owned: Vec<usize> = running.iter().map(|(_, _, s)| s.borrow().len()).collect();
                if owned.iter().sum::<usize>() == OUTBOX_SLICES as usize && owned.iter().all(|o| *o <= share) {
                    break;
                }
                assert!(Instant::now() < deadline, "relays balanced: {owned:?}");
                tokio::time::sleep(Duration::from_millis(20)).await; // polling the relays' state
            }
            diesel::sql_query("VACUUM ANALYZE outbox").execute(&mut c).await.ok();
            let before = end_offsets(&kafka, &e.names.events_topic()).await;
            diesel::sql_query("UPDATE outbox SET published_at = NULL")
                .execute(&mut c)
                .await
                .expect("reset");
            let started = Instant::now();
            loop {
                #[derive(diesel::QueryableByName)]
                struct Pending {
                    #[diesel(sql_type = diesel::sql_types::BigInt)]
                    n: i64,
                }
                let p: Pending = diesel::sql_query("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
                    .get_result(&mut c)
                    .await
                    .expect("pending");
                if p.n == 0 {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(600),
                    "{relays} relays drain the outbox"
                );
                tokio::time::sleep(Duration::from_millis(10)).await; // polling the outbox
            }
            let secs = started.elapsed().as_secs_f64();
            let delivered = end_offsets(&kafka, &e.names.events_topic()).await - before;
            assert!(delivered >= n, "{relays} relays: the topic received {delivered} of {n}");
            delivered_total += delivered;
            for (task, sd, _) in running {
                sd.trigger();
                let _ = task.await;
            }
            eprintln!("relays x{relays}: {n} events in {secs:.2}s ({:.0}/s)", n as f64 / secs);
            results.entry(relays).or_default().push(n as f64 / secs);
        }
    }
    let one = summary(results.get(&1).cloned().unwrap_or_default());
    let ideal = BATCH as f64 / LATENCY.as_secs_f64();
    for relays in [2usize, 4] {
        let (o, or) = summary(results.get(&relays).cloned().unwrap_or_default());
        let k = relays as f64;
        rows.push(Row::new(format!("outbox relays x{relays}, {} ms modelled per {BATCH}-row batch", LATENCY.as_millis()), "events/s")
.ours(o, or)
.baseline(format!("{relays} x one relay ({:.0} events/s)", one.0), k * one.0, (k * one.1 .0, k * one.1 .1))
.goal(">= 0.9")
.verified(format!(
                "{n} rows marked per run, {delivered_total} records on the topic in all; one relay's ceiling is {ideal:.0}/s \
                 ({BATCH} rows per {} ms), it reached {:.0}: the rest is claim, produce and mark",
                LATENCY.as_millis(),
                one.0
            )));
    }
}
