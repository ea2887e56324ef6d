//! What the cluster scenarios require while a node is down: every role keeps making progress.

use std::time::{Duration, Instant};

use super::{Ctx, NODE_OUTAGE};
use crate::checker;
use crate::sut::{self, pg, Sut};

/// Work each role has done so far: outbox rows published (relay), commands decided (command
/// consumer), offsets committed on the events topic (projection).
#[derive(Debug, Clone, Copy)]
pub(super) struct Progress {
    published: i64,
    decided: i64,
    projected: i64,
}

impl Progress {
    /// The roles that did nothing since `before`.
    fn stalled_since(&self, before: &Progress) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.published <= before.published {
            v.push("relay");
        }
        if self.decided <= before.decided {
            v.push("command consumer");
        }
        if self.projected <= before.projected {
            v.push("projection");
        }
        v
    }
}

pub(super) async fn progress(sut: &Sut) -> Result<Progress, String> {
    let db = pg(&sut.db_url).await?;
    let row = db
        .query_one(
            "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NOT NULL), \
             (SELECT count(*) FROM commands WHERE status <> 'pending')",
            &[],
        )
        .await
        .map_err(|e| sut::pg_error(&e))?;
    let (bootstrap, group, topic) = (
        sut.stack.kafka.clone(),
        sut.names.projection_group(),
        sut.names.events_topic(),
    );
    let projected = tokio::task::spawn_blocking(move || checker::committed(&bootstrap, &group, &topic))
        .await
        .map_err(|e| e.to_string())??;
    Ok(Progress {
        published: row.get(0),
        decided: row.get(1),
        projected,
    })
}

/// Waits until every role has made progress past `before`, or `until` passes (then says which
/// role stalled). A role that exits meanwhile is started again, as its supervisor would.
pub(super) async fn wait_progress(ctx: &Ctx<'_>, before: Progress, until: Instant) -> Result<Progress, String> {
    let sut = ctx.sut;
    loop {
        for crashed in sut.restart_exited() {
            ctx.log_api(format!("role exited on its own and was restarted: {crashed}"));
        }
        let now = progress(sut).await;
        if let Ok(p) = &now {
            if p.stalled_since(&before).is_empty() {
                return Ok(*p);
            }
        }
        if Instant::now() > until {
            return Err(match now {
                Ok(p) => format!(
                    "{} made no progress while the node was down ({before:?} -> {p:?})",
                    p.stalled_since(&before).join(", ")
                ),
                Err(e) => format!("progress could not be read while the node was down: {e}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until every role has done some work (the fault must hit a system that runs), then
/// returns where they are.
pub(super) async fn roles_working(ctx: &Ctx<'_>) -> Result<Progress, String> {
    let zero = Progress {
        published: 0,
        decided: 0,
        projected: 0,
    };
    let p = wait_progress(ctx, zero, Instant::now() + Duration::from_secs(60))
        .await
        .map_err(|e| format!("before the fault: {e}"))?;
    ctx.log(format!("every role is working: {p:?}"));
    progress(ctx.sut).await
}

/// Requires every role to make progress twice while `node` is down: soon after the kill, and
/// again in the second half of the outage (after the failover: partitions moved, coordinators
/// found again). Returns at `back_at`, the end of the outage, and logs what it saw.
pub(super) async fn keeps_going(ctx: &Ctx<'_>, before: Progress, back_at: Instant, node: &str) -> Result<(), String> {
    let second_half = back_at - NODE_OUTAGE / 2;
    let result = async {
        let first = wait_progress(ctx, before, back_at).await?;
        tokio::time::sleep_until(second_half.into()).await; // the first half of the outage: timed
        let mid = progress(ctx.sut).await?;
        let last = wait_progress(ctx, mid, back_at).await?;
        Ok::<_, String>((first, mid, last))
    }
    .await;
    match &result {
        Ok((first, mid, last)) => ctx.log_api(format!(
            "relay, command consumer and projection went on without {node}: {before:?} -> {first:?}, \
             and in the outage's second half {mid:?} -> {last:?}"
        )),
        Err(e) => ctx.log_api(e.clone()),
    }
    tokio::time::sleep_until(back_at.into()).await; // the outage's length
    result.map(|_| ())
}
