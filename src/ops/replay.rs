//! Replay: move a consumer group's committed offsets with the meanings of Apache Kafka's
//! `kafka-consumer-groups --reset-offsets`: `--to-earliest` is each partition's log start,
//! `--to-offset`/`--shift-by` are clamped to [log start, log end], `--to-datetime` falls back to
//! the log end when nothing is that new. Planning changes nothing; executing refuses unless the
//! group is inactive, commits the plan, and reads it back.

use chrono::{DateTime, NaiveDateTime, Utc};
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

use super::groups::{self, CALL_TIMEOUT};
use super::OpsError;
use crate::bus::KafkaConnection;

/// Where to move the offsets.
#[derive(Debug, Clone, PartialEq)]
pub enum ResetSpec {
    /// Each partition's log start offset.
    Earliest,
    /// Each partition's log end offset.
    Latest,
    /// An absolute offset (clamped).
    ToOffset(i64),
    /// Relative to the committed offset (clamped); needs a committed offset.
    ShiftBy(i64),
    /// The first offset at or after this time (log end when none).
    ToDatetime(DateTime<Utc>),
    /// Now minus this duration, as `ToDatetime`.
    ByDuration(Duration),
}

impl ResetSpec {
    /// A short name for audit rows.
    pub fn describe(&self) -> String {
        match self {
            Self::Earliest => "to-earliest".into(),
            Self::Latest => "to-latest".into(),
            Self::ToOffset(o) => format!("to-offset {o}"),
            Self::ShiftBy(n) => format!("shift-by {n}"),
            Self::ToDatetime(t) => format!("to-datetime {}", t.to_rfc3339()),
            Self::ByDuration(d) => format!("by-duration {}s", d.as_secs()),
        }
    }
}

/// One partition of a plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlanRow {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset now.
    pub current: Option<i64>,
    /// Offset after the reset.
    pub new: i64,
    /// Log start when planned.
    pub log_start: i64,
    /// Log end when planned.
    pub log_end: i64,
    /// Why `new` differs from what was asked (clamping, fallback).
    pub note: Option<String>,
}

/// Parses Kafka's `YYYY-MM-DDTHH:mm:SS.sss` (no zone = UTC) or RFC 3339.
pub fn parse_datetime(s: &str) -> Result<DateTime<Utc>, OpsError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for f in ["%Y-%m-%dT%H:%M:%S%.3f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(s, f) {
            return Ok(t.and_utc());
        }
    }
    Err(OpsError::Refused(format!(
        "--to-datetime {s:?}: expected RFC 3339 (2026-11-26T10:00:00Z) or YYYY-MM-DDTHH:mm:SS.sss (UTC)"
    )))
}

/// Parses an ISO 8601 duration `PnDTnHnMnS` (days, hours, minutes, seconds); months and years
/// are refused because their length is ambiguous.
pub fn parse_iso_duration(s: &str) -> Result<Duration, OpsError> {
    let bad = |why: &str| {
        OpsError::Refused(format!(
            "--by-duration {s:?}: {why}; expected PnDTnHnMnS, e.g. PT1H30M or P1D"
        ))
    };
    let rest = s
        .strip_prefix('P')
        .or_else(|| s.strip_prefix('p'))
        .ok_or_else(|| bad("must start with P"))?;
    let (date, time) = match rest.split_once(['T', 't']) {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut secs = 0f64;
    let mut any = false;
    let mut take = |part: &str, units: &[(char, f64)], what: &str| -> Result<(), OpsError> {
        let mut num = String::new();
        for ch in part.chars() {
            if ch.is_ascii_digit() || ch == '.' {
                num.push(ch);
                continue;
            }
            let unit = ch.to_ascii_uppercase();
            let Some((_, mult)) = units.iter().find(|(u, _)| *u == unit) else {
                return Err(bad(&format!(
                    "unit {unit:?} is not allowed in the {what} part (months and years are refused)"
                )));
            };
            let n: f64 = num.parse().map_err(|_| bad("a number must precede each unit"))?;
            secs += n * mult;
            any = true;
            num.clear();
        }
        if !num.is_empty() {
            return Err(bad("a trailing number has no unit"));
        }
        Ok(())
    };
    take(date, &[('D', 86_400.0), ('W', 604_800.0)], "date")?;
    if let Some(t) = time {
        if t.is_empty() {
            return Err(bad("T must be followed by a time"));
        }
        take(t, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)], "time")?;
    }
    if !any {
        return Err(bad("no amount given"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Plans a reset of `group` on `topic` (all partitions, or `only`). Changes nothing.
pub fn plan(
    kafka: &KafkaConnection,
    group: &str,
    topic: &str,
    only: Option<&[i32]>,
    spec: &ResetSpec,
) -> Result<Vec<PlanRow>, OpsError> {
    let c = groups::client(kafka, group)?;
    let all = groups::partitions(&c, topic)?;
    let parts: Vec<i32> = match only {
        Some(o) => {
            if let Some(p) = o.iter().find(|p| !all.contains(p)) {
                return Err(OpsError::Refused(format!(
                    "topic {topic} has no partition {p} (it has {})",
                    all.len()
                )));
            }
            o.to_vec()
        }
        None => all,
    };
    let committed = groups::committed(&c, topic, &parts)?;
    let ts_offsets = match spec {
        ResetSpec::ToDatetime(t) => Some(offsets_at(&c, topic, &parts, t.timestamp_millis())?),
        ResetSpec::ByDuration(d) => {
            let t = Utc::now() - chrono::Duration::from_std(*d).map_err(|e| OpsError::Other(e.to_string()))?;
            Some(offsets_at(&c, topic, &parts, t.timestamp_millis())?)
        }
        _ => None,
    };
    let mut rows = Vec::new();
    for p in parts {
        let (lo, hi) = c.fetch_watermarks(topic, p, CALL_TIMEOUT)?;
        let cur = committed.get(&p).copied().flatten();
        let (wanted, mut note) = match spec {
            ResetSpec::Earliest => (lo, None),
            ResetSpec::Latest => (hi, None),
            ResetSpec::ToOffset(o) => (*o, None),
            ResetSpec::ShiftBy(n) => {
                let cur = cur.ok_or_else(|| {
                    OpsError::Refused(format!(
                        "--shift-by: group {group} has no committed offset on {topic} partition {p}"
                    ))
                })?;
                (cur + n, None)
            }
            ResetSpec::ToDatetime(_) | ResetSpec::ByDuration(_) => {
                match ts_offsets.as_ref().and_then(|m| m.get(&p).copied().flatten()) {
                    Some(o) => (o, None),
                    None => (hi, Some("no message that new: log end".to_owned())),
                }
            }
        };
        let new = wanted.clamp(lo, hi);
        if new != wanted {
            note = Some(if wanted < lo {
                format!("{wanted} is below the log start: clamped to {lo}")
            } else {
                format!("{wanted} is past the log end: clamped to {hi}")
            });
        }
        rows.push(PlanRow {
            group: group.to_owned(),
            topic: topic.to_owned(),
            partition: p,
            current: cur,
            new,
            log_start: lo,
            log_end: hi,
            note,
        });
    }
    Ok(rows)
}

fn offsets_at(
    c: &rdkafka::consumer::BaseConsumer,
    topic: &str,
    parts: &[i32],
    ts: i64,
) -> Result<std::collections::HashMap<i32, Option<i64>>, OpsError> {
    let mut tpl = TopicPartitionList::new();
    for p in parts {
        tpl.add_partition_offset(topic, *p, Offset::Offset(ts))?;
    }
    let got = c.offsets_for_times(tpl, CALL_TIMEOUT)?;
    Ok(got
        .elements()
        .iter()
        .map(|e| {
            (
                e.partition(),
                match e.offset() {
                    Offset::Offset(o) if o >= 0 => Some(o),
                    _ => None,
                },
            )
        })
        .collect())
}

/// Already-consumed events the plan makes the group consume again.
pub fn reprojected(rows: &[PlanRow]) -> i64 {
    rows.iter()
        .map(|r| (r.current.unwrap_or(r.log_start).max(r.log_start) - r.new).max(0))
        .sum()
}

/// Refuses unless `group` is inactive, with Kafka's wording.
pub fn ensure_inactive(kafka: &KafkaConnection, group: &str) -> Result<(), OpsError> {
    let info = groups::info(kafka, group)?;
    if info.is_inactive() {
        return Ok(());
    }
    let mut msg = format!(
        "Error: Assignments can only be reset if the group '{group}' is inactive, but the current state is {}.",
        info.state
    );
    for m in &info.members {
        msg.push_str(&format!(
            "\n  member {} (client {}, host {})",
            m.id, m.client_id, m.host
        ));
    }
    Err(OpsError::Refused(msg))
}

/// Commits the plan for its group, then reads the offsets back; fails if they differ.
pub fn apply(kafka: &KafkaConnection, rows: &[PlanRow]) -> Result<(), OpsError> {
    let Some(first) = rows.first() else {
        return Ok(());
    };
    ensure_inactive(kafka, &first.group)?;
    let c = groups::client(kafka, &first.group)?;
    let mut tpl = TopicPartitionList::new();
    for r in rows {
        tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(r.new))?;
    }
    c.commit(&tpl, CommitMode::Sync)?;
    for r in rows {
        let got = groups::committed(&c, &r.topic, &[r.partition])?;
        if got.get(&r.partition).copied().flatten() != Some(r.new) {
            return Err(OpsError::Other(format!(
                "read-back mismatch on {} partition {}: expected {}, found {:?}",
                r.topic,
                r.partition,
                r.new,
                got.get(&r.partition)
            )));
        }
    }
    Ok(())
}

/// The plan as a table, like Kafka's tool.
pub fn render(rows: &[PlanRow]) -> String {
    use std::fmt::Write;
    let mut s = format!(
        "{:<34} {:<28} {:>9} {:>15} {:>11}  NOTE\n",
        "GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET"
    );
    for r in rows {
        let _ = writeln!(
            s,
            "{:<34} {:<28} {:>9} {:>15} {:>11}  {}",
            r.group,
            r.topic,
            r.partition,
            r.current.map_or("-".into(), |c| c.to_string()),
            r.new,
            r.note.as_deref().unwrap_or("")
        );
    }
    s
}

/// CSV export (`--export`): group,topic,partition,current,new.
pub fn to_csv(rows: &[PlanRow]) -> String {
    let mut s = String::from("group,topic,partition,current_offset,new_offset\n");
    for r in rows {
        s.push_str(&format!(
            "{},{},{},{},{}\n",
            r.group,
            r.topic,
            r.partition,
            r.current.map_or(String::new(), |c| c.to_string()),
            r.new
        ));
    }
    s
}

/// Reads a plan written by [`to_csv`] (`--from-file`); also accepts Kafka's `topic,partition,offset`.
pub fn from_csv(text: &str, group: &str) -> Result<Vec<(String, i32, i64)>, OpsError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with("group,") {
            continue;
        }
        let f: Vec<&str> = line.split(',').collect();
        let (g, t, p, o) = match f.as_slice() {
            [g, t, p, _cur, o] => (Some(*g), *t, *p, *o),
            [t, p, o] => (None, *t, *p, *o),
            _ => {
                return Err(OpsError::Refused(format!(
                    "line {}: expected group,topic,partition,current,new",
                    n + 1
                )))
            }
        };
        if let Some(g) = g {
            if g != group {
                return Err(OpsError::Refused(format!(
                    "line {}: plan is for group {g:?}, not {group:?}",
                    n + 1
                )));
            }
        }
        let p = p
            .trim()
            .parse()
            .map_err(|_| OpsError::Refused(format!("line {}: bad partition {p:?}", n + 1)))?;
        let o = o
            .trim()
            .parse()
            .map_err(|_| OpsError::Refused(format!("line {}: bad offset {o:?}", n + 1)))?;
        out.push((t.trim().to_owned(), p, o));
    }
    Ok(out)
}

/// Records an executed plan in `replay_audit` (one row per partition, with this host and
/// `mode`) and logs each move.
pub async fn record_execution(pool: &crate::store::PgPool, rows: &[PlanRow], mode: &str) -> Result<(), OpsError> {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let moves: Vec<crate::store::audit_repo::OffsetMove<'_>> = rows
        .iter()
        .map(|r| crate::store::audit_repo::OffsetMove {
            group: &r.group,
            topic: &r.topic,
            partition: r.partition,
            from: r.current,
            to: r.new,
        })
        .collect();
    let mut conn = crate::store::pool::get(pool).await?;
    let actor = crate::store::audit_repo::cli_actor();
    crate::store::audit_repo::record_offset_moves(&mut conn, &host, &actor, mode, &moves).await?;
    for r in rows {
        tracing::info!(group = %r.group, kafka.topic = %r.topic, kafka.partition = r.partition, from = ?r.current, to = r.new, mode, host = %host, "consumer group offsets reset");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_durations_parse_and_months_are_refused() {
        assert_eq!(parse_iso_duration("PT1H30M").expect("ok"), Duration::from_secs(5400));
        assert_eq!(parse_iso_duration("P1DT2S").expect("ok"), Duration::from_secs(86_402));
        assert_eq!(parse_iso_duration("PT0.5S").expect("ok"), Duration::from_millis(500));
        assert!(parse_iso_duration("P1M").is_err(), "months");
        assert!(parse_iso_duration("P1Y").is_err(), "years");
        assert!(parse_iso_duration("1H").is_err());
        assert!(parse_iso_duration("PT").is_err());
    }

    #[test]
    fn kafka_and_rfc3339_datetimes_parse_as_utc() {
        let a = parse_datetime("2026-11-26T10:00:00.000").expect("kafka form");
        let b = parse_datetime("2026-11-26T12:00:00+02:00").expect("rfc3339");
        assert_eq!(a, b);
        assert!(parse_datetime("yesterday").is_err());
    }

    #[test]
    fn reprojected_counts_already_consumed_events() {
        let row = |current, new| PlanRow {
            group: "g".into(),
            topic: "t".into(),
            partition: 0,
            current,
            new,
            log_start: 10,
            log_end: 100,
            note: None,
        };
        assert_eq!(reprojected(&[row(Some(100), 10), row(None, 10), row(Some(50), 80)]), 90);
    }

    #[test]
    fn csv_round_trips_and_checks_the_group() {
        let rows = vec![PlanRow {
            group: "g".into(),
            topic: "t".into(),
            partition: 1,
            current: Some(5),
            new: 2,
            log_start: 0,
            log_end: 9,
            note: None,
        }];
        assert_eq!(
            from_csv(&to_csv(&rows), "g").expect("parses"),
            vec![("t".to_owned(), 1, 2)]
        );
        assert!(from_csv(&to_csv(&rows), "other").is_err());
    }
}
