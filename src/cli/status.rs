//! `aliexpress status`: the operations guide's golden rule in one command: health of each
//! dependency with latency, outbox backlog, lag per group with a verdict, DLQ depth, and the
//! last replay.
//!
//! Usage: aliexpress status

use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use std::time::{Duration, Instant};

use crate::config::InfraConfig;
use crate::ops::groups::{self, DescribeRow};
use crate::store::{outbox_repo, pool, schema::replay_audit};

/// Flags of `status`.
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Burrow-style verdict from two samples taken a moment apart.
pub fn verdict(before: &[DescribeRow], after: &[DescribeRow], members: usize) -> &'static str {
    let lag: i64 = after.iter().map(|r| r.lag).sum();
    let moved = |f: fn(i64, i64) -> bool| {
        before.iter().zip(after).any(|(a, b)| match (a.current, b.current) {
            (Some(x), Some(y)) => f(x, y),
            _ => false,
        })
    };
    if moved(|x, y| y < x) {
        "REWIND"
    } else if lag == 0 {
        "OK"
    } else if members == 0 {
        "STOP"
    } else if moved(|x, y| y > x) {
        "WARN"
    } else {
        "STALL"
    }
}

async fn timed<T, E: std::fmt::Display>(f: impl std::future::Future<Output = Result<T, E>>) -> String {
    let t = Instant::now();
    match tokio::time::timeout(Duration::from_secs(2), f).await {
        Ok(Ok(_)) => format!("ok ({} ms)", t.elapsed().as_millis()),
        Ok(Err(e)) => format!("DOWN: {}", e.to_string().chars().take(120).collect::<String>()),
        Err(_) => "DOWN: no answer in 2s".into(),
    }
}

/// Prints the status screen.
pub async fn run(infra: &InfraConfig, _a: Args) -> anyhow::Result<()> {
    let names = infra.names();
    println!("== health");
    let db = pool::build_pool(&infra.database_url, 2, Duration::from_secs(5))?;
    println!(
        "  {:<11} {}",
        "database",
        timed(async { pool::get(&db).await.map(|_| ()) }).await
    );
    let cache = crate::cache::ProductCache::new(infra.redis()?, names.clone(), Duration::from_secs(60))?;
    println!("  {:<11} {}", "redis", timed(cache.ping(Duration::from_secs(2))).await);
    let producer = crate::bus::producer::build(&infra.kafka()?, &Default::default())?;
    println!(
        "  {:<11} {}",
        "kafka",
        timed(crate::bus::admin::probe(&producer, Duration::from_secs(2))).await
    );
    let search = crate::search::SearchClient::with_access(
        &infra.opensearch_url,
        &infra.search_access()?,
        Duration::from_secs(2),
    )?;
    println!(
        "  {:<11} {}",
        "opensearch",
        timed(search.health(Duration::from_secs(2))).await
    );

    println!("== outbox");
    match pool::get(&db).await {
        Ok(mut conn) => {
            if let Ok(s) = outbox_repo::stats(&mut conn).await {
                println!(
                    "  pending {}  parked {}  oldest pending {:.1}s",
                    s.pending, s.parked, s.oldest_pending_age_secs
                );
            }
            let last: Option<(chrono::DateTime<chrono::Utc>, String, String, String)> = replay_audit::table
                .order(replay_audit::id.desc())
                .select((
                    replay_audit::executed_at,
                    replay_audit::group_id,
                    replay_audit::mode,
                    replay_audit::host,
                ))
                .first(&mut conn)
                .await
                .optional()
                .unwrap_or(None);
            println!("== last replay");
            match last {
                Some((at, g, mode, host)) => println!("  {at} group {g} {mode} from {host}"),
                None => println!("  none recorded"),
            }
        }
        Err(e) => println!("  unavailable: {e}"),
    }

    println!("== consumer groups");
    let b = infra.kafka()?;
    let groups_ = vec![
        (names.projection_group(), names.events_topic()),
        (names.command_group(), names.commands_topic()),
    ];
    let dlqs = vec![names.events_dlq_topic(), names.commands_dlq_topic()];
    let report = tokio::task::spawn_blocking(move || -> Vec<String> {
        let mut lines = Vec::new();
        for (g, t) in &groups_ {
            let one = |_: ()| groups::describe(&b, g, std::slice::from_ref(t));
            let first = one(());
            std::thread::sleep(Duration::from_secs(1));
            match (first, one(())) {
                (Ok((_, before)), Ok((info, after))) => {
                    let lag: i64 = after.iter().map(|r| r.lag).sum();
                    lines.push(format!(
                        "  {:<34} {:<20} lag {:>8}  members {}  {}",
                        g,
                        t,
                        lag,
                        info.members.len(),
                        verdict(&before, &after, info.members.len())
                    ));
                }
                (_, Err(e)) | (Err(e), _) => lines.push(format!("  {g}: {e}")),
            }
        }
        lines.push("== dead letters".into());
        if let Ok(c) = groups::client(&b, "aliexpress-status") {
            for t in &dlqs {
                let depth: i64 = groups::partitions(&c, t)
                    .map(|ps| {
                        ps.iter()
                            .filter_map(|p| {
                                rdkafka::consumer::Consumer::fetch_watermarks(&c, t, *p, groups::CALL_TIMEOUT).ok()
                            })
                            .map(|(lo, hi)| hi - lo)
                            .sum()
                    })
                    .unwrap_or(0);
                lines.push(format!("  {t:<34} {depth} record(s)"));
            }
        }
        lines
    })
    .await?;
    for l in report {
        println!("{l}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(current: Option<i64>, lag: i64) -> DescribeRow {
        DescribeRow {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            current,
            log_start: 0,
            log_end: 100,
            lag,
            consumer_id: None,
            host: None,
            client_id: None,
        }
    }

    #[test]
    fn verdicts_follow_burrow() {
        assert_eq!(verdict(&[row(Some(100), 0)], &[row(Some(100), 0)], 1), "OK");
        assert_eq!(verdict(&[row(Some(10), 90)], &[row(Some(20), 80)], 1), "WARN");
        assert_eq!(verdict(&[row(Some(10), 90)], &[row(Some(10), 90)], 1), "STALL");
        assert_eq!(verdict(&[row(Some(10), 90)], &[row(Some(10), 90)], 0), "STOP");
        assert_eq!(verdict(&[row(Some(50), 50)], &[row(Some(0), 100)], 0), "REWIND");
    }
}
