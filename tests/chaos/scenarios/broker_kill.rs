//! kafka-broker-kill (cluster profile): kill -9 the broker leading the events topic's first
//! partition, keep it down, start it again; nothing may fail meanwhile.

use rdkafka::producer::Producer as _;
use std::time::{Duration, Instant};

use super::progress::{keeps_going, roles_working};
use super::{Ctx, NODE_OUTAGE};
use crate::poll::{poll_until, Probe};
use crate::stack::Service;
use crate::sut::Sut;

/// (partition, leader, replicas, in-sync replicas) of each partition of `topic`.
async fn partitions(sut: &Sut, topic: &str) -> Result<Vec<(i32, i32, usize, usize)>, String> {
    let producer = sut.producer.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let md = producer
            .client()
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .map_err(|e| format!("metadata of {topic}: {e}"))?;
        let t = md.topics().first().ok_or(format!("no metadata for {topic}"))?;
        Ok(t.partitions()
            .iter()
            .map(|p| (p.id(), p.leader(), p.replicas().len(), p.isr().len()))
            .collect())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Waits until every partition of the scenario's topics has all its replicas in sync.
async fn wait_in_sync(sut: &Sut, deadline: Duration) -> Result<(), String> {
    poll_until(Instant::now() + deadline, Duration::from_millis(500), || async {
        let mut behind = Vec::new();
        for topic in sut.names.all_topics() {
            match partitions(sut, &topic).await {
                Ok(ps) => behind.extend(
                    ps.iter()
                        .filter(|(_, _, replicas, isr)| isr < replicas)
                        .map(|(p, _, replicas, isr)| format!("{topic}/{p} {isr}/{replicas}")),
                ),
                Err(e) => behind.push(e),
            }
        }
        if behind.is_empty() {
            Probe::Ready(())
        } else {
            Probe::Waiting(format!(
                "replicas not back in sync within {deadline:?}: {}",
                behind.join(", ")
            ))
        }
    })
    .await
}

pub(super) async fn run(ctx: &Ctx<'_>) -> Result<(), String> {
    let sut = ctx.sut;
    let stack = &sut.stack;
    let topic = sut.names.events_topic();
    wait_in_sync(sut, Duration::from_secs(30)).await?;
    // The leader of a partition the relay writes and the projection reads: its death moves
    // leadership (and maybe the group coordinator or the controller) to the other two.
    let leader = partitions(sut, &topic)
        .await?
        .iter()
        .find(|p| p.0 == 0)
        .map(|p| p.1)
        .ok_or(format!("no partition 0 in {topic}"))?;
    let broker = u8::try_from(leader).map_err(|_| format!("{topic}/0 has no leader ({leader})"))?;
    let before = roles_working(ctx).await?;
    stack.kill9(Service::KafkaBroker(broker)).await?;
    let back_at = Instant::now() + NODE_OUTAGE;
    ctx.log_api(format!(
        "kill -9 kafka-{broker} (leader of {topic}/0); down for {} s",
        NODE_OUTAGE.as_secs()
    ));
    let during = keeps_going(ctx, before, back_at, &format!("kafka-{broker}")).await;
    ctx.log_api("deploy/local/stack up --cluster");
    stack.up().await?;
    ctx.log_api(format!("kafka-{broker} ready again"));
    wait_in_sync(sut, Duration::from_secs(90)).await?;
    ctx.log_api("every partition of the scenario's topics has its replicas in sync again");
    ctx.fault_ended();
    during.map(|_| ())
}
