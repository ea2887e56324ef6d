//! Several outbox relays over one outbox: slices shared, nothing lost, per-product order,
//! no slice owned by two relays at once, takeover after a relay dies.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aliexpress::bus::producer::{self, ProducerSettings};
use aliexpress::store::outbox_slices::OUTBOX_SLICES;
use aliexpress::worker::outbox_relay::{OutboxRelay, RelaySettings};
use aliexpress::worker::Shutdown;
use tokio::sync::watch;

use crate::helpers::{versions, wait_until, TestEnv};
use crate::outbox::{assert_per_product_order, seed_outbox};

/// A relay running as its own task (as `process-outbox --follow` does).
struct RunningRelay {
    name: String,
    slices: watch::Receiver<Vec<i16>>,
    shutdown: Shutdown,
    task: tokio::task::JoinHandle<()>,
    /// False once the task was aborted (a kill: it can no longer produce anything).
    alive: Arc<AtomicBool>,
}

fn start_relay(env: &TestEnv, grace: Duration) -> RunningRelay {
    let p = producer::build(
        &aliexpress::bus::KafkaConnection::from_settings(&env.infra.kafka).expect("kafka settings"),
        &ProducerSettings::default(),
    )
    .expect("producer");
    let mut relay = OutboxRelay::new(
        env.infra.database.url.expose().to_owned(),
        p,
        RelaySettings {
            batch_size: 50,
            takeover_grace: grace,
            rebalance_interval: Duration::from_millis(200),
            poll_interval: Duration::from_millis(200),
            ..Default::default()
        },
    );
    let shutdown = Shutdown::new();
    let (name, slices) = (relay.owner().to_owned(), relay.slices());
    let sd = shutdown.clone();
    let task = tokio::spawn(async move { relay.run_until_stopped(sd).await });
    RunningRelay {
        name,
        slices,
        shutdown,
        task,
        alive: Arc::new(AtomicBool::new(true)),
    }
}

/// Samples every live relay's slices until stopped; returns the overlaps seen (a slice
/// owned by two relays at one moment).
fn watch_exclusive(relays: &[RunningRelay], stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<Vec<String>> {
    let views: Vec<_> = relays
        .iter()
        .map(|r| (r.name.clone(), r.slices.clone(), r.alive.clone()))
        .collect();
    tokio::spawn(async move {
        let mut overlaps = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let mut owner_of = std::collections::HashMap::new();
            for (name, rx, alive) in &views {
                if !alive.load(Ordering::Relaxed) {
                    continue;
                }
                for s in rx.borrow().iter() {
                    if let Some(other) = owner_of.insert(*s, name.clone()) {
                        overlaps.push(format!("slice {s}: {other} and {name}"));
                    }
                }
            }
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(2)).await; // sampling rate, not synchronisation
        }
        overlaps
    })
}

fn owned(r: &RunningRelay) -> usize {
    r.slices.borrow().len()
}

async fn stop_all(relays: Vec<RunningRelay>) {
    for r in &relays {
        r.shutdown.trigger();
    }
    for r in relays {
        let _ = r.task.await;
    }
}

async fn pending(env: &TestEnv) -> i64 {
    env.count("outbox WHERE published_at IS NULL").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_two_and_four_relays_share_the_slices_and_publish_every_event_in_order() {
    for n in [1usize, 2, 4] {
        let env = TestEnv::new().await;
        let total = seed_outbox(&env, 120, 12).await;
        let relays: Vec<RunningRelay> = (0..n).map(|_| start_relay(&env, Duration::from_secs(4))).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = watch_exclusive(&relays, stop.clone());
        let started = Instant::now();
        assert!(
            wait_until(Duration::from_secs(90), || async { pending(&env).await == 0 }).await,
            "{n} relays: the outbox drains ({} left)",
            pending(&env).await
        );
        let drained = started.elapsed();
        // Balanced: every slice owned, none by more than its share.
        let share = (OUTBOX_SLICES as usize).div_ceil(n);
        let balanced = wait_until(Duration::from_secs(15), || {
            let counts: Vec<usize> = relays.iter().map(owned).collect();
            async move { counts.iter().sum::<usize>() == OUTBOX_SLICES as usize && counts.iter().all(|c| *c <= share) }
        })
        .await;
        let counts: Vec<usize> = relays.iter().map(owned).collect();
        stop.store(true, Ordering::Relaxed);
        let overlaps = sampler.await.expect("sampler");
        stop_all(relays).await;
        assert!(
            balanced,
            "{n} relays: each owns at most {share} slices and all are owned: {counts:?}"
        );
        assert!(
            overlaps.is_empty(),
            "{n} relays: a slice owned twice: {:?}",
            &overlaps[..overlaps.len().min(5)]
        );
        let msgs = env
            .read_topic(&env.names.events_topic(), total, Duration::from_secs(60))
            .await;
        let (distinct, dups) = assert_per_product_order(&versions(&msgs));
        assert_eq!(distinct, total, "{n} relays: every event reached Kafka");
        eprintln!("{n} relay(s): {total} events in {drained:?}, {dups} duplicates, slices {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_relay_killed_mid_run_hands_its_slices_over_after_the_grace_and_nothing_is_lost() {
    let env = TestEnv::new().await;
    let grace = Duration::from_secs(2);
    let total = seed_outbox(&env, 200, 25).await;
    let relays: Vec<RunningRelay> = (0..2).map(|_| start_relay(&env, grace)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = watch_exclusive(&relays, stop.clone());
    // Both relays own slices and have published something.
    assert!(
        wait_until(Duration::from_secs(30), || {
            let both = relays.iter().all(|r| owned(r) > 0);
            let env = &env;
            async move { both && pending(env).await < total as i64 }
        })
        .await,
        "both relays at work"
    );
    // Kill one: its task ends at once, its connections close, Postgres ends its locks.
    let victim = &relays[0];
    let victim_slices = format!(
        "{{{}}}",
        victim
            .slices
            .borrow()
            .iter()
            .map(i16::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    victim.alive.store(false, Ordering::Relaxed);
    victim.task.abort();
    let killed_at = Instant::now();
    let killed_ms = env.scalar("extract(epoch FROM clock_timestamp()) * 1000").await;
    let victims_pending = env
        .count(&format!(
            "outbox WHERE published_at IS NULL AND slice = ANY('{victim_slices}')"
        ))
        .await;
    assert!(
        victims_pending > 0,
        "the killed relay's slices had rows left to publish"
    );
    let survivor = &relays[1];
    assert!(
        wait_until(Duration::from_secs(15), || {
            let all = owned(survivor) == OUTBOX_SLICES as usize;
            async move { all }
        })
        .await,
        "the survivor takes every slice ({} owned)",
        owned(survivor)
    );
    let taken_after = killed_at.elapsed();
    assert!(
        wait_until(Duration::from_secs(90), || async { pending(&env).await == 0 }).await,
        "the outbox drains after the takeover"
    );
    let drained_after = killed_at.elapsed();
    // Fenced: nothing of the dead relay's slices was published during the grace (past a
    // short margin for a mark the dead relay had already sent), all of it after.
    let (from, to) = (killed_ms + 500, killed_ms + grace.as_millis() as i64 - 100);
    let in_grace = env
        .count(&format!(
            "outbox WHERE slice = ANY('{victim_slices}') AND published_at > to_timestamp({from} / 1000.0) \
             AND published_at < to_timestamp({to} / 1000.0)"
        ))
        .await;
    assert_eq!(
        in_grace, 0,
        "rows of the dead relay's slices were published during the grace"
    );
    let after_grace = env
        .count(&format!(
            "outbox WHERE slice = ANY('{victim_slices}') AND published_at >= to_timestamp({to} / 1000.0)"
        ))
        .await;
    assert!(
        after_grace > 0,
        "the survivor published the dead relay's rows after the grace"
    );
    stop.store(true, Ordering::Relaxed);
    let overlaps = sampler.await.expect("sampler");
    stop_all(relays).await;
    assert!(
        overlaps.is_empty(),
        "a slice owned twice: {:?}",
        &overlaps[..overlaps.len().min(5)]
    );
    let msgs = env
        .read_topic(&env.names.events_topic(), total, Duration::from_secs(60))
        .await;
    let (distinct, dups) = assert_per_product_order(&versions(&msgs));
    assert_eq!(distinct, total, "every event reached Kafka");
    eprintln!(
        "takeover: slices owned by the survivor {taken_after:?} after the kill, outbox drained {drained_after:?} after it \
         (grace {grace:?}); {dups} duplicates"
    );
}
